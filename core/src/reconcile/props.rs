//! Property: whatever Genesys answers, in whatever order, the reconciler
//! never panics, never exceeds its in-flight limit, never leaves a group
//! stranded (each is in flight, waiting on a timer, or settled), and once
//! Genesys behaves, ends settled with Genesys matching the ledger.
//!
//! Native only (proptest); clippy does not see `cfg(all(test, …))` as test
//! code, hence the allowances test code has everywhere else.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use proptest::prelude::*;
use serde_json::json;

use super::fake::{t, Fault, Kind, World};
use super::*;
use crate::event::RoutingMode;
use crate::ledger::Settle;

fn kind(i: u8) -> Kind {
    match i % 4 {
        0 => Kind::Token,
        1 => Kind::GetGroup,
        2 => Kind::PutGroup,
        _ => Kind::Row,
    }
}

fn fault(i: u8) -> Fault {
    match i % 12 {
        0 => Fault::status(401),
        1 => Fault::status(403),
        2 => Fault::status(404),
        3 => Fault::ConcurrentWrite,
        4 => Fault::Status {
            status: 400,
            headers: vec![],
            body: r#"{"message":"The version supplied (1) does not match the current version (2) of the object."}"#.into(),
        },
        5 => Fault::too_many(Some(5)),
        6 => Fault::too_many(None),
        7 => Fault::status(500),
        8 => Fault::status(503),
        9 => Fault::Failed,
        10 => Fault::Lost,
        _ => Fault::status(400),
    }
}

/// Every group of the world is accounted for.
fn check_not_stranded(w: &World, settled_since_mark: &BTreeMap<String, bool>) {
    let v = w.rec.state_view(&w.ledger, w.now);
    let paused = !v["pausedUntil"].is_null();
    let token = v["token"]["status"].as_str().unwrap_or("");
    for grp in v["groups"].as_array().unwrap() {
        let id = grp["id"].as_str().unwrap();
        match grp["phase"].as_str().unwrap() {
            "idle" => assert!(
                settled_since_mark.get(id).copied().unwrap_or(true),
                "{id} idle without a settle"
            ),
            "queued" => assert!(
                paused
                    || w.rec.in_flight() > 0
                    || token == "retrying"
                    || token == "fetching"
                    || v["budget"]["waitUntil"].is_string(),
                "{id} queued with nothing to wait for: {v}"
            ),
            "in-flight" => assert!(w.rec.in_flight() > 0),
            "deferred" => assert!(v["budget"]["waitUntil"].is_string() || paused),
            "backoff" | "pending" | "grace" | "identity" | "pacing" => {
                assert!(grp["retryAt"].is_string())
            }
            other => panic!("unknown phase {other}"),
        }
    }
    assert!(w.rec.in_flight() <= w.rec.settings().limits.max_in_flight);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_answers_end_in_a_settle_or_a_scheduled_retry(
        faults in proptest::collection::vec((any::<u8>(), any::<u8>()), 0..14),
        with_row in any::<bool>(),
        resolve_midway in any::<bool>(),
        max_in_flight in 1usize..3,
    ) {
        let mut extra = json!({"limits": {"max_in_flight": max_in_flight}});
        if with_row {
            extra["datatable"] = json!({"id": "t1", "row_key": "emr-{group}"});
        }
        let mut w = World::new(extra);
        for (k, f) in &faults {
            w.fake.fault(kind(*k), fault(*f));
        }
        let mut settled: BTreeMap<String, bool> = BTreeMap::new();
        w.event("INC-1", RoutingMode::Active, &["q1"], "G1");
        w.event("INC-2", RoutingMode::Active, &["q2"], "G2");
        settled.insert("G1".into(), false);
        settled.insert("G2".into(), false);
        w.poll();

        let horizon = t(6 * 3_600_000);
        let mut resolved = false;
        let mut seen = 0;
        let mut idle_polls = 0;
        for step in 0..5_000 {
            if w.answer_one() {
                idle_polls = 0;
            } else {
                match w.rec.next_wakeup() {
                    Some(at) if at <= horizon => {
                        let progressed = at > w.now;
                        w.now = w.now.max(at);
                        let (calls, audits) = (w.fake.log.len() + w.out.len(), w.audits.len());
                        w.poll();
                        let quiet = calls == w.fake.log.len() + w.out.len() && audits == w.audits.len();
                        idle_polls = if !progressed && quiet { idle_polls + 1 } else { 0 };
                        prop_assert!(idle_polls < 3, "next_wakeup keeps asking for a poll that does nothing");
                    }
                    _ => break,
                }
            }
            if resolve_midway && !resolved && step == 3 {
                resolved = true;
                for (grp, _, _) in &w.settles[seen..] {
                    settled.insert(grp.as_str().to_owned(), true);
                }
                seen = w.settles.len();
                w.event("INC-1", RoutingMode::Resolved, &[], "G1");
                settled.insert("G1".into(), false);
                w.poll();
            }
            for (grp, _, _) in &w.settles[seen..] {
                settled.insert(grp.as_str().to_owned(), true);
            }
            seen = w.settles.len();
            check_not_stranded(&w, &settled);
        }
        // Every group was settled after its latest change.
        for (grp, done) in &settled {
            prop_assert!(*done, "{grp} never settled; faults {faults:?}");
        }
        // Where the last settle says applied, Genesys matches the ledger.
        for id in ["G1", "G2"] {
            let last = w.settles.iter().rev().find(|(g, _, _)| g.as_str() == id);
            if let Some((_, Settle::Applied, _)) = last {
                let want = w.ledger.desired_for(&super::fake::g(id)).enabled;
                prop_assert_eq!(w.fake.enabled(id), want, "{} faults {:?}", id, faults);
            }
        }
    }
}

/// One thing that happens in the watchdog property.
#[derive(Debug, Clone)]
enum Step {
    /// Time passes (ms), the reconciler follows its wake-ups.
    Wait(i64),
    /// A person flips group `g` in the admin UI.
    Person(usize, bool),
    /// Our own client flips it behind the reconciler's back.
    Ours(usize, bool),
    /// An incident event for group `g`: open (true) or resolve its incident.
    Event(usize, bool),
    /// `POST /emr/groups/{g}/resume`.
    Resume(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1i64..40_000).prop_map(Step::Wait),
        (0usize..3, any::<bool>()).prop_map(|(g, on)| Step::Person(g, on)),
        (0usize..3, any::<bool>()).prop_map(|(g, on)| Step::Ours(g, on)),
        (0usize..3, any::<bool>()).prop_map(|(g, on)| Step::Event(g, on)),
        (0usize..3).prop_map(Step::Resume),
    ]
}

const GROUPS: [&str; 3] = ["G1", "G2", "G-CARRIER"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// People win: after a person's change, the reconciler never writes the
    /// group until an incident event or a resume for it. Drift by our own
    /// client is corrected no sooner than the grace after it. And whatever
    /// happens, no minute holds more calls than the budget allows.
    #[test]
    fn people_win_and_the_budget_holds(steps in proptest::collection::vec(step(), 1..40)) {
        let mut w = World::new(json!({
            "watchdog": {"period_seconds": 5, "converging_seconds": 5, "grace_seconds": 3},
            "limits": {"requests_per_minute": 60, "burst": 6}
        }));
        // Per group: the person's change not yet answered by an event/resume.
        let mut held: [bool; 3] = [false; 3];
        // Per group: when our own client last changed it, and the length of
        // the call log then.
        let mut own_at: [Option<(chrono::DateTime<chrono::Utc>, usize)>; 3] = [None; 3];
        for s in steps {
            match s {
                Step::Wait(ms) => {
                    let deadline = (w.now - t(0)).num_milliseconds() + ms;
                    w.run_until(deadline);
                    w.now = w.now.max(t(deadline));
                    w.poll();
                }
                Step::Person(g, on) => {
                    // A person acts a moment after whatever came before.
                    let later = (w.now - t(0)).num_milliseconds() + 2_000;
                    w.run_until(later);
                    w.now = w.now.max(t(later));
                    w.fake.clock = w.now;
                    w.fake.ui_write(GROUPS[g], on);
                    held[g] = true;
                    own_at[g] = None;
                }
                Step::Ours(g, on) => {
                    w.fake.clock = w.now;
                    w.fake.own_write(GROUPS[g], on);
                    held[g] = false;
                    // Timed from here only when the group is settled: a
                    // write an event decided earlier may still be on its way.
                    let v = w.rec.state_view(&w.ledger, w.now);
                    let settled = v["groups"].as_array().unwrap().iter()
                        .find(|x| x["id"] == GROUPS[g])
                        .is_none_or(|x| x["phase"] == "idle");
                    own_at[g] = settled.then_some((w.now, w.fake.log.len()));
                }
                Step::Event(g, on) => {
                    let id = format!("INC-{g}");
                    let mode = if on { RoutingMode::Active } else { RoutingMode::Resolved };
                    w.event(&id, mode, &["q1"], GROUPS[g]);
                    w.poll();
                    held[g] = false;
                    own_at[g] = None;
                }
                Step::Resume(g) => {
                    let fx = w.rec.resume(&super::fake::g(GROUPS[g]), &w.ledger, w.now);
                    w.apply(fx);
                    held[g] = false;
                    own_at[g] = None;
                }
            }
            w.drain();
            for (i, id) in GROUPS.iter().enumerate() {
                let app = w.fake.groups[*id]["modifiedByApp"].as_str().unwrap_or("").to_owned();
                if held[i] {
                    prop_assert_eq!(app, "Genesys Cloud Admin UI", "{} written over a person", id);
                }
            }
            // A correction of our own client's change comes after the grace.
            for (idx, l) in w.fake.log.iter().enumerate() {
                if l.kind != Kind::PutGroup { continue; }
                for (i, id) in GROUPS.iter().enumerate() {
                    if let Some((at, from)) = own_at[i] {
                        if l.path.ends_with(id) && idx >= from {
                            prop_assert!(l.at >= at + chrono::Duration::seconds(3), "{} corrected {} after our client's change", id, l.at - at);
                        }
                    }
                }
            }
        }
        let times: Vec<_> = w.fake.log.iter().map(|l| l.at).collect();
        for (i, start) in times.iter().enumerate() {
            let in_minute = times[i..].iter().take_while(|x| **x < *start + chrono::Duration::seconds(60)).count();
            prop_assert!(in_minute <= 66, "{} calls in a minute", in_minute);
        }
    }
}
