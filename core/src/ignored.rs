//! The recently ignored events, for `GET /emr/status/{id}`.
//!
//! An event no rule matches is answered `202 IGNORED` and never reaches the
//! service, so the status board (which the service writes) has nothing
//! about it: a user who asks "why did my P3 not switch anything?" used to
//! get a 404. The filter that ignored it notes it here instead — its
//! source, id, reason (with the facts the rules saw) and time — in one of
//! [`BUCKETS`] shared-data keys by a hash of its id, keeping the
//! [`PER_BUCKET`] newest per key. Written by compare-and-swap from any
//! worker; bounded whatever arrives; best effort (a note lost to a race is
//! only a status a user cannot look up later, never an event lost).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::event::Source;
use crate::status::bucket_of;
use crate::store::{ensure_key, SharedStore, StoreError};

/// Keys of the board.
pub const BUCKETS: u16 = 64;
/// Notes kept per key, newest first.
pub const PER_BUCKET: usize = 8;
/// Compare-and-swap attempts before a note is given up.
const ATTEMPTS: usize = 4;

fn key_of(id: &str) -> String {
    format!("emr.ignored.{:02x}", bucket_of(id) % BUCKETS)
}

/// Creates every key of the board; safe to repeat.
pub fn create_keys(store: &dyn SharedStore) -> Result<(), StoreError> {
    (0..BUCKETS).try_for_each(|n| ensure_key(store, &format!("emr.ignored.{n:02x}")))
}

/// One ignored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Note {
    source: Source,
    correlation_id: String,
    reason: String,
    #[serde(with = "crate::rfc3339")]
    received_at: DateTime<Utc>,
}

fn read(stored: Option<&[u8]>) -> Vec<Note> {
    stored
        .filter(|b| !b.is_empty())
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default()
}

/// Notes that `source` ignored its event for incident `id` because of
/// `reason`. The newest note of an incident replaces its older one.
pub fn note(
    store: &dyn SharedStore,
    source: Source,
    id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let key = key_of(id);
    let mut last = StoreError::CasMismatch;
    for _ in 0..ATTEMPTS {
        let current = store.get(&key)?;
        let mut notes = read(current.value.as_deref());
        notes.retain(|n| !(n.source == source && n.correlation_id == id));
        notes.insert(
            0,
            Note {
                source,
                correlation_id: id.to_owned(),
                reason: reason.to_owned(),
                received_at: now,
            },
        );
        notes.truncate(PER_BUCKET);
        let bytes = serde_json::to_vec(&notes).map_err(|e| StoreError::Host(e.to_string()))?;
        match store.set(&key, &bytes, current.cas) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The newest note about incident `id` (of `source`, when given), as the
/// status endpoint answers it.
pub fn find(
    store: &dyn SharedStore,
    id: &str,
    source: Option<Source>,
) -> Result<Option<Value>, StoreError> {
    let stored = store.get(&key_of(id))?;
    Ok(read(stored.value.as_deref())
        .into_iter()
        .find(|n| n.correlation_id == id && source.is_none_or(|s| s == n.source))
        .map(|n| {
            json!({
                "correlationId": n.correlation_id,
                "source": n.source,
                "state": "IGNORED",
                "status": "IGNORED",
                "reason": n.reason,
                "receivedAt": crate::rfc3339::text(n.received_at),
                "detail": "this event was answered IGNORED: it opened and resolved nothing, \
                           and nothing about it was written to Genesys",
            })
        }))
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::ledger::tests::t;
    use crate::store::MemoryStore;

    #[test]
    fn an_ignored_event_can_be_looked_up_with_its_reason() {
        let store = MemoryStore::default();
        create_keys(&store).unwrap();
        assert_eq!(find(&store, "P1", None).unwrap(), None);
        note(
            &store,
            Source::Pagerduty,
            "P1",
            "no mapping rule matches (priority=P3)",
            t(0),
        )
        .unwrap();
        let v = find(&store, "P1", None).unwrap().unwrap();
        assert_eq!(v["state"], "IGNORED");
        assert_eq!(v["source"], "pagerduty");
        assert_eq!(v["reason"], "no mapping rule matches (priority=P3)");
        assert_eq!(find(&store, "P1", Some(Source::Jsm)).unwrap(), None);
        // A newer note of the same incident replaces the older one.
        note(&store, Source::Pagerduty, "P1", "again", t(5)).unwrap();
        assert_eq!(
            find(&store, "P1", None).unwrap().unwrap()["reason"],
            "again"
        );
    }

    #[test]
    fn each_key_keeps_only_its_newest_notes() {
        let store = MemoryStore::default();
        create_keys(&store).unwrap();
        // Ids that share a key: the oldest leave first.
        let same: Vec<String> = (0..10_000)
            .map(|i| format!("INC-{i}"))
            .filter(|id| key_of(id) == key_of("INC-0"))
            .take(PER_BUCKET + 2)
            .collect();
        for (i, id) in same.iter().enumerate() {
            note(&store, Source::Canonical, id, "r", t(i as i64)).unwrap();
        }
        assert_eq!(find(&store, &same[0], None).unwrap(), None);
        assert_eq!(find(&store, &same[1], None).unwrap(), None);
        assert!(find(&store, &same[2], None).unwrap().is_some());
        let stored = store.get(&key_of("INC-0")).unwrap().value.unwrap();
        assert_eq!(read(Some(&stored)).len(), PER_BUCKET);
    }

    #[test]
    fn a_note_at_any_time_reads_back() {
        let store = MemoryStore::default();
        create_keys(&store).unwrap();
        let at = t(0) + chrono::Duration::nanoseconds(123_456_789);
        note(&store, Source::Pagerduty, "P2", "r", at).unwrap();
        assert!(find(&store, "P2", None).unwrap().is_some());
    }

    #[test]
    fn a_race_is_retried() {
        let store = MemoryStore::default();
        create_keys(&store).unwrap();
        *store.injected_conflicts.borrow_mut() = 2;
        note(&store, Source::Canonical, "I1", "r", t(0)).unwrap();
        assert!(find(&store, "I1", None).unwrap().is_some());
    }
}
