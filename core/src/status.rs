//! The status board: what `GET /emr/status/{id}` and `GET /emr/state` read.
//!
//! The singleton owns the ledger; worker threads answer status requests. The
//! singleton publishes each incident's view into one of a fixed number of
//! shared-data buckets (by a hash of its id), rewriting only the buckets whose
//! incidents changed. The bucket count and per-bucket cap are fixed, and the
//! ledger's retention bounds what is published: shared data stays bounded.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::dedupe::digest;
use crate::event::IncidentKey;
use crate::ledger::{Incident, Ledger};
use crate::store::{ensure_key, SharedStore, StoreError};

pub const STATUS_BUCKETS: u16 = 1024;
/// Incidents kept per bucket; the most recently updated win.
pub const MAX_PER_BUCKET: usize = 32;
/// Where the singleton publishes the per-group state view.
pub const STATE_KEY: &str = "emr.state";

pub fn bucket_of(id: &str) -> u16 {
    let d = digest(id.as_bytes());
    u16::from_be_bytes([d[0], d[1]]) % STATUS_BUCKETS
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
/// grow with the ledger.
#[derive(Debug, Default)]
pub struct Board {
    members: BTreeMap<u16, BTreeSet<IncidentKey>>,
    dirty: BTreeSet<u16>,
}

impl Board {
    /// Notes that `key`'s incident changed.
    pub fn mark(&mut self, key: &IncidentKey) {
        let n = bucket_of(key.id.as_str());
        self.members.entry(n).or_default().insert(key.clone());
        self.dirty.insert(n);
    }

    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Rewrites every dirty bucket from the ledger. The singleton is the only
    /// writer, so plain writes are safe. Returns the number of buckets written.
    pub fn publish(
        &mut self,
        ledger: &Ledger,
        store: &dyn SharedStore,
    ) -> Result<usize, StoreError> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut written = 0;
        for n in dirty {
            let members = self.members.entry(n).or_default();
            // Incidents the ledger pruned leave the bucket.
            members.retain(|k| ledger.get(k).is_some());
            let mut incidents: Vec<&Incident> =
                members.iter().filter_map(|k| ledger.get(k)).collect();
            incidents.sort_by_key(|i| std::cmp::Reverse(i.updated_at));
            incidents.truncate(MAX_PER_BUCKET);
            let body =
                serde_json::to_vec(&incidents).map_err(|e| StoreError::Host(e.to_string()))?;
            if let Err(e) = store.set(&bucket_key(n), &body, None) {
                // Keep it dirty so the next publish retries it.
                self.dirty.insert(n);
                return Err(e);
            }
            written += 1;
        }
        Ok(written)
    }
}

/// Finds the published view of incident `id`. When two sources used the same
/// id, the most recently updated is answered.
pub fn lookup(store: &dyn SharedStore, id: &str) -> Result<Option<Value>, StoreError> {
    let current = store.get(&bucket_key(bucket_of(id)))?;
    let Some(bytes) = current.value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(None);
    };
    // Buckets are stored newest first.
    Ok(items
        .into_iter()
        .find(|v| v.get("correlationId").and_then(Value::as_str) == Some(id)))
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
            },
            received_ms: 1_700_000_000_000,
            delivery_id: None,
        }
    }

    #[test]
    fn published_incidents_can_be_looked_up_by_id() {
        let store = MemoryStore::new();
        create_keys(&store).unwrap();
        let mut ledger = Ledger::default();
        let mut board = Board::default();
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
        let store = MemoryStore::new();
        create_keys(&store).unwrap();
        let before = store.len();
        let mut ledger = Ledger::default();
        let mut board = Board::default();
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
}
