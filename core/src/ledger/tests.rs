#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::event::{CorrelationId, IncidentEvent, Source};

pub(crate) fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_723_731_721 + s, 0).unwrap()
}

pub(crate) fn event(id: &str, mode: RoutingMode, ts: i64, queues: &[&str]) -> QueuedEvent {
    QueuedEvent {
        event: IncidentEvent {
            source: Source::Canonical,
            correlation_id: CorrelationId::parse(id).unwrap(),
            incident_type: IncidentType::parse("CARRIER_OUTAGE").unwrap(),
            routing_mode: mode,
            target_queue_ids: queues.iter().map(|q| QueueId::parse(q).unwrap()).collect(),
            timestamp: t(ts),
            ttl_seconds: 3600,
            priority: 3,
            group: None,
            detail: None,
            about: None,
        },
        received_ms: t(ts).timestamp_millis(),
        delivery_id: None,
        slot: false,
    }
}

/// An open incident at `rank` listing `queues`, for the group index's tests.
pub(crate) fn incident_with(
    key: &IncidentKey,
    rank: (Priority, u64),
    queues: &[QueueId],
) -> Incident {
    Incident {
        id: key.id.clone(),
        source: key.source,
        incident_type: IncidentType::parse("CARRIER_OUTAGE").unwrap(),
        group: g("G"),
        queues: queues.to_vec(),
        priority: rank.0,
        state: IncidentState::Open,
        routing_mode: RoutingMode::Active,
        last_event_at: t(0),
        expires_at: Some(t(3600)),
        ttl_seconds: 3600,
        updated_at: t(0),
        seq: rank.1,
        events: Vec::new(),
        genesys: None,
        about: None,
    }
}

fn g(s: &str) -> GroupId {
    GroupId::parse(s).unwrap()
}

fn key(id: &str) -> IncidentKey {
    IncidentKey {
        source: Source::Canonical,
        id: CorrelationId::parse(id).unwrap(),
    }
}

const A: RoutingMode = RoutingMode::Active;
const R: RoutingMode = RoutingMode::Resolved;

#[test]
fn activation_enables_and_resolution_disables() {
    let mut l = Ledger::default();
    assert_eq!(
        l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1)),
        Applied::Opened
    );
    let d = l.desired_for(&g("G"));
    assert!(d.enabled);
    assert_eq!(d.queues, vec![QueueId::parse("q1").unwrap()]);
    assert_eq!(
        l.apply(&event("I1", R, 10, &[]), g("G"), t(11)),
        Applied::Resolved
    );
    assert!(!l.desired_for(&g("G")).enabled);
    // The group stays known so it is driven back off.
    assert!(l.knows_group(&g("G")));
}

#[test]
fn the_audit_line_says_what_arrived_and_what_it_did() {
    let mut q = event("I1", A, 0, &["q1"]);
    q.delivery_id = Some("d-1".into());
    let line = Applied::Opened.audit_line(&q, &g("G"), t(1));
    assert_eq!(
        line,
        serde_json::json!({
            "audit": "event",
            "at": "2024-08-15T14:22:02.000Z",
            "incident": "canonical:I1",
            "routingMode": "EMERGENCY_ACTIVE",
            "timestamp": "2024-08-15T14:22:01.000Z",
            "group": "G",
            "deliveryId": "d-1",
            "outcome": "Opened",
        })
    );
}

#[test]
fn resolving_one_of_two_keeps_the_group_on_with_the_others_queues() {
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1", "q2"]), g("G"), t(1));
    l.apply(&event("I2", A, 5, &["q2", "q3"]), g("G"), t(6));
    assert_eq!(
        l.desired_for(&g("G"))
            .queues
            .iter()
            .map(QueueId::as_str)
            .collect::<Vec<_>>(),
        ["q1", "q2", "q3"]
    );
    l.apply(&event("I1", R, 10, &[]), g("G"), t(11));
    let d = l.desired_for(&g("G"));
    assert!(d.enabled);
    assert_eq!(
        d.queues.iter().map(QueueId::as_str).collect::<Vec<_>>(),
        ["q2", "q3"]
    );
    assert_eq!(d.incidents, vec![key("I2")]);
}

#[test]
fn priority_orders_queues_before_arrival() {
    let mut l = Ledger::default();
    l.apply(&event("LOW", A, 0, &["q-low"]), g("G"), t(1));
    let mut urgent = event("HIGH", A, 5, &["q-high"]);
    urgent.event.priority = 1;
    l.apply(&urgent, g("G"), t(6));
    let d = l.desired_for(&g("G"));
    assert_eq!(
        d.queues.iter().map(QueueId::as_str).collect::<Vec<_>>(),
        ["q-high", "q-low"]
    );
}

#[test]
fn a_resolution_that_overtakes_its_activation_wins() {
    let mut l = Ledger::default();
    assert_eq!(
        l.apply(&event("I1", R, 10, &[]), g("G"), t(11)),
        Applied::ResolvedUnknown
    );
    assert_eq!(
        l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(12)),
        Applied::Stale
    );
    assert!(!l.desired_for(&g("G")).enabled);
    let inc = l.get(&key("I1")).unwrap();
    assert_eq!(inc.state, IncidentState::Resolved);
    assert!(inc
        .events
        .iter()
        .any(|e| e.status == EventStatus::Superseded));
    assert!(inc.events.iter().all(|e| e.status.is_terminal()));
}

#[test]
fn the_same_event_twice_is_a_duplicate() {
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
    assert_eq!(
        l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(2)),
        Applied::Duplicate
    );
    assert_eq!(l.get(&key("I1")).unwrap().events.len(), 1);
}

#[test]
fn reopening_after_resolution() {
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
    l.apply(&event("I1", R, 10, &[]), g("G"), t(11));
    assert_eq!(
        l.apply(&event("I1", A, 20, &["q9"]), g("G"), t(21)),
        Applied::Opened
    );
    let d = l.desired_for(&g("G"));
    assert!(d.enabled);
    assert_eq!(d.queues[0].as_str(), "q9");
}

#[test]
fn a_newer_activation_supersedes_the_pending_one() {
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
    assert_eq!(
        l.apply(&event("I1", A, 5, &["q2"]), g("G"), t(6)),
        Applied::Updated
    );
    let inc = l.get(&key("I1")).unwrap();
    assert_eq!(inc.events[0].status, EventStatus::Superseded);
    assert_eq!(inc.status(), EventStatus::Processing);
}

#[test]
fn ttl_expiry_closes_and_disables() {
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
    assert_eq!(l.next_expiry(), Some(t(3600)));
    assert!(l.expire(t(3599)).is_empty());
    assert_eq!(l.expire(t(3600)), vec![key("I1")]);
    assert!(!l.desired_for(&g("G")).enabled);
    let inc = l.get(&key("I1")).unwrap();
    assert_eq!(inc.state, IncidentState::Expired);
    assert_eq!(inc.status(), EventStatus::Expired);
    assert!(l.expire(t(9999)).is_empty());
}

#[test]
fn an_activation_already_past_its_ttl_never_opens() {
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(4000));
    assert!(!l.desired_for(&g("G")).enabled);
    assert_eq!(l.get(&key("I1")).unwrap().status(), EventStatus::Expired);
}

#[test]
fn settle_marks_processing_events_of_the_group() {
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
    l.apply(&event("I2", A, 0, &["q1"]), g("OTHER"), t(1));
    let touched = l.settle_group(&g("G"), Settle::Applied, None, t(2));
    assert_eq!(touched, vec![key("I1")]);
    assert_eq!(l.get(&key("I1")).unwrap().status(), EventStatus::Applied);
    assert_eq!(l.get(&key("I2")).unwrap().status(), EventStatus::Processing);
    l.settle_group(
        &g("OTHER"),
        Settle::Failed("403 missing permission".into()),
        None,
        t(3),
    );
    let i2 = l.get(&key("I2")).unwrap();
    assert_eq!(i2.status(), EventStatus::Failed);
    assert_eq!(
        i2.latest().unwrap().reason.as_deref(),
        Some("403 missing permission")
    );
}

#[test]
fn closed_incidents_are_pruned_past_retention() {
    let mut l = Ledger::new(Retention {
        closed_seconds: 100,
        max_closed: 2,
        ..Retention::default()
    });
    for i in 0..5 {
        l.apply(&event(&format!("I{i}"), R, i, &[]), g("G"), t(i));
    }
    l.prune(t(5));
    assert_eq!(l.len(), 2);
    l.apply(&event("OPEN", A, 10, &["q"]), g("G"), t(10));
    l.apply(&event("LATE", R, 500, &[]), g("G"), t(500));
    l.prune(t(500));
    // The open incident is kept whatever its age; old closed ones go.
    assert!(l.get(&key("OPEN")).is_some());
    assert!(l.get(&key("I4")).is_none());
}

#[test]
fn a_flood_of_unique_incidents_is_capped_and_visible() {
    let mut l = Ledger::new(Retention {
        max_open: 3,
        ..Retention::default()
    });
    for i in 0..3 {
        assert_eq!(
            l.apply(&event(&format!("I{i}"), A, 0, &["q"]), g("G"), t(1)),
            Applied::Opened
        );
    }
    assert_eq!(
        l.apply(&event("I3", A, 0, &["q"]), g("G"), t(1)),
        Applied::Full
    );
    let inc = l.get(&key("I3")).unwrap();
    assert_eq!(inc.status(), EventStatus::Failed);
    // Refused, never shown as resolved (RELIABILITY.md, hostile senders, #2).
    assert_eq!(inc.state, IncidentState::Refused);
    assert_eq!(serde_json::to_value(inc).unwrap()["state"], "REFUSED");
    assert!(inc
        .latest()
        .unwrap()
        .reason
        .as_deref()
        .unwrap()
        .contains("3 incidents are already open"));
    assert_eq!(l.desired_for(&g("G")).incidents.len(), 3);
    // Events for incidents already open still count, and a resolution frees a slot.
    assert_eq!(
        l.apply(&event("I0", R, 5, &[]), g("G"), t(6)),
        Applied::Resolved
    );
    assert_eq!(
        l.apply(&event("I4", A, 6, &["q"]), g("G"), t(7)),
        Applied::Opened
    );
}

#[test]
fn applying_events_bounds_closed_incidents_without_a_timer() {
    let mut l = Ledger::new(Retention {
        max_closed: 100,
        ..Retention::default()
    });
    for i in 0..10_000 {
        l.apply(&event(&format!("C{i}"), R, 0, &[]), g("G"), t(1));
        assert!(l.len() <= 100 + 100 / 8 + 17, "{} at {i}", l.len());
    }
    assert!(l.take_dropped().len() >= 10_000 - 130);
    assert!(l.take_dropped().is_empty());
}

#[test]
fn incidents_serialise_for_the_status_endpoint() {
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
    let v = serde_json::to_value(l.get(&key("I1")).unwrap()).unwrap();
    assert_eq!(v["correlationId"], "I1");
    assert_eq!(v["source"], "canonical");
    assert_eq!(v["state"], "OPEN");
    assert_eq!(v["routingMode"], "EMERGENCY_ACTIVE");
    assert_eq!(v["targetQueueIds"][0], "q1");
    assert_eq!(v["events"][0]["status"], "PROCESSING");
    assert!(v.get("seq").is_none());
}

#[test]
fn a_status_poll_resolves_an_open_incident_after_its_newest_event() {
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
    let group = l.resolve_by_poll(&key("I1"), "PagerDuty: resolved".into(), t(300));
    assert_eq!(group, Some(g("G")));
    assert!(!l.desired_for(&g("G")).enabled);
    let inc = l.get(&key("I1")).unwrap();
    assert_eq!(inc.state, IncidentState::Resolved);
    let e = inc.latest().unwrap();
    assert_eq!(e.routing_mode, R);
    assert_eq!(e.via, Some(Via::StatusPoll));
    assert_eq!(e.detail.as_deref(), Some("PagerDuty: resolved"));
    assert_eq!(e.timestamp, t(300));
    assert_eq!(e.status, EventStatus::Processing);
    let shown = serde_json::to_value(inc).unwrap();
    assert_eq!(shown["events"][1]["via"], "STATUS_POLL");
    // Once resolved, the poll has nothing to do.
    assert_eq!(l.resolve_by_poll(&key("I1"), "again".into(), t(301)), None);
    assert_eq!(l.expire(t(10_000)), vec![]);
    // A reopening the tool sends later still wins.
    assert_eq!(
        l.apply(&event("I1", A, 400, &["q1"]), g("G"), t(401)),
        Applied::Opened
    );
    assert!(l.desired_for(&g("G")).enabled);
}

#[test]
fn a_status_poll_resolution_is_newer_than_a_future_dated_event() {
    let mut l = Ledger::default();
    // Dated 99 s ahead of its receipt: it counts as received.
    let mut future = event("I1", A, 100, &["q1"]);
    future.received_ms = t(1).timestamp_millis();
    l.apply(&future, g("G"), t(1));
    assert_eq!(l.get(&key("I1")).unwrap().last_event_at, t(1));
    l.resolve_by_poll(&key("I1"), "done".into(), t(50));
    let e = l.get(&key("I1")).unwrap().latest().unwrap().clone();
    assert_eq!(e.routing_mode, R);
    assert_eq!(e.timestamp, t(50));
    // A redelivered activation is older: it stays resolved.
    assert_eq!(l.apply(&future, g("G"), t(60)), Applied::Duplicate);
    assert!(!l.desired_for(&g("G")).enabled);
}

#[test]
fn persisted_incidents_are_restored_unless_known_or_expired() {
    let mut before = Ledger::default();
    before.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
    before.apply(&event("I2", A, 0, &["q2"]), g("G"), t(1));
    let doc = crate::recovery::decode(&crate::recovery::encode(
        &g("G"),
        &before.open_incidents_of(&g("G")),
    ))
    .unwrap();

    let mut after = Ledger::default();
    // I2's resolution arrived before the rows were read: it decides.
    after.apply(&event("I2", R, 10, &[]), g("G"), t(11));
    let restored: Vec<_> = doc
        .o
        .iter()
        .filter_map(|p| after.restore(p.open().unwrap(), doc.g.clone(), t(12)))
        .collect();
    assert_eq!(restored, vec![key("I1")]);
    let d = after.desired_for(&g("G"));
    assert!(d.enabled);
    assert_eq!(d.incidents, vec![key("I1")]);
    let inc = after.get(&key("I1")).unwrap();
    assert_eq!(inc.expires_at, Some(t(3600)));
    assert_eq!(inc.events[0].via, Some(Via::Recovery));
    // The resolution webhook for a rebuilt incident still resolves it.
    assert_eq!(
        after.apply(&event("I1", R, 20, &[]), g("G"), t(21)),
        Applied::Resolved
    );
    assert!(!after.desired_for(&g("G")).enabled);
    // Nothing expired is restored.
    let mut late = Ledger::default();
    assert_eq!(
        late.restore(doc.o[0].open().unwrap(), g("G"), t(3600)),
        None
    );
    assert!(late.is_empty());
}

/// A synthetic incident `key`, adopted at `now` until `expires_at`.
pub(super) fn synthetic(
    key: &IncidentKey,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> OpenIncident {
    OpenIncident {
        key: key.clone(),
        incident_type: IncidentType::parse("RECOVERED_ROUTING").unwrap(),
        queues: Vec::new(),
        priority: 3,
        timestamp: now,
        expires_at,
        ttl_seconds: 3600,
    }
}

#[test]
fn an_adopted_group_stays_on_until_its_synthetic_incident_expires() {
    let mut l = Ledger::default();
    let k = crate::recovery::adopted_key(&g("G")).unwrap();
    let adopted = l.adopt(
        synthetic(&k, t(100), t(0)),
        g("G"),
        "found enabled by emr-edge".into(),
        t(0),
    );
    assert_eq!(adopted, Some(k.clone()));
    assert!(l.desired_for(&g("G")).enabled);
    assert_eq!(l.get(&k).unwrap().events[0].via, Some(Via::Adopted));
    // Adopting again while it is open does nothing.
    assert_eq!(
        l.adopt(synthetic(&k, t(200), t(1)), g("G"), "x".into(), t(1)),
        None
    );
    assert_eq!(l.expire(t(100)), vec![k.clone()]);
    assert!(!l.desired_for(&g("G")).enabled);
    assert_eq!(l.get(&k).unwrap().state, IncidentState::Expired);
    // Expired already: nothing to adopt.
    assert_eq!(
        l.adopt(synthetic(&k, t(100), t(100)), g("G"), "x".into(), t(100)),
        None
    );
}

#[test]
fn open_incidents_of_a_group_are_most_urgent_first() {
    let mut l = Ledger::default();
    l.apply(&event("LOW", A, 0, &["q"]), g("G"), t(1));
    let mut urgent = event("HIGH", A, 1, &["q"]);
    urgent.event.priority = 1;
    l.apply(&urgent, g("G"), t(2));
    l.apply(&event("OTHER", A, 2, &["q"]), g("H"), t(3));
    let ids: Vec<&str> = l
        .open_incidents_of(&g("G"))
        .iter()
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(ids, ["HIGH", "LOW"]);
}

// ---- hostile senders with a valid credential (RELIABILITY.md) ----------------------

fn keyed(source: Source, id: &str) -> IncidentKey {
    IncidentKey {
        source,
        id: CorrelationId::parse(id).unwrap(),
    }
}

fn from(source: Source, id: &str, mode: RoutingMode, ts: i64, queues: &[&str]) -> QueuedEvent {
    let mut e = event(id, mode, ts, queues);
    e.event.source = source;
    e
}

#[test]
fn a_thousand_incidents_of_fifty_long_queues_keep_a_bounded_list() {
    let mut l = Ledger::default();
    let long = |i: usize, j: usize| format!("{i:04}-{j:02}-{}", "q".repeat(120));
    for i in 0..1000 {
        let queues: Vec<String> = (0..50).map(|j| long(i, j)).collect();
        let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
        l.apply(&event(&format!("I{i}"), A, 0, &queues), g("G"), t(1));
    }
    let d = l.desired_for(&g("G"));
    assert_eq!(d.queues.len(), MAX_GROUP_QUEUES);
    assert_eq!(d.queues_total, 50_000);
    assert_eq!(d.queues[0].as_str(), long(0, 0));
    assert_eq!(d.queues[99].as_str(), long(1, 49));
    assert_eq!(d.incidents.len(), 1000);
    // Resolving the first moves the next incident's queues up.
    l.apply(&event("I0", R, 5, &[]), g("G"), t(6));
    let d = l.desired_for(&g("G"));
    assert_eq!(d.queues[0].as_str(), long(1, 0));
    assert_eq!(d.queues_total, 49_950);
}

#[test]
fn a_future_dated_event_does_not_outrank_what_arrives_after_it() {
    // Issue 12, finding 8: a resolution dated 290 s ahead (inside the
    // allowed skew) pinned the incident; a real reopening 5 s later was
    // superseded and never looked at again.
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
    let mut ahead = event("I1", R, 300, &[]);
    ahead.received_ms = t(10).timestamp_millis();
    assert_eq!(l.apply(&ahead, g("G"), t(10)), Applied::Resolved);
    let mut reopen = event("I1", A, 15, &["q1"]);
    reopen.received_ms = t(15).timestamp_millis();
    assert_eq!(l.apply(&reopen, g("G"), t(15)), Applied::Opened);
    assert!(l.desired_for(&g("G")).enabled);
    // The same resolution again is still a duplicate, not a new event.
    assert_eq!(l.apply(&ahead, g("G"), t(16)), Applied::Duplicate);
    // Its expiry counts from when it was received, too.
    let mut short = event("I2", A, 290, &["q2"]);
    short.event.ttl_seconds = 60;
    short.received_ms = t(20).timestamp_millis();
    l.apply(&short, g("G"), t(20));
    assert_eq!(l.get(&key("I2")).unwrap().expires_at, Some(t(80)));
}

#[test]
fn a_replay_after_the_incident_was_pruned_does_not_reopen_it() {
    // Issue 12, finding 5: another source's flood of resolutions pushed a
    // resolved PagerDuty incident out of the ledger, and a replay of its
    // captured trigger reopened it.
    let mut l = Ledger::new(Retention {
        max_closed: 50,
        ..Retention::default()
    });
    let pd = keyed(Source::Pagerduty, "Q1");
    l.apply(&from(Source::Pagerduty, "Q1", A, 0, &["q1"]), g("G"), t(1));
    l.apply(&from(Source::Pagerduty, "Q1", R, 10, &[]), g("G"), t(11));
    l.settle_group(&g("G"), Settle::Applied, None, t(12));
    for i in 0..2_230 {
        l.apply(
            &from(Source::Alertmanager, &format!("fp{i}"), R, 20, &[]),
            g("G"),
            t(21),
        );
    }
    l.settle_group(&g("G"), Settle::Applied, None, t(22));
    l.prune(t(23));
    // Fair pruning: the flooding source lost its own records first.
    assert!(l.get(&pd).is_some(), "pruned for another source's flood");
    // Even once it is pruned, its tombstone stops the replay.
    let mut l = Ledger::new(Retention {
        max_closed: 0,
        ..Retention::default()
    });
    l.apply(&from(Source::Pagerduty, "Q1", A, 0, &["q1"]), g("G"), t(1));
    l.apply(&from(Source::Pagerduty, "Q1", R, 10, &[]), g("G"), t(11));
    l.settle_group(&g("G"), Settle::Applied, None, t(12));
    assert_eq!(l.prune(t(13)), vec![pd.clone()]);
    assert_eq!(l.tombstones_of(Source::Pagerduty), 1);
    let replay = from(Source::Pagerduty, "Q1", A, 0, &["q1"]);
    assert_eq!(l.apply(&replay, g("G"), t(100)), Applied::Stale);
    assert!(!l.desired_for(&g("G")).enabled);
    let inc = l.get(&pd).unwrap();
    assert_eq!(inc.state, IncidentState::Resolved);
    assert_eq!(inc.status(), EventStatus::Superseded);
    assert!(inc
        .latest()
        .unwrap()
        .reason
        .as_deref()
        .unwrap()
        .contains("replay"));
    // A genuine reopening, newer than the resolution, still opens it.
    l.prune(t(101));
    assert_eq!(
        l.apply(
            &from(Source::Pagerduty, "Q1", A, 200, &["q1"]),
            g("G"),
            t(201)
        ),
        Applied::Opened
    );
    assert!(l.desired_for(&g("G")).enabled);
    // Tombstones go once the replay window (and skew) is over.
    let mut l = Ledger::new(Retention {
        max_closed: 0,
        tombstone_seconds: 1000,
        ..Retention::default()
    });
    l.apply(&from(Source::Pagerduty, "Q1", R, 0, &[]), g("G"), t(1));
    l.settle_group(&g("G"), Settle::Applied, None, t(1));
    l.prune(t(2));
    assert_eq!(l.tombstones_of(Source::Pagerduty), 1);
    l.prune(t(1003));
    assert_eq!(l.tombstones_of(Source::Pagerduty), 0);
}

#[test]
fn open_incidents_are_counted_per_source() {
    let mut l = Ledger::default();
    l.apply(
        &from(Source::Alertmanager, "a1", A, 0, &["q"]),
        g("G"),
        t(1),
    );
    l.apply(
        &from(Source::Alertmanager, "a2", A, 0, &["q"]),
        g("G"),
        t(1),
    );
    l.apply(&from(Source::Pagerduty, "a1", A, 0, &["q"]), g("G"), t(1));
    assert_eq!(l.open_of(Source::Alertmanager), 2);
    assert_eq!(l.open_of(Source::Pagerduty), 1);
    assert_eq!(l.open_of(Source::Canonical), 0);
    l.apply(&from(Source::Alertmanager, "a1", R, 5, &[]), g("G"), t(6));
    assert_eq!(l.open_of(Source::Alertmanager), 1);
    l.expire(t(4000));
    assert_eq!(l.open_of(Source::Alertmanager), 0);
    assert_eq!(l.open_of(Source::Pagerduty), 0);
    assert_eq!(l.open_len(), 0);
}

#[test]
fn an_incident_moved_to_another_group_leaves_the_first() {
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
    l.apply(&event("I1", A, 5, &["q2"]), g("H"), t(6));
    assert_eq!(l.take_left(), vec![g("G")]);
    assert!(l.take_left().is_empty());
    assert!(!l.desired_for(&g("G")).enabled);
    let h = l.desired_for(&g("H"));
    assert!(h.enabled);
    assert_eq!(h.queues[0].as_str(), "q2");
}

#[test]
fn a_poll_that_says_open_renews_the_expiry_in_steps() {
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(0));
    let two_polls = chrono::Duration::seconds(60);
    // A quarter of the ttl has not passed: the row is not rewritten for it.
    assert_eq!(l.renew(&key("I1"), two_polls, t(600)), None);
    assert_eq!(l.get(&key("I1")).unwrap().expires_at, Some(t(3600)));
    // Past a quarter: `ttl` after the poll.
    assert_eq!(l.renew(&key("I1"), two_polls, t(900)), Some(g("G")));
    assert_eq!(l.get(&key("I1")).unwrap().expires_at, Some(t(4500)));
    assert_eq!(l.next_expiry(), Some(t(4500)));
    // Its first deadline passes; the renewal holds it open.
    assert!(l.expire(t(3600)).is_empty());
    assert!(l.desired_for(&g("G")).enabled);
    // No more polls say open: it lapses `ttl` after the last that did.
    assert_eq!(l.expire(t(4500)), vec![key("I1")]);
    assert_eq!(l.renew(&key("I1"), two_polls, t(4600)), None);
}

#[test]
fn a_renewal_never_comes_closer_than_two_poll_periods() {
    let mut q = event("I1", A, 0, &["q1"]);
    q.event.ttl_seconds = 60;
    let mut l = Ledger::default();
    l.apply(&q, g("G"), t(0));
    assert_eq!(
        l.renew(&key("I1"), chrono::Duration::seconds(120), t(50)),
        Some(g("G"))
    );
    assert_eq!(l.get(&key("I1")).unwrap().expires_at, Some(t(170)));
}

#[test]
fn a_resolution_keeps_the_expiry_it_had() {
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(0));
    l.apply(&event("I1", R, 100, &[]), g("G"), t(100));
    assert_eq!(l.get(&key("I1")).unwrap().expires_at, Some(t(3600)));
}

#[test]
fn a_resolution_of_an_incident_never_open_here_says_so() {
    let mut l = Ledger::default();
    assert_eq!(
        l.apply(&event("I9", R, 0, &[]), g("G"), t(0)),
        Applied::ResolvedUnknown
    );
    let inc = l.get(&key("I9")).unwrap();
    assert_eq!(inc.expires_at, None);
    let e = inc.latest().unwrap();
    assert_eq!(e.status, EventStatus::Ignored);
    assert!(e.reason.as_deref().unwrap().contains("never open here"));
    let v = serde_json::to_value(inc).unwrap();
    assert!(v.get("expiresAt").is_none(), "{v}");
    assert_eq!(v["events"][0]["status"], "IGNORED");
}

#[test]
fn a_release_keeps_its_detail_on_the_status() {
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(0));
    let mut q = event("I1", R, 10, &[]);
    q.event.detail = Some("released: no rule matches any more".into());
    assert_eq!(l.apply(&q, g("G"), t(10)), Applied::Resolved);
    assert!(!l.desired_for(&g("G")).enabled);
    let e = l.get(&key("I1")).unwrap().latest().unwrap().clone();
    assert_eq!(
        e.detail.as_deref(),
        Some("released: no rule matches any more")
    );
}

#[test]
fn the_same_activation_again_renews_an_open_incident() {
    let mut l = Ledger::default();
    let q = event("I1", A, 0, &["q1"]);
    l.apply(&q, g("G"), t(0));
    // Soon after: a duplicate, nothing changes.
    assert_eq!(l.apply(&q, g("G"), t(60)), Applied::Duplicate);
    assert_eq!(l.get(&key("I1")).unwrap().expires_at, Some(t(3600)));
    // Alertmanager's repeat, half a ttl later: its ttl runs again.
    assert_eq!(l.apply(&q, g("G"), t(1800)), Applied::Renewed);
    assert_eq!(l.get(&key("I1")).unwrap().expires_at, Some(t(5400)));
    assert!(l.expire(t(3600)).is_empty());
    // Once closed, a replay renews nothing.
    l.apply(&event("I1", R, 4000, &[]), g("G"), t(4000));
    assert_eq!(l.apply(&q, g("G"), t(4100)), Applied::Duplicate);
}

#[test]
fn another_replicas_settlement_settles_exactly_the_events_it_names() {
    let mut l = Ledger::default();
    l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
    l.apply(&event("I2", A, 0, &["q2"]), g("G"), t(1));
    let received = |l: &Ledger, id: &str| {
        l.get(&key(id))
            .unwrap()
            .events
            .last()
            .unwrap()
            .received_at
            .timestamp_millis()
    };
    let i1 = received(&l, "I1");
    // I2 has a newer event than the one the leader settled.
    l.apply(&event("I2", R, 5, &[]), g("G"), t(6));
    let settled = l.settle_events(
        &[(key("I1"), i1), (key("I2"), i1), (key("NOPE"), i1)],
        Settle::Applied,
        None,
        t(7),
    );
    assert_eq!(settled, vec![key("I1")]);
    assert_eq!(l.get(&key("I1")).unwrap().status(), EventStatus::Applied);
    assert_eq!(l.get(&key("I2")).unwrap().status(), EventStatus::Processing);
    // Again: nothing changes.
    assert!(l
        .settle_events(&[(key("I1"), i1)], Settle::Failed("x".into()), None, t(8))
        .is_empty());
    assert_eq!(l.get(&key("I1")).unwrap().status(), EventStatus::Applied);
}
