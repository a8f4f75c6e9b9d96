//! The watchdog, people-win, the request budget and restart recovery,
//! against the fake Genesys: each test is one scenario of docs/convergence.md, timed to
//! the second.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Value};

use super::fake::{g, t, FakeGenesys, Fault, Kind, World};
use super::*;
use crate::event::RoutingMode;
use crate::ledger::{EventStatus, IncidentState, Via};

use Kind::{GetGroup as Get, Me, PutGroup as Put, Row, RowsList, Token};

/// Period 30 s, 5 s after a write, grace 10 s.
fn watched(extra: Value) -> World {
    let mut cfg =
        json!({"watchdog": {"period_seconds": 30, "converging_seconds": 5, "grace_seconds": 10}});
    if let (Value::Object(c), Value::Object(e)) = (&mut cfg, extra) {
        c.extend(e);
    }
    World::new(cfg)
}

/// [`watched`] with one incident, `INC-1` on `G1`, switched on.
fn watched_incident() -> World {
    let mut w = watched(json!({}));
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    w
}

fn puts_since(w: &World, from_ms: i64) -> Vec<DateTime<Utc>> {
    w.fake
        .log
        .iter()
        .filter(|l| l.kind == Put && l.at >= t(from_ms))
        .map(|l| l.at)
        .collect()
}

fn decisions(w: &World) -> Vec<String> {
    w.audits
        .iter()
        .filter_map(|a| a["decision"].as_str().map(str::to_owned))
        .collect()
}

fn count(w: &World, m: Metric) -> usize {
    w.metrics.iter().filter(|x| **x == m).count()
}

fn group<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .unwrap()
}

#[test]
fn groups_are_read_again_every_period_and_sooner_after_a_write() {
    let mut w = watched_incident();
    assert_eq!(w.fake.kinds(), [Token, Get, Put]);
    w.run_until(66_000);
    let reads: Vec<i64> = w
        .fake
        .log
        .iter()
        .filter(|l| l.kind == Get)
        .map(|l| (l.at - t(0)).num_seconds())
        .collect();
    // The write at 0 s, its verification at 5 s, then every 30 s.
    assert_eq!(reads, [0, 5, 35, 65]);
    assert!(puts_since(&w, 1).is_empty());
    assert_eq!(count(&w, Metric::Checked), 3);
    assert_eq!(count(&w, Metric::CheckInSync), 3);
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(group(&v, "G1")["nextCheck"], "2024-08-15T14:23:36.000Z");
    assert_eq!(v["watchdog"]["periodSeconds"], 30);
}

#[test]
fn drift_by_our_own_client_is_corrected_after_the_grace_not_before() {
    let mut w = watched_incident();
    w.run_until(20_000);
    // Our own client (a replica, a script) switches it off at 20 s.
    w.now = t(20_000);
    w.fake.own_write("G1", false);
    // The check at 35 s sees it; the grace runs from there.
    w.run_until(35_000);
    assert!(decisions(&w).contains(&"drift-seen".to_owned()));
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(group(&v, "G1")["phase"], "grace");
    assert_eq!(
        group(&v, "G1")["drift"]["correctAt"],
        "2024-08-15T14:22:46.000Z"
    );
    w.run_until(44_999);
    assert!(puts_since(&w, 1).is_empty(), "not before the grace");
    assert!(!w.fake.enabled("G1"));
    w.run_until(50_000);
    assert_eq!(puts_since(&w, 1), vec![t(45_000)]);
    assert!(w.fake.enabled("G1"));
    assert!(t(45_000) - t(20_000) >= Duration::seconds(10));
    assert_eq!(count(&w, Metric::DriftSeen), 1);
    assert_eq!(count(&w, Metric::Corrected), 1);
    let line = w
        .audits
        .iter()
        .find(|a| a["decision"] == "correct-drift")
        .unwrap();
    assert_eq!(line["driftSince"], "2024-08-15T14:22:36.000Z");
    assert_eq!(line["incidents"], json!(["canonical:INC-1"]));
    // Not overridden: it was our own client.
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(group(&v, "G1")["overridden"], false);
}

#[test]
fn drift_that_ends_by_itself_needs_no_write() {
    let mut w = watched_incident();
    w.run_until(20_000);
    w.now = t(20_000);
    w.fake.own_write("G1", false);
    w.run_until(36_000);
    w.fake.own_write("G1", true);
    w.run_until(60_000);
    assert!(puts_since(&w, 1).is_empty());
    assert!(decisions(&w).contains(&"drift-ended".to_owned()));
}

#[test]
fn a_person_wins_until_the_next_incident_event() {
    let mut w = watched_incident();
    // A person switches it off in the admin UI at 1 s.
    w.now = t(1_000);
    w.fake.ui_write("G1", false);
    w.run_until(100_000);
    assert!(puts_since(&w, 1).is_empty(), "never reverted");
    assert!(!w.fake.enabled("G1"));
    assert_eq!(count(&w, Metric::Overridden), 1);
    assert!(count(&w, Metric::SkippedOverridden) >= 2);
    let v = w.rec.state_view(&w.ledger, w.now);
    let g1 = group(&v, "G1");
    assert_eq!(g1["overridden"], true);
    assert_eq!(g1["override"]["modifiedByApp"], "Genesys Cloud Admin UI");
    assert_eq!(g1["override"]["enabled"], false);
    assert_eq!(g1["desired"]["enabled"], true);
    let line = w
        .audits
        .iter()
        .find(|a| a["decision"] == "overridden")
        .unwrap();
    assert!(
        line["detail"].as_str().unwrap().contains("resume"),
        "{line}"
    );

    // The next event of an incident of the group: correction resumes.
    w.activate("INC-1", &["q1", "q2"], "G1");
    w.drain();
    assert!(w.fake.enabled("G1"));
    assert_eq!(puts_since(&w, 90_000).len(), 1);
    assert_eq!(count(&w, Metric::Resumed), 1);
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(group(&v, "G1")["overridden"], false);
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
}

#[test]
fn an_explicit_resume_corrects_a_held_group() {
    let mut w = watched_incident();
    w.now = t(1_000);
    w.fake.ui_write("G1", false);
    w.run_until(10_000);
    assert!(!w.fake.enabled("G1"));
    let fx = w.rec.resume(&g("G1"), &w.ledger, w.now);
    w.apply(fx);
    w.drain();
    assert!(w.fake.enabled("G1"));
    assert!(decisions(&w).contains(&"resumed".to_owned()));
    // Unknown groups are refused without keeping anything.
    let fx = w.rec.resume(&g("NEVER-SEEN"), &w.ledger, w.now);
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::Audit(a) if a["decision"] == "resume-unknown-group")));
    let v = w.rec.state_view(&w.ledger, w.now);
    assert!(!v.to_string().contains("NEVER-SEEN"));
}

#[test]
fn a_resolution_is_an_incident_event_and_resumes_correction() {
    // Two incidents; a person switches the group off; one of them resolves:
    // the other still wants routing on, and the event decides.
    let mut w = watched(json!({"datatable": {"id": "t1", "row_key": "emr-{group}"}}));
    w.fake.rows_upsert = true;
    w.activate("INC-1", &["q1"], "G1");
    w.activate("INC-2", &["q2"], "G1");
    w.drain();
    w.now = t(1_000);
    w.fake.ui_write("G1", false);
    w.run_until(6_000);
    assert_eq!(count(&w, Metric::Overridden), 1);
    // INC-2 lapses: the glue expires it and marks the group (not an event).
    w.event("INC-2", RoutingMode::Resolved, &[], "G1");
    let key = crate::event::IncidentKey {
        source: crate::event::Source::Canonical,
        id: crate::event::CorrelationId::parse("INC-2").unwrap(),
    };
    assert_eq!(w.ledger.get(&key).unwrap().state, IncidentState::Resolved);
    w.poll();
    w.drain();
    // A resolution *is* an incident event: the group is driven again.
    assert!(w.fake.enabled("G1"));
}

#[test]
fn a_persons_change_that_matches_the_incidents_is_no_override() {
    let mut w = watched_incident();
    // A person touches it but leaves it on.
    w.now = t(1_000);
    w.fake.ui_write("G1", true);
    w.run_until(40_000);
    assert_eq!(count(&w, Metric::Overridden), 0);
    // Switching it off now is a change we have not accepted: held.
    w.fake.ui_write("G1", false);
    w.run_until(70_000);
    assert_eq!(count(&w, Metric::Overridden), 1);
    // The person puts it back: the override ends by itself.
    w.fake.ui_write("G1", true);
    w.run_until(100_000);
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(group(&v, "G1")["overridden"], false);
    assert!(decisions(&w).contains(&"override-ended".to_owned()));
    assert!(puts_since(&w, 1).is_empty());
}

#[test]
fn a_person_enabling_a_quiet_group_is_not_switched_off() {
    let mut w = watched_incident();
    w.resolve("INC-1", "G1");
    w.drain();
    assert!(!w.fake.enabled("G1"));
    w.now = t(2_000);
    w.fake.ui_write("G1", true);
    w.run_until(60_000);
    assert!(w.fake.enabled("G1"), "a person's emergency switch stays on");
    assert_eq!(count(&w, Metric::Overridden), 1);
}

#[test]
fn expiry_turns_routing_off_at_once_when_nobody_else_touched_it() {
    let mut w = watched_incident();
    // The glue's expiry: close it, mark the group (no incident event).
    let expired = w.ledger.expire(t(100_000_000));
    assert_eq!(expired.len(), 1);
    w.rec.mark_dirty(&g("G1"));
    w.poll();
    w.drain();
    assert!(!w.fake.enabled("G1"), "a transition needs no grace");
}

#[test]
fn checks_keep_a_reserve_of_the_budget_for_transitions() {
    // 30 groups, a budget of 10 at once and 60 a minute.
    let mut w = World::new(json!({
        "watchdog": {"period_seconds": 5, "converging_seconds": 5, "grace_seconds": 0},
        "limits": {"requests_per_minute": 60, "burst": 10, "max_in_flight": 8}
    }));
    for i in 0..30 {
        let id = format!("GX{i}");
        w.fake.groups.insert(
            id.clone(),
            crate::genesys::models::tests::group_json(&id, 1, false),
        );
        w.event(&format!("INC-{i}"), RoutingMode::Active, &["q"], &id);
    }
    w.poll();
    w.run_until(300_000);
    for i in 0..30 {
        let v = w.rec.state_view(&w.ledger, w.now);
        assert!(
            w.fake.enabled(&format!("GX{i}")),
            "GX{i} {}",
            group(&v, &format!("GX{i}"))
        );
    }
    // No minute holds more than burst + rate.
    let times: Vec<DateTime<Utc>> = w.fake.log.iter().map(|l| l.at).collect();
    for (i, start) in times.iter().enumerate() {
        let n = times[i..]
            .iter()
            .take_while(|x| **x < *start + Duration::seconds(60))
            .count();
        assert!(n <= 70, "{n} calls in the minute from {start}");
    }
    // Routine checks never spend the reserve: an event now goes out at once.
    let before = w.fake.log.len();
    w.resolve("INC-0", "GX0");
    assert!(!w.out.is_empty(), "the reserve lets the transition start");
    w.drain();
    assert!(!w.fake.enabled("GX0"));
    assert!(w.fake.log.len() > before);
    assert!(w.metrics.contains(&Metric::BudgetWait));
}

/// A world whose fake Genesys is the one `before` left behind: an Envoy
/// restart (the ledger, tokens and reconciler state are gone).
fn restarted(before: World, extra: Value) -> World {
    let mut w = watched(extra);
    w.fake = before.fake;
    w.fake.log.clear();
    w.fake.tokens.clear();
    w.now = before.now + Duration::seconds(1);
    w
}

#[test]
fn a_restart_rebuilds_open_incidents_from_the_rows_before_any_write() {
    let dt = json!({"datatable": {"id": "t1", "row_key": "emr-{group}"}});
    let mut w = watched(dt.clone());
    w.fake.rows_upsert = true;
    w.activate("INC-1", &["q1", "q2"], "G1");
    w.activate("INC-9", &["q9"], "G2");
    w.drain();
    w.resolve("INC-9", "G2");
    w.drain();
    let row = &w.fake.rows["/api/v2/flows/datatables/t1/rows/emr-G1"];
    let persisted = crate::recovery::decode(row["openIncidents"].as_str().unwrap()).unwrap();
    assert_eq!(persisted.o.len(), 1);

    let mut w = restarted(w, dt);
    // The rows page fails twice first: still nothing is read or written.
    w.fake.fault(RowsList, Fault::status(503));
    w.fake.fault(RowsList, Fault::status(503));
    w.rec.start_recovery(&[g("G1"), g("G2")]);
    w.rec.mark_all(&w.ledger);
    w.poll();
    assert!(w.rec.is_recovering());
    w.run_until(60_000);
    assert!(!w.rec.is_recovering());
    assert_eq!(
        &w.fake.kinds()[..4],
        [Token, RowsList, RowsList, RowsList],
        "no group call before the rows"
    );
    // INC-1 is back, the group stays on without a write.
    assert!(w.fake.enabled("G1"));
    assert!(!w.fake.kinds().contains(&Put));
    let key = crate::event::IncidentKey {
        source: crate::event::Source::Canonical,
        id: crate::event::CorrelationId::parse("INC-1").unwrap(),
    };
    let inc = w.ledger.get(&key).unwrap();
    assert_eq!(inc.events[0].via, Some(Via::Recovery));
    assert_eq!(inc.queues.len(), 2);
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
    assert_eq!(count(&w, Metric::Restored), 1);
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(v["recovery"]["phase"], "done");
    assert_eq!(v["recovery"]["persistedIncidents"], 1);

    // Its resolution webhook still switches routing off.
    w.now += Duration::seconds(1);
    w.resolve("INC-1", "G1");
    w.drain();
    assert!(!w.fake.enabled("G1"));
    assert_eq!(w.status_of("INC-1"), EventStatus::Applied);
}

#[test]
fn a_resolution_before_the_rows_are_read_is_not_undone_by_them() {
    let dt = json!({"datatable": {"id": "t1", "row_key": "emr-{group}"}});
    let mut w = watched(dt.clone());
    w.fake.rows_upsert = true;
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    let mut w = restarted(w, dt);
    w.rec.start_recovery(&[g("G1")]);
    // The resolution arrives while the rows are being read.
    w.poll();
    w.answer_one(); // token
    assert!(w.rec.is_recovering());
    w.resolve("INC-1", "G1");
    w.drain();
    w.run_until(30_000);
    assert!(!w.fake.enabled("G1"));
}

#[test]
fn without_a_data_table_our_enabled_group_is_adopted_then_expires() {
    let w = watched_incident();
    let written_at = w.fake.groups["G1"]["dateModified"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut w = restarted(w, json!({}));
    w.rec.start_recovery(&[g("G1"), g("G2")]);
    w.rec.mark_all(&w.ledger);
    w.poll();
    w.run_until(10_000);
    // Whose `modifiedByApp` is "emr-edge"? Asked once, then adopted.
    assert!(w.fake.kinds().contains(&Me));
    assert_eq!(w.rec.our_app(), Some("emr-edge"));
    assert_eq!(w.adopted, vec![g("G1")]);
    assert!(!w.fake.kinds().contains(&Put), "never switched off blind");
    assert!(w.fake.enabled("G1"));
    let key = crate::recovery::adopted_key(&g("G1")).unwrap();
    let inc = w.ledger.get(&key).unwrap();
    assert_eq!(inc.events[0].via, Some(Via::Adopted));
    let since = chrono::DateTime::parse_from_rfc3339(&written_at).unwrap();
    assert_eq!(inc.expires_at.unwrap(), since + Duration::seconds(3600));
    assert_eq!(count(&w, Metric::Adopted), 1);

    // It cannot stay on forever: the synthetic incident expires.
    w.now = inc.expires_at.unwrap();
    let expired = w.ledger.expire(w.now);
    assert_eq!(expired, vec![key]);
    w.rec.mark_dirty(&g("G1"));
    w.poll();
    w.drain();
    assert!(!w.fake.enabled("G1"));
}

#[test]
fn a_group_a_person_left_enabled_is_held_at_start_not_adopted() {
    let mut w = watched(json!({}));
    w.fake.ui_write("G1", true);
    w.rec.start_recovery(&[g("G1")]);
    w.poll();
    w.run_until(10_000);
    assert!(w.adopted.is_empty());
    assert!(w.fake.enabled("G1"));
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(group(&v, "G1")["overridden"], true);
    // Our own name had to be learned to be sure it is not ours.
    assert!(w.fake.kinds().contains(&Me));
}

#[test]
fn unreadable_rows_let_recovery_go_on_by_adoption() {
    let dt = json!({"datatable": {"id": "t1", "row_key": "emr-{group}"}});
    let mut w = watched(dt.clone());
    w.fake.rows_upsert = true;
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    let mut w = restarted(w, dt);
    w.fake.fault(RowsList, Fault::status(403));
    w.rec.start_recovery(&[g("G1")]);
    w.poll();
    w.run_until(10_000);
    assert!(!w.rec.is_recovering());
    let v = w.rec.state_view(&w.ledger, w.now);
    assert!(
        v["recovery"]["detail"].as_str().unwrap().contains("403"),
        "{v}"
    );
    assert_eq!(w.adopted, vec![g("G1")]);
    assert!(w.fake.enabled("G1"));
    assert!(!w.fake.kinds().contains(&Put));
    // The adopted incident is written to the row like any other.
    assert!(w.fake.kinds().contains(&Row));
}

#[test]
fn a_failed_identity_lookup_holds_off_and_retries() {
    let w = watched_incident();
    let mut w = restarted(w, json!({}));
    w.fake.fault(Me, Fault::status(500));
    w.rec.start_recovery(&[g("G1")]);
    w.poll();
    w.run_until(20_000);
    assert!(w.adopted.is_empty());
    assert!(!w.fake.kinds().contains(&Put));
    w.run_until(60_000);
    assert_eq!(w.adopted, vec![g("G1")]);
    assert!(w.fake.enabled("G1"));
}

#[test]
fn the_fake_is_the_restarted_one() {
    // Guard for `restarted`: the old world's Genesys is kept as it was.
    let w = watched_incident();
    let v = w.fake.version("G1");
    let w2 = restarted(w, json!({}));
    let _: &FakeGenesys = &w2.fake;
    assert_eq!(w2.fake.version("G1"), v);
    assert!(w2.ledger.is_empty());
}

#[test]
fn a_person_who_writes_between_our_read_and_our_write_wins() {
    let mut w = watched(json!({}));
    w.fake.fault(Put, Fault::PersonWrite);
    w.activate("INC-1", &["q1"], "G1");
    w.run_until(5_000);
    // The 409, a fresh read showing another app's version, our own name
    // learned to be sure, a last read: held, not written.
    assert_eq!(w.fake.kinds(), [Token, Get, Put, Get, Me, Get]);
    assert!(!w.fake.enabled("G1"));
    assert!(decisions(&w).contains(&"authority-void".to_owned()));
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(group(&v, "G1")["overridden"], true);
    assert_eq!(w.status_of("INC-1"), EventStatus::Failed);
    // A conflict that changed nothing keeps the event's authority.
    let mut w = watched(json!({}));
    w.fake.fault(Put, Fault::status(409));
    w.activate("INC-1", &["q1"], "G1");
    w.drain();
    assert!(w.fake.enabled("G1"));
}

#[test]
fn a_change_stamped_after_the_event_is_the_persons_last_word() {
    let mut w = watched_incident();
    // The resolution arrives while calls wait (a 429 pause)…
    w.fake.fault(Get, Fault::too_many(Some(30)));
    w.now = t(1_000);
    w.resolve("INC-1", "G1");
    w.drain();
    // …and a person switches routing back on five seconds later.
    w.now = t(6_000);
    w.fake.clock = w.now;
    w.fake.ui_write("G1", true);
    w.run_until(60_000);
    assert!(w.fake.enabled("G1"), "the person acted after the event");
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(group(&v, "G1")["overridden"], true);
    // Before the event, the event decides.
    let mut w = watched_incident();
    w.now = t(1_000);
    w.fake.clock = w.now;
    w.fake.ui_write("G1", false);
    w.now = t(5_000);
    w.activate("INC-1", &["q1", "q2"], "G1");
    w.run_until(10_000);
    assert!(w.fake.enabled("G1"));
}

// ---- contention: two writers with our credentials -------------------------

/// Runs until `until_ms` while another instance with our OAuth client, whose
/// ledger wants `G1` off, checks it every 7 s and switches it off whenever
/// it finds it on (as this reconciler does the other way round).
fn fight(w: &mut World, until_ms: i64) {
    let mut ms = (w.now - t(0)).num_milliseconds();
    while ms < until_ms {
        ms += 1_000;
        w.run_until(ms);
        w.now = t(ms);
        if ms % 7_000 == 0 && w.fake.enabled("G1") {
            w.fake.clock = w.now;
            w.fake.own_write("G1", false);
        }
    }
}

fn contended(w: &World) -> Value {
    let v = w.rec.state_view(&w.ledger, w.now);
    group(&v, "G1")["contended"].clone()
}

fn audit_at(w: &World, decision: &str) -> Option<DateTime<Utc>> {
    w.audits
        .iter()
        .find(|a| a["decision"] == decision)
        .and_then(|a| a["at"].as_str())
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.with_timezone(&Utc))
}

fn last_gauge(w: &World) -> Option<u64> {
    w.metrics.iter().rev().find_map(|m| match m {
        Metric::ContendedGroups(n) => Some(*n),
        _ => None,
    })
}

#[test]
fn two_writers_fighting_are_flagged_at_the_third_drift_and_no_longer_corrected() {
    let mut w = watched_incident();
    w.now = t(1_000);
    fight(&mut w, 300_000);
    // Two corrections, then the third drift flags the group instead.
    assert_eq!(count(&w, Metric::Corrected), 2);
    assert_eq!(count(&w, Metric::Contended), 1);
    assert_eq!(puts_since(&w, 1).len(), 2, "{:?}", puts_since(&w, 1));
    let flagged = audit_at(&w, "contended").expect("flagged");
    assert!(puts_since(&w, 1).iter().all(|p| *p < flagged));
    assert!(flagged < t(120_000), "flagged at {flagged}");
    // The other writer has the last word: nothing flips it back.
    assert!(!w.fake.enabled("G1"));
    assert!(decisions(&w).contains(&"skipped-contended".to_owned()));
    // The error line names the group and says what to do.
    assert_eq!(w.alarms.len(), 1, "{:?}", w.alarms);
    let alarm = &w.alarms[0];
    for needle in [
        "emergency group G1",
        "another emr-edge instance (or a script with this OAuth client)",
        "exactly one emr-edge instance may run",
        "stops correcting G1",
        "3rd time within 600 s",
    ] {
        assert!(alarm.contains(needle), "{needle}: {alarm}");
    }
    let c = contended(&w);
    assert_eq!(c["since"], json!(rfc3339(flagged)));
    assert_eq!(c["modifiedByApp"], "emr-edge");
    assert!(c["detail"].as_str().unwrap().contains("keeps writing"));
    assert_eq!(last_gauge(&w), Some(1));
    let v = w.rec.state_view(&w.ledger, w.now);
    assert_eq!(group(&v, "G1")["lastReconcile"]["result"], "contended");
    assert!(group(&v, "G1")["drift"].is_null());
    assert_eq!(v["watchdog"]["contentionWindowSeconds"], 600);
    // Much later the fight still goes on and still nothing is written.
    fight(&mut w, 1_200_000);
    assert_eq!(puts_since(&w, 1).len(), 2);
    assert_eq!(count(&w, Metric::Contended), 1);
    assert!(!contended(&w).is_null());
}

#[test]
fn a_single_drift_or_drifts_far_apart_never_flag_a_group() {
    let mut w = watched_incident();
    // One drift, and a second a minute later: both corrected.
    for at in [20_000, 80_000] {
        w.run_until(at);
        w.now = t(at);
        w.fake.clock = w.now;
        w.fake.own_write("G1", false);
        w.run_until(at + 50_000);
        assert!(w.fake.enabled("G1"), "not corrected after {at}");
    }
    // A third, more than the window after the first correction.
    w.run_until(700_000);
    w.now = t(700_000);
    w.fake.own_write("G1", false);
    w.run_until(760_000);
    assert!(w.fake.enabled("G1"));
    assert_eq!(count(&w, Metric::Corrected), 3);
    assert_eq!(count(&w, Metric::Contended), 0);
    assert!(w.alarms.is_empty());
    assert!(contended(&w).is_null());
    assert_eq!(last_gauge(&w), None);
}

#[test]
fn an_incident_event_clears_contention_and_a_renewed_fight_is_flagged_at_once() {
    let mut w = watched_incident();
    w.now = t(1_000);
    fight(&mut w, 200_000);
    assert!(!contended(&w).is_null());
    let before = puts_since(&w, 1).len();
    // An incident event of the group decides: written, flag lifted.
    w.activate("INC-2", &["q2"], "G1");
    w.drain();
    assert!(w.fake.enabled("G1"));
    assert_eq!(puts_since(&w, 1).len(), before + 1);
    assert!(contended(&w).is_null());
    assert!(decisions(&w).contains(&"contention-lifted".to_owned()));
    assert_eq!(last_gauge(&w), Some(0));
    assert_eq!(w.status_of("INC-2"), EventStatus::Applied);
    // The other writer goes on: still within the window of the corrections
    // that were counted, its next drift flags the group again, uncorrected.
    fight(&mut w, 300_000);
    assert_eq!(puts_since(&w, 1).len(), before + 1);
    assert_eq!(count(&w, Metric::Contended), 2);
    assert_eq!(count(&w, Metric::Corrected), 2);
    assert!(!contended(&w).is_null());
    assert_eq!(last_gauge(&w), Some(1));
}

#[test]
fn a_resume_clears_contention() {
    let mut w = watched_incident();
    w.now = t(1_000);
    fight(&mut w, 200_000);
    assert!(!contended(&w).is_null());
    let before = puts_since(&w, 1).len();
    let fx = w.rec.resume(&g("G1"), &w.ledger, w.now);
    w.apply(fx);
    w.drain();
    assert!(contended(&w).is_null());
    assert!(w.fake.enabled("G1"));
    assert_eq!(puts_since(&w, 1).len(), before + 1);
    let line = w
        .audits
        .iter()
        .find(|a| a["decision"] == "resumed")
        .unwrap();
    assert_eq!(line["wasContended"], true);
    assert_eq!(line["wasOverridden"], false);
    assert_eq!(last_gauge(&w), Some(0));
}

#[test]
fn contention_ends_by_itself_after_a_quiet_window_in_sync_only() {
    let mut w = watched_incident();
    w.now = t(1_000);
    fight(&mut w, 200_000);
    let flagged = audit_at(&w, "contended").unwrap();
    // The other instance stops. Genesys stays as it left it (off), not as
    // wanted: held however long it stays quiet.
    w.run_until(1_500_000);
    assert!(!contended(&w).is_null());
    assert!(!w.fake.enabled("G1"));
    assert_eq!(puts_since(&w, 1).len(), 2);
    // It is put back as wanted by our client (not by this instance): the
    // window starts again from that change.
    w.now = t(1_500_000);
    w.fake.clock = w.now;
    w.fake.own_write("G1", true);
    w.run_until(2_050_000);
    assert!(!contended(&w).is_null(), "not quiet for a window yet");
    w.run_until(2_200_000);
    assert!(contended(&w).is_null(), "still contended");
    let ended = audit_at(&w, "contention-ended").unwrap();
    assert!(ended >= t(1_500_000) + Duration::seconds(600), "{ended}");
    assert!(ended > flagged);
    assert_eq!(last_gauge(&w), Some(0));
    assert_eq!(puts_since(&w, 1).len(), 2);
    // Given back: a single drift is corrected again (the old corrections
    // are out of the window).
    w.now = t(2_250_000);
    w.fake.clock = w.now;
    w.fake.own_write("G1", false);
    w.run_until(2_310_000);
    assert!(w.fake.enabled("G1"));
    assert_eq!(count(&w, Metric::Contended), 1);
}
