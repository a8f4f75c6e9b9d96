//! The service in cluster mode, on etcd 3.4's answer bodies: it acts only
//! as the leader and once it has read the log, and records every replica's
//! events either way.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::sync::Arc;

use serde_json::{json, Value};

use super::super::tests::{config, event, genesys, start, state};
use super::super::*;
use crate::etcd::b64;
use crate::etcd::config::{compile, ClusterConfig};
use crate::etcd::log::Record;
use crate::event::RoutingMode;
use crate::ledger::tests::t;
use crate::store::MemoryStore;

fn clustered(extra: Value) -> Config {
    let mut c = config(extra);
    let section: ClusterConfig = serde_json::from_value(
        json!({"etcd_cluster": "etcd", "replica_id_env": "REPLICA", "poll_ms": 100}),
    )
    .unwrap();
    let env = |k: &str| (k == "REPLICA").then(|| "replica-a".to_owned());
    c.cluster = Some(Arc::new(compile(&section, &env).unwrap()));
    c
}

fn ok(body: Value) -> CallResult {
    CallResult::json(200, &body)
}

fn header(revision: i64) -> Value {
    json!({"revision": revision.to_string()})
}

/// The calls `out` holds to etcd.
fn etcd_calls(out: &Out) -> Vec<(Callout, HttpCall)> {
    out.calls
        .iter()
        .filter(|(c, _)| {
            matches!(
                c,
                Callout::Election(_) | Callout::Feed(_) | Callout::Lease(_) | Callout::Snapshot(_)
            )
        })
        .cloned()
        .collect()
}

fn genesys_calls(out: &Out) -> usize {
    out.calls
        .iter()
        .filter(|(c, _)| matches!(c, Callout::Genesys(_)))
        .count()
}

/// Answers every etcd call in `out` with what `answer` says, following
/// the calls those answers lead to; returns the Genesys calls asked for.
fn answer_etcd(
    s: &mut Service,
    store: &MemoryStore,
    out: Out,
    now: DateTime<Utc>,
    answer: &dyn Fn(&HttpCall) -> CallResult,
) -> usize {
    follow_etcd(s, store, out, now, answer).0
}

/// [`answer_etcd`], and the outbox's commits asked for on the way (left
/// unanswered).
fn follow_etcd(
    s: &mut Service,
    store: &MemoryStore,
    mut out: Out,
    now: DateTime<Utc>,
    answer: &dyn Fn(&HttpCall) -> CallResult,
) -> (usize, Vec<(Callout, HttpCall)>) {
    let mut genesys = genesys_calls(&out);
    let mut outbox = Vec::new();
    for _ in 0..20 {
        outbox.extend(
            out.calls
                .iter()
                .filter(|(c, _)| matches!(c, Callout::Outbox(_)))
                .cloned(),
        );
        let calls = etcd_calls(&out);
        if calls.is_empty() {
            return (genesys, outbox);
        }
        let mut next = Out::default();
        for (callout, call) in calls {
            let more = s.on_result(callout, answer(&call), store, now);
            next.calls.extend(more.calls);
        }
        genesys += genesys_calls(&next);
        out = next;
    }
    panic!("etcd calls never end");
}

/// etcd as it answers a lone replica that wins, with `events` in the log
/// and no snapshot.
fn winning(events: &[Value]) -> impl Fn(&HttpCall) -> CallResult + '_ {
    move |call| {
        let body: Value = serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
        match call.path.as_str() {
            "/v3/lease/grant" => ok(json!({"header": header(1), "ID": "77", "TTL": body["TTL"]})),
            "/v3/kv/range" if body["key"] == b64(b"emr/s") => ok(json!({"header": header(5)})),
            "/v3/lease/keepalive" => {
                ok(json!({"result": {"header": header(1), "ID": "77", "TTL": "3"}}))
            }
            "/v3/kv/txn" => ok(json!({"header": header(5), "succeeded": true,
                                       "responses": [{"response_put": {}}]})),
            "/v3/kv/range" if body.get("range_end").is_none() => {
                // The marker.
                let rev = if events.is_empty() { 0 } else { 4 };
                ok(json!({"header": header(5), "kvs": [{"key": b64(b"emr/m"),
                          "mod_revision": rev.to_string()}]}))
            }
            "/v3/kv/range" => {
                let kvs: Vec<Value> = events
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        let r = Record {
                            fingerprint: "f".into(),
                            message: m.clone(),
                        };
                        json!({"key": b64(format!("emr/e/{i}").as_bytes()),
                               "value": b64(&serde_json::to_vec(&r).unwrap()),
                               "mod_revision": "4"})
                    })
                    .collect();
                ok(json!({"header": header(5), "kvs": kvs}))
            }
            other => panic!("unexpected {other}"),
        }
    }
}

/// `base`, except that another replica (`replica-b`) holds the leader key.
fn following<'a>(
    base: &'a dyn Fn(&HttpCall) -> CallResult,
) -> impl Fn(&HttpCall) -> CallResult + 'a {
    move |call| {
        if call.path == "/v3/kv/txn" {
            return ok(
                json!({"header": header(9), "responses": [{"response_range": {"kvs": [
                {"key": b64(b"emr/leader"), "value": b64(b"replica-b"),
                 "create_revision": "3", "mod_revision": "3", "lease": "99"}]}}]}),
            );
        }
        base(call)
    }
}

/// The queue message of an activation of `id`, as an intake commits it.
fn queued(id: &str) -> Value {
    let QueueMessage::Event(q) = event(id, RoutingMode::Active, 0, 3600) else {
        unreachable!()
    };
    serde_json::to_value(&q).unwrap()
}

fn health(store: &MemoryStore) -> Vec<String> {
    crate::liveness::read_health(
        store
            .get(crate::liveness::HEALTH_KEY)
            .unwrap()
            .value
            .as_deref(),
    )
}

#[test]
fn a_replica_acts_only_once_it_leads_and_has_read_the_log() {
    let store = MemoryStore::default();
    let mut s = start(clustered(genesys()), &store);
    let first = s.on_tick(&store, t(0));
    // Nothing towards Genesys yet: the election and the log first.
    assert_eq!(genesys_calls(&first), 0);
    let kinds: Vec<String> = etcd_calls(&first)
        .iter()
        .map(|(_, c)| c.path.clone())
        .collect();
    // The election's lease, the snapshot, the lease for the log's entries.
    assert_eq!(
        kinds,
        ["/v3/lease/grant", "/v3/kv/range", "/v3/lease/grant"]
    );
    let events = [queued("INC-1")];
    let asked = answer_etcd(&mut s, &store, first, t(0), &winning(&events));
    // It won and read the log: the incident another replica accepted is in
    // its ledger, and it starts driving Genesys (a token first).
    assert!(asked > 0, "the leader calls Genesys");
    s.on_tick(&store, t(1));
    let v = state(&store);
    assert_eq!(v["cluster"]["replica"], "replica-a");
    assert_eq!(v["cluster"]["acting"], true);
    assert_eq!(v["cluster"]["leader"], "replica-a");
    assert!(matches!(
        crate::status::find(&store, "INC-1", None).unwrap(),
        crate::status::Found::One(_)
    ));
}

#[test]
fn a_follower_records_every_event_and_never_calls_genesys() {
    let store = MemoryStore::default();
    let mut s = start(clustered(genesys()), &store);
    let events = [queued("INC-2")];
    let base = winning(&events);
    // Another replica holds the leader key.
    let follower = following(&base);
    let mut asked = 0;
    for i in 0..30 {
        let now = t(0) + chrono::Duration::milliseconds(100 * i);
        let out = s.on_tick(&store, now);
        asked += answer_etcd(&mut s, &store, out, now, &follower);
    }
    assert_eq!(asked, 0, "a follower never calls Genesys");
    let v = state(&store);
    assert_eq!(v["cluster"]["acting"], false);
    assert_eq!(v["cluster"]["leader"], "replica-b");
    assert!(matches!(
        crate::status::find(&store, "INC-2", None).unwrap(),
        crate::status::Found::One(_)
    ));
}

#[test]
fn etcd_failing_is_said_once_and_in_the_health_until_it_answers() {
    let store = MemoryStore::default();
    let mut s = start(clustered(json!({})), &store);
    let down = |_: &HttpCall| CallResult::Failed;
    let out = s.on_tick(&store, t(0));
    let mut logs = Vec::new();
    for (callout, _) in etcd_calls(&out) {
        logs.extend(s.on_result(callout, CallResult::Failed, &store, t(0)).logs);
    }
    let errors: Vec<_> = logs.iter().filter(|(l, _)| *l == Level::Error).collect();
    assert_eq!(errors.len(), 1, "{logs:?}");
    assert!(errors[0].1.contains("etcd"));
    // Later failures are not said again.
    let out = s.on_tick(&store, t(1));
    answer_etcd(&mut s, &store, out, t(1), &down);
    let tick = s.on_tick(&store, t(2));
    assert!(!tick.logs.iter().any(|(l, _)| *l == Level::Error));
    assert!(health(&store).iter().any(|r| r.contains("etcd")));
    // etcd answers again: the reason goes.
    answer_etcd(&mut s, &store, tick, t(2), &winning(&[]));
    s.on_tick(&store, t(3));
    assert!(health(&store).is_empty(), "{:?}", health(&store));
}

#[test]
fn a_control_from_this_replicas_filters_goes_to_the_log_and_is_applied_from_there() {
    let store = MemoryStore::default();
    let mut s = start(clustered(json!({})), &store);
    let resumes = |out: &Out| {
        out.samples
            .iter()
            .filter(|(n, _)| *n == "emr.service.resumes")
            .count()
    };
    let outbox = |out: &Out| {
        out.calls
            .iter()
            .find(|(c, _)| matches!(c, Callout::Outbox(_)))
            .cloned()
    };
    let resume = QueueMessage::Control(crate::event::Control::Resume {
        group: crate::event::GroupId::parse("G1").unwrap(),
        received_ms: 0,
    });
    // Until the replica has a lease for the log's entries, it waits.
    let out = s.on_messages(vec![resume], 0, true, &store, t(0));
    assert!(outbox(&out).is_none(), "no lease yet");
    // The election, the snapshot and the feed's first reads (an empty
    // log), and the lease: then the commit goes.
    let (_, sent) = follow_etcd(&mut s, &store, out, t(0), &winning(&[]));
    let [(callout, call)] = sent.as_slice() else {
        panic!("one commit of the control: {sent:?}")
    };
    let (callout, call) = (*callout, call.clone());
    let body: Value = serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
    let put = &body["success"][0]["request_txn"]["success"][0]["request_put"];
    let value = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        put["value"].as_str().unwrap(),
    )
    .unwrap();
    let record: Record = serde_json::from_slice(&value).unwrap();
    assert_eq!(record.message["control"]["resume"]["group"], "G1");
    assert_eq!(put["lease"], "77", "it leaves after the dedupe window");
    // etcd fails the commit: not tried again at once, but a second later.
    let failed = s.on_result(callout, CallResult::Failed, &store, t(0));
    assert!(outbox(&failed).is_none());
    let retry = s.on_tick(&store, t(1));
    let (callout, _) = outbox(&retry).expect("tried again");
    answer_etcd(&mut s, &store, retry, t(1), &winning(&[]));
    s.on_result(
        callout,
        ok(json!({"header": header(3), "succeeded": true, "responses": []})),
        &store,
        t(1),
    );
    // Recorded: not sent again; read back from the log (as every replica
    // reads it), it is applied.
    let log = [record.message.clone()];
    let from_log = winning(&log);
    let mut applied = 0;
    for i in 2..6 {
        let mut out = s.on_tick(&store, t(i));
        assert!(outbox(&out).is_none(), "recorded: not sent again");
        applied += resumes(&out);
        for _ in 0..10 {
            let calls = etcd_calls(&out);
            if calls.is_empty() {
                break;
            }
            let mut next = Out::default();
            for (c, call) in calls {
                let more = s.on_result(c, from_log(&call), &store, t(i));
                applied += resumes(&more);
                next.calls.extend(more.calls);
            }
            out = next;
        }
    }
    assert_eq!(applied, 1, "applied once, from the log");
}

#[test]
fn a_settlement_is_fenced_on_the_leadership_and_dropped_once_another_leads() {
    let settings = clustered(json!({})).cluster.unwrap();
    let mut c = super::Cluster::new(&settings, 86_400, t(0));
    leased(&mut c);
    let fence = crate::etcd::Fence {
        key: settings.keys.leader(),
        revision: 7,
    };
    let settled = crate::event::Control::Settled {
        group: crate::event::GroupId::parse("G1").unwrap(),
        events: vec![],
        failed: None,
        genesys: None,
    };
    c.post_fenced(settled, t(0), Some(fence));
    let mut out = Out::default();
    c.send_outbox(t(0), &mut out);
    let (callout, call) = out.calls.first().cloned().expect("a commit");
    let body: Value = serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body["compare"],
        json!([{"key": b64(b"emr/leader"), "target": "CREATE", "result": "EQUAL",
                "create_revision": "7"}])
    );
    // The compare failed: another replica leads. Not retried; said.
    let Callout::Outbox(op) = callout else {
        panic!("{callout:?}")
    };
    let mut answered = Out::default();
    c.outbox_answered(op, &ok(json!({"header": header(9)})), t(0), &mut answered);
    assert!(c.outbox.is_empty());
    assert!(answered
        .logs
        .iter()
        .any(|(l, m)| *l == Level::Warn && m.contains("another replica leads")));
}

/// Gives `c` a lease for the log's entries.
fn leased(c: &mut super::Cluster) {
    let fx = c.keeper.poll(t(0));
    let [crate::etcd::retention::Effect::Call(call)] = fx.as_slice() else {
        panic!("{fx:?}")
    };
    c.keeper.on_result(
        call.op,
        &ok(json!({"ID": "77", "TTL": (86_400 + 1_200).to_string()})),
        t(0),
    );
    assert_eq!(c.keeper.lease(t(0)), Some(77));
}

#[test]
fn the_lease_for_the_logs_entries_reaches_the_filters() {
    let store = MemoryStore::default();
    let mut s = start(clustered(json!({})), &store);
    assert_eq!(crate::etcd::retention::current(&store, t(0)), None);
    let out = s.on_tick(&store, t(0));
    let grants: Vec<Value> = etcd_calls(&out)
        .iter()
        .filter(|(c, _)| matches!(c, Callout::Lease(_)))
        .map(|(_, call)| serde_json::from_slice(call.body.as_deref().unwrap()).unwrap())
        .collect();
    // The dedupe window (a day by default) and two buckets of 10 minutes.
    assert_eq!(grants, [json!({"TTL": "87600"})]);
    answer_etcd(&mut s, &store, out, t(0), &winning(&[]));
    s.on_tick(&store, t(1));
    assert_eq!(crate::etcd::retention::current(&store, t(1)), Some(77));
}

/// The snapshots `out` asks etcd to write, decoded.
fn snapshots_written(out: &Out) -> Vec<Value> {
    out.calls
        .iter()
        .filter(|(c, _)| matches!(c, Callout::Snapshot(_)))
        .map(|(_, call)| {
            let body: Value = serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
            let put = &body["success"][0]["request_put"];
            assert_eq!(put["key"], b64(b"emr/s"));
            assert!(body["compare"][0]["create_revision"].is_string(), "fenced");
            let value = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                put["value"].as_str().unwrap(),
            )
            .unwrap();
            serde_json::from_slice(&value).unwrap()
        })
        .collect()
}

#[test]
fn the_leader_snapshots_the_open_incidents_when_the_log_moved() {
    let store = MemoryStore::default();
    let mut s = start(clustered(json!({})), &store);
    let events = [queued("INC-1")];
    let answer = winning(&events);
    let mut written = Vec::new();
    for i in 0..50 {
        let now = t(0) + chrono::Duration::milliseconds(1000 * i);
        let mut out = s.on_tick(&store, now);
        for _ in 0..10 {
            written.extend(snapshots_written(&out));
            let calls = etcd_calls(&out);
            if calls.is_empty() {
                break;
            }
            let mut next = Out::default();
            for (c, call) in calls {
                let result = if matches!(c, Callout::Snapshot(_)) {
                    ok(json!({"header": header(6), "succeeded": true, "responses": []}))
                } else {
                    answer(&call)
                };
                next.calls.extend(s.on_result(c, result, &store, now).calls);
            }
            out = next;
        }
    }
    // Once: the log has not moved since.
    assert_eq!(written.len(), 1, "{written:?}");
    let snap = &written[0];
    assert_eq!(snap["v"], 1);
    assert_eq!(snap["p"], 5, "the position the ledger stands for");
    assert_eq!(snap["g"][0]["o"][0][1], "INC-1");
}

#[test]
fn a_follower_never_writes_a_snapshot() {
    let store = MemoryStore::default();
    let mut s = start(clustered(json!({})), &store);
    let events = [queued("INC-1")];
    let base = winning(&events);
    let follower = following(&base);
    for i in 0..40 {
        let now = t(0) + chrono::Duration::milliseconds(1000 * i);
        let out = s.on_tick(&store, now);
        assert!(snapshots_written(&out).is_empty());
        answer_etcd(&mut s, &store, out, now, &follower);
    }
}

#[test]
fn a_replica_starting_after_the_log_lost_an_incident_has_it_from_the_snapshot() {
    let store = MemoryStore::default();
    let mut s = start(clustered(json!({})), &store);
    // INC-1's events have left the log; the snapshot at revision 3 holds
    // it and INC-2. INC-2 was resolved at revision 4, which the log still
    // has: the snapshot does not open it again.
    let QueueMessage::Event(q1) = event("INC-1", RoutingMode::Active, 0, 3600) else {
        unreachable!()
    };
    let QueueMessage::Event(q2) = event("INC-2", RoutingMode::Active, 0, 3600) else {
        unreachable!()
    };
    let mut ledger = crate::ledger::Ledger::new(s.config.retention);
    let g = crate::event::GroupId::parse("G1").unwrap();
    ledger.apply(&q1, g.clone(), t(0));
    ledger.apply(&q2, g, t(0));
    let snapshot = super::snapshots::encode(&ledger, 3);
    let resolved = {
        let QueueMessage::Event(q) = event("INC-2", RoutingMode::Resolved, 1, 3600) else {
            unreachable!()
        };
        serde_json::to_value(&q).unwrap()
    };
    let log = [resolved];
    let base = winning(&log);
    let answer = |call: &HttpCall| -> CallResult {
        let body: Value = serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
        if call.path == "/v3/kv/range" && body["key"] == b64(b"emr/s") {
            return ok(json!({"header": header(5), "kvs": [{"key": b64(b"emr/s"),
                      "value": b64(&snapshot), "mod_revision": "3"}]}));
        }
        base(call)
    };
    let out = s.on_tick(&store, t(2));
    answer_etcd(&mut s, &store, out, t(2), &answer);
    let inc1 = s.ledger.get(&crate::event::IncidentKey {
        source: crate::event::Source::Canonical,
        id: crate::event::CorrelationId::parse("INC-1").unwrap(),
    });
    assert!(inc1.is_some_and(|i| i.is_open()), "from the snapshot");
    let inc2 = s.ledger.get(&crate::event::IncidentKey {
        source: crate::event::Source::Canonical,
        id: crate::event::CorrelationId::parse("INC-2").unwrap(),
    });
    assert!(
        inc2.is_some_and(|i| !i.is_open()),
        "resolved after the snapshot"
    );
    assert_eq!(s.ledger.open_len(), 1);
}

#[test]
fn a_poll_result_read_from_the_log_is_applied_as_of_when_the_leader_polled() {
    let store = MemoryStore::default();
    let mut s = start(clustered(json!({})), &store);
    let key = crate::event::IncidentKey {
        source: crate::event::Source::Canonical,
        id: crate::event::CorrelationId::parse("INC-1").unwrap(),
    };
    let polled =
        crate::itsm::PollChange::polled(key.clone(), Some("resolved at the tool".into()), 0)
            .to_control(t(1));
    let log = [
        queued("INC-1"),
        serde_json::to_value(crate::event::ControlMessage { control: polled }).unwrap(),
    ];
    let out = s.on_tick(&store, t(2));
    answer_etcd(&mut s, &store, out, t(2), &winning(&log));
    let inc = s.ledger.get(&key).unwrap();
    assert!(!inc.is_open(), "resolved by the leader's poll");
    assert_eq!(inc.updated_at, t(1), "as of the poll, on every replica");
}

fn with_auth() -> Config {
    let mut c = config(json!({}));
    let section: ClusterConfig = serde_json::from_value(json!({
        "etcd_cluster": "etcd", "replica_id_env": "REPLICA",
        "auth": {"user_env": "ETCD_USER", "password_env": "ETCD_PASSWORD"}}))
    .unwrap();
    let env = |k: &str| match k {
        "REPLICA" => Some("replica-a".to_owned()),
        "ETCD_USER" => Some("emr".to_owned()),
        "ETCD_PASSWORD" => Some("a-long-etcd-password".to_owned()),
        _ => None,
    };
    c.cluster = Some(Arc::new(compile(&section, &env).unwrap()));
    c
}

fn authorization(call: &HttpCall) -> Option<&str> {
    call.headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str())
}

#[test]
fn with_etcds_auth_on_it_authenticates_first_and_again_when_the_token_is_refused() {
    let store = MemoryStore::default();
    let mut s = start(with_auth(), &store);
    let out = s.on_tick(&store, t(0));
    let calls: Vec<_> = out
        .calls
        .iter()
        .map(|(c, call)| (*c, call.path.clone()))
        .collect();
    assert!(
        matches!(calls.as_slice(), [(Callout::Auth(_), p)] if p == "/v3/auth/authenticate"),
        "nothing else before a token: {calls:?}"
    );
    let (auth, _) = out.calls[0].clone();
    let out = s.on_result(
        auth,
        ok(json!({"header": header(1), "token": "tok.1"})),
        &store,
        t(0),
    );
    assert_eq!(
        crate::etcd::token::current(&store).as_deref(),
        Some("tok.1")
    );
    let out = if out.calls.is_empty() {
        s.on_tick(&store, t(0))
    } else {
        out
    };
    let etcd = etcd_calls(&out);
    assert!(!etcd.is_empty());
    for (_, call) in &etcd {
        assert_eq!(authorization(call), Some("tok.1"), "{}", call.path);
    }
    // The token expired: the next round authenticates again first.
    let (callout, _) = etcd[0].clone();
    let expired = CallResult::Response {
        status: 401,
        headers: vec![],
        body: br#"{"message":"etcdserver: invalid auth token","code":16}"#.to_vec(),
    };
    let out = s.on_result(callout, expired, &store, t(0));
    assert!(
        out.calls.iter().any(|(c, _)| matches!(c, Callout::Auth(_))),
        "{:?}",
        out.calls
    );
}

#[test]
fn refused_etcd_credentials_are_said_once_and_keep_the_replica_unready() {
    let store = MemoryStore::default();
    let mut s = start(with_auth(), &store);
    let refused = CallResult::Response {
        status: 400,
        headers: vec![],
        body: br#"{"message":"etcdserver: authentication failed, invalid user ID or password","code":3}"#.to_vec(),
    };
    let mut errors = Vec::new();
    for i in 0..20 {
        let out = s.on_tick(&store, t(i));
        errors.extend(out.logs.iter().filter(|(l, _)| *l == Level::Error).cloned());
        for (c, _) in out.calls {
            let more = s.on_result(c, refused.clone(), &store, t(i));
            errors.extend(
                more.logs
                    .iter()
                    .filter(|(l, _)| *l == Level::Error)
                    .cloned(),
            );
        }
    }
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("cannot authenticate to etcd"));
    assert!(!errors[0].1.contains("a-long-etcd-password"));
    s.on_tick(&store, t(21));
    let unready = crate::liveness::read_health(
        store
            .get(crate::liveness::READY_KEY)
            .unwrap()
            .value
            .as_deref(),
    );
    assert!(
        unready.iter().any(|r| r.contains("credentials")),
        "{unready:?}"
    );
}

#[test]
fn failing_lease_grants_are_said_once_per_streak() {
    let store = MemoryStore::default();
    let mut s = start(clustered(json!({})), &store);
    let mut said = 0;
    for i in 0..10 {
        let out = s.on_tick(&store, t(i));
        for (c, _) in out.calls {
            let more = s.on_result(c, CallResult::Failed, &store, t(i));
            said += more
                .logs
                .iter()
                .filter(|(_, m)| m.contains("lease for its events"))
                .count();
        }
    }
    assert_eq!(said, 1, "said once, though every grant failed");
}
