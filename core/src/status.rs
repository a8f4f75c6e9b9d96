//! The status board: what `GET /emr/status/{id}` and `GET /emr/state` read.
//!
//! The singleton owns the ledger; worker threads answer status requests. The
//! singleton publishes each incident's view into one of a fixed number of
//! shared-data buckets (by a hash of its id), rewriting only the buckets whose
//! incidents changed. The bucket count and per-bucket cap are fixed, and the
//! ledger's retention bounds what is published: shared data stays bounded.
//!
//! An id is only unique within its source (a PagerDuty incident and an
//! Alertmanager alert may share one), so every entry carries its source and
//! a lookup may name it ([`find`]). The per-bucket cap is per source: ids
//! can be chosen to land in one bucket, and a source's flood must not push
//! another source's incidents off the board (RELIABILITY.md, hostile senders, #9).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::event::{IncidentKey, Source};
use crate::ledger::{Incident, Ledger};
use crate::store::{ensure_key, SharedStore, StoreError};

pub const STATUS_BUCKETS: u16 = 1024;
/// Incidents of one source kept per bucket; the most recently updated win.
pub const MAX_PER_BUCKET: usize = 32;
/// Where the singleton publishes the per-group state view.
pub const STATE_KEY: &str = "emr.state";

/// The bucket an incident id is published in: FNV-1a, folded. Not SHA-256:
/// wasm has no SHA instructions, and the service hashes an id for every
/// event and for every incident the ledger drops (hundreds at a time under
/// a flood), so it was a visible share of its time in Envoy; a cryptographic
/// hash buys nothing here, since anyone can find ids for a bucket of 1,024
/// either way. Not `DefaultHasher` either: its algorithm may change with
/// Rust, and the filters and the service must agree on it even when they
/// run different builds (Envoy can update a filter's module while the
/// bootstrap service keeps running the one it started with).
pub fn bucket_of(id: &str) -> u16 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let h = id
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    // Every bit of the hash counts towards the bucket.
    let folded = (h ^ (h >> 32)) as u32;
    ((folded ^ (folded >> 16)) as u16) % STATUS_BUCKETS
}

fn bucket_key(n: u16) -> String {
    format!("emr.status.{n:03x}")
}

/// Creates every status key and the state key; safe to repeat.
pub fn create_keys(store: &dyn SharedStore) -> Result<(), StoreError> {
    for n in 0..STATUS_BUCKETS {
        ensure_key(store, &bucket_key(n))?;
    }
    ensure_key(store, STATE_KEY)
}

/// Which incidents live in which bucket, and which buckets wait to be
/// republished. Publishing touches only dirty buckets, so its cost does not
/// grow with the ledger; and each incident's JSON is kept until it changes,
/// so a bucket rewritten for one incident does not re-serialise the others.
#[derive(Debug, Default)]
pub struct Board {
    members: BTreeMap<u16, BTreeSet<IncidentKey>>,
    dirty: BTreeSet<u16>,
    /// Buckets that only lost incidents (pruned from the ledger). Under a
    /// flood of unique ids the ledger drops one incident per new one, which
    /// would double the buckets written; these wait for the next sweep
    /// ([`Board::start_sweep`]), or a change of their own.
    shrunk: BTreeSet<u16>,
    /// The sweep under way: written a few at a time by
    /// [`Board::publish_swept`], so that a sweep of every bucket (the usual
    /// case under a flood) is not one long stall of the service.
    sweep: BTreeSet<u16>,
    /// Each published incident's JSON, until [`Board::mark`] says it changed.
    cache: HashMap<IncidentKey, Vec<u8>>,
}

impl Board {
    /// Notes that `key`'s incident changed (or was created).
    pub fn mark(&mut self, key: &IncidentKey) {
        let n = bucket_of(key.id.as_str());
        self.cache.remove(key);
        self.members.entry(n).or_default().insert(key.clone());
        self.dirty.insert(n);
    }

    /// Notes that the ledger dropped `key`'s incident: its bucket loses it
    /// in the next sweep, or sooner if the bucket is rewritten for another
    /// reason.
    pub fn forget(&mut self, key: &IncidentKey) {
        let n = bucket_of(key.id.as_str());
        self.cache.remove(key);
        if let Some(members) = self.members.get_mut(&n) {
            if members.remove(key) {
                self.shrunk.insert(n);
            }
        }
    }

    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Whether some bucket still shows an incident the ledger dropped.
    pub fn has_removals(&self) -> bool {
        !self.shrunk.is_empty() || !self.sweep.is_empty()
    }

    /// Whether a sweep is under way.
    pub fn is_sweeping(&self) -> bool {
        !self.sweep.is_empty()
    }

    /// Starts a sweep of the buckets that have only lost incidents so far.
    /// Buckets that lose one after this wait for the next sweep: under a
    /// flood every bucket loses one every second or so, and one write then
    /// serves all its losses.
    pub fn start_sweep(&mut self) {
        let mut shrunk = std::mem::take(&mut self.shrunk);
        self.sweep.append(&mut shrunk);
    }

    /// Rewrites every dirty bucket from the ledger, and none of a sweep's.
    pub fn publish(
        &mut self,
        ledger: &Ledger,
        store: &dyn SharedStore,
    ) -> Result<usize, StoreError> {
        self.publish_swept(ledger, store, 0)
    }

    /// Rewrites the dirty buckets and up to `limit` more of the sweep's. The
    /// singleton is the only writer, so plain writes are safe. Returns the
    /// number of buckets written.
    pub fn publish_swept(
        &mut self,
        ledger: &Ledger,
        store: &dyn SharedStore,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut buckets = std::mem::take(&mut self.dirty);
        for _ in 0..limit {
            let Some(n) = self.sweep.pop_first() else {
                break;
            };
            buckets.insert(n);
        }
        self.write(buckets, ledger, store)
    }

    fn write(
        &mut self,
        buckets: BTreeSet<u16>,
        ledger: &Ledger,
        store: &dyn SharedStore,
    ) -> Result<usize, StoreError> {
        let mut written = 0;
        let mut body = Vec::new();
        let mut pending = buckets.into_iter();
        while let Some(n) = pending.next() {
            self.shrunk.remove(&n);
            self.sweep.remove(&n);
            let members = self.members.entry(n).or_default();
            // Incidents the ledger pruned leave the bucket.
            members.retain(|k| ledger.get(k).is_some());
            let mut incidents: Vec<(&IncidentKey, &Incident)> = members
                .iter()
                .filter_map(|k| ledger.get(k).map(|i| (k, i)))
                .collect();
            incidents.sort_by_key(|(_, i)| std::cmp::Reverse(i.updated_at));
            let mut shown: BTreeMap<Source, usize> = BTreeMap::new();
            incidents.retain(|(k, _)| {
                let n = shown.entry(k.source).or_default();
                *n += 1;
                *n <= MAX_PER_BUCKET
            });
            // The same bytes `serde_json::to_vec(&incidents)` would give.
            body.clear();
            body.push(b'[');
            for (i, (key, incident)) in incidents.into_iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                // Looked up before the key is cloned: most are cached.
                match self.cache.get(key) {
                    Some(json) => body.extend_from_slice(json),
                    None => {
                        let mut json = serde_json::to_vec(incident)
                            .map_err(|e| StoreError::Host(e.to_string()))?;
                        body.extend_from_slice(&json);
                        // Kept for every incident in the ledger (a few
                        // thousand under a flood): not twice its size.
                        json.shrink_to_fit();
                        self.cache.insert(key.clone(), json);
                    }
                }
            }
            body.push(b']');
            if let Err(e) = store.set(&bucket_key(n), &body, None) {
                // Keep it (and those not reached) dirty so the next publish
                // retries them.
                self.dirty.insert(n);
                self.dirty.extend(pending);
                return Err(e);
            }
            written += 1;
        }
        // Entries of incidents that left every bucket go too: the cache
        // never outgrows what is published.
        if self.cache.len() > ledger.len() {
            self.cache.retain(|k, _| ledger.get(k).is_some());
        }
        Ok(written)
    }
}

/// What the board shows for an id.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// One incident: its published view.
    One(Value),
    /// Several sources have an incident with this id, and the lookup named
    /// none of them.
    Ambiguous(Vec<Source>),
    Nothing,
}

/// Finds the published view of incident `id`, of `source` when given.
pub fn find(
    store: &dyn SharedStore,
    id: &str,
    source: Option<Source>,
) -> Result<Found, StoreError> {
    let current = store.get(&bucket_key(bucket_of(id)))?;
    let Some(bytes) = current.value.filter(|v| !v.is_empty()) else {
        return Ok(Found::Nothing);
    };
    // Most lookups are for ids the bucket does not hold (the intake asks
    // about every activation beyond its route's share): say so without
    // parsing a bucket that may hold dozens of large incidents. A valid id
    // needs no escaping, so its serialised form is exactly this.
    let needle = format!("\"correlationId\":\"{id}\"");
    if !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
        return Ok(Found::Nothing);
    }
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(Found::Nothing);
    };
    let source_of = |v: &Value| {
        v.get("source")
            .and_then(|s| serde_json::from_value::<Source>(s.clone()).ok())
    };
    let mut matches: Vec<(Option<Source>, Value)> = items
        .into_iter()
        .filter(|v| v.get("correlationId").and_then(Value::as_str) == Some(id))
        .map(|v| (source_of(&v), v))
        .filter(|(s, _)| source.is_none() || *s == source)
        .collect();
    let mut sources: Vec<Source> = matches.iter().filter_map(|(s, _)| *s).collect();
    sources.sort();
    sources.dedup();
    Ok(match (matches.len(), sources.len()) {
        (0, _) => Found::Nothing,
        (_, 0 | 1) => Found::One(matches.swap_remove(0).1),
        _ => Found::Ambiguous(sources),
    })
}

/// The published view of `id` when exactly one source has it (tests).
#[cfg(test)]
pub fn lookup(store: &dyn SharedStore, id: &str) -> Result<Option<Value>, StoreError> {
    Ok(match find(store, id, None)? {
        Found::One(v) => Some(v),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use chrono::DateTime;

    use super::*;
    use crate::event::{
        CorrelationId, GroupId, IncidentEvent, IncidentType, QueuedEvent, RoutingMode, Source,
    };
    use crate::store::MemoryStore;

    /// A store with every key created, an empty ledger and board.
    fn fresh() -> (MemoryStore, Ledger, Board) {
        let store = MemoryStore::new();
        create_keys(&store).unwrap();
        (store, Ledger::default(), Board::default())
    }

    fn ev(id: &str) -> QueuedEvent {
        QueuedEvent {
            event: IncidentEvent {
                source: Source::Canonical,
                correlation_id: CorrelationId::parse(id).unwrap(),
                incident_type: IncidentType::parse("X").unwrap(),
                routing_mode: RoutingMode::Active,
                target_queue_ids: vec![],
                timestamp: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                ttl_seconds: 3600,
                priority: 3,
                group: None,
                detail: None,
                about: None,
            },
            received_ms: 1_700_000_000_000,
            delivery_id: None,
            slot: false,
        }
    }

    #[test]
    fn published_incidents_can_be_looked_up_by_id() {
        let (store, mut ledger, mut board) = fresh();
        let now = DateTime::from_timestamp(1_700_000_001, 0).unwrap();
        for i in 0..500 {
            let id = format!("INC-{i}");
            let q = ev(&id);
            ledger.apply(&q, GroupId::parse("G").unwrap(), now);
            board.mark(&q.event.incident_key());
        }
        assert!(board.is_dirty());
        assert!(board.publish(&ledger, &store).unwrap() > 100);
        assert!(!board.is_dirty());
        let v = lookup(&store, "INC-42").unwrap().unwrap();
        assert_eq!(v["correlationId"], "INC-42");
        assert_eq!(v["state"], "OPEN");
        assert_eq!(lookup(&store, "INC-9999").unwrap(), None);
        // Nothing dirty: nothing written.
        assert_eq!(board.publish(&ledger, &store).unwrap(), 0);
    }

    #[test]
    fn keys_are_fixed_whatever_is_published() {
        let (store, mut ledger, mut board) = fresh();
        let before = store.len();
        let now = DateTime::from_timestamp(1_700_000_001, 0).unwrap();
        for i in 0..2000 {
            let id = format!("I{i}");
            let q = ev(&id);
            ledger.apply(&q, GroupId::parse("G").unwrap(), now);
            board.mark(&q.event.incident_key());
        }
        board.publish(&ledger, &store).unwrap();
        assert_eq!(store.len(), before);
    }

    /// What a bucket held before incidents' JSON was cached: every member
    /// serialised afresh, newest first.
    fn uncached(ledger: &Ledger, id: &str) -> Vec<u8> {
        let n = bucket_of(id);
        let mut incidents: Vec<&Incident> = ledger
            .incidents()
            .filter(|i| bucket_of(i.id.as_str()) == n)
            .collect();
        // The board's members are ordered by key; ties in time keep it.
        incidents.sort_by_key(|i| i.key());
        incidents.sort_by_key(|i| std::cmp::Reverse(i.updated_at));
        incidents.truncate(MAX_PER_BUCKET);
        serde_json::to_vec(&incidents).unwrap()
    }

    #[test]
    fn cached_incidents_publish_the_bytes_a_fresh_serialisation_gives() {
        let (store, mut ledger, mut board) = fresh();
        let g = GroupId::parse("G").unwrap();
        let t = |s: i64| DateTime::from_timestamp(1_700_000_001 + s, 0).unwrap();
        for i in 0..3000 {
            let q = ev(&format!("I{i}"));
            ledger.apply(&q, g.clone(), t(0));
            board.mark(&q.event.incident_key());
        }
        board.publish(&ledger, &store).unwrap();
        // Change some incidents after they were cached: a resolution, and
        // a settle of the group, each marked as the service marks them.
        for i in (0..3000).step_by(7) {
            let mut q = ev(&format!("I{i}"));
            q.event.routing_mode = RoutingMode::Resolved;
            q.event.timestamp = t(5);
            ledger.apply(&q, g.clone(), t(6));
            board.mark(&q.event.incident_key());
        }
        for key in ledger.settle_group(&g, crate::ledger::Settle::Applied, None, t(7)) {
            board.mark(&key);
        }
        board.publish(&ledger, &store).unwrap();
        for i in (0..3000).step_by(13) {
            let id = format!("I{i}");
            let stored = store.get(&bucket_key(bucket_of(&id))).unwrap().value;
            assert_eq!(stored.unwrap(), uncached(&ledger, &id), "{id}");
        }
        let v = lookup(&store, "I7").unwrap().unwrap();
        assert_eq!(v["state"], "RESOLVED");
        assert_eq!(v["events"][1]["status"], "APPLIED");
    }

    #[test]
    fn pruned_incidents_leave_their_bucket_with_the_removal_sweep() {
        let (store, mut ledger, mut board) = fresh();
        let now = DateTime::from_timestamp(1_700_000_001, 0).unwrap();
        let q = ev("GONE-1");
        ledger.apply(&q, GroupId::parse("G").unwrap(), now);
        let key = q.event.incident_key();
        board.mark(&key);
        board.publish(&ledger, &store).unwrap();
        assert!(lookup(&store, "GONE-1").unwrap().is_some());
        // As if the ledger had pruned it.
        let mut empty = Ledger::default();
        std::mem::swap(&mut ledger, &mut empty);
        board.forget(&key);
        assert!(!board.is_dirty());
        assert!(board.has_removals());
        assert_eq!(board.publish(&ledger, &store).unwrap(), 0);
        assert!(lookup(&store, "GONE-1").unwrap().is_some());
        // Nothing is swept before a sweep starts.
        assert_eq!(board.publish_swept(&ledger, &store, 8).unwrap(), 0);
        board.start_sweep();
        assert_eq!(board.publish_swept(&ledger, &store, 8).unwrap(), 1);
        assert!(!board.has_removals());
        assert_eq!(lookup(&store, "GONE-1").unwrap(), None);
        assert_eq!(
            store.get(&bucket_key(bucket_of("GONE-1"))).unwrap().value,
            Some(b"[]".to_vec())
        );
    }

    #[test]
    fn one_sources_flood_into_a_bucket_never_hides_another_sources_incident() {
        let (store, mut ledger, mut board) = fresh();
        let g = GroupId::parse("G").unwrap();
        let t = |s: i64| DateTime::from_timestamp(1_700_000_001 + s, 0).unwrap();
        let mut pd = ev("SHADOW1");
        pd.event.source = Source::Pagerduty;
        ledger.apply(&pd, g.clone(), t(0));
        board.mark(&pd.event.incident_key());
        // Ids chosen to land in SHADOW1's bucket, from another source.
        let target = bucket_of("SHADOW1");
        let mut n = 0;
        for i in 0.. {
            let id = format!("F{i}");
            if bucket_of(&id) != target {
                continue;
            }
            let mut q = ev(&id);
            q.event.source = Source::Alertmanager;
            ledger.apply(&q, g.clone(), t(1 + n));
            board.mark(&q.event.incident_key());
            n += 1;
            if n == 200 {
                break;
            }
        }
        // And one alert with PagerDuty's id, newer.
        let mut shadow = ev("SHADOW1");
        shadow.event.source = Source::Alertmanager;
        ledger.apply(&shadow, g.clone(), t(500));
        board.mark(&shadow.event.incident_key());
        board.publish(&ledger, &store).unwrap();
        let Found::One(v) = find(&store, "SHADOW1", Some(Source::Pagerduty)).unwrap() else {
            panic!("PagerDuty's incident was pushed off the board");
        };
        assert_eq!(v["source"], "pagerduty");
        let Found::One(v) = find(&store, "SHADOW1", Some(Source::Alertmanager)).unwrap() else {
            panic!("the alert is not shown");
        };
        assert_eq!(v["source"], "alertmanager");
        // Unqualified, the id is ambiguous: never the wrong one silently.
        assert_eq!(
            find(&store, "SHADOW1", None).unwrap(),
            Found::Ambiguous(vec![Source::Pagerduty, Source::Alertmanager])
        );
        assert_eq!(
            find(&store, "SHADOW1", Some(Source::Jsm)).unwrap(),
            Found::Nothing
        );
        // The bucket holds at most MAX_PER_BUCKET of each source.
        let stored = store.get(&bucket_key(target)).unwrap().value.unwrap();
        let items: Vec<Value> = serde_json::from_slice(&stored).unwrap();
        assert_eq!(items.len(), 1 + MAX_PER_BUCKET);
    }

    #[test]
    fn ids_spread_over_every_bucket() {
        let mut load = vec![0u32; usize::from(STATUS_BUCKETS)];
        for i in 0..102_400 {
            for id in [format!("INC{i:07}"), format!("PD-{i}-x")] {
                load[usize::from(bucket_of(&id))] += 1;
            }
        }
        // 200 per bucket on average.
        let (min, max) = (load.iter().min().unwrap(), load.iter().max().unwrap());
        assert!(*min > 120 && *max < 300, "{min}..{max}");
    }

    #[test]
    fn the_bucket_of_an_id_never_changes() {
        // The filters and the service may run different builds: a change
        // here makes one look where the other never published.
        let pinned: Vec<u16> = ["INC-1", "CHG0031234", "a"]
            .iter()
            .map(|id| bucket_of(id))
            .collect();
        // Computed apart from this code (FNV-1a 64, folded as above).
        assert_eq!(pinned, [170, 944, 418]);
    }

    #[test]
    fn a_sweep_is_written_a_few_buckets_at_a_time() {
        let (store, mut ledger, mut board) = fresh();
        let g = GroupId::parse("G").unwrap();
        let now = DateTime::from_timestamp(1_700_000_001, 0).unwrap();
        let keys: Vec<IncidentKey> = (0..400)
            .map(|i| {
                let q = ev(&format!("S{i}"));
                ledger.apply(&q, g.clone(), now);
                board.mark(&q.event.incident_key());
                q.event.incident_key()
            })
            .collect();
        board.publish(&ledger, &store).unwrap();
        let mut empty = Ledger::default();
        std::mem::swap(&mut ledger, &mut empty);
        for k in &keys[..300] {
            board.forget(k);
        }
        let shrunk: BTreeSet<u16> = keys[..300]
            .iter()
            .map(|k| bucket_of(k.id.as_str()))
            .collect();
        board.start_sweep();
        // Lost after the sweep started: waits for the next one.
        board.forget(&keys[300]);
        // Changed during the sweep: written now, and not again by the sweep.
        let late = ev("LATE");
        ledger.apply(&late, g.clone(), now);
        board.mark(&late.event.incident_key());
        let mut written = board.publish_swept(&ledger, &store, 100).unwrap();
        assert!(written <= 101, "{written}");
        assert!(lookup(&store, "LATE").unwrap().is_some());
        let mut rounds = 1;
        while board.is_sweeping() {
            written += board.publish_swept(&ledger, &store, 100).unwrap();
            rounds += 1;
        }
        let late_bucket = bucket_of("LATE");
        let expected = shrunk.len() + usize::from(!shrunk.contains(&late_bucket));
        assert_eq!(written, expected);
        // One bucket fewer when the changed one was also in the sweep.
        assert!(rounds <= shrunk.len().div_ceil(100), "{rounds}");
        assert!(rounds >= (shrunk.len() - 1).div_ceil(100), "{rounds}");
        for k in &keys[..300] {
            assert_eq!(lookup(&store, k.id.as_str()).unwrap(), None, "{k}");
        }
        // The one lost after the start is still shown, unless its bucket
        // was rewritten for another reason.
        let b300 = bucket_of(keys[300].id.as_str());
        assert_eq!(
            lookup(&store, keys[300].id.as_str()).unwrap().is_some(),
            !shrunk.contains(&b300) && b300 != late_bucket
        );
        assert_eq!(
            board.has_removals(),
            !shrunk.contains(&b300) && b300 != late_bucket
        );
        board.start_sweep();
        while board.is_sweeping() {
            board.publish_swept(&ledger, &store, 100).unwrap();
        }
        assert_eq!(lookup(&store, keys[300].id.as_str()).unwrap(), None);
        assert!(!board.has_removals());
    }
}
