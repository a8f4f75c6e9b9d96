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

mod groups;
mod tombstones;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::event::{
    About, CorrelationId, GroupId, IncidentKey, IncidentType, Priority, QueueId, QueuedEvent,
    RoutingMode, Source,
};
use crate::recovery::PersistedIncident;

pub use groups::MAX_GROUP_QUEUES;
use groups::{GroupIndex, Rank};
use tombstones::Tombstones;

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IncidentState {
    Open,
    Resolved,
    /// Its `timestamp + ttl` passed with no resolution.
    Expired,
    /// The ledger had no room for it when it arrived: never open, its event
    /// `FAILED` with the reason. The intake refuses what its source has no
    /// room for, so this is only the last line of defence (see
    /// [`Retention::max_open`]).
    Refused,
}

/// How far an event has got. `Processing` is the only non-terminal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventStatus {
    /// Accepted; Genesys does not reflect it yet.
    Processing,
    /// Genesys reflects it.
    Applied,
    /// Genesys refused it for good (the reason says why).
    Failed,
    /// A newer event for the same incident made it moot.
    Superseded,
    /// The incident's ttl ran out.
    Expired,
    /// Recorded, and changed nothing: a resolution (or a release) of an
    /// incident that was never open here. The reason says so.
    Ignored,
}

impl EventStatus {
    pub fn is_terminal(self) -> bool {
        self != EventStatus::Processing
    }
}

/// When an event counts as having happened, for ordering: the sender's
/// time, but never later than our receipt of it.
fn happened_at(timestamp: DateTime<Utc>, received_at: DateTime<Utc>) -> DateTime<Utc> {
    timestamp.min(received_at)
}

/// One event as the ledger remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub routing_mode: RoutingMode,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub timestamp: DateTime<Utc>,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub received_at: DateTime<Utc>,
    pub status: EventStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// Where an event that no webhook delivered came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    /// What that source said (e.g. the ITSM's status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl EventRecord {
    /// Its place among the incident's events ([`happened_at`]). An event
    /// emr-edge made itself (`via`) is dated by our own clock already.
    fn order(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        match self.via {
            Some(_) => (self.timestamp, self.received_at),
            None => (
                happened_at(self.timestamp, self.received_at),
                self.received_at,
            ),
        }
    }
}

/// How an event reached the ledger other than by a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Via {
    /// The tool's status API said the incident is resolved (its resolution
    /// webhook never came).
    StatusPoll,
    /// Rebuilt at start from the data-table row (after a restart).
    Recovery,
    /// A group found enabled by our own client at start, with nothing
    /// persisted to explain it: kept on until it expires.
    Adopted,
}

/// What Genesys answered when it last acted for this incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GenesysRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_modified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

/// Events remembered per incident (the newest ones).
pub const MAX_EVENTS_PER_INCIDENT: usize = 16;

/// One incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    #[serde(rename = "correlationId")]
    pub id: CorrelationId,
    pub source: crate::event::Source,
    pub incident_type: IncidentType,
    pub group: GroupId,
    #[serde(rename = "targetQueueIds")]
    pub queues: Vec<QueueId>,
    pub priority: Priority,
    pub state: IncidentState,
    /// The newest event's routing mode and time (its `timestamp`, or when
    /// it was received if that was earlier).
    pub routing_mode: RoutingMode,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub last_event_at: DateTime<Utc>,
    /// When it lapses unless heard of again: set while it is (or when it
    /// was last) open; an incident never open has none.
    #[serde(
        serialize_with = "crate::rfc3339::serialize_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<DateTime<Utc>>,
    /// Its newest activation's ttl: how far a status poll that says the
    /// incident is still open pushes its expiry ([`Ledger::renew`]).
    pub ttl_seconds: u32,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
    /// Arrival order, for queue ordering among equal priorities.
    #[serde(skip)]
    pub seq: u64,
    pub events: Vec<EventRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub genesys: Option<GenesysRef>,
    /// Its title and link, from the newest event that carried them.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub about: Option<About>,
}

impl Incident {
    pub fn key(&self) -> IncidentKey {
        IncidentKey {
            source: self.source,
            id: self.id.clone(),
        }
    }

    /// The status of the newest event: the incident's status.
    pub fn status(&self) -> EventStatus {
        self.latest().map_or(EventStatus::Processing, |e| e.status)
    }

    /// The newest event.
    pub fn latest(&self) -> Option<&EventRecord> {
        self.events.iter().max_by_key(|e| e.order())
    }

    fn latest_mut(&mut self) -> Option<&mut EventRecord> {
        self.events.iter_mut().max_by_key(|e| e.order())
    }

    pub fn is_open(&self) -> bool {
        self.state == IncidentState::Open
    }

    /// Its place in its group's order: priority, then arrival.
    fn rank(&self) -> Rank {
        (self.priority, self.seq)
    }

    /// How an event of `mode`, dated `timestamp` and happened `at`, compares
    /// with what the incident has: the same event again, an older one (an
    /// activation tied with a resolution loses too, the safer reading of a
    /// tie), or a newer one.
    fn judge(&self, mode: RoutingMode, timestamp: DateTime<Utc>, at: DateTime<Utc>) -> Judged {
        if self
            .events
            .iter()
            .any(|e| e.timestamp == timestamp && e.routing_mode == mode)
        {
            Judged::Duplicate
        } else if at < self.last_event_at
            || (at == self.last_event_at && mode == RoutingMode::Active)
        {
            Judged::Older
        } else {
            Judged::Newer
        }
    }

    /// Closed, and nothing about it left to settle: retention may drop it.
    fn is_prunable(&self) -> bool {
        !self.is_open() && self.events.iter().all(|e| e.status.is_terminal())
    }
}

/// An event against what its incident already has ([`Incident::judge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judged {
    Duplicate,
    Older,
    Newer,
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new incident opened (or a known one reopened).
    Opened,
    /// An open incident's details changed (queues, ttl, …).
    Updated,
    Resolved,
    /// A resolution for an incident never seen: recorded, changes nothing.
    ResolvedUnknown,
    /// Older than what the ledger has for the incident: recorded as superseded.
    Stale,
    /// The same event again (same mode and timestamp): nothing changes.
    Duplicate,
    /// The same activation again, of an incident still open: the tool says
    /// it is open, so its ttl runs again from now ([`Ledger::renew`]). Only
    /// its expiry changed (the group's row persists it).
    Renewed,
    /// A new incident while [`Retention::max_open`] are already open:
    /// recorded as failed so it is visible, never silently dropped.
    Full,
}

impl Applied {
    /// The audit line for one recorded event (`"audit": "event"`): what
    /// arrived, for which group, and what it did. Holds no secret.
    pub fn audit_line(
        self,
        q: &QueuedEvent,
        group: &GroupId,
        now: DateTime<Utc>,
    ) -> serde_json::Value {
        serde_json::json!({
            "audit": "event",
            "at": crate::rfc3339::text(now),
            "incident": q.event.incident_key().to_string(),
            "routingMode": q.event.routing_mode,
            "timestamp": crate::rfc3339::text(q.event.timestamp),
            "group": group,
            "deliveryId": q.delivery_id,
            "outcome": format!("{self:?}"),
        })
    }
}

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

    fn apply_event(
        &mut self,
        q: &QueuedEvent,
        key: &IncidentKey,
        group: GroupId,
        received_at: DateTime<Utc>,
        judged: Option<Judged>,
        now: DateTime<Utc>,
    ) -> Applied {
        let arrival = Arrival::of(q, received_at, now);
        if !self.groups.contains_key(&group) {
            self.groups.insert(group.clone(), GroupIndex::default());
        }
        match judged {
            None => self.first_event(key, group, arrival),
            Some(Judged::Duplicate) => Applied::Duplicate,
            Some(Judged::Older) => self.older_event(key, arrival),
            Some(Judged::Newer) => self.newer_event(key, group, arrival),
        }
    }

    /// The first event of an incident the ledger does not hold: it opens
    /// (or, expired already, is recorded closed), or it is a resolution of
    /// something never open, a replay of a pruned incident (its tombstone
    /// says so), or refused for want of room.
    fn first_event(&mut self, key: &IncidentKey, group: GroupId, a: Arrival<'_>) -> Applied {
        let ev = &a.q.event;
        self.seq += 1;
        // Pruned already: its tombstone still says when it was last heard
        // of, and an event no newer is a replay.
        let buried = self.tombstones.last_event(key);
        let stale = buried.is_some_and(|last| {
            a.at < last || (a.at == last && ev.routing_mode == RoutingMode::Active)
        });
        if !stale {
            self.tombstones.lift(key);
        }
        let full = self.expiries.len() >= self.retention.max_open;
        let (state, outcome, status) = match ev.routing_mode {
            _ if stale => (
                IncidentState::Resolved,
                Applied::Stale,
                EventStatus::Superseded,
            ),
            RoutingMode::Active if full => {
                (IncidentState::Refused, Applied::Full, EventStatus::Failed)
            }
            RoutingMode::Active if a.expires_at > a.now => (
                IncidentState::Open,
                Applied::Opened,
                EventStatus::Processing,
            ),
            RoutingMode::Active => (
                IncidentState::Expired,
                Applied::Opened,
                EventStatus::Expired,
            ),
            // Nothing to undo: the resolution is already true.
            RoutingMode::Resolved => (
                IncidentState::Resolved,
                Applied::ResolvedUnknown,
                EventStatus::Ignored,
            ),
        };
        let reason = match outcome {
            Applied::Full => Some(format!(
                "refused: {} incidents are already open, the most the ledger holds",
                self.retention.max_open
            )),
            Applied::Stale => {
                Some("older than this incident's last event, which closed it: a replay".into())
            }
            Applied::ResolvedUnknown => {
                Some("this incident was never open here: nothing to switch off".into())
            }
            _ => None,
        };
        let inc = Incident {
            id: ev.correlation_id.clone(),
            source: ev.source,
            incident_type: ev.incident_type.clone(),
            group,
            queues: ev.target_queue_ids.clone(),
            priority: ev.priority,
            state,
            routing_mode: if stale {
                RoutingMode::Resolved
            } else {
                ev.routing_mode
            },
            last_event_at: buried.filter(|_| stale).unwrap_or(a.at),
            expires_at: matches!(state, IncidentState::Open | IncidentState::Expired)
                .then_some(a.expires_at),
            ttl_seconds: ev.ttl_seconds,
            updated_at: a.now,
            seq: self.seq,
            events: vec![EventRecord {
                status,
                reason,
                ..a.record()
            }],
            genesys: None,
            about: ev.about.clone(),
        };
        if state == IncidentState::Open {
            self.expiries.insert((a.expires_at, key.clone()));
        }
        self.incidents.insert(key.clone(), inc);
        outcome
    }

    /// An event older than what the incident has: recorded, moot.
    fn older_event(&mut self, key: &IncidentKey, a: Arrival<'_>) -> Applied {
        let Some(inc) = self.incidents.get_mut(key) else {
            return Applied::Stale;
        };
        push_event(
            &mut inc.events,
            EventRecord {
                status: EventStatus::Superseded,
                reason: Some("a newer event for this incident was already recorded".into()),
                ..a.record()
            },
        );
        inc.updated_at = a.now;
        Applied::Stale
    }

    /// The newest event of a known incident: it decides the incident's
    /// state, group, priority and queues.
    fn newer_event(&mut self, key: &IncidentKey, group: GroupId, a: Arrival<'_>) -> Applied {
        let ev = &a.q.event;
        let Some(inc) = self.incidents.get_mut(key) else {
            return self.first_event(key, group, a);
        };
        // Whatever the previous newest event was waiting for is moot now.
        if let Some(prev) = inc.latest_mut() {
            if prev.status == EventStatus::Processing {
                prev.status = EventStatus::Superseded;
                prev.reason = Some("a newer event for this incident arrived".into());
            }
        }
        if let Some(old) = inc.expires_at.filter(|_| inc.is_open()) {
            self.expiries.remove(&(old, key.clone()));
        }
        let was_open = inc.is_open();
        inc.routing_mode = ev.routing_mode;
        inc.last_event_at = a.at;
        inc.updated_at = a.now;
        if was_open && inc.group != group {
            self.left.push(std::mem::replace(&mut inc.group, group));
        } else {
            inc.group = group;
        }
        inc.incident_type = ev.incident_type.clone();
        inc.priority = ev.priority;
        if ev.about.is_some() {
            inc.about.clone_from(&ev.about);
        }
        if !ev.target_queue_ids.is_empty() || ev.routing_mode == RoutingMode::Active {
            inc.queues = ev.target_queue_ids.clone();
        }
        // A resolution keeps the expiry the incident had: it is not
        // renewed by the event that closes it.
        if ev.routing_mode == RoutingMode::Active {
            inc.expires_at = Some(a.expires_at);
            inc.ttl_seconds = ev.ttl_seconds;
        }
        match ev.routing_mode {
            RoutingMode::Active if a.expires_at <= a.now => {
                inc.state = IncidentState::Expired;
                push_event(
                    &mut inc.events,
                    EventRecord {
                        status: EventStatus::Expired,
                        reason: Some("its ttl had already run out when it arrived".into()),
                        ..a.record()
                    },
                );
                Applied::Updated
            }
            RoutingMode::Active => {
                inc.state = IncidentState::Open;
                if !was_open {
                    self.seq += 1;
                    inc.seq = self.seq;
                }
                self.expiries.insert((a.expires_at, key.clone()));
                push_event(&mut inc.events, a.record());
                if was_open {
                    Applied::Updated
                } else {
                    Applied::Opened
                }
            }
            RoutingMode::Resolved => {
                inc.state = IncidentState::Resolved;
                push_event(&mut inc.events, a.record());
                Applied::Resolved
            }
        }
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
            let updated_at = inc.updated_at;
            let Some(e) = inc.latest_mut() else { continue };
            if e.status != EventStatus::Processing {
                continue;
            }
            match &outcome {
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
                inc.genesys.clone_from(&genesys);
            }
            touched.push(key.clone());
            before.push(updated_at);
        }
        for (key, at) in touched.iter().zip(before) {
            self.reindex(key, Some(at));
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

    /// Puts back an open incident persisted before a restart. Nothing happens
    /// when the ledger already knows the incident (an event for it arrived
    /// first and decides), when it has expired meanwhile, or when the ledger
    /// is full. Returns its key when restored.
    pub fn restore(
        &mut self,
        p: &PersistedIncident,
        group: GroupId,
        now: DateTime<Utc>,
    ) -> Option<IncidentKey> {
        let key = p.key();
        let (timestamp, expires_at) = (p.timestamp()?, p.expires_at()?);
        if self.incidents.contains_key(&key)
            || expires_at <= now
            || self.expiries.len() >= self.retention.max_open
        {
            return None;
        }
        self.insert_open(
            key,
            group,
            OpenIncident {
                incident_type: p.2.clone(),
                queues: p.3.clone(),
                priority: p.4,
                timestamp,
                expires_at,
                ttl_seconds: p.ttl_seconds(),
            },
            Via::Recovery,
            None,
            now,
        )
    }

    /// Adopts a group found enabled by our own client at start, with nothing
    /// persisted to explain it: a synthetic open incident `key` until
    /// `expires_at`. Returns the key when adopted.
    pub fn adopt(
        &mut self,
        key: IncidentKey,
        group: GroupId,
        detail: String,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<IncidentKey> {
        let incident_type = IncidentType::parse(crate::recovery::ADOPTED_TYPE).ok()?;
        if self.incidents.get(&key).is_some_and(Incident::is_open)
            || expires_at <= now
            || self.expiries.len() >= self.retention.max_open
        {
            return None;
        }
        if let Some(old) = self.incidents.remove(&key) {
            self.prunable.remove(old.updated_at, &key);
        }
        self.insert_open(
            key,
            group,
            OpenIncident {
                incident_type,
                queues: Vec::new(),
                priority: crate::event::DEFAULT_PRIORITY,
                timestamp: now,
                expires_at,
                ttl_seconds: u32::try_from(crate::recovery::ADOPT_TTL_SECONDS).unwrap_or(u32::MAX),
            },
            Via::Adopted,
            Some(detail),
            now,
        )
    }

    fn insert_open(
        &mut self,
        key: IncidentKey,
        group: GroupId,
        o: OpenIncident,
        via: Via,
        detail: Option<String>,
        now: DateTime<Utc>,
    ) -> Option<IncidentKey> {
        self.seq += 1;
        if !self.groups.contains_key(&group) {
            self.groups.insert(group.clone(), GroupIndex::default());
        }
        let inc = Incident {
            id: key.id.clone(),
            source: key.source,
            incident_type: o.incident_type,
            group,
            queues: o.queues,
            priority: o.priority,
            state: IncidentState::Open,
            routing_mode: RoutingMode::Active,
            last_event_at: o.timestamp,
            expires_at: Some(o.expires_at),
            ttl_seconds: o.ttl_seconds,
            updated_at: now,
            seq: self.seq,
            events: vec![EventRecord {
                routing_mode: RoutingMode::Active,
                timestamp: o.timestamp,
                received_at: now,
                status: EventStatus::Processing,
                reason: None,
                delivery_id: None,
                via: Some(via),
                detail,
            }],
            genesys: None,
            about: None,
        };
        self.expiries.insert((o.expires_at, key.clone()));
        self.incidents.insert(key.clone(), inc);
        self.tombstones.lift(&key);
        self.index(&key);
        Some(key)
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

/// One event as it reaches the ledger: when it counts as having happened,
/// when it would lapse, and the record it leaves.
struct Arrival<'q> {
    q: &'q QueuedEvent,
    received_at: DateTime<Utc>,
    /// [`happened_at`].
    at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
}

impl<'q> Arrival<'q> {
    fn of(q: &'q QueuedEvent, received_at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        let at = happened_at(q.event.timestamp, received_at);
        Self {
            q,
            received_at,
            at,
            expires_at: at + chrono::Duration::seconds(i64::from(q.event.ttl_seconds)),
            now,
        }
    }

    /// Its record, still processing.
    fn record(&self) -> EventRecord {
        EventRecord {
            routing_mode: self.q.event.routing_mode,
            timestamp: self.q.event.timestamp,
            received_at: self.received_at,
            status: EventStatus::Processing,
            reason: None,
            delivery_id: self.q.delivery_id.clone(),
            via: None,
            detail: self.q.event.detail.clone(),
        }
    }
}

/// What an incident rebuilt or adopted at start is made of.
struct OpenIncident {
    incident_type: IncidentType,
    queues: Vec<QueueId>,
    priority: Priority,
    timestamp: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    ttl_seconds: u32,
}

/// The result of a reconcile, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    Applied,
    Failed(String),
}

fn push_event(events: &mut Vec<EventRecord>, e: EventRecord) {
    events.push(e);
    if events.len() > MAX_EVENTS_PER_INCIDENT {
        // Drop the oldest; the newest decides the state.
        if let Some((i, _)) = events.iter().enumerate().min_by_key(|(_, e)| e.order()) {
            events.remove(i);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props;
