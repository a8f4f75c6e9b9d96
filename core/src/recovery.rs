//! Restart safety: what survives an Envoy restart, and how the ledger is
//! rebuilt from it.
//!
//! Shared data and the singleton's memory are gone after a restart (or a VM
//! reload). What survives is Genesys itself, so the open incidents of each
//! group travel with the data-table row the driver already writes: the
//! `openIncidents` column holds a compact JSON document —
//!
//! ```json
//! {"v":1,"g":"<group>","o":[["pagerduty","Q2UEJOMV3XYQ9N","CARRIER_OUTAGE",["q1"],1,1723731721000,1723735321000]],"m":0}
//! ```
//!
//! — one array per open incident (source, id, incident type, queues,
//! priority, event time and expiry in ms), most urgent first, at most
//! [`MAX_CHARS`] characters; `m` counts the incidents left out to stay inside
//! that bound (the group is still held on by the ones kept). The row names
//! its group itself, so recovery needs no mapping back from row keys.
//!
//! At start the reconciler lists the table's rows before it writes anything,
//! the glue puts the incidents back into the ledger (unless an event for the
//! same incident arrived meanwhile), and only then do reconciles run. A later
//! resolution webhook for a rebuilt incident finds it under the same source
//! and id, so it still switches routing off.
//!
//! Without a data table (or for a group whose row holds nothing), a group
//! found enabled by our own client while the ledger wants it off is adopted
//! as a synthetic incident ([`adopted_key`]) that expires `ttl` after the
//! group's `dateModified`: routing stays on across the restart, and cannot
//! stay on forever.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{
    CorrelationId, GroupId, IncidentKey, IncidentType, Priority, QueueId, Source, DEFAULT_PRIORITY,
    DEFAULT_TTL_SECONDS,
};
use crate::genesys::rows::RowsPage;
use crate::ledger::{Incident, OpenIncident};

/// The row column that carries the open incidents.
pub const COLUMN: &str = "openIncidents";
/// Bound of the column's value, in characters (a data-table string cell is
/// not meant for documents; this keeps well inside any sane limit).
pub const MAX_CHARS: usize = crate::genesys::models::MAX_COLUMN_CHARS;
/// Format version.
const VERSION: u8 = 1;
/// Incident type of an adopted group's synthetic incident.
pub const ADOPTED_TYPE: &str = "RECOVERED_ROUTING";
/// How long an adopted group stays on after its `dateModified`.
pub const ADOPT_TTL_SECONDS: i64 = DEFAULT_TTL_SECONDS as i64;

/// One open incident, as persisted. On the wire it is a compact array
/// (see the module doc): rows are bounded, and a thousand incidents with
/// field names would not fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Wire", into = "Wire")]
pub struct PersistedIncident {
    pub source: Source,
    pub id: CorrelationId,
    pub incident_type: IncidentType,
    pub queues: Vec<QueueId>,
    pub priority: Priority,
    /// Its newest event's time, ms since the epoch.
    pub event_ms: i64,
    /// Its expiry, ms since the epoch.
    pub expires_ms: i64,
    /// Its ttl in seconds (rows written before it was persisted lack it).
    pub ttl_seconds: Option<u32>,
}

/// [`PersistedIncident`] as written: the same fields, in that order.
#[derive(Serialize, Deserialize)]
struct Wire(
    Source,
    CorrelationId,
    IncidentType,
    Vec<QueueId>,
    Priority,
    i64,
    i64,
    #[serde(default, skip_serializing_if = "Option::is_none")] Option<u32>,
);

impl From<Wire> for PersistedIncident {
    fn from(w: Wire) -> Self {
        let Wire(source, id, incident_type, queues, priority, event_ms, expires_ms, ttl_seconds) =
            w;
        Self {
            source,
            id,
            incident_type,
            queues,
            priority,
            event_ms,
            expires_ms,
            ttl_seconds,
        }
    }
}

impl From<PersistedIncident> for Wire {
    fn from(p: PersistedIncident) -> Self {
        Wire(
            p.source,
            p.id,
            p.incident_type,
            p.queues,
            p.priority,
            p.event_ms,
            p.expires_ms,
            p.ttl_seconds,
        )
    }
}

impl PersistedIncident {
    pub fn key(&self) -> IncidentKey {
        IncidentKey {
            source: self.source,
            id: self.id.clone(),
        }
    }

    /// The incident to put back in the ledger; `None` when its times are
    /// out of range.
    pub fn open(&self) -> Option<OpenIncident> {
        Some(OpenIncident {
            key: self.key(),
            incident_type: self.incident_type.clone(),
            queues: self.queues.clone(),
            priority: self.priority,
            timestamp: DateTime::from_timestamp_millis(self.event_ms)?,
            expires_at: DateTime::from_timestamp_millis(self.expires_ms)?,
            ttl_seconds: self.ttl(),
        })
    }

    /// Its ttl; for a row written without it, the time from its newest
    /// event to its expiry (exact unless a status poll had renewed it).
    fn ttl(&self) -> u32 {
        self.ttl_seconds.unwrap_or_else(|| {
            let secs = (self.expires_ms - self.event_ms) / 1000;
            u32::try_from(secs.clamp(
                crate::contract::TTL_MIN as i64,
                crate::contract::TTL_MAX as i64,
            ))
            .unwrap_or(crate::event::DEFAULT_TTL_SECONDS)
        })
    }
}

/// A group's persisted open incidents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    pub v: u8,
    pub g: GroupId,
    pub o: Vec<PersistedIncident>,
    /// Incidents left out to stay within [`MAX_CHARS`].
    #[serde(default)]
    pub m: u32,
}

/// The column value for `group` with its open incidents `open` (most urgent
/// first), within [`MAX_CHARS`]: incidents that do not fit are counted in
/// `m`, not written.
///
/// Written as it would serialise a [`Persisted`], but in one pass: a group
/// can hold a thousand open incidents of fifty long queues, and serialising
/// the growing document once per incident made each row write cost
/// milliseconds of the service's time (RELIABILITY.md, hostile senders, #1). An incident
/// that cannot fit is told by its size before it is serialised.
pub fn encode(group: &GroupId, open: &[&Incident]) -> String {
    let group_json = serde_json::to_string(group).unwrap_or_default();
    // `{"v":1,"g":…,"o":[…],"m":…}`, with room for a 10-digit `m`.
    let envelope = r#"{"v":,"g":,"o":[],"m":}"#.len() + 3 + group_json.len() + 10;
    let mut items = String::new();
    let mut left_out: u32 = 0;
    for inc in open {
        let room =
            MAX_CHARS.saturating_sub(envelope + items.len() + usize::from(!items.is_empty()));
        // Its JSON is at least its strings, quoted, and the numbers' commas.
        let least = inc.id.as_str().len()
            + inc.incident_type.as_str().len()
            + inc
                .queues
                .iter()
                .map(|q| q.as_str().len() + 3)
                .sum::<usize>()
            + 24;
        let json = (least <= room)
            .then(|| PersistedRef::of(inc).and_then(|p| serde_json::to_string(&p).ok()))
            .flatten()
            .filter(|j| j.len() <= room);
        match json {
            Some(j) => {
                if !items.is_empty() {
                    items.push(',');
                }
                items.push_str(&j);
            }
            None => left_out += 1,
        }
    }
    format!(r#"{{"v":{VERSION},"g":{group_json},"o":[{items}],"m":{left_out}}}"#)
}

/// A [`PersistedIncident`] borrowed from the ledger: the same JSON as its
/// [`Wire`] form, with nothing cloned.
#[derive(Serialize)]
pub(crate) struct PersistedRef<'a>(
    Source,
    &'a str,
    &'a IncidentType,
    &'a [QueueId],
    Priority,
    i64,
    i64,
    u32,
);

impl<'a> PersistedRef<'a> {
    /// `None` for an incident with no expiry (never open: not persisted).
    pub(crate) fn of(inc: &'a Incident) -> Option<Self> {
        Some(Self(
            inc.source,
            inc.id.as_str(),
            &inc.incident_type,
            &inc.queues,
            inc.priority,
            inc.last_event_at.timestamp_millis(),
            inc.expires_at?.timestamp_millis(),
            inc.ttl_seconds,
        ))
    }
}

/// Reads a column value back.
pub fn decode(s: &str) -> Result<Persisted, String> {
    let doc: Persisted =
        serde_json::from_str(s).map_err(|e| format!("unreadable {COLUMN}: {e}"))?;
    if doc.v != VERSION {
        return Err(format!(
            "{COLUMN} has format version {}, not {VERSION}",
            doc.v
        ));
    }
    Ok(doc)
}

/// What a page of rows holds for recovery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovered {
    /// Rows that carry our column, decoded.
    pub groups: Vec<Persisted>,
    /// Rows whose column could not be read (reported, skipped).
    pub unreadable: Vec<String>,
}

/// Reads our column from a page of rows. Rows without it (other users of
/// the table, or rows written before this column existed) are not ours to
/// rebuild from, and the page left them out.
pub fn read_rows(page: &RowsPage) -> Recovered {
    let mut out = Recovered::default();
    for cell in &page.cells {
        match decode(&cell.value) {
            Ok(doc) => out.groups.push(doc),
            Err(e) => out.unreadable.push(format!("row {}: {e}", cell.key)),
        }
    }
    out
}

/// The synthetic incident that stands for an adopted group, open until
/// `ttl` after the group's last change (its `dateModified`, or `now` when
/// that is unreadable). Its key is [`adopted_key`].
pub fn adopted(
    group: &GroupId,
    date_modified: Option<&str>,
    now: DateTime<Utc>,
) -> Option<OpenIncident> {
    let since = date_modified
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.with_timezone(&Utc))
        .filter(|d| *d <= now)
        .unwrap_or(now);
    Some(OpenIncident {
        key: adopted_key(group)?,
        incident_type: IncidentType::parse(ADOPTED_TYPE).ok()?,
        queues: Vec::new(),
        priority: DEFAULT_PRIORITY,
        timestamp: now,
        expires_at: since + Duration::seconds(ADOPT_TTL_SECONDS),
        ttl_seconds: u32::try_from(ADOPT_TTL_SECONDS).unwrap_or(u32::MAX),
    })
}

/// The key of an adopted group's incident: `recovered:` and the group id
/// (hashed like any tool id when that is no valid id), under emr-edge's own
/// source, [`Source::Emr`], which no route reaches: a webhook can neither
/// resolve it nor reopen it.
pub fn adopted_key(group: &GroupId) -> Option<IncidentKey> {
    let id = crate::sources::ids::correlation_id(&format!("recovered:{}", group.as_str()))?;
    Some(IncidentKey {
        source: Source::Emr,
        id,
    })
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::{json, Value};

    use super::*;
    use crate::event::{IncidentEvent, QueuedEvent, RoutingMode};
    use crate::ledger::Ledger;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_723_731_721 + s, 0).unwrap()
    }

    fn g(s: &str) -> GroupId {
        GroupId::parse(s).unwrap()
    }

    fn open(l: &mut Ledger, id: &str, source: Source, queues: &[&str], priority: u8) {
        let q = QueuedEvent {
            event: IncidentEvent {
                source,
                correlation_id: CorrelationId::parse(id).unwrap(),
                incident_type: IncidentType::parse("CARRIER_OUTAGE").unwrap(),
                routing_mode: RoutingMode::Active,
                target_queue_ids: queues.iter().map(|q| QueueId::parse(q).unwrap()).collect(),
                timestamp: t(0),
                ttl_seconds: 600,
                priority,
                group: None,
                detail: None,
                about: None,
            },
            received_ms: t(0).timestamp_millis(),
            delivery_id: None,
            slot: false,
        };
        l.apply(&q, g("G1"), t(1));
    }

    #[test]
    fn open_incidents_round_trip_through_the_column() {
        let mut l = Ledger::default();
        open(
            &mut l,
            "Q2UEJOMV3XYQ9N",
            Source::Pagerduty,
            &["q1", "q2"],
            2,
        );
        open(&mut l, "INC-1", Source::Canonical, &["q3"], 1);
        let incidents = l.open_incidents_of(&g("G1"));
        let s = encode(&g("G1"), &incidents);
        let doc = decode(&s).unwrap();
        assert_eq!(doc.g, g("G1"));
        assert_eq!(doc.m, 0);
        assert_eq!(doc.o.len(), 2);
        // Most urgent first.
        assert_eq!(doc.o[0].id.as_str(), "INC-1");
        let pd = &doc.o[1];
        assert_eq!(pd.source, Source::Pagerduty);
        assert_eq!(pd.queues.len(), 2);
        assert_eq!(pd.priority, 2);
        let back = pd.open().unwrap();
        assert_eq!(back.timestamp, t(0));
        assert_eq!(back.expires_at, t(600));
        let raw: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            raw["o"][1],
            json!([
                "pagerduty",
                "Q2UEJOMV3XYQ9N",
                "CARRIER_OUTAGE",
                ["q1", "q2"],
                2,
                t(0).timestamp_millis(),
                t(600).timestamp_millis(),
                600
            ])
        );
        assert_eq!(back.ttl_seconds, 600);
        // A row written before the ttl was persisted: its ttl is the time
        // from its newest event to its expiry.
        let mut old = raw["o"][1].clone();
        old.as_array_mut().unwrap().pop();
        let old: PersistedIncident = serde_json::from_value(old).unwrap();
        assert_eq!(
            (old.ttl_seconds, old.open().unwrap().ttl_seconds),
            (None, 600)
        );
    }

    #[test]
    fn the_column_is_bounded_and_counts_what_it_left_out() {
        let mut l = Ledger::default();
        let queues: Vec<String> = (0..50).map(|i| format!("queue-{i:0>40}")).collect();
        let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
        for i in 0..10 {
            open(&mut l, &format!("INC-{i}"), Source::Canonical, &queues, 3);
        }
        let s = encode(&g("G1"), &l.open_incidents_of(&g("G1")));
        assert!(s.len() <= MAX_CHARS, "{}", s.len());
        let doc = decode(&s).unwrap();
        assert!(!doc.o.is_empty());
        assert_eq!(doc.o.len() + doc.m as usize, 10);
        // An empty group is a valid, small document.
        let empty = encode(&g("G1"), &[]);
        assert_eq!(decode(&empty).unwrap().o, vec![]);
    }

    #[test]
    fn unreadable_or_foreign_rows_are_skipped() {
        let good = encode(&g("G1"), &[]);
        let body = json!({
            "pageNumber": 1, "pageSize": 100, "pageCount": 2, "total": 104,
            "entities": [
                {"key": "G1", "queueIds": "", "openIncidents": good},
                {"key": "someone-elses", "colour": "blue"},
                {"key": "G2", "openIncidents": "{not json"},
                {"key": "G3", "openIncidents": "{\"v\":9,\"g\":\"G3\",\"o\":[]}"},
                {"key": "G4", "openIncidents": ""}
            ]
        });
        let page =
            crate::genesys::rows::parse_rows_page(&serde_json::to_vec(&body).unwrap(), COLUMN)
                .unwrap();
        let read = read_rows(&page);
        assert_eq!(read.groups.len(), 1);
        assert_eq!(read.unreadable.len(), 2);
        assert!(read.unreadable[0].starts_with("row G2"));
        assert!(page.has_more());
    }

    #[test]
    fn adopted_groups_get_a_stable_synthetic_incident_that_expires() {
        let k = adopted_key(&g("3c3f7a3e-2f5c-4f3a-9b1e-000000000001")).unwrap();
        assert_eq!(
            k.id.as_str(),
            "recovered:3c3f7a3e-2f5c-4f3a-9b1e-000000000001"
        );
        assert_eq!(
            Some(k.clone()),
            adopted_key(&g("3c3f7a3e-2f5c-4f3a-9b1e-000000000001"))
        );
        assert_eq!(k.source, Source::Emr);
        assert_eq!(
            k.to_string(),
            "emr:recovered:3c3f7a3e-2f5c-4f3a-9b1e-000000000001"
        );
        let long = adopted_key(&g(&"g".repeat(128))).unwrap();
        assert!(long.id.as_str().starts_with("sha256:"));
        let expiry =
            |modified: Option<&str>, now| adopted(&g("G"), modified, now).unwrap().expires_at;
        assert_eq!(
            expiry(Some("2024-08-15T14:22:01.000Z"), t(100)),
            DateTime::parse_from_rfc3339("2024-08-15T15:22:01Z").unwrap()
        );
        // A missing, unreadable or future date counts from now.
        assert_eq!(expiry(None, t(0)), t(3600));
        assert_eq!(expiry(Some("yesterday"), t(0)), t(3600));
        assert_eq!(expiry(Some("2099-01-01T00:00:00Z"), t(0)), t(3600));
        let synthetic = adopted(&g("G"), None, t(0)).unwrap();
        assert_eq!(synthetic.key, adopted_key(&g("G")).unwrap());
        assert_eq!(synthetic.incident_type.as_str(), ADOPTED_TYPE);
        assert_eq!(synthetic.ttl_seconds, 3600);
    }
}
