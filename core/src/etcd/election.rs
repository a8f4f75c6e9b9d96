//! Leader election on an etcd lease: which replica's service may act.
//!
//! Each replica holds a lease of its own and campaigns by creating the
//! leader key, with its id as the value, on that lease, only if the key is
//! absent ([`super::create_if_absent`]). The one whose transaction succeeds
//! leads; the revision it created the key at is its [`Fence`], compared in
//! every write it makes to etcd afterwards. The others read the key in the
//! same round trip and know who leads. When the leader's lease lapses, etcd
//! deletes the key and the next campaign wins.
//!
//! The state machine makes one call at a time, one step per period
//! (a third of the lease's TTL):
//! - with no lease: grant one;
//! - leading: renew the lease (keepalive);
//! - following: renew the lease, then campaign at once.
//!
//! So at idle, etcd sees one request a period from the leader and two from
//! each follower, whatever the number of events stored.
//!
//! **Acting on the own clock.** Fencing protects etcd, not Genesys: a
//! leader cut off from etcd could go on writing to Genesys while another
//! replica, after the lease ran out, leads too. So [`Election::may_act`]
//! holds only while the lease is sure to be alive, counted from when the
//! latest successful renewal was *sent* (etcd cannot have started the TTL
//! before that), less one period of margin: a leader that misses two
//! renewals in a row stops acting before its lease can have expired.
//! etcd may keep the lease longer (a change of etcd leader resets every
//! lease to its full TTL), which only delays the next leader, never makes
//! two.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::answer::{self, Failure};
use super::{create_if_absent, lease_grant, lease_keepalive, lease_revoke, Fence, Gateway};
use crate::callout::{CallResult, HttpCall, OpId};
use crate::rfc3339::text as rfc3339;

/// What the election needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The leader key (the cluster's prefix and `leader`).
    pub key: Vec<u8>,
    /// This replica's id: the leader key's value while it leads.
    pub replica: String,
    /// The lease TTL asked for, in seconds (etcd grants at least 2).
    pub ttl_s: i64,
}

/// What the service must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Dispatch; hand the answer to [`Election::on_result`].
    Call(HttpCall),
    /// One JSON audit line: a change of leadership.
    Audit(Value),
    Metric(Metric),
}

/// A metric sample; [`Metric::name`] is the stat name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// This replica became the leader.
    Won,
    /// This replica stopped leading (lease gone, renewals failing).
    Lost,
    /// Gauge: 1 while this replica may act as the leader, else 0.
    Leader(bool),
    /// An etcd call failed, by class ([`Failure::class`]).
    Failure(&'static str),
    /// An etcd call's latency.
    LatencyMs(u64),
}

impl Metric {
    pub fn name(&self) -> &'static str {
        match self {
            Metric::Won => "emr.cluster.elections_won",
            Metric::Lost => "emr.cluster.elections_lost",
            Metric::Leader(_) => "emr.cluster.leader",
            Metric::Failure(class) => match *class {
                "transport" => "emr.etcd.failures.transport",
                "unavailable" => "emr.etcd.failures.unavailable",
                "deadline" => "emr.etcd.failures.deadline",
                "quota_full" => "emr.etcd.failures.quota_full",
                "lease_not_found" => "emr.etcd.failures.lease_not_found",
                "compacted" => "emr.etcd.failures.compacted",
                "too_large" => "emr.etcd.failures.too_large",
                "denied" => "emr.etcd.failures.denied",
                "malformed" => "emr.etcd.failures.malformed",
                _ => "emr.etcd.failures.other",
            },
            Metric::LatencyMs(_) => "emr.etcd.latency_ms",
        }
    }
}

/// Who leads, as this replica knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This replica, fenced on `fence`.
    Leader { fence: Fence },
    /// Another replica (`None`: not known yet, or nobody).
    Follower { leader: Option<String> },
}

/// A lease this replica holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    id: i64,
    ttl: Duration,
    /// Sure to be alive until then: the latest successful grant or renewal
    /// was sent at `alive_until - ttl`.
    alive_until: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Grant,
    KeepAlive(i64),
    Campaign(i64),
    Revoke(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Out {
    op: OpId,
    step: Step,
    sent_at: DateTime<Utc>,
}

/// The election's state. By value: the service feeds it time and answers.
#[derive(Debug, Clone)]
pub struct Election {
    cfg: Settings,
    gateway: Gateway,
    lease: Option<Held>,
    leading: Option<Fence>,
    /// The leader the latest campaign read.
    seen: Option<String>,
    out: Option<Out>,
    /// Campaign as soon as the lease step answered.
    campaign_now: bool,
    next_at: DateTime<Utc>,
    next_op: OpId,
    /// Resigned: no more campaigns.
    resigned: bool,
}

impl Election {
    pub fn new(cfg: Settings, gateway: Gateway, now: DateTime<Utc>) -> Self {
        Self {
            cfg,
            gateway,
            lease: None,
            leading: None,
            seen: None,
            out: None,
            campaign_now: false,
            next_at: now,
            next_op: 1,
            resigned: false,
        }
    }

    /// One step a third of the lease's TTL, at least half a second.
    fn period(&self) -> Duration {
        let ttl = self.lease.map_or(
            Duration::seconds(self.cfg.ttl_s.max(super::MIN_LEASE_TTL_S)),
            |l| l.ttl,
        );
        (ttl / 3).max(Duration::milliseconds(500))
    }

    /// Whether this replica may act as the leader now: it won, and its
    /// lease is sure to be alive for another period at least.
    pub fn may_act(&self, now: DateTime<Utc>) -> bool {
        self.may_act_until().is_some_and(|until| now < until)
    }

    /// Who leads, as far as this replica knows.
    pub fn role(&self, now: DateTime<Utc>) -> Role {
        match &self.leading {
            Some(fence) if self.may_act(now) => Role::Leader {
                fence: fence.clone(),
            },
            _ => Role::Follower {
                leader: self.seen.clone(),
            },
        }
    }

    /// When [`Election::poll`] has something to do next (the service
    /// ticks; tests ask).
    #[cfg(test)]
    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        let stale = self.may_act_until();
        match self.out {
            Some(_) => stale,
            None => Some(stale.map_or(self.next_at, |s| s.min(self.next_at))),
        }
    }

    /// While leading: when acting stops unless a renewal answers first.
    fn may_act_until(&self) -> Option<DateTime<Utc>> {
        self.leading.as_ref()?;
        self.lease.map(|l| l.alive_until - self.period())
    }

    /// Time passed: step down if the lease may be lapsing, and start the
    /// step that is due.
    pub fn poll(&mut self, now: DateTime<Utc>) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.leading.is_some() && !self.may_act(now) {
            self.lose("its lease could not be renewed in time", now, &mut fx);
        }
        if self.lease.is_some_and(|l| now >= l.alive_until) {
            self.lease = None;
        }
        if self.resigned || self.out.is_some() || (now < self.next_at && !self.campaign_now) {
            return fx;
        }
        let step = match (self.lease, self.campaign_now && self.leading.is_none()) {
            (None, _) => Step::Grant,
            (Some(l), true) => Step::Campaign(l.id),
            (Some(l), false) => Step::KeepAlive(l.id),
        };
        self.campaign_now = false;
        fx.push(Effect::Call(self.send(step, now)));
        fx
    }

    /// Gives the leadership up (a replica shutting down): revokes the lease,
    /// which deletes the leader key, so another replica takes over at its
    /// next campaign instead of after the TTL.
    pub fn resign(&mut self, now: DateTime<Utc>) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.resigned = true;
        if self.leading.is_some() {
            self.lose("it is shutting down", now, &mut fx);
        }
        if let Some(l) = self.lease.take() {
            fx.push(Effect::Call(self.send(Step::Revoke(l.id), now)));
        }
        fx
    }

    fn op(&mut self) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        op
    }

    fn send(&mut self, step: Step, now: DateTime<Utc>) -> HttpCall {
        let op = self.op();
        self.out = Some(Out {
            op,
            step,
            sent_at: now,
        });
        let request = match step {
            Step::Grant => lease_grant(self.cfg.ttl_s),
            Step::KeepAlive(id) => lease_keepalive(id),
            Step::Campaign(id) => {
                create_if_absent(&self.cfg.key, self.cfg.replica.as_bytes(), Some(id))
            }
            Step::Revoke(id) => lease_revoke(id),
        };
        self.gateway.call(op, request)
    }

    /// The answer to a call; one of another op is ignored.
    pub fn on_result(&mut self, op: OpId, result: CallResult, now: DateTime<Utc>) -> Vec<Effect> {
        let Some(out) = self.out.filter(|o| o.op == op) else {
            return Vec::new();
        };
        self.out = None;
        let mut fx = vec![Effect::Metric(Metric::LatencyMs(
            u64::try_from((now - out.sent_at).num_milliseconds()).unwrap_or(0),
        ))];
        let outcome = match out.step {
            Step::Grant => answer::lease_grant(&result).map(|lease| {
                self.lease = Some(Held {
                    id: lease.id,
                    ttl: Duration::seconds(lease.ttl_s),
                    alive_until: out.sent_at + Duration::seconds(lease.ttl_s),
                });
                self.campaign_now = true;
            }),
            Step::KeepAlive(id) => answer::lease_keepalive(&result).map(|ttl_s| {
                let ttl = Duration::seconds(ttl_s);
                self.lease = Some(Held {
                    id,
                    ttl,
                    alive_until: out.sent_at + ttl,
                });
                self.campaign_now = self.leading.is_none();
                self.next_at = out.sent_at + self.period();
            }),
            Step::Campaign(id) => answer::txn(&result).map(|txn| {
                self.campaigned(id, txn, now, &mut fx);
            }),
            Step::Revoke(_) => Ok(()),
        };
        if let Err(failure) = outcome {
            self.failed(out.step, &failure, now, &mut fx);
        }
        fx
    }

    fn campaigned(
        &mut self,
        lease: i64,
        txn: answer::Txn,
        now: DateTime<Utc>,
        fx: &mut Vec<Effect>,
    ) {
        // Won, or won earlier and that answer was lost: the key is on our
        // lease either way, and its create revision is the fence.
        let ours = txn
            .ranged
            .iter()
            .find(|kv| kv.lease == lease && kv.key == self.cfg.key);
        let fence = match (txn.succeeded, ours) {
            (true, _) => Some(txn.revision),
            (false, Some(kv)) => Some(kv.create_revision),
            (false, None) => None,
        };
        match fence {
            Some(revision) => {
                let fence = Fence {
                    key: self.cfg.key.clone(),
                    revision,
                };
                self.seen = Some(self.cfg.replica.clone());
                fx.push(Effect::Metric(Metric::Won));
                fx.push(Effect::Metric(Metric::Leader(true)));
                fx.push(Effect::Audit(json!({
                    "kind": "emr.cluster",
                    "at": rfc3339(now),
                    "decision": "leading",
                    "replica": self.cfg.replica,
                    "fence": revision,
                })));
                self.leading = Some(fence);
            }
            None => {
                let leader = txn
                    .ranged
                    .iter()
                    .find(|kv| kv.key == self.cfg.key)
                    .map(|kv| {
                        String::from_utf8_lossy(&kv.value)
                            .chars()
                            .take(128)
                            .collect()
                    });
                self.seen = leader;
            }
        }
        self.next_at = now + self.period();
    }

    fn failed(&mut self, step: Step, failure: &Failure, now: DateTime<Utc>, fx: &mut Vec<Effect>) {
        fx.push(Effect::Metric(Metric::Failure(failure.class())));
        if matches!(failure, Failure::LeaseNotFound) {
            self.lease = None;
            if self.leading.is_some() {
                self.lose("etcd says its lease is gone", now, fx);
            }
        }
        if step == Step::Grant || !failure.is_transient() {
            fx.push(Effect::Audit(json!({
                "kind": "emr.cluster",
                "at": rfc3339(now),
                "decision": "etcd-failed",
                "replica": self.cfg.replica,
                "detail": failure.to_string(),
            })));
        }
        // Try again next period; a lease that lapses meanwhile is dropped
        // by `poll`, and a leader stops acting before that.
        self.campaign_now = false;
        self.next_at = now + self.period();
    }

    fn lose(&mut self, why: &str, now: DateTime<Utc>, fx: &mut Vec<Effect>) {
        let Some(fence) = self.leading.take() else {
            return;
        };
        self.seen = None;
        fx.push(Effect::Metric(Metric::Lost));
        fx.push(Effect::Metric(Metric::Leader(false)));
        fx.push(Effect::Audit(json!({
            "kind": "emr.cluster",
            "at": rfc3339(now),
            "decision": "stepped-down",
            "replica": self.cfg.replica,
            "fence": fence.revision,
            "detail": format!("stopped leading: {why}"),
        })));
    }
}

#[cfg(test)]
mod tests;
