//! How the log stays bounded (docs/cluster.md, "Bounded size"): every entry
//! is put on a lease that ends a little after the dedupe window, and etcd
//! deletes it then by itself. Whatever arrives, the log holds at most one
//! window of events, and a replica that dies leaves nothing behind.
//!
//! Each replica's service keeps one such lease current. It grants one every
//! `bucket`, with a TTL of the window plus two buckets, and puts entries on
//! it for two buckets: whatever goes on it lives at least the window (an
//! event's key is its dedupe), and a grant that fails has a whole bucket to
//! succeed before there is none. Leases are not kept alive; each ends on
//! its own. The filters read the current one from shared data
//! ([`LEASE_KEY`]); without one they refuse with `503` rather than put an
//! event that would never go.
//!
//! An incident open longer than the window outlives its events: the
//! leader's snapshot ([`super::snapshot`]) keeps it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::answer::{self, Failure};
use super::{lease_grant, Gateway};
use crate::callout::{CallResult, HttpCall, OpId};
use crate::store::{SharedStore, StoreError};

/// Shared data: the lease the filters put events on ([`Current`]).
pub const LEASE_KEY: &str = "emr.cluster.lease";

/// How long entries stay, and how often a lease is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The dedupe window: the least an entry stays.
    pub window: Duration,
    /// How often a new lease is granted.
    pub bucket: Duration,
}

impl Settings {
    /// For a dedupe window of `window_s` seconds: a bucket of a tenth of
    /// it, 10 s to 10 min, so each replica has about a dozen leases live.
    pub fn for_window(window_s: i64) -> Self {
        Self {
            window: Duration::seconds(window_s),
            bucket: Duration::seconds((window_s / 10).clamp(10, 600)),
        }
    }

    /// Each lease's TTL.
    pub fn ttl_s(&self) -> i64 {
        (self.window + self.bucket * 2).num_seconds()
    }
}

/// A lease entries are put on, and until when (ms since the epoch): past
/// that, what goes on it could leave before the window is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub id: i64,
    #[serde(rename = "until")]
    pub until_ms: i64,
}

impl Current {
    /// The lease's id, while entries may go on it.
    pub fn usable(&self, now: DateTime<Utc>) -> Option<i64> {
        (now.timestamp_millis() < self.until_ms).then_some(self.id)
    }
}

/// The lease the filters put events on now: `None` until the service has
/// one, or once the latest can no longer be used.
pub fn current(store: &dyn SharedStore, now: DateTime<Utc>) -> Option<i64> {
    let bytes = store.get(LEASE_KEY).ok()?.value?;
    serde_json::from_slice::<Current>(&bytes).ok()?.usable(now)
}

/// Tells the filters of `lease`.
pub fn publish(store: &dyn SharedStore, lease: Current) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(&lease).unwrap_or_default();
    store.set(LEASE_KEY, &bytes, None)
}

/// What the service must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Dispatch; hand the answer to [`Keeper::on_result`].
    Call(HttpCall),
    /// A new lease to put entries on: publish it.
    Granted(Current),
    /// The grant failed: retried in a second.
    Failed(Failure),
}

/// A grant on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Out {
    op: OpId,
    sent_at: DateTime<Utc>,
}

/// Keeps a usable lease. One call at a time, by value, like the election.
#[derive(Debug, Clone)]
pub struct Keeper {
    settings: Settings,
    gateway: Gateway,
    current: Option<Current>,
    out: Option<Out>,
    next_at: DateTime<Utc>,
    next_op: OpId,
}

impl Keeper {
    pub fn new(settings: Settings, gateway: Gateway, now: DateTime<Utc>) -> Self {
        Self {
            settings,
            gateway,
            current: None,
            out: None,
            next_at: now,
            next_op: 1,
        }
    }

    /// The lease to put entries on now, if any.
    pub fn lease(&self, now: DateTime<Utc>) -> Option<i64> {
        self.current.and_then(|c| c.usable(now))
    }

    /// Grants the next lease when it is due.
    pub fn poll(&mut self, now: DateTime<Utc>) -> Vec<Effect> {
        if self.out.is_some() || now < self.next_at {
            return Vec::new();
        }
        let op = self.next_op;
        self.next_op += 1;
        self.out = Some(Out { op, sent_at: now });
        vec![Effect::Call(
            self.gateway.call(op, lease_grant(self.settings.ttl_s())),
        )]
    }

    /// The answer to a grant; one of another op is ignored.
    pub fn on_result(&mut self, op: OpId, result: &CallResult, now: DateTime<Utc>) -> Vec<Effect> {
        let Some(out) = self.out.filter(|o| o.op == op) else {
            return Vec::new();
        };
        self.out = None;
        match answer::lease_grant(result) {
            Ok(lease) => {
                // Its TTL started no earlier than the request: what goes on
                // it until `until` outlives the window.
                let until = out.sent_at + Duration::seconds(lease.ttl_s) - self.settings.window;
                let current = Current {
                    id: lease.id,
                    until_ms: until.timestamp_millis(),
                };
                self.current = Some(current);
                self.next_at = now + self.settings.bucket;
                vec![Effect::Granted(current)]
            }
            Err(failure) => {
                self.next_at = now + Duration::seconds(1);
                vec![Effect::Failed(failure)]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;
    use crate::ledger::tests::t;
    use crate::store::MemoryStore;

    fn granted(id: i64, ttl: i64) -> CallResult {
        CallResult::json(200, &json!({"ID": id.to_string(), "TTL": ttl.to_string()}))
    }

    #[test]
    fn buckets_are_a_tenth_of_the_window_within_bounds() {
        assert_eq!(Settings::for_window(86_400).bucket, Duration::seconds(600));
        assert_eq!(Settings::for_window(60).bucket, Duration::seconds(10));
        assert_eq!(Settings::for_window(1_000).bucket, Duration::seconds(100));
        assert_eq!(Settings::for_window(86_400).ttl_s(), 86_400 + 1_200);
    }

    #[test]
    fn a_lease_is_used_for_two_buckets_and_replaced_after_one() {
        let s = Settings::for_window(100);
        let mut k = Keeper::new(s, Gateway::for_tests(), t(0));
        assert_eq!(k.lease(t(0)), None);
        let fx = k.poll(t(0));
        let [Effect::Call(call)] = fx.as_slice() else {
            panic!("{fx:?}")
        };
        assert_eq!(call.path, "/v3/lease/grant");
        let body: serde_json::Value = serde_json::from_slice(call.body.as_ref().unwrap()).unwrap();
        assert_eq!(body["TTL"], "120");
        // One call at a time.
        assert!(k.poll(t(0)).is_empty());
        let fx = k.on_result(call.op, &granted(7, 120), t(1));
        assert_eq!(
            fx,
            vec![Effect::Granted(Current {
                id: 7,
                until_ms: t(20).timestamp_millis()
            })]
        );
        assert_eq!(k.lease(t(19)), Some(7));
        assert_eq!(
            k.lease(t(20)),
            None,
            "its keys could leave inside the window"
        );
        // The next grant is due one bucket after the answer.
        assert!(k.poll(t(10)).is_empty());
        let fx = k.poll(t(11));
        let [Effect::Call(next)] = fx.as_slice() else {
            panic!("{fx:?}")
        };
        // A stale answer is ignored; the lease stays.
        assert!(k.on_result(call.op, &granted(9, 120), t(11)).is_empty());
        k.on_result(next.op, &granted(8, 120), t(11));
        assert_eq!(k.lease(t(25)), Some(8));
    }

    #[test]
    fn a_failed_grant_is_retried_in_a_second_and_the_old_lease_serves_meanwhile() {
        let s = Settings::for_window(100);
        let mut k = Keeper::new(s, Gateway::for_tests(), t(0));
        let op = |fx: Vec<Effect>| match fx.as_slice() {
            [Effect::Call(c)] => c.op,
            other => panic!("{other:?}"),
        };
        let first = op(k.poll(t(0)));
        k.on_result(first, &granted(7, 120), t(0));
        let second = op(k.poll(t(10)));
        let fx = k.on_result(second, &CallResult::Failed, t(10));
        assert!(matches!(fx.as_slice(), [Effect::Failed(_)]), "{fx:?}");
        assert_eq!(k.lease(t(11)), Some(7));
        assert!(k.poll(t(10)).is_empty());
        assert_eq!(k.poll(t(11)).len(), 1);
        // A grant answered without an id is a failure, never a lease 0.
        let mut k = Keeper::new(s, Gateway::for_tests(), t(0));
        let o = op(k.poll(t(0)));
        let fx = k.on_result(o, &CallResult::json(200, &json!({"TTL": "120"})), t(0));
        assert!(matches!(fx.as_slice(), [Effect::Failed(_)]), "{fx:?}");
        assert_eq!(k.lease(t(0)), None);
    }

    #[test]
    fn the_filters_read_the_published_lease_while_it_is_usable() {
        let store = MemoryStore::new();
        assert_eq!(current(&store, t(0)), None);
        publish(
            &store,
            Current {
                id: 42,
                until_ms: t(5).timestamp_millis(),
            },
        )
        .unwrap();
        assert_eq!(current(&store, t(4)), Some(42));
        assert_eq!(current(&store, t(5)), None);
        store.set(LEASE_KEY, b"junk", None).unwrap();
        assert_eq!(current(&store, t(0)), None);
    }
}
