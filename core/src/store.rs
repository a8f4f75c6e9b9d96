//! The host's shared key-value store, as the core sees it.
//!
//! In Envoy this is proxy-wasm shared data: one map per `vm_id`, shared by
//! every worker's VM and the singleton, with a compare-and-swap token per key,
//! no delete and no expiry. [`MemoryStore`] reproduces those semantics —
//! including the blind write on a key that does not exist yet — so the dedupe
//! and status logic is tested against the behaviour it meets in production.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Why a shared-data operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Another writer changed the key since it was read: read again, retry.
    CasMismatch,
    /// The host refused the operation for any other reason.
    Host(String),
}

/// A value and the CAS token to write it back with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Versioned {
    /// `None` when the key does not exist.
    pub value: Option<Vec<u8>>,
    pub cas: Option<u32>,
}

/// Shared data with compare-and-swap.
pub trait SharedStore {
    fn get(&self, key: &str) -> Result<Versioned, StoreError>;
    /// Writes `value` if the key's CAS token still equals `cas` (`None`: write
    /// unconditionally). A key that does not exist yet is written whatever `cas`
    /// says — Envoy's behaviour — which is why keys are created at start.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// Creates `key` with an empty value unless it already exists, so later CAS
/// writes to it are real compare-and-swaps.
pub fn ensure_key(store: &dyn SharedStore, key: &str) -> Result<(), StoreError> {
    if store.get(key)?.value.is_none() {
        store.set(key, &[], None)?;
    }
    Ok(())
}

/// In-process [`SharedStore`] with Envoy's semantics, for tests and for the
/// native benchmarks.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    /// Fail the next N CAS writes as if another worker had raced us.
    pub injected_conflicts: RefCell<u32>,
    /// Keys whose reads fail, as a host call can.
    pub unreadable: RefCell<Vec<&'static str>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys held (they are never deleted, like Envoy's).
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }

    /// Total bytes of all values held.
    pub fn bytes(&self) -> usize {
        self.entries.borrow().values().map(|(v, _)| v.len()).sum()
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Versioned, StoreError> {
        if self.unreadable.borrow().contains(&key) {
            return Err(StoreError::Host(format!("{key} cannot be read")));
        }
        Ok(match self.entries.borrow().get(key) {
            Some((v, cas)) => Versioned {
                value: Some(v.clone()),
                cas: Some(*cas),
            },
            None => Versioned::default(),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut entries = self.entries.borrow_mut();
        match entries.get_mut(key) {
            Some((stored, current)) => {
                let mut injected = self.injected_conflicts.borrow_mut();
                if cas.is_some() && *injected > 0 {
                    *injected -= 1;
                    *current = current.wrapping_add(1);
                    return Err(StoreError::CasMismatch);
                }
                if cas.is_some_and(|c| c != *current) {
                    return Err(StoreError::CasMismatch);
                }
                *stored = value.to_vec();
                *current = current.wrapping_add(1);
            }
            None => {
                entries.insert(key.to_owned(), (value.to_vec(), 1));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn cas_write_fails_after_a_concurrent_write() {
        let s = MemoryStore::new();
        ensure_key(&s, "k").unwrap();
        let first = s.get("k").unwrap();
        let second = s.get("k").unwrap();
        s.set("k", b"a", first.cas).unwrap();
        assert_eq!(s.set("k", b"b", second.cas), Err(StoreError::CasMismatch));
        assert_eq!(s.get("k").unwrap().value.as_deref(), Some(&b"a"[..]));
    }

    #[test]
    fn a_missing_key_is_written_blind_like_envoy() {
        let s = MemoryStore::new();
        s.set("k", b"x", Some(12345)).unwrap();
        assert_eq!(s.get("k").unwrap().value.as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn ensure_key_keeps_existing_values() {
        let s = MemoryStore::new();
        s.set("k", b"x", None).unwrap();
        ensure_key(&s, "k").unwrap();
        assert_eq!(s.get("k").unwrap().value.as_deref(), Some(&b"x"[..]));
    }
}

/// The most messages (events, renewals, resumes) the intake lets wait for
/// the service. Envoy's shared
/// queue has no bound of its own and its allocator keeps the peak, so a
/// main thread that falls behind the workers would grow RSS for good
/// (~0.5 KB an event); past this, new events are answered 503 with
/// `Retry-After` — before anything is recorded, so nothing accepted is lost
/// and the sender's retry is processed in full.
pub const MAX_BACKLOG: u64 = 10_000;
/// Enqueues between two reads of the backlog (two host calls), per VM.
const BACKLOG_CHECK_EVERY: u32 = 32;

/// Decides whether one more event may be queued, from the counts of events
/// accepted by every filter and recorded by the service. The counts are
/// read every few enqueues, and on every attempt while over the bound so
/// that the intake reopens as soon as the service catches up.
#[derive(Debug, Default)]
pub struct Backlog {
    since_check: Cell<u32>,
    over: Cell<bool>,
}

impl Backlog {
    /// `read` gives (queued, taken): messages put on the queue and taken
    /// off it; `None` (counts unavailable) keeps the last verdict.
    pub fn admit(&self, read: impl FnOnce() -> Option<(u64, u64)>) -> Result<(), StoreError> {
        let n = self.since_check.get();
        if n == 0 || self.over.get() {
            if let Some((queued, taken)) = read() {
                self.over.set(queued.saturating_sub(taken) >= MAX_BACKLOG);
            }
        }
        self.since_check.set((n + 1) % BACKLOG_CHECK_EVERY);
        if self.over.get() {
            return Err(StoreError::Host(format!(
                "the service is {MAX_BACKLOG} or more messages behind"
            )));
        }
        Ok(())
    }
}

/// The queue from the intake filters to the singleton service.
pub trait EventSink {
    fn enqueue(&self, message: &[u8]) -> Result<(), StoreError>;
}

/// In-process [`EventSink`] for tests.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    pub messages: RefCell<Vec<Vec<u8>>>,
    /// Refuse every enqueue, as a host whose queue is gone would.
    pub broken: RefCell<bool>,
}

impl EventSink for MemoryQueue {
    fn enqueue(&self, message: &[u8]) -> Result<(), StoreError> {
        if *self.broken.borrow() {
            return Err(StoreError::Host("queue not found".into()));
        }
        self.messages.borrow_mut().push(message.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod backlog_tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn the_backlog_is_read_every_few_enqueues_and_bounds_them() {
        let b = Backlog::default();
        let reads = Cell::new(0);
        let counts = Cell::new((100u64, 100u64));
        let admit = || {
            b.admit(|| {
                reads.set(reads.get() + 1);
                Some(counts.get())
            })
        };
        for _ in 0..BACKLOG_CHECK_EVERY {
            assert!(admit().is_ok());
        }
        assert_eq!(reads.get(), 1);
        // Far behind: refused from the next read on, and read on every
        // attempt while refused.
        counts.set((100 + MAX_BACKLOG, 100));
        let mut refused = 0;
        for _ in 0..BACKLOG_CHECK_EVERY {
            if admit().is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, BACKLOG_CHECK_EVERY);
        assert_eq!(reads.get(), 1 + BACKLOG_CHECK_EVERY);
        // Caught up: the next attempt is admitted.
        counts.set((100 + MAX_BACKLOG, 101));
        assert!(admit().is_ok());
        assert!(admit().is_ok());
    }

    #[test]
    fn unreadable_counts_keep_the_last_verdict() {
        let b = Backlog::default();
        assert!(b.admit(|| None).is_ok());
        assert!(b.admit(|| Some((MAX_BACKLOG, 0))).is_ok());
        let b = Backlog::default();
        assert!(b.admit(|| Some((MAX_BACKLOG, 0))).is_err());
        assert!(b.admit(|| None).is_err());
        assert!(b.admit(|| Some((0, 0))).is_ok());
    }
}
