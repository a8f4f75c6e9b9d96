//! Cluster mode in the service (docs/cluster.md): the election says whether
//! this replica acts, and the feed brings every replica's events from etcd.
//!
//! Every replica records every event, so each answers `/emr/status` and
//! `/emr/state` from the same ledger. Only the leader drives Genesys and
//! polls the tools, and only once its feed has read the whole log: a new
//! leader's first write already knows every event any replica accepted.
//!
//! Every entry goes on a lease that ends after the dedupe window
//! ([`crate::etcd::retention`]), so the log stays one window long; the
//! leader's snapshot ([`snapshots`]) keeps the incidents open longer than
//! that for a replica that starts later.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::{Callout, Level, Origin, Out, Sample, Service};
use crate::callout::{CallResult, HttpCall, OpId};
use crate::etcd::answer::Failure;
use crate::etcd::config::ClusterSettings;
use crate::etcd::election::{self, Election};
use crate::etcd::feed::{self, Feed};
use crate::etcd::log::{self, Entry, Keys, Record};
use crate::etcd::retention::{self, Keeper};
use crate::etcd::snapshot::Snapshot;
use crate::etcd::token::{self, Authenticator};
use crate::etcd::{Fence, Gateway};
use crate::event::{Control, ControlMessage, GroupId, IncidentKey, QueueMessage};
use crate::genesys::answer::GenesysRef;
use crate::itsm::PollChange;
use crate::ledger::Settle;
use crate::reconcile::{Change, Effect};
use crate::store::SharedStore;

mod snapshots;

/// Events the feed reads per page.
const PAGE_SIZE: i64 = 1_000;
/// Gauge: how many revisions committed this replica has not read yet.
pub const LAG_GAUGE: &str = "emr.cluster.log_lag";
/// Counter: snapshots written by this replica while it led.
pub const SNAPSHOTS_METRIC: &str = "emr.cluster.snapshots";
/// Counter: incidents a snapshot held that the log no longer did.
pub const SNAPSHOT_RESTORED_METRIC: &str = "emr.cluster.snapshot_restored";
/// Control messages waiting for etcd, at most; older ones give up after
/// [`OUTBOX_PATIENCE_S`].
const OUTBOX_MAX: usize = 1_000;
const OUTBOX_PATIENCE_S: i64 = 60;

/// The election and the feed of one replica.
pub(super) struct Cluster {
    replica: String,
    election: Election,
    feed: Feed,
    /// The lease entries go on, and the one the filters have not been told
    /// of yet.
    keeper: Keeper,
    unpublished: Option<retention::Current>,
    /// Lease grants are failing (said once per streak).
    lease_failing: bool,
    /// The leader's snapshot.
    snapshots: snapshots::Writer,
    /// etcd's auth, when it is on, and a token the filters have not been
    /// told of yet.
    auth: Option<Authenticator>,
    unpublished_token: Option<String>,
    /// Whether this replica acted at the latest drive.
    acting: bool,
    /// Reading the log or authenticating is failing: why (said once per
    /// streak; on `/emr/health` and `/emr/ready` meanwhile).
    etcd_failing: Option<String>,
    keys: Keys,
    gateway: Gateway,
    /// Controls waiting to be put in the log (from this replica's filters,
    /// or its settlements while it leads, fenced on that leadership).
    outbox: VecDeque<(Control, DateTime<Utc>, Option<Fence>)>,
    /// The outbox's call out, if any.
    sending: Option<OpId>,
    /// Controls dropped because the outbox was full, not said yet.
    overflowed: u64,
    /// After a failed commit, the outbox waits until then.
    outbox_retry_at: DateTime<Utc>,
    /// Keeps control keys unique across this replica's life.
    sent: u64,
}

impl Cluster {
    /// A replica of `s`, whose entries stay `window_s` (the dedupe window).
    pub(super) fn new(s: &ClusterSettings, window_s: i64, now: DateTime<Utc>) -> Self {
        Self {
            replica: s.replica.clone(),
            election: Election::new(s.election(), s.gateway.clone(), now),
            feed: Feed::new(s.keys.clone(), s.gateway.clone(), s.poll, PAGE_SIZE, 1, now),
            keeper: Keeper::new(
                retention::Settings::for_window(window_s),
                s.gateway.clone(),
                now,
            ),
            unpublished: None,
            lease_failing: false,
            snapshots: snapshots::Writer::new(now),
            auth: s
                .auth
                .clone()
                .map(|c| Authenticator::new(c, s.gateway.clone(), now)),
            unpublished_token: None,
            acting: false,
            etcd_failing: None,
            keys: s.keys.clone(),
            gateway: s.gateway.clone(),
            outbox: VecDeque::new(),
            sending: None,
            overflowed: 0,
            outbox_retry_at: now,
            sent: 0,
        }
    }

    /// A control from this replica's filters: put in the log, and applied
    /// (by every replica) when the feed reads it back.
    pub(super) fn post(&mut self, c: Control, now: DateTime<Utc>) {
        self.post_fenced(c, now, None);
    }

    fn post_fenced(&mut self, c: Control, now: DateTime<Utc>, fence: Option<Fence>) {
        if self.outbox.len() >= OUTBOX_MAX {
            self.outbox.pop_front();
            self.overflowed += 1;
        }
        self.outbox.push_back((c, now, fence));
    }

    /// The outbox's next commit, when none is out.
    fn send_outbox(&mut self, now: DateTime<Utc>, out: &mut Out) {
        if self.overflowed > 0 {
            out.log(
                Level::Error,
                format!(
                    "emr-edge dropped {} resumes or renewals: {OUTBOX_MAX} were waiting for etcd",
                    std::mem::take(&mut self.overflowed)
                ),
            );
        }
        while let Some((_, at, _)) = self.outbox.front() {
            if now - *at <= Duration::seconds(OUTBOX_PATIENCE_S) {
                break;
            }
            self.outbox.pop_front();
            out.log(
                Level::Error,
                "emr-edge gave up putting a resume or renewal in etcd's log after 60 s".into(),
            );
        }
        if self.sending.is_some() || now < self.outbox_retry_at {
            return;
        }
        // Until there is a lease, controls wait like any etcd trouble.
        let (Some((c, at, fence)), Some(lease)) = (self.outbox.front(), self.keeper.lease(now))
        else {
            return;
        };
        self.sent += 1;
        let entry = Entry {
            idempotency_key: format!(
                "control/{}/{}/{}",
                self.replica,
                at.timestamp_millis(),
                self.sent
            ),
            record: Record {
                fingerprint: String::new(),
                message: serde_json::to_value(ControlMessage { control: c.clone() })
                    .unwrap_or_default(),
            },
        };
        let op = self.sent;
        let request = match fence {
            Some(fence) => log::commit_fenced(&self.keys, &[entry], lease, fence),
            None => log::commit(&self.keys, &[entry], lease),
        };
        let call: HttpCall = self.gateway.call(op, request);
        self.sending = Some(op);
        out.calls.push((Callout::Outbox(op), call));
    }

    /// The outbox's commit answered: the control goes, or waits for the
    /// next try.
    fn outbox_answered(
        &mut self,
        op: OpId,
        result: &CallResult,
        now: DateTime<Utc>,
        out: &mut Out,
    ) {
        if self.sending != Some(op) {
            return;
        }
        self.sending = None;
        match crate::etcd::answer::txn(result) {
            // Its key is unique: whatever the commit found for it (created,
            // or there from an earlier try whose answer was lost), it is in
            // the log.
            Ok(txn) if txn.succeeded => {
                self.outbox.pop_front();
            }
            // The fence failed: another replica leads now, and this one's
            // settlement is not its to record.
            Ok(_) => {
                self.outbox.pop_front();
                out.log(
                    Level::Warn,
                    "emr-edge: a settlement was not recorded: another replica leads now".into(),
                );
            }
            Err(_) => self.outbox_retry_at = now + Duration::seconds(1),
        }
    }

    /// What `/emr/state` says of the cluster.
    pub(super) fn view(&self, now: DateTime<Utc>) -> Value {
        let leader = match self.election.role(now) {
            election::Role::Leader { .. } => Some(self.replica.clone()),
            election::Role::Follower { leader } => leader,
        };
        json!({
            "replica": self.replica,
            "leader": leader,
            "acting": self.acting,
            "logPosition": self.feed.position(),
            "logLag": self.feed.lag(),
            "etcd": self.etcd_failing.as_deref().unwrap_or("ok"),
        })
    }

    /// Why this replica cannot take webhooks, if etcd is failing.
    pub(super) fn problem(&self) -> Option<String> {
        self.etcd_failing
            .as_ref()
            .map(|f| format!("etcd is failing: {f}"))
    }
}

impl Service {
    /// Drives the election and the feed. Whether this replica may act on
    /// Genesys and the tools now: always, without a cluster.
    pub(super) fn drive_cluster(&mut self, now: DateTime<Utc>, out: &mut Out) -> bool {
        let Some(c) = &mut self.cluster else {
            return true;
        };
        // With etcd's auth on, nothing is asked of etcd without a token.
        if let Some(a) = &mut c.auth {
            let fx = a.poll(now);
            let waiting = a.token().is_none();
            self.auth_effects(fx, out);
            if waiting {
                return false;
            }
        }
        let Some(c) = &mut self.cluster else {
            return true;
        };
        let election_fx = c.election.poll(now);
        let feed_fx = c.feed.poll(now);
        let lease_fx = c.keeper.poll(now);
        c.send_outbox(now, out);
        self.election_effects(election_fx, now, out);
        self.feed_effects(feed_fx, now, out);
        self.lease_effects(lease_fx, out);
        let Some(c) = &mut self.cluster else {
            return true;
        };
        let acting = c.election.may_act(now) && c.feed.caught_up();
        if acting != c.acting {
            c.acting = acting;
            self.state_dirty = true;
            out.log(
                Level::Info,
                json!({"audit": "cluster", "at": crate::rfc3339::text(now),
                       "decision": if acting { "acting" } else { "not-acting" },
                       "replica": c.replica})
                .to_string(),
            );
            // A replica that starts acting reads every group again: another
            // leader may have changed them meanwhile.
            if let (true, Some(g)) = (acting, &mut self.genesys) {
                if g.started {
                    g.reconciler.mark_all(&self.ledger);
                }
            }
        }
        if acting {
            self.write_snapshot(now, out);
        }
        acting
    }

    /// The leader's snapshot, when one is due.
    fn write_snapshot(&mut self, now: DateTime<Utc>, out: &mut Out) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let position = c.feed.position();
        let election::Role::Leader { fence } = c.election.role(now) else {
            return;
        };
        if !c.snapshots.due(position, now) {
            return;
        }
        let body = snapshots::encode(&self.ledger, position);
        match c
            .snapshots
            .send((&c.gateway, &c.keys), (&body, position), &fence, now)
        {
            Ok(call) => out.calls.push((Callout::Snapshot(call.op), call)),
            Err(snapshots::TooLarge { first: false }) => {}
            Err(snapshots::TooLarge { first: true }) => out.log(
                Level::Error,
                format!(
                    "emr-edge cannot snapshot the open incidents in etcd: {} bytes is more \
                     than etcd takes in one request; a replica starting once their events \
                     have left the log will not know them (fewer open incidents, or a \
                     larger --max-request-bytes)",
                    body.len()
                ),
            ),
        }
    }

    /// A snapshot the feed handed on: what it holds that the ledger does
    /// not is put back, as recovery puts a row's incidents back.
    fn restore_snapshot(&mut self, s: &Snapshot, now: DateTime<Utc>, out: &mut Out) {
        let groups = match snapshots::decode(&s.body) {
            Ok(g) => g,
            Err(e) => {
                out.log(
                    Level::Error,
                    format!("emr-edge skipped etcd's snapshot: {e}"),
                );
                return;
            }
        };
        let held: usize = groups.iter().map(|(_, o)| o.len()).sum();
        let before = self.ledger.open_len();
        let effects = groups
            .into_iter()
            .map(|(group, incidents)| Effect::Ledger(Change::restore(group, incidents)))
            .collect();
        self.apply_effects(effects, now, out);
        let restored = self.ledger.open_len().saturating_sub(before);
        out.count(SNAPSHOT_RESTORED_METRIC, restored as u64);
        out.audit(json!({"audit": "cluster", "at": crate::rfc3339::text(now),
                         "decision": "snapshot-read", "position": s.position,
                         "incidents": held, "restored": restored}));
    }

    /// Tells the filters of a new lease for the log's entries, and of a
    /// new etcd token.
    pub(super) fn publish_for_filters(&mut self, store: &dyn SharedStore, out: &mut Out) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if let Some(lease) = c.unpublished.take() {
            out.check(
                retention::publish(store, lease),
                "publish the lease for the log's entries",
            );
        }
        if let Some(t) = c.unpublished_token.take() {
            out.check(token::publish(store, &t), "publish the etcd token");
        }
    }

    /// Puts the etcd token on this replica's calls to etcd, when auth is on.
    pub(super) fn authorize(&self, out: &mut Out) {
        let Some(t) = self
            .cluster
            .as_ref()
            .and_then(|c| c.auth.as_ref())
            .and_then(Authenticator::token)
        else {
            return;
        };
        for (callout, call) in &mut out.calls {
            if matches!(
                callout,
                Callout::Election(_)
                    | Callout::Feed(_)
                    | Callout::Outbox(_)
                    | Callout::Lease(_)
                    | Callout::Snapshot(_)
            ) {
                token::authorize(call, t);
            }
        }
    }

    fn auth_effects(&mut self, fx: Vec<token::Effect>, out: &mut Out) {
        for effect in fx {
            match effect {
                token::Effect::Call(call) => out.calls.push((Callout::Auth(call.op), call)),
                token::Effect::Token(t) => {
                    if let Some(c) = &mut self.cluster {
                        c.unpublished_token = Some(t);
                    }
                    self.etcd_recovered(out);
                }
                token::Effect::Failed(failure) => {
                    self.etcd_failed("cannot authenticate to etcd", &failure, out);
                }
            }
        }
    }

    fn lease_effects(&mut self, fx: Vec<retention::Effect>, out: &mut Out) {
        for effect in fx {
            match effect {
                retention::Effect::Call(call) => out.calls.push((Callout::Lease(call.op), call)),
                retention::Effect::Granted(lease) => {
                    if let Some(c) = &mut self.cluster {
                        c.unpublished = Some(lease);
                        c.lease_failing = false;
                    }
                }
                retention::Effect::Failed(failure) => {
                    failed(&failure, out);
                    let first = self
                        .cluster
                        .as_mut()
                        .is_some_and(|c| !std::mem::replace(&mut c.lease_failing, true));
                    if first {
                        out.log(
                            Level::Warn,
                            format!(
                                "emr-edge could not get a lease for its events from etcd: {failure}"
                            ),
                        );
                    }
                }
            }
        }
    }

    /// The answer to an etcd call.
    pub(super) fn cluster_answered(
        &mut self,
        callout: Callout,
        result: CallResult,
        now: DateTime<Utc>,
        out: &mut Out,
    ) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        if let (Some(a), true) = (&mut c.auth, token::rejected(&result)) {
            a.invalidate();
        }
        match callout {
            Callout::Auth(op) => {
                if let Some(a) = &mut c.auth {
                    let fx = a.on_result(op, &result, now);
                    self.auth_effects(fx, out);
                }
            }
            Callout::Election(op) => {
                let fx = c.election.on_result(op, result, now);
                self.election_effects(fx, now, out);
            }
            Callout::Feed(op) => {
                let fx = c.feed.on_result(op, result, now);
                if c.feed.healthy() {
                    self.etcd_recovered(out);
                }
                self.feed_effects(fx, now, out);
            }
            Callout::Outbox(op) => c.outbox_answered(op, &result, now, out),
            Callout::Lease(op) => {
                let fx = c.keeper.on_result(op, &result, now);
                self.lease_effects(fx, out);
            }
            Callout::Snapshot(op) => match c.snapshots.answered(op, &result) {
                Some(snapshots::Written::Done) => out.count(SNAPSHOTS_METRIC, 1),
                Some(snapshots::Written::Deposed) => out.log(
                    Level::Warn,
                    "emr-edge: a snapshot was not written: another replica leads now".into(),
                ),
                Some(snapshots::Written::Failed(failure)) => {
                    failed(&failure, out);
                    out.log(
                        Level::Warn,
                        format!("emr-edge could not write its snapshot to etcd: {failure}"),
                    );
                }
                None => {}
            },
            Callout::Genesys(_) | Callout::Itsm(_) => {}
        }
        self.drive(now, out);
    }

    fn election_effects(&mut self, fx: Vec<election::Effect>, _now: DateTime<Utc>, out: &mut Out) {
        for effect in fx {
            match effect {
                election::Effect::Call(call) => out.calls.push((Callout::Election(call.op), call)),
                election::Effect::Audit(line) => {
                    self.state_dirty = true;
                    out.audit(line);
                }
                election::Effect::Metric(m) => {
                    let sample = match m {
                        election::Metric::Leader(on) => Sample::Gauge(u64::from(on)),
                        election::Metric::LatencyMs(ms) => Sample::Histogram(ms),
                        _ => Sample::Count(1),
                    };
                    out.samples.push((m.name(), sample));
                }
            }
        }
    }

    fn feed_effects(&mut self, fx: Vec<feed::Effect>, now: DateTime<Utc>, out: &mut Out) {
        for effect in fx {
            match effect {
                feed::Effect::Call(call) => out.calls.push((Callout::Feed(call.op), call)),
                feed::Effect::Events(events) => {
                    let mut unreadable = 0;
                    let messages: Vec<QueueMessage> = events
                        .into_iter()
                        .filter_map(|e| {
                            // The same bytes the intake would have queued.
                            let m = serde_json::to_vec(&e.record.message)
                                .ok()
                                .and_then(|b| QueueMessage::decode(&b).ok());
                            unreadable += u64::from(m.is_none());
                            m
                        })
                        .collect();
                    self.take_messages(messages, unreadable, Origin::Log, now, out);
                }
                feed::Effect::Snapshot(s) => self.restore_snapshot(&s, now, out),
                feed::Effect::Unreadable(n) => {
                    out.count(super::DECODE_ERRORS_METRIC, n as u64);
                }
                feed::Effect::Failed(failure) => {
                    self.etcd_failed("cannot read the event log in etcd", &failure, out);
                }
            }
        }
        if let Some(c) = &self.cluster {
            let lag = u64::try_from(c.feed.lag()).unwrap_or(0);
            out.samples.push((LAG_GAUGE, Sample::Gauge(lag)));
        }
    }

    /// The leader's settlement of a reconcile, put in the log for the other
    /// replicas' ledgers: the events it settled, exactly.
    pub(super) fn share_settlement(
        &mut self,
        (group, outcome, genesys): (GroupId, Settle, Option<GenesysRef>),
        keys: &[IncidentKey],
        now: DateTime<Utc>,
    ) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        // Fenced on the leadership that made the settlement.
        let election::Role::Leader { fence } = c.election.role(now) else {
            return;
        };
        let events: Vec<(IncidentKey, i64)> = keys
            .iter()
            .filter_map(|k| {
                let e = self.ledger.get(k)?.events.last()?;
                Some((k.clone(), e.received_at.timestamp_millis()))
            })
            .collect();
        if events.is_empty() {
            return;
        }
        c.post_fenced(
            Control::Settled {
                group,
                events,
                failed: match outcome {
                    Settle::Applied => None,
                    Settle::Failed(reason) => Some(reason),
                },
                genesys: genesys.and_then(|g| serde_json::to_value(g).ok()),
            },
            now,
            Some(fence),
        );
    }

    /// What the leader's status poll found, put in the log for every
    /// replica's ledger (its own too, when it reads it back), fenced on
    /// that leadership.
    pub(super) fn share_poll(&mut self, change: &PollChange, now: DateTime<Utc>) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        if let election::Role::Leader { fence } = c.election.role(now) {
            c.post_fenced(change.to_control(now), now, Some(fence));
        }
    }

    /// Reading the log or authenticating failed: counted, said at the
    /// first failure of a streak, and a reason this replica is unready.
    fn etcd_failed(&mut self, doing: &str, failure: &Failure, out: &mut Out) {
        failed(failure, out);
        let Some(c) = &mut self.cluster else {
            return;
        };
        if c.etcd_failing.is_none() {
            out.log(Level::Error, format!("emr-edge {doing}: {failure}"));
            self.state_dirty = true;
        }
        c.etcd_failing = Some(failure.to_string());
    }

    fn etcd_recovered(&mut self, out: &mut Out) {
        if let Some(c) = &mut self.cluster {
            if c.etcd_failing.take().is_some() {
                out.log(
                    Level::Info,
                    "emr-edge reads the event log in etcd again".into(),
                );
                self.state_dirty = true;
            }
        }
    }
}

/// Counts a failed etcd call by its class.
fn failed(failure: &Failure, out: &mut Out) {
    out.samples.push((
        election::Metric::Failure(failure.class()).name(),
        Sample::Count(1),
    ));
}

#[cfg(test)]
mod tests;
