//! The reconciler against a fake Genesys: one test per answer class of
//! The answer table of docs/genesys.md, plus tokens, coalescing, limits, both drivers, the data-table
//! row and the state view.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Value};

use super::fake::{g, t, Fault, Kind, World};
use super::*;
use crate::event::RoutingMode;
use crate::ledger::{EventStatus, Settle};

use Kind::{GetGroup as Get, GuideGet, GuidePost, Me, PutGroup as Put, Row, Token};

fn world() -> World {
    World::new(json!({}))
}

fn audit_decisions(w: &World) -> Vec<String> {
    w.audits
        .iter()
        .map(|a| a["decision"].as_str().unwrap().to_owned())
        .collect()
}

fn group_view<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .unwrap()
}

#[test]
fn an_activation_reads_then_writes_then_settles_applied() {
    let mut w = world();
    w.activate("INC-1", &["q1", "q2"], "G1");
    // The token comes first; the group waits for it.
    assert_eq!(w.out.len(), 1);
    assert_eq!(w.out[0].path, "/oauth/token");
    w.drain();
    assert_eq!(w.fake.kinds(), [Token, Get, Put]);
    assert!(w.fake.enabled("G1"));
    assert_eq!(w.fake.version("G1"), 2);
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);

    let (group, outcome, genesys) = w.settles.last().unwrap();
    assert_eq!(group, &g("G1"));
    assert_eq!(outcome, &Settle::Applied);
    let r = genesys.as_ref().unwrap();
    assert_eq!(r.version, Some(2));
    assert_eq!(r.http_status, Some(200));
    assert!(r.correlation_id.as_deref().unwrap().starts_with("corr-"));
    assert!(r.date_modified.is_some());

    let put = &w.fake.log[2];
    assert_eq!(put.method, "PUT");
    assert_eq!(put.path, "/api/v2/architect/emergencygroups/G1");
    assert_eq!(put.authorization.as_deref(), Some("Bearer tok-1"));
    assert_eq!(put.body.as_ref().unwrap()["version"], 1);

    assert_eq!(audit_decisions(&w), ["token-obtained", "write", "written"]);
    let write = &w.audits[1];
    assert_eq!(write["group"], "G1");
    assert_eq!(write["incidents"], json!(["canonical:INC-1"]));
    assert_eq!(write["before"]["enabled"], false);
    assert_eq!(write["target"]["enabled"], true);
    let written = &w.audits[2];
    assert_eq!(written["after"]["enabled"], true);
    assert_eq!(written["after"]["version"], 2);
    assert_eq!(written["genesys"]["status"], 200);

    for m in [Metric::Transition, Metric::Applied, Metric::TokenRefresh] {
        assert!(w.metrics.contains(&m), "{m:?}");
    }
    assert!(w
        .metrics
        .iter()
        .any(|m| matches!(m, Metric::CalloutLatencyMs(_))));
    assert_eq!(w.rec.our_app(), Some("emr-edge"));
    // Nothing left but the token's refresh, far away.
    assert!(w.rec.next_wakeup().unwrap() > t(3_600_000));
}

#[test]
fn a_group_already_as_wanted_is_settled_without_a_write() {
    let mut w = world();
    w.fake.groups.get_mut("G1").unwrap()["enabled"] = json!(true);
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    assert_eq!(w.fake.kinds(), [Token, Get]);
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
    let r = w.settles[0].2.as_ref().unwrap();
    assert_eq!(r.version, Some(1));
    assert!(w.metrics.contains(&Metric::InSync));
    assert!(!w.metrics.contains(&Metric::Transition));
}

#[test]
fn a_resolution_switches_the_group_off() {
    let mut w = world();
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    w.resolve("INC-1", "G1");
    w.drain();
    assert!(!w.fake.enabled("G1"));
    assert_eq!(w.fake.kinds(), [Token, Get, Put, Get, Put]);
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
}

#[test]
fn two_incidents_resolving_one_keeps_the_group_on() {
    let mut w = world();
    w.activate("INC-1", &["q1"], "G1");
    w.activate("INC-2", &["q2"], "G1");
    w.drain();
    w.resolve("INC-1", "G1");
    w.drain();
    assert!(w.fake.enabled("G1"));
    assert_eq!(w.fake.count(Put), 1);
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
}

#[test]
fn a_401_refreshes_the_token_once_and_retries() {
    let mut w = world();
    w.fake.fault(Get, Fault::status(401));
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    assert_eq!(w.fake.kinds(), [Token, Get, Token, Get, Put]);
    assert_eq!(w.fake.log[3].authorization.as_deref(), Some("Bearer tok-2"));
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
    assert!(w
        .metrics
        .contains(&Metric::Failure(FailureKind::Unauthorized)));
}

#[test]
fn a_revoked_token_is_replaced_mid_run() {
    let mut w = world();
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    w.fake.revoke_all();
    w.now = t(5_000);
    w.resolve("INC-1", "G1");
    w.drain();
    assert_eq!(w.fake.kinds(), [Token, Get, Put, Get, Token, Get, Put]);
    assert!(!w.fake.enabled("G1"));
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
}

#[test]
fn a_second_401_fails_loudly() {
    let mut w = world();
    w.fake.fault(Get, Fault::status(401));
    w.fake.fault(Get, Fault::status(401));
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(120_000);
    assert_eq!(w.fake.kinds(), [Token, Get, Token, Get]);
    assert_eq!(w.status_of("INC-1"), EventStatus::Failed);
    let reasons = w.failures();
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].contains("401"), "{}", reasons[0]);
    assert!(reasons[0].contains("fresh token"), "{}", reasons[0]);
    assert!(audit_decisions(&w).contains(&"failed".to_owned()));
    assert!(w.metrics.contains(&Metric::Failed));
}

#[test]
fn a_403_fails_with_genesys_message_and_is_not_retried() {
    let mut w = world();
    w.fake.fault(Put, Fault::status(403));
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(600_000);
    assert_eq!(w.fake.kinds(), [Token, Get, Put]);
    assert_eq!(w.status_of("INC-1"), EventStatus::Failed);
    let reason = w.failures()[0];
    assert!(reason.contains("403"), "{reason}");
    assert!(reason.contains("missing.permissions"), "{reason}");
    assert!(reason.contains("routing:emergencyGroup:edit"), "{reason}");
    let r = w.settles[0].2.as_ref().unwrap();
    assert_eq!(r.http_status, Some(403));
    assert_eq!(r.correlation_id.as_deref(), Some("fault-403"));
    let incident = w
        .ledger
        .get(&crate::event::IncidentKey {
            source: crate::event::Source::Canonical,
            id: crate::event::CorrelationId::parse("INC-1").unwrap(),
        })
        .unwrap();
    assert!(incident
        .latest()
        .unwrap()
        .reason
        .as_deref()
        .unwrap()
        .contains("403"));
}

#[test]
fn a_404_fails_naming_the_group() {
    let mut w = world();
    w.activate("INC-1", &["q1"], "NOPE");
    w.run_until(600_000);
    assert_eq!(w.fake.kinds(), [Token, Get]);
    let reason = w.failures()[0];
    assert!(reason.starts_with("reading group NOPE: 404"), "{reason}");
    assert!(w.metrics.contains(&Metric::Failure(FailureKind::NotFound)));
}

#[test]
fn a_409_reads_again_and_writes_with_the_new_version() {
    let mut w = world();
    w.fake.fault(Put, Fault::ConcurrentWrite);
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(5_000);
    // The other writer calls itself "emr-edge": before the first write of
    // our own, our client's name is learned (tokens/me) to know it is ours.
    assert_eq!(w.fake.kinds(), [Token, Get, Put, Get, Me, Get, Put]);
    assert_eq!(w.fake.log[6].body.as_ref().unwrap()["version"], 2);
    assert_eq!(w.fake.version("G1"), 3);
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
    assert!(audit_decisions(&w).contains(&"conflict-reread".to_owned()));
}

#[test]
fn a_409_after_which_it_is_already_right_needs_no_write() {
    let mut w = world();
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    w.out.clear();
    // Someone else switched it on between our read and our write.
    w.fake.groups.get_mut("G2").unwrap()["enabled"] = json!(false);
    w.fake.fault(Put, Fault::status(409));
    w.activate("INC-2", &["q1"], "G2");
    w.answer_one(); // GET
    w.fake.ui_write("G2", true);
    w.drain();
    assert_eq!(w.fake.count(Put), 2, "the 409'd PUT only");
    assert_eq!(w.status_of("INC-2"), EventStatus::Applied);
}

#[test]
fn version_conflicts_past_the_bound_fail() {
    let mut w = world();
    for _ in 0..4 {
        w.fake.fault(Put, Fault::ConcurrentWrite);
    }
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(600_000);
    assert_eq!(w.fake.count(Put), 4);
    // One more read after learning our client's name (see above).
    assert_eq!(w.fake.count(Get), 5);
    assert_eq!(w.status_of("INC-1"), EventStatus::Failed);
    let reason = w.failures()[0];
    assert!(reason.contains("version conflict"), "{reason}");
    assert!(reason.contains("409"), "{reason}");
}

#[test]
fn a_400_version_mismatch_is_a_conflict() {
    let mut w = world();
    w.fake.fault(
        Put,
        Fault::Status {
            status: 400,
            headers: vec![],
            body: r#"{"message":"The version supplied (1) does not match the current version (2) of the object.","code":"bad.request","status":400}"#.into(),
        },
    );
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    assert_eq!(w.fake.kinds(), [Token, Get, Put, Get, Put]);
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
}

#[test]
fn another_400_fails_without_retry() {
    let mut w = world();
    w.fake.fault(Put, Fault::status(400));
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(600_000);
    assert_eq!(w.fake.kinds(), [Token, Get, Put]);
    assert!(w.failures()[0].contains("400 refused"));
}

#[test]
fn a_429_pauses_every_call_until_retry_after() {
    let mut w = world();
    w.fake.fault(Get, Fault::too_many(Some(7)));
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    assert_eq!(w.fake.kinds(), [Token, Get]);
    // Another group's event during the pause: no call either.
    w.now = t(1_000);
    w.activate("INC-2", &["q2"], "G2");
    assert!(w.out.is_empty());
    assert_eq!(w.rec.next_wakeup(), Some(t(7_000)));
    w.now = t(6_999);
    w.poll();
    assert!(w.out.is_empty(), "no call before Retry-After");
    let v = w.rec.state_view(&w.ledger, w.now);
    assert!(v["pausedUntil"]
        .as_str()
        .unwrap()
        .starts_with("2024-08-15T14:22:08"));
    w.run_until(60_000);
    let after: Vec<_> = w.fake.log.iter().skip(2).collect();
    assert!(!after.is_empty());
    assert!(after.iter().all(|l| l.at >= t(7_000)));
    assert!(w.fake.enabled("G1") && w.fake.enabled("G2"));
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
    assert_eq!(w.status_of("INC-2"), EventStatus::Applied);
    assert!(w.metrics.contains(&Metric::RateLimitPause));
}

#[test]
fn a_429_without_retry_after_waits_the_default_minute() {
    let mut w = world();
    w.fake.fault(Put, Fault::too_many(None));
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    assert_eq!(w.rec.next_wakeup(), Some(t(60_000)));
    w.now = t(59_999);
    w.poll();
    assert!(w.out.is_empty());
    w.run_until(120_000);
    assert_eq!(w.fake.kinds(), [Token, Get, Put, Get, Put]);
    assert_eq!(w.fake.log[3].at, t(60_000));
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
}

#[test]
fn a_429_body_names_the_wait_when_the_header_is_missing() {
    let mut w = world();
    w.fake.fault(
        Get,
        Fault::Status {
            status: 429,
            headers: vec![],
            body: r#"{"message":"Rate limit exceeded the maximum. Retry the request in [42] seconds","code":"too.many.requests.retry.after","status":429}"#.into(),
        },
    );
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    assert_eq!(w.rec.next_wakeup(), Some(t(42_000)));
}

#[test]
fn server_errors_back_off_then_succeed() {
    let mut w = world();
    for _ in 0..3 {
        w.fake.fault(Get, Fault::status(503));
    }
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(60_000);
    let gets: Vec<_> = w
        .fake
        .log
        .iter()
        .filter(|l| l.kind == Get)
        .map(|l| l.at)
        .collect();
    assert_eq!(gets, [t(0), t(1_000), t(3_000), t(7_000)]);
    assert_eq!(w.fake.count(Put), 1);
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
    assert_eq!(
        w.metrics
            .iter()
            .filter(|m| **m == Metric::Failure(FailureKind::ServerError))
            .count(),
        3
    );
}

#[test]
fn the_backoff_caps_at_thirty_seconds() {
    let mut w = world();
    for _ in 0..8 {
        w.fake.fault(Get, Fault::status(500));
    }
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(600_000);
    let gets: Vec<i64> = w
        .fake
        .log
        .iter()
        .filter(|l| l.kind == Get)
        .map(|l| (l.at - t(0)).num_seconds())
        .collect();
    assert_eq!(gets, [0, 1, 3, 7, 15, 31, 61, 91, 121]);
}

#[test]
fn a_failed_write_is_never_retried_blind() {
    let mut w = world();
    w.fake.fault(Put, Fault::Failed);
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(60_000);
    assert_eq!(w.fake.kinds(), [Token, Get, Put, Get, Put]);
    assert_eq!(w.fake.log[3].at, t(1_000));
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
}

#[test]
fn a_reset_after_the_write_landed_reads_and_finds_it_done() {
    let mut w = world();
    w.activate("INC-1", &["q1"], "G1");
    w.answer_one(); // token
    w.answer_one(); // GET
                    // The PUT lands, but its answer is lost on the way back.
    let put = w.out.pop_front().unwrap();
    let _ = w.fake.answer(&put, w.now);
    let fx = w
        .rec
        .on_result(put.op, CallResult::Failed, &w.ledger, w.now);
    w.apply(fx);
    w.run_until(60_000);
    assert_eq!(w.fake.kinds(), [Token, Get, Put, Get]);
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
}

#[test]
fn an_unanswered_call_is_given_up_after_its_timeout() {
    let mut w = world();
    w.fake.fault(Get, Fault::Lost);
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    assert_eq!(w.lost.len(), 1);
    // call_timeout_ms (5 s) plus a grace of 2 s.
    assert_eq!(w.rec.next_wakeup(), Some(t(7_000)));
    w.run_until(60_000);
    let gets: Vec<_> = w
        .fake
        .log
        .iter()
        .filter(|l| l.kind == Get)
        .map(|l| l.at)
        .collect();
    assert_eq!(gets, [t(0), t(8_000)]);
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
    // The late answer of the abandoned call is ignored.
    let lost = w.lost.pop().unwrap();
    let late = w
        .rec
        .on_result(lost.op, CallResult::Failed, &w.ledger, w.now);
    assert!(late.is_empty());
}

#[test]
fn an_unknown_op_is_ignored() {
    let mut w = world();
    assert!(w
        .rec
        .on_result(9_999, CallResult::Failed, &w.ledger, w.now)
        .is_empty());
}

#[test]
fn the_token_is_refreshed_before_it_expires() {
    let mut w = world();
    w.fake.token_lifetime_s = 100;
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    assert_eq!(w.rec.next_wakeup(), Some(t(85_000)));
    w.run_until(86_000);
    assert_eq!(w.fake.issued, 2);
    assert_eq!(w.fake.log.last().unwrap().at, t(85_000));
    w.now = t(90_000);
    w.resolve("INC-1", "G1");
    w.drain();
    let last = w.fake.log.last().unwrap();
    assert_eq!(last.kind, Put);
    assert_eq!(last.authorization.as_deref(), Some("Bearer tok-2"));
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
}

#[test]
fn a_token_mirrored_before_a_reload_is_used_after_it() {
    let mut w = world();
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    let stored = w.rec.export_token().unwrap();
    // The VM reloads: a new reconciler, the token from shared data.
    w.rec = Reconciler::new(super::fake::settings(json!({})));
    assert!(w.rec.import_token(stored, w.now));
    w.resolve("INC-1", "G1");
    w.drain();
    assert_eq!(w.fake.kinds(), [Token, Get, Put, Get, Put]);
}

#[test]
fn an_expired_token_is_not_used() {
    let mut w = world();
    w.fake.token_lifetime_s = 100;
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    // No poll for a long time (refresh missed): the next call fetches first.
    w.now = t(200_000);
    w.resolve("INC-1", "G1");
    assert_eq!(w.out[0].path, "/oauth/token");
    w.drain();
    assert_eq!(w.fake.kinds(), [Token, Get, Put, Token, Get, Put]);
}

#[test]
fn refused_credentials_fail_clearly_and_are_not_retried_in_a_loop() {
    let mut w = world();
    w.fake.bad_credentials = true;
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(10_000);
    assert_eq!(w.fake.kinds(), [Token]);
    assert_eq!(w.status_of("INC-1"), EventStatus::Failed);
    let reason = w.failures()[0];
    assert!(
        reason.contains("refused the OAuth client credentials"),
        "{reason}"
    );
    assert!(reason.contains("invalid_client"), "{reason}");
    assert!(w
        .metrics
        .contains(&Metric::Failure(FailureKind::BadCredentials)));
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(v["token"]["status"], "rejected");

    // A new event within the cool-down fails at once, without a call.
    w.now = t(10_000);
    w.activate("INC-2", &["q1"], "G1");
    assert!(w.out.is_empty());
    assert_eq!(w.status_of("INC-2"), EventStatus::Failed);
    // Nothing polls the login host meanwhile.
    w.run_until(1_000_000);
    assert_eq!(w.fake.count(Token), 1);

    // After the cool-down, the next event tries once more.
    w.fake.bad_credentials = false;
    w.now = t(1_000_000);
    w.activate("INC-3", &["q1"], "G1");
    w.drain();
    assert_eq!(w.fake.count(Token), 2);
    assert_eq!(w.status_of("INC-3"), EventStatus::Applied);
}

#[test]
fn a_hundred_events_before_a_poll_make_one_read_and_one_write() {
    let mut w = world();
    for i in 0..100 {
        w.event(&format!("INC-{i}"), RoutingMode::Active, &["q1"], "G1");
    }
    w.poll();
    w.drain();
    assert_eq!(w.fake.kinds(), [Token, Get, Put]);
    assert_eq!(w.status_of("INC-0"), EventStatus::Applied);
    assert_eq!(w.status_of("INC-99"), EventStatus::Applied);
}

#[test]
fn events_during_a_reconcile_make_exactly_one_more() {
    let mut w = world();
    w.activate("INC-A", &["q1"], "G1");
    w.answer_one(); // token; the GET goes out
    for i in 0..100 {
        w.event(&format!("INC-{i}"), RoutingMode::Active, &["q1"], "G1");
        w.poll();
    }
    w.drain();
    assert_eq!(w.fake.kinds(), [Token, Get, Put, Get]);
    assert_eq!(w.status_of("INC-99"), EventStatus::Applied);
}

#[test]
fn a_duplicate_storm_makes_one_put() {
    let mut w = world();
    for _ in 0..100 {
        // The same delivery again and again: the ledger calls it a duplicate,
        // the glue still marks the group.
        w.seq_reset();
        w.event("INC-1", RoutingMode::Active, &["q1"], "G1");
        w.poll();
        w.answer_one();
    }
    w.drain();
    assert_eq!(w.fake.count(Put), 1);
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
}

#[test]
fn the_desired_state_changing_mid_write_reconciles_again() {
    let mut w = world();
    w.activate("INC-1", &["q1"], "G1");
    w.answer_one(); // token
    w.answer_one(); // GET; the PUT (enable) goes out
    assert_eq!(w.out[0].method, "PUT");
    w.event("INC-1", RoutingMode::Resolved, &[], "G1");
    w.drain();
    assert_eq!(w.fake.kinds(), [Token, Get, Put, Get, Put]);
    assert!(!w.fake.enabled("G1"));
    // Only one settle, after Genesys matched the newest wish.
    assert_eq!(w.settles.len(), 1);
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
    assert!(audit_decisions(&w).contains(&"superseded-reconcile-again".to_owned()));
}

#[test]
fn the_in_flight_limit_holds_across_groups() {
    let mut w = World::new(json!({"limits": {"max_in_flight": 1}}));
    w.event("INC-1", RoutingMode::Active, &["q1"], "G1");
    w.event("INC-2", RoutingMode::Active, &["q2"], "G2");
    w.poll();
    w.drain();
    assert_eq!(w.max_out, 1);
    assert_eq!(w.fake.kinds(), [Token, Get, Put, Get, Put]);
    assert_eq!(w.fake.log[1].path, "/api/v2/architect/emergencygroups/G1");
    assert_eq!(w.fake.log[3].path, "/api/v2/architect/emergencygroups/G2");
    assert!(w.fake.enabled("G1") && w.fake.enabled("G2"));
}

#[test]
fn groups_run_in_parallel_up_to_the_limit() {
    let mut w = World::new(json!({"limits": {"max_in_flight": 2}}));
    w.activate("INC-0", &["q1"], "G1");
    w.drain();
    w.event("INC-1", RoutingMode::Resolved, &[], "G1");
    w.event("INC-2", RoutingMode::Active, &["q2"], "G2");
    w.event("INC-3", RoutingMode::Active, &["q3"], "G-CARRIER");
    w.poll();
    assert_eq!(w.out.len(), 2);
    w.drain();
    assert_eq!(w.max_out, 2);
    assert!(w.fake.enabled("G2") && w.fake.enabled("G-CARRIER"));
}

#[test]
fn a_full_backlog_loses_nothing() {
    let mut w = World::new(json!({"limits": {"max_backlog": 1, "max_in_flight": 1}}));
    w.event("INC-1", RoutingMode::Active, &["q1"], "G1");
    w.event("INC-2", RoutingMode::Active, &["q2"], "G2");
    assert_eq!(w.rec.mark_dirty(&g("G2")), Marked::BacklogFull);
    assert_eq!(w.rec.mark_dirty(&g("G1")), Marked::Coalesced);
    w.poll();
    w.drain();
    assert!(w.metrics.contains(&Metric::BacklogFull));
    assert!(w.fake.enabled("G1") && w.fake.enabled("G2"));
    assert_eq!(w.status_of("INC-2"), EventStatus::Applied);
}

#[test]
fn the_data_table_row_is_written_before_switching_on_and_after_switching_off() {
    let mut w = World::new(json!({"datatable": {"id": "t1", "row_key": "emr-{group}"}}));
    w.activate("INC-1", &["q1", "q2"], "G1");
    w.now = t(10);
    w.drain();
    // The row did not exist: PUT 404, then POST to create it, then the group.
    assert_eq!(w.fake.kinds(), [Token, Get, Row, Row, Put]);
    assert_eq!(
        w.fake.log[2].path,
        "/api/v2/flows/datatables/t1/rows/emr-G1"
    );
    assert_eq!(w.fake.log[3].method, "POST");
    assert_eq!(w.fake.log[3].path, "/api/v2/flows/datatables/t1/rows");
    let row = w.fake.rows["/api/v2/flows/datatables/t1/rows/emr-G1"].clone();
    assert_eq!(row["key"], "emr-G1");
    assert_eq!(row["queueIds"], "q1,q2");
    assert_eq!(row["incidentIds"], "INC-1");
    assert_eq!(row["enabled"], true);
    assert!(row["updatedAt"]
        .as_str()
        .unwrap()
        .starts_with("2024-08-15T14:22:01"));
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);

    // A second incident with other queues: only the row changes, once
    // the row's refresh pace allows (a switch never waits for it).
    w.activate("INC-2", &["q3", "q1"], "G1");
    w.drain();
    assert_eq!(w.fake.kinds().len(), 5, "paced");
    w.run_until(12_000);
    assert_eq!(&w.fake.kinds()[5..], [Get, Row]);
    let row = &w.fake.rows["/api/v2/flows/datatables/t1/rows/emr-G1"];
    assert_eq!(row["queueIds"], "q1,q2,q3");
    assert_eq!(row["incidentIds"], "INC-1,INC-2");
    assert_eq!(w.status_of("INC-2"), EventStatus::Applied);

    // Nothing changed: no write at all.
    w.now = t(20_000);
    w.rec.mark_dirty(&g("G1"));
    w.poll();
    w.drain();
    assert_eq!(&w.fake.kinds()[7..], [Get]);

    // Both resolved: the group first, then the row.
    w.event("INC-1", RoutingMode::Resolved, &[], "G1");
    w.resolve("INC-2", "G1");
    w.drain();
    assert_eq!(&w.fake.kinds()[8..], [Get, Put, Row]);
    let row = &w.fake.rows["/api/v2/flows/datatables/t1/rows/emr-G1"];
    assert_eq!(row["enabled"], false);
    assert_eq!(row["queueIds"], "");
    assert_eq!(row["incidentIds"], "");
    assert!(!w.fake.enabled("G1"));
    assert!(w.metrics.contains(&Metric::RowWrite));
}

#[test]
fn a_row_of_a_crowded_group_stays_within_bounds_and_the_next_incident_is_applied() {
    // Issue 12, finding 6: 90 incidents of 50 long queues made the row's
    // queueIds 165 KB; past Genesys's 512,000-byte body limit every later
    // reconcile of the group failed with 413, a legitimate incident's too.
    let mut w = World::new(json!({"datatable": {"id": "t1", "row_key": "emr-{group}"}}));
    w.fake.rows_upsert = true;
    for i in 0..90 {
        let queues: Vec<String> = (0..50)
            .map(|j| format!("{i:02}-{j:02}-{}", "q".repeat(122)))
            .collect();
        let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
        w.activate(&format!("FLOOD-{i:02}"), &queues, "G1");
    }
    w.drain();
    w.activate("INC-REAL", &["q-real"], "G1");
    w.run_until(5_000);
    assert_eq!(w.status_of("INC-REAL"), EventStatus::Applied);
    assert!(w.fake.enabled("G1"));
    let row = &w.fake.rows["/api/v2/flows/datatables/t1/rows/emr-G1"];
    for column in ["queueIds", "incidentIds", "openIncidents"] {
        let n = row[column].as_str().map_or(0, str::len);
        assert!(
            n <= crate::genesys::models::MAX_COLUMN_CHARS,
            "{column}: {n}"
        );
    }
    // The most urgent (first) queues are there, whole.
    let queue_ids = row["queueIds"].as_str().unwrap();
    assert!(queue_ids.starts_with(&format!("00-00-{}", "q".repeat(122))));
    assert!(queue_ids.split(',').all(|q| q.len() == 128));
    assert!(
        !w.failures().iter().any(|f| f.contains("413")),
        "{:?}",
        w.failures()
    );
}

#[test]
fn a_flood_of_incidents_for_one_group_leaves_the_budget_to_another_groups_switch() {
    // Issue 12, finding 1: a thousand incidents for one group kept it in
    // back-to-back read-and-row-write cycles; the request budget they spent
    // made another group's switch wait seconds for its calls.
    let mut w = World::new(json!({"datatable": {"id": "t1", "row_key": "emr-{group}"}}));
    w.fake.rows_upsert = true;
    w.activate("INC-0", &["q0"], "G1");
    w.drain();
    assert!(w.fake.enabled("G1"));
    let rows_before = w.fake.count(Row);
    for i in 1..=100 {
        w.now = t(i * 100);
        let q = format!("q{i}");
        w.activate(&format!("FLOOD-{i}"), &[q.as_str()], "G1");
        w.drain();
        if i == 60 {
            // Six seconds into the flood, another group's incident.
            w.activate("INC-SWITCH", &["qs"], "G2");
            w.drain();
            assert!(
                w.fake.enabled("G2"),
                "the switch waited for the budget the flood spent"
            );
        }
    }
    // G1's row was refreshed about every ROW_REFRESH_PACE, not per event.
    let refreshes = w.fake.count(Row) - rows_before;
    assert!(
        (4..=7).contains(&refreshes),
        "{refreshes} row writes in 10 s"
    );
    // And once the flood is over, the last queues reach the row.
    w.run_until(20_000);
    let row = &w.fake.rows["/api/v2/flows/datatables/t1/rows/emr-G1"];
    assert!(
        row["incidentIds"].as_str().unwrap().ends_with(",FLOOD-100"),
        "{row}"
    );
    assert_eq!(w.status_of("FLOOD-100"), EventStatus::Applied);
}

#[test]
fn a_switch_right_after_a_failed_row_write_is_not_paced() {
    // Found by `make bench`: a resolution's cycle switched the group off,
    // then its row write failed; the next activation was taken for a
    // row-only refresh and held by the pacing for 2 s.
    let mut w = World::new(json!({"datatable": {"id": "t1", "row_key": "emr-{group}"}}));
    w.fake.rows_upsert = true;
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    assert!(w.fake.enabled("G1"));
    w.now = t(100);
    w.fake.fault(Row, Fault::status(403));
    w.resolve("INC-1", "G1");
    w.drain();
    assert!(!w.fake.enabled("G1"));
    assert!(
        w.failures().iter().any(|f| f.contains("403")),
        "{:?}",
        w.failures()
    );
    w.now = t(200);
    w.activate("INC-2", &["q2"], "G1");
    w.drain();
    assert!(w.fake.enabled("G1"), "the switch on was paced");
}

#[test]
fn a_row_write_failure_fails_the_reconcile() {
    let mut w = World::new(json!({"datatable": {"id": "t1", "row_key": "emr"}}));
    w.fake.rows_upsert = true;
    w.fake.fault(Row, Fault::status(403));
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(60_000);
    assert_eq!(w.fake.kinds(), [Token, Get, Row]);
    let reason = w.failures()[0];
    assert!(
        reason.starts_with("writing the data table row of group G1: 403"),
        "{reason}"
    );
    // A group without a row of its own gets no row.
    w.activate("INC-2", &["q1"], "G2");
    w.drain();
    assert_eq!(&w.fake.kinds()[3..], [Get, Put]);
}

#[test]
fn the_guide_contract_posts_and_waits_out_pending() {
    let mut w = World::new(json!({"driver": "guide-contract", "groups_by_incident_type": {}}));
    w.fake.guide_delay_reads = 2;
    w.activate("INC-2024-08-15-7742", &["queue-12345", "queue-67890"], "G1");
    w.run_until(60_000);
    assert_eq!(
        w.fake.kinds(),
        [Token, GuideGet, GuidePost, GuideGet, GuideGet, GuideGet]
    );
    let post = w.fake.log[2].body.clone().unwrap();
    assert!(post["reason"]
        .as_str()
        .unwrap()
        .starts_with("INC-2024-08-15-7742: CARRIER_OUTAGE"));
    assert_eq!(post["state"], "ACTIVE");
    assert_eq!(
        post["routingConfiguration"],
        json!({"queueIds": ["queue-12345", "queue-67890"], "priority": 1})
    );
    let reads: Vec<_> = w.fake.log[3..].iter().map(|l| l.at).collect();
    assert_eq!(reads, [t(1_000), t(2_000), t(3_000)]);
    assert_eq!(w.status_of("INC-2024-08-15-7742"), EventStatus::Applied);
    assert_eq!(
        audit_decisions(&w)
            .iter()
            .filter(|d| *d == "pending")
            .count(),
        3
    );

    w.fake.guide_delay_reads = 0;
    w.now = t(100_000);
    w.resolve("INC-2024-08-15-7742", "G1");
    w.drain();
    let post = w.fake.log.last().unwrap().body.clone().unwrap();
    assert_eq!(post["state"], "INACTIVE");
    let reason = post["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("INC-2024-08-15-7742: Resolved"),
        "{reason}"
    );
    assert!(post.get("routingConfiguration").is_none());
    assert_eq!(w.fake.guide["state"], "INACTIVE");
    assert_eq!(w.status_of("INC-2024-08-15-7742"), EventStatus::Applied);
}

#[test]
fn the_guide_contract_rewrites_when_only_the_queues_change() {
    let mut w = World::new(json!({"driver": "guide-contract", "groups_by_incident_type": {}}));
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    w.activate("INC-2", &["q2"], "G1");
    w.drain();
    assert_eq!(
        w.fake.kinds(),
        [Token, GuideGet, GuidePost, GuideGet, GuidePost]
    );
    assert_eq!(
        w.fake.guide["routingConfiguration"]["queueIds"],
        json!(["q1", "q2"])
    );
}

#[test]
fn a_state_stuck_pending_backs_off() {
    let mut w = World::new(json!({
        "driver": "guide-contract",
        "groups_by_incident_type": {},
        "guide": {"max_pending_reads": 2}
    }));
    w.fake.guide_pending = 1_000;
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(5_000);
    // Read, 2 waits of 1 s, then the third PENDING read backs off 1 s.
    let reads: Vec<_> = w
        .fake
        .log
        .iter()
        .filter(|l| l.kind == GuideGet)
        .map(|l| l.at)
        .collect();
    assert_eq!(
        reads,
        [t(0), t(1_000), t(2_000), t(3_000), t(4_000), t(5_000)]
    );
    assert!(audit_decisions(&w).contains(&"retry-after-backoff".to_owned()));
    assert!(w.settles.is_empty());
}

#[test]
fn the_state_view_stays_small_whatever_a_group_holds() {
    // Issue 12, finding 14: 1.4 MB with long queue lists.
    let mut w = World::new(json!({"datatable": {"id": "t1", "row_key": "emr-{group}"}}));
    w.fake.rows_upsert = true;
    for i in 0..1000 {
        let queues: Vec<String> = (0..50)
            .map(|j| format!("{i:03}-{j:02}-{}", "q".repeat(121)))
            .collect();
        let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
        w.event(&format!("I{i:04}"), RoutingMode::Active, &queues, "G1");
    }
    w.poll();
    w.run_until(10_000);
    let v = w.rec.state_view(&w.ledger, w.now);
    let size = v.to_string().len();
    assert!(size < 32 * 1024, "{size} bytes");
    let g1 = &v["groups"][0];
    assert_eq!(g1["openIncidentsTotal"], 1000);
    assert_eq!(g1["openIncidents"].as_array().unwrap().len(), 25);
    assert_eq!(g1["queuesTotal"], 50_000);
    assert_eq!(g1["desired"]["queues"].as_array().unwrap().len(), 25);
    assert!(g1["row"]["queueIds"].as_str().unwrap().len() <= 4_000);
    assert!(g1["row"].get("openIncidents").is_none());
    // Every audit line is bounded too.
    let longest = w.audits.iter().map(|a| a.to_string().len()).max().unwrap();
    assert!(longest < 16 * 1024, "an audit line of {longest} bytes");
}

#[test]
fn the_state_view_shows_desired_observed_and_the_last_reconcile() {
    let mut w = World::new(json!({"datatable": {"id": "t1", "row_key": "emr-{group}"}}));
    w.fake.rows_upsert = true;
    w.activate("INC-1", &["q1", "q2"], "G1");
    w.drain();
    w.fake.fault(Get, Fault::status(404));
    w.activate("INC-2", &["q9"], "G2");
    w.drain();
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(v["driver"], "emergency-group");
    assert_eq!(v["token"]["status"], "valid");
    assert!(!v.to_string().contains("tok-1"), "never the token");
    assert_eq!(v["inFlight"], 0);
    assert_eq!(v["ourApp"], "emr-edge");
    assert_eq!(v["rateLimit"]["allowed"], 300);

    let g1 = group_view(&v, "G1");
    assert_eq!(g1["desired"]["enabled"], true);
    assert_eq!(g1["desired"]["queues"], json!(["q1", "q2"]));
    assert_eq!(g1["queues"], json!(["q1", "q2"]));
    assert_eq!(
        g1["openIncidents"],
        json!([{"source": "canonical", "correlationId": "INC-1", "priority": 3,
                "since": "2024-08-15T14:22:01.000Z", "expiresAt": "2024-08-16T14:22:01.000Z"}])
    );
    // The name Genesys gave the group, and one line for a person with it.
    assert_eq!(g1["name"], "Carrier Outage", "{g1}");
    // G2 is not read yet: its id stands for its name.
    assert_eq!(
        v["summary"],
        "2 groups in emergency: Carrier Outage since 14:22 UTC, held by canonical INC-1; \
         G2 since 14:22 UTC, held by canonical INC-2"
    );
    assert_eq!(g1["observed"]["enabled"], true);
    assert_eq!(g1["observed"]["version"], 2);
    assert_eq!(g1["observed"]["modifiedByApp"], "emr-edge");
    assert_eq!(g1["lastWritten"]["version"], 2);
    assert_eq!(g1["lastReconcile"]["result"], "applied");
    assert!(g1["lastReconcile"]["correlationId"]
        .as_str()
        .unwrap()
        .starts_with("corr-"));
    assert_eq!(g1["row"]["queueIds"], "q1,q2");
    assert_eq!(g1["phase"], "idle");

    let g2 = group_view(&v, "G2");
    assert_eq!(g2["lastReconcile"]["result"], "failed");
    assert_eq!(g2["lastReconcile"]["httpStatus"], 404);
    assert!(g2["lastReconcile"]["detail"]
        .as_str()
        .unwrap()
        .contains("404"));
    assert_eq!(g2["observed"], Value::Null);

    // While a call is out and after a failure, the phase says so.
    w.fake.fault(Get, Fault::status(500));
    w.activate("INC-3", &["q1"], "G-CARRIER");
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(group_view(&v, "G-CARRIER")["phase"], "in-flight");
    w.drain();
    let v = w.rec.state_view(&w.ledger, w.now);
    let gc = group_view(&v, "G-CARRIER");
    assert_eq!(gc["phase"], "backoff");
    assert!(gc["retryAt"].is_string());
    assert_eq!(gc["lastReconcile"]["result"], "retrying");
}

#[test]
fn what_we_wrote_is_kept_for_the_watchdog() {
    let mut w = world();
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    let o = w.rec.observed(&g("G1")).unwrap();
    assert_eq!(o.version, Some(2));
    assert_eq!(o.modified_by_app.as_deref(), Some("emr-edge"));
    // A person flips it; the next read sees a version we did not write.
    w.fake.ui_write("G1", false);
    w.rec.mark_dirty(&g("G1"));
    w.poll();
    w.answer_one();
    let o = w.rec.observed(&g("G1")).unwrap();
    assert_eq!(o.version, Some(3));
    assert_eq!(o.modified_by_app.as_deref(), Some("Genesys Cloud Admin UI"));
}

#[test]
fn metric_names_are_stable() {
    // The names docs/metrics.md documents, as the glue defines them.
    assert_eq!(Metric::Transition.name(), "emr.genesys.transitions");
    assert_eq!(
        Metric::Failure(FailureKind::RateLimited).name(),
        "emr.genesys.failures.rate_limited"
    );
    assert_eq!(
        Metric::CalloutLatencyMs(3).name(),
        "emr.genesys.callout_latency_ms"
    );
    assert_eq!(
        Metric::SkippedOverridden.name(),
        "emr.watchdog.skipped_overridden"
    );
}

#[test]
fn a_token_backoff_during_a_pause_waits_for_the_pause() {
    let mut w = World::new(json!({"limits": {"max_in_flight": 2}}));
    w.event("INC-1", RoutingMode::Active, &["q1"], "G1");
    w.event("INC-2", RoutingMode::Active, &["q2"], "G2");
    w.poll();
    w.answer_one(); // the token; both GETs go out
                    // G1's GET gets a 401 (a new token is asked for), G2's a 429, and the
                    // new token request a 500.
    w.fake.fault(Get, Fault::status(401));
    w.fake.fault(Get, Fault::too_many(None));
    w.fake.fault(Token, Fault::status(500));
    w.drain();
    assert_eq!(w.fake.kinds(), [Token, Get, Get, Token]);
    // The token retry is due at 1 s, but the 429 holds every call until 60 s:
    // the next wake-up is the pause's end, not a busy loop at 1 s.
    assert_eq!(w.rec.next_wakeup(), Some(t(60_000)));
    w.run_until(120_000);
    assert!(w.fake.log.iter().skip(4).all(|l| l.at >= t(60_000)));
    assert!(w.fake.enabled("G1") && w.fake.enabled("G2"));
}

#[test]
fn a_missing_group_or_permission_is_a_problem_until_it_works() {
    let mut w = world();
    w.fake.fault(Get, Fault::status(404));
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(10_000);
    assert_eq!(w.alarms.len(), 1, "{:?}", w.alarms);
    assert!(
        w.alarms[0]
            .starts_with("emr-edge cannot switch: emergency group G1: no such emergency group"),
        "{}",
        w.alarms[0]
    );
    let reasons = w.rec.take_health_change().unwrap();
    assert!(reasons[0].contains("404"), "{reasons:?}");
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(v["health"]["status"], "degraded", "{v}");
    // Fixed in Genesys: the next read works and the problem clears.
    assert!(w.fake.faults.values().all(VecDeque::is_empty));
    w.now = t(20_000);
    w.resolve("INC-1", "G1");
    w.activate("INC-2", &["q1"], "G1");
    w.drain();
    assert!(w.fake.enabled("G1"));
    assert_eq!(w.rec.take_health_change(), Some(Vec::new()));
    assert!(w.rec.health().is_ok());
    assert_eq!(w.alarms.len(), 1, "logged once: {:?}", w.alarms);
}

#[test]
fn refused_credentials_are_a_problem() {
    let mut w = world();
    w.fake.fault(
        Token,
        Fault::Status {
            status: 401,
            headers: Vec::new(),
            body: r#"{"error":"invalid_client","description":"client authentication failed"}"#
                .into(),
        },
    );
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(10_000);
    assert!(
        w.alarms
            .iter()
            .any(|p| p.contains("Genesys refused the OAuth client credentials")),
        "{:?}",
        w.alarms
    );
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(v["health"]["problems"][0]["check"], "credentials", "{v}");
}

fn assert_one_time_format(v: &Value, what: &str) {
    let bad = crate::rfc3339::times_out_of_format(v);
    assert!(bad.is_empty(), "{what}: {bad:?}");
}

#[test]
fn every_time_the_edge_writes_has_one_format() {
    let mut w = world();
    w.fake.fault(Put, Fault::status(503));
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(30_000);
    w.resolve("INC-1", "G1");
    w.drain();
    let mut seen = 0;
    let state = w.rec.state_view(&w.ledger, w.now);
    assert_one_time_format(&state, "state");
    for (i, a) in w.audits.iter().enumerate() {
        assert_one_time_format(a, &format!("audit[{i}]"));
        seen += usize::from(a.get("at").is_some());
    }
    for inc in w.ledger.incidents() {
        assert_one_time_format(&serde_json::to_value(inc).unwrap(), "incident");
        let key = inc.key();
        assert_one_time_format(&w.ledger.brief(&key), "brief");
    }
    assert!(seen > 3, "audit lines with a time: {seen}");
}
