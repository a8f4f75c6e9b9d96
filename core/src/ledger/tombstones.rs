//! What the ledger still knows of closed incidents it has pruned: when each
//! was last heard of. An event that is not newer than that can only be a
//! replay — PagerDuty and Jira sign the body but no time, so a captured
//! delivery stays valid — and must not reopen the incident.
//!
//! A tombstone is 16 bytes of payload: a keyed hash of the incident's key
//! and its last event time. They are kept per source, each source within
//! its own bound, so that one source's flood of closed incidents (an
//! Alertmanager token holder sending thousands of resolutions) can only
//! push out that source's own tombstones (RELIABILITY.md, hostile senders, #5). They last
//! [`super::Retention::tombstone_seconds`]: the replay window plus the
//! future skew, after which the intake refuses such an event by its time.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;

use chrono::{DateTime, Utc};

use crate::event::{IncidentKey, Source};

/// One source's tombstones.
#[derive(Debug, Default)]
struct Graveyard {
    /// Key hash → (last event time, when it was buried), in ms.
    latest: HashMap<u64, (i64, i64)>,
    /// Burials in order (when, key hash): the oldest go first.
    order: VecDeque<(i64, u64)>,
}

impl Graveyard {
    fn pop_oldest(&mut self) {
        if let Some((buried, h)) = self.order.pop_front() {
            // A key buried again since holds a later entry: keep it.
            if self.latest.get(&h).is_some_and(|(_, b)| *b == buried) {
                self.latest.remove(&h);
            }
        }
    }
}

/// Every source's tombstones.
#[derive(Debug)]
pub(super) struct Tombstones {
    /// Keyed per process: nobody can aim ids at one hash.
    hasher: RandomState,
    sources: BTreeMap<Source, Graveyard>,
    max_per_source: usize,
}

impl Tombstones {
    pub(super) fn new(max_per_source: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            sources: BTreeMap::new(),
            max_per_source,
        }
    }

    fn hash(&self, key: &IncidentKey) -> u64 {
        self.hasher.hash_one(key.id.as_str())
    }

    /// Remembers that `key`'s incident, last heard of at `last_event`, left
    /// the ledger at `now`.
    pub(super) fn bury(
        &mut self,
        key: &IncidentKey,
        last_event: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        let h = self.hash(key);
        let (last, buried) = (last_event.timestamp_millis(), now.timestamp_millis());
        let g = self.sources.entry(key.source).or_default();
        let last = g.latest.get(&h).map_or(last, |(l, _)| last.max(*l));
        g.latest.insert(h, (last, buried));
        g.order.push_back((buried, h));
        while g.order.len() > self.max_per_source {
            g.pop_oldest();
        }
    }

    /// When `key`'s incident was last heard of, if it left the ledger.
    pub(super) fn last_event(&self, key: &IncidentKey) -> Option<DateTime<Utc>> {
        let (last, _) = self.sources.get(&key.source)?.latest.get(&self.hash(key))?;
        DateTime::from_timestamp_millis(*last)
    }

    /// `key`'s incident is back in the ledger, which knows better now.
    pub(super) fn lift(&mut self, key: &IncidentKey) {
        let h = self.hash(key);
        if let Some(g) = self.sources.get_mut(&key.source) {
            g.latest.remove(&h);
        }
    }

    /// Forgets tombstones buried before `horizon`.
    pub(super) fn expire(&mut self, horizon: DateTime<Utc>) {
        let horizon = horizon.timestamp_millis();
        for g in self.sources.values_mut() {
            while g.order.front().is_some_and(|(buried, _)| *buried < horizon) {
                g.pop_oldest();
            }
        }
    }

    /// How many `source` holds.
    #[cfg(test)]
    pub(super) fn len(&self, source: Source) -> usize {
        self.sources.get(&source).map_or(0, |g| g.latest.len())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::event::CorrelationId;

    fn key(source: Source, id: &str) -> IncidentKey {
        IncidentKey {
            source,
            id: CorrelationId::parse(id).unwrap(),
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_723_731_721 + s, 0).unwrap()
    }

    #[test]
    fn a_flood_of_one_source_never_evicts_another_sources_tombstones() {
        let mut ts = Tombstones::new(100);
        let pd = key(Source::Pagerduty, "Q1");
        ts.bury(&pd, t(10), t(20));
        for i in 0..5_000 {
            ts.bury(&key(Source::Alertmanager, &format!("fp{i}")), t(30), t(30));
        }
        assert_eq!(ts.last_event(&pd), Some(t(10)));
        assert_eq!(ts.len(Source::Alertmanager), 100);
        // Within a source, the oldest go first.
        assert_eq!(ts.last_event(&key(Source::Alertmanager, "fp0")), None);
        assert_eq!(
            ts.last_event(&key(Source::Alertmanager, "fp4999")),
            Some(t(30))
        );
        // The same id from another source is another incident.
        assert_eq!(ts.last_event(&key(Source::Canonical, "Q1")), None);
    }

    #[test]
    fn tombstones_last_until_the_horizon_and_reburial_keeps_the_latest() {
        let mut ts = Tombstones::new(10);
        let k = key(Source::Jsm, "OPS-1");
        ts.bury(&k, t(5), t(10));
        ts.bury(&k, t(3), t(50));
        assert_eq!(ts.last_event(&k), Some(t(5)));
        // The first burial's turn to go does not take the second.
        ts.expire(t(20));
        assert_eq!(ts.last_event(&k), Some(t(5)));
        ts.expire(t(51));
        assert_eq!(ts.last_event(&k), None);
        ts.bury(&k, t(60), t(60));
        ts.lift(&k);
        assert_eq!(ts.last_event(&k), None);
    }
}
