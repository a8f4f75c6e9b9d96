//! The real [`Service`], driven as the glue drives it, against the
//! in-memory store: what it records, asks for, publishes and says.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Value};

use super::*;
use crate::event::{CorrelationId, IncidentEvent, IncidentType, QueueId, RoutingMode, Source};
use crate::ledger::tests::t;
use crate::store::MemoryStore;

fn env(k: &str) -> Option<String> {
    match k {
        "CLIENT_ID" => Some("emr-edge-client".into()),
        "CLIENT_SECRET" => Some("emr-edge-secret-0123456789".into()),
        _ => None,
    }
}

pub(super) fn config(extra: Value) -> Config {
    let mut v = json!({"sources": {"canonical": {"insecure": true}}});
    if let (Value::Object(c), Value::Object(e)) = (&mut v, extra) {
        c.extend(e);
    }
    crate::config::parse(v.to_string().as_bytes(), &env).unwrap()
}

pub(super) fn genesys() -> Value {
    json!({"genesys": {
        "login_host": "login.example.test", "api_host": "api.example.test",
        "client_id_env": "CLIENT_ID", "client_secret_env": "CLIENT_SECRET",
        "default_group": "G1"
    }})
}

pub(super) fn start(cfg: Config, store: &MemoryStore) -> Service {
    create_keys(&cfg, store).unwrap();
    let (service, out) = Service::new(cfg, store, t(0)).unwrap();
    assert!(out
        .logs
        .iter()
        .any(|(_, l)| l.starts_with("emr-edge service started")));
    service
}

pub(super) fn event(id: &str, mode: RoutingMode, at: i64, ttl: u32) -> QueueMessage {
    QueueMessage::Event(QueuedEvent {
        event: IncidentEvent {
            source: Source::Canonical,
            correlation_id: CorrelationId::parse(id).unwrap(),
            incident_type: IncidentType::parse("CARRIER_OUTAGE").unwrap(),
            routing_mode: mode,
            target_queue_ids: vec![QueueId::parse("q1").unwrap()],
            timestamp: t(at),
            ttl_seconds: ttl,
            priority: 1,
            group: None,
            detail: None,
            about: None,
        },
        received_ms: t(at).timestamp_millis(),
        delivery_id: None,
        slot: false,
    })
}

fn count(out: &Out, name: &str) -> u64 {
    out.samples
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, s)| match s {
            Sample::Count(n) => *n,
            _ => 0,
        })
        .sum()
}

pub(super) fn state(store: &MemoryStore) -> Value {
    let bytes = store.get(status::STATE_KEY).unwrap().value.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn without_genesys_an_event_is_recorded_published_and_audited() {
    let store = MemoryStore::default();
    let mut s = start(config(json!({})), &store);
    let out = s.on_messages(
        vec![event("INC-1", RoutingMode::Active, 0, 3600)],
        0,
        true,
        &store,
        t(0),
    );
    assert!(out.calls.is_empty(), "nothing to call");
    assert_eq!(count(&out, EVENTS_METRIC), 1);
    let audit = out
        .logs
        .iter()
        .find(|(_, l)| l.contains(r#""audit":"event""#))
        .unwrap();
    assert_eq!(audit.0, Level::Info);
    // The state view and the status board are in shared data for the filters.
    let v = state(&store);
    assert_eq!(v["genesys"], Value::Null);
    assert_eq!(v["groups"][0]["id"], "default");
    assert_eq!(v["groups"][0]["desired"]["enabled"], true);
    let found = status::find(&store, "INC-1", None).unwrap();
    assert!(matches!(found, status::Found::One(_)));
    // No audit line per event when the host would drop it.
    let quiet = s.on_messages(
        vec![event("INC-2", RoutingMode::Active, 1, 3600)],
        2,
        false,
        &store,
        t(1),
    );
    assert!(!quiet.logs.iter().any(|(_, l)| l.contains("INC-2")));
    assert_eq!(count(&quiet, DECODE_ERRORS_METRIC), 2);
    // Every message taken off the queue counts, unreadable ones too: the
    // filters' backlog gate compares this with what they queued.
    assert_eq!(count(&out, MESSAGES_METRIC), 1);
    assert_eq!(count(&quiet, MESSAGES_METRIC), 3);
}

#[test]
fn with_genesys_the_first_batch_asks_for_a_token_and_its_failure_is_fed_back() {
    let store = MemoryStore::default();
    let mut s = start(config(genesys()), &store);
    let out = s.on_messages(
        vec![event("INC-1", RoutingMode::Active, 0, 3600)],
        0,
        true,
        &store,
        t(0),
    );
    let (callout, call) = out.calls.first().expect("a call");
    assert!(matches!(callout, Callout::Genesys(_)));
    assert_eq!(call.path, "/oauth/token");
    // The host would not take it: the service hears it failed, and retries
    // later rather than at once.
    let again = s.dispatch_failed(*callout, &store, t(0));
    assert!(again.calls.is_empty(), "{:?}", again.calls);
    assert!(again
        .samples
        .iter()
        .any(|(n, _)| *n == "emr.genesys.failures.transport"));
}

#[test]
fn an_incident_whose_ttl_runs_out_expires_at_the_tick() {
    let store = MemoryStore::default();
    let mut s = start(config(json!({})), &store);
    s.on_messages(
        vec![event("INC-1", RoutingMode::Active, 0, 60)],
        0,
        true,
        &store,
        t(0),
    );
    let before = s.on_tick(&store, t(59));
    assert_eq!(count(&before, "emr.service.expired"), 0);
    let out = s.on_tick(&store, t(61));
    assert_eq!(count(&out, "emr.service.expired"), 1);
    assert!(out
        .logs
        .iter()
        .any(|(_, l)| l.contains(r#""decision":"expired""#) && l.contains("INC-1")));
    assert_eq!(state(&store)["groups"][0]["desired"]["enabled"], false);
}

#[test]
fn a_resume_without_genesys_is_audited_as_ignored() {
    let store = MemoryStore::default();
    let mut s = start(config(json!({})), &store);
    let resume = QueueMessage::Control(Control::Resume {
        group: GroupId::parse("G1").unwrap(),
        received_ms: 0,
    });
    let out = s.on_messages(vec![resume], 0, true, &store, t(0));
    assert_eq!(count(&out, "emr.service.resumes"), 1);
    assert!(out
        .logs
        .iter()
        .any(|(_, l)| l.contains("no genesys section, nothing is driven")));
}

#[test]
fn the_heartbeat_and_the_recorded_watermark_are_written() {
    let store = MemoryStore::default();
    let mut s = start(config(json!({})), &store);
    s.on_messages(
        vec![event("INC-1", RoutingMode::Active, 5, 3600)],
        0,
        true,
        &store,
        t(5),
    );
    let beat = store.get(liveness::HEARTBEAT_KEY).unwrap().value;
    assert_eq!(
        liveness::Liveness::assess(beat.as_deref(), t(5)),
        liveness::Liveness::Alive { age_ms: 0 }
    );
    let recorded = store.get(liveness::RECORDED_KEY).unwrap().value;
    assert_eq!(
        liveness::read_recorded(recorded.as_deref()),
        Some(t(5).timestamp_millis())
    );
}

/// A token Genesys gave is mirrored into shared data once, so a VM that
/// reloads starts with it instead of logging in again.
#[test]
fn a_new_token_is_mirrored_once_and_a_reloaded_service_starts_with_it() {
    let store = MemoryStore::default();
    let mut s = start(config(genesys()), &store);
    let out = s.on_messages(vec![], 0, true, &store, t(0));
    let (callout, call) = out.calls.first().expect("a call");
    assert_eq!(call.path, "/oauth/token");
    let held = |store: &MemoryStore| store.get(TOKEN_KEY).unwrap().value.unwrap_or_default();
    assert!(held(&store).is_empty(), "created empty at start");
    let token = CallResult::Response {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: json!({"access_token": "tok-1", "token_type": "bearer", "expires_in": 86_400})
            .to_string()
            .into_bytes(),
    };
    let after = s.on_result(*callout, token, &store, t(1));
    let mirrored = store.get(TOKEN_KEY).unwrap();
    assert!(!held(&store).is_empty(), "the token is mirrored");
    // Mirrored once: a later answer does not write it again.
    let next = after.calls.first().expect("calls with the token");
    assert_eq!(
        next.1
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str()),
        Some("Bearer tok-1")
    );
    s.on_result(next.0, CallResult::Failed, &store, t(2));
    assert_eq!(store.get(TOKEN_KEY).unwrap().cas, mirrored.cas);
    // A new service on the same shared data (a reloaded VM) asks for no
    // token: its first call already carries the mirrored one.
    let mut reloaded = Service::new(config(genesys()), &store, t(3)).unwrap().0;
    let first = reloaded.on_messages(vec![], 0, true, &store, t(3));
    let (_, call) = first.calls.first().expect("a call");
    assert_ne!(call.path, "/oauth/token");
    assert!(call
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && v == "Bearer tok-1"));
}
