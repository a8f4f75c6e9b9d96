//! How one emergency group is read, compared with what it should be, and
//! written — behind one trait, with two implementations:
//!
//! - [`EmergencyGroupDriver`] (default): the real Architect API. `GET
//!   /api/v2/architect/emergencygroups/{id}`, and when `enabled` differs, a
//!   `PUT` of the whole object as read, with its `version` and `enabled`
//!   flipped. Nothing else is changed.
//! - [`GuideContractDriver`]: the guide's `GET`/`POST
//!   /api/v2/telephony/emergencyrouting`, one global state
//!   (`ACTIVE`/`INACTIVE`, `PENDING` while a change propagates) that also
//!   carries the queue list.
//!
//! A driver only builds requests and reads answers; the reconciler decides
//! when to send them and what an error means.

use std::fmt;

use serde::Serialize;

use super::config::{DriverKind, GuideSettings};
use super::models::{
    EmergencyGroup, GuideRequest, GuideRouting, GuideState, QueueRow, RoutingConfiguration,
};
use super::{encode_segment, Request};
use crate::event::GroupId;

/// What a read showed, in the terms the reconciler compares and exposes.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The emergency switch.
    pub enabled: bool,
    /// A change is still propagating (guide contract): read again later.
    pub pending: bool,
    pub version: Option<u64>,
    pub date_modified: Option<String>,
    pub modified_by: Option<String>,
    pub modified_by_app: Option<String>,
    /// The object's lifecycle (`active`, …), emergency groups only.
    pub lifecycle: Option<String>,
    /// The queue list, where the API carries one (guide contract).
    pub queues: Option<Vec<String>>,
    /// The object as read, for the write.
    pub snapshot: Snapshot,
}

impl Observed {
    /// The group's name, where the API carries one (emergency groups).
    pub fn name(&self) -> Option<&str> {
        match &self.snapshot {
            Snapshot::Group(g) => g.name.as_deref(),
            Snapshot::Guide(_) => None,
        }
    }
}

/// The object a write starts from.
#[derive(Debug, Clone, PartialEq)]
pub enum Snapshot {
    Group(Box<EmergencyGroup>),
    Guide(Box<GuideRouting>),
}

/// What a group should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub enabled: bool,
    /// Ordered, without repeats.
    pub queues: Vec<String>,
    /// The open incidents' ids, in the same order.
    pub incidents: Vec<String>,
    /// Why (for the guide's `reason`): incident ids first.
    pub reason: String,
}

/// What to do after a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Genesys already shows the target.
    InSync,
    /// A change is propagating: read again after a pause.
    Pending,
    /// Send this to reach the target.
    Write(Request),
    /// The object cannot be driven (deleted, wrong id…): fail with this reason.
    Refuse(String),
}

/// One way of driving an emergency switch.
pub trait Driver: fmt::Debug {
    fn kind(&self) -> DriverKind;
    /// The pre-flight read.
    fn read(&self, group: &GroupId) -> Request;
    /// Reads a successful read's body.
    fn observe(&self, body: &[u8]) -> Result<Observed, String>;
    /// Compares what was read with the target.
    fn decide(&self, group: &GroupId, observed: &Observed, target: &Target) -> Decision;
    /// Reads a successful write's body; `None` when it says too little, and
    /// the group must be read again to know.
    fn written(&self, body: &[u8]) -> Option<Observed>;
    /// Whether the queue list is part of the switch's state (so a queue
    /// change alone needs a write).
    fn tracks_queues(&self) -> bool;
}

/// The driver a config asks for.
pub fn driver_for(kind: DriverKind, guide: &GuideSettings) -> Box<dyn Driver> {
    match kind {
        DriverKind::EmergencyGroup => Box::new(EmergencyGroupDriver),
        DriverKind::GuideContract => Box::new(GuideContractDriver {
            priority: guide.priority,
        }),
    }
}

const GROUPS_PATH: &str = "/api/v2/architect/emergencygroups";
const GUIDE_PATH: &str = "/api/v2/telephony/emergencyrouting";

/// The real Architect emergency-group API.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmergencyGroupDriver;

impl EmergencyGroupDriver {
    fn path(group: &str) -> String {
        format!("{GROUPS_PATH}/{}", encode_segment(group))
    }

    fn observed(g: EmergencyGroup) -> Observed {
        Observed {
            enabled: g.enabled,
            pending: false,
            version: Some(g.version),
            date_modified: g.date_modified.clone(),
            modified_by: g.modified_by.clone(),
            modified_by_app: g.modified_by_app.clone(),
            lifecycle: g.state.clone(),
            queues: None,
            snapshot: Snapshot::Group(Box::new(g)),
        }
    }
}

impl Driver for EmergencyGroupDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::EmergencyGroup
    }

    fn read(&self, group: &GroupId) -> Request {
        Request {
            method: "GET",
            path: Self::path(group.as_str()),
            body: None,
        }
    }

    fn observe(&self, body: &[u8]) -> Result<Observed, String> {
        serde_json::from_slice::<EmergencyGroup>(body)
            .map(Self::observed)
            .map_err(|e| format!("unreadable emergency group: {e}"))
    }

    fn decide(&self, group: &GroupId, observed: &Observed, target: &Target) -> Decision {
        let Snapshot::Group(g) = &observed.snapshot else {
            return Decision::Refuse("the read did not return an emergency group".to_owned());
        };
        if g.id != group.as_str() {
            return Decision::Refuse(format!(
                "Genesys answered emergency group `{}` when asked for `{group}`",
                g.id
            ));
        }
        if g.is_deleted() {
            return Decision::Refuse(format!("emergency group `{group}` is deleted in Genesys"));
        }
        if g.enabled == target.enabled {
            return Decision::InSync;
        }
        // The whole object as read, with its version; only the switch moves.
        let mut next = (**g).clone();
        next.enabled = target.enabled;
        match serde_json::to_vec(&next) {
            Ok(body) => Decision::Write(Request {
                method: "PUT",
                path: Self::path(group.as_str()),
                body: Some(body),
            }),
            Err(e) => Decision::Refuse(format!("cannot write the emergency group: {e}")),
        }
    }

    fn written(&self, body: &[u8]) -> Option<Observed> {
        serde_json::from_slice::<EmergencyGroup>(body)
            .ok()
            .map(Self::observed)
    }

    fn tracks_queues(&self) -> bool {
        false
    }
}

/// The guide's `/api/v2/telephony/emergencyrouting` contract.
#[derive(Debug, Clone, Copy)]
pub struct GuideContractDriver {
    pub priority: u32,
}

impl GuideContractDriver {
    fn observed(r: GuideRouting) -> Observed {
        Observed {
            enabled: r.state == GuideState::Active,
            pending: r.state == GuideState::Pending,
            version: None,
            date_modified: r.last_updated.clone(),
            modified_by: None,
            modified_by_app: None,
            lifecycle: None,
            queues: r
                .routing_configuration
                .as_ref()
                .map(|c| c.queue_ids.clone()),
            snapshot: Snapshot::Guide(Box::new(r)),
        }
    }
}

impl Driver for GuideContractDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::GuideContract
    }

    fn read(&self, _group: &GroupId) -> Request {
        Request {
            method: "GET",
            path: GUIDE_PATH.to_owned(),
            body: None,
        }
    }

    fn observe(&self, body: &[u8]) -> Result<Observed, String> {
        serde_json::from_slice::<GuideRouting>(body)
            .map(Self::observed)
            .map_err(|e| format!("unreadable emergency routing state: {e}"))
    }

    fn decide(&self, _group: &GroupId, observed: &Observed, target: &Target) -> Decision {
        if observed.pending {
            return Decision::Pending;
        }
        let in_sync = if target.enabled {
            observed.enabled && observed.queues.as_deref() == Some(target.queues.as_slice())
        } else {
            !observed.enabled
        };
        if in_sync {
            return Decision::InSync;
        }
        let request = GuideRequest {
            reason: target.reason.clone(),
            state: if target.enabled {
                GuideState::Active
            } else {
                GuideState::Inactive
            },
            routing_configuration: target.enabled.then(|| RoutingConfiguration {
                queue_ids: target.queues.clone(),
                priority: Some(self.priority),
            }),
        };
        match serde_json::to_vec(&request) {
            Ok(body) => Decision::Write(Request {
                method: "POST",
                path: GUIDE_PATH.to_owned(),
                body: Some(body),
            }),
            Err(e) => Decision::Refuse(format!("cannot write the routing state: {e}")),
        }
    }

    fn written(&self, body: &[u8]) -> Option<Observed> {
        serde_json::from_slice::<GuideRouting>(body)
            .ok()
            .map(Self::observed)
    }

    fn tracks_queues(&self) -> bool {
        true
    }
}

/// The write of a data-table row: `PUT …/rows/{key}` to update it, `POST
/// …/rows` to create it (Genesys answers a PUT of a missing row with 404).
pub fn row_request(datatable_id: &str, row: &QueueRow, create: bool) -> Request {
    let base = format!(
        "/api/v2/flows/datatables/{}/rows",
        encode_segment(datatable_id)
    );
    Request {
        method: if create { "POST" } else { "PUT" },
        path: if create {
            base
        } else {
            format!("{base}/{}", encode_segment(&row.key))
        },
        body: to_json(row),
    }
}

fn to_json<T: Serialize>(v: &T) -> Option<Vec<u8>> {
    serde_json::to_vec(v).ok()
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::{json, Value};

    use super::*;
    use crate::genesys::models::tests::group_json;

    fn g(s: &str) -> GroupId {
        GroupId::parse(s).unwrap()
    }

    fn target(enabled: bool, queues: &[&str]) -> Target {
        Target {
            enabled,
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            incidents: vec!["INC-1".into()],
            reason: "INC-1: CARRIER_OUTAGE".into(),
        }
    }

    #[test]
    fn the_group_driver_reads_and_puts_the_whole_object() {
        let d = EmergencyGroupDriver;
        let r = d.read(&g("g:1"));
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/api/v2/architect/emergencygroups/g%3A1");
        let body = serde_json::to_vec(&group_json("g1", 5, false)).unwrap();
        let o = d.observe(&body).unwrap();
        assert!(!o.enabled);
        assert_eq!(o.version, Some(5));
        assert_eq!(o.modified_by_app.as_deref(), Some("Genesys Cloud Admin UI"));
        assert_eq!(
            d.decide(&g("g1"), &o, &target(false, &[])),
            Decision::InSync
        );
        let Decision::Write(w) = d.decide(&g("g1"), &o, &target(true, &["q1"])) else {
            panic!()
        };
        assert_eq!(w.method, "PUT");
        assert_eq!(w.path, "/api/v2/architect/emergencygroups/g1");
        let sent: Value = serde_json::from_slice(w.body.as_deref().unwrap()).unwrap();
        let expected = group_json("g1", 5, true);
        assert_eq!(sent, expected, "only `enabled` changes; version as read");
        assert!(!d.tracks_queues());
    }

    #[test]
    fn the_group_driver_refuses_deleted_or_foreign_groups() {
        let d = EmergencyGroupDriver;
        let mut v = group_json("g1", 5, false);
        v["state"] = json!("deleted");
        let o = d.observe(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(matches!(
            d.decide(&g("g1"), &o, &target(true, &[])),
            Decision::Refuse(r) if r.contains("deleted")
        ));
        let o = d
            .observe(&serde_json::to_vec(&group_json("other", 1, false)).unwrap())
            .unwrap();
        assert!(matches!(
            d.decide(&g("g1"), &o, &target(true, &[])),
            Decision::Refuse(_)
        ));
        assert!(d.observe(b"{}").is_err());
        assert!(d.written(b"").is_none());
    }

    #[test]
    fn the_guide_driver_posts_state_queues_and_reason() {
        let d = GuideContractDriver { priority: 1 };
        assert_eq!(d.read(&g("any")).path, "/api/v2/telephony/emergencyrouting");
        let inactive = d
            .observe(br#"{"state":"INACTIVE","routingConfiguration":{"queueIds":[],"priority":1},"lastUpdated":"x"}"#)
            .unwrap();
        assert_eq!(
            d.decide(&g("G"), &inactive, &target(false, &[])),
            Decision::InSync
        );
        let Decision::Write(w) = d.decide(&g("G"), &inactive, &target(true, &["q1", "q2"])) else {
            panic!()
        };
        assert_eq!(w.method, "POST");
        let sent: Value = serde_json::from_slice(w.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            sent,
            json!({"reason": "INC-1: CARRIER_OUTAGE", "state": "ACTIVE",
                   "routingConfiguration": {"queueIds": ["q1", "q2"], "priority": 1}})
        );
        // Active with other queues: write again.
        let active = d
            .observe(br#"{"state":"ACTIVE","routingConfiguration":{"queueIds":["q1"]}}"#)
            .unwrap();
        assert!(matches!(
            d.decide(&g("G"), &active, &target(true, &["q1", "q2"])),
            Decision::Write(_)
        ));
        assert_eq!(
            d.decide(&g("G"), &active, &target(true, &["q1"])),
            Decision::InSync
        );
        let Decision::Write(off) = d.decide(&g("G"), &active, &target(false, &[])) else {
            panic!()
        };
        let sent: Value = serde_json::from_slice(off.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent["state"], "INACTIVE");
        assert!(sent.get("routingConfiguration").is_none());
        let pending = d.observe(br#"{"state":"PENDING"}"#).unwrap();
        assert_eq!(
            d.decide(&g("G"), &pending, &target(true, &[])),
            Decision::Pending
        );
        assert!(d.written(br#"{"state":"PENDING"}"#).unwrap().pending);
        assert!(d.tracks_queues());
        assert!(d.observe(br#"{"state":"MAYBE"}"#).is_err());
    }

    #[test]
    fn row_writes_put_by_key_or_post_to_create() {
        let row = QueueRow {
            key: "emr/G1".into(),
            queue_ids: "q1,q2".into(),
            incident_ids: "INC-1".into(),
            enabled: true,
            updated_at: "2024-08-15T14:22:01Z".into(),
            open_incidents: None,
        };
        let put = row_request("t1", &row, false);
        assert_eq!(put.method, "PUT");
        assert_eq!(put.path, "/api/v2/flows/datatables/t1/rows/emr%2FG1");
        let post = row_request("t1", &row, true);
        assert_eq!(post.method, "POST");
        assert_eq!(post.path, "/api/v2/flows/datatables/t1/rows");
        let body: Value = serde_json::from_slice(post.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["queueIds"], "q1,q2");
        assert_eq!(body["key"], "emr/G1");
    }
}
