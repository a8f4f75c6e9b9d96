#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Value};

use super::*;
use crate::etcd::b64;
use crate::etcd::log::Record;
use crate::ledger::tests::t;

fn feed() -> Feed {
    Feed::new(
        Keys::new("emr/"),
        Gateway::for_tests(),
        Duration::milliseconds(200),
        1_000,
        1,
        t(0),
    )
}

fn ok(body: Value) -> CallResult {
    CallResult::json(200, &body)
}

fn marker(revision: i64) -> CallResult {
    if revision == 0 {
        return ok(json!({"header": {"revision": "1"}}));
    }
    ok(
        json!({"header": {"revision": revision.to_string()}, "kvs": [
        {"key": b64(b"emr/m"), "value": "", "mod_revision": revision.to_string()}], "count": "1"}),
    )
}

/// A page of events named `key@revision`, read at `at`.
fn page(events: &[(&str, i64)], more: bool, at: i64) -> CallResult {
    let kvs: Vec<Value> = events
        .iter()
        .map(|(k, r)| {
            let record = Record {
                fingerprint: "f".into(),
                message: json!({"event": k}),
            };
            json!({"key": b64(format!("emr/e/{k}").as_bytes()),
                   "value": b64(&serde_json::to_vec(&record).unwrap()),
                   "mod_revision": r.to_string(), "create_revision": r.to_string()})
        })
        .collect();
    ok(json!({"header": {"revision": at.to_string()}, "kvs": kvs, "more": more}))
}

fn call(fx: &[Effect]) -> HttpCall {
    let calls: Vec<&HttpCall> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Call(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "{fx:?}");
    calls[0].clone()
}

fn events(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .flat_map(|e| match e {
            Effect::Events(es) => es
                .iter()
                .map(|e| e.record.message["event"].as_str().unwrap().to_owned())
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Starts `f`: its first read is the snapshot, answered with `answer`;
/// the next call (the marker's) is returned.
fn start(f: &mut Feed, answer: CallResult) -> HttpCall {
    let s = call(&f.poll(t(0)));
    let body: Value = serde_json::from_slice(s.body.as_deref().unwrap()).unwrap();
    assert_eq!(body["key"], b64(b"emr/s"), "the snapshot is read first");
    let fx = f.on_result(s.op, answer, t(0));
    call(&fx)
}

fn no_snapshot(f: &mut Feed) -> HttpCall {
    start(f, ok(json!({"header": {"revision": "1"}})))
}

fn snapshot_at(position: i64) -> CallResult {
    let value = json!({"p": position, "g": []}).to_string();
    ok(json!({"header": {"revision": "99"}, "kvs": [
        {"key": b64(b"emr/s"), "value": b64(value.as_bytes()), "mod_revision": "1"}]}))
}

/// The effects' kinds, in order: `events:a,b`, `snapshot@6`, `call`.
fn kinds(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .map(|e| match e {
            Effect::Events(es) => format!(
                "events:{}",
                es.iter()
                    .map(|e| e.record.message["event"].as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Effect::Snapshot(s) => format!("snapshot@{}", s.position),
            Effect::Call(_) => "call".into(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn min_mod_revision(c: &HttpCall) -> String {
    let body: Value = serde_json::from_slice(c.body.as_deref().unwrap()).unwrap();
    body["min_mod_revision"].as_str().unwrap().to_owned()
}

#[test]
fn an_empty_log_is_caught_up_at_the_first_marker_read() {
    let mut f = feed();
    assert!(!f.caught_up());
    let m = no_snapshot(&mut f);
    assert_eq!(m.path, "/v3/kv/range");
    let fx = f.on_result(m.op, marker(0), t(0));
    assert!(fx.is_empty());
    assert!(f.caught_up());
    // The next read is a period after this one began (less a tenth, for a
    // tick that fires early), however long its answer took.
    assert!(f.poll(t(0)).is_empty());
    assert_eq!(f.next_wakeup(), Some(t(0) + Duration::milliseconds(180)));
}

#[test]
fn a_moved_marker_reads_the_new_events_in_order_then_only_newer_ones() {
    let mut f = feed();
    let m = no_snapshot(&mut f);
    let fx = f.on_result(m.op, marker(7), t(0));
    let p = call(&fx);
    assert_eq!(min_mod_revision(&p), "1");
    assert!(!f.caught_up(), "not until the log is read");
    assert_eq!(f.lag(), 7);
    let fx = f.on_result(p.op, page(&[("a", 5), ("b", 7)], false, 8), t(0));
    assert_eq!(events(&fx), ["a", "b"]);
    assert!(f.caught_up());
    assert_eq!((f.position(), f.lag()), (8, 0));
    // A later commit: only it is read.
    let m = call(&f.poll(t(1)));
    let p = call(&f.on_result(m.op, marker(9), t(1)));
    assert_eq!(min_mod_revision(&p), "9");
    assert_eq!(
        events(&f.on_result(p.op, page(&[("c", 9)], false, 9), t(1))),
        ["c"]
    );
}

#[test]
fn a_page_that_ends_inside_a_commit_neither_loses_nor_repeats_an_event() {
    let mut f = feed();
    let m = no_snapshot(&mut f);
    let p1 = call(&f.on_result(m.op, marker(6), t(0)));
    // One commit made x, y and z at revision 6; the page ends after y.
    let fx = f.on_result(p1.op, page(&[("w", 4), ("x", 6), ("y", 6)], true, 6), t(0));
    assert_eq!(events(&fx), ["w", "x", "y"]);
    let p2 = call(&fx);
    assert_eq!(min_mod_revision(&p2), "6", "revision 6 again");
    let fx = f.on_result(p2.op, page(&[("x", 6), ("y", 6), ("z", 6)], false, 6), t(0));
    assert_eq!(events(&fx), ["z"]);
    assert!(f.caught_up());
}

#[test]
fn a_failed_read_is_retried_next_period_from_where_it_was() {
    let mut f = feed();
    let m = no_snapshot(&mut f);
    let p = call(&f.on_result(m.op, marker(3), t(0)));
    let fx = f.on_result(p.op, CallResult::Failed, t(0));
    assert!(matches!(
        fx.as_slice(),
        [Effect::Failed(Failure::Transport)]
    ));
    assert!(!f.caught_up());
    assert!(f.poll(t(0)).is_empty());
    let again = call(&f.poll(t(1)));
    assert_eq!(min_mod_revision(&again), "1", "the page, not the marker");
    // Unreadable entries are skipped and said.
    let fx = f.on_result(
        again.op,
        ok(json!({"header": {"revision": "3"}, "kvs": [
            {"key": b64(b"emr/e/bad"), "value": b64(b"not json"), "mod_revision": "3"}]})),
        t(1),
    );
    assert_eq!(fx, vec![Effect::Unreadable(1)]);
    assert!(f.caught_up());
}

#[test]
fn pages_are_larger_than_any_commit() {
    let mut f = feed();
    let m = no_snapshot(&mut f);
    let p = call(&f.on_result(m.op, marker(2), t(0)));
    let body: Value = serde_json::from_slice(p.body.as_deref().unwrap()).unwrap();
    assert_eq!(body["limit"], "1000");
    let small = Feed::new(
        Keys::new("emr/"),
        f.gateway.clone(),
        Duration::milliseconds(200),
        5,
        1,
        t(0),
    );
    assert!(small.page_size > i64::try_from(log::MAX_BATCH).unwrap());
}

#[test]
fn the_snapshot_comes_after_the_events_it_stands_for_and_before_later_ones() {
    let mut f = feed();
    let m = start(&mut f, snapshot_at(6));
    let p = call(&f.on_result(m.op, marker(9), t(0)));
    assert_eq!(min_mod_revision(&p), "1", "the whole log is still read");
    let fx = f.on_result(p.op, page(&[("a", 5), ("b", 6), ("c", 8)], false, 9), t(0));
    assert_eq!(kinds(&fx), ["events:a,b", "snapshot@6", "events:c"]);
    assert!(f.caught_up());
    // Handed on once.
    let m = call(&f.poll(t(1)));
    let p = call(&f.on_result(m.op, marker(10), t(1)));
    assert_eq!(
        kinds(&f.on_result(p.op, page(&[("d", 10)], false, 10), t(1))),
        ["events:d"]
    );
}

#[test]
fn a_log_whose_entries_all_left_still_hands_the_snapshot_on() {
    let mut f = feed();
    let m = start(&mut f, snapshot_at(40));
    let p = call(&f.on_result(m.op, marker(50), t(0)));
    let fx = f.on_result(p.op, page(&[], false, 50), t(0));
    assert_eq!(kinds(&fx), ["snapshot@40"]);
    assert!(f.caught_up(), "not before the snapshot is handed on");
}

#[test]
fn a_page_ending_at_the_snapshots_revision_waits_for_the_next_page() {
    let mut f = feed();
    let m = start(&mut f, snapshot_at(6));
    let p1 = call(&f.on_result(m.op, marker(7), t(0)));
    // Revision 6 made b and b2; the page ends inside it.
    let fx = f.on_result(p1.op, page(&[("a", 5), ("b", 6)], true, 7), t(0));
    assert_eq!(kinds(&fx), ["events:a,b", "call"]);
    let p2 = call(&fx);
    let fx = f.on_result(
        p2.op,
        page(&[("b", 6), ("b2", 6), ("c", 7)], false, 7),
        t(0),
    );
    assert_eq!(kinds(&fx), ["events:b2", "snapshot@6", "events:c"]);
}

#[test]
fn an_unreadable_snapshot_is_said_and_the_log_is_read_all_the_same() {
    let mut f = feed();
    let s = call(&f.poll(t(0)));
    let junk = ok(json!({"header": {"revision": "9"}, "kvs": [
        {"key": b64(b"emr/s"), "value": b64(b"junk"), "mod_revision": "1"}]}));
    let fx = f.on_result(s.op, junk, t(0));
    assert!(
        matches!(fx.as_slice(), [Effect::Failed(Failure::Malformed(_))]),
        "{fx:?}"
    );
    let m = call(&f.poll(t(1)));
    let p = call(&f.on_result(m.op, marker(3), t(1)));
    let fx = f.on_result(p.op, page(&[("a", 3)], false, 3), t(1));
    assert_eq!(kinds(&fx), ["events:a"]);
    // A snapshot read that failed for want of etcd is read again.
    let mut f = feed();
    let s = call(&f.poll(t(0)));
    f.on_result(s.op, CallResult::Failed, t(0));
    let again = call(&f.poll(t(1)));
    let body: Value = serde_json::from_slice(again.body.as_deref().unwrap()).unwrap();
    assert_eq!(body["key"], b64(b"emr/s"));
}
