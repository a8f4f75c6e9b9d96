use proptest::prelude::*;

use super::tests::{event, synthetic, t};
use super::*;

fn arb_events() -> impl Strategy<Value = Vec<(u8, bool, i64)>> {
    proptest::collection::vec((0u8..4, any::<bool>(), 0i64..50), 1..20)
}

fn build(evs: &[(u8, bool, i64)]) -> Vec<QueuedEvent> {
    evs.iter()
        .map(|(id, active, ts)| {
            let mode = if *active {
                RoutingMode::Active
            } else {
                RoutingMode::Resolved
            };
            event(&format!("I{id}"), mode, *ts, &[&format!("q{id}")])
        })
        .collect()
}

proptest! {
    /// Any arrival order of the same events gives the same desired
    /// enabled flag and the same open incidents.
    #[test]
    fn order_does_not_matter(evs in arb_events(), seed in any::<u64>()) {
        let events = build(&evs);
        let g = GroupId::parse("G").unwrap();
        let mut a = Ledger::default();
        for e in &events { a.apply(e, g.clone(), t(100)); }
        let mut shuffled = events.clone();
        // A deterministic shuffle from the seed.
        let n = shuffled.len();
        let mut s = seed;
        for i in (1..n).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut b = Ledger::default();
        for e in &shuffled { b.apply(e, g.clone(), t(100)); }
        let (da, db) = (a.desired_for(&g), b.desired_for(&g));
        prop_assert_eq!(da.enabled, db.enabled);
        let mut ia = da.incidents.clone(); ia.sort();
        let mut ib = db.incidents.clone(); ib.sort();
        prop_assert_eq!(ia, ib);
    }

    /// Expiry is monotonic: once an incident has expired it stays closed
    /// as time goes on, and what is open at a later time was open (and
    /// unexpired) at every earlier time of the same run.
    #[test]
    fn expiry_is_monotonic(
        ttls in proptest::collection::vec(60u32..600, 1..12),
        steps in proptest::collection::vec(1i64..120, 1..20),
    ) {
        let g = GroupId::parse("G").unwrap();
        let mut l = Ledger::default();
        for (i, ttl) in ttls.iter().enumerate() {
            let mut e = event(&format!("I{i}"), RoutingMode::Active, 0, &["q"]);
            e.event.ttl_seconds = *ttl;
            l.apply(&e, g.clone(), t(0));
        }
        let mut now = 0;
        let mut closed: std::collections::BTreeSet<String> = Default::default();
        for step in steps {
            now += step;
            for k in l.expire(t(now)) {
                prop_assert!(closed.insert(k.to_string()), "{} expired twice", k);
            }
            for inc in l.incidents() {
                let open = inc.state == IncidentState::Open;
                prop_assert_eq!(open, inc.expires_at.is_some_and(|e| e > t(now)), "{} at {}", inc.id, now);
                prop_assert_eq!(!open, closed.contains(&format!("canonical:{}", inc.id)));
            }
            prop_assert_eq!(l.desired_for(&g).enabled, closed.len() < ttls.len());
        }
    }

    /// Replaying any event changes nothing.
    #[test]
    fn replay_changes_nothing(evs in arb_events(), pick in any::<prop::sample::Index>()) {
        let events = build(&evs);
        let g = GroupId::parse("G").unwrap();
        let mut l = Ledger::default();
        for e in &events { l.apply(e, g.clone(), t(100)); }
        let before = l.desired_for(&g).clone();
        let again = pick.get(&events);
        l.apply(again, g.clone(), t(101));
        prop_assert_eq!(&before, l.desired_for(&g));
    }

    /// The index pruning takes from always holds exactly the closed,
    /// settled incidents at their `updated_at`, whatever happens to them
    /// — events, settles, expiry, status polls, adoption, pruning.
    #[test]
    fn the_prunable_index_follows_every_change(
        ops in proptest::collection::vec((0u8..7, 0u8..12, any::<bool>(), 0i64..20), 1..80),
    ) {
        let g = GroupId::parse("G").unwrap();
        let mut l = Ledger::new(Retention { closed_seconds: 15, max_closed: 4, max_open: 6, ..Retention::default() });
        let mut now = 0i64;
        for (op, id, flag, dt) in ops {
            now += dt;
            let key = IncidentKey {
                source: crate::event::Source::Canonical,
                id: crate::event::CorrelationId::parse(&format!("I{id}")).unwrap(),
            };
            match op {
                0 | 1 => {
                    let mode = if flag { RoutingMode::Active } else { RoutingMode::Resolved };
                    let mut e = event(&format!("I{id}"), mode, now, &["q"]);
                    e.event.ttl_seconds = 30;
                    l.apply(&e, g.clone(), t(now));
                }
                2 => {
                    let outcome = if flag { Settle::Applied } else { Settle::Failed("x".into()) };
                    l.settle_group(&g, outcome, None, t(now));
                }
                3 => { l.expire(t(now)); }
                4 => { l.resolve_by_poll(&key, "resolved".into(), t(now)); }
                5 => { l.adopt(synthetic(&key, t(now + 40), t(now)), g.clone(), "adopted".into(), t(now)); }
                _ => { l.prune(t(now)); }
            }
            let expected: BTreeSet<(DateTime<Utc>, IncidentKey)> = l
                .incidents
                .iter()
                .filter(|(_, i)| i.is_prunable())
                .map(|(k, i)| (i.updated_at, k.clone()))
                .collect();
            prop_assert_eq!(&l.prunable.all(), &expected);
        }
    }

    /// Each group's desired state, kept up to date incident by incident,
    /// is always what the rule gives from scratch: the open incidents in
    /// priority then arrival order, their queues without repeats; and the
    /// open counts per source are right — whatever happens: events moving
    /// incidents between groups and priorities, expiry, polls, adoption,
    /// pruning.
    #[test]
    fn the_group_index_follows_every_change(
        ops in proptest::collection::vec(
            (0u8..7, 0u8..10, any::<bool>(), 0i64..20, 1u8..4, 0u8..3, proptest::collection::vec(0u8..6, 0..4)),
            1..80,
        ),
    ) {
        let groups = [GroupId::parse("G").unwrap(), GroupId::parse("H").unwrap()];
        let mut l = Ledger::new(Retention { closed_seconds: 15, max_closed: 4, max_open: 6, ..Retention::default() });
        let mut now = 0i64;
        for (op, id, flag, dt, priority, group, queues) in ops {
            now += dt;
            let source = if id % 2 == 0 { Source::Canonical } else { Source::Pagerduty };
            let key = IncidentKey {
                source,
                id: crate::event::CorrelationId::parse(&format!("I{id}")).unwrap(),
            };
            let g = groups[usize::from(group % 2)].clone();
            match op {
                0..=2 => {
                    let mode = if flag { RoutingMode::Active } else { RoutingMode::Resolved };
                    let queues: Vec<String> = queues.iter().map(|q| format!("q{q}")).collect();
                    let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
                    let mut e = event(&format!("I{id}"), mode, now, &queues);
                    e.event.source = source;
                    e.event.ttl_seconds = 30;
                    e.event.priority = priority;
                    l.apply(&e, g, t(now));
                }
                3 => { l.expire(t(now)); }
                4 => { l.resolve_by_poll(&key, "resolved".into(), t(now)); }
                5 => { l.adopt(synthetic(&key, t(now + 40), t(now)), g, "adopted".into(), t(now)); }
                _ => { l.prune(t(now)); }
            }
            for g in &groups {
                let mut open: Vec<&Incident> =
                    l.incidents.values().filter(|i| i.is_open() && &i.group == g).collect();
                open.sort_by_key(|i| (i.priority, i.seq));
                let mut queues: Vec<QueueId> = Vec::new();
                for i in &open {
                    for q in &i.queues {
                        if !queues.contains(q) { queues.push(q.clone()); }
                    }
                }
                let d = l.desired_for(g);
                prop_assert_eq!(d.enabled, !open.is_empty());
                prop_assert_eq!(&d.queues, &queues);
                prop_assert_eq!(d.queues_total, queues.len());
                let keys: Vec<IncidentKey> = open.iter().map(|i| i.key()).collect();
                prop_assert_eq!(&d.incidents, &keys);
            }
            for s in [Source::Canonical, Source::Pagerduty] {
                let n = l.incidents.values().filter(|i| i.is_open() && i.source == s).count();
                prop_assert_eq!(l.open_of(s), n);
            }
        }
    }

    /// Pruning drops exactly what a full sort would: every closed
    /// incident past the horizon, and the oldest beyond `max_closed`
    /// (ties by key), never an open one.
    #[test]
    fn prune_drops_the_oldest_closed(
        evs in proptest::collection::vec((0u8..40, any::<bool>(), 0i64..30), 1..120),
        max_closed in 0usize..12,
        closed_seconds in 1i64..40,
        now in 0i64..60,
    ) {
        let g = GroupId::parse("G").unwrap();
        let mut l = Ledger::new(Retention { closed_seconds, max_closed: 10_000, ..Retention::default() });
        for (id, active, at) in &evs {
            let mode = if *active { RoutingMode::Active } else { RoutingMode::Resolved };
            l.apply(&event(&format!("I{id}"), mode, *at, &["q"]), g.clone(), t(*at));
        }
        l.settle_group(&g, Settle::Applied, None, t(30));
        let horizon = t(now) - chrono::Duration::seconds(closed_seconds);
        let mut closed: Vec<(DateTime<Utc>, IncidentKey)> = l
            .incidents
            .iter()
            .filter(|(_, i)| !i.is_open() && i.events.iter().all(|e| e.status.is_terminal()))
            .map(|(k, i)| (i.updated_at, k.clone()))
            .collect();
        closed.sort();
        let excess = closed.len().saturating_sub(max_closed);
        let mut expected: Vec<IncidentKey> = closed
            .into_iter()
            .enumerate()
            .filter(|(i, (at, _))| *i < excess || *at < horizon)
            .map(|(_, (_, k))| k)
            .collect();
        expected.sort();
        let open_before: Vec<IncidentKey> =
            l.incidents.iter().filter(|(_, i)| i.is_open()).map(|(k, _)| k.clone()).collect();
        l.retention.max_closed = max_closed;
        let mut dropped = l.prune(t(now));
        dropped.sort();
        prop_assert_eq!(&dropped, &expected);
        for k in &dropped { prop_assert!(l.get(k).is_none()); }
        for k in &open_before { prop_assert!(l.get(k).is_some()); }
    }
}
