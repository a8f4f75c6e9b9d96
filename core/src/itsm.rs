//! Lost resolution webhooks: for open incidents from a tool with a status
//! API configured, ask the tool now and then whether the incident is still
//! open, and resolve it here when the tool says it is resolved there.
//!
//! - PagerDuty `GET /incidents/{id}` (`Authorization: Token token=…`):
//!   `incident.status` `resolved`;
//! - ServiceNow Table API `GET /api/now/table/incident?sysparm_query=number=…`
//!   (or `sys_id=…` for an id that is one; Basic or bearer): `state` 6
//!   Resolved, 7 Closed or 8 Canceled;
//! - Jira `GET /rest/api/3/issue/{key}?fields=status` (Basic `email:api
//!   token` or bearer): `fields.status.statusCategory.key` `done`.
//!
//! Only incidents whose id is the tool's own are polled: an id the intake
//! had to hash (`sha256:…`, see `crate::sources::ids`) cannot be asked for.
//! Every tool's ids in practice (PagerDuty `Q2UEJOMV3XYQ9N`, ServiceNow
//! `INC0010023`, Jira `ITSM-42`) are kept as they are.
//!
//! The [`Poller`] is a by-value state machine like the reconciler, with its
//! own op ids: the glue dispatches its [`PollEffect::Call`]s, hands answers
//! to [`Poller::on_result`], and applies [`PollEffect::Resolved`] to the
//! ledger (`Ledger::resolve_by_poll`) as an incident event of the group. It
//! never reads a clock. At most `max_in_flight` polls are out, at most
//! `polls_per_minute` go out a minute (a token bucket), and a 429 pauses
//! that tool until its `Retry-After`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::event::{IncidentKey, Source};
use crate::genesys::answer::{header, parse_retry_after};
use crate::genesys::budget::Budget;
use crate::genesys::config::check_authority;
use crate::genesys::{encode_segment, CallResult, HttpCall, OpId, USER_AGENT};
use crate::ledger::{IncidentState, Ledger};
use crate::sources::ids::HASHED_PREFIX;

/// The `itsm` config section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ItsmConfig {
    pub pagerduty: Option<ToolConfig>,
    pub servicenow: Option<ToolConfig>,
    /// Jira Service Management (the `jsm` intake route).
    pub jsm: Option<ToolConfig>,
    /// Polls out at once, all tools together.
    pub max_in_flight: usize,
    /// Polls a minute at most, all tools together.
    pub polls_per_minute: u32,
}

impl Default for ItsmConfig {
    fn default() -> Self {
        Self {
            pagerduty: None,
            servicenow: None,
            jsm: None,
            max_in_flight: 2,
            polls_per_minute: 60,
        }
    }
}

/// One tool's status API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// The Envoy cluster (default `pagerduty_api`, `servicenow_api`, `jira_api`).
    #[serde(default)]
    pub cluster: Option<String>,
    /// `host[:port]` of the API, the calls' `:authority` (PagerDuty defaults
    /// to `api.pagerduty.com`; ServiceNow `<instance>.service-now.com`, Jira
    /// `<site>.atlassian.net`).
    #[serde(default)]
    pub authority: Option<String>,
    /// A token in this environment variable: PagerDuty's REST API key
    /// (`Token token=…`), else a bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Basic credentials (ServiceNow user, Jira e-mail and API token).
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// No credential at all: the local simulator only.
    #[serde(default)]
    pub insecure: bool,
    /// How often an open incident is asked about.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// ServiceNow's table (default `incident`).
    #[serde(default)]
    pub table: Option<String>,
}

fn default_poll_seconds() -> u32 {
    300
}

fn default_timeout_ms() -> u64 {
    5_000
}

/// A compiled config error: the field under `itsm` and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItsmConfigError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ItsmConfigError {
    ItsmConfigError {
        field: field.into(),
        message: message.into(),
    }
}

/// An `Authorization` value that is never shown.
#[derive(Clone, PartialEq, Eq)]
struct AuthHeader(String);

impl fmt::Debug for AuthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One tool's status API, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub source: Source,
    pub cluster: String,
    pub authority: String,
    auth: Option<AuthHeader>,
    pub poll: Duration,
    pub timeout_ms: u64,
    pub table: String,
}

impl Tool {
    /// The tool's name in audit lines and details.
    pub fn name(&self) -> &'static str {
        self.source.label()
    }
}

/// The compiled `itsm` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItsmSettings {
    pub tools: BTreeMap<Source, Tool>,
    pub max_in_flight: usize,
    pub polls_per_minute: u32,
}

/// Reads an environment variable for the compile step.
pub type EnvReader<'a> = &'a dyn Fn(&str) -> Option<String>;

impl ItsmConfig {
    /// Validates every tool and reads its credentials through `env`. Every
    /// problem is returned, not only the first.
    pub fn compile(self, env: EnvReader<'_>) -> Result<ItsmSettings, Vec<ItsmConfigError>> {
        let mut errors = Vec::new();
        if !(1..=16).contains(&self.max_in_flight) {
            errors.push(err(
                "max_in_flight",
                format!("must be between 1 and 16, got {}", self.max_in_flight),
            ));
        }
        if !(1..=600).contains(&self.polls_per_minute) {
            errors.push(err(
                "polls_per_minute",
                format!("must be between 1 and 600, got {}", self.polls_per_minute),
            ));
        }
        let mut tools = BTreeMap::new();
        for (name, source, cfg) in [
            ("pagerduty", Source::Pagerduty, self.pagerduty),
            ("servicenow", Source::Servicenow, self.servicenow),
            ("jsm", Source::Jsm, self.jsm),
        ] {
            if let Some(cfg) = cfg {
                match compile_tool(source, cfg, env) {
                    Ok(tool) => {
                        tools.insert(source, tool);
                    }
                    Err(e) => errors.extend(e.into_iter().map(|e| ItsmConfigError {
                        field: format!("{name}.{}", e.field),
                        message: e.message,
                    })),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ItsmSettings {
            tools,
            max_in_flight: self.max_in_flight,
            polls_per_minute: self.polls_per_minute,
        })
    }
}

fn read_env(env: EnvReader<'_>, field: &str, name: &str) -> Result<String, ItsmConfigError> {
    crate::envvar::read(env, name)
        .map(|v| v.trim().to_owned())
        .map_err(|m| err(field, m))
}

fn compile_tool(
    source: Source,
    c: ToolConfig,
    env: EnvReader<'_>,
) -> Result<Tool, Vec<ItsmConfigError>> {
    let mut errors = Vec::new();
    let (default_cluster, default_authority) = match source {
        Source::Pagerduty => ("pagerduty_api", Some("api.pagerduty.com")),
        Source::Servicenow => ("servicenow_api", None),
        _ => ("jira_api", None),
    };
    let cluster = c.cluster.unwrap_or_else(|| default_cluster.to_owned());
    if cluster.trim().is_empty() || cluster.chars().any(char::is_control) {
        errors.push(err("cluster", "must name an Envoy cluster"));
    }
    let authority = match c.authority.or(default_authority.map(str::to_owned)) {
        Some(a) => {
            if let Err(m) = check_authority(&a) {
                errors.push(err("authority", m));
            }
            a
        }
        None => {
            errors.push(err(
                "authority",
                "is required: the API host (`acme.service-now.com`, `acme.atlassian.net`)",
            ));
            String::new()
        }
    };
    let auth = match (
        c.insecure,
        c.token_env.as_deref(),
        c.username_env.as_deref(),
        c.password_env.as_deref(),
    ) {
        (true, None, None, None) => None,
        (true, ..) => {
            errors.push(err("insecure", "cannot be set together with a credential"));
            None
        }
        (false, Some(t), None, None) => match read_env(env, "token_env", t) {
            Ok(token) => Some(AuthHeader(if source == Source::Pagerduty {
                format!("Token token={token}")
            } else {
                format!("Bearer {token}")
            })),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        (false, None, Some(u), Some(p)) if source != Source::Pagerduty => {
            match (
                read_env(env, "username_env", u),
                read_env(env, "password_env", p),
            ) {
                (Ok(user), Ok(_)) if user.contains(':') => {
                    errors.push(err(
                        "username_env",
                        format!("the user in `{u}` must not contain ':' (it is sent as HTTP Basic credentials)"),
                    ));
                    None
                }
                (Ok(user), Ok(password)) => {
                    let raw = format!("{user}:{password}");
                    Some(AuthHeader(format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(raw)
                    )))
                }
                (user, password) => {
                    errors.extend(user.err());
                    errors.extend(password.err());
                    None
                }
            }
        }
        (false, None, None, None) => {
            errors.push(err(
                "token_env",
                "a credential is required (token_env, or username_env and password_env); `insecure: true` only for a local simulator",
            ));
            None
        }
        _ if source == Source::Pagerduty => {
            errors.push(err(
                "token_env",
                "PagerDuty takes a REST API key in token_env only",
            ));
            None
        }
        _ => {
            errors.push(err(
                "token_env",
                "give either token_env, or both username_env and password_env",
            ));
            None
        }
    };
    if !(1..=86_400).contains(&c.poll_seconds) {
        errors.push(err(
            "poll_seconds",
            format!("must be between 1 and 86400, got {}", c.poll_seconds),
        ));
    }
    if !(100..=60_000).contains(&c.timeout_ms) {
        errors.push(err(
            "timeout_ms",
            format!("must be between 100 and 60000, got {}", c.timeout_ms),
        ));
    }
    let table = c.table.unwrap_or_else(|| "incident".to_owned());
    if source == Source::Servicenow
        && (table.is_empty()
            || table.len() > 80
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        errors.push(err(
            "table",
            "must be a ServiceNow table name ([A-Za-z0-9_])",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Tool {
        source,
        cluster,
        authority,
        auth,
        poll: Duration::seconds(i64::from(c.poll_seconds)),
        timeout_ms: c.timeout_ms,
        table,
    })
}

/// What a tool says about an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolStatus {
    /// Still open there; the tool's status.
    Open(String),
    /// Resolved (or closed, canceled, done) there; the tool's status.
    Resolved(String),
    /// The tool does not know the incident.
    NotFound,
}

/// PagerDuty `{"incident": {"status": "triggered|acknowledged|resolved"}}`.
pub fn parse_pagerduty(body: &[u8]) -> Result<ToolStatus, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    let status = v
        .pointer("/incident/status")
        .and_then(Value::as_str)
        .ok_or("no incident.status in the answer")?;
    match status {
        "resolved" => Ok(ToolStatus::Resolved(status.to_owned())),
        "triggered" | "acknowledged" => Ok(ToolStatus::Open(status.to_owned())),
        other => Err(format!("unknown incident status {:?}", short(other))),
    }
}

/// ServiceNow `{"result": [{"state": "6"}]}`: 6 Resolved, 7 Closed, 8
/// Canceled. The state may come as a number, a numeric string, a label, or
/// `{"value", "display_value"}`.
pub fn parse_servicenow(body: &[u8]) -> Result<ToolStatus, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    let result = v
        .get("result")
        .and_then(Value::as_array)
        .ok_or("no result list in the answer")?;
    let Some(record) = result.first() else {
        return Ok(ToolStatus::NotFound);
    };
    let state = record.get("state").ok_or("no state in the record")?;
    let state = match state {
        Value::Object(o) => o
            .get("value")
            .or_else(|| o.get("display_value"))
            .cloned()
            .unwrap_or(Value::Null),
        other => other.clone(),
    };
    let text = match &state {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return Err("the state is not a string or number".to_owned()),
    };
    let resolved = match text.parse::<u32>() {
        Ok(n) => matches!(n, 6..=8),
        Err(_) => matches!(
            text.to_ascii_lowercase().as_str(),
            "resolved" | "closed" | "canceled" | "cancelled"
        ),
    };
    let shown = format!("state {}", short(&text));
    Ok(if resolved {
        ToolStatus::Resolved(shown)
    } else {
        ToolStatus::Open(shown)
    })
}

/// Jira `{"fields": {"status": {"name", "statusCategory": {"key"}}}}`:
/// category `done` is finished.
pub fn parse_jira(body: &[u8]) -> Result<ToolStatus, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    let status = v
        .pointer("/fields/status")
        .ok_or("no fields.status in the answer")?;
    let name = status.get("name").and_then(Value::as_str).unwrap_or("?");
    let category = status
        .pointer("/statusCategory/key")
        .and_then(Value::as_str)
        .ok_or("no fields.status.statusCategory.key in the answer")?;
    let shown = format!("{} ({})", short(name), short(category));
    Ok(if category == "done" {
        ToolStatus::Resolved(shown)
    } else {
        ToolStatus::Open(shown)
    })
}

/// At most 64 printable characters of something a tool said.
fn short(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// A 32-hex-digit ServiceNow `sys_id`.
fn is_sys_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The request that asks `tool` about incident `id`.
pub fn request(tool: &Tool, id: &str) -> (String, &'static str) {
    match tool.source {
        Source::Pagerduty => (
            format!("/incidents/{}", encode_segment(id)),
            "application/json",
        ),
        Source::Servicenow => {
            let field = if is_sys_id(id) { "sys_id" } else { "number" };
            (
                format!(
                    "/api/now/table/{}?sysparm_query={}&sysparm_fields=number%2Cstate%2Csys_id&sysparm_limit=1",
                    tool.table,
                    encode_segment(&format!("{field}={id}"))
                ),
                "application/json",
            )
        }
        _ => (
            format!("/rest/api/3/issue/{}?fields=status", encode_segment(id)),
            "application/json",
        ),
    }
}

/// A metric sample; [`PollMetric::name`] is the stat name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMetric {
    /// A poll answered (any outcome).
    Polled,
    /// The tool says the incident is resolved: resolved here.
    PolledResolved,
    /// The tool does not know the incident.
    NotFound,
    /// No usable answer (refused, 5xx, timeout, unreadable).
    Failed,
    /// A 429 paused the tool.
    RateLimited,
    LatencyMs(u64),
}

impl PollMetric {
    pub fn name(&self) -> &'static str {
        match self {
            PollMetric::Polled => "itsm_polled",
            PollMetric::PolledResolved => "itsm_polled_resolved",
            PollMetric::NotFound => "itsm_not_found",
            PollMetric::Failed => "itsm_poll_failed",
            PollMetric::RateLimited => "itsm_rate_limited",
            PollMetric::LatencyMs(_) => "itsm_latency_ms",
        }
    }
}

/// What the glue must do.
#[derive(Debug, Clone, PartialEq)]
pub enum PollEffect {
    /// Dispatch; hand the answer to [`Poller::on_result`].
    Call(HttpCall),
    /// `ledger.resolve_by_poll(key, detail, now)`; if it returns the group,
    /// reconcile it as an incident event (`Reconciler::mark_event`) and
    /// refresh the incident's status.
    Resolved {
        key: IncidentKey,
        detail: String,
    },
    /// The tool says the incident is still open: `ledger.renew(key,
    /// at_least, now)`; if it returns the group, refresh the incident's
    /// status and the group's row (`Reconciler::mark_dirty`), which
    /// persists the new expiry for a restart. While the tool answers that
    /// the incident is open, it never expires here (issue 13).
    Renew {
        key: IncidentKey,
        at_least: Duration,
    },
    Audit(Value),
    Metric(PollMetric),
}

#[derive(Debug, Clone, PartialEq)]
struct PollOp {
    key: IncidentKey,
    sent_at: DateTime<Utc>,
    deadline: DateTime<Utc>,
}

/// The latest outcomes, for the state view.
const RECENT: usize = 20;
/// Incidents tracked at most (the ledger holds at most
/// `ledger.max_open_incidents`, 1000 by default, open at once).
pub const MAX_TRACKED: usize = 4_096;
/// Extra time past a poll's timeout before it is given up on.
const OP_GRACE_MS: i64 = 2_000;
/// A failed poll is tried again no later than this.
const RETRY_FAILED_S: i64 = 30;

/// The poller.
#[derive(Debug)]
pub struct Poller {
    cfg: Arc<ItsmSettings>,
    /// Tracked incidents and when each is asked about next.
    next: BTreeMap<IncidentKey, DateTime<Utc>>,
    schedule: BTreeSet<(DateTime<Utc>, IncidentKey)>,
    ops: BTreeMap<OpId, PollOp>,
    next_op: OpId,
    /// Per tool: no poll before this (a 429).
    paused: BTreeMap<Source, DateTime<Utc>>,
    budget: Budget,
    budget_wait: Option<DateTime<Utc>>,
    recent: VecDeque<Value>,
}

impl Poller {
    pub fn new(cfg: Arc<ItsmSettings>) -> Self {
        let burst = (cfg.polls_per_minute / 6).max(1);
        let budget = Budget::new(cfg.polls_per_minute, burst);
        Self {
            cfg,
            next: BTreeMap::new(),
            schedule: BTreeSet::new(),
            ops: BTreeMap::new(),
            next_op: 1,
            paused: BTreeMap::new(),
            budget,
            budget_wait: None,
            recent: VecDeque::new(),
        }
    }

    /// Tools polled without any credential (`insecure`), to warn about.
    pub fn insecure_tools(&self) -> Vec<&'static str> {
        self.cfg
            .tools
            .values()
            .filter(|t| t.auth.is_none())
            .map(Tool::name)
            .collect()
    }

    /// Whether incidents of `source` are polled at all.
    pub fn polls(&self, source: Source) -> bool {
        self.cfg.tools.contains_key(&source)
    }

    /// An incident opened (or was rebuilt at start): ask about it after one
    /// poll period. Ids that were hashed, and sources without a status API,
    /// are not tracked. Closed incidents leave at their turn; should a churn
    /// of incidents fill the map first, the closed ones are dropped at once,
    /// so it never holds more than [`MAX_TRACKED`].
    pub fn watch(&mut self, key: &IncidentKey, ledger: &Ledger, now: DateTime<Utc>) {
        let Some(poll) = self.cfg.tools.get(&key.source).map(|t| t.poll) else {
            return;
        };
        if key.id.as_str().starts_with(HASHED_PREFIX) || self.next.contains_key(key) {
            return;
        }
        if self.next.len() >= MAX_TRACKED {
            let closed: Vec<IncidentKey> = self
                .next
                .keys()
                .filter(|k| {
                    !ledger
                        .get(k)
                        .is_some_and(|i| i.state == IncidentState::Open)
                })
                .cloned()
                .collect();
            for k in &closed {
                self.forget(k);
            }
            if self.next.len() >= MAX_TRACKED {
                return;
            }
        }
        self.schedule_at(key.clone(), now + poll);
    }

    fn schedule_at(&mut self, key: IncidentKey, at: DateTime<Utc>) {
        if let Some(old) = self.next.insert(key.clone(), at) {
            self.schedule.remove(&(old, key.clone()));
        }
        self.schedule.insert((at, key));
    }

    fn forget(&mut self, key: &IncidentKey) {
        if let Some(at) = self.next.remove(key) {
            self.schedule.remove(&(at, key.clone()));
        }
    }

    /// Incidents tracked now.
    pub fn tracked(&self) -> usize {
        self.next.len()
    }

    /// Starts the polls that are due; gives up on polls never answered.
    pub fn poll(&mut self, ledger: &Ledger, now: DateTime<Utc>) -> Vec<PollEffect> {
        let mut fx = Vec::new();
        let overdue: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, op)| op.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            fx.extend(self.on_result(id, CallResult::Failed, ledger, now));
        }
        if self.budget_wait.is_some_and(|w| w <= now) {
            self.budget_wait = None;
        }
        while self.ops.len() < self.cfg.max_in_flight && self.budget_wait.is_none() {
            let Some((at, key)) = self.schedule.first().cloned() else {
                break;
            };
            if at > now {
                break;
            }
            let open = ledger
                .get(&key)
                .is_some_and(|i| i.state == IncidentState::Open);
            let Some(tool) = self.cfg.tools.get(&key.source).cloned() else {
                self.forget(&key);
                continue;
            };
            if !open {
                // Resolved or expired meanwhile: nothing to ask.
                self.forget(&key);
                continue;
            }
            if let Some(until) = self.paused.get(&key.source).copied().filter(|u| *u > now) {
                self.schedule_at(key, until);
                continue;
            }
            if !self.budget.try_take(now) {
                self.budget_wait = self.budget.ready_at(now, 1);
                break;
            }
            // In flight: out of the schedule until the answer reschedules it.
            self.forget(&key);
            fx.push(PollEffect::Call(self.call(&tool, key, now)));
        }
        fx
    }

    fn call(&mut self, tool: &Tool, key: IncidentKey, now: DateTime<Utc>) -> HttpCall {
        let op = self.next_op;
        self.next_op = self.next_op.wrapping_add(1).max(1);
        let (path, accept) = request(tool, key.id.as_str());
        let mut headers = vec![
            ("accept".to_owned(), accept.to_owned()),
            ("user-agent".to_owned(), USER_AGENT.to_owned()),
        ];
        if let Some(a) = &tool.auth {
            headers.push(("authorization".to_owned(), a.0.clone()));
        }
        let timeout = i64::try_from(tool.timeout_ms).unwrap_or(5_000);
        self.ops.insert(
            op,
            PollOp {
                key,
                sent_at: now,
                deadline: now + Duration::milliseconds(timeout + OP_GRACE_MS),
            },
        );
        HttpCall {
            op,
            cluster: tool.cluster.clone(),
            method: "GET",
            path,
            authority: tool.authority.clone(),
            headers,
            body: None,
            timeout_ms: tool.timeout_ms,
        }
    }

    /// Takes the answer to poll `op`. An unknown op is ignored.
    pub fn on_result(
        &mut self,
        op: OpId,
        result: CallResult,
        ledger: &Ledger,
        now: DateTime<Utc>,
    ) -> Vec<PollEffect> {
        let Some(p) = self.ops.remove(&op) else {
            return Vec::new();
        };
        let Some(tool) = self.cfg.tools.get(&p.key.source).cloned() else {
            return Vec::new();
        };
        let mut fx = vec![
            PollEffect::Metric(PollMetric::Polled),
            PollEffect::Metric(PollMetric::LatencyMs(
                u64::try_from((now - p.sent_at).num_milliseconds().max(0)).unwrap_or(0),
            )),
        ];
        let (status, headers, body) = match &result {
            CallResult::Response {
                status,
                headers,
                body,
            } => (Some(*status), headers.as_slice(), body.as_slice()),
            CallResult::Failed => (None, &[][..], &[][..]),
        };
        let parsed = match status {
            Some(200..=299) => match tool.source {
                Source::Pagerduty => parse_pagerduty(body),
                Source::Servicenow => parse_servicenow(body),
                _ => parse_jira(body),
            },
            Some(404) => Ok(ToolStatus::NotFound),
            Some(429) => {
                let secs = header(headers, "retry-after")
                    .and_then(|v| parse_retry_after(v, now))
                    .unwrap_or(60)
                    .min(3_600);
                let until = now + Duration::seconds(i64::try_from(secs).unwrap_or(60));
                self.paused.insert(tool.source, until);
                fx.push(PollEffect::Metric(PollMetric::RateLimited));
                Err(format!("429: paused until {}", rfc3339(until)))
            }
            Some(s) => Err(format!("answered {s}")),
            None => Err("no answer (reset, timeout or no upstream)".to_owned()),
        };
        // Still open here? (It may have been resolved while the poll was out.)
        let open = ledger
            .get(&p.key)
            .is_some_and(|i| i.state == IncidentState::Open);
        let (decision, detail) = match parsed {
            Ok(ToolStatus::Resolved(said)) => {
                fx.push(PollEffect::Metric(PollMetric::PolledResolved));
                let detail = format!(
                    "{} says {said}: resolved there, no resolution webhook arrived",
                    tool.name()
                );
                if open {
                    fx.push(PollEffect::Resolved {
                        key: p.key.clone(),
                        detail: detail.clone(),
                    });
                }
                ("polled-resolved", detail)
            }
            Ok(ToolStatus::Open(said)) => {
                if open {
                    self.schedule_at(p.key.clone(), now + tool.poll);
                    // Two poll periods at least: one failed poll must not
                    // let it lapse.
                    fx.push(PollEffect::Renew {
                        key: p.key.clone(),
                        at_least: tool.poll * 2,
                    });
                }
                ("still-open", format!("{} says {said}", tool.name()))
            }
            Ok(ToolStatus::NotFound) => {
                fx.push(PollEffect::Metric(PollMetric::NotFound));
                if open {
                    self.schedule_at(p.key.clone(), now + tool.poll);
                }
                (
                    "not-found",
                    format!("{} does not know this incident", tool.name()),
                )
            }
            Err(e) => {
                fx.push(PollEffect::Metric(PollMetric::Failed));
                if open {
                    let retry = tool.poll.min(Duration::seconds(RETRY_FAILED_S));
                    self.schedule_at(p.key.clone(), now + retry);
                }
                ("poll-failed", format!("{}: {e}", tool.name()))
            }
        };
        let line = json!({
            "kind": "emr.itsm.poll",
            "at": rfc3339(now),
            "incident": p.key.to_string(),
            "tool": tool.name(),
            "decision": decision,
            "httpStatus": status,
            "detail": detail,
        });
        self.recent.push_back(line.clone());
        while self.recent.len() > RECENT {
            self.recent.pop_front();
        }
        fx.push(PollEffect::Audit(line));
        fx
    }

    /// When `poll` should run next.
    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        let due = self.schedule.first().map(|(at, _)| *at);
        let deadlines = self.ops.values().map(|op| op.deadline);
        due.into_iter()
            .chain(deadlines)
            .chain(self.budget_wait)
            .min()
    }

    /// For `GET /emr/state`.
    pub fn view(&self, now: DateTime<Utc>) -> Value {
        let tools: Vec<Value> = self
            .cfg
            .tools
            .values()
            .map(|t| {
                json!({
                    "tool": t.name(),
                    "source": t.source,
                    "pollSeconds": t.poll.num_seconds(),
                    "pausedUntil": self.paused.get(&t.source).filter(|u| **u > now).map(|u| rfc3339(*u)),
                })
            })
            .collect();
        json!({
            "tools": tools,
            "tracked": self.next.len(),
            "inFlight": self.ops.len(),
            "nextPoll": self.schedule.first().map(|(at, _)| rfc3339(*at)),
            "recent": self.recent,
        })
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::event::{
        CorrelationId, GroupId, IncidentEvent, IncidentType, QueueId, QueuedEvent, RoutingMode,
    };

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_723_731_721 + s, 0).unwrap()
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "PD_TOKEN" => Some("pd-rest-api-key".into()),
            "SN_USER" => Some("emr".into()),
            "SN_PASSWORD" => Some("sn-pass".into()),
            "JIRA_TOKEN" => Some("jira-bearer".into()),
            _ => None,
        }
    }

    /// The settings, or the first error (`every_problem_is_reported`
    /// checks that none is lost).
    fn settings(v: Value) -> Result<ItsmSettings, ItsmConfigError> {
        ItsmConfig::deserialize(v)
            .unwrap()
            .compile(&env)
            .map_err(|mut e| e.remove(0))
    }

    #[test]
    fn every_problem_is_reported() {
        let errors = ItsmConfig::deserialize(json!({
            "max_in_flight": 0,
            "pagerduty": {"token_env": "MISSING", "poll_seconds": 0},
            "servicenow": {"username_env": "SN_USER", "password_env": "ALSO_MISSING", "table": "a b"}
        }))
        .unwrap()
        .compile(&env)
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "max_in_flight",
                "pagerduty.token_env",
                "pagerduty.poll_seconds",
                "servicenow.authority",
                "servicenow.password_env",
                "servicenow.table",
            ]
        );
        assert!(errors[1].message.contains("host_env_keys"), "{errors:?}");
    }

    fn all() -> Arc<ItsmSettings> {
        Arc::new(
            settings(json!({
                "pagerduty": {"token_env": "PD_TOKEN", "poll_seconds": 60},
                "servicenow": {"authority": "acme.service-now.com", "username_env": "SN_USER", "password_env": "SN_PASSWORD", "poll_seconds": 60},
                "jsm": {"authority": "acme.atlassian.net", "token_env": "JIRA_TOKEN", "poll_seconds": 60}
            }))
            .unwrap(),
        )
    }

    fn key(source: Source, id: &str) -> IncidentKey {
        IncidentKey {
            source,
            id: CorrelationId::parse(id).unwrap(),
        }
    }

    fn open(l: &mut Ledger, source: Source, id: &str) {
        let q = QueuedEvent {
            event: IncidentEvent {
                source,
                correlation_id: CorrelationId::parse(id).unwrap(),
                incident_type: IncidentType::parse("X").unwrap(),
                routing_mode: RoutingMode::Active,
                target_queue_ids: vec![QueueId::parse("q").unwrap()],
                timestamp: t(0),
                ttl_seconds: 86_400,
                priority: 3,
                group: None,
                detail: None,
                about: None,
            },
            received_ms: t(0).timestamp_millis(),
            delivery_id: None,
            slot: false,
        };
        l.apply(&q, GroupId::parse("G").unwrap(), t(0));
    }

    fn ok(body: Value) -> CallResult {
        CallResult::Response {
            status: 200,
            headers: vec![],
            body: serde_json::to_vec(&body).unwrap(),
        }
    }

    fn calls(fx: &[PollEffect]) -> Vec<HttpCall> {
        fx.iter()
            .filter_map(|e| match e {
                PollEffect::Call(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn each_tool_is_asked_its_own_way() {
        let s = all();
        let pd = &s.tools[&Source::Pagerduty];
        assert_eq!(pd.cluster, "pagerduty_api");
        assert_eq!(pd.authority, "api.pagerduty.com");
        assert_eq!(request(pd, "Q2UEJOMV3XYQ9N").0, "/incidents/Q2UEJOMV3XYQ9N");
        let sn = &s.tools[&Source::Servicenow];
        assert_eq!(
            request(sn, "INC0010023").0,
            "/api/now/table/incident?sysparm_query=number%3DINC0010023&sysparm_fields=number%2Cstate%2Csys_id&sysparm_limit=1"
        );
        assert!(request(sn, "46e18c0fa9fe19810066a0083f76bd56")
            .0
            .contains("sysparm_query=sys_id%3D46e18c0fa9fe19810066a0083f76bd56"));
        let jira = &s.tools[&Source::Jsm];
        assert_eq!(
            request(jira, "ITSM-42").0,
            "/rest/api/3/issue/ITSM-42?fields=status"
        );
        assert_eq!(jira.cluster, "jira_api");
    }

    #[test]
    fn credentials_are_sent_the_tools_way_and_never_shown() {
        let s = all();
        let mut p = Poller::new(Arc::clone(&s));
        let mut l = Ledger::default();
        open(&mut l, Source::Pagerduty, "P1");
        open(&mut l, Source::Servicenow, "INC1");
        open(&mut l, Source::Jsm, "OPS-1");
        for (src, id) in [
            (Source::Pagerduty, "P1"),
            (Source::Servicenow, "INC1"),
            (Source::Jsm, "OPS-1"),
        ] {
            p.watch(&key(src, id), &l, t(0));
        }
        let mut out = calls(&p.poll(&l, t(60)));
        out.extend(calls(&p.poll(&l, t(60))));
        assert_eq!(out.len(), 2, "two in flight at most");
        let auth: Vec<&str> = out
            .iter()
            .map(|c| c.header("authorization").unwrap())
            .collect();
        assert!(auth.contains(&"Token token=pd-rest-api-key"));
        assert!(auth.contains(&"Basic ZW1yOnNuLXBhc3M="));
        let shown = format!("{s:?} {out:?}");
        for secret in [
            "pd-rest-api-key",
            "sn-pass",
            "jira-bearer",
            "ZW1yOnNuLXBhc3M",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(out[0].authority, "api.pagerduty.com");
        assert_eq!(out[0].method, "GET");
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = settings(
            json!({"servicenow": {"username_env": "SN_USER", "password_env": "SN_PASSWORD"}}),
        )
        .unwrap_err();
        assert_eq!(e.field, "servicenow.authority");
        let e = settings(json!({"pagerduty": {}})).unwrap_err();
        assert_eq!(e.field, "pagerduty.token_env");
        let e = settings(json!({"pagerduty": {"token_env": "MISSING"}})).unwrap_err();
        assert_eq!(e.field, "pagerduty.token_env");
        assert!(e.message.contains("MISSING"));
        let e = settings(
            json!({"pagerduty": {"username_env": "SN_USER", "password_env": "SN_PASSWORD"}}),
        )
        .unwrap_err();
        assert_eq!(e.field, "pagerduty.token_env");
        let e = settings(json!({"jsm": {"authority": "x.atlassian.net", "insecure": true, "token_env": "JIRA_TOKEN"}})).unwrap_err();
        assert_eq!(e.field, "jsm.insecure");
        let e = settings(json!({"jsm": {"authority": "https://x", "insecure": true}})).unwrap_err();
        assert_eq!(e.field, "jsm.authority");
        let e = settings(json!({"pagerduty": {"insecure": true, "poll_seconds": 0}})).unwrap_err();
        assert_eq!(e.field, "pagerduty.poll_seconds");
        let e = settings(json!({"max_in_flight": 0})).unwrap_err();
        assert_eq!(e.field, "max_in_flight");
        let e = settings(
            json!({"servicenow": {"authority": "a.b", "insecure": true, "table": "inc;drop"}}),
        )
        .unwrap_err();
        assert_eq!(e.field, "servicenow.table");
        assert!(ItsmConfig::deserialize(json!({"pagerduty": {"tokn_env": "x"}})).is_err());
        // Nothing secret in any message.
        let e = settings(json!({"servicenow": {"authority": "a.b", "username_env": "SN_USER"}}))
            .unwrap_err();
        assert!(!e.message.contains("sn-pass"));
    }

    #[test]
    fn answers_are_read_per_tool() {
        let pd = |s: &str| {
            parse_pagerduty(
                &serde_json::to_vec(&json!({"incident": {"id": "P1", "status": s}})).unwrap(),
            )
        };
        assert_eq!(pd("resolved"), Ok(ToolStatus::Resolved("resolved".into())));
        assert_eq!(
            pd("acknowledged"),
            Ok(ToolStatus::Open("acknowledged".into()))
        );
        assert!(pd("exploded").is_err());
        assert!(parse_pagerduty(b"{}").is_err());

        let sn = |state: Value| {
            parse_servicenow(
                &serde_json::to_vec(&json!({"result": [{"number": "INC1", "state": state}]}))
                    .unwrap(),
            )
        };
        assert!(matches!(sn(json!("6")), Ok(ToolStatus::Resolved(_))));
        assert!(matches!(sn(json!("7")), Ok(ToolStatus::Resolved(_))));
        assert!(matches!(sn(json!(8)), Ok(ToolStatus::Resolved(_))));
        assert!(matches!(sn(json!("Resolved")), Ok(ToolStatus::Resolved(_))));
        assert!(matches!(
            sn(json!({"value": "6", "display_value": "Resolved"})),
            Ok(ToolStatus::Resolved(_))
        ));
        assert_eq!(sn(json!("2")), Ok(ToolStatus::Open("state 2".into())));
        assert!(matches!(sn(json!("In Progress")), Ok(ToolStatus::Open(_))));
        assert!(sn(json!(null)).is_err());
        assert_eq!(
            parse_servicenow(br#"{"result": []}"#),
            Ok(ToolStatus::NotFound)
        );
        assert!(parse_servicenow(b"[]").is_err());

        let jira = |name: &str, cat: &str| {
            parse_jira(&serde_json::to_vec(&json!({"key": "OPS-1", "fields": {"status": {"name": name, "statusCategory": {"key": cat}}}})).unwrap())
        };
        assert_eq!(
            jira("Done", "done"),
            Ok(ToolStatus::Resolved("Done (done)".into()))
        );
        assert!(matches!(jira("Fixed", "done"), Ok(ToolStatus::Resolved(_))));
        assert!(matches!(
            jira("In Progress", "indeterminate"),
            Ok(ToolStatus::Open(_))
        ));
        assert!(parse_jira(br#"{"fields": {}}"#).is_err());
        assert!(parse_jira(b"not json").is_err());
    }

    #[test]
    fn an_incident_resolved_in_the_tool_is_resolved_here_within_one_poll() {
        let mut p = Poller::new(all());
        let mut l = Ledger::default();
        open(&mut l, Source::Pagerduty, "P1");
        let k = key(Source::Pagerduty, "P1");
        p.watch(&k, &l, t(0));
        assert!(
            calls(&p.poll(&l, t(59))).is_empty(),
            "not before one period"
        );
        assert_eq!(p.next_wakeup(), Some(t(60)));
        let out = calls(&p.poll(&l, t(60)));
        assert_eq!(out.len(), 1);
        // Still open there: asked again a period later.
        let fx = p.on_result(
            out[0].op,
            ok(json!({"incident": {"status": "triggered"}})),
            &l,
            t(61),
        );
        assert!(fx
            .iter()
            .any(|e| matches!(e, PollEffect::Audit(a) if a["decision"] == "still-open")));
        // …which renews its expiry: at least two poll periods away.
        assert!(fx.contains(&PollEffect::Renew {
            key: k.clone(),
            at_least: Duration::seconds(120),
        }));
        assert_eq!(p.next_wakeup(), Some(t(121)));
        let out = calls(&p.poll(&l, t(121)));
        let fx = p.on_result(
            out[0].op,
            ok(json!({"incident": {"status": "resolved"}})),
            &l,
            t(122),
        );
        let resolved: Vec<_> = fx
            .iter()
            .filter_map(|e| match e {
                PollEffect::Resolved { key, detail } => Some((key.clone(), detail.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].0, k);
        assert!(
            resolved[0].1.starts_with("PagerDuty says resolved"),
            "{}",
            resolved[0].1
        );
        assert!(fx.contains(&PollEffect::Metric(PollMetric::PolledResolved)));
        // The glue resolves it; nothing more is asked.
        l.resolve_by_poll(&k, resolved[0].1.clone(), t(122));
        assert_eq!(p.tracked(), 0);
        assert!(calls(&p.poll(&l, t(10_000))).is_empty());
        assert_eq!(p.view(t(122))["recent"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn closed_incidents_hashed_ids_and_unconfigured_tools_are_not_asked() {
        let mut p = Poller::new(all());
        let mut l = Ledger::default();
        open(&mut l, Source::Jsm, "OPS-1");
        p.watch(&key(Source::Canonical, "INC-1"), &l, t(0));
        p.watch(&key(Source::Opsgenie, "abc"), &l, t(0));
        p.watch(
            &key(Source::Jsm, "sha256:00112233445566778899aabbccddeeff"),
            &l,
            t(0),
        );
        assert_eq!(p.tracked(), 0);
        p.watch(&key(Source::Jsm, "OPS-1"), &l, t(0));
        p.watch(&key(Source::Jsm, "OPS-1"), &l, t(30));
        assert_eq!(
            p.next_wakeup(),
            Some(t(60)),
            "watching twice does not delay it"
        );
        // Resolved by its webhook meanwhile: dropped at its turn, no call.
        l.resolve_by_poll(&key(Source::Jsm, "OPS-1"), "x".into(), t(10));
        assert!(calls(&p.poll(&l, t(60))).is_empty());
        assert_eq!(p.tracked(), 0);
    }

    #[test]
    fn failures_retry_sooner_and_a_429_pauses_the_tool() {
        let mut p = Poller::new(all());
        let mut l = Ledger::default();
        open(&mut l, Source::Pagerduty, "P1");
        open(&mut l, Source::Pagerduty, "P2");
        p.watch(&key(Source::Pagerduty, "P1"), &l, t(0));
        p.watch(&key(Source::Pagerduty, "P2"), &l, t(1));
        let out = calls(&p.poll(&l, t(60)));
        assert_eq!(out.len(), 1);
        let fx = p.on_result(
            out[0].op,
            CallResult::Response {
                status: 429,
                headers: vec![("Retry-After".into(), "120".into())],
                body: vec![],
            },
            &l,
            t(60),
        );
        assert!(fx.contains(&PollEffect::Metric(PollMetric::RateLimited)));
        // P2 is due at 61 but PagerDuty is paused until 180.
        assert!(calls(&p.poll(&l, t(61))).is_empty());
        assert_eq!(
            p.view(t(61))["tools"][0]["pausedUntil"],
            "2024-08-15T14:25:01.000Z"
        );
        let out = calls(&p.poll(&l, t(180)));
        assert_eq!(out.len(), 2);
        // A timeout: asked again within 30 s, not a whole period.
        let fx = p.on_result(out[0].op, CallResult::Failed, &l, t(181));
        assert!(fx.contains(&PollEffect::Metric(PollMetric::Failed)));
        let fx = p.on_result(
            out[1].op,
            CallResult::Response {
                status: 404,
                headers: vec![],
                body: vec![],
            },
            &l,
            t(181),
        );
        assert!(fx.contains(&PollEffect::Metric(PollMetric::NotFound)));
        assert_eq!(p.next_wakeup(), Some(t(211)));
        // A poll never answered is given up on after its timeout.
        let out = calls(&p.poll(&l, t(211)));
        assert_eq!(out.len(), 1);
        let fx = p.poll(&l, t(219));
        assert!(fx.contains(&PollEffect::Metric(PollMetric::Failed)));
    }

    #[test]
    fn tracking_is_bounded_even_under_churn() {
        let s = Arc::new(settings(json!({"pagerduty": {"insecure": true}})).unwrap());
        let mut p = Poller::new(s);
        let mut l = Ledger::default();
        for i in 0..MAX_TRACKED + 10 {
            let id = format!("P{i}");
            open(&mut l, Source::Pagerduty, &id);
            p.watch(&key(Source::Pagerduty, &id), &l, t(0));
            // Each closes at once (its resolution webhook came).
            l.resolve_by_poll(&key(Source::Pagerduty, &id), "x".into(), t(1));
        }
        assert!(p.tracked() <= MAX_TRACKED);
        assert_eq!(p.insecure_tools(), ["PagerDuty"]);
    }

    #[test]
    fn polls_are_budgeted() {
        let s = Arc::new(
            settings(json!({"pagerduty": {"insecure": true, "poll_seconds": 1}, "max_in_flight": 16, "polls_per_minute": 6})).unwrap(),
        );
        let mut p = Poller::new(s);
        let mut l = Ledger::default();
        for i in 0..20 {
            open(&mut l, Source::Pagerduty, &format!("P{i}"));
            p.watch(&key(Source::Pagerduty, &format!("P{i}")), &l, t(0));
        }
        let mut sent = 0;
        for s in 1..=60 {
            let out = calls(&p.poll(&l, t(s)));
            for c in &out {
                assert!(
                    c.header("authorization").is_none(),
                    "insecure: no credential"
                );
                p.on_result(
                    c.op,
                    ok(json!({"incident": {"status": "triggered"}})),
                    &l,
                    t(s),
                );
            }
            sent += out.len();
        }
        assert!(
            sent <= 7,
            "{sent} polls in a minute at 6 a minute (+1 burst)"
        );
    }
}
