//! The poller: a by-value state machine that asks the tools about open
//! incidents, within its budget, and says what the glue must do.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use crate::callout::{header, parse_retry_after, Budget, CallResult, HttpCall, OpId, USER_AGENT};
use crate::event::{Control, GroupId, IncidentKey, Source};
use crate::ledger::{IncidentState, Ledger};
use crate::sources::ids::HASHED_PREFIX;

use super::config::{ItsmSettings, Tool};
use super::tools::{parse_jira, parse_pagerduty, parse_servicenow, request, ToolStatus};
use crate::rfc3339::text as rfc3339;

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
            PollMetric::Polled => "emr.itsm.polled",
            PollMetric::PolledResolved => "emr.itsm.polled_resolved",
            PollMetric::NotFound => "emr.itsm.not_found",
            PollMetric::Failed => "emr.itsm.poll_failed",
            PollMetric::RateLimited => "emr.itsm.rate_limited",
            PollMetric::LatencyMs(_) => "emr.itsm.latency_ms",
        }
    }
}

/// What the glue must do.
#[derive(Debug, Clone, PartialEq)]
pub enum PollEffect {
    /// Dispatch; hand the answer to [`Poller::on_result`].
    Call(HttpCall),
    /// A change to the ledger, which the poller only reads: its owner
    /// applies it with [`PollChange::apply`] and acts on what it touched.
    Ledger(PollChange),
    Audit(Value),
    Metric(PollMetric),
}

/// A change the poller asks of the ledger. Opaque: the only thing to do
/// with one is [`PollChange::apply`] it.
#[derive(Debug, Clone, PartialEq)]
pub struct PollChange(pub(super) LedgerOp);

#[derive(Debug, Clone, PartialEq)]
pub(super) enum LedgerOp {
    /// The tool says the incident is resolved: resolved here, as by its
    /// resolution webhook.
    Resolve { key: IncidentKey, detail: String },
    /// The tool says the incident is still open: its expiry moves on, at
    /// least `at_least` away. While the tool answers that it is open, it
    /// never expires here.
    Renew {
        key: IncidentKey,
        at_least: Duration,
    },
}

/// What a [`PollChange`] did to the ledger: `None` when nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollChanged {
    /// The incident, whose published status is stale.
    pub key: IncidentKey,
    pub group: GroupId,
    /// `true`: reconcile the group at once, as after an incident event (a
    /// resolution). `false`: only its row changes (the expiry persisted
    /// for a restart), whenever the group is next reconciled.
    pub urgent: bool,
}

impl PollChange {
    /// The change as a control for etcd's log (cluster mode): every
    /// replica applies it, as of `now`, when it reads it back.
    pub fn to_control(&self, now: DateTime<Utc>) -> Control {
        let at_ms = now.timestamp_millis();
        match &self.0 {
            LedgerOp::Resolve { key, detail } => Control::Polled {
                incident: key.clone(),
                at_ms,
                resolved: Some(detail.clone()),
                renew_seconds: 0,
            },
            LedgerOp::Renew { key, at_least } => Control::Polled {
                incident: key.clone(),
                at_ms,
                resolved: None,
                renew_seconds: at_least.num_seconds(),
            },
        }
    }

    /// A [`Control::Polled`]'s change, read back from the log.
    pub fn polled(incident: IncidentKey, resolved: Option<String>, renew_seconds: i64) -> Self {
        Self(match resolved {
            Some(detail) => LedgerOp::Resolve {
                key: incident,
                detail,
            },
            None => LedgerOp::Renew {
                key: incident,
                at_least: Duration::seconds(renew_seconds),
            },
        })
    }

    pub fn apply(self, ledger: &mut Ledger, now: DateTime<Utc>) -> Option<PollChanged> {
        let (key, group, urgent) = match self.0 {
            LedgerOp::Resolve { key, detail } => {
                let group = ledger.resolve_by_poll(&key, detail, now)?;
                (key, group, true)
            }
            LedgerOp::Renew { key, at_least } => {
                let group = ledger.renew(&key, at_least, now)?;
                (key, group, false)
            }
        };
        Some(PollChanged { key, group, urgent })
    }
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
            .filter(|t| t.authorization().is_none())
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

    #[cfg(test)]
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
        if let Some(a) = tool.authorization() {
            headers.push(("authorization".to_owned(), a.to_owned()));
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
                    fx.push(PollEffect::Ledger(PollChange(LedgerOp::Resolve {
                        key: p.key.clone(),
                        detail: detail.clone(),
                    })));
                }
                ("polled-resolved", detail)
            }
            Ok(ToolStatus::Open(said)) => {
                if open {
                    self.schedule_at(p.key.clone(), now + tool.poll);
                    // Two poll periods at least: one failed poll must not
                    // let it lapse.
                    fx.push(PollEffect::Ledger(PollChange(LedgerOp::Renew {
                        key: p.key.clone(),
                        at_least: tool.poll * 2,
                    })));
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

    #[cfg(test)]
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
