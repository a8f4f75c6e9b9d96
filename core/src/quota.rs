//! Each source's share of the open incidents, kept before the 202.
//!
//! The ledger holds at most `ledger.max_open_incidents` open incidents.
//! Without shares, one source's credential was enough to fill it — four
//! Alertmanager notifications of 473 firing alerts did — and every other
//! source's next incident was answered 202 and then recorded `FAILED`
//! (RELIABILITY.md, hostile senders, #2). Now each source has its own share
//! ([`Shares`]), the shares add up to at most the ledger's bound, and an
//! event that would open an incident beyond its source's share is refused
//! at the intake (429 + `Retry-After`), before anything is recorded.
//!
//! The count lives in shared data, one key per source holding two numbers:
//! the source's open incidents as the service last counted them, and the
//! *slots* the filters have taken for events queued but not yet recorded.
//! A filter takes a slot with compare-and-swap before it queues an
//! activation (`open + pending < share`, else refused); the service, after
//! recording a batch, writes the new open count and takes the batch's
//! slots off `pending` in one compare-and-swap ([`Book::sync`]). So `open +
//! pending` never undercounts what the ledger will hold.
//!
//! An activation for an incident that is already open takes no room: when
//! the share is used up, the filter looks the incident up on the status
//! board before refusing. If the incident closes between that look and the
//! service recording the event, the reopening takes room it was not given;
//! that race is the only way past a share, one incident per race, and the
//! ledger's own bound keeps a margin for it ([`RACE_MARGIN`]).

use std::collections::BTreeMap;

use crate::event::{QueuedEvent, Source};
use crate::ledger::Ledger;
use crate::store::{ensure_key, SharedStore, StoreError};

/// CAS attempts on a contended key before answering 503.
const MAX_CAS_ATTEMPTS: u32 = 32;

/// Open incidents the ledger holds beyond the shares' sum, for the race in
/// the module doc. A refusal by the ledger itself (`REFUSED`, after a 202)
/// would take more such races at once than this.
pub const RACE_MARGIN: usize = 64;

/// How long a refused sender is told to wait: room comes back when its
/// incidents resolve or expire, which no shorter retry can hurry.
pub const RETRY_AFTER_SECONDS: u32 = 30;

/// Each source's share of the open incidents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shares {
    limits: BTreeMap<Source, u32>,
}

impl Shares {
    pub fn new(limits: BTreeMap<Source, u32>) -> Self {
        Self { limits }
    }

    /// How many incidents `source` may have open; 0 for a source with no
    /// share (a route that takes no deliveries).
    pub fn limit(&self, source: Source) -> u32 {
        self.limits.get(&source).copied().unwrap_or(0)
    }
}

/// The shared-data key of `source`'s count.
pub fn key(source: Source) -> String {
    format!("emr.open.{source}")
}

/// Creates every source's key; safe to repeat.
pub fn create_keys(store: &dyn SharedStore) -> Result<(), StoreError> {
    for s in Source::ALL {
        ensure_key(store, &key(s))?;
    }
    Ok(())
}

/// What a source's key holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Its open incidents, as the service last counted them.
    pub open: u32,
    /// Slots taken by the filters for events not yet recorded.
    pub pending: u32,
}

impl Count {
    /// `"<open> <pending>"`; anything unreadable (a key just created) is
    /// zero.
    fn decode(bytes: Option<&[u8]>) -> Count {
        let text = bytes
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default();
        let mut numbers = text.split(' ').map(|n| n.parse::<u32>().unwrap_or(0));
        Count {
            open: numbers.next().unwrap_or(0),
            pending: numbers.next().unwrap_or(0),
        }
    }

    fn encode(self) -> Vec<u8> {
        format!("{} {}", self.open, self.pending).into_bytes()
    }

    fn used(self) -> u32 {
        self.open.saturating_add(self.pending)
    }
}

/// Reads `source`'s count and writes back `change(count)` with CAS,
/// retried while other writers race; `change` may decline (`None`).
fn update(
    store: &dyn SharedStore,
    source: Source,
    change: impl Fn(Count) -> Option<Count>,
) -> Result<(Count, bool), StoreError> {
    let k = key(source);
    for _ in 0..MAX_CAS_ATTEMPTS {
        let current = store.get(&k)?;
        let count = Count::decode(current.value.as_deref());
        let Some(next) = change(count) else {
            return Ok((count, false));
        };
        match store.set(&k, &next.encode(), current.cas) {
            Ok(()) => return Ok((next, true)),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::CasMismatch)
}

/// What [`take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// A slot is held for the event: queue it with `slot: true`.
    Yes,
    /// The source's share is used up.
    Full(Count),
}

/// Takes one of `source`'s slots for an event that may open an incident.
pub fn take(store: &dyn SharedStore, source: Source, limit: u32) -> Result<Taken, StoreError> {
    let (count, taken) = update(store, source, |c| {
        (c.used() < limit).then_some(Count {
            pending: c.pending.saturating_add(1),
            ..c
        })
    })?;
    Ok(if taken {
        Taken::Yes
    } else {
        Taken::Full(count)
    })
}

/// Gives back `n` slots taken for events that were not queued after all.
pub fn give_back(store: &dyn SharedStore, source: Source, n: u32) -> Result<(), StoreError> {
    if n == 0 {
        return Ok(());
    }
    update(store, source, |c| {
        Some(Count {
            pending: c.pending.saturating_sub(n),
            ..c
        })
    })
    .map(|_| ())
}

/// The service's side: the slots of the events it has recorded, and the
/// open counts it last wrote.
#[derive(Debug, Default)]
pub struct Book {
    recorded: BTreeMap<Source, u32>,
    written: BTreeMap<Source, u32>,
}

impl Book {
    /// `q` was recorded in the ledger.
    pub fn recorded(&mut self, q: &QueuedEvent) {
        if q.slot {
            *self.recorded.entry(q.event.source).or_default() += 1;
        }
    }

    /// Writes each source's open count, and gives back the slots of the
    /// events recorded since, where either changed. What cannot be written
    /// now is written at the next call.
    pub fn sync(&mut self, ledger: &Ledger, store: &dyn SharedStore) -> Result<(), StoreError> {
        for source in Source::ALL {
            let open = u32::try_from(ledger.open_of(source)).unwrap_or(u32::MAX);
            let recorded = self.recorded.get(&source).copied().unwrap_or(0);
            if recorded == 0 && self.written.get(&source) == Some(&open) {
                continue;
            }
            update(store, source, |c| {
                Some(Count {
                    open,
                    pending: c.pending.saturating_sub(recorded),
                })
            })?;
            self.written.insert(source, open);
            self.recorded.remove(&source);
        }
        Ok(())
    }
}

/// The count as a filter reads it.
#[cfg(test)]
pub fn count(store: &dyn SharedStore, source: Source) -> Result<Count, StoreError> {
    Ok(Count::decode(store.get(&key(source))?.value.as_deref()))
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::event::{GroupId, RoutingMode};
    use crate::ledger::tests::{event, t};
    use crate::store::MemoryStore;

    fn store() -> MemoryStore {
        let s = MemoryStore::new();
        create_keys(&s).unwrap();
        s
    }

    #[test]
    fn slots_run_out_at_the_share_and_come_back_when_recorded_and_closed() {
        let s = store();
        let mut ledger = Ledger::default();
        let mut book = Book::default();
        let g = GroupId::parse("G").unwrap();
        let mut queued = Vec::new();
        for i in 0..3 {
            assert_eq!(take(&s, Source::Alertmanager, 3).unwrap(), Taken::Yes);
            let mut q = event(&format!("A{i}"), RoutingMode::Active, 0, &["q"]);
            q.event.source = Source::Alertmanager;
            q.slot = true;
            queued.push(q);
        }
        assert_eq!(
            take(&s, Source::Alertmanager, 3).unwrap(),
            Taken::Full(Count {
                open: 0,
                pending: 3
            })
        );
        // Another source's share is its own.
        assert_eq!(take(&s, Source::Pagerduty, 3).unwrap(), Taken::Yes);
        // Recorded: the slots become open incidents, still at the share.
        for q in &queued {
            ledger.apply(q, g.clone(), t(1));
            book.recorded(q);
        }
        book.sync(&ledger, &s).unwrap();
        assert_eq!(
            count(&s, Source::Alertmanager).unwrap(),
            Count {
                open: 3,
                pending: 0
            }
        );
        assert!(matches!(
            take(&s, Source::Alertmanager, 3).unwrap(),
            Taken::Full(_)
        ));
        // One resolves: room for one more.
        let mut r = event("A0", RoutingMode::Resolved, 5, &[]);
        r.event.source = Source::Alertmanager;
        ledger.apply(&r, g.clone(), t(6));
        book.recorded(&r);
        book.sync(&ledger, &s).unwrap();
        assert_eq!(
            count(&s, Source::Alertmanager).unwrap(),
            Count {
                open: 2,
                pending: 0
            }
        );
        assert_eq!(take(&s, Source::Alertmanager, 3).unwrap(), Taken::Yes);
        // A slot for an event that was not queued after all comes back.
        give_back(&s, Source::Alertmanager, 1).unwrap();
        assert_eq!(
            count(&s, Source::Alertmanager).unwrap(),
            Count {
                open: 2,
                pending: 0
            }
        );
    }

    #[test]
    fn a_slot_for_an_event_that_opened_nothing_is_given_back() {
        let s = store();
        let mut ledger = Ledger::default();
        let mut book = Book::default();
        let g = GroupId::parse("G").unwrap();
        let mut q = event("I1", RoutingMode::Active, 0, &["q"]);
        q.slot = true;
        assert_eq!(take(&s, Source::Canonical, 5).unwrap(), Taken::Yes);
        ledger.apply(&q, g.clone(), t(1));
        book.recorded(&q);
        // The same incident again (an update): it took a slot, opens nothing.
        let mut again = event("I1", RoutingMode::Active, 2, &["q"]);
        again.slot = true;
        assert_eq!(take(&s, Source::Canonical, 5).unwrap(), Taken::Yes);
        ledger.apply(&again, g, t(3));
        book.recorded(&again);
        book.sync(&ledger, &s).unwrap();
        assert_eq!(
            count(&s, Source::Canonical).unwrap(),
            Count {
                open: 1,
                pending: 0
            }
        );
    }

    #[test]
    fn racing_writers_never_lose_a_slot() {
        let s = store();
        // Every other write races another writer.
        *s.injected_conflicts.borrow_mut() = 5;
        for _ in 0..4 {
            assert_eq!(take(&s, Source::Jsm, 10).unwrap(), Taken::Yes);
        }
        assert_eq!(count(&s, Source::Jsm).unwrap().pending, 4);
        // A key written by nobody yet, or garbage, reads as zero.
        assert_eq!(Count::decode(None), Count::default());
        assert_eq!(Count::decode(Some(b"x y z")), Count::default());
    }
}
