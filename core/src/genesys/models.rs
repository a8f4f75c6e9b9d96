//! Genesys Cloud's JSON, as emr-edge reads and writes it.
//!
//! The emergency group is written back whole (a PUT takes the object the GET
//! returned), so every model that goes back to Genesys keeps the fields it
//! does not know in a flattened `extra` map and omits absent ones instead of
//! writing `null`: what we did not read, we do not change.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An Architect emergency group (`/api/v2/architect/emergencygroups/{id}`).
///
/// `enabled` is the emergency switch; `state` is only the object's lifecycle
/// (`active`, `inactive`, `deleted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmergencyGroup {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division: Option<DomainRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Optimistic-locking version: a PUT must carry the one it read.
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_modified: Option<String>,
    /// The user who last wrote it (absent when an app did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_by: Option<String>,
    /// The OAuth client (app) that last wrote it: how our writes are told
    /// from a person's in the admin UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_by_app: Option<String>,
    /// Lifecycle, not the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The switch: true while an emergency is occurring.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_call_flows: Option<Vec<EmergencyCallFlow>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_uri: Option<String>,
    /// Fields this model does not name, written back unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EmergencyGroup {
    /// Whether the lifecycle says the object is gone.
    pub fn is_deleted(&self) -> bool {
        self.state
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("deleted"))
    }
}

/// A reference to another Genesys object (`{id, name, selfUri}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_uri: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An emergency call flow and the IVRs that use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmergencyCallFlow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_flow: Option<DomainRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ivrs: Option<Vec<DomainRef>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The error body of every Genesys API error:
/// `{"message", "code", "status", "contextId", "details", "errors"}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The answer's correlation id, also sent as `ININ-Correlation-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The OAuth error body of the login host (`{"error", "error_description"}`;
/// some hosts say `description`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct OAuthErrorBody {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default, alias = "description")]
    pub error_description: Option<String>,
}

/// A successful client-credentials answer.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    /// Seconds the token lives.
    pub expires_in: u64,
}

impl std::fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAnswer")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// The most characters one string column of the row holds. Genesys
/// documents no limit per cell, only the 512,000-byte request body; a group
/// of a thousand incidents with fifty long queues each once made a row of
/// 181 KB, and a larger one would be refused for good (RELIABILITY.md, hostile
/// senders, #6). At 4,000 per column the whole row stays near 12 KB.
pub const MAX_COLUMN_CHARS: usize = 4_000;

/// Joins `ids` with `,` within [`MAX_COLUMN_CHARS`]: whole ids only, in
/// order (the most urgent first), so the list a flow reads is always a true
/// prefix. Returns the column and how many ids were left out.
pub fn join_ids(ids: &[String]) -> (String, usize) {
    join_within(ids, MAX_COLUMN_CHARS)
}

fn join_within(ids: &[String], max: usize) -> (String, usize) {
    let mut out = String::new();
    for (i, id) in ids.iter().enumerate() {
        let extra = id.len() + usize::from(!out.is_empty());
        if out.len() + extra > max {
            return (out, ids.len() - i);
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(id);
    }
    (out, 0)
}

/// [`join_ids`], with what was left out summarised as a last entry
/// (`"…,+975 more"`): for lists people read, like the incident ids. No id
/// holds a space, so the summary is never taken for one.
pub fn summarise_ids(ids: &[String]) -> String {
    let (joined, left) = join_within(ids, MAX_COLUMN_CHARS - 24);
    if left == 0 {
        return joined;
    }
    let more = format!("+{left} more");
    if joined.is_empty() {
        more
    } else {
        format!("{joined},{more}")
    }
}

/// How many fixed queue columns (`queue1`…`queue5`) the row has: the first
/// queues of `queueIds`, one a column, for a flow's Find Queue by ID
/// (Architect cannot split a string into queues). Five is a caller waiting
/// through five emergency queues before the flow's last fallback, and well
/// inside Architect's 25 dynamic finds of a kind in one flow.
/// `genesys/datatable.schema.json` defines the same columns.
pub const QUEUE_COLUMNS: usize = 5;

/// The name of queue column `n` (1-based): `queue1`, `queue2`, ….
pub fn queue_column(n: usize) -> String {
    format!("queue{n}")
}

/// The data-table row Architect flows read with a Data Table Lookup. Columns
/// are scalars, so lists are comma-joined strings; `key` is the key column.
/// Every string column holds at most [`MAX_COLUMN_CHARS`]. Written, it also
/// holds `queue1`…`queue{QUEUE_COLUMNS}`, taken from `queue_ids` (so they
/// always agree with it), `""` past the list's end; the columns are those of
/// `genesys/datatable.schema.json` and no others.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueRow {
    pub key: String,
    /// The ordered queue list, comma-joined (`"q1,q2"`).
    pub queue_ids: String,
    /// The open incidents driving the group, comma-joined.
    pub incident_ids: String,
    pub enabled: bool,
    /// RFC 3339 time of the write.
    pub updated_at: String,
    /// The group's open incidents for a restart ([`crate::recovery`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_incidents: Option<String>,
}

impl QueueRow {
    /// The row for a group: its ordered queues and open incidents (most
    /// urgent first), each joined within [`MAX_COLUMN_CHARS`] (the incident
    /// list ends `+N more` when cut), and the recovery column, if kept.
    pub fn build(
        key: String,
        queues: &[String],
        incidents: &[String],
        enabled: bool,
        updated_at: String,
        open_incidents: Option<String>,
    ) -> QueueRow {
        QueueRow {
            key,
            queue_ids: join_ids(queues).0,
            incident_ids: summarise_ids(incidents),
            enabled,
            updated_at,
            open_incidents,
        }
    }

    /// The fixed queue columns: `queue_ids`' first [`QUEUE_COLUMNS`] ids,
    /// `""` for each one the list does not reach.
    pub fn queue_columns(&self) -> [&str; QUEUE_COLUMNS] {
        let mut columns = [""; QUEUE_COLUMNS];
        let ids = self.queue_ids.split(',').filter(|q| !q.is_empty());
        for (column, id) in columns.iter_mut().zip(ids) {
            *column = id;
        }
        columns
    }

    /// Equal in everything but the write time: no need to write it again.
    pub fn same_content(&self, other: &QueueRow) -> bool {
        self.key == other.key
            && self.queue_ids == other.queue_ids
            && self.incident_ids == other.incident_ids
            && self.enabled == other.enabled
            && self.open_incidents == other.open_incidents
    }
}

impl Serialize for QueueRow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let columns = self.queue_columns();
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("key", &self.key)?;
        map.serialize_entry("queueIds", &self.queue_ids)?;
        for (i, queue) in columns.iter().enumerate() {
            map.serialize_entry(&queue_column(i + 1), queue)?;
        }
        map.serialize_entry("incidentIds", &self.incident_ids)?;
        map.serialize_entry("enabled", &self.enabled)?;
        map.serialize_entry("updatedAt", &self.updated_at)?;
        if let Some(open) = &self.open_incidents {
            map.serialize_entry("openIncidents", open)?;
        }
        map.end()
    }
}

/// `GET /api/v2/tokens/me`: who the token belongs to. Only the OAuth
/// client's name is read (it is what Genesys stamps as `modifiedByApp` on
/// the client's writes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenInfo {
    #[serde(rename = "OAuthClient", default)]
    pub oauth_client: Option<TokenClient>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenClient {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// The routing state of the guide's contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GuideState {
    Active,
    Inactive,
    /// A change was accepted and is still propagating: wait and read again.
    Pending,
}

impl GuideState {
    pub fn as_str(self) -> &'static str {
        match self {
            GuideState::Active => "ACTIVE",
            GuideState::Inactive => "INACTIVE",
            GuideState::Pending => "PENDING",
        }
    }
}

/// Where emergency calls go under the guide's contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingConfiguration {
    #[serde(default)]
    pub queue_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}

/// `GET /api/v2/telephony/emergencyrouting` (the guide's contract, served by
/// an internal service some sites put in front of Genesys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuideRouting {
    pub state: GuideState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_configuration: Option<RoutingConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /api/v2/telephony/emergencyrouting`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuideRequest {
    pub reason: String,
    pub state: GuideState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_configuration: Option<RoutingConfiguration>,
}

#[cfg(test)]
pub(crate) mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;

    /// A group as Genesys (and the sim) serialises it, with a field this
    /// model does not know.
    pub(crate) fn group_json(id: &str, version: u64, enabled: bool) -> Value {
        json!({
            "id": id,
            "name": "Carrier Outage",
            "division": {"id": "d1", "name": "Home", "selfUri": "/api/v2/authorization/divisions/d1"},
            "description": "Main emergency group",
            "version": version,
            "dateModified": "2024-08-01T09:00:00.000Z",
            "modifiedBy": "user-1",
            "modifiedByApp": "Genesys Cloud Admin UI",
            "state": "active",
            "enabled": enabled,
            "emergencyCallFlows": [{
                "emergencyFlow": {"id": "f1", "name": "Emergency Inbound Flow", "selfUri": "/api/v2/flows/f1"},
                "ivrs": [{"id": "i1", "name": "Main IVR", "selfUri": "/api/v2/architect/ivrs/i1"}]
            }],
            "selfUri": format!("/api/v2/architect/emergencygroups/{id}"),
            "someFutureField": {"nested": [1, 2]}
        })
    }

    #[test]
    fn an_emergency_group_round_trips_with_unknown_fields() {
        let v = group_json("g1", 7, true);
        let g: EmergencyGroup = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(g.version, 7);
        assert!(g.enabled);
        assert_eq!(g.modified_by_app.as_deref(), Some("Genesys Cloud Admin UI"));
        assert_eq!(g.extra["someFutureField"]["nested"][1], 2);
        assert_eq!(serde_json::to_value(&g).unwrap(), v);
    }

    #[test]
    fn an_unknown_float_is_written_back_to_the_last_bit() {
        // fuzz/regressions/json_strict/float-ulp: without serde_json's
        // `float_roundtrip` these came back one ULP off in the PUT.
        let long = "5".repeat(120) + "3";
        for (text, bits) in [
            ("5.555555555555557e121", 5.555555555555557e121_f64.to_bits()),
            (long.as_str(), long.parse::<f64>().unwrap().to_bits()),
        ] {
            let body = format!(r#"{{"id":"g1","version":1,"enabled":true,"weight":{text}}}"#);
            let g: EmergencyGroup = serde_json::from_str(&body).unwrap();
            assert_eq!(
                g.extra["weight"].as_f64().unwrap().to_bits(),
                bits,
                "{text}"
            );
            let written = serde_json::to_string(&g).unwrap();
            let again: EmergencyGroup = serde_json::from_str(&written).unwrap();
            assert_eq!(
                again.extra["weight"].as_f64().unwrap().to_bits(),
                bits,
                "{written}"
            );
        }
    }

    #[test]
    fn absent_fields_stay_absent() {
        let v = json!({"id": "g1", "version": 1});
        let g: EmergencyGroup = serde_json::from_value(v.clone()).unwrap();
        assert!(!g.enabled);
        let back = serde_json::to_value(&g).unwrap();
        assert_eq!(back, json!({"id": "g1", "version": 1, "enabled": false}));
    }

    #[test]
    fn a_group_without_a_version_is_refused() {
        assert!(serde_json::from_value::<EmergencyGroup>(json!({"id": "g1"})).is_err());
    }

    #[test]
    fn error_bodies_parse() {
        let e: ErrorBody = serde_json::from_value(json!({
            "message": "Rate limit exceeded the maximum. Retry the request in [42] seconds",
            "code": "too.many.requests.retry.after",
            "status": 429,
            "contextId": "abc",
            "details": [],
            "errors": []
        }))
        .unwrap();
        assert_eq!(e.code.as_deref(), Some("too.many.requests.retry.after"));
        assert_eq!(e.context_id.as_deref(), Some("abc"));
    }

    #[test]
    fn oauth_errors_accept_both_description_names() {
        let a: OAuthErrorBody =
            serde_json::from_str(r#"{"error":"invalid_client","error_description":"bad"}"#)
                .unwrap();
        let b: OAuthErrorBody =
            serde_json::from_str(r#"{"error":"invalid_client","description":"bad"}"#).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn token_answers_hide_the_token_in_debug() {
        let t: TokenAnswer = serde_json::from_str(
            r#"{"access_token":"tok-123","token_type":"bearer","expires_in":86400}"#,
        )
        .unwrap();
        assert!(!format!("{t:?}").contains("tok-123"));
    }

    #[test]
    fn row_columns_hold_whole_ids_within_their_bound() {
        let long: Vec<String> = (0..1000)
            .map(|i| format!("{i:04}-{}", "q".repeat(123)))
            .collect();
        let (joined, left) = join_ids(&long);
        assert!(joined.len() <= MAX_COLUMN_CHARS);
        assert_eq!(joined.split(',').count() + left, 1000);
        assert!(joined.split(',').all(|id| long.contains(&id.to_owned())));
        assert!(joined.starts_with(&long[0]));
        let incidents: Vec<String> = (0..2000).map(|i| format!("INC-{i:05}")).collect();
        let s = summarise_ids(&incidents);
        assert!(s.len() <= MAX_COLUMN_CHARS, "{}", s.len());
        let last = s.rsplit(',').next().unwrap();
        let shown = s.split(',').count() - 1;
        assert_eq!(last, format!("+{} more", 2000 - shown));
        // Short lists are untouched.
        let few = vec!["q1".to_owned(), "q2".to_owned()];
        assert_eq!(join_ids(&few), ("q1,q2".to_owned(), 0));
        assert_eq!(summarise_ids(&few), "q1,q2");
        assert_eq!(join_ids(&[]), (String::new(), 0));
    }

    #[test]
    fn the_queue_row_is_flat() {
        let row = QueueRow {
            key: "emr".into(),
            queue_ids: "q1,q2".into(),
            incident_ids: "INC-1".into(),
            enabled: true,
            updated_at: "2024-08-15T14:22:01Z".into(),
            open_incidents: None,
        };
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(
            v,
            json!({"key": "emr", "queueIds": "q1,q2", "queue1": "q1", "queue2": "q2",
                   "queue3": "", "queue4": "", "queue5": "",
                   "incidentIds": "INC-1", "enabled": true, "updatedAt": "2024-08-15T14:22:01Z"})
        );
        // It reads back as written: the queue columns follow `queueIds`.
        assert_eq!(serde_json::from_value::<QueueRow>(v).unwrap(), row);
        let later = QueueRow {
            updated_at: "2024-08-15T15:00:00Z".into(),
            ..row.clone()
        };
        assert!(row.same_content(&later));
        let persisted = QueueRow {
            open_incidents: Some("{}".into()),
            ..row.clone()
        };
        assert!(!row.same_content(&persisted));
        assert_eq!(
            serde_json::to_value(&persisted).unwrap()["openIncidents"],
            "{}"
        );
    }

    #[test]
    fn token_info_names_the_oauth_client() {
        let info: TokenInfo = serde_json::from_value(json!({
            "organization": {"id": "o"}, "homeOrganization": {"id": "o"}, "authorizedScope": [],
            "OAuthClient": {"id": "cid", "name": "emr-edge", "organization": {"id": "o"}}
        }))
        .unwrap();
        let c = info.oauth_client.unwrap();
        assert_eq!(c.name.as_deref(), Some("emr-edge"));
        assert_eq!(c.id.as_deref(), Some("cid"));
        let user: TokenInfo = serde_json::from_value(json!({"name": "a person"})).unwrap();
        assert!(user.oauth_client.is_none());
    }

    #[test]
    fn the_guide_contract_parses() {
        let r: GuideRouting = serde_json::from_value(json!({
            "state": "PENDING",
            "reason": "INC-1: x",
            "routingConfiguration": {"queueIds": ["q1"], "priority": 1},
            "lastUpdated": "2024-08-15T14:22:01.000Z"
        }))
        .unwrap();
        assert_eq!(r.state, GuideState::Pending);
        let req = GuideRequest {
            reason: "INC-1: resolved".into(),
            state: GuideState::Inactive,
            routing_configuration: None,
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"reason": "INC-1: resolved", "state": "INACTIVE"})
        );
    }
}
