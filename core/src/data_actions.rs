//! Flat answers for Genesys data actions: what `GET /emr/groups/{id}` and
//! `GET /emr/incidents/{id}` serve.
//!
//! A data action's output contract may not hold nested arrays, and a flow
//! reads scalars, so these answers are flat objects of strings, numbers and
//! booleans, with the group's queue list given the way the routing table
//! gives it (`genesys/datatable.schema.json`): joined in `queueIds` and one
//! queue a column in `queue1`…`queue5`. The data actions that read them are
//! `genesys/data-actions/*.json`.
//!
//! Both are built from what the service already publishes for every worker
//! (the state view and the status board), so no new shared data is kept.
//! An incident nobody knows is a 200 with `found: false`, not a 404: a data
//! action treats any non-2xx answer as a failure, and a flow asking about an
//! incident wants the action's defaults, not its failure path.

use serde_json::{json, Map, Value};

use crate::event::GroupId;
use crate::genesys::models::{join_ids, queue_column, QUEUE_COLUMNS};

/// Where one incident's flat status is read: `/emr/incidents/{id}[?source=]`.
pub const INCIDENTS_PREFIX: &str = "/emr/incidents/";

/// `GET /emr/groups/{id}`: a configured group's routing as the service last
/// published it in the state view (`state`, the bytes `GET /emr/state`
/// serves): whether emr-edge wants it on, its queues (the most urgent 25
/// that `/emr/state` shows, most urgent first) and how many incidents are
/// open on it. A group the view does not hold yet wants nothing.
pub fn group_routing(state: Option<&[u8]>, group: &GroupId) -> Value {
    let view: Value = state
        .and_then(|bytes| serde_json::from_slice(bytes).ok())
        .unwrap_or(Value::Null);
    let entry = view
        .get("groups")
        .and_then(Value::as_array)
        .and_then(|groups| groups.iter().find(|g| g["id"] == group.as_str()));
    let desired = entry.and_then(|g| g.get("desired"));
    let enabled = desired
        .and_then(|d| d.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let queues: Vec<String> = desired
        .and_then(|d| d.get("queues"))
        .and_then(Value::as_array)
        .map(|qs| {
            qs.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let count = |name: &str| {
        entry
            .and_then(|g| g.get(name))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let name = entry
        .and_then(|g| g.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out = Map::new();
    out.insert("groupId".into(), group.as_str().into());
    out.insert("name".into(), name.into());
    out.insert("enabled".into(), enabled.into());
    out.insert("queueIds".into(), join_ids(&queues).0.into());
    for n in 1..=QUEUE_COLUMNS {
        let queue = queues.get(n - 1).map_or("", String::as_str);
        out.insert(queue_column(n), queue.into());
    }
    out.insert("queueCount".into(), count("queuesTotal").into());
    out.insert("openIncidents".into(), count("openIncidentsTotal").into());
    Value::Object(out)
}

/// `GET /emr/incidents/{id}`: the flat summary of an incident's published
/// status (`found`, the view `GET /emr/status/{id}` serves), or of none.
/// Its latest event (by time, then arrival) gives `status`.
pub fn incident_summary(id: &str, found: Option<&Value>) -> Value {
    let Some(v) = found else {
        return json!({"correlationId": id, "found": false});
    };
    let mut out = Map::new();
    out.insert("correlationId".into(), id.into());
    out.insert("found".into(), true.into());
    for name in [
        "source",
        "incidentType",
        "group",
        "state",
        "routingMode",
        "priority",
        "expiresAt",
        "updatedAt",
    ] {
        if let Some(value) = v.get(name).filter(|x| x.is_string() || x.is_number()) {
            out.insert(name.into(), value.clone());
        }
    }
    let latest = v
        .get("events")
        .and_then(Value::as_array)
        .and_then(|events| {
            events.iter().max_by_key(|e| {
                (
                    e.get("timestamp").and_then(Value::as_str).unwrap_or(""),
                    e.get("receivedAt").and_then(Value::as_str).unwrap_or(""),
                )
            })
        });
    // An ignored event's note has its status at the top level.
    let status = latest
        .and_then(|e| e.get("status"))
        .or_else(|| v.get("status"))
        .and_then(Value::as_str);
    if let Some(status) = status {
        out.insert("status".into(), status.into());
    }
    if let Some(mode) = latest
        .and_then(|e| e.get("routingMode"))
        .and_then(Value::as_str)
    {
        out.entry("routingMode").or_insert_with(|| mode.into());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn g(id: &str) -> GroupId {
        GroupId::parse(id).unwrap()
    }

    fn flat(v: &Value) -> bool {
        v.as_object()
            .is_some_and(|o| o.values().all(|x| !x.is_array() && !x.is_object()))
    }

    #[test]
    fn a_group_is_answered_flat_with_its_queue_columns() {
        let queues: Vec<String> = (1..=7).map(|i| format!("q{i}")).collect();
        let state = json!({"groups": [
            {"id": "G0", "desired": {"enabled": false, "queues": []}},
            {"id": "G1", "name": "Carrier Outage", "openIncidentsTotal": 3, "queuesTotal": 40,
             "desired": {"enabled": true, "queues": queues}}
        ]})
        .to_string();
        let v = group_routing(Some(state.as_bytes()), &g("G1"));
        assert!(flat(&v), "{v}");
        assert_eq!(
            v,
            json!({"groupId": "G1", "name": "Carrier Outage", "enabled": true,
                   "queueIds": "q1,q2,q3,q4,q5,q6,q7",
                   "queue1": "q1", "queue2": "q2", "queue3": "q3", "queue4": "q4", "queue5": "q5",
                   "queueCount": 40, "openIncidents": 3})
        );
        let off = group_routing(Some(state.as_bytes()), &g("G0"));
        assert_eq!(off["enabled"], false);
        assert_eq!(off["queueIds"], "");
        assert_eq!(off["queue1"], "");
        assert_eq!(off["openIncidents"], 0);
        // Not published yet, or nothing published: nothing wanted.
        for state in [Some(&b"{\"groups\":[]}"[..]), Some(&b"not json"[..]), None] {
            let v = group_routing(state, &g("G9"));
            assert_eq!(v["enabled"], false);
            assert_eq!(v["groupId"], "G9");
            assert_eq!(v["queue5"], "");
            assert!(flat(&v));
        }
    }

    #[test]
    fn an_incident_is_summarised_by_its_latest_event() {
        let status = json!({
            "correlationId": "INC-1", "source": "canonical", "incidentType": "CARRIER_OUTAGE",
            "group": "G1", "targetQueueIds": ["q1"], "priority": 2, "state": "RESOLVED",
            "routingMode": "EMERGENCY_RESOLVED", "updatedAt": "2024-08-15T14:30:00.000Z",
            "genesys": {"correlationId": "c"},
            "events": [
                {"routingMode": "EMERGENCY_RESOLVED", "status": "APPLIED",
                 "timestamp": "2024-08-15T14:29:00.000Z", "receivedAt": "2024-08-15T14:29:01.000Z"},
                {"routingMode": "EMERGENCY_ACTIVE", "status": "APPLIED",
                 "timestamp": "2024-08-15T14:22:00.000Z", "receivedAt": "2024-08-15T14:22:01.000Z"}
            ]
        });
        let v = incident_summary("INC-1", Some(&status));
        assert!(flat(&v), "{v}");
        assert_eq!(v["found"], true);
        assert_eq!(v["status"], "APPLIED");
        assert_eq!(v["state"], "RESOLVED");
        assert_eq!(v["group"], "G1");
        assert_eq!(v["priority"], 2);
        assert!(v.get("targetQueueIds").is_none());
        let ignored = json!({"correlationId": "a1", "status": "IGNORED", "reason": "no rule"});
        let v = incident_summary("a1", Some(&ignored));
        assert_eq!(v["status"], "IGNORED");
        assert_eq!(
            incident_summary("nope", None),
            json!({"correlationId": "nope", "found": false})
        );
    }
}
