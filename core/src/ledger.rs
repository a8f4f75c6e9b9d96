//! The incident ledger: every incident the service knows, its latest event,
//! and from that the desired state of each emergency group.
//!
//! The ledger lives in the singleton service. Its rules (DESIGN §6):
//! - an incident is keyed by source + id; its newest event *by timestamp*
//!   wins, so a resolution that overtakes its activation still resolves;
//! - a group is desired enabled iff at least one open, unexpired incident
//!   maps to it; its queue list is the open incidents' queues in priority,
//!   then arrival, order, without repeats;
//! - every event ends in a terminal, visible status.
//!
//! Expiry uses a `BTreeSet<(expiry, key)>` purged as time passes (the idea of
//! mini-redis's TTL index).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::event::{
    GroupId, IncidentKey, IncidentType, Priority, QueueId, QueuedEvent, RoutingMode,
};
use crate::recovery::PersistedIncident;

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IncidentState {
    Open,
    Resolved,
    /// Its `timestamp + ttl` passed with no resolution.
    Expired,
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
}

impl EventStatus {
    pub fn is_terminal(self) -> bool {
        self != EventStatus::Processing
    }
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
    pub id: String,
    pub source: crate::event::Source,
    pub incident_type: IncidentType,
    pub group: GroupId,
    #[serde(rename = "targetQueueIds")]
    pub queues: Vec<QueueId>,
    pub priority: Priority,
    pub state: IncidentState,
    /// The newest event's routing mode and timestamp.
    pub routing_mode: RoutingMode,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub last_event_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub expires_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
    /// Arrival order, for queue ordering among equal priorities.
    #[serde(skip)]
    pub seq: u64,
    pub events: Vec<EventRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub genesys: Option<GenesysRef>,
}

impl Incident {
    pub fn key(&self) -> Option<IncidentKey> {
        crate::event::CorrelationId::parse(&self.id)
            .ok()
            .map(|id| IncidentKey {
                source: self.source,
                id,
            })
    }

    /// The status of the newest event: the incident's status.
    pub fn status(&self) -> EventStatus {
        self.latest().map_or(EventStatus::Processing, |e| e.status)
    }

    /// The newest event by timestamp.
    pub fn latest(&self) -> Option<&EventRecord> {
        self.events
            .iter()
            .max_by_key(|e| (e.timestamp, e.received_at))
    }

    fn latest_mut(&mut self) -> Option<&mut EventRecord> {
        self.events
            .iter_mut()
            .max_by_key(|e| (e.timestamp, e.received_at))
    }

    fn is_open(&self) -> bool {
        self.state == IncidentState::Open
    }

    /// Closed, and nothing about it left to settle: retention may drop it.
    fn is_prunable(&self) -> bool {
        !self.is_open() && self.events.iter().all(|e| e.status.is_terminal())
    }
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
            "at": now.to_rfc3339(),
            "incident": q.event.incident_key().to_string(),
            "routingMode": q.event.routing_mode,
            "timestamp": q.event.timestamp.to_rfc3339(),
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
    /// Open incidents' queues in priority, then arrival, order, no repeats.
    pub queues: Vec<QueueId>,
    /// Open incidents driving the group, in the same order.
    pub incidents: Vec<IncidentKey>,
}

/// Limits on what the ledger keeps once incidents are closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Closed incidents are kept (for the status endpoint) this long.
    pub closed_seconds: i64,
    /// And at most this many, oldest dropped first.
    pub max_closed: usize,
    /// At most this many incidents open at once. Real organisations have a
    /// handful; the cap keeps memory bounded under a flood of unique ids.
    pub max_open: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            closed_seconds: 86_400,
            max_closed: 2_000,
            max_open: 1_000,
        }
    }
}

/// All incidents, open and recently closed.
#[derive(Debug, Default)]
pub struct Ledger {
    incidents: HashMap<IncidentKey, Incident>,
    /// Open incidents by expiry.
    expiries: BTreeSet<(DateTime<Utc>, IncidentKey)>,
    /// What pruning may drop — closed incidents whose every event is
    /// settled — oldest `updated_at` first, so that pruning takes from the
    /// front instead of walking the ledger. Kept in step by [`Ledger::reindex`]
    /// after every change to an incident.
    prunable: BTreeSet<(DateTime<Utc>, IncidentKey)>,
    /// Every group an incident ever mapped to: a group whose last incident
    /// closed must still be driven back to disabled.
    groups: BTreeSet<GroupId>,
    seq: u64,
    retention: Retention,
    dropped: Vec<IncidentKey>,
}

impl Ledger {
    pub fn new(retention: Retention) -> Self {
        Self {
            retention,
            ..Self::default()
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

    /// Records `q` for the group it maps to. Returns what changed and, for
    /// any change to desired state, the group to reconcile.
    pub fn apply(&mut self, q: &QueuedEvent, group: GroupId, now: DateTime<Utc>) -> Applied {
        let key = q.event.incident_key();
        let before = self.incidents.get(&key).map(|i| i.updated_at);
        let applied = self.apply_event(q, &key, group, now);
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

    fn apply_event(
        &mut self,
        q: &QueuedEvent,
        key: &IncidentKey,
        group: GroupId,
        now: DateTime<Utc>,
    ) -> Applied {
        let ev = &q.event;
        let record = EventRecord {
            routing_mode: ev.routing_mode,
            timestamp: ev.timestamp,
            received_at: DateTime::from_timestamp_millis(q.received_ms).unwrap_or(now),
            status: EventStatus::Processing,
            reason: None,
            delivery_id: q.delivery_id.clone(),
            via: None,
            detail: None,
        };
        self.groups.insert(group.clone());

        let Some(inc) = self.incidents.get_mut(key) else {
            self.seq += 1;
            let full = self.expiries.len() >= self.retention.max_open;
            let (state, outcome, status) = match ev.routing_mode {
                RoutingMode::Active if full => {
                    (IncidentState::Resolved, Applied::Full, EventStatus::Failed)
                }
                RoutingMode::Active if ev.expires_at() > now => (
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
                    EventStatus::Applied,
                ),
            };
            let inc = Incident {
                id: ev.correlation_id.as_str().to_owned(),
                source: ev.source,
                incident_type: ev.incident_type.clone(),
                group,
                queues: ev.target_queue_ids.clone(),
                priority: ev.priority,
                state,
                routing_mode: ev.routing_mode,
                last_event_at: ev.timestamp,
                expires_at: ev.expires_at(),
                updated_at: now,
                seq: self.seq,
                events: vec![EventRecord {
                    status,
                    reason: (outcome == Applied::Full).then(|| {
                        format!(
                            "refused: {} incidents are already open (ledger.max_open_incidents)",
                            self.retention.max_open
                        )
                    }),
                    ..record
                }],
                genesys: None,
            };
            if state == IncidentState::Open {
                self.expiries.insert((inc.expires_at, key.clone()));
            }
            self.incidents.insert(key.clone(), inc);
            return outcome;
        };

        if inc
            .events
            .iter()
            .any(|e| e.timestamp == ev.timestamp && e.routing_mode == ev.routing_mode)
        {
            return Applied::Duplicate;
        }
        if ev.timestamp < inc.last_event_at
            || (ev.timestamp == inc.last_event_at && ev.routing_mode == RoutingMode::Active)
        {
            // An older event, or an activation tied with a resolution: the
            // resolution stands (the safer reading of a tie).
            push_event(
                &mut inc.events,
                EventRecord {
                    status: EventStatus::Superseded,
                    reason: Some("a newer event for this incident was already recorded".into()),
                    ..record
                },
            );
            inc.updated_at = now;
            return Applied::Stale;
        }

        // The newest event wins; whatever the previous newest was waiting
        // for is moot now.
        if let Some(prev) = inc.latest_mut() {
            if prev.status == EventStatus::Processing {
                prev.status = EventStatus::Superseded;
                prev.reason = Some("a newer event for this incident arrived".into());
            }
        }
        self.expiries.remove(&(inc.expires_at, key.clone()));
        let was_open = inc.is_open();
        inc.routing_mode = ev.routing_mode;
        inc.last_event_at = ev.timestamp;
        inc.updated_at = now;
        inc.group = group;
        inc.incident_type = ev.incident_type.clone();
        inc.priority = ev.priority;
        if !ev.target_queue_ids.is_empty() || ev.routing_mode == RoutingMode::Active {
            inc.queues = ev.target_queue_ids.clone();
        }
        inc.expires_at = ev.expires_at();
        match ev.routing_mode {
            RoutingMode::Active if inc.expires_at <= now => {
                inc.state = IncidentState::Expired;
                push_event(
                    &mut inc.events,
                    EventRecord {
                        status: EventStatus::Expired,
                        reason: Some("its ttl had already run out when it arrived".into()),
                        ..record
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
                self.expiries.insert((inc.expires_at, key.clone()));
                push_event(&mut inc.events, record);
                if was_open {
                    Applied::Updated
                } else {
                    Applied::Opened
                }
            }
            RoutingMode::Resolved => {
                inc.state = IncidentState::Resolved;
                push_event(&mut inc.events, record);
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

    /// When the next open incident expires, for scheduling.
    pub fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// Every group the ledger has ever driven.
    pub fn groups(&self) -> impl Iterator<Item = &GroupId> {
        self.groups.iter()
    }

    /// The desired state of every known group.
    pub fn desired(&self) -> BTreeMap<GroupId, Desired> {
        let mut open: Vec<&Incident> = self.incidents.values().filter(|i| i.is_open()).collect();
        open.sort_by_key(|i| (i.priority, i.seq));
        let mut out: BTreeMap<GroupId, Desired> = self
            .groups
            .iter()
            .map(|g| (g.clone(), Desired::default()))
            .collect();
        for inc in open {
            let d = out.entry(inc.group.clone()).or_default();
            d.enabled = true;
            if let Some(k) = inc.key() {
                d.incidents.push(k);
            }
            for q in &inc.queues {
                if !d.queues.contains(q) {
                    d.queues.push(q.clone());
                }
            }
        }
        out
    }

    /// The desired state of one group.
    pub fn desired_for(&self, group: &GroupId) -> Desired {
        self.desired().remove(group).unwrap_or_default()
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
        let mut open: Vec<&Incident> = self
            .incidents
            .values()
            .filter(|i| i.is_open() && &i.group == group)
            .collect();
        open.sort_by_key(|i| (i.priority, i.seq));
        open
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
        let group = self.resolve_open_by_poll(key, detail, now);
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
        self.expiries.remove(&(inc.expires_at, key.clone()));
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
            self.prunable.remove(&(old.updated_at, key.clone()));
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
        self.groups.insert(group.clone());
        let inc = Incident {
            id: key.id.as_str().to_owned(),
            source: key.source,
            incident_type: o.incident_type,
            group,
            queues: o.queues,
            priority: o.priority,
            state: IncidentState::Open,
            routing_mode: RoutingMode::Active,
            last_event_at: o.timestamp,
            expires_at: o.expires_at,
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
        };
        self.expiries.insert((inc.expires_at, key.clone()));
        self.incidents.insert(key.clone(), inc);
        Some(key)
    }

    /// Drops closed incidents past retention, oldest first: those beyond
    /// `max_closed`, and those closed longer than `closed_seconds`.
    ///
    /// Returns the keys dropped, so their published status can go too.
    pub fn prune(&mut self, now: DateTime<Utc>) -> Vec<IncidentKey> {
        let horizon = now - chrono::Duration::seconds(self.retention.closed_seconds);
        let excess = self
            .prunable
            .len()
            .saturating_sub(self.retention.max_closed);
        let mut dropped = Vec::new();
        // Both kinds are a prefix of the index: taken from the front, not
        // found by a walk of the whole ledger (a millisecond's stall of the
        // service in Envoy every few hundred events under a flood).
        while let Some((at, _)) = self.prunable.first() {
            if dropped.len() >= excess && *at >= horizon {
                break;
            }
            if let Some((_, key)) = self.prunable.pop_first() {
                self.incidents.remove(&key);
                dropped.push(key);
            }
        }
        dropped
    }

    /// Brings the index of prunable incidents in line with `key`'s incident
    /// after a change to it; `before` is its `updated_at` before the change,
    /// if it existed.
    fn reindex(&mut self, key: &IncidentKey, before: Option<DateTime<Utc>>) {
        if let Some(at) = before {
            self.prunable.remove(&(at, key.clone()));
        }
        if let Some(inc) = self.incidents.get(key).filter(|i| i.is_prunable()) {
            self.prunable.insert((inc.updated_at, key.clone()));
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
        // Drop the oldest by timestamp; the newest decides the state.
        if let Some((i, _)) = events
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| (e.timestamp, e.received_at))
        {
            events.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::event::{CorrelationId, IncidentEvent, Source};

    pub(crate) fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_723_731_721 + s, 0).unwrap()
    }

    pub(crate) fn event(id: &str, mode: RoutingMode, ts: i64, queues: &[&str]) -> QueuedEvent {
        QueuedEvent {
            event: IncidentEvent {
                source: Source::Canonical,
                correlation_id: CorrelationId::parse(id).unwrap(),
                incident_type: IncidentType::parse("CARRIER_OUTAGE").unwrap(),
                routing_mode: mode,
                target_queue_ids: queues.iter().map(|q| QueueId::parse(q).unwrap()).collect(),
                timestamp: t(ts),
                ttl_seconds: 3600,
                priority: 3,
                group: None,
            },
            received_ms: t(ts).timestamp_millis(),
            delivery_id: None,
        }
    }

    fn g(s: &str) -> GroupId {
        GroupId::parse(s).unwrap()
    }

    fn key(id: &str) -> IncidentKey {
        IncidentKey {
            source: Source::Canonical,
            id: CorrelationId::parse(id).unwrap(),
        }
    }

    const A: RoutingMode = RoutingMode::Active;
    const R: RoutingMode = RoutingMode::Resolved;

    #[test]
    fn activation_enables_and_resolution_disables() {
        let mut l = Ledger::default();
        assert_eq!(
            l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1)),
            Applied::Opened
        );
        let d = l.desired_for(&g("G"));
        assert!(d.enabled);
        assert_eq!(d.queues, vec![QueueId::parse("q1").unwrap()]);
        assert_eq!(
            l.apply(&event("I1", R, 10, &[]), g("G"), t(11)),
            Applied::Resolved
        );
        assert!(!l.desired_for(&g("G")).enabled);
        // The group stays known so it is driven back off.
        assert!(l.desired().contains_key(&g("G")));
    }

    #[test]
    fn the_audit_line_says_what_arrived_and_what_it_did() {
        let mut q = event("I1", A, 0, &["q1"]);
        q.delivery_id = Some("d-1".into());
        let line = Applied::Opened.audit_line(&q, &g("G"), t(1));
        assert_eq!(
            line,
            serde_json::json!({
                "audit": "event",
                "at": t(1).to_rfc3339(),
                "incident": "canonical:I1",
                "routingMode": "EMERGENCY_ACTIVE",
                "timestamp": t(0).to_rfc3339(),
                "group": "G",
                "deliveryId": "d-1",
                "outcome": "Opened",
            })
        );
    }

    #[test]
    fn resolving_one_of_two_keeps_the_group_on_with_the_others_queues() {
        let mut l = Ledger::default();
        l.apply(&event("I1", A, 0, &["q1", "q2"]), g("G"), t(1));
        l.apply(&event("I2", A, 5, &["q2", "q3"]), g("G"), t(6));
        assert_eq!(
            l.desired_for(&g("G"))
                .queues
                .iter()
                .map(QueueId::as_str)
                .collect::<Vec<_>>(),
            ["q1", "q2", "q3"]
        );
        l.apply(&event("I1", R, 10, &[]), g("G"), t(11));
        let d = l.desired_for(&g("G"));
        assert!(d.enabled);
        assert_eq!(
            d.queues.iter().map(QueueId::as_str).collect::<Vec<_>>(),
            ["q2", "q3"]
        );
        assert_eq!(d.incidents, vec![key("I2")]);
    }

    #[test]
    fn priority_orders_queues_before_arrival() {
        let mut l = Ledger::default();
        l.apply(&event("LOW", A, 0, &["q-low"]), g("G"), t(1));
        let mut urgent = event("HIGH", A, 5, &["q-high"]);
        urgent.event.priority = 1;
        l.apply(&urgent, g("G"), t(6));
        let d = l.desired_for(&g("G"));
        assert_eq!(
            d.queues.iter().map(QueueId::as_str).collect::<Vec<_>>(),
            ["q-high", "q-low"]
        );
    }

    #[test]
    fn a_resolution_that_overtakes_its_activation_wins() {
        let mut l = Ledger::default();
        assert_eq!(
            l.apply(&event("I1", R, 10, &[]), g("G"), t(11)),
            Applied::ResolvedUnknown
        );
        assert_eq!(
            l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(12)),
            Applied::Stale
        );
        assert!(!l.desired_for(&g("G")).enabled);
        let inc = l.get(&key("I1")).unwrap();
        assert_eq!(inc.state, IncidentState::Resolved);
        assert!(inc
            .events
            .iter()
            .any(|e| e.status == EventStatus::Superseded));
        assert!(inc.events.iter().all(|e| e.status.is_terminal()));
    }

    #[test]
    fn the_same_event_twice_is_a_duplicate() {
        let mut l = Ledger::default();
        l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
        assert_eq!(
            l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(2)),
            Applied::Duplicate
        );
        assert_eq!(l.get(&key("I1")).unwrap().events.len(), 1);
    }

    #[test]
    fn reopening_after_resolution() {
        let mut l = Ledger::default();
        l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
        l.apply(&event("I1", R, 10, &[]), g("G"), t(11));
        assert_eq!(
            l.apply(&event("I1", A, 20, &["q9"]), g("G"), t(21)),
            Applied::Opened
        );
        let d = l.desired_for(&g("G"));
        assert!(d.enabled);
        assert_eq!(d.queues[0].as_str(), "q9");
    }

    #[test]
    fn a_newer_activation_supersedes_the_pending_one() {
        let mut l = Ledger::default();
        l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
        assert_eq!(
            l.apply(&event("I1", A, 5, &["q2"]), g("G"), t(6)),
            Applied::Updated
        );
        let inc = l.get(&key("I1")).unwrap();
        assert_eq!(inc.events[0].status, EventStatus::Superseded);
        assert_eq!(inc.status(), EventStatus::Processing);
    }

    #[test]
    fn ttl_expiry_closes_and_disables() {
        let mut l = Ledger::default();
        l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
        assert_eq!(l.next_expiry(), Some(t(3600)));
        assert!(l.expire(t(3599)).is_empty());
        assert_eq!(l.expire(t(3600)), vec![key("I1")]);
        assert!(!l.desired_for(&g("G")).enabled);
        let inc = l.get(&key("I1")).unwrap();
        assert_eq!(inc.state, IncidentState::Expired);
        assert_eq!(inc.status(), EventStatus::Expired);
        assert!(l.expire(t(9999)).is_empty());
    }

    #[test]
    fn an_activation_already_past_its_ttl_never_opens() {
        let mut l = Ledger::default();
        l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(4000));
        assert!(!l.desired_for(&g("G")).enabled);
        assert_eq!(l.get(&key("I1")).unwrap().status(), EventStatus::Expired);
    }

    #[test]
    fn settle_marks_processing_events_of_the_group() {
        let mut l = Ledger::default();
        l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
        l.apply(&event("I2", A, 0, &["q1"]), g("OTHER"), t(1));
        let touched = l.settle_group(&g("G"), Settle::Applied, None, t(2));
        assert_eq!(touched, vec![key("I1")]);
        assert_eq!(l.get(&key("I1")).unwrap().status(), EventStatus::Applied);
        assert_eq!(l.get(&key("I2")).unwrap().status(), EventStatus::Processing);
        l.settle_group(
            &g("OTHER"),
            Settle::Failed("403 missing permission".into()),
            None,
            t(3),
        );
        let i2 = l.get(&key("I2")).unwrap();
        assert_eq!(i2.status(), EventStatus::Failed);
        assert_eq!(
            i2.latest().unwrap().reason.as_deref(),
            Some("403 missing permission")
        );
    }

    #[test]
    fn closed_incidents_are_pruned_past_retention() {
        let mut l = Ledger::new(Retention {
            closed_seconds: 100,
            max_closed: 2,
            ..Retention::default()
        });
        for i in 0..5 {
            l.apply(&event(&format!("I{i}"), R, i, &[]), g("G"), t(i));
        }
        l.prune(t(5));
        assert_eq!(l.len(), 2);
        l.apply(&event("OPEN", A, 10, &["q"]), g("G"), t(10));
        l.apply(&event("LATE", R, 500, &[]), g("G"), t(500));
        l.prune(t(500));
        // The open incident is kept whatever its age; old closed ones go.
        assert!(l.get(&key("OPEN")).is_some());
        assert!(l.get(&key("I4")).is_none());
    }

    #[test]
    fn a_flood_of_unique_incidents_is_capped_and_visible() {
        let mut l = Ledger::new(Retention {
            max_open: 3,
            ..Retention::default()
        });
        for i in 0..3 {
            assert_eq!(
                l.apply(&event(&format!("I{i}"), A, 0, &["q"]), g("G"), t(1)),
                Applied::Opened
            );
        }
        assert_eq!(
            l.apply(&event("I3", A, 0, &["q"]), g("G"), t(1)),
            Applied::Full
        );
        let inc = l.get(&key("I3")).unwrap();
        assert_eq!(inc.status(), EventStatus::Failed);
        assert!(inc
            .latest()
            .unwrap()
            .reason
            .as_deref()
            .unwrap()
            .contains("max_open"));
        assert_eq!(l.desired_for(&g("G")).incidents.len(), 3);
        // Events for incidents already open still count, and a resolution frees a slot.
        assert_eq!(
            l.apply(&event("I0", R, 5, &[]), g("G"), t(6)),
            Applied::Resolved
        );
        assert_eq!(
            l.apply(&event("I4", A, 6, &["q"]), g("G"), t(7)),
            Applied::Opened
        );
    }

    #[test]
    fn applying_events_bounds_closed_incidents_without_a_timer() {
        let mut l = Ledger::new(Retention {
            max_closed: 100,
            ..Retention::default()
        });
        for i in 0..10_000 {
            l.apply(&event(&format!("C{i}"), R, 0, &[]), g("G"), t(1));
            assert!(l.len() <= 100 + 100 / 8 + 17, "{} at {i}", l.len());
        }
        assert!(l.take_dropped().len() >= 10_000 - 130);
        assert!(l.take_dropped().is_empty());
    }

    #[test]
    fn incidents_serialise_for_the_status_endpoint() {
        let mut l = Ledger::default();
        l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
        let v = serde_json::to_value(l.get(&key("I1")).unwrap()).unwrap();
        assert_eq!(v["correlationId"], "I1");
        assert_eq!(v["source"], "canonical");
        assert_eq!(v["state"], "OPEN");
        assert_eq!(v["routingMode"], "EMERGENCY_ACTIVE");
        assert_eq!(v["targetQueueIds"][0], "q1");
        assert_eq!(v["events"][0]["status"], "PROCESSING");
        assert!(v.get("seq").is_none());
    }

    #[test]
    fn a_status_poll_resolves_an_open_incident_after_its_newest_event() {
        let mut l = Ledger::default();
        l.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
        let group = l.resolve_by_poll(&key("I1"), "PagerDuty: resolved".into(), t(300));
        assert_eq!(group, Some(g("G")));
        assert!(!l.desired_for(&g("G")).enabled);
        let inc = l.get(&key("I1")).unwrap();
        assert_eq!(inc.state, IncidentState::Resolved);
        let e = inc.latest().unwrap();
        assert_eq!(e.routing_mode, R);
        assert_eq!(e.via, Some(Via::StatusPoll));
        assert_eq!(e.detail.as_deref(), Some("PagerDuty: resolved"));
        assert_eq!(e.timestamp, t(300));
        assert_eq!(e.status, EventStatus::Processing);
        let shown = serde_json::to_value(inc).unwrap();
        assert_eq!(shown["events"][1]["via"], "STATUS_POLL");
        // Once resolved, the poll has nothing to do.
        assert_eq!(l.resolve_by_poll(&key("I1"), "again".into(), t(301)), None);
        assert_eq!(l.expire(t(10_000)), vec![]);
        // A reopening the tool sends later still wins.
        assert_eq!(
            l.apply(&event("I1", A, 400, &["q1"]), g("G"), t(401)),
            Applied::Opened
        );
        assert!(l.desired_for(&g("G")).enabled);
    }

    #[test]
    fn a_status_poll_resolution_is_newer_than_a_future_dated_event() {
        let mut l = Ledger::default();
        l.apply(&event("I1", A, 100, &["q1"]), g("G"), t(1));
        l.resolve_by_poll(&key("I1"), "done".into(), t(50));
        let e = l.get(&key("I1")).unwrap().latest().unwrap().clone();
        assert_eq!(e.routing_mode, R);
        assert!(e.timestamp > t(100));
        // A redelivered activation is older: it stays resolved.
        assert_eq!(
            l.apply(&event("I1", A, 100, &["q1"]), g("G"), t(60)),
            Applied::Duplicate
        );
        assert!(!l.desired_for(&g("G")).enabled);
    }

    #[test]
    fn persisted_incidents_are_restored_unless_known_or_expired() {
        let mut before = Ledger::default();
        before.apply(&event("I1", A, 0, &["q1"]), g("G"), t(1));
        before.apply(&event("I2", A, 0, &["q2"]), g("G"), t(1));
        let doc = crate::recovery::decode(&crate::recovery::encode(
            &g("G"),
            &before.open_incidents_of(&g("G")),
        ))
        .unwrap();

        let mut after = Ledger::default();
        // I2's resolution arrived before the rows were read: it decides.
        after.apply(&event("I2", R, 10, &[]), g("G"), t(11));
        let restored: Vec<_> = doc
            .o
            .iter()
            .filter_map(|p| after.restore(p, doc.g.clone(), t(12)))
            .collect();
        assert_eq!(restored, vec![key("I1")]);
        let d = after.desired_for(&g("G"));
        assert!(d.enabled);
        assert_eq!(d.incidents, vec![key("I1")]);
        let inc = after.get(&key("I1")).unwrap();
        assert_eq!(inc.expires_at, t(3600));
        assert_eq!(inc.events[0].via, Some(Via::Recovery));
        // The resolution webhook for a rebuilt incident still resolves it.
        assert_eq!(
            after.apply(&event("I1", R, 20, &[]), g("G"), t(21)),
            Applied::Resolved
        );
        assert!(!after.desired_for(&g("G")).enabled);
        // Nothing expired is restored.
        let mut late = Ledger::default();
        assert_eq!(late.restore(&doc.o[0], g("G"), t(3600)), None);
        assert!(late.is_empty());
    }

    #[test]
    fn an_adopted_group_stays_on_until_its_synthetic_incident_expires() {
        let mut l = Ledger::default();
        let k = crate::recovery::adopted_key(&g("G")).unwrap();
        let adopted = l.adopt(
            k.clone(),
            g("G"),
            "found enabled by emr-edge".into(),
            t(100),
            t(0),
        );
        assert_eq!(adopted, Some(k.clone()));
        assert!(l.desired_for(&g("G")).enabled);
        assert_eq!(l.get(&k).unwrap().events[0].via, Some(Via::Adopted));
        // Adopting again while it is open does nothing.
        assert_eq!(l.adopt(k.clone(), g("G"), "x".into(), t(200), t(1)), None);
        assert_eq!(l.expire(t(100)), vec![k.clone()]);
        assert!(!l.desired_for(&g("G")).enabled);
        assert_eq!(l.get(&k).unwrap().state, IncidentState::Expired);
        // Expired already: nothing to adopt.
        assert_eq!(l.adopt(k, g("G"), "x".into(), t(100), t(100)), None);
    }

    #[test]
    fn open_incidents_of_a_group_are_most_urgent_first() {
        let mut l = Ledger::default();
        l.apply(&event("LOW", A, 0, &["q"]), g("G"), t(1));
        let mut urgent = event("HIGH", A, 1, &["q"]);
        urgent.event.priority = 1;
        l.apply(&urgent, g("G"), t(2));
        l.apply(&event("OTHER", A, 2, &["q"]), g("H"), t(3));
        let ids: Vec<&str> = l
            .open_incidents_of(&g("G"))
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(ids, ["HIGH", "LOW"]);
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props {
    use proptest::prelude::*;

    use super::tests::{event, t};
    use super::*;

    fn arb_events() -> impl Strategy<Value = Vec<(u8, bool, i64)>> {
        proptest::collection::vec((0u8..4, any::<bool>(), 0i64..50), 1..20)
    }

    fn build(evs: &[(u8, bool, i64)]) -> Vec<QueuedEvent> {
        evs.iter()
            .map(|(id, active, ts)| {
                let mode = if *active {
                    RoutingMode::Active
                } else {
                    RoutingMode::Resolved
                };
                event(&format!("I{id}"), mode, *ts, &[&format!("q{id}")])
            })
            .collect()
    }

    proptest! {
        /// Any arrival order of the same events gives the same desired
        /// enabled flag and the same open incidents.
        #[test]
        fn order_does_not_matter(evs in arb_events(), seed in any::<u64>()) {
            let events = build(&evs);
            let g = GroupId::parse("G").unwrap();
            let mut a = Ledger::default();
            for e in &events { a.apply(e, g.clone(), t(100)); }
            let mut shuffled = events.clone();
            // A deterministic shuffle from the seed.
            let n = shuffled.len();
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut b = Ledger::default();
            for e in &shuffled { b.apply(e, g.clone(), t(100)); }
            let (da, db) = (a.desired_for(&g), b.desired_for(&g));
            prop_assert_eq!(da.enabled, db.enabled);
            let mut ia = da.incidents.clone(); ia.sort();
            let mut ib = db.incidents.clone(); ib.sort();
            prop_assert_eq!(ia, ib);
        }

        /// Expiry is monotonic: once an incident has expired it stays closed
        /// as time goes on, and what is open at a later time was open (and
        /// unexpired) at every earlier time of the same run.
        #[test]
        fn expiry_is_monotonic(
            ttls in proptest::collection::vec(60u32..600, 1..12),
            steps in proptest::collection::vec(1i64..120, 1..20),
        ) {
            let g = GroupId::parse("G").unwrap();
            let mut l = Ledger::default();
            for (i, ttl) in ttls.iter().enumerate() {
                let mut e = event(&format!("I{i}"), RoutingMode::Active, 0, &["q"]);
                e.event.ttl_seconds = *ttl;
                l.apply(&e, g.clone(), t(0));
            }
            let mut now = 0;
            let mut closed: std::collections::BTreeSet<String> = Default::default();
            for step in steps {
                now += step;
                for k in l.expire(t(now)) {
                    prop_assert!(closed.insert(k.to_string()), "{} expired twice", k);
                }
                for inc in l.incidents() {
                    let open = inc.state == IncidentState::Open;
                    prop_assert_eq!(open, inc.expires_at > t(now), "{} at {}", inc.id, now);
                    prop_assert_eq!(!open, closed.contains(&format!("canonical:{}", inc.id)));
                }
                prop_assert_eq!(l.desired_for(&g).enabled, closed.len() < ttls.len());
            }
        }

        /// Replaying any event changes nothing.
        #[test]
        fn replay_changes_nothing(evs in arb_events(), pick in any::<prop::sample::Index>()) {
            let events = build(&evs);
            let g = GroupId::parse("G").unwrap();
            let mut l = Ledger::default();
            for e in &events { l.apply(e, g.clone(), t(100)); }
            let before = l.desired_for(&g);
            let again = pick.get(&events);
            l.apply(again, g.clone(), t(101));
            prop_assert_eq!(before, l.desired_for(&g));
        }

        /// The index pruning takes from always holds exactly the closed,
        /// settled incidents at their `updated_at`, whatever happens to them
        /// — events, settles, expiry, status polls, adoption, pruning.
        #[test]
        fn the_prunable_index_follows_every_change(
            ops in proptest::collection::vec((0u8..7, 0u8..12, any::<bool>(), 0i64..20), 1..80),
        ) {
            let g = GroupId::parse("G").unwrap();
            let mut l = Ledger::new(Retention { closed_seconds: 15, max_closed: 4, max_open: 6 });
            let mut now = 0i64;
            for (op, id, flag, dt) in ops {
                now += dt;
                let key = IncidentKey {
                    source: crate::event::Source::Canonical,
                    id: crate::event::CorrelationId::parse(&format!("I{id}")).unwrap(),
                };
                match op {
                    0 | 1 => {
                        let mode = if flag { RoutingMode::Active } else { RoutingMode::Resolved };
                        let mut e = event(&format!("I{id}"), mode, now, &["q"]);
                        e.event.ttl_seconds = 30;
                        l.apply(&e, g.clone(), t(now));
                    }
                    2 => {
                        let outcome = if flag { Settle::Applied } else { Settle::Failed("x".into()) };
                        l.settle_group(&g, outcome, None, t(now));
                    }
                    3 => { l.expire(t(now)); }
                    4 => { l.resolve_by_poll(&key, "resolved".into(), t(now)); }
                    5 => { l.adopt(key, g.clone(), "adopted".into(), t(now + 40), t(now)); }
                    _ => { l.prune(t(now)); }
                }
                let expected: BTreeSet<(DateTime<Utc>, IncidentKey)> = l
                    .incidents
                    .iter()
                    .filter(|(_, i)| i.is_prunable())
                    .map(|(k, i)| (i.updated_at, k.clone()))
                    .collect();
                prop_assert_eq!(&l.prunable, &expected);
            }
        }

        /// Pruning drops exactly what a full sort would: every closed
        /// incident past the horizon, and the oldest beyond `max_closed`
        /// (ties by key), never an open one.
        #[test]
        fn prune_drops_the_oldest_closed(
            evs in proptest::collection::vec((0u8..40, any::<bool>(), 0i64..30), 1..120),
            max_closed in 0usize..12,
            closed_seconds in 1i64..40,
            now in 0i64..60,
        ) {
            let g = GroupId::parse("G").unwrap();
            let mut l = Ledger::new(Retention { closed_seconds, max_closed: 10_000, ..Retention::default() });
            for (id, active, at) in &evs {
                let mode = if *active { RoutingMode::Active } else { RoutingMode::Resolved };
                l.apply(&event(&format!("I{id}"), mode, *at, &["q"]), g.clone(), t(*at));
            }
            l.settle_group(&g, Settle::Applied, None, t(30));
            let horizon = t(now) - chrono::Duration::seconds(closed_seconds);
            let mut closed: Vec<(DateTime<Utc>, IncidentKey)> = l
                .incidents
                .iter()
                .filter(|(_, i)| !i.is_open() && i.events.iter().all(|e| e.status.is_terminal()))
                .map(|(k, i)| (i.updated_at, k.clone()))
                .collect();
            closed.sort();
            let excess = closed.len().saturating_sub(max_closed);
            let mut expected: Vec<IncidentKey> = closed
                .into_iter()
                .enumerate()
                .filter(|(i, (at, _))| *i < excess || *at < horizon)
                .map(|(_, (_, k))| k)
                .collect();
            expected.sort();
            let open_before: Vec<IncidentKey> =
                l.incidents.iter().filter(|(_, i)| i.is_open()).map(|(k, _)| k.clone()).collect();
            l.retention.max_closed = max_closed;
            let mut dropped = l.prune(t(now));
            dropped.sort();
            prop_assert_eq!(&dropped, &expected);
            for k in &dropped { prop_assert!(l.get(k).is_none()); }
            for k in &open_before { prop_assert!(l.get(k).is_some()); }
        }
    }
}
