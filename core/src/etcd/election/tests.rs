#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Value};

use super::*;
use crate::etcd::b64;
use crate::ledger::tests::t;

const LEASE: i64 = 7_587_869_102;

fn election() -> Election {
    Election::new(
        Settings {
            key: b"emr/leader".to_vec(),
            replica: "replica-1".into(),
            ttl_s: 3,
        },
        Gateway::for_tests(),
        t(0),
    )
}

fn ok(body: Value) -> CallResult {
    CallResult::json(200, &body)
}

fn header(revision: i64) -> Value {
    json!({"cluster_id": "1", "member_id": "2", "revision": revision.to_string(), "raft_term": "2"})
}

fn granted() -> CallResult {
    ok(json!({"header": header(1), "ID": LEASE.to_string(), "TTL": "3"}))
}

fn renewed() -> CallResult {
    ok(json!({"result": {"header": header(1), "ID": LEASE.to_string(), "TTL": "3"}}))
}

fn won(revision: i64) -> CallResult {
    ok(json!({"header": header(revision), "succeeded": true,
              "responses": [{"response_put": {"header": header(revision)}}]}))
}

/// The compare failed; the leader key is held by `who` on `lease`.
fn held_by(who: &str, lease: i64, create_revision: i64) -> CallResult {
    ok(
        json!({"header": header(create_revision + 3), "responses": [{"response_range": {
        "header": header(create_revision + 3),
        "kvs": [{"key": b64(b"emr/leader"), "value": b64(who.as_bytes()),
                 "create_revision": create_revision.to_string(),
                 "mod_revision": create_revision.to_string(), "version": "1",
                 "lease": lease.to_string()}],
        "count": "1"}}]}),
    )
}

fn calls(fx: &[Effect]) -> Vec<&HttpCall> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Call(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// The one call `fx` holds.
fn call(fx: &[Effect]) -> HttpCall {
    let c = calls(fx);
    assert_eq!(c.len(), 1, "{fx:?}");
    c[0].clone()
}

fn body(c: &HttpCall) -> Value {
    serde_json::from_slice(c.body.as_deref().unwrap()).unwrap()
}

fn audits<'a>(fx: &'a [Effect], decision: &str) -> Vec<&'a Value> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Audit(a) if a["decision"] == decision => Some(a),
            _ => None,
        })
        .collect()
}

/// A replica alone: grants a lease, wins, and leads from t(0).
fn leader() -> Election {
    let mut e = election();
    let grant = call(&e.poll(t(0)));
    assert_eq!(grant.path, "/v3/lease/grant");
    e.on_result(grant.op, granted(), t(0));
    let campaign = call(&e.poll(t(0)));
    assert_eq!(campaign.path, "/v3/kv/txn");
    assert_eq!(
        body(&campaign)["success"][0]["request_put"]["lease"],
        LEASE.to_string()
    );
    let fx = e.on_result(campaign.op, won(5), t(0));
    assert_eq!(audits(&fx, "leading").len(), 1);
    assert!(fx.contains(&Effect::Metric(Metric::Won)));
    e
}

#[test]
fn a_lone_replica_wins_and_is_fenced_on_its_keys_revision() {
    let e = leader();
    assert!(e.may_act(t(0)));
    assert_eq!(
        e.role(t(0)),
        Role::Leader {
            fence: Fence {
                key: b"emr/leader".to_vec(),
                revision: 5
            }
        }
    );
}

#[test]
fn a_leader_renews_every_period_and_stops_acting_before_its_lease_can_lapse() {
    let mut e = leader();
    // Nothing before the period (a third of the TTL).
    assert!(calls(&e.poll(t(0))).is_empty());
    assert_eq!(e.next_wakeup(), Some(t(1)));
    let keepalive = call(&e.poll(t(1)));
    assert_eq!(keepalive.path, "/v3/lease/keepalive");
    assert_eq!(body(&keepalive), json!({"ID": LEASE.to_string()}));
    e.on_result(keepalive.op, renewed(), t(1));
    // Alive until 1 + 3 s, counted from the send; acting stops a period
    // before that.
    assert!(e.may_act(t(2)));
    // The next renewal gets no answer at all, and the one after fails.
    let lost = call(&e.poll(t(2)));
    e.on_result(lost.op, CallResult::Failed, t(2));
    assert!(e.may_act(t(2)), "one failed renewal is survived");
    assert_eq!(e.may_act_until(), Some(t(3)));
    assert!(e.may_act(t(3) - chrono::Duration::milliseconds(1)));
    // At 3 s the lease (renewed at 1 s) has a period left: acting stops,
    // and the next renewal goes out.
    let fx = e.poll(t(3));
    let failing = call(&fx);
    assert!(!e.may_act(t(3)));
    assert_eq!(audits(&fx, "stepped-down").len(), 1);
    assert!(fx.contains(&Effect::Metric(Metric::Leader(false))));
    assert_eq!(e.role(t(3)), Role::Follower { leader: None });
    // Its answer, late, does not make it lead again: it must campaign.
    e.on_result(
        failing.op,
        ok(json!({"error": "etcdserver: no leader", "code": 14})),
        t(3),
    );
    assert!(!e.may_act(t(3)));
}

#[test]
fn a_follower_knows_the_leader_and_takes_over_once_the_key_is_gone() {
    let mut e = election();
    let grant = call(&e.poll(t(0)));
    e.on_result(grant.op, granted(), t(0));
    let campaign = call(&e.poll(t(0)));
    e.on_result(campaign.op, held_by("replica-2", 99, 4), t(0));
    assert!(!e.may_act(t(0)));
    assert_eq!(
        e.role(t(0)),
        Role::Follower {
            leader: Some("replica-2".into())
        }
    );
    // Each period: renew its own lease, then campaign again.
    let keepalive = call(&e.poll(t(1)));
    assert_eq!(keepalive.path, "/v3/lease/keepalive");
    e.on_result(keepalive.op, renewed(), t(1));
    let campaign = call(&e.poll(t(1)));
    assert_eq!(campaign.path, "/v3/kv/txn");
    // The leader's lease lapsed: etcd deleted the key, this one wins.
    let fx = e.on_result(campaign.op, won(12), t(1));
    assert_eq!(audits(&fx, "leading")[0]["fence"], 12);
    assert!(e.may_act(t(1)));
}

#[test]
fn a_campaign_whose_answer_was_lost_is_recognised_as_won() {
    let mut e = election();
    let grant = call(&e.poll(t(0)));
    e.on_result(grant.op, granted(), t(0));
    let campaign = call(&e.poll(t(0)));
    e.on_result(campaign.op, CallResult::Failed, t(0));
    assert!(!e.may_act(t(0)));
    // The next period renews and campaigns; the key is already on our lease.
    let keepalive = call(&e.poll(t(1)));
    e.on_result(keepalive.op, renewed(), t(1));
    let again = call(&e.poll(t(1)));
    e.on_result(again.op, held_by("replica-1", LEASE, 6), t(1));
    assert!(e.may_act(t(1)));
    assert!(matches!(e.role(t(1)), Role::Leader { fence } if fence.revision == 6));
}

#[test]
fn a_lease_etcd_no_longer_has_ends_the_leadership_at_once() {
    let mut e = leader();
    let keepalive = call(&e.poll(t(1)));
    // 3.4 answers 200 without a TTL.
    let fx = e.on_result(
        keepalive.op,
        ok(json!({"result": {"header": header(9), "ID": LEASE.to_string()}})),
        t(1),
    );
    assert!(!e.may_act(t(1)));
    assert_eq!(audits(&fx, "stepped-down").len(), 1);
    assert!(fx.contains(&Effect::Metric(Metric::Failure("lease_not_found"))));
    // A new lease next.
    assert_eq!(call(&e.poll(t(2))).path, "/v3/lease/grant");
}

#[test]
fn etcd_refusing_for_good_is_said_and_retried_each_period() {
    let mut e = election();
    let grant = call(&e.poll(t(0)));
    let fx = e.on_result(
        grant.op,
        CallResult::Response {
            status: 401,
            headers: vec![],
            body: br#"{"message":"etcdserver: invalid auth token","code":16}"#.to_vec(),
        },
        t(0),
    );
    let failed = audits(&fx, "etcd-failed");
    assert!(failed[0]["detail"]
        .as_str()
        .unwrap()
        .contains("invalid auth token"));
    assert!(calls(&e.poll(t(0))).is_empty());
    assert_eq!(call(&e.poll(t(1))).path, "/v3/lease/grant");
}

#[test]
fn an_answer_to_another_op_is_ignored() {
    let mut e = election();
    let grant = call(&e.poll(t(0)));
    assert!(e.on_result(grant.op + 1, granted(), t(0)).is_empty());
    assert!(calls(&e.poll(t(0))).is_empty(), "still waiting for its own");
}

#[test]
fn resigning_revokes_the_lease_so_another_replica_takes_over_at_once() {
    let mut e = leader();
    let fx = e.resign(t(1));
    assert_eq!(audits(&fx, "stepped-down").len(), 1);
    let revoke = call(&fx);
    assert_eq!(revoke.path, "/v3/lease/revoke");
    assert_eq!(body(&revoke), json!({"ID": LEASE.to_string()}));
    e.on_result(revoke.op, ok(json!({"header": header(9)})), t(1));
    assert!(
        calls(&e.poll(t(5))).is_empty(),
        "no campaign after resigning"
    );
}

#[test]
fn metric_names_are_stable() {
    assert_eq!(Metric::Leader(true).name(), "emr.cluster.leader");
    assert_eq!(Metric::Won.name(), "emr.cluster.elections_won");
    assert_eq!(
        Metric::Failure(Failure::QuotaFull.class()).name(),
        "emr.etcd.failures.quota_full"
    );
    assert_eq!(
        Metric::Failure(Failure::Transport.class()).name(),
        "emr.etcd.failures.transport"
    );
}
