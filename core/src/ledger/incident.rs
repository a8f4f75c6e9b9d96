//! One incident and its events as the ledger keeps them, and what applying
//! an event did: the types `GET /emr/status/{id}` serialises.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::groups::Rank;
use crate::event::{
    About, CorrelationId, GroupId, IncidentKey, IncidentType, Priority, QueueId, QueuedEvent,
    RoutingMode,
};
use crate::genesys::answer::GenesysRef;

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
pub(super) fn happened_at(timestamp: DateTime<Utc>, received_at: DateTime<Utc>) -> DateTime<Utc> {
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
    pub(super) fn order(&self) -> (DateTime<Utc>, DateTime<Utc>) {
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

    pub(super) fn latest_mut(&mut self) -> Option<&mut EventRecord> {
        self.events.iter_mut().max_by_key(|e| e.order())
    }

    pub fn is_open(&self) -> bool {
        self.state == IncidentState::Open
    }

    /// Its place in its group's order: priority, then arrival.
    pub(super) fn rank(&self) -> Rank {
        (self.priority, self.seq)
    }

    /// How an event of `mode`, dated `timestamp` and happened `at`, compares
    /// with what the incident has: the same event again, an older one (an
    /// activation tied with a resolution loses too, the safer reading of a
    /// tie), or a newer one.
    pub(super) fn judge(
        &self,
        mode: RoutingMode,
        timestamp: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Judged {
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
    pub(super) fn is_prunable(&self) -> bool {
        !self.is_open() && self.events.iter().all(|e| e.status.is_terminal())
    }
}

/// An event against what its incident already has ([`Incident::judge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Judged {
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

pub(super) fn push_event(events: &mut Vec<EventRecord>, e: EventRecord) {
    events.push(e);
    if events.len() > MAX_EVENTS_PER_INCIDENT {
        // Drop the oldest; the newest decides the state.
        if let Some((i, _)) = events.iter().enumerate().min_by_key(|(_, e)| e.order()) {
            events.remove(i);
        }
    }
}
