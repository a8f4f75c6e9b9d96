//! Incidents put back at start: rebuilt from the data-table row after a
//! restart, or adopted for a group our client left enabled.

use chrono::{DateTime, Utc};

use super::*;

impl Ledger {
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
}

/// What an incident rebuilt or adopted at start is made of.
pub(super) struct OpenIncident {
    incident_type: IncidentType,
    queues: Vec<QueueId>,
    priority: Priority,
    timestamp: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    ttl_seconds: u32,
}
