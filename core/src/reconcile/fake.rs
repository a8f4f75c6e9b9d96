//! A small in-process Genesys Cloud for the reconciler's tests, and a
//! `World` that runs the reconciler against it the way the glue would.
//!
//! The fake checks what the real API checks (Basic credentials and a form
//! body on `/oauth/token`, a valid bearer token, `version` on a PUT) and can
//! be told to answer the next request of a kind with a fault.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::effect::LedgerOp;
use super::{CallResult, Effect, HttpCall, Metric, Reconciler};
use crate::event::{
    CorrelationId, GroupId, IncidentEvent, IncidentType, QueueId, QueuedEvent, RoutingMode, Source,
};
use crate::genesys::config::tests::{env, SECRET};
use crate::genesys::GenesysSettings;
use crate::ledger::{GenesysRef, Ledger, Settle};

pub(crate) fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_723_731_721, 0).unwrap() + Duration::milliseconds(ms)
}

pub(crate) fn g(s: &str) -> GroupId {
    GroupId::parse(s).unwrap()
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Token,
    GetGroup,
    PutGroup,
    Row,
    GuideGet,
    GuidePost,
    /// `GET /api/v2/tokens/me`.
    Me,
    /// `GET …/datatables/{id}/rows` (recovery).
    RowsList,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Reset / timeout.
    Failed,
    /// Another writer of ours (a replica) changes the group just before this
    /// request, without flipping it.
    ConcurrentWrite,
    /// A person edits the group in the admin UI just before this request,
    /// without flipping it.
    PersonWrite,
    /// The request is never answered.
    Lost,
}

impl Fault {
    pub(crate) fn status(status: u16) -> Fault {
        let body = match status {
            401 => r#"{"message":"Invalid login credentials.","code":"bad.credentials","status":401}"#.to_owned(),
            403 => r#"{"message":"Unable to perform the requested action. You are missing the following permission(s): [routing:emergencyGroup:edit]","code":"missing.permissions","status":403}"#.to_owned(),
            404 => r#"{"message":"The requested emergency group was not found.","code":"not.found","status":404}"#.to_owned(),
            s => format!(r#"{{"message":"error {s}","code":"error","status":{s}}}"#),
        };
        Fault::Status {
            status,
            headers: vec![("inin-correlation-id".into(), format!("fault-{status}"))],
            body,
        }
    }

    pub(crate) fn too_many(retry_after: Option<u64>) -> Fault {
        let secs = retry_after.unwrap_or(42);
        let mut headers = vec![("inin-correlation-id".into(), "fault-429".into())];
        if let Some(s) = retry_after {
            headers.push(("Retry-After".into(), s.to_string()));
        }
        // Without the header, the body still names a time — unless told not to.
        let body = if retry_after.is_some() {
            format!(
                r#"{{"message":"Rate limit exceeded the maximum. Retry the request in [{secs}] seconds","code":"too.many.requests.retry.after","status":429}}"#
            )
        } else {
            r#"{"message":"Rate limit exceeded.","code":"too.many.requests","status":429}"#
                .to_owned()
        };
        Fault::Status {
            status: 429,
            headers,
            body,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Logged {
    pub kind: Kind,
    pub method: &'static str,
    pub path: String,
    pub at: DateTime<Utc>,
    pub body: Option<Value>,
    pub authorization: Option<String>,
}

#[derive(Debug)]
pub(crate) struct FakeGenesys {
    pub groups: BTreeMap<String, Value>,
    pub rows: BTreeMap<String, Value>,
    /// A PUT of a missing row creates it (the sim) instead of 404 (Genesys).
    pub rows_upsert: bool,
    pub guide: Value,
    /// GETs still answering PENDING after a POST.
    pub guide_pending: u32,
    /// How many GETs a POST stays PENDING for.
    pub guide_delay_reads: u32,
    pub tokens: BTreeMap<String, DateTime<Utc>>,
    pub token_lifetime_s: u64,
    pub issued: u64,
    pub bad_credentials: bool,
    pub faults: BTreeMap<Kind, VecDeque<Fault>>,
    pub log: Vec<Logged>,
    correlation: u64,
    /// The time writes behind the reconciler's back are stamped with.
    pub clock: DateTime<Utc>,
}

impl FakeGenesys {
    pub(crate) fn new() -> Self {
        let mut groups = BTreeMap::new();
        for id in ["G1", "G2", "G-CARRIER"] {
            groups.insert(
                id.to_owned(),
                crate::genesys::models::tests::group_json(id, 1, false),
            );
        }
        Self {
            groups,
            rows: BTreeMap::new(),
            rows_upsert: false,
            guide: json!({"state": "INACTIVE", "routingConfiguration": {"queueIds": [], "priority": 1}, "lastUpdated": "2024-08-01T00:00:00.000Z"}),
            guide_pending: 0,
            guide_delay_reads: 0,
            tokens: BTreeMap::new(),
            token_lifetime_s: 86_400,
            issued: 0,
            bad_credentials: false,
            faults: BTreeMap::new(),
            log: Vec::new(),
            correlation: 0,
            clock: t(0),
        }
    }

    pub(crate) fn fault(&mut self, kind: Kind, fault: Fault) {
        self.faults.entry(kind).or_default().push_back(fault);
    }

    pub(crate) fn enabled(&self, id: &str) -> bool {
        self.groups[id]["enabled"].as_bool().unwrap()
    }

    pub(crate) fn version(&self, id: &str) -> u64 {
        self.groups[id]["version"].as_u64().unwrap()
    }

    pub(crate) fn count(&self, kind: Kind) -> usize {
        self.log.iter().filter(|l| l.kind == kind).count()
    }

    pub(crate) fn kinds(&self) -> Vec<Kind> {
        self.log.iter().map(|l| l.kind).collect()
    }

    pub(crate) fn revoke_all(&mut self) {
        self.tokens.clear();
    }

    /// Our own OAuth client (another replica, a script with our
    /// credentials) flips the group behind the reconciler's back.
    pub(crate) fn own_write(&mut self, id: &str, enabled: bool) {
        let grp = self.groups.get_mut(id).unwrap();
        let v = grp["version"].as_u64().unwrap();
        grp["version"] = json!(v + 1);
        grp["enabled"] = json!(enabled);
        grp["modifiedByApp"] = json!("emr-edge");
        grp["dateModified"] = json!(crate::rfc3339::text(self.clock));
    }

    /// A person flips the group in the admin UI.
    pub(crate) fn ui_write(&mut self, id: &str, enabled: bool) {
        let grp = self.groups.get_mut(id).unwrap();
        let v = grp["version"].as_u64().unwrap();
        grp["version"] = json!(v + 1);
        grp["enabled"] = json!(enabled);
        grp["modifiedByApp"] = json!("Genesys Cloud Admin UI");
        grp["dateModified"] = json!(crate::rfc3339::text(self.clock));
    }

    fn kind_of(call: &HttpCall) -> Kind {
        match (call.method, call.path.as_str()) {
            ("POST", "/oauth/token") => Kind::Token,
            ("GET", "/api/v2/telephony/emergencyrouting") => Kind::GuideGet,
            ("POST", "/api/v2/telephony/emergencyrouting") => Kind::GuidePost,
            ("GET", "/api/v2/tokens/me") => Kind::Me,
            ("GET", p) if p.starts_with("/api/v2/flows/datatables/") => Kind::RowsList,
            (_, p) if p.starts_with("/api/v2/flows/datatables/") => Kind::Row,
            ("GET", _) => Kind::GetGroup,
            _ => Kind::PutGroup,
        }
    }

    fn ok(&mut self, status: u16, body: Value) -> Option<CallResult> {
        self.correlation += 1;
        Some(CallResult::Response {
            status,
            headers: vec![
                (
                    "ININ-Correlation-Id".into(),
                    format!("corr-{}", self.correlation),
                ),
                ("inin-ratelimit-count".into(), "1".into()),
                ("inin-ratelimit-allowed".into(), "300".into()),
                ("inin-ratelimit-reset".into(), "60".into()),
            ],
            body: serde_json::to_vec(&body).unwrap(),
        })
    }

    fn err(&mut self, status: u16, message: &str) -> Option<CallResult> {
        self.correlation += 1;
        let code = match status {
            401 => "bad.credentials",
            404 => "not.found",
            409 => "general.conflict",
            _ => "bad.request",
        };
        Some(CallResult::Response {
            status,
            headers: vec![("ININ-Correlation-Id".into(), format!("corr-{}", self.correlation))],
            body: serde_json::to_vec(&json!({"message": message, "code": code, "status": status, "contextId": format!("corr-{}", self.correlation), "details": [], "errors": []})).unwrap(),
        })
    }

    /// Answers `call` at `now`; `None` for a call that is never answered.
    pub(crate) fn answer(&mut self, call: &HttpCall, now: DateTime<Utc>) -> Option<CallResult> {
        self.clock = self.clock.max(now);
        let kind = Self::kind_of(call);
        let body: Option<Value> = call
            .body
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok());
        self.log.push(Logged {
            kind,
            method: call.method,
            path: call.path.clone(),
            at: now,
            body: body.clone(),
            authorization: call.header("authorization").map(str::to_owned),
        });
        if let Some(fault) = self.faults.get_mut(&kind).and_then(VecDeque::pop_front) {
            match fault {
                Fault::Status {
                    status,
                    headers,
                    body,
                } => {
                    return Some(CallResult::Response {
                        status,
                        headers,
                        body: body.into_bytes(),
                    })
                }
                Fault::Failed => return Some(CallResult::Failed),
                Fault::Lost => return None,
                Fault::ConcurrentWrite | Fault::PersonWrite => {
                    let id = call.path.rsplit('/').next().unwrap().to_owned();
                    if self.groups.contains_key(&id) {
                        let enabled = self.enabled(&id);
                        if matches!(fault, Fault::PersonWrite) {
                            self.ui_write(&id, enabled);
                        } else {
                            self.own_write(&id, enabled);
                        }
                    }
                }
            }
        }
        // Genesys's request body limit.
        if call.body.as_ref().is_some_and(|b| b.len() > 512_000) {
            return self.err(413, "The request body is too large");
        }
        if kind == Kind::Token {
            return self.token(call, now);
        }
        assert_eq!(call.cluster, "genesys_api");
        assert_eq!(call.authority, "api.mypurecloud.ie");
        assert_eq!(call.header("accept"), Some("application/json"));
        assert_eq!(call.header("content-type"), Some("application/json"));
        assert_eq!(call.header("user-agent"), Some("emr-edge/0.1"));
        let valid = call
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .and_then(|tok| self.tokens.get(tok))
            .is_some_and(|exp| now < *exp);
        if !valid {
            return self.err(401, "Invalid login credentials.");
        }
        match kind {
            Kind::GetGroup => {
                let id = call.path.rsplit('/').next().unwrap();
                match self.groups.get(id).cloned() {
                    Some(grp) => self.ok(200, grp),
                    None => self.err(404, "The requested emergency group was not found."),
                }
            }
            Kind::PutGroup => {
                let id = call.path.rsplit('/').next().unwrap().to_owned();
                let Some(current) = self.groups.get(&id).cloned() else {
                    return self.err(404, "The requested emergency group was not found.");
                };
                let body = body.unwrap();
                let (sent, have) = (
                    body["version"].as_u64().unwrap(),
                    current["version"].as_u64().unwrap(),
                );
                if sent != have {
                    return self.err(409, &format!("The version supplied ({sent}) does not match the current version ({have}) of the object. Read the object again and retry."));
                }
                // The rest of the object came back unchanged.
                let mut expect = current.clone();
                expect["enabled"] = body["enabled"].clone();
                assert_eq!(body, expect, "the PUT must carry the object as read");
                let mut next = body;
                next["version"] = json!(have + 1);
                next["dateModified"] = json!(crate::rfc3339::text(now));
                next["modifiedByApp"] = json!("emr-edge");
                next.as_object_mut().unwrap().remove("modifiedBy");
                self.groups.insert(id, next.clone());
                self.ok(200, next)
            }
            Kind::Row => {
                let body = body.unwrap();
                if call.method == "POST" {
                    let key = format!(
                        "{}/{}",
                        call.path,
                        crate::genesys::encode_segment(body["key"].as_str().unwrap())
                    );
                    if self.rows.contains_key(&key) {
                        return self.err(409, "A row with this key already exists.");
                    }
                    self.rows.insert(key, body.clone());
                    return self.ok(200, body);
                }
                if !self.rows_upsert && !self.rows.contains_key(&call.path) {
                    return self.err(404, "The requested data table row was not found.");
                }
                self.rows.insert(call.path.clone(), body.clone());
                self.ok(200, body)
            }
            Kind::GuideGet => {
                let mut v = self.guide.clone();
                if self.guide_pending > 0 {
                    self.guide_pending -= 1;
                    v["state"] = json!("PENDING");
                }
                self.ok(200, v)
            }
            Kind::GuidePost => {
                let body = body.unwrap();
                let state = body["state"].as_str().unwrap();
                assert!(state == "ACTIVE" || state == "INACTIVE");
                assert!(!body["reason"].as_str().unwrap().is_empty());
                self.guide["state"] = json!(state);
                self.guide["reason"] = body["reason"].clone();
                if let Some(rc) = body.get("routingConfiguration") {
                    self.guide["routingConfiguration"] = rc.clone();
                }
                self.guide["lastUpdated"] = json!(crate::rfc3339::text(now));
                self.guide_pending = self.guide_delay_reads;
                let mut v = self.guide.clone();
                if self.guide_pending > 0 {
                    v["state"] = json!("PENDING");
                    return self.ok(202, v);
                }
                self.ok(200, v)
            }
            Kind::Me => self.ok(
                200,
                json!({"organization": {"id": "org"}, "OAuthClient": {"id": "emr-edge-client", "name": "emr-edge"}}),
            ),
            Kind::RowsList => {
                let table = call.path.split('?').next().unwrap();
                let prefix = format!("{table}/");
                let entities: Vec<Value> = self
                    .rows
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, v)| v.clone())
                    .collect();
                let total = entities.len();
                self.ok(200, json!({"entities": entities, "pageNumber": 1, "pageSize": 100, "pageCount": 1, "total": total}))
            }
            Kind::Token => unreachable!(),
        }
    }

    fn token(&mut self, call: &HttpCall, now: DateTime<Utc>) -> Option<CallResult> {
        assert_eq!(call.cluster, "genesys_login");
        assert_eq!(call.authority, "login.mypurecloud.ie");
        assert_eq!(
            call.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            call.body.as_deref(),
            Some(&b"grant_type=client_credentials"[..])
        );
        let basic = call
            .header("authorization")
            .unwrap()
            .strip_prefix("Basic ")
            .unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .unwrap();
        assert_eq!(decoded, format!("emr-edge-client:{SECRET}").into_bytes());
        if self.bad_credentials {
            return Some(CallResult::Response {
                status: 401,
                headers: vec![],
                body: br#"{"error":"invalid_client","error_description":"client not found or bad client secret"}"#.to_vec(),
            });
        }
        self.issued += 1;
        let tok = format!("tok-{}", self.issued);
        let lifetime = i64::try_from(self.token_lifetime_s).unwrap();
        self.tokens
            .insert(tok.clone(), now + Duration::seconds(lifetime));
        self.ok(200, json!({"access_token": tok, "token_type": "bearer", "expires_in": self.token_lifetime_s}))
    }
}

/// The reconciler, a ledger and the fake, run like the glue runs them.
pub(crate) struct World {
    pub rec: Reconciler,
    pub ledger: Ledger,
    pub fake: FakeGenesys,
    pub now: DateTime<Utc>,
    pub settles: Vec<(GroupId, Settle, Option<GenesysRef>)>,
    pub audits: Vec<Value>,
    pub metrics: Vec<Metric>,
    /// Calls dispatched and not answered yet.
    pub out: VecDeque<HttpCall>,
    /// Calls the fake will never answer.
    pub lost: Vec<HttpCall>,
    pub max_out: usize,
    /// Groups adopted at start.
    pub adopted: Vec<GroupId>,
    /// Lines for the error log.
    pub alarms: Vec<String>,
    seq: i64,
}

pub(crate) fn settings(extra: Value) -> Arc<GenesysSettings> {
    let mut cfg = crate::genesys::config::tests::base();
    cfg["groups_by_incident_type"] = json!({"CARRIER_OUTAGE": "G-CARRIER"});
    cfg["default_group"] = json!("G1");
    // The scenarios of the answer classes run without routine checks; the
    // watchdog's own tests set it.
    cfg["watchdog"] = json!({"period_seconds": 86_400, "converging_seconds": 86_400});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            cfg[k] = v;
        }
    }
    Arc::new(GenesysSettings::from_json(&cfg, &env).unwrap())
}

impl World {
    pub(crate) fn new(extra: Value) -> World {
        World {
            rec: Reconciler::new(settings(extra)),
            ledger: Ledger::default(),
            fake: FakeGenesys::new(),
            now: t(0),
            settles: Vec::new(),
            audits: Vec::new(),
            metrics: Vec::new(),
            out: VecDeque::new(),
            lost: Vec::new(),
            max_out: 0,
            adopted: Vec::new(),
            alarms: Vec::new(),
            seq: 0,
        }
    }

    /// Records an event for `group` and marks the group dirty (no poll).
    pub(crate) fn event(&mut self, id: &str, mode: RoutingMode, queues: &[&str], group: &str) {
        self.seq += 1;
        let ev = QueuedEvent {
            event: IncidentEvent {
                source: Source::Canonical,
                correlation_id: CorrelationId::parse(id).unwrap(),
                incident_type: IncidentType::parse("CARRIER_OUTAGE").unwrap(),
                routing_mode: mode,
                target_queue_ids: queues.iter().map(|q| QueueId::parse(q).unwrap()).collect(),
                // Later calls are later events.
                timestamp: self.now + Duration::milliseconds(self.seq),
                ttl_seconds: 86_400,
                priority: 3,
                group: Some(g(group)),
                detail: None,
                about: None,
            },
            received_ms: self.now.timestamp_millis(),
            delivery_id: None,
            slot: false,
        };
        self.ledger.apply(&ev, g(group), self.now);
        self.rec.mark_event(&g(group), self.now);
    }

    /// The next event gets the same timestamp as the first one did.
    pub(crate) fn seq_reset(&mut self) {
        self.seq = 0;
    }

    pub(crate) fn activate(&mut self, id: &str, queues: &[&str], group: &str) {
        self.event(id, RoutingMode::Active, queues, group);
        self.poll();
    }

    pub(crate) fn resolve(&mut self, id: &str, group: &str) {
        self.event(id, RoutingMode::Resolved, &[], group);
        self.poll();
    }

    pub(crate) fn poll(&mut self) {
        let fx = self.rec.poll(&self.ledger, self.now);
        self.apply(fx);
    }

    pub(crate) fn apply(&mut self, fx: Vec<Effect>) {
        for e in fx {
            match e {
                Effect::Call(c) => self.out.push_back(c),
                Effect::Ledger(change) => {
                    match &change.0 {
                        LedgerOp::Settle {
                            group,
                            outcome,
                            genesys,
                        } => self
                            .settles
                            .push((group.clone(), outcome.clone(), genesys.clone())),
                        LedgerOp::Adopt { group, .. } => self.adopted.push(group.clone()),
                        LedgerOp::Restore { .. } => {}
                    }
                    change.apply(&mut self.ledger, self.now);
                }
                Effect::Audit(v) => self.audits.push(v),
                Effect::Alarm(line) => self.alarms.push(line),
                Effect::Metric(m) => self.metrics.push(m),
            }
        }
        self.max_out = self.max_out.max(self.out.len());
        assert!(self.rec.in_flight() <= self.rec.settings().limits.max_in_flight);
    }

    /// Answers the oldest call out. False when none is out.
    pub(crate) fn answer_one(&mut self) -> bool {
        let Some(call) = self.out.pop_front() else {
            return false;
        };
        match self.fake.answer(&call, self.now) {
            Some(result) => {
                let fx = self.rec.on_result(call.op, result, &self.ledger, self.now);
                self.apply(fx);
            }
            None => self.lost.push(call),
        }
        true
    }

    /// Answers calls and follows wake-ups up to `deadline` (ms from t(0)).
    pub(crate) fn run_until(&mut self, deadline_ms: i64) {
        let deadline = t(deadline_ms);
        for _ in 0..10_000 {
            if self.answer_one() {
                continue;
            }
            match self.rec.next_wakeup() {
                Some(at) if at <= deadline => {
                    self.now = self.now.max(at);
                    self.poll();
                }
                _ => return,
            }
        }
        panic!("the reconciler did not settle down");
    }

    /// Answers everything out now, without advancing time.
    pub(crate) fn drain(&mut self) {
        while self.answer_one() {}
    }

    pub(crate) fn failures(&self) -> Vec<&str> {
        self.settles
            .iter()
            .filter_map(|(_, s, _)| match s {
                Settle::Failed(r) => Some(r.as_str()),
                Settle::Applied => None,
            })
            .collect()
    }

    pub(crate) fn status_of(&self, id: &str) -> crate::ledger::EventStatus {
        let key = crate::event::IncidentKey {
            source: Source::Canonical,
            id: CorrelationId::parse(id).unwrap(),
        };
        self.ledger.get(&key).unwrap().status()
    }
}
