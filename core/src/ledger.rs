//! The incident ledger: every incident the service knows, its latest event,
//! and from that the desired state of each emergency group.
//!
//! The ledger lives in the singleton service. Its rules (docs/genesys.md, "What emr-edge does to a group"):
//! - an incident is keyed by source + id; its newest event *by time* wins,
//!   so a resolution that overtakes its activation still resolves. An
//!   event's time is the sender's `timestamp`, but never later than when we
//!   received it: a sender's clock ahead of ours (or a forged future date)
//!   must not outrank what is received after it (RELIABILITY.md, hostile senders, #8);
//! - a group is desired enabled iff at least one open, unexpired incident
//!   maps to it; its queue list is the open incidents' queues in priority,
//!   then arrival, order, without repeats, at most [`MAX_GROUP_QUEUES`]
//!   (kept per group as incidents change, see `groups`);
//! - every event ends in a terminal, visible status;
//! - closed incidents are kept for the status endpoint within
//!   [`Retention`], fairly across sources, and then as tombstones, so that
//!   a replay older than an incident's last event never reopens it.
//!
//! Expiry uses a `BTreeSet<(expiry, key)>` purged as time passes (the idea of
//! mini-redis's TTL index).

mod apply;
mod groups;
mod incident;
mod restore;
mod tombstones;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::event::{
    GroupId, IncidentKey, IncidentType, Priority, QueueId, QueuedEvent, RoutingMode, Source,
};

use groups::GroupIndex;
pub use groups::MAX_GROUP_QUEUES;
pub use restore::OpenIncident;
use tombstones::Tombstones;

pub use crate::genesys::answer::GenesysRef;
use incident::{happened_at, push_event, Judged};
pub use incident::{
    Applied, EventRecord, EventStatus, Incident, IncidentState, Via, MAX_EVENTS_PER_INCIDENT,
};

/// Desired state of one emergency group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Desired {
    pub enabled: bool,
    /// Open incidents' queues in priority, then arrival, order, no repeats:
    /// the first [`MAX_GROUP_QUEUES`].
    pub queues: Vec<QueueId>,
    /// How many distinct queues the open incidents list; more than
    /// `queues.len()` when the list was cut at its bound.
    pub queues_total: usize,
    /// Open incidents driving the group, in the same order.
    pub incidents: Vec<IncidentKey>,
}

/// How many entries of a list `GET /emr/state` and the audit lines show;
/// the rest is counted. A group's list can be a thousand incidents long.
pub const VIEW_LIST_MAX: usize = 25;

impl Desired {
    /// For `GET /emr/state`: the lists cut at [`VIEW_LIST_MAX`], with their
    /// totals (the whole of each incident is on `GET /emr/status/{id}`).
    pub fn view(&self) -> serde_json::Value {
        let incidents: Vec<serde_json::Value> = self
            .incidents
            .iter()
            .take(VIEW_LIST_MAX)
            .map(|k| serde_json::json!({"source": k.source, "correlationId": k.id}))
            .collect();
        serde_json::json!({
            "enabled": self.enabled,
            "queues": self.queues.iter().take(VIEW_LIST_MAX).collect::<Vec<_>>(),
            "queuesTotal": self.queues_total,
            "incidents": incidents,
            "incidentsTotal": self.incidents.len(),
        })
    }
}

/// The desired state of a group no incident ever mapped to.
static NOTHING_WANTED: Desired = Desired {
    enabled: false,
    queues: Vec::new(),
    queues_total: 0,
    incidents: Vec::new(),
};

/// Limits on what the ledger keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Closed incidents are kept (for the status endpoint) this long.
    pub closed_seconds: i64,
    /// And at most this many, taken from the source that holds the most,
    /// oldest first: one source's flood pushes out its own first.
    pub max_closed: usize,
    /// At most this many incidents open at once, whatever the sources'
    /// shares say: the memory bound. The intake keeps each source within its
    /// share (`crate::quota`), so an incident refused here (recorded
    /// `FAILED`, state `REFUSED`) takes a race between a source's
    /// resolution and its reopening of the same incident at its limit.
    pub max_open: usize,
    /// Tombstones of pruned incidents are kept this long: the replay window
    /// plus the future skew, beyond which the intake refuses an event by
    /// its time anyway.
    pub tombstone_seconds: i64,
    /// And at most this many per source, oldest first.
    pub max_tombstones: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            closed_seconds: 86_400,
            max_closed: 2_000,
            max_open: 1_000,
            tombstone_seconds: 86_400 + 300,
            max_tombstones: 10_000,
        }
    }
}

/// The closed, settled incidents pruning may drop, per source, oldest
/// `updated_at` first, so that pruning takes from the fronts instead of
/// walking the ledger.
#[derive(Debug, Default, PartialEq, Eq)]
struct Prunable {
    sources: BTreeMap<Source, BTreeSet<(DateTime<Utc>, IncidentKey)>>,
}

impl Prunable {
    fn insert(&mut self, at: DateTime<Utc>, key: &IncidentKey) {
        self.sources
            .entry(key.source)
            .or_default()
            .insert((at, key.clone()));
    }

    fn remove(&mut self, at: DateTime<Utc>, key: &IncidentKey) {
        if let Some(s) = self.sources.get_mut(&key.source) {
            s.remove(&(at, key.clone()));
        }
    }

    /// How many are held: a sum over the few sources.
    fn len(&self) -> usize {
        self.sources.values().map(BTreeSet::len).sum()
    }

    /// The next incident to drop: the oldest one updated before `horizon`,
    /// else, while more than `max` are held, the oldest of the source that
    /// holds the most.
    fn next(&mut self, horizon: DateTime<Utc>, max: usize) -> Option<IncidentKey> {
        let fronts = self
            .sources
            .iter()
            .filter_map(|(s, set)| set.first().map(|(at, _)| (*at, set.len(), *s)));
        let stale = fronts.clone().filter(|(at, _, _)| *at < horizon).min();
        let source = match stale {
            Some((_, _, s)) => s,
            None if self.len() > max => fronts.max_by_key(|(_, n, _)| *n).map(|(_, _, s)| s)?,
            None => return None,
        };
        let (_, key) = self.sources.get_mut(&source)?.pop_first()?;
        Some(key)
    }

    /// Every entry (for the proptests, which run natively only).
    #[cfg(all(test, not(target_arch = "wasm32")))]
    fn all(&self) -> BTreeSet<(DateTime<Utc>, IncidentKey)> {
        self.sources.values().flatten().cloned().collect()
    }
}

/// All incidents, open and recently closed.
#[derive(Debug)]
pub struct Ledger {
    incidents: HashMap<IncidentKey, Incident>,
    /// Open incidents by expiry.
    expiries: BTreeSet<(DateTime<Utc>, IncidentKey)>,
    /// What pruning may drop — closed incidents whose every event is
    /// settled. Kept in step by [`Ledger::reindex`] after every change to
    /// an incident.
    prunable: Prunable,
    /// Every group an incident ever mapped to, with its open incidents: a
    /// group whose last incident closed must still be driven back to
    /// disabled. Kept in step by [`Ledger::index`] and [`Ledger::unindex`]
    /// around every change to an open incident.
    groups: BTreeMap<GroupId, GroupIndex>,
    /// Open incidents per source, for the intake's shares.
    open_by_source: BTreeMap<Source, usize>,
    tombstones: Tombstones,
    seq: u64,
    retention: Retention,
    dropped: Vec<IncidentKey>,
    left: Vec<GroupId>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new(Retention::default())
    }
}

impl Ledger {
    pub fn new(retention: Retention) -> Self {
        Self {
            incidents: HashMap::new(),
            expiries: BTreeSet::new(),
            prunable: Prunable::default(),
            groups: BTreeMap::new(),
            open_by_source: BTreeMap::new(),
            tombstones: Tombstones::new(retention.max_tombstones),
            seq: 0,
            retention,
            dropped: Vec::new(),
            left: Vec::new(),
        }
    }

    pub fn get(&self, key: &IncidentKey) -> Option<&Incident> {
        self.incidents.get(key)
    }

    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values()
    }

    pub fn len(&self) -> usize {
        self.incidents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty()
    }

    /// Incidents open now.
    pub fn open_len(&self) -> usize {
        self.expiries.len()
    }

    /// Incidents of `source` open now.
    pub fn open_of(&self, source: Source) -> usize {
        self.open_by_source.get(&source).copied().unwrap_or(0)
    }

    /// Tombstones `source` holds.
    #[cfg(test)]
    pub fn tombstones_of(&self, source: Source) -> usize {
        self.tombstones.len(source)
    }

    /// Records `q` for the group it maps to. Returns what changed and, for
    /// any change to desired state, the group to reconcile.
    pub fn apply(&mut self, q: &QueuedEvent, group: GroupId, now: DateTime<Utc>) -> Applied {
        let key = q.event.incident_key();
        let before = self.incidents.get(&key).map(|i| i.updated_at);
        let received_at = DateTime::from_timestamp_millis(q.received_ms).unwrap_or(now);
        let at = happened_at(q.event.timestamp, received_at);
        let judged = self
            .incidents
            .get(&key)
            .map(|i| i.judge(q.event.routing_mode, q.event.timestamp, at));
        // A duplicate or an older event changes nothing a group sees: the
        // group index is left alone (and its cached desired state with it).
        if judged == Some(Judged::Duplicate) && q.event.routing_mode == RoutingMode::Active {
            // Alertmanager re-sends a firing alert as it was, every
            // `repeat_interval`, for as long as it fires.
            if self.renew(&key, chrono::Duration::zero(), now).is_some() {
                return Applied::Renewed;
            }
        }
        let moot = matches!(judged, Some(Judged::Duplicate | Judged::Older));
        if !moot {
            self.unindex(&key);
        }
        let applied = self.apply_event(q, &key, group, received_at, judged, now);
        if !moot {
            self.index(&key);
        }
        self.reindex(&key, before);
        // Bound memory here, not only on a timer: under a flood the timer
        // may run late. Some slack lets one prune drop many at once, so the
        // status board's buckets lose them together.
        let closed = self.incidents.len().saturating_sub(self.expiries.len());
        let max = self.retention.max_closed;
        if closed > max + max / 8 + 16 {
            let dropped = self.prune(now);
            self.dropped.extend(dropped);
        }
        applied
    }

    /// Keys pruned while applying events since the last call: their
    /// published status must go too.
    pub fn take_dropped(&mut self) -> Vec<IncidentKey> {
        std::mem::take(&mut self.dropped)
    }

    /// Groups an open incident left for another since the last call (an
    /// event with a new priority or type mapped it elsewhere): each needs a
    /// reconcile now, like the group the incident went to, not at its next
    /// watchdog check.
    pub fn take_left(&mut self) -> Vec<GroupId> {
        std::mem::take(&mut self.left)
    }

    /// Closes every open incident whose ttl has run out by `now`; returns
    /// them (their groups need a reconcile).
    pub fn expire(&mut self, now: DateTime<Utc>) -> Vec<IncidentKey> {
        let mut expired = Vec::new();
        while let Some((at, key)) = self.expiries.first().cloned() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            self.unindex(&key);
            if let Some(inc) = self.incidents.get_mut(&key) {
                let before = inc.updated_at;
                inc.state = IncidentState::Expired;
                inc.updated_at = now;
                if let Some(e) = inc.latest_mut() {
                    e.status = EventStatus::Expired;
                    e.reason = Some("the incident's ttl ran out before it was resolved".into());
                }
                self.reindex(&key, Some(before));
                expired.push(key);
            }
        }
        expired
    }

    /// The tool's status API says the open incident `key` is still open
    /// (docs/convergence.md, "TTL"): its ttl is a backstop for when polling fails, not a
    /// deadline. The expiry moves to `ttl` after `now`, and never closer
    /// than `at_least` (two poll periods: one failed poll must not let it
    /// lapse). It moves only in steps of at least a quarter of the ttl, so
    /// the data-table row that persists it for a restart is rewritten at
    /// most a few times per ttl, not at every poll. Returns the group when
    /// the expiry moved (its row is to be refreshed).
    pub fn renew(
        &mut self,
        key: &IncidentKey,
        at_least: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Option<GroupId> {
        let inc = self.incidents.get_mut(key).filter(|i| i.is_open())?;
        let old = inc.expires_at?;
        let ttl = chrono::Duration::seconds(i64::from(inc.ttl_seconds));
        let until = now + ttl.max(at_least);
        if until - old < ttl / 4 {
            return None;
        }
        self.expiries.remove(&(old, key.clone()));
        self.expiries.insert((until, key.clone()));
        inc.expires_at = Some(until);
        Some(inc.group.clone())
    }

    /// What `/emr/state` shows of one incident beside its group: who holds
    /// it, what it is about, since when and until when.
    pub fn brief(&self, key: &IncidentKey) -> serde_json::Value {
        let Some(inc) = self.incidents.get(key) else {
            return serde_json::json!({"source": key.source, "correlationId": key.id});
        };
        let since = inc
            .events
            .iter()
            .filter(|e| e.routing_mode == RoutingMode::Active)
            .map(|e| happened_at(e.timestamp, e.received_at))
            .min();
        let mut v = serde_json::json!({
            "source": key.source,
            "correlationId": key.id,
            "priority": inc.priority,
            "since": since.map(crate::rfc3339::text),
            "expiresAt": inc.expires_at.map(crate::rfc3339::text),
        });
        if let (Some(obj), Some(about)) = (v.as_object_mut(), &inc.about) {
            if let Some(t) = &about.title {
                obj.insert("title".into(), t.clone().into());
            }
            if let Some(l) = &about.link {
                obj.insert("link".into(), l.clone().into());
            }
        }
        v
    }

    #[cfg(test)]
    /// When the next open incident expires, for scheduling.
    pub fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// Every group the ledger has ever driven.
    pub fn groups(&self) -> impl Iterator<Item = &GroupId> {
        self.groups.keys()
    }

    /// Whether an incident ever mapped to `group`.
    pub fn knows_group(&self, group: &GroupId) -> bool {
        self.groups.contains_key(group)
    }

    /// The desired state of every known group, by group id.
    pub fn desired(&self) -> impl Iterator<Item = (&GroupId, &Desired)> {
        self.groups
            .iter()
            .map(|(g, index)| (g, index.desired(&self.incidents)))
    }

    /// The desired state of one group: computed once per change to it.
    pub fn desired_for(&self, group: &GroupId) -> &Desired {
        self.groups
            .get(group)
            .map_or(&NOTHING_WANTED, |index| index.desired(&self.incidents))
    }

    /// Marks the processing events of `group`'s incidents as done: applied
    /// when Genesys now matches, or failed with `reason`. Returns the keys it
    /// touched, whose published status must be refreshed.
    pub fn settle_group(
        &mut self,
        group: &GroupId,
        outcome: Settle,
        genesys: Option<GenesysRef>,
        now: DateTime<Utc>,
    ) -> Vec<IncidentKey> {
        let mut touched = Vec::new();
        let mut before = Vec::new();
        for (key, inc) in self.incidents.iter_mut().filter(|(_, i)| &i.group == group) {
            if let Some(updated_at) = settle_latest(inc, None, &outcome, &genesys, now) {
                touched.push(key.clone());
                before.push(updated_at);
            }
        }
        for (key, at) in touched.iter().zip(before) {
            self.reindex(key, Some(at));
        }
        touched
    }

    /// Settles exactly `events` (an incident, and its event's receipt time
    /// in ms) that are still processing: another replica's settlement
    /// (cluster mode), so an event that arrived since is left alone. Doing
    /// it twice changes nothing. Returns the incidents changed.
    pub fn settle_events(
        &mut self,
        events: &[(IncidentKey, i64)],
        outcome: Settle,
        genesys: Option<GenesysRef>,
        now: DateTime<Utc>,
    ) -> Vec<IncidentKey> {
        let mut touched = Vec::new();
        for (key, received_ms) in events {
            let Some(inc) = self.incidents.get_mut(key) else {
                continue;
            };
            if let Some(at) = settle_latest(inc, Some(*received_ms), &outcome, &genesys, now) {
                self.reindex(key, Some(at));
                touched.push(key.clone());
            }
        }
        touched
    }

    /// The open incidents of `group`, most urgent (then oldest) first: what
    /// the data-table row persists for a restart.
    pub fn open_incidents_of(&self, group: &GroupId) -> Vec<&Incident> {
        self.groups.get(group).map_or_else(Vec::new, |index| {
            index.open().filter_map(|k| self.incidents.get(k)).collect()
        })
    }

    /// The tool's status API says the open incident `key` is resolved: records
    /// a resolution (`via: STATUS_POLL`, `detail` saying what the tool said)
    /// ordered just after the newest event we had. Returns its group, to
    /// reconcile, or `None` when the incident is not open (anymore).
    pub fn resolve_by_poll(
        &mut self,
        key: &IncidentKey,
        detail: String,
        now: DateTime<Utc>,
    ) -> Option<GroupId> {
        let before = self.incidents.get(key).map(|i| i.updated_at);
        self.unindex(key);
        let group = self.resolve_open_by_poll(key, detail, now);
        self.index(key);
        self.reindex(key, before);
        group
    }

    fn resolve_open_by_poll(
        &mut self,
        key: &IncidentKey,
        detail: String,
        now: DateTime<Utc>,
    ) -> Option<GroupId> {
        let inc = self.incidents.get_mut(key).filter(|i| i.is_open())?;
        // Our clock, unless the tool's own event time is ahead of it: the
        // resolution must be the newest event, and a reopening the tool sends
        // later (with its later time) must still win over it.
        let timestamp = now.max(inc.last_event_at + chrono::Duration::milliseconds(1));
        if let Some(old) = inc.expires_at {
            self.expiries.remove(&(old, key.clone()));
        }
        if let Some(prev) = inc.latest_mut() {
            if prev.status == EventStatus::Processing {
                prev.status = EventStatus::Superseded;
                prev.reason = Some("a newer event for this incident arrived".into());
            }
        }
        inc.state = IncidentState::Resolved;
        inc.routing_mode = RoutingMode::Resolved;
        inc.last_event_at = timestamp;
        inc.updated_at = now;
        push_event(
            &mut inc.events,
            EventRecord {
                routing_mode: RoutingMode::Resolved,
                timestamp,
                received_at: now,
                status: EventStatus::Processing,
                reason: None,
                delivery_id: None,
                via: Some(Via::StatusPoll),
                detail: Some(detail),
            },
        );
        Some(inc.group.clone())
    }

    /// Drops closed incidents past retention: those closed longer than
    /// `closed_seconds`, and those beyond `max_closed` (from the source
    /// that holds the most, oldest first). Each leaves a tombstone.
    ///
    /// Returns the keys dropped, so their published status can go too.
    pub fn prune(&mut self, now: DateTime<Utc>) -> Vec<IncidentKey> {
        let horizon = now - chrono::Duration::seconds(self.retention.closed_seconds);
        let mut dropped = Vec::new();
        // Taken from the fronts of the index, not found by a walk of the
        // whole ledger (a millisecond's stall of the service in Envoy every
        // few hundred events under a flood).
        while let Some(key) = self.prunable.next(horizon, self.retention.max_closed) {
            if let Some(inc) = self.incidents.remove(&key) {
                self.tombstones.bury(&key, inc.last_event_at, now);
            }
            dropped.push(key);
        }
        self.tombstones
            .expire(now - chrono::Duration::seconds(self.retention.tombstone_seconds));
        dropped
    }

    /// Brings the index of prunable incidents in line with `key`'s incident
    /// after a change to it; `before` is its `updated_at` before the change,
    /// if it existed.
    fn reindex(&mut self, key: &IncidentKey, before: Option<DateTime<Utc>>) {
        if let Some(at) = before {
            self.prunable.remove(at, key);
        }
        if let Some(inc) = self.incidents.get(key).filter(|i| i.is_prunable()) {
            self.prunable.insert(inc.updated_at, key);
        }
    }

    /// Takes `key`'s incident out of its group's open incidents, before a
    /// change to it. [`Ledger::index`] puts it back after.
    fn unindex(&mut self, key: &IncidentKey) {
        let Some(inc) = self.incidents.get(key).filter(|i| i.is_open()) else {
            return;
        };
        if let Some(index) = self.groups.get_mut(&inc.group) {
            index.remove(inc.rank(), &inc.queues);
        }
        if let Some(n) = self.open_by_source.get_mut(&key.source) {
            *n = n.saturating_sub(1);
        }
    }

    /// Puts `key`'s incident among its group's open incidents, if open.
    fn index(&mut self, key: &IncidentKey) {
        let Some(inc) = self.incidents.get(key).filter(|i| i.is_open()) else {
            return;
        };
        if !self.groups.contains_key(&inc.group) {
            self.groups.insert(inc.group.clone(), GroupIndex::default());
        }
        if let Some(index) = self.groups.get_mut(&inc.group) {
            index.add(inc.rank(), key, &inc.queues);
        }
        *self.open_by_source.entry(key.source).or_default() += 1;
    }
}

/// Settles `inc`'s latest event if it is still processing (and, with
/// `received_ms`, was received then). Returns the incident's previous
/// `updated_at` when it changed, for reindexing.
fn settle_latest(
    inc: &mut Incident,
    received_ms: Option<i64>,
    outcome: &Settle,
    genesys: &Option<GenesysRef>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let updated_at = inc.updated_at;
    let e = inc.latest_mut()?;
    if e.status != EventStatus::Processing
        || received_ms.is_some_and(|ms| e.received_at.timestamp_millis() != ms)
    {
        return None;
    }
    match outcome {
        Settle::Applied => {
            e.status = EventStatus::Applied;
            e.reason = None;
        }
        Settle::Failed(reason) => {
            e.status = EventStatus::Failed;
            e.reason = Some(reason.clone());
        }
    }
    inc.updated_at = now;
    if genesys.is_some() {
        inc.genesys.clone_from(genesys);
    }
    Some(updated_at)
}

/// The result of a reconcile, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    Applied,
    Failed(String),
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props;
