//! Applying one event to the ledger: how it compares with what the incident
//! has (first, older or newer), and what it changes.

use chrono::{DateTime, Utc};

use super::*;

impl Ledger {
    pub(super) fn apply_event(
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
}

/// One event as it reaches the ledger: when it counts as having happened,
/// when it would lapse, and the record it leaves.
pub(super) struct Arrival<'q> {
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
