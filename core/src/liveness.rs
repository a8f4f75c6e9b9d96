//! Whether the singleton service is alive, as the filters can tell.
//!
//! Envoy reloads a crashed filter VM (`FAIL_RELOAD`) but never a crashed
//! bootstrap service: if the service's VM dies, the filters would go on
//! answering 202 to events nobody will ever process. So the service stamps
//! a heartbeat into shared data while it runs, and the filters stop
//! accepting (503 + `Retry-After`, which every incident tool retries) once
//! it is stale; `GET /emr/health` answers 503 too, for the orchestrator's
//! liveness probe to restart Envoy, after which the service recovers the
//! open incidents (docs/convergence.md, "Restart safety").

use std::cell::Cell;

use chrono::{DateTime, Utc};

use crate::store::StoreError;

/// The shared-data key holding the service's last beat (ms since the epoch,
/// decimal ASCII).
pub const HEARTBEAT_KEY: &str = "emr.service.heartbeat";

/// The shared-data key holding the receipt time (ms since the epoch,
/// decimal ASCII) of the newest event the service has recorded, written
/// with the heartbeat. The queue is first in, first out, so an event
/// accepted well before it has been recorded too: the status endpoint then
/// stops calling it `QUEUED` when it is not (or no longer) on the board.
pub const RECORDED_KEY: &str = "emr.service.recorded";

/// The shared-data key holding what stops the service from switching (a
/// JSON list of reasons, empty when nothing does: `Reconciler::health`).
/// `GET /emr/health` answers 200 `degraded` with them: the service is up,
/// and a probe must not restart it for a wrong secret or group id, but an
/// operator must see that it cannot switch.
pub const HEALTH_KEY: &str = "emr.service.health";

/// Cluster mode: why this replica cannot take webhooks (a JSON list of
/// reasons, empty when it can): etcd failing. `GET /emr/ready` answers 503
/// with them, for a load balancer to send webhooks elsewhere; unlike
/// [`HEALTH_KEY`]'s, they say nothing of Genesys, which does not stop the
/// intake.
pub const READY_KEY: &str = "emr.cluster.unready";

/// The bytes the service stores under [`HEALTH_KEY`].
pub fn health(reasons: &[String]) -> Vec<u8> {
    serde_json::to_vec(reasons).unwrap_or_else(|_| b"[]".to_vec())
}

/// What [`health`] stored: no reasons when nothing is there yet. Bytes that
/// are not what the service writes are a reason themselves: the filter
/// never reports `ok` for a health it could not read.
pub fn read_health(stored: Option<&[u8]>) -> Vec<String> {
    match stored.filter(|b| !b.is_empty()) {
        None => Vec::new(),
        Some(b) => serde_json::from_slice(b).unwrap_or_else(|_| {
            vec!["the service's health record in shared data is unreadable".to_owned()]
        }),
    }
}

/// How often the service beats. Its tick is 100 ms and it also beats after
/// each queue batch, so a live service is never more than this late.
pub const BEAT_EVERY_MS: i64 = 500;

/// A heartbeat older than this means the service has stopped. Ten beats:
/// long enough that a main thread busy with a burst of work, or a loaded
/// machine, is not taken for a dead one.
pub const STALLED_AFTER_MS: i64 = 5_000;

/// How long a filter trusts its last look at the heartbeat, so that a flood
/// costs one shared-data read per worker per interval, not one per event.
pub const RECHECK_EVERY_MS: i64 = 250;

/// The bytes the service stores under [`RECORDED_KEY`].
pub fn recorded(received_ms: i64) -> Vec<u8> {
    received_ms.to_string().into_bytes()
}

/// What [`recorded`] stored, if readable.
pub fn read_recorded(stored: Option<&[u8]>) -> Option<i64> {
    std::str::from_utf8(stored?).ok()?.parse().ok()
}

/// The bytes the service stores for a beat at `now`.
pub fn beat(now: DateTime<Utc>) -> Vec<u8> {
    now.timestamp_millis().to_string().into_bytes()
}

/// What a filter concludes from the heartbeat key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// No beat yet: the service has not started (the event queue's absence
    /// says the same, and is what refuses events then).
    NotStarted,
    Alive {
        age_ms: i64,
    },
    Stalled {
        age_ms: i64,
    },
}

impl Liveness {
    pub fn assess(stored: Option<&[u8]>, now: DateTime<Utc>) -> Liveness {
        let Some(at) = stored
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse::<i64>().ok())
        else {
            return Liveness::NotStarted;
        };
        // A beat from the future (clock stepped back) counts as fresh.
        let age_ms = (now.timestamp_millis() - at).max(0);
        if age_ms > STALLED_AFTER_MS {
            Liveness::Stalled { age_ms }
        } else {
            Liveness::Alive { age_ms }
        }
    }

    /// Why the service is not up, when it is not: `/emr/health`'s and
    /// `/emr/ready`'s 503 detail.
    pub fn down(self) -> Option<String> {
        match self {
            Liveness::Alive { .. } => None,
            Liveness::NotStarted => Some("the emr-edge service has not started".to_owned()),
            Liveness::Stalled { age_ms } => Some(Liveness::stalled_detail(age_ms)),
        }
    }

    pub fn is_stalled(self) -> bool {
        matches!(self, Liveness::Stalled { .. })
    }

    /// Why events are refused, for the 503's detail.
    pub fn stalled_detail(age_ms: i64) -> String {
        format!(
            "the emr-edge service has stopped (no heartbeat for {} s); events cannot be processed",
            age_ms / 1000
        )
    }
}

/// A filter's cached look at the heartbeat: it refuses to queue for a
/// service that has stopped, reading the key at most every
/// [`RECHECK_EVERY_MS`] (interior mutability, like the filter's other
/// per-VM gate, [`crate::store::Backlog`]).
#[derive(Debug, Default)]
pub struct Watch {
    last: Cell<Option<(i64, Liveness)>>,
}

impl Watch {
    /// `Ok` unless the service has stopped; `read` gives the heartbeat key's
    /// value and is called only when the last verdict is too old.
    pub fn admit(
        &self,
        now: DateTime<Utc>,
        read: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let now_ms = now.timestamp_millis();
        let verdict = match self
            .last
            .get()
            .filter(|(at, _)| (now_ms - at).abs() < RECHECK_EVERY_MS)
        {
            Some((_, v)) => v,
            None => {
                let v = Liveness::assess(read().as_deref(), now);
                self.last.set(Some((now_ms, v)));
                v
            }
        };
        match verdict {
            Liveness::Stalled { age_ms } => Err(StoreError::Host(Liveness::stalled_detail(age_ms))),
            Liveness::Alive { .. } | Liveness::NotStarted => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(1_800_000_000_000 + ms).unwrap_or_default()
    }

    #[test]
    fn a_fresh_beat_is_alive_and_an_old_one_stalled() {
        let b = beat(t(0));
        assert_eq!(
            Liveness::assess(Some(&b), t(1_000)),
            Liveness::Alive { age_ms: 1_000 }
        );
        assert_eq!(
            Liveness::assess(Some(&b), t(STALLED_AFTER_MS)),
            Liveness::Alive {
                age_ms: STALLED_AFTER_MS
            }
        );
        let stalled = Liveness::assess(Some(&b), t(STALLED_AFTER_MS + 1));
        assert!(stalled.is_stalled(), "{stalled:?}");
    }

    #[test]
    fn no_beat_or_garbage_is_not_started_never_stalled() {
        assert_eq!(Liveness::assess(None, t(0)), Liveness::NotStarted);
        assert_eq!(Liveness::assess(Some(b""), t(0)), Liveness::NotStarted);
        assert_eq!(
            Liveness::assess(Some(b"\xff\x00"), t(0)),
            Liveness::NotStarted
        );
        assert_eq!(Liveness::assess(Some(b"soon"), t(0)), Liveness::NotStarted);
    }

    #[test]
    fn a_beat_from_the_future_is_fresh() {
        let b = beat(t(10_000));
        assert_eq!(
            Liveness::assess(Some(&b), t(0)),
            Liveness::Alive { age_ms: 0 }
        );
    }

    #[test]
    fn the_watch_refuses_a_stopped_service_and_trusts_a_verdict_only_briefly() {
        let w = Watch::default();
        let reads = Cell::new(0);
        let stored = std::cell::RefCell::new(beat(t(0)));
        let admit = |at: i64| {
            w.admit(t(at), || {
                reads.set(reads.get() + 1);
                Some(stored.borrow().clone())
            })
        };
        assert!(admit(1_000).is_ok());
        assert!(admit(1_000 + RECHECK_EVERY_MS - 1).is_ok());
        assert_eq!(reads.get(), 1, "the verdict is reused");
        // Stopped: refused at the next read, and while that verdict holds.
        let stalled_at = STALLED_AFTER_MS + 10;
        let e = admit(stalled_at).unwrap_err();
        assert!(format!("{e:?}").contains("stopped"), "{e:?}");
        assert!(admit(stalled_at + RECHECK_EVERY_MS - 1).is_err());
        assert_eq!(reads.get(), 2);
        // Beating again: admitted at the next read.
        let back = stalled_at + RECHECK_EVERY_MS;
        *stored.borrow_mut() = beat(t(back));
        assert!(admit(back).is_ok());
        assert_eq!(reads.get(), 3);
        // A clock that stepped back does not pin an old verdict forever.
        let before = reads.get();
        assert!(admit(0).is_ok());
        assert_eq!(reads.get(), before + 1);
    }

    #[test]
    fn no_beat_yet_never_refuses() {
        let w = Watch::default();
        assert!(w.admit(t(0), || None).is_ok());
    }

    #[test]
    fn the_detail_says_how_long_in_seconds() {
        assert!(Liveness::stalled_detail(12_345).contains("12 s"));
    }
}
