#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Value};

use super::*;
use crate::ledger::Ledger;
use crate::status::Board;
use crate::store::{MemoryQueue, MemoryStore};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-08-15T14:25:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

struct World {
    config: Config,
    store: MemoryStore,
    queue: MemoryQueue,
}

impl World {
    fn new() -> Self {
        Self::with(
            crate::config::parse(
                br#"{"sources":{"canonical":{"insecure":true}},"status":{"insecure":true}}"#,
                &|_| None,
            )
            .unwrap(),
        )
    }

    /// A world on `config`, with the shared-data keys made.
    fn with(config: Config) -> Self {
        let w = Self {
            config,
            store: MemoryStore::new(),
            queue: MemoryQueue::default(),
        };
        Dedupe::new(w.config.intake.dedupe)
            .create_keys(&w.store)
            .unwrap();
        status::create_keys(&w.store).unwrap();
        ignored::create_keys(&w.store).unwrap();
        w
    }

    fn intake(&self) -> Intake<'_> {
        Intake {
            config: &self.config,
            store: &self.store,
            sink: &self.queue,
        }
    }

    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Response {
        let headers = vec![
            ("content-type".to_owned(), content_type.to_owned()),
            ("content-length".to_owned(), body.len().to_string()),
        ];
        match self
            .intake()
            .on_headers("POST", path, &headers, false, now())
            .value
        {
            HeadersStep::ReadBody(src) => {
                self.intake()
                    .on_body(src, &headers, body, now())
                    .ready()
                    .unwrap()
                    .value
            }
            HeadersStep::Respond(r) => r,
            HeadersStep::PassThrough => panic!("passed through"),
        }
    }

    fn canonical(&self, body: &Value) -> Response {
        self.post(
            "/webhooks/canonical",
            "application/json",
            body.to_string().as_bytes(),
        )
    }

    fn get(&self, path: &str) -> HeadersStep {
        self.intake()
            .on_headers("GET", path, &[], true, now())
            .value
    }
}

fn incident(id: &str, mode: &str) -> Value {
    json!({
        "correlationId": id,
        "incidentType": "CARRIER_OUTAGE",
        "targetQueueIds": ["queue-12345"],
        "routingMode": mode,
        "timestamp": "2024-08-15T14:22:01Z",
        "ttl": 3600
    })
}

fn body(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn a_valid_incident_is_accepted_queued_and_answered_202() {
    let w = World::new();
    let r = w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
    assert_eq!(r.status, 202);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        body(&r),
        json!({"correlationId": "INC-1", "routingMode": "EMERGENCY_ACTIVE", "status": "PROCESSING", "statusUrl": "/emr/status/INC-1?source=canonical"})
    );
    let queued: QueuedEvent = serde_json::from_slice(&w.queue.messages.borrow()[0]).unwrap();
    assert_eq!(queued.event.correlation_id.as_str(), "INC-1");
    assert_eq!(queued.received_ms, now().timestamp_millis());
}

#[test]
fn a_repeat_gets_the_first_answer_and_is_not_queued_again_but_renews() {
    let w = World::new();
    let first = w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
    let again = w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
    assert_eq!(again.status, 202);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    // Not queued again as an event; the activation's ttl runs again.
    let messages = w.queue.messages.borrow();
    assert_eq!(messages.len(), 2);
    assert!(matches!(
        event::QueueMessage::decode(&messages[1]),
        Ok(event::QueueMessage::Control(Control::Renew { incident, .. }))
            if incident.id.as_str() == "INC-1"
    ));
    drop(messages);
    // A replayed resolution renews nothing.
    w.canonical(&incident("INC-1", "EMERGENCY_RESOLVED"));
    w.canonical(&incident("INC-1", "EMERGENCY_RESOLVED"));
    assert_eq!(w.queue.messages.borrow().len(), 3);
}

/// Every message put on the service's queue is counted `Queued`, whatever
/// its kind: the backlog gate reads that count, so a flood of replays (each
/// queueing a renewal) cannot grow the queue behind the gate's back.
#[test]
fn every_message_queued_is_counted_and_a_renewal_that_cannot_be_is_said_once_per_budget() {
    let w = World::new();
    let send = || {
        let body = incident("INC-1", "EMERGENCY_ACTIVE").to_string();
        let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        let src = match w
            .intake()
            .on_headers("POST", "/webhooks/canonical", &headers, false, now())
            .value
        {
            HeadersStep::ReadBody(src) => src,
            other => panic!("{other:?}"),
        };
        w.intake()
            .on_body(src, &headers, body.as_bytes(), now())
            .ready()
            .unwrap()
    };
    let queued =
        |h: &Handled<Response>| h.counters.iter().filter(|c| **c == Counter::Queued).count();
    let first = send();
    assert_eq!(queued(&first), 1);
    assert!(first.counters.contains(&Counter::Accepted));
    let replay = send();
    assert_eq!(queued(&replay), 1, "the renewal is a message too");
    assert!(replay.counters.contains(&Counter::Replayed));
    assert_eq!(w.queue.messages.borrow().len(), 2);
    // The queue refuses: the replay is still answered, the renewal is
    // counted as dropped and its line is one a flood repeats (budgeted).
    *w.queue.broken.borrow_mut() = true;
    let dropped = send();
    assert_eq!(dropped.value.status, 202);
    assert_eq!(queued(&dropped), 0);
    assert!(dropped.counters.contains(&Counter::RenewalDropped));
    assert!(dropped
        .notes
        .iter()
        .any(|n| n.repeated == Some(Repeated::RenewalDropped(Source::Canonical))));
}

#[test]
fn activation_and_resolution_are_different_events() {
    let w = World::new();
    assert_eq!(
        w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE")).status,
        202
    );
    let r = w.canonical(&incident("INC-1", "EMERGENCY_RESOLVED"));
    assert_eq!(r.status, 202);
    assert_eq!(r.header("idempotent-replayed"), None);
    assert_eq!(w.queue.messages.borrow().len(), 2);
}

#[test]
fn same_key_different_payload_is_409() {
    let w = World::new();
    w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
    let mut changed = incident("INC-1", "EMERGENCY_ACTIVE");
    changed["targetQueueIds"] = json!(["queue-other"]);
    let r = w.canonical(&changed);
    assert_eq!(r.status, 409);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(body(&r)["errors"][0]["field"], "correlationId");
    assert_eq!(w.queue.messages.borrow().len(), 1);
}

#[test]
fn reformatted_json_of_the_same_event_is_a_replay_not_a_conflict() {
    let w = World::new();
    w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
    let pretty = serde_json::to_vec_pretty(&incident("INC-1", "EMERGENCY_ACTIVE")).unwrap();
    let r = w.post("/webhooks/canonical", "application/json", &pretty);
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
}

#[test]
fn contract_violations_are_422_naming_fields() {
    let w = World::new();
    let mut bad = incident("INC-1", "EMERGENCY_ACTIVE");
    bad["ttl"] = json!(5);
    let r = w.canonical(&bad);
    assert_eq!(r.status, 422);
    assert_eq!(body(&r)["errors"][0]["field"], "ttl");
    assert!(w.queue.messages.borrow().is_empty());
}

#[test]
fn unreadable_json_is_400() {
    let w = World::new();
    let r = w.post("/webhooks/canonical", "application/json", b"{nope");
    assert_eq!(r.status, 400);
    assert_eq!(body(&r)["status"], 400);
}

#[test]
fn wrong_content_type_is_415() {
    let w = World::new();
    let r = w.post("/webhooks/canonical", "text/plain", b"{}");
    assert_eq!(r.status, 415);
    assert_eq!(body(&r)["errors"][0]["field"], "content-type");
    let no_type = w
        .intake()
        .on_headers("POST", "/webhooks/canonical", &[], false, now());
    assert!(matches!(no_type.value, HeadersStep::Respond(ref r) if r.status == 415));
    // Parameters and +json types are fine.
    assert!(is_json("application/json; charset=utf-8"));
    assert!(is_json("Application/JSON"));
    assert!(is_json("application/cloudevents+json"));
    assert!(!is_json("application/x-www-form-urlencoded"));
}

#[test]
fn a_415_shows_a_bounded_printable_content_type() {
    let w = World::new();
    let ct = format!("text/\u{7f}{}", "x".repeat(20_000));
    let r = w.post("/webhooks/canonical", &ct, b"{}");
    assert_eq!(r.status, 415);
    let detail = body(&r)["detail"].as_str().unwrap().to_owned();
    assert!(detail.len() < 128, "{detail}");
    assert!(detail.contains("text/?xxx"), "{detail}");
    assert!(detail.is_ascii() && !detail.contains('\u{7f}'), "{detail}");
}

#[test]
fn every_echo_of_request_text_is_bounded_and_printable() {
    let w = World::new();
    let long = format!("{}\u{7f}\n", "x".repeat(20_000));
    let detail = |r: &Response| body(r)["detail"].as_str().unwrap().to_owned();
    let check = |what: &str, r: &Response, status: u16| {
        assert_eq!(r.status, status, "{what}");
        let d = detail(r);
        assert!(d.len() < 200, "{what}: {} bytes: {d}", d.len());
        // Cut, and said to be.
        assert!(d.contains("xxxx\"..."), "{what}: {d}");
        assert!(d.is_ascii() && !d.contains('\u{7f}'), "{what}: {d}");
        // The whole answer, not only the detail.
        assert!(r.body.len() < 400, "{what}: {} bytes", r.body.len());
    };
    // An unknown source.
    let r = w.post(&format!("/webhooks/{long}"), "application/json", b"{}");
    check("unknown source", &r, 404);
    // An unknown /emr path, and /webhooks itself with a query.
    let HeadersStep::Respond(r) = w.get(&format!("/emr/{long}")) else {
        panic!()
    };
    check("unknown /emr path", &r, 404);
    let HeadersStep::Respond(r) = w.get(&format!("/webhooks?{long}")) else {
        panic!()
    };
    check("/webhooks", &r, 404);
    // A status id.
    let HeadersStep::Respond(r) = w.get(&format!("/emr/status/{long}")) else {
        panic!()
    };
    check("status id", &r, 404);
    // A resume group id.
    let out = w.intake().on_headers(
        "POST",
        &format!("/emr/groups/{long}/resume"),
        &[("content-type".to_owned(), "application/json".to_owned())],
        true,
        now(),
    );
    let HeadersStep::Respond(r) = out.value else {
        panic!()
    };
    check("resume group id", &r, 422);
    // A duplicate key in the body.
    let key = "k".repeat(20_000);
    let r = w.post(
        "/webhooks/canonical",
        "application/json",
        format!("{{\"{key}\": 1, \"{key}\": 2}}").as_bytes(),
    );
    assert_eq!(r.status, 400);
    let d = detail(&r);
    assert!(
        d.len() < 200 && d.contains("\"...") && d.contains("kkk"),
        "{d}"
    );
    // Short text is shown whole, with nothing added.
    let r = w.post("/webhooks/nagios", "application/json", b"{}");
    assert!(detail(&r).starts_with("unknown incident source \"nagios\";"));
}

#[test]
fn every_answer_says_nosniff() {
    let w = World::new();
    let accepted = w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
    let refused = w.post("/webhooks/canonical", "text/html", b"<script>");
    let HeadersStep::Respond(state) = w.get("/emr/state") else {
        panic!()
    };
    let HeadersStep::Respond(missing) = w.get("/emr/nothing") else {
        panic!()
    };
    for (what, r) in [
        ("202", &accepted),
        ("415", &refused),
        ("200", &state),
        ("404", &missing),
    ] {
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
    }
    assert_eq!(
        w.intake()
            .refuse_too_large()
            .value
            .header("x-content-type-options"),
        Some("nosniff")
    );
}

#[test]
fn too_large_is_413_from_the_declared_length_or_the_body() {
    let w = World::new();
    let big = vec![b' '; 70_000];
    let r = w.post("/webhooks/canonical", "application/json", &big);
    assert_eq!(r.status, 413);
    assert_eq!(body(&r)["errors"][0]["field"], "body");
    // No content-length (chunked): caught on the body.
    let r = w
        .intake()
        .on_body(Source::Canonical, &[], &big, now())
        .ready()
        .unwrap()
        .value;
    assert_eq!(r.status, 413);
}

#[test]
fn wrong_method_is_405_with_allow() {
    let w = World::new();
    let HeadersStep::Respond(r) = w.get("/webhooks/canonical") else {
        panic!()
    };
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let out = w
        .intake()
        .on_headers("DELETE", "/emr/status/INC-1", &[], true, now());
    let HeadersStep::Respond(r) = out.value else {
        panic!()
    };
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(out.counters, vec![Counter::Refused(405)]);
}

#[test]
fn other_paths_pass_through_untouched() {
    let w = World::new();
    for path in ["/", "/healthz", "/api/v2/x", "/webhooksx", "/emrx"] {
        assert_eq!(w.get(path), HeadersStep::PassThrough, "{path}");
    }
}

#[test]
fn unknown_sources_and_emr_paths_are_404() {
    let w = World::new();
    let r = w.post("/webhooks/nagios", "application/json", b"{}");
    assert_eq!(r.status, 404);
    let HeadersStep::Respond(r) = w.get("/emr/nothing") else {
        panic!()
    };
    assert_eq!(r.status, 404);
}

#[test]
fn an_empty_post_is_answered_from_the_headers() {
    let w = World::new();
    let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let out = w
        .intake()
        .on_headers("POST", "/webhooks/canonical", &headers, true, now());
    let HeadersStep::Respond(r) = out.value else {
        panic!()
    };
    assert_eq!(r.status, 400);
}

#[test]
fn a_broken_queue_is_503_and_forgets_the_key() {
    let w = World::new();
    *w.queue.broken.borrow_mut() = true;
    let r = w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    // The sender's retry is processed, not answered as a replay.
    *w.queue.broken.borrow_mut() = false;
    let r = w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
    assert_eq!(r.status, 202);
    assert_eq!(r.header("idempotent-replayed"), None);
    assert_eq!(w.queue.messages.borrow().len(), 1);
}

#[test]
fn status_is_served_from_the_board_then_queued_then_404() {
    let w = World::new();
    let HeadersStep::Respond(r) = w.get("/emr/status/INC-1") else {
        panic!()
    };
    assert_eq!(r.status, 404);
    assert_eq!(body(&r)["errors"][0]["field"], "correlationId");

    w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
    // Accepted but not yet recorded by the service.
    let HeadersStep::Respond(r) = w.get("/emr/status/INC-1") else {
        panic!()
    };
    assert_eq!(r.status, 200);
    assert_eq!(body(&r)["state"], "QUEUED");

    // The service records and publishes it.
    let mut ledger = Ledger::default();
    let mut board = Board::default();
    for m in w.queue.messages.borrow().iter() {
        let q: QueuedEvent = serde_json::from_slice(m).unwrap();
        ledger.apply(&q, crate::event::GroupId::parse("G").unwrap(), now());
        board.mark(&q.event.incident_key());
    }
    board.publish(&ledger, &w.store).unwrap();
    let HeadersStep::Respond(r) = w.get("/emr/status/INC-1?x=1") else {
        panic!()
    };
    assert_eq!(r.status, 200);
    assert_eq!(body(&r)["state"], "OPEN");
    assert_eq!(body(&r)["group"], "G");

    let HeadersStep::Respond(r) = w.get("/emr/status/bad%20id") else {
        panic!()
    };
    assert_eq!(r.status, 404);
}

#[test]
fn state_is_served_from_what_the_service_published() {
    let w = World::new();
    let HeadersStep::Respond(r) = w.get("/emr/state") else {
        panic!()
    };
    assert_eq!(body(&r), json!({"groups": []}));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    w.store
        .set(status::STATE_KEY, br#"{"groups":[{"id":"G"}]}"#, None)
        .unwrap();
    let HeadersStep::Respond(r) = w.get("/emr/state") else {
        panic!()
    };
    assert_eq!(body(&r)["groups"][0]["id"], "G");
}

#[test]
fn ready_follows_the_service_and_not_genesys() {
    let w = World::new();
    let ready = |w: &World| {
        let HeadersStep::Respond(r) = w.get(crate::intake::READY_PATH) else {
            panic!()
        };
        r
    };
    let r = ready(&w);
    assert_eq!(r.status, 503);
    assert!(body(&r)["detail"].as_str().unwrap().contains("not started"));
    w.store
        .set(liveness::HEARTBEAT_KEY, &liveness::beat(now()), None)
        .unwrap();
    // Genesys refusing is no reason to send webhooks elsewhere.
    let reasons = ["no such emergency group: eg-x".to_owned()];
    w.store
        .set(liveness::HEALTH_KEY, &liveness::health(&reasons), None)
        .unwrap();
    assert_eq!(ready(&w).status, 200);
}

#[test]
fn health_follows_the_service_heartbeat() {
    let w = World::new();
    let health = |w: &World| {
        let HeadersStep::Respond(r) = w.get(HEALTH_PATH) else {
            panic!()
        };
        r
    };
    // No beat yet: not started.
    let r = health(&w);
    assert_eq!(r.status, 503);
    assert!(body(&r)["detail"].as_str().unwrap().contains("not started"));
    // A beat 2 s ago: alive, and says how old.
    let two_s_ago = now() - chrono::Duration::seconds(2);
    w.store
        .set(liveness::HEARTBEAT_KEY, &liveness::beat(two_s_ago), None)
        .unwrap();
    let r = health(&w);
    assert_eq!(r.status, 200);
    assert_eq!(body(&r), json!({"status": "ok", "heartbeatAgeMs": 2000}));
    // What stops switching, as the service recorded it: degraded.
    let reasons = ["no such emergency group: eg-x".to_owned()];
    w.store
        .set(liveness::HEALTH_KEY, &liveness::health(&reasons), None)
        .unwrap();
    let r = health(&w);
    assert_eq!((r.status, &body(&r)["status"]), (200, &json!("degraded")));
    assert_eq!(body(&r)["reasons"], json!(reasons));
    // A record that cannot be read is never taken for "ok".
    w.store
        .set(liveness::HEALTH_KEY, b"{garbled", None)
        .unwrap();
    let r = health(&w);
    assert_eq!(body(&r)["status"], "degraded");
    w.store.unreadable.borrow_mut().push(liveness::HEALTH_KEY);
    let r = health(&w);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    w.store.unreadable.borrow_mut().clear();
    w.store
        .set(liveness::HEALTH_KEY, &liveness::health(&[]), None)
        .unwrap();
    // A beat a minute old: stopped.
    let old = now() - chrono::Duration::seconds(60);
    w.store
        .set(liveness::HEARTBEAT_KEY, &liveness::beat(old), None)
        .unwrap();
    let r = health(&w);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some(PROBLEM_CONTENT_TYPE));
    assert!(
        body(&r)["detail"].as_str().unwrap().contains("60 s"),
        "{}",
        body(&r)
    );
    // Only GET and HEAD.
    let out = w.intake().on_headers("POST", HEALTH_PATH, &[], true, now());
    let HeadersStep::Respond(r) = out.value else {
        panic!()
    };
    assert_eq!(r.status, 405);
}

#[test]
fn counters_say_what_happened() {
    let w = World::new();
    let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let b = incident("INC-1", "EMERGENCY_ACTIVE").to_string();
    let first = w
        .intake()
        .on_body(Source::Canonical, &headers, b.as_bytes(), now())
        .ready()
        .unwrap();
    assert_eq!(first.counters, vec![Counter::Queued, Counter::Accepted]);
    let again = w
        .intake()
        .on_body(Source::Canonical, &headers, b.as_bytes(), now())
        .ready()
        .unwrap();
    assert_eq!(again.counters, vec![Counter::Replayed, Counter::Queued]);
    let bad = w
        .intake()
        .on_body(Source::Canonical, &headers, b"[]", now())
        .ready()
        .unwrap();
    assert_eq!(bad.counters, vec![Counter::Refused(422)]);
}

// ---- Sources, authentication and status access ----------------------

use std::cell::Cell;

use crate::auth::standard_webhooks::{parse_secret, sign};
use crate::auth::{hub_signature, pagerduty_signature};

const PD_SECRET: &str = "pd-secret-fake-0123456789";
const PD_SECRET_NEXT: &str = "pd-secret-next-fake-0123456789";
const SN_USER: &str = "emr-servicenow";
const SN_PASSWORD: &str = "sn-password-fake-0123456789";
const JSM_SECRET: &str = "jsm-secret-fake-0123456789";
const OG_TOKEN: &str = "opsgenie-token-fake-0123456789";
const AM_TOKEN: &str = "alertmanager-token-fake-0123456789";
const CANONICAL_TOKEN: &str = "canonical-token-fake-0123456789";
const STATUS_TOKEN: &str = "status-token-fake-0123456789";
// The Standard Webhooks specification's example secret.
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn env(k: &str) -> Option<String> {
    let v = match k {
        "EMR_PAGERDUTY_SECRET" => PD_SECRET,
        "EMR_PAGERDUTY_SECRET_NEXT" => PD_SECRET_NEXT,
        "EMR_SERVICENOW_USER" => SN_USER,
        "EMR_SERVICENOW_PASSWORD" => SN_PASSWORD,
        "EMR_JSM_SECRET" => JSM_SECRET,
        "EMR_OPSGENIE_TOKEN" => OG_TOKEN,
        "EMR_ALERTMANAGER_TOKEN" => AM_TOKEN,
        "EMR_CANONICAL_TOKEN" => CANONICAL_TOKEN,
        "EMR_STATUS_TOKEN" => STATUS_TOKEN,
        "EMR_STANDARD_WHSEC" => WHSEC,
        _ => return None,
    };
    Some(v.to_owned())
}

/// Every route configured as docs/sources.md shows it.
const SOURCES: &str = include_str!("../../../tests/fixtures/configs/every-source.json");

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!("../../../tests/fixtures/sources/", $path)).as_slice()
    };
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A world with every source configured, and its own clock.
struct Sources {
    w: World,
    now: Cell<DateTime<Utc>>,
}

impl Sources {
    fn new() -> Self {
        Self::with(SOURCES)
    }

    fn with(config: &str) -> Self {
        let mut w = World::new();
        w.config = crate::config::parse(config.as_bytes(), &env).unwrap();
        Self {
            w,
            now: Cell::new(now()),
        }
    }

    fn handle(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Handled<Response> {
        let mut h: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        h.push(("content-type".into(), "application/json".into()));
        h.push(("content-length".into(), body.len().to_string()));
        let intake = self.w.intake();
        let out = intake.on_headers("POST", path, &h, false, self.now.get());
        match out.value {
            HeadersStep::ReadBody(src) => intake
                .on_body(src, &h, body, self.now.get())
                .ready()
                .unwrap(),
            HeadersStep::Respond(r) => Handled {
                value: r,
                counters: out.counters,
                notes: out.notes,
            },
            HeadersStep::PassThrough => panic!("passed through"),
        }
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.handle(path, headers, body).value
    }

    fn queued(&self) -> Vec<QueuedEvent> {
        self.w
            .queue
            .messages
            .borrow()
            .iter()
            .filter_map(|m| match event::QueueMessage::decode(m).unwrap() {
                event::QueueMessage::Event(q) => Some(q),
                event::QueueMessage::Control(_) => None,
            })
            .collect()
    }

    fn pagerduty(&self, body: &[u8], delivery: Option<&str>) -> Handled<Response> {
        let sig = pagerduty_signature(PD_SECRET.as_bytes(), body);
        let mut h = vec![("x-pagerduty-signature", sig.as_str())];
        if let Some(d) = delivery {
            h.push(("x-webhook-id", d));
        }
        self.handle("/webhooks/pagerduty", &h, body)
    }

    fn alertmanager(&self, body: &[u8]) -> Handled<Response> {
        let bearer = format!("Bearer {AM_TOKEN}");
        self.handle(
            "/webhooks/alertmanager",
            &[("authorization", &bearer)],
            body,
        )
    }

    fn servicenow(&self, body: &[u8]) -> Handled<Response> {
        let basic = format!("Basic {}", base64(&format!("{SN_USER}:{SN_PASSWORD}")));
        self.handle("/webhooks/servicenow", &[("authorization", &basic)], body)
    }

    fn standard(&self, body: &[u8], signed_at: i64) -> Response {
        let key = parse_secret(WHSEC).unwrap();
        let sig = sign(&key, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", signed_at, body);
        let ts = signed_at.to_string();
        self.post(
            "/webhooks/standard",
            &[
                ("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &sig),
            ],
            body,
        )
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let h: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match self
            .w
            .intake()
            .on_headers("GET", path, &h, true, self.now.get())
            .value
        {
            HeadersStep::Respond(r) => r,
            other => panic!("{other:?}"),
        }
    }
}

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `bytes` with `from` replaced by `to` (exactly once).
fn edit(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let s = std::str::from_utf8(bytes).unwrap();
    assert_eq!(s.matches(from).count(), 1, "{from}");
    s.replace(from, to).into_bytes()
}

fn assert_no_secret(r: &Response, also: &[&str]) {
    let text = String::from_utf8_lossy(&r.body).to_string() + &format!("{:?}", r.headers);
    for secret in [
        PD_SECRET,
        PD_SECRET_NEXT,
        SN_PASSWORD,
        JSM_SECRET,
        OG_TOKEN,
        AM_TOKEN,
        CANONICAL_TOKEN,
        STATUS_TOKEN,
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ]
    .iter()
    .chain(also)
    {
        assert!(!text.contains(secret), "{secret} leaked in {text}");
    }
}

#[test]
fn every_source_is_accepted_through_the_intake() {
    let s = Sources::new();
    let pd = fixture!("pagerduty/incident_triggered.json");
    let r = s.pagerduty(pd, Some("8a1d2f3e-0001")).value;
    assert_eq!(r.status, 202, "{}", body(&r));
    assert_eq!(
        body(&r),
        json!({"correlationId": "Q2UEJOMV3XYQ9N", "routingMode": "EMERGENCY_ACTIVE",
               "status": "PROCESSING", "statusUrl": "/emr/status/Q2UEJOMV3XYQ9N?source=pagerduty"})
    );
    assert_eq!(
        r.header("location"),
        Some("/emr/status/Q2UEJOMV3XYQ9N?source=pagerduty")
    );

    let r = s.servicenow(fixture!("servicenow/incident_new.json")).value;
    assert_eq!(
        (r.status, &body(&r)["correlationId"]),
        (202, &json!("INC0010023"))
    );

    let jsm = fixture!("jsm/issue_created.json");
    let sig = hub_signature(JSM_SECRET.as_bytes(), jsm);
    let r = s.post(
        "/webhooks/jsm",
        &[
            ("x-hub-signature", &sig),
            ("x-atlassian-webhook-identifier", "jsm-delivery-1"),
        ],
        jsm,
    );
    assert_eq!(
        (r.status, &body(&r)["correlationId"]),
        (202, &json!("ITSM-42"))
    );

    let r = s.post(
        "/webhooks/opsgenie",
        &[("x-emr-token", OG_TOKEN)],
        fixture!("opsgenie/alert_create.json"),
    );
    assert_eq!(r.status, 202, "{}", body(&r));
    assert_eq!(
        body(&r)["correlationId"],
        "70ea1b5b-2c5b-4dfe-a7a4-2a1a3ad0a0c5-1723731721329"
    );

    let r = s.alertmanager(fixture!("alertmanager/firing.json")).value;
    assert_eq!(r.status, 202);
    assert_eq!(body(&r)["items"].as_array().unwrap().len(), 2);

    let r = s.standard(fixture!("standard/incident_active.json"), now().timestamp());
    assert_eq!((r.status, &body(&r)["status"]), (202, &json!("PROCESSING")));

    let bearer = format!("Bearer {CANONICAL_TOKEN}");
    let r = s.post(
        "/webhooks/canonical",
        &[("authorization", &bearer)],
        incident("INC-1", "EMERGENCY_ACTIVE").to_string().as_bytes(),
    );
    assert_eq!(r.status, 202);

    let queued = s.queued();
    let sources: Vec<Source> = queued.iter().map(|q| q.event.source).collect();
    assert_eq!(
        sources,
        [
            Source::Pagerduty,
            Source::Servicenow,
            Source::Jsm,
            Source::Opsgenie,
            Source::Alertmanager,
            Source::Alertmanager,
            Source::Standard,
            Source::Canonical
        ]
    );
    let pd = &queued[0];
    assert_eq!(pd.delivery_id.as_deref(), Some("8a1d2f3e-0001"));
    assert_eq!(pd.event.incident_type.as_str(), "CARRIER_OUTAGE");
    assert_eq!(pd.event.group.as_ref().unwrap().as_str(), "eg-voice");
    assert_eq!(queued[2].delivery_id.as_deref(), Some("jsm-delivery-1"));
}

#[test]
fn an_ignored_event_can_be_looked_up_on_the_status_endpoint() {
    let mut cfg: serde_json::Value = serde_json::from_str(SOURCES).unwrap();
    cfg["status"] = json!({"insecure": true});
    let s = Sources::with(&cfg.to_string());
    s.now.set(at("2024-08-15T14:41:00Z"));
    let out = s.servicenow(fixture!("servicenow/incident_low_priority.json"));
    assert_eq!(body(&out.value)["status"], "IGNORED");
    // What was recorded, with the facts the rules saw.
    let r = s.get("/emr/status/INC0010031?source=servicenow", &[]);
    assert_eq!(r.status, 200);
    let v = body(&r);
    assert_eq!(v["state"], "IGNORED", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("priority=4"), "{v}");
    assert_eq!(s.get("/emr/status/INC0010031?source=jsm", &[]).status, 404);
}

#[test]
fn an_ignored_event_is_202_ignored_counted_logged_and_replayed_alike() {
    let s = Sources::new();
    s.now.set(at("2024-08-15T14:41:00Z"));
    // Matches no rule: the sender must not retry it, and nothing is queued.
    let low = fixture!("servicenow/incident_low_priority.json");
    let out = s.servicenow(low);
    assert_eq!(out.value.status, 202);
    assert_eq!(body(&out.value)["status"], "IGNORED");
    assert_eq!(body(&out.value)["correlationId"], "INC0010031");
    assert!(body(&out.value)["reason"]
        .as_str()
        .unwrap()
        .contains("no mapping rule"));
    assert_eq!(body(&out.value).get("statusUrl"), None);
    assert_eq!(out.value.header("idempotent-replayed"), None);
    assert_eq!(out.counters, vec![Counter::Ignored]);

    assert_eq!(out.notes.len(), 1);
    assert_eq!(out.notes[0].level, NoteLevel::Info);
    assert!(
        out.notes[0].message.contains("INC0010031 ignored"),
        "{:?}",
        out.notes
    );

    let again = s.servicenow(low);
    assert_eq!(again.value.status, 202);
    assert_eq!(again.value.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.value.body, out.value.body);
    assert_eq!(again.counters, vec![Counter::Replayed]);

    // Not about an incident at all, with a delivery id: the same.
    let ping = fixture!("pagerduty/pagey_ping.json");
    let out = s.pagerduty(ping, Some("ping-1"));
    assert_eq!(body(&out.value)["status"], "IGNORED");
    let again = s.pagerduty(ping, Some("ping-1"));
    assert_eq!(again.value.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.value.body, out.value.body);
    // An acknowledgement neither opens nor resolves.
    let ack = s.pagerduty(fixture!("pagerduty/incident_acknowledged.json"), None);
    assert_eq!(body(&ack.value)["status"], "IGNORED");
    assert!(s.queued().is_empty());
}

#[test]
fn bad_credentials_are_401_naming_the_header_and_nothing_else() {
    let s = Sources::new();
    let pd = fixture!("pagerduty/incident_triggered.json");
    let good = pagerduty_signature(PD_SECRET.as_bytes(), pd);

    // Tampered body: the signature no longer matches.
    let tampered = edit(pd, "\"urgency\": \"high\"", "\"urgency\": \"low\"");
    let out = s.handle(
        "/webhooks/pagerduty",
        &[("x-pagerduty-signature", &good)],
        &tampered,
    );
    let r = &out.value;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(body(r)["errors"][0]["field"], "x-pagerduty-signature");
    assert_eq!(out.counters, vec![Counter::Refused(401)]);
    assert_eq!(out.notes[0].level, NoteLevel::Warn);
    // A line anyone can repeat: logged within the VM's budget.
    assert_eq!(
        out.notes[0].repeated,
        Some(Repeated::Unauthenticated(Source::Pagerduty))
    );
    assert_no_secret(r, &[&good[3..]]);
    assert!(!out.notes[0].message.contains(&good[3..]));

    // Wrong secret.
    let wrong = pagerduty_signature(b"not-the-secret-0123456789", pd);
    let r = s.post(
        "/webhooks/pagerduty",
        &[("x-pagerduty-signature", &wrong)],
        pd,
    );
    assert_eq!(r.status, 401);
    assert!(body(&r)["detail"]
        .as_str()
        .unwrap()
        .contains("does not match"));
    assert_no_secret(&r, &[&wrong[3..]]);

    // Missing header.
    let r = s.post("/webhooks/pagerduty", &[], pd);
    assert_eq!(r.status, 401);
    assert_eq!(body(&r)["errors"][0]["message"], "is missing");

    // Other sources, other headers.
    let jsm = fixture!("jsm/issue_created.json");
    let r = s.post(
        "/webhooks/jsm",
        &[(
            "x-hub-signature",
            &hub_signature(b"wrong-jsm-secret-0123", jsm),
        )],
        jsm,
    );
    assert_eq!(
        (r.status, &body(&r)["errors"][0]["field"]),
        (401, &json!("x-hub-signature"))
    );
    let basic = format!(
        "Basic {}",
        base64(&format!("{SN_USER}:wrong-password-0123"))
    );
    let r = s.post(
        "/webhooks/servicenow",
        &[("authorization", &basic)],
        fixture!("servicenow/incident_new.json"),
    );
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    assert_no_secret(&r, &["wrong-password-0123"]);
    let r = s.post(
        "/webhooks/opsgenie",
        &[],
        fixture!("opsgenie/alert_create.json"),
    );
    assert_eq!(
        (r.status, &body(&r)["errors"][0]["field"]),
        (401, &json!("x-emr-token"))
    );
    let r = s.post(
        "/webhooks/alertmanager",
        &[("authorization", "Bearer wrong-token-0123456789")],
        fixture!("alertmanager/firing.json"),
    );
    assert_eq!(r.status, 401);
    assert_no_secret(&r, &["wrong-token-0123456789"]);
    let r = s.post(
        "/webhooks/canonical",
        &[],
        incident("INC-1", "EMERGENCY_ACTIVE").to_string().as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert!(s.queued().is_empty());
}

#[test]
fn a_rotated_secret_is_accepted_alongside_the_old_one() {
    let s = Sources::new();
    let pd = fixture!("pagerduty/incident_triggered.json");
    let next = pagerduty_signature(PD_SECRET_NEXT.as_bytes(), pd);
    let r = s.post(
        "/webhooks/pagerduty",
        &[("x-pagerduty-signature", &next)],
        pd,
    );
    assert_eq!(r.status, 202);
    // During PagerDuty's rotation it sends one signature per secret.
    let reopened = edit(pd, "incident.triggered", "incident.reopened");
    let reopened = edit(&reopened, "14:22:01.329Z", "14:23:00.000Z");
    let both = format!(
        "{},{}",
        pagerduty_signature(b"retired-secret-0123456789", &reopened),
        pagerduty_signature(PD_SECRET_NEXT.as_bytes(), &reopened)
    );
    let r = s.post(
        "/webhooks/pagerduty",
        &[("x-pagerduty-signature", &both)],
        &reopened,
    );
    assert_eq!(r.status, 202, "{}", body(&r));
    assert_eq!(s.queued().len(), 2);
}

#[test]
fn a_route_with_no_credential_configured_refuses_everything() {
    let s = Sources::with(r#"{"status": {"insecure": true}}"#);
    let pd = fixture!("pagerduty/incident_triggered.json");
    let r = s.pagerduty(pd, None).value;
    assert_eq!(r.status, 401);
    assert!(body(&r)["detail"]
        .as_str()
        .unwrap()
        .contains("no credential configured"));
}

#[test]
fn stale_and_future_times_are_refused() {
    let s = Sources::new();
    let active = fixture!("standard/incident_active.json");
    let t = now().timestamp();
    // Standard Webhooks: the signature's time must be within 5 minutes.
    for skewed in [t - 301, t + 301] {
        let r = s.standard(active, skewed);
        assert_eq!(r.status, 401);
        assert_eq!(body(&r)["errors"][0]["field"], "webhook-timestamp");
    }
    assert_eq!(s.standard(active, t - 299).status, 202);
    // A tool's event time far ahead of our clock would outrank every
    // later event: 422 naming the field.
    let future = edit(
        fixture!("pagerduty/incident_triggered.json"),
        "2024-08-15T14:22:01.329Z",
        "2024-08-15T15:22:01.329Z",
    );
    let r = s.pagerduty(&future, None).value;
    assert_eq!(r.status, 422);
    assert_eq!(body(&r)["errors"][0]["field"], "event.occurred_at");
    // The canonical contract keeps its replay window.
    let mut old = incident("INC-OLD", "EMERGENCY_ACTIVE");
    old["timestamp"] = json!("2024-08-13T14:22:01Z");
    let bearer = format!("Bearer {CANONICAL_TOKEN}");
    let r = s.post(
        "/webhooks/canonical",
        &[("authorization", &bearer)],
        old.to_string().as_bytes(),
    );
    assert_eq!(r.status, 422);
    assert_eq!(body(&r)["errors"][0]["field"], "timestamp");
}

#[test]
fn one_alertmanager_payload_answers_every_alert() {
    let s = Sources::new();
    s.now.set(at("2024-08-15T14:58:30Z"));
    let am = fixture!("alertmanager/one_resolved_one_firing.json");
    let out = s.alertmanager(am);
    assert_eq!(out.value.status, 202);
    assert_eq!(
        body(&out.value),
        json!({"items": [
            {"correlationId": "5f3c8e2a9b1d7c40", "routingMode": "EMERGENCY_RESOLVED",
             "status": "PROCESSING", "statusUrl": "/emr/status/5f3c8e2a9b1d7c40?source=alertmanager"},
            {"correlationId": "a07e61d9c2b84f35", "routingMode": "EMERGENCY_ACTIVE",
             "status": "PROCESSING", "statusUrl": "/emr/status/a07e61d9c2b84f35?source=alertmanager"}
        ]})
    );
    assert_eq!(out.value.header("location"), None);
    assert_eq!(
        out.counters,
        vec![
            Counter::Queued,
            Counter::Accepted,
            Counter::Queued,
            Counter::Accepted
        ]
    );
    assert_eq!(s.queued().len(), 2);

    let again = s.alertmanager(am);
    assert_eq!(again.value.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.value.body, out.value.body);
    assert_eq!(
        again.counters,
        vec![Counter::Replayed, Counter::Replayed, Counter::Queued]
    );
    assert_eq!(s.queued().len(), 2);

    // A group where one alert matches no rule: that one is IGNORED.
    let mixed = edit(
        fixture!("alertmanager/firing.json"),
        "\"instance\": \"sbc-man-02:9100\",\n        \"job\": \"sbc\",\n        \"severity\": \"critical\"",
        "\"instance\": \"sbc-man-02:9100\",\n        \"job\": \"sbc\",\n        \"severity\": \"info\"",
    );
    let out = s.alertmanager(&mixed);
    let b = body(&out.value);
    assert_eq!(b["items"][0]["status"], "PROCESSING");
    assert_eq!(b["items"][1]["status"], "IGNORED");
    assert_eq!(b["items"][1]["correlationId"], "a07e61d9c2b84f35");
    // Items are recorded in order, then the events queued.
    assert_eq!(
        out.counters,
        vec![Counter::Ignored, Counter::Queued, Counter::Accepted]
    );
}

#[test]
fn a_repeated_delivery_id_is_a_replay_and_a_reused_one_is_judged_by_its_events() {
    let s = Sources::new();
    let pd = fixture!("pagerduty/incident_triggered.json");
    let first = s.pagerduty(pd, Some("delivery-1"));
    assert_eq!(first.value.status, 202);
    let again = s.pagerduty(pd, Some("delivery-1"));
    assert_eq!(again.value.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.value.body, first.value.body);
    assert_eq!(again.counters, vec![Counter::Replayed]);
    // The same event under a new delivery id: a replay by its event key.
    let other = s.pagerduty(pd, Some("delivery-2"));
    assert_eq!(other.value.header("idempotent-replayed"), Some("true"));
    // A delivery id reused for another payload of the same event: the
    // event's own key says it is a replay.
    let changed = edit(pd, "Ada Ndlovu", "Grace Hopper");
    let out = s.pagerduty(&changed, Some("delivery-1"));
    assert_eq!(out.value.status, 202);
    assert_eq!(out.value.header("idempotent-replayed"), Some("true"));
    assert!(out.counters.contains(&Counter::DeliveryIdReused));
    assert_eq!(s.queued().len(), 1);
    // Issue 12, finding 7: no signature covers the delivery id, so a
    // replay of a captured delivery can claim the id of the tool's next
    // one first. The tool's real delivery is still processed.
    let claimed = s.pagerduty(pd, Some("delivery-next"));
    assert_eq!(claimed.value.header("idempotent-replayed"), Some("true"));
    let reopened = edit(pd, "incident.triggered", "incident.reopened");
    let reopened = edit(&reopened, "14:22:01.329Z", "14:24:30.000Z");
    let real = s.pagerduty(&reopened, Some("delivery-next"));
    assert_eq!(real.value.status, 202, "{}", body(&real.value));
    assert_eq!(real.value.header("idempotent-replayed"), None);
    assert!(real.counters.contains(&Counter::Accepted));
    assert_eq!(s.queued().len(), 2);
}

#[test]
fn a_tool_sends_several_active_events_for_one_incident() {
    let s = Sources::new();
    let pd = fixture!("pagerduty/incident_triggered.json");
    assert_eq!(s.pagerduty(pd, Some("d-1")).value.status, 202);
    // Resolved, then reopened later: a genuinely new Active event.
    let reopened = edit(pd, "incident.triggered", "incident.reopened");
    let reopened = edit(&reopened, "14:22:01.329Z", "14:24:30.000Z");
    let out = s.pagerduty(&reopened, Some("d-2"));
    assert_eq!(out.value.status, 202, "{}", body(&out.value));
    assert_eq!(out.value.header("idempotent-replayed"), None);
    assert_eq!(out.counters, vec![Counter::Queued, Counter::Accepted]);
    assert_eq!(s.queued().len(), 2);
    assert_eq!(s.queued()[1].event.timestamp, at("2024-08-15T14:24:30Z"));
    // The same incident, mode and time with another content is refused.
    let moved = edit(pd, "\"summary\": \"P1\"", "\"summary\": \"P3\"");
    let r = s.pagerduty(&moved, Some("d-3")).value;
    assert_eq!(r.status, 409);
    assert!(body(&r)["detail"]
        .as_str()
        .unwrap()
        .contains("14:22:01.329Z"));
    assert_eq!(s.queued().len(), 2);
}

#[test]
fn a_conflict_in_a_group_refuses_the_whole_payload() {
    let s = Sources::new();
    let firing = fixture!("alertmanager/firing.json");
    assert_eq!(s.alertmanager(firing).value.status, 202);
    assert_eq!(s.queued().len(), 2);
    // The first alert changed meaning at the same startsAt (a priority
    // label) and a third, new alert joined the group.
    let text = std::str::from_utf8(firing).unwrap();
    let mut v: Value = serde_json::from_str(text).unwrap();
    v["alerts"][0]["labels"]["priority"] = json!("P3");
    let mut third = v["alerts"][1].clone();
    third["fingerprint"] = json!("0000aaaabbbbcccc");
    v["alerts"].as_array_mut().unwrap().push(third);
    let r = s.alertmanager(v.to_string().as_bytes()).value;
    assert_eq!(r.status, 409);
    assert_eq!(s.queued().len(), 2);
    // The new alert was not kept half-recorded: alone, it is new.
    let mut alone: Value = serde_json::from_str(text).unwrap();
    let third = v["alerts"][2].clone();
    alone["alerts"] = json!([third]);
    let out = s.alertmanager(alone.to_string().as_bytes());
    assert_eq!(out.value.status, 202);
    assert_eq!(out.counters, vec![Counter::Queued, Counter::Accepted]);
    assert_eq!(body(&out.value)["correlationId"], "0000aaaabbbbcccc");
}

/// Queues `ok` messages, then refuses.
struct FailsAfter {
    ok: Cell<usize>,
    queue: MemoryQueue,
}

impl EventSink for FailsAfter {
    fn enqueue(&self, message: &[u8]) -> Result<(), StoreError> {
        if self.ok.get() == 0 {
            return Err(StoreError::Host("queue full".into()));
        }
        self.ok.set(self.ok.get() - 1);
        self.queue.enqueue(message)
    }
}

#[test]
fn a_queue_failure_mid_payload_forgets_only_what_was_not_queued() {
    let s = Sources::new();
    let sink = FailsAfter {
        ok: Cell::new(1),
        queue: MemoryQueue::default(),
    };
    let intake = Intake {
        config: &s.w.config,
        store: &s.w.store,
        sink: &sink,
    };
    let bearer = format!("Bearer {AM_TOKEN}");
    let h = vec![
        ("authorization".to_owned(), bearer),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    let am = fixture!("alertmanager/firing.json");
    let out = intake
        .on_body(Source::Alertmanager, &h, am, now())
        .ready()
        .unwrap();
    assert_eq!(out.value.status, 503);
    assert_eq!(out.counters[0], Counter::Unavailable);
    assert_eq!(sink.queue.messages.borrow().len(), 1);
    // The retry replays the first alert and queues the second.
    sink.ok.set(10);
    let out = intake
        .on_body(Source::Alertmanager, &h, am, now())
        .ready()
        .unwrap();
    assert_eq!(out.value.status, 202);
    assert_eq!(
        out.counters,
        vec![
            Counter::Replayed,
            Counter::Queued,
            Counter::Accepted,
            Counter::Queued
        ]
    );
    // The second alert, and the first's renewal (a replayed activation).
    assert_eq!(sink.queue.messages.borrow().len(), 3);

    // With a delivery id, the id is forgotten too.
    let pd = fixture!("pagerduty/incident_triggered.json");
    let sig = pagerduty_signature(PD_SECRET.as_bytes(), pd);
    let h = vec![
        ("x-pagerduty-signature".to_owned(), sig),
        ("x-webhook-id".to_owned(), "d-1".to_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    sink.ok.set(0);
    assert_eq!(
        intake
            .on_body(Source::Pagerduty, &h, pd, now())
            .ready()
            .unwrap()
            .value
            .status,
        503
    );
    sink.ok.set(1);
    let out = intake
        .on_body(Source::Pagerduty, &h, pd, now())
        .ready()
        .unwrap();
    assert_eq!(out.value.status, 202);
    assert_eq!(out.counters, vec![Counter::Queued, Counter::Accepted]);
}

#[test]
fn status_endpoints_need_their_own_credential() {
    // Nothing configured: closed, and the answer says why.
    let closed = Sources::with(r#"{"sources": {"canonical": {"insecure": true}}}"#);
    for path in ["/emr/state", "/emr/status/INC-1", "/emr/nothing"] {
        let r = closed.get(path, &[]);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(body(&r)["errors"][0]["field"], "authorization");
        assert!(body(&r)["detail"]
            .as_str()
            .unwrap()
            .contains("no credential configured"));
    }

    // Explicitly open.
    let open = Sources::with(r#"{"status": {"insecure": true}}"#);
    assert_eq!(open.get("/emr/state", &[]).status, 200);

    // A bearer credential.
    let s = Sources::new();
    let r = s.get("/emr/state", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(body(&r)["errors"][0]["field"], "authorization");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"emr-edge\"")
    );
    let r = s.get(
        "/emr/state",
        &[("authorization", "Bearer wrong-token-0123456789")],
    );
    assert_eq!(r.status, 401);
    assert_no_secret(&r, &["wrong-token-0123456789"]);
    let bearer = format!("Bearer {STATUS_TOKEN}");
    assert_eq!(
        s.get("/emr/state", &[("authorization", &bearer)]).status,
        200
    );
    // Unknown paths under /emr are not revealed without it.
    assert_eq!(s.get("/emr/nothing", &[]).status, 401);
    assert_eq!(
        s.get("/emr/nothing", &[("authorization", &bearer)]).status,
        404
    );
    // A source's credential does not open /emr/*.
    let other = format!("Bearer {AM_TOKEN}");
    assert_eq!(
        s.get("/emr/state", &[("authorization", &other)]).status,
        401
    );
    // Webhooks do not need it.
    let r = s.alertmanager(fixture!("alertmanager/firing.json")).value;
    assert_eq!(r.status, 202);
}

#[test]
fn resume_is_queued_for_the_service_behind_the_status_credential() {
    let s = Sources::new();
    // As a data action or curl sends it: JSON, no Origin.
    let post = |path: &str, headers: &[(&str, &str)]| {
        let h: Vec<(String, String)> = headers
            .iter()
            .chain(&[("content-type", "application/json")])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s.w.intake().on_headers("POST", path, &h, true, now())
    };
    let path = "/emr/groups/eg-voice/resume";
    let HeadersStep::Respond(r) = post(path, &[]).value else {
        panic!()
    };
    assert_eq!(r.status, 401);
    assert!(s.w.queue.messages.borrow().is_empty());
    let bearer = format!("Bearer {STATUS_TOKEN}");
    let out = post(path, &[("authorization", &bearer)]);
    let HeadersStep::Respond(r) = out.value else {
        panic!()
    };
    assert_eq!(r.status, 202);
    // A resume is a message on the queue like an event: counted as one.
    assert_eq!(out.counters, vec![Counter::ResumeQueued, Counter::Queued]);
    assert_eq!(
        body(&r),
        json!({"group": "eg-voice", "status": "RESUME_QUEUED", "stateUrl": "/emr/state"})
    );
    let queued = s.w.queue.messages.borrow().clone();
    assert_eq!(queued.len(), 1);
    assert_eq!(
        event::QueueMessage::decode(&queued[0]).unwrap(),
        event::QueueMessage::Control(Control::Resume {
            group: GroupId::parse("eg-voice").unwrap(),
            received_ms: now().timestamp_millis(),
        })
    );
    // Only POST.
    let r = s.get(path, &[("authorization", &bearer)]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    // Anything else under /emr/groups is unknown (`/emr/groups/{id}` itself
    // is the group's routing, GET only).
    for other in [
        "/emr/groups/x/status",
        "/emr/groups//resume",
        "/emr/groups/a/b/resume",
    ] {
        let HeadersStep::Respond(r) = post(other, &[("authorization", &bearer)]).value else {
            panic!()
        };
        assert_eq!(r.status, 404, "{other}");
    }
    // The id is percent-decoded: `%2D` is '-'.
    let HeadersStep::Respond(r) = post(
        "/emr/groups/eg%2Dvoice/resume",
        &[("authorization", &bearer)],
    )
    .value
    else {
        panic!()
    };
    assert_eq!(r.status, 202);
    assert_eq!(body(&r)["group"], "eg-voice");
    // A group the config does not name: 404, naming it and the known ones.
    let out = post(
        "/emr/groups/3c3f7a3e-2f5c-4f3a-9b1e-000000000001/resume",
        &[("authorization", &bearer)],
    );
    assert_eq!(out.counters, vec![Counter::Refused(404)]);
    let HeadersStep::Respond(r) = out.value else {
        panic!()
    };
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let b = body(&r);
    assert!(
        b["detail"].as_str().unwrap().starts_with(
            "emergency group \"3c3f7a3e-2f5c-4f3a-9b1e-000000000001\" is not one emr-edge drives"
        ),
        "{b}"
    );
    assert_eq!(
        b["errors"],
        json!([{"field": "group", "message": "is not configured: the config names eg-voice"}])
    );
    // Broken percent-encoding: 400. A decoded id that is no id: 422.
    for (path, status) in [
        ("/emr/groups/eg%2voice/resume", 400),
        ("/emr/groups/eg%zzvoice/resume", 400),
        ("/emr/groups/%FF/resume", 400),
        ("/emr/groups/Voice%20Outage/resume", 422),
        ("/emr/groups/a%2Fb/resume", 422),
    ] {
        let HeadersStep::Respond(r) = post(path, &[("authorization", &bearer)]).value else {
            panic!()
        };
        assert_eq!(r.status, status, "{path}");
        assert_eq!(body(&r)["errors"][0]["field"], "group", "{path}");
    }
    assert_eq!(s.w.queue.messages.borrow().len(), 2, "only the two 202s");
    // A broken queue: 503, retry.
    *s.w.queue.broken.borrow_mut() = true;
    let HeadersStep::Respond(r) = post(path, &[("authorization", &bearer)]).value else {
        panic!()
    };
    assert_eq!(r.status, 503);
}

#[test]
fn without_groups_in_the_config_no_resume_is_queued() {
    let s = Sources::with(r#"{"status": {"insecure": true}}"#);
    let h = vec![("content-type".to_owned(), "application/json".to_owned())];
    let out =
        s.w.intake()
            .on_headers("POST", "/emr/groups/eg-voice/resume", &h, true, now());
    let HeadersStep::Respond(r) = out.value else {
        panic!()
    };
    assert_eq!(r.status, 404);
    assert_eq!(
        body(&r)["errors"][0]["message"],
        "is not configured: the config names no emergency group"
    );
    assert!(s.w.queue.messages.borrow().is_empty());
}

#[test]
fn a_resume_a_page_elsewhere_could_send_is_refused_and_not_queued() {
    let s = Sources::new();
    let bearer = format!("Bearer {STATUS_TOKEN}");
    let path = "/emr/groups/eg-voice/resume";
    let post = |headers: &[(&str, &str)]| {
        let h: Vec<(String, String)> = headers
            .iter()
            .chain(&[(":authority", "emr.example.com")])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let out = s.w.intake().on_headers("POST", path, &h, false, now());
        let HeadersStep::Respond(r) = out.value else {
            panic!()
        };
        assert_eq!(out.counters, vec![Counter::Refused(r.status)]);
        (r.status, body(&r)["errors"][0]["field"].clone())
    };
    let json = ("content-type", "application/json");
    let auth = ("authorization", bearer.as_str());
    // A cross-site form, with the browser's cached credential.
    let form = ("content-type", "application/x-www-form-urlencoded");
    let evil = ("origin", "https://evil.example");
    assert_eq!(post(&[auth, form]), (415, json!("content-type")));
    assert_eq!(post(&[auth, form, evil]), (403, json!("origin")));
    assert_eq!(post(&[auth, json, evil]), (403, json!("origin")));
    let cross = ("sec-fetch-site", "cross-site");
    assert_eq!(post(&[auth, json, cross]), (403, json!("sec-fetch-site")));
    // Without the credential, nothing else is told.
    assert_eq!(post(&[form, evil]), (401, json!("authorization")));
    assert!(s.w.queue.messages.borrow().is_empty());
    // The same from the host's own page is fine.
    let own = ("origin", "https://emr.example.com");
    let h: Vec<(String, String)> = [auth, json, own, (":authority", "emr.example.com")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let HeadersStep::Respond(r) = s.w.intake().on_headers("POST", path, &h, true, now()).value
    else {
        panic!()
    };
    assert_eq!(r.status, 202);
    assert_eq!(s.w.queue.messages.borrow().len(), 1);
}

#[test]
fn a_signed_standard_webhook_is_found_queued_before_the_service_records_it() {
    let s = Sources::with(
        r#"{"sources": {"standard": {"auth": [{"kind": "standard_webhooks", "secret_env": "EMR_STANDARD_WHSEC"}]}},
            "status": {"insecure": true}}"#,
    );
    let r = s.standard(fixture!("standard/incident_active.json"), now().timestamp());
    assert_eq!(r.status, 202);
    let r = s.get("/emr/status/INC-2024-08-15-7742", &[]);
    assert_eq!((r.status, &body(&r)["state"]), (200, &json!("QUEUED")));
}

// ---- hostile senders with a valid credential (RELIABILITY.md) ------------------

/// The every-source config with `patch` merged in.
fn sources_with(patch: Value) -> Sources {
    fn merge(base: &mut Value, patch: &Value) {
        match (base, patch) {
            (Value::Object(b), Value::Object(p)) => {
                for (k, v) in p {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (b, p) => *b = p.clone(),
        }
    }
    let mut config: Value = serde_json::from_str(SOURCES).unwrap();
    merge(&mut config, &patch);
    Sources::with(&config.to_string())
}

/// An Alertmanager notification of `n` firing alerts the every-source
/// rule takes, fingerprints numbered from `from`.
fn alerts(n: usize, from: usize, starts_at: &str) -> Vec<u8> {
    let alerts: Vec<Value> = (from..from + n)
        .map(|i| {
            json!({
                "status": "firing",
                "labels": {"alertname": "SipTrunkDown", "team": "voice",
                           "severity": "critical", "instance": format!("sbc-{i}")},
                "annotations": {},
                "startsAt": starts_at,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.voice.svc:9090/graph",
                "fingerprint": format!("{i:016x}"),
            })
        })
        .collect();
    json!({"version": "4", "groupKey": "{}:{alertname=\"SipTrunkDown\"}", "truncatedAlerts": 0,
           "status": "firing", "receiver": "emr-edge", "groupLabels": {}, "commonLabels": {},
           "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": alerts})
    .to_string()
    .into_bytes()
}

/// What the service does with the queue: record, publish, count.
fn service_records(s: &Sources, ledger: &mut Ledger, book: &mut quota::Book) {
    let mut board = Board::default();
    for q in s.queued() {
        ledger.apply(&q, crate::event::GroupId::parse("G").unwrap(), s.now.get());
        book.recorded(&q);
        board.mark(&q.event.incident_key());
    }
    s.w.queue.messages.borrow_mut().clear();
    for i in ledger.incidents().map(|i| i.key()) {
        board.mark(&i);
    }
    board.publish(ledger, &s.w.store).unwrap();
    book.sync(ledger, &s.w.store).unwrap();
}

#[test]
fn one_sources_flood_is_refused_at_its_share_and_takes_no_others_room() {
    // Issue 12, finding 2: Alertmanager alone filled the ledger, and
    // the next PagerDuty P1 was answered 202, then FAILED.
    let s = sources_with(json!({
        "ledger": {"max_open_incidents": 100},
        "sources": {"alertmanager": {"max_open_incidents": 20}}
    }));
    quota::create_keys(&s.w.store).unwrap();
    let (mut ledger, mut book) = (Ledger::default(), quota::Book::default());
    let t0 = "2024-08-15T14:20:31.402Z";
    assert_eq!(s.alertmanager(&alerts(15, 0, t0)).value.status, 202);
    assert_eq!(s.queued().len(), 15);
    assert!(s.queued().iter().all(|q| q.slot));
    // Ten more: five fit, so the whole notification is refused.
    let out = s.alertmanager(&alerts(10, 15, t0));
    let r = &out.value;
    assert_eq!(r.status, 429, "{}", body(r));
    assert_eq!(r.header("content-type"), Some(PROBLEM_CONTENT_TYPE));
    assert_eq!(r.header("retry-after"), Some("30"));
    assert_eq!(body(r)["errors"][0]["field"], "correlationId");
    assert!(body(r)["detail"]
        .as_str()
        .unwrap()
        .contains("max_open_incidents"));
    assert_eq!(out.counters.last(), Some(&Counter::Refused(429)));
    assert_eq!(
        s.queued().len(),
        15,
        "nothing of a refused delivery is queued"
    );
    assert_eq!(
        quota::count(&s.w.store, Source::Alertmanager).unwrap(),
        quota::Count {
            open: 0,
            pending: 15
        },
        "the refused delivery's slots are given back"
    );
    // Its retry is refused again, not answered as a replay.
    assert_eq!(s.alertmanager(&alerts(10, 15, t0)).value.status, 429);
    // PagerDuty's share is its own.
    let pd = s.pagerduty(fixture!("pagerduty/incident_triggered.json"), None);
    assert_eq!(pd.value.status, 202);
    service_records(&s, &mut ledger, &mut book);
    assert_eq!(ledger.open_of(Source::Alertmanager), 15);
    assert_eq!(ledger.open_of(Source::Pagerduty), 1);
    // Five more fit exactly; then the share is used up.
    assert_eq!(s.alertmanager(&alerts(5, 15, t0)).value.status, 202);
    service_records(&s, &mut ledger, &mut book);
    assert_eq!(s.alertmanager(&alerts(1, 20, t0)).value.status, 429);
    // An alert already open restarting (a new startsAt) takes no room.
    let again = s.alertmanager(&alerts(1, 3, "2024-08-15T14:24:00Z"));
    assert_eq!(again.value.status, 202, "{}", body(&again.value));
    assert!(!s.queued()[0].slot);
    service_records(&s, &mut ledger, &mut book);
    // Resolutions make room again.
    let mut resolved: Value = serde_json::from_slice(&alerts(2, 0, t0)).unwrap();
    for a in resolved["alerts"].as_array_mut().unwrap() {
        a["status"] = json!("resolved");
        a["endsAt"] = json!("2024-08-15T14:24:30Z");
    }
    let r = s.alertmanager(resolved.to_string().as_bytes());
    assert_eq!(r.value.status, 202);
    service_records(&s, &mut ledger, &mut book);
    assert_eq!(ledger.open_of(Source::Alertmanager), 18);
    assert_eq!(s.alertmanager(&alerts(2, 20, t0)).value.status, 202);
}

#[test]
fn an_alertmanager_notification_over_max_alerts_is_refused_whole() {
    let s = Sources::new();
    let r = s
        .alertmanager(&alerts(101, 0, "2024-08-15T14:20:31.402Z"))
        .value;
    assert_eq!(r.status, 422);
    assert_eq!(body(&r)["errors"][0]["field"], "alerts");
    let msg = body(&r)["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.contains("101") && msg.contains("max_alerts: 100"),
        "{msg}"
    );
    assert!(s.queued().is_empty());
    let r = s.alertmanager(&alerts(100, 0, "2024-08-15T14:20:31.402Z"));
    assert_eq!(r.value.status, 202);
}

#[test]
fn a_pagerduty_event_older_than_the_replay_window_is_refused() {
    // PagerDuty signs no time: a captured delivery stays valid, so its
    // event time is held to the replay window (RELIABILITY.md, hostile senders, #5).
    let s = Sources::new();
    let pd = fixture!("pagerduty/incident_triggered.json");
    s.now.set(now() + chrono::Duration::days(2));
    let r = s.pagerduty(pd, Some("late-1")).value;
    assert_eq!(r.status, 422, "{}", body(&r));
    assert_eq!(body(&r)["errors"][0]["field"], "event.occurred_at");
    assert!(s.queued().is_empty());
}

#[test]
fn a_status_lookup_names_the_source_when_two_use_one_id() {
    // Issue 12, finding 9: an Alertmanager fingerprint equal to a
    // PagerDuty incident id replaced its status.
    let s = Sources::new();
    let bearer = format!("Bearer {STATUS_TOKEN}");
    let get = |path: &str| s.get(path, &[("authorization", &bearer)]);
    let pd = s.pagerduty(fixture!("pagerduty/incident_triggered.json"), None);
    assert_eq!(pd.value.status, 202);
    let shadow = String::from_utf8(alerts(1, 0, "2024-08-15T14:20:31.402Z"))
        .unwrap()
        .replace("0000000000000000", "Q2UEJOMV3XYQ9N");
    assert_eq!(s.alertmanager(shadow.as_bytes()).value.status, 202);
    let (mut ledger, mut book) = (Ledger::default(), quota::Book::default());
    service_records(&s, &mut ledger, &mut book);
    let r = get("/emr/status/Q2UEJOMV3XYQ9N");
    assert_eq!(r.status, 409, "{}", body(&r));
    assert_eq!(body(&r)["errors"][0]["field"], "source");
    let detail = body(&r)["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("?source=pagerduty") && detail.contains("?source=alertmanager"));
    let r = get("/emr/status/Q2UEJOMV3XYQ9N?source=pagerduty");
    assert_eq!((r.status, &body(&r)["source"]), (200, &json!("pagerduty")));
    let r = get("/emr/status/Q2UEJOMV3XYQ9N?source=alertmanager");
    assert_eq!(
        (r.status, &body(&r)["source"]),
        (200, &json!("alertmanager"))
    );
    let r = get("/emr/status/Q2UEJOMV3XYQ9N?source=jsm");
    assert_eq!(r.status, 404);
    let r = get("/emr/status/Q2UEJOMV3XYQ9N?source=nagios");
    assert_eq!(
        (r.status, &body(&r)["errors"][0]["field"]),
        (422, &json!("source"))
    );
}

#[test]
fn an_incident_recorded_but_gone_from_the_board_is_not_called_queued() {
    // Issue 12, finding 9: ids pushed off the board stayed QUEUED
    // forever, because the dedupe store still knew them.
    let w = World::new();
    w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
    let state = |w: &World| {
        let HeadersStep::Respond(r) = w.get("/emr/status/INC-1") else {
            panic!()
        };
        (r.status, body(&r))
    };
    assert_eq!(state(&w).1["state"], "QUEUED");
    // The service has recorded an event received two seconds later: the
    // queue is in order, so INC-1 was recorded too.
    let later = now().timestamp_millis() + 2_000;
    w.store
        .set(liveness::RECORDED_KEY, &liveness::recorded(later), None)
        .unwrap();
    let (status, b) = state(&w);
    assert_eq!(status, 404);
    assert!(b["detail"]
        .as_str()
        .unwrap()
        .contains("no longer on the status board"));
    // Only just recorded: still in flight as far as anyone can tell.
    let just = now().timestamp_millis();
    w.store
        .set(liveness::RECORDED_KEY, &liveness::recorded(just), None)
        .unwrap();
    assert_eq!(state(&w).1["state"], "QUEUED");
}

// ---- cluster mode: committed to etcd before the 202 --------------------------

mod cluster {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::callout::CallResult;
    use crate::etcd::retention;
    use crate::intake::{BodyStep, Commit};

    /// A replica whose service has a lease for the events.
    fn world() -> World {
        let w = leaseless();
        leased(&w, 77, 60_000);
        w
    }

    /// The service's lease `id`, usable `for_ms` more.
    fn leased(w: &World, id: i64, for_ms: i64) {
        retention::publish(
            &w.store,
            retention::Current {
                id,
                until_ms: now().timestamp_millis() + for_ms,
            },
        )
        .unwrap();
    }

    fn leaseless() -> World {
        World::with(
            crate::config::parse(
                br#"{"sources":{"canonical":{"insecure":true}},"status":{"insecure":true},
                     "cluster":{"etcd_cluster":"etcd","replica_id_env":"REPLICA"}}"#,
                &|k| (k == "REPLICA").then(|| "r1".to_owned()),
            )
            .unwrap(),
        )
    }

    fn send(w: &World, body: &Value) -> Handled<BodyStep> {
        let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        w.intake().on_body(
            Source::Canonical,
            &headers,
            body.to_string().as_bytes(),
            now(),
        )
    }

    fn commit(h: Handled<BodyStep>) -> Commit {
        match h.value {
            BodyStep::Commit(c) => c,
            BodyStep::Respond(r) => panic!("answered without etcd: {}", body(&r)),
        }
    }

    fn etcd(inner: Value) -> CallResult {
        CallResult::Response {
            status: 200,
            headers: vec![],
            body: json!({"header": {"revision": "9"}, "succeeded": true,
                         "responses": [inner, {"response_put": {}}]})
            .to_string()
            .into_bytes(),
        }
    }

    fn created() -> CallResult {
        etcd(json!({"response_txn": {"succeeded": true, "responses": [{"response_put": {}}]}}))
    }

    /// The key is there, with the record `c` committed.
    fn stored(c: &Commit) -> CallResult {
        let call_body: Value = serde_json::from_slice(c.call.body.as_deref().unwrap()).unwrap();
        let put = &call_body["success"][0]["request_txn"]["success"][0]["request_put"];
        etcd(
            json!({"response_txn": {"responses": [{"response_range": {"kvs": [
            {"key": put["key"], "value": put["value"], "create_revision": "3",
             "mod_revision": "3"}]}}]}}),
        )
    }

    #[test]
    fn an_event_is_answered_only_once_etcd_recorded_it_and_nothing_is_queued() {
        let w = world();
        let c = commit(send(&w, &incident("INC-1", "EMERGENCY_ACTIVE")));
        assert_eq!(c.call.cluster, "etcd");
        assert_eq!(c.call.path, "/v3/kv/txn");
        let txn: Value = serde_json::from_slice(c.call.body.as_deref().unwrap()).unwrap();
        let key = txn["success"][0]["request_txn"]["compare"][0]["key"]
            .as_str()
            .unwrap();
        let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key).unwrap();
        let key = String::from_utf8(key).unwrap();
        assert!(key.starts_with("emr/e/") && key.contains("INC-1"), "{key}");
        // On the service's lease: it leaves after the dedupe window.
        assert_eq!(
            txn["success"][0]["request_txn"]["success"][0]["request_put"]["lease"],
            "77"
        );
        let out = w.intake().on_commit(c.pending, &created());
        assert_eq!(out.value.status, 202);
        assert_eq!(body(&out.value)["status"], "PROCESSING");
        assert_eq!(out.counters, vec![Counter::Accepted]);
        assert!(w.queue.messages.borrow().is_empty(), "the log carries it");
    }

    #[test]
    fn another_replicas_copy_is_a_replay_and_another_payload_a_conflict() {
        let w = world();
        let c = commit(send(&w, &incident("INC-2", "EMERGENCY_ACTIVE")));
        let answer = stored(&c);
        let out = w.intake().on_commit(c.pending, &answer);
        assert_eq!(out.value.status, 202);
        assert_eq!(out.value.header("idempotent-replayed"), Some("true"));
        assert_eq!(out.counters, vec![Counter::Replayed]);
        // The same key, recorded elsewhere with another payload.
        let w = world();
        let mut other = incident("INC-3", "EMERGENCY_ACTIVE");
        let c = commit(send(&w, &other));
        other["targetQueueIds"] = json!(["queue-999"]);
        let theirs = commit(send(&world(), &other));
        let out = w.intake().on_commit(c.pending, &stored(&theirs));
        assert_eq!(out.value.status, 409);
        assert!(out.counters.contains(&Counter::Refused(409)));
    }

    #[test]
    fn etcd_failing_is_503_and_keeps_nothing_so_the_retry_is_processed() {
        let w = world();
        let c = commit(send(&w, &incident("INC-4", "EMERGENCY_ACTIVE")));
        let no_leader = CallResult::Response {
            status: 503,
            headers: vec![],
            body:
                br#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#
                    .to_vec(),
        };
        let out = w.intake().on_commit(c.pending, &no_leader);
        assert_eq!(out.value.status, 503);
        assert_eq!(out.value.header("retry-after"), Some("1"));
        assert!(body(&out.value)["detail"]
            .as_str()
            .unwrap()
            .contains("etcd"));
        assert_eq!(out.counters, vec![Counter::Unavailable]);
        // Forgotten here too: the retry goes to etcd again, not a replay.
        let again = commit(send(&w, &incident("INC-4", "EMERGENCY_ACTIVE")));
        assert_eq!(
            w.intake().on_commit(again.pending, &created()).value.status,
            202
        );
        // No answer at all is the same.
        let c = commit(send(&w, &incident("INC-5", "EMERGENCY_ACTIVE")));
        assert_eq!(
            w.intake()
                .on_commit(c.pending, &CallResult::Failed)
                .value
                .status,
            503
        );
    }

    #[test]
    fn without_a_lease_for_its_events_it_is_503_and_keeps_nothing() {
        let w = leaseless();
        let out = send(&w, &incident("INC-7", "EMERGENCY_ACTIVE"))
            .ready()
            .unwrap();
        assert_eq!(out.value.status, 503);
        assert_eq!(out.value.header("retry-after"), Some("1"));
        assert!(body(&out.value)["detail"]
            .as_str()
            .unwrap()
            .contains("lease"));
        // Nothing was kept: once there is a lease, the retry goes to etcd.
        leased(&w, 5, 1);
        commit(send(&w, &incident("INC-7", "EMERGENCY_ACTIVE")));
    }

    #[test]
    fn ready_only_with_a_live_service_a_lease_and_etcd_answering() {
        let ready = |w: &World| {
            let HeadersStep::Respond(r) = w.get(crate::intake::READY_PATH) else {
                panic!()
            };
            r
        };
        let w = leaseless();
        w.store
            .set(liveness::HEARTBEAT_KEY, &liveness::beat(now()), None)
            .unwrap();
        let r = ready(&w);
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(body(&r)["detail"].as_str().unwrap().contains("lease"));
        let w = world();
        w.store
            .set(liveness::HEARTBEAT_KEY, &liveness::beat(now()), None)
            .unwrap();
        assert_eq!(ready(&w).status, 200);
        assert_eq!(body(&ready(&w)), json!({"status": "ready"}));
        // etcd failing, as the service says: not ready, and why.
        let why = ["etcd is failing: no leader".to_owned()];
        w.store
            .set(liveness::READY_KEY, &liveness::health(&why), None)
            .unwrap();
        let r = ready(&w);
        assert_eq!(r.status, 503);
        assert!(body(&r)["detail"].as_str().unwrap().contains("no leader"));
    }

    #[test]
    fn with_etcds_auth_on_a_commit_carries_the_services_token() {
        let w = World::with(
            crate::config::parse(
                br#"{"sources":{"canonical":{"insecure":true}},"status":{"insecure":true},
                     "cluster":{"etcd_cluster":"etcd","replica_id_env":"REPLICA",
                       "auth":{"user_env":"U","password_env":"P"}}}"#,
                &|k| match k {
                    "REPLICA" => Some("r1".to_owned()),
                    "U" => Some("emr".to_owned()),
                    "P" => Some("a-long-etcd-password".to_owned()),
                    _ => None,
                },
            )
            .unwrap(),
        );
        leased(&w, 77, 60_000);
        // No token yet: 503, and nothing kept.
        let out = send(&w, &incident("INC-8", "EMERGENCY_ACTIVE"))
            .ready()
            .unwrap();
        assert_eq!(out.value.status, 503);
        assert!(body(&out.value)["detail"]
            .as_str()
            .unwrap()
            .contains("token"));
        crate::etcd::token::publish(&w.store, "tok.9").unwrap();
        let c = commit(send(&w, &incident("INC-8", "EMERGENCY_ACTIVE")));
        assert!(c
            .call
            .headers
            .contains(&("authorization".to_owned(), "tok.9".to_owned())));
    }

    #[test]
    fn a_local_replay_is_answered_at_once_without_etcd() {
        let w = world();
        let c = commit(send(&w, &incident("INC-6", "EMERGENCY_ACTIVE")));
        w.intake().on_commit(c.pending, &created());
        // This replica recorded it: the fast path answers.
        let again = send(&w, &incident("INC-6", "EMERGENCY_ACTIVE"))
            .ready()
            .unwrap();
        assert_eq!(again.value.header("idempotent-replayed"), Some("true"));
    }
}
