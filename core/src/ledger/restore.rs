//! Incidents put back at start: rebuilt from the data-table row after a
//! restart, or adopted for a group our client left enabled.

use chrono::{DateTime, Utc};

use super::*;

impl Ledger {
    /// Puts back an open incident persisted before a restart
    /// (`crate::recovery` reads it from the data-table row). Nothing happens
    /// when the ledger already knows the incident (an event for it arrived
    /// first and decides), when it has expired meanwhile, or when the ledger
    /// is full. Returns its key when restored.
    pub fn restore(
        &mut self,
        o: OpenIncident,
        group: GroupId,
        now: DateTime<Utc>,
    ) -> Option<IncidentKey> {
        if self.incidents.contains_key(&o.key)
            || o.expires_at <= now
            || self.expiries.len() >= self.retention.max_open
        {
            return None;
        }
        self.insert_open(o, group, Via::Recovery, None, now)
    }

    /// Adopts a group found enabled by our own client at start, with nothing
    /// persisted to explain it: a synthetic open incident (made by
    /// `crate::recovery::adopted`) until its expiry. Replaces a closed
    /// incident under the same key. Returns the key when adopted.
    pub fn adopt(
        &mut self,
        o: OpenIncident,
        group: GroupId,
        detail: String,
        now: DateTime<Utc>,
    ) -> Option<IncidentKey> {
        if self.incidents.get(&o.key).is_some_and(Incident::is_open)
            || o.expires_at <= now
            || self.expiries.len() >= self.retention.max_open
        {
            return None;
        }
        if let Some(old) = self.incidents.remove(&o.key) {
            self.prunable.remove(old.updated_at, &o.key);
        }
        self.insert_open(o, group, Via::Adopted, Some(detail), now)
    }

    fn insert_open(
        &mut self,
        o: OpenIncident,
        group: GroupId,
        via: Via,
        detail: Option<String>,
        now: DateTime<Utc>,
    ) -> Option<IncidentKey> {
        self.seq += 1;
        if !self.groups.contains_key(&group) {
            self.groups.insert(group.clone(), GroupIndex::default());
        }
        let key = o.key;
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
}

/// An open incident put back at start, rebuilt from what a restart left
/// (a persisted row) or adopted for a group found enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenIncident {
    pub key: IncidentKey,
    pub incident_type: IncidentType,
    pub queues: Vec<QueueId>,
    pub priority: Priority,
    /// Its newest event's time.
    pub timestamp: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ttl_seconds: u32,
}
