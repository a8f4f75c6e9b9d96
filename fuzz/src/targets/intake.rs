//! `intake`: whole requests through `Intake::on_headers` / `on_body`, over a
//! `MemoryStore` and a `MemoryQueue`.
//!
//! Input: a byte picking the config (every route open with small dedupe
//! buckets, or every route behind its documented credential), a byte that
//! may write fuzz into the status bucket of `INC-1` and the state key, then
//! up to four requests. Each request: method, path, content type, content
//! length, up to three extra headers, a flags byte (add the route's valid
//! credential, end the stream at the headers, send it twice), a faults byte
//! (a broken queue, CAS conflicts), then a body with a 16-bit length.
//!
//! Every answer is a status in 100..=599; a 4xx or 5xx is problem+json with
//! the same `status`; a 2xx is JSON, and a 202 has the contract's shape. A
//! 401 shows no secret. Only a `POST /webhooks/{source}` is read or
//! accepted, and behind the credential config nothing unsigned is. What is
//! queued is exactly what the counters say was accepted, reads back as the
//! service will read it, and keeps every event bound. A 202 sent again at
//! once (no faults, no eviction) is a replay with the same body.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use emr_core::auth::standard_webhooks::{parse_secret, sign};
use emr_core::auth::{hub_signature, pagerduty_signature};
use emr_core::config::{parse, Config};
use emr_core::event::{Control, QueueMessage, Source};
use emr_core::intake::{Counter, HeadersStep, Intake, Response};
use emr_core::status;
use emr_core::store::{MemoryQueue, MemoryStore, SharedStore};
use serde_json::Value;

use super::signature::check_no_secret;
use super::sources::check_event;
use super::{check_problem_body, check_queued_round_trip, holds_secret, now, Input};

pub const CANONICAL_TOKEN: &str = "intake-canonical-token-fake-0123";
pub const PD_SECRET: &str = "intake-pd-secret-fake-0123456789";
pub const PD_SECRET_NEXT: &str = "intake-pd-next-secret-fake-012345";
pub const SN_USER: &str = "servicenow";
pub const SN_PASSWORD: &str = "intake-sn-password-fake-0123456789";
pub const JSM_SECRET: &str = "intake-jsm-secret-fake-0123456789";
pub const OG_TOKEN: &str = "intake-opsgenie-token-fake-0123456";
pub const AM_TOKEN: &str = "intake-am-token-fake-0123456789";
pub const STATUS_TOKEN: &str = "intake-status-token-fake-0123456789";
pub const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const SECRETS: [&str; 9] = [
    CANONICAL_TOKEN,
    PD_SECRET,
    PD_SECRET_NEXT,
    SN_PASSWORD,
    JSM_SECRET,
    OG_TOKEN,
    AM_TOKEN,
    STATUS_TOKEN,
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
];

fn env(k: &str) -> Option<String> {
    let v = match k {
        "EMR_CANONICAL_TOKEN" => CANONICAL_TOKEN,
        "EMR_PAGERDUTY_SECRET" => PD_SECRET,
        "EMR_PAGERDUTY_SECRET_NEXT" => PD_SECRET_NEXT,
        "EMR_SERVICENOW_USER" => SN_USER,
        "EMR_SERVICENOW_PASSWORD" => SN_PASSWORD,
        "EMR_JSM_SECRET" => JSM_SECRET,
        "EMR_OPSGENIE_TOKEN" => OG_TOKEN,
        "EMR_ALERTMANAGER_TOKEN" => AM_TOKEN,
        "EMR_STATUS_TOKEN" => STATUS_TOKEN,
        "EMR_STANDARD_WHSEC" => WHSEC,
        _ => return None,
    };
    Some(v.to_owned())
}

/// Every route open, catch-all rules, small dedupe buckets (evictions
/// happen), a small body limit.
const OPEN: &str = r#"{
  "intake": {"max_body_bytes": 8192, "dedupe_buckets": 4, "dedupe_entries_per_bucket": 4},
  "sources": {
    "canonical": {"insecure": true},
    "standard": {"insecure": true, "rules": [{"match": {"incident_type": "CARRIER_OUTAGE"}, "group": "eg-voice"}]},
    "pagerduty": {"insecure": true, "rules": [{"match": {"priority": "P1"}, "queues": ["q-1"], "priority": 1}, {"match": {}}]},
    "servicenow": {"insecure": true, "rules": [{"match": {}, "group": "eg-voice"}]},
    "jsm": {"insecure": true, "rules": [{"match": {}, "queues": ["q-1", "q-2"]}]},
    "opsgenie": {"insecure": true, "rules": [{"match": {"tags": "voice"}, "group": "eg-voice"}]},
    "alertmanager": {"insecure": true, "rules": [{"match": {"labels": {"severity": "critical"}}}]}
  },
  "status": {"insecure": true}
}"#;

/// Every route behind the credential docs/sources.md shows.
const SECURED: &str = include_str!("../../../tests/fixtures/configs/every-source.json");

pub const CONFIGS: [&str; 2] = [OPEN, SECURED];

fn configs() -> &'static [Config] {
    static CONFIGS_COMPILED: OnceLock<Vec<Config>> = OnceLock::new();
    CONFIGS_COMPILED.get_or_init(|| {
        CONFIGS
            .iter()
            .map(|c| parse(c.as_bytes(), &env).unwrap())
            .collect()
    })
}

pub const METHODS: [&str; 6] = ["POST", "GET", "HEAD", "PUT", "DELETE", ""];
pub const PATHS: [&str; 16] = [
    "/webhooks/canonical",
    "/webhooks/standard",
    "/webhooks/pagerduty",
    "/webhooks/servicenow",
    "/webhooks/jsm",
    "/webhooks/opsgenie",
    "/webhooks/alertmanager",
    "/webhooks/nagios",
    "/webhooks",
    "/emr/state",
    "/emr/status/INC-1",
    "/emr/status/",
    "/emr/groups/eg-voice/resume",
    "/healthz",
    "/webhooks/canonical?x=1",
    "",
];
pub const CONTENT_TYPES: [Option<&str>; 6] = [
    Some("application/json"),
    Some("Application/JSON; charset=utf-8"),
    Some("application/cloudevents+json"),
    Some("text/plain"),
    None,
    Some(""),
];
pub const HEADER_NAMES: [&str; 10] = [
    "authorization",
    "x-webhook-id",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-pagerduty-signature",
    "x-hub-signature",
    "x-emr-token",
    "x-atlassian-webhook-identifier",
    "",
];

/// Request flags.
pub const SIGN: u8 = 1;
pub const END_STREAM: u8 = 2;
pub const TWICE: u8 = 4;

/// Request faults: bit 0 breaks the queue, the rest count CAS conflicts.
pub const BROKEN_QUEUE: u8 = 1;

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    flags: u8,
    faults: u8,
    body: Vec<u8>,
}

fn read_request(input: &mut Input<'_>) -> Request {
    let method = match input.pick(&METHODS) {
        "" => input.string(),
        m => m.to_owned(),
    };
    let path = match input.pick(&PATHS) {
        "" => input.string(),
        p => p.to_owned(),
    };
    let content_type = match input.pick(&CONTENT_TYPES) {
        Some("") => Some(input.string()),
        other => other.map(str::to_owned),
    };
    let length_kind = input.byte() % 4;
    let mut extra = Vec::new();
    for _ in 0..input.byte() % 4 {
        let name = match input.pick(&HEADER_NAMES) {
            "" => input.string(),
            n => n.to_owned(),
        };
        extra.push((name, input.string()));
    }
    let flags = input.byte();
    let faults = input.byte();
    let len = usize::from(input.u16());
    let mut body = Vec::with_capacity(len);
    for _ in 0..len {
        body.push(input.byte());
    }

    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(ct) = content_type {
        headers.push(("content-type".into(), ct));
    }
    match length_kind {
        0 => {}
        1 => headers.push(("content-length".into(), body.len().to_string())),
        2 => headers.push(("content-length".into(), "99999999999".into())),
        _ => headers.push(("content-length".into(), " 12 ".into())),
    }
    headers.extend(extra);
    if flags & SIGN != 0 {
        add_credential(&mut headers, &path, &body);
    }
    Request {
        method,
        path,
        headers,
        flags,
        faults,
        body,
    }
}

fn route_source(path: &str) -> Option<Source> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    Source::from_path_segment(path.strip_prefix("/webhooks/")?)
}

fn is_resume(path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path.starts_with("/emr/groups/") && path.ends_with("/resume")
}

fn is_ours(path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path.starts_with("/webhooks/")
        || path == "/webhooks"
        || path == "/emr"
        || path.starts_with("/emr/")
}

/// The credential the route's config asks for (and a delivery id).
fn add_credential(headers: &mut Vec<(String, String)>, path: &str, body: &[u8]) {
    let mut set = |k: &str, v: String| {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        headers.push((k.to_owned(), v));
    };
    match route_source(path) {
        Some(Source::Canonical) => set("authorization", format!("Bearer {CANONICAL_TOKEN}")),
        Some(Source::Standard) => {
            let id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
            let ts = now().timestamp();
            let sig = sign(&parse_secret(WHSEC).unwrap(), id, ts, body);
            set("webhook-id", id.to_owned());
            set("webhook-timestamp", ts.to_string());
            set("webhook-signature", sig);
        }
        Some(Source::Pagerduty) => {
            set(
                "x-pagerduty-signature",
                pagerduty_signature(PD_SECRET.as_bytes(), body),
            );
            set("x-webhook-id", "01F6JQ5ZVWXYZ".to_owned());
        }
        Some(Source::Servicenow) => {
            let pair = STANDARD.encode(format!("{SN_USER}:{SN_PASSWORD}"));
            set("authorization", format!("Basic {pair}"));
        }
        Some(Source::Jsm) => {
            set(
                "x-hub-signature",
                hub_signature(JSM_SECRET.as_bytes(), body),
            );
            set(
                "x-atlassian-webhook-identifier",
                "jsm-delivery-1".to_owned(),
            );
        }
        Some(Source::Opsgenie) => set("x-emr-token", OG_TOKEN.to_owned()),
        Some(Source::Alertmanager) => set("authorization", format!("Bearer {AM_TOKEN}")),
        // No route has emr-edge's own source.
        None | Some(Source::Emr) => set("authorization", format!("Bearer {STATUS_TOKEN}")),
    }
}

pub fn intake(data: &[u8]) {
    if holds_secret(data, &SECRETS) {
        return;
    }
    let mut input = Input::new(data);
    let pick = input.byte();
    let secured = pick & 1 == 1;
    let config = &configs()[usize::from(pick & 1)];
    let store = MemoryStore::new();
    let queue = MemoryQueue::default();
    // What the service published; only it writes there, so the state key
    // (served as it is) gets fuzz only when that is JSON, as the service's is.
    let garbage = input.bytes();
    if !garbage.is_empty() {
        let bucket = format!("emr.status.{:03x}", status::bucket_of("INC-1"));
        store.set(&bucket, garbage, None).unwrap();
        if serde_json::from_slice::<Value>(garbage).is_ok() {
            store.set(status::STATE_KEY, garbage, None).unwrap();
        }
    }
    let intake = Intake {
        config,
        store: &store,
        sink: &queue,
    };
    for _ in 0..1 + input.byte() % 4 {
        let req = read_request(&mut input);
        let first = send(&intake, &store, &queue, &req, config, secured);
        if req.flags & TWICE != 0 {
            let again = send(&intake, &store, &queue, &req, config, secured);
            if let Some((r, counters)) = first {
                let evicted = counters
                    .iter()
                    .any(|c| matches!(c, Counter::DedupeEvicted(_)));
                let webhook = route_source(&req.path).is_some();
                if webhook && r.status == 202 && req.faults == 0 && !evicted {
                    let (a, _) = again.unwrap();
                    assert_eq!(a.status, 202, "a repeat was not a replay: {a:?}");
                    assert_eq!(a.body, r.body, "a replay answered differently");
                    assert_eq!(a.header("idempotent-replayed"), Some("true"));
                }
            }
        }
    }
}

/// Sends one request; returns the response (if it was answered) and counters.
fn send(
    intake: &Intake<'_>,
    store: &MemoryStore,
    queue: &MemoryQueue,
    req: &Request,
    config: &Config,
    secured: bool,
) -> Option<(Response, Vec<Counter>)> {
    *queue.broken.borrow_mut() = req.faults & BROKEN_QUEUE != 0;
    *store.injected_conflicts.borrow_mut() = u32::from(req.faults >> 1);
    let queued_before = queue.messages.borrow().len();
    let end_stream = req.flags & END_STREAM != 0;
    let source = route_source(&req.path);

    let step = intake.on_headers(&req.method, &req.path, &req.headers, end_stream, now());
    let mut counters = step.counters;
    let response = match step.value {
        HeadersStep::PassThrough => {
            assert!(!is_ours(&req.path), "passed {} through", req.path);
            None
        }
        HeadersStep::ReadBody(src) => {
            assert!(!end_stream);
            assert_eq!(Some(src), source, "read a body for {}", req.path);
            assert_eq!(req.method, "POST");
            let handled = intake
                .on_body(src, &req.headers, &req.body, now())
                .ready()
                .unwrap();
            counters.extend(handled.counters);
            Some(handled.value)
        }
        HeadersStep::Respond(r) => {
            assert!(
                is_ours(&req.path),
                "answered {} which is not ours",
                req.path
            );
            Some(r)
        }
    };
    *queue.broken.borrow_mut() = false;
    *store.injected_conflicts.borrow_mut() = 0;

    // The queue holds what the counters say, as the service will read it.
    let queued: Vec<Vec<u8>> = queue.messages.borrow()[queued_before..].to_vec();
    let count = |c: Counter| counters.iter().filter(|x| **x == c).count();
    let (mut events, mut controls, mut renewals) = (0, 0, 0);
    for msg in &queued {
        match QueueMessage::decode(msg).expect("a queued message is unreadable") {
            QueueMessage::Event(q) => {
                events += 1;
                assert_eq!(Some(q.event.source), source);
                check_queued_round_trip(&q);
                check_event(&q.event, config.sources.get(q.event.source));
            }
            QueueMessage::Control(Control::Resume { group, .. }) => {
                controls += 1;
                // Only what a page on another site cannot make a browser
                // send: a JSON content type.
                let ct = req
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                    .map_or("", |(_, v)| v.as_str());
                let essence = ct.split(';').next().unwrap_or_default().trim();
                assert!(
                    essence.eq_ignore_ascii_case("application/json")
                        || (essence.to_ascii_lowercase().starts_with("application/")
                            && essence.to_ascii_lowercase().ends_with("+json")),
                    "a resume queued with content-type {ct:?}"
                );
                let path = req.path.split_once('?').map_or(&*req.path, |(p, _)| p);
                assert_eq!(
                    Some(group.as_str()),
                    path.strip_prefix("/emr/groups/")
                        .and_then(|p| p.strip_suffix("/resume")),
                    "a resume from {}",
                    req.path
                );
            }
            // Settlements and poll results come from the service (cluster
            // mode), never a filter.
            QueueMessage::Control(Control::Settled { .. } | Control::Polled { .. }) => {
                panic!("the intake queued a leader's control")
            }
            // Only a replayed activation of the route's own source renews.
            QueueMessage::Control(Control::Renew { incident, .. }) => {
                renewals += 1;
                assert_eq!(Some(incident.source), source);
            }
        }
    }
    assert!(
        renewals <= count(Counter::Replayed),
        "a renewal without a replay"
    );
    assert_eq!(
        events,
        count(Counter::Accepted),
        "queued events vs counters"
    );
    assert_eq!(
        controls,
        count(Counter::ResumeQueued),
        "queued resumes vs counters"
    );

    let r = response?;
    check_response(&r);
    let unsigned = req.flags & SIGN == 0;
    if secured && unsigned {
        assert!(!(200..300).contains(&r.status), "answered unsigned: {r:?}");
        assert!(queued.is_empty());
    }
    if !queued.is_empty() || r.status == 202 {
        assert!((source.is_some() || is_resume(&req.path)) && req.method == "POST");
    }
    Some((r, counters))
}

fn check_response(r: &Response) {
    assert!((100..=599).contains(&r.status), "status {}", r.status);
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    if r.status >= 400 {
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        check_problem_body(&r.body, r.status);
        check_no_secret_anywhere(r);
        match r.status {
            405 => assert!(r.header("allow").is_some()),
            503 => assert!(r.header("retry-after").is_some()),
            401 => check_no_secret(&r.body, &r.headers),
            // They name the sender's content-type, path or id, bounded
            // (fuzz/README.md).
            404 | 415 => {
                assert!(
                    r.body.len() < 1024,
                    "unbounded {}: {} bytes",
                    r.status,
                    r.body.len()
                )
            }
            _ => {}
        }
        return;
    }
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&r.body).expect("a 2xx body is not JSON");
    if r.status == 202 && v["status"] == "RESUME_QUEUED" {
        assert!(v["group"].is_string(), "resume answer {v}");
    } else if r.status == 202 {
        let items: Vec<&Value> = match v.get("items") {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(other) => panic!("items is not an array: {other}"),
            None => vec![&v],
        };
        for item in items {
            assert!(item["correlationId"].is_string(), "202 item {item}");
            let status = item["status"].as_str().unwrap();
            assert!(
                matches!(status, "PROCESSING" | "IGNORED"),
                "202 item {item}"
            );
        }
    }
}

fn check_no_secret_anywhere(r: &Response) {
    let text = String::from_utf8_lossy(&r.body);
    for s in SECRETS {
        assert!(!text.contains(s), "an answer shows a secret: {text}");
        for (k, v) in &r.headers {
            assert!(!v.contains(s), "header {k} shows a secret");
        }
    }
}
