//! The reconciler: drives each emergency group in Genesys to the state the
//! ledger wants, as a by-value state machine the singleton's glue runs.
//!
//! The glue feeds it three things — "the ledger changed for this group"
//! ([`Reconciler::mark_dirty`]), "time passed" ([`Reconciler::poll`]) and "a
//! call answered" ([`Reconciler::on_result`]) — and carries out the
//! [`Effect`]s that come back: HTTP calls, ledger settlements, audit lines,
//! metrics. It never reads a clock.
//!
//! One reconcile of a group (a *cycle*) is: a pre-flight read, a decision,
//! and only if Genesys differs from the target, the writes — then a settle.
//! The rules (DESIGN §6–§7):
//! - one call per group at a time, `max_in_flight` calls overall, and a
//!   bounded backlog of groups waiting for a slot; any number of
//!   `mark_dirty`s during a cycle makes exactly one more cycle after it;
//! - every write follows a fresh read: a cycle that has to start over
//!   (conflict, 401, 429, backoff) starts over from the read;
//! - 401 → one token refresh and one more try, then failed; 403, 404 and
//!   other refusals → failed, no retry; 409 / 400 version mismatch → read
//!   again, `max_version_retries` times; 429 → every call paused until
//!   `Retry-After`; 5xx and failed calls → backoff (1 s, 2 s, 4 s … 30 s),
//!   then a new read — never a blind retry of a write;
//! - a settle is `Applied` only if the ledger still wants what was reached;
//!   if it changed meanwhile, the group is simply reconciled again.
//!
//! With a data table configured, the group's row (queue list, incident ids,
//! enabled) is written when its content changes. When switching *on*, the
//! row is written before the group, so a flow that sees the emergency path
//! already finds the queues; when switching off, after.
//!
//! Kept per group for the watchdog (issue 4): what was last observed
//! (`version`, `modifiedByApp`, `dateModified`), what we last wrote, and the
//! `modifiedByApp` Genesys stamps on our own writes.
//!
//! How the glue drives it:
//! 1. `on_configure`: `Reconciler::new(Arc::new(settings))`, optionally
//!    `import_token` from shared data, `mark_all(&ledger)`, `poll`.
//! 2. For each dequeued event: `ledger.apply(..)`, then `mark_dirty(group)`
//!    when the desired state may have changed; one `poll` per batch.
//! 3. Each `Effect::Call`: `dispatch_http_call` with `:method`, `:path`,
//!    `:authority` from the call, its headers, body and `timeout_ms`; keep
//!    host token → `op`. If dispatching fails, hand `CallResult::Failed` to
//!    `on_result` at once.
//! 4. `on_http_call_response`: read `:status` (absent → `Failed`), headers
//!    and body; `on_result(op, …)`.
//! 5. Each `Effect::Settle`: `ledger.settle_group(..)` and refresh the
//!    published status of the incidents it returns. `Audit`: log one line.
//!    `Metric`: bump the counter / record the histogram named by `name()`.
//! 6. Tick: set the tick period so `poll` runs at `next_wakeup()` (or
//!    earlier; extra polls are harmless). After an answer that emitted
//!    `Metric::TokenRefresh`, mirror `export_token()` into shared data.
//!
//! Memory is bounded by the number of groups (config and mapping rules
//! name them), `max_in_flight` calls and `max_backlog` queued groups.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::event::GroupId;
use crate::genesys::answer::{Answer, AnswerClass, RateLimit};
use crate::genesys::config::GenesysSettings;
use crate::genesys::driver::{driver_for, row_request, Decision, Driver, Observed, Target};
use crate::genesys::models::QueueRow;
use crate::genesys::token::{backoff, StoredToken, TokenManager, TokenOutcome};
use crate::genesys::{Request, USER_AGENT};
use crate::ledger::{GenesysRef, Ledger, Settle};

pub use crate::genesys::{CallResult, HttpCall, OpId};

/// Extra time past a call's timeout before the reconciler gives up on it by
/// itself (the host should have reported a failure by then).
const OP_GRACE_MS: i64 = 2_000;

/// What the glue must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Dispatch this call; hand its answer to [`Reconciler::on_result`].
    Call(HttpCall),
    /// `ledger.settle_group(group, outcome, genesys, now)`, then refresh the
    /// published status of the incidents it returns.
    Settle {
        group: GroupId,
        outcome: Settle,
        genesys: Option<GenesysRef>,
    },
    /// One JSON audit line (a decision: incident ids, before, after, what
    /// Genesys answered).
    Audit(Value),
    Metric(Metric),
}

/// Why a call failed, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Unauthorized,
    Forbidden,
    NotFound,
    VersionConflict,
    RateLimited,
    ServerError,
    Transport,
    Refused,
    /// A 2xx whose body could not be read.
    Malformed,
    /// The login host refused the client credentials.
    BadCredentials,
}

impl FailureKind {
    fn of(class: AnswerClass) -> FailureKind {
        match class {
            AnswerClass::Unauthorized => FailureKind::Unauthorized,
            AnswerClass::Forbidden => FailureKind::Forbidden,
            AnswerClass::NotFound => FailureKind::NotFound,
            AnswerClass::VersionConflict => FailureKind::VersionConflict,
            AnswerClass::RateLimited => FailureKind::RateLimited,
            AnswerClass::ServerError => FailureKind::ServerError,
            AnswerClass::Transport => FailureKind::Transport,
            AnswerClass::Refused | AnswerClass::Success => FailureKind::Refused,
        }
    }
}

/// A metric sample. Counters count one per sample; `CalloutLatencyMs` is a
/// histogram value. [`Metric::name`] is the stat name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// A write changed the switch in Genesys.
    Transition,
    /// A reconcile found Genesys already as wanted.
    InSync,
    /// A reconcile ended applied.
    Applied,
    /// A reconcile ended failed.
    Failed,
    /// A call got an error answer (or none).
    Failure(FailureKind),
    TokenRefresh,
    RowWrite,
    /// A 429 paused every call.
    RateLimitPause,
    /// `mark_dirty` found the backlog full.
    BacklogFull,
    CalloutLatencyMs(u64),
}

impl Metric {
    pub fn name(&self) -> &'static str {
        match self {
            Metric::Transition => "genesys_transitions",
            Metric::InSync => "genesys_in_sync",
            Metric::Applied => "genesys_applied",
            Metric::Failed => "genesys_failed",
            Metric::Failure(k) => match k {
                FailureKind::Unauthorized => "genesys_failures_unauthorized",
                FailureKind::Forbidden => "genesys_failures_forbidden",
                FailureKind::NotFound => "genesys_failures_not_found",
                FailureKind::VersionConflict => "genesys_failures_version_conflict",
                FailureKind::RateLimited => "genesys_failures_rate_limited",
                FailureKind::ServerError => "genesys_failures_server_error",
                FailureKind::Transport => "genesys_failures_transport",
                FailureKind::Refused => "genesys_failures_refused",
                FailureKind::Malformed => "genesys_failures_malformed",
                FailureKind::BadCredentials => "genesys_failures_bad_credentials",
            },
            Metric::TokenRefresh => "genesys_token_refreshes",
            Metric::RowWrite => "genesys_row_writes",
            Metric::RateLimitPause => "genesys_rate_limit_pauses",
            Metric::BacklogFull => "genesys_backlog_full",
            Metric::CalloutLatencyMs(_) => "genesys_callout_latency_ms",
        }
    }
}

/// What [`Reconciler::mark_dirty`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// A reconcile of the group is now waiting to start.
    Queued,
    /// One is already waiting or running; it (or the one right after it)
    /// covers this change.
    Coalesced,
    /// The backlog is full. Nothing is lost: the reconciler re-scans the
    /// ledger for out-of-date groups once there is room.
    BacklogFull,
}

/// The bookkeeping of one cycle, carried through its calls.
#[derive(Debug, Clone, Default, PartialEq)]
struct Cycle {
    /// Version conflicts (or row-create races) so far.
    conflicts: u32,
    /// The one token refresh after a 401 is used.
    auth_retried: bool,
    /// Reads that found `PENDING`.
    pending_reads: u32,
    /// What Genesys said last that the settle should carry.
    genesys: Option<GenesysRef>,
}

/// Where a group stands.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Nothing to do until the ledger changes.
    Idle,
    /// Waiting for a slot, a token or the end of a pause; starts with a read.
    Queued(Cycle),
    /// Backoff after a failure, or a `PENDING` state settling; then queued.
    Waiting {
        until: DateTime<Utc>,
        cycle: Cycle,
        why: &'static str,
    },
    /// A call of this group is out.
    InFlight(OpId),
}

/// One write a cycle still has to make.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    Group(Request),
    Row { row: QueueRow, create: bool },
}

/// What an out call was for.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Read,
    Act(Box<Act>),
}

/// A write of a cycle, what comes after it, and what it is for.
#[derive(Debug, Clone, PartialEq)]
struct Act {
    action: Action,
    rest: Vec<Action>,
    target: Target,
    /// The read it follows, for the audit line.
    before: Value,
}

#[derive(Debug, Clone, PartialEq)]
enum OpKind {
    Token,
    Group {
        group: GroupId,
        cycle: Cycle,
        step: Step,
        token_generation: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Op {
    kind: OpKind,
    sent_at: DateTime<Utc>,
    deadline: DateTime<Utc>,
}

/// A write of ours Genesys accepted.
#[derive(Debug, Clone, PartialEq)]
struct WriteRecord {
    at: DateTime<Utc>,
    enabled: bool,
    version: Option<u64>,
    date_modified: Option<String>,
    modified_by_app: Option<String>,
}

/// How the latest cycle (or its latest step) ended.
#[derive(Debug, Clone, PartialEq)]
struct LastReconcile {
    at: DateTime<Utc>,
    result: &'static str,
    detail: Option<String>,
    http_status: Option<u16>,
    correlation_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct GroupState {
    phase: Phase,
    /// The ledger changed while a call was out: one more cycle after this.
    dirty: bool,
    observed: Option<Observed>,
    observed_at: Option<DateTime<Utc>>,
    last_written: Option<WriteRecord>,
    last: Option<LastReconcile>,
    /// The data-table row as we last wrote it.
    row_written: Option<QueueRow>,
    /// The target Genesys was last seen to match.
    synced: Option<Target>,
    /// Transient failures in a row, for the backoff.
    failures: u32,
}

impl Default for GroupState {
    fn default() -> Self {
        Self {
            phase: Phase::Idle,
            dirty: false,
            observed: None,
            observed_at: None,
            last_written: None,
            last: None,
            row_written: None,
            synced: None,
            failures: 0,
        }
    }
}

/// Per-call context: the ledger to read, the time, and the effects so far.
struct Cx<'a> {
    ledger: &'a Ledger,
    now: DateTime<Utc>,
    fx: Vec<Effect>,
}

impl Cx<'_> {
    fn metric(&mut self, m: Metric) {
        self.fx.push(Effect::Metric(m));
    }
}

/// The per-group reconciler, token manager and call scheduler.
#[derive(Debug)]
pub struct Reconciler {
    cfg: Arc<GenesysSettings>,
    driver: Box<dyn Driver>,
    token: TokenManager,
    groups: BTreeMap<GroupId, GroupState>,
    /// Groups in `Phase::Queued`, oldest first.
    ready: VecDeque<GroupId>,
    ops: BTreeMap<OpId, Op>,
    next_op: OpId,
    /// No call starts before this (a 429).
    paused_until: Option<DateTime<Utc>>,
    rate_limit: Option<RateLimit>,
    /// `modifiedByApp` Genesys stamped on our latest write: our client's name.
    our_app: Option<String>,
    /// `mark_dirty` refused a group: re-scan the ledger when there is room.
    overflowed: bool,
    /// `BacklogFull` metrics not yet emitted.
    backlog_full_pending: u64,
}

impl Reconciler {
    pub fn new(cfg: Arc<GenesysSettings>) -> Self {
        let driver = driver_for(cfg.driver, &cfg.guide);
        Self {
            cfg,
            driver,
            token: TokenManager::new(),
            groups: BTreeMap::new(),
            ready: VecDeque::new(),
            ops: BTreeMap::new(),
            next_op: 1,
            paused_until: None,
            rate_limit: None,
            our_app: None,
            overflowed: false,
            backlog_full_pending: 0,
        }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &GenesysSettings {
        &self.cfg
    }

    /// The ledger changed for `group`. Cheap; call [`Reconciler::poll`]
    /// afterwards (once for a batch) to start what can start.
    pub fn mark_dirty(&mut self, group: &GroupId) -> Marked {
        let full = self.ready.len() >= self.cfg.limits.max_backlog;
        let st = self.groups.entry(group.clone()).or_default();
        match st.phase {
            Phase::Idle if full => {
                self.overflowed = true;
                self.backlog_full_pending += 1;
                Marked::BacklogFull
            }
            Phase::Idle => {
                st.phase = Phase::Queued(Cycle::default());
                self.ready.push_back(group.clone());
                Marked::Queued
            }
            // Its next read sees the change.
            Phase::Queued(_) | Phase::Waiting { .. } => Marked::Coalesced,
            Phase::InFlight(_) => {
                st.dirty = true;
                Marked::Coalesced
            }
        }
    }

    /// Marks every group the ledger knows (at start, or for a full check).
    pub fn mark_all(&mut self, ledger: &Ledger) {
        let groups: Vec<GroupId> = ledger.groups().cloned().collect();
        for g in &groups {
            self.mark_dirty(g);
        }
    }

    /// Starts what can start: due backoffs, the token, reads of queued
    /// groups (within the in-flight limit, not during a 429 pause). Also
    /// gives up on calls the host never answered.
    pub fn poll(&mut self, ledger: &Ledger, now: DateTime<Utc>) -> Vec<Effect> {
        let mut cx = Cx {
            ledger,
            now,
            fx: Vec::new(),
        };
        for _ in 0..std::mem::take(&mut self.backlog_full_pending) {
            cx.metric(Metric::BacklogFull);
        }
        let overdue: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, op)| op.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            if let Some(op) = self.ops.remove(&id) {
                self.answered(op, &CallResult::Failed, &mut cx);
            }
        }
        self.pump(&mut cx);
        cx.fx
    }

    /// Takes the answer to call `op`. An unknown op (answered already, or
    /// given up on) is ignored.
    pub fn on_result(
        &mut self,
        op: OpId,
        result: CallResult,
        ledger: &Ledger,
        now: DateTime<Utc>,
    ) -> Vec<Effect> {
        let Some(pending) = self.ops.remove(&op) else {
            return Vec::new();
        };
        let mut cx = Cx {
            ledger,
            now,
            fx: Vec::new(),
        };
        let ms = (now - pending.sent_at).num_milliseconds().max(0);
        cx.metric(Metric::CalloutLatencyMs(u64::try_from(ms).unwrap_or(0)));
        self.answered(pending, &result, &mut cx);
        self.pump(&mut cx);
        cx.fx
    }

    /// When `poll` should run next: a backoff or `PENDING` wait ending, a
    /// 429 pause ending, the token's refresh time, a call's deadline. `None`:
    /// nothing is scheduled (answers and `mark_dirty` drive it).
    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        let has_work = !self.ready.is_empty();
        let waits = self.groups.values().filter_map(|st| match st.phase {
            Phase::Waiting { until, .. } => Some(until),
            _ => None,
        });
        let deadlines = self.ops.values().map(|op| op.deadline);
        // With every slot taken the token waits for an answer (which pumps);
        // during a pause, for the pause's end.
        let token = if self.ops.len() < self.cfg.limits.max_in_flight && self.paused_until.is_none()
        {
            self.token.wakeup(has_work)
        } else {
            None
        };
        waits
            .chain(deadlines)
            .chain(self.paused_until)
            .chain(token)
            .min()
    }

    /// The current token, for the glue to mirror into shared data (after an
    /// answer that emitted [`Metric::TokenRefresh`]).
    pub fn export_token(&self) -> Option<StoredToken> {
        self.token.export()
    }

    /// Takes back a token mirrored in shared data (at start, after a VM
    /// reload). Returns whether it was usable.
    pub fn import_token(&mut self, token: StoredToken, now: DateTime<Utc>) -> bool {
        self.token.import(token, now)
    }

    /// Calls out now.
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// What was last read from Genesys for `group`.
    pub fn observed(&self, group: &GroupId) -> Option<&Observed> {
        self.groups.get(group).and_then(|st| st.observed.as_ref())
    }

    /// The `modifiedByApp` Genesys stamped on our own latest write.
    pub fn our_app(&self) -> Option<&str> {
        self.our_app.as_deref()
    }

    /// For `GET /emr/state`: per group desired, observed, last reconcile,
    /// open incidents, queues, what is out or waiting; the token's status
    /// (never the token); the pause and the rate-limit headers.
    pub fn state_view(&self, ledger: &Ledger, now: DateTime<Utc>) -> Value {
        let desired = ledger.desired();
        let mut ids: Vec<&GroupId> = desired.keys().collect();
        for g in self.groups.keys() {
            if !desired.contains_key(g) {
                ids.push(g);
            }
        }
        ids.sort();
        ids.dedup();
        let groups: Vec<Value> = ids
            .into_iter()
            .map(|g| {
                let d = desired.get(g).cloned().unwrap_or_default();
                let st = self.groups.get(g);
                self.group_view(g, &d, st)
            })
            .collect();
        json!({
            "driver": self.cfg.driver.as_str(),
            "token": self.token.view(now),
            "pausedUntil": self.paused_until.filter(|p| *p > now).map(rfc3339),
            "inFlight": self.ops.len(),
            "maxInFlight": self.cfg.limits.max_in_flight,
            "backlog": self.ready.len(),
            "rateLimit": self.rate_limit,
            "ourApp": self.our_app,
            "groups": groups,
        })
    }

    fn group_view(
        &self,
        g: &GroupId,
        d: &crate::ledger::Desired,
        st: Option<&GroupState>,
    ) -> Value {
        let incidents: Vec<Value> = d
            .incidents
            .iter()
            .map(|k| json!({"source": k.source, "correlationId": k.id}))
            .collect();
        let mut v = json!({
            "id": g,
            "desired": {"enabled": d.enabled, "queues": d.queues},
            "openIncidents": incidents,
            "queues": d.queues,
            "phase": "idle",
        });
        let (Some(obj), Some(st)) = (v.as_object_mut(), st) else {
            return v;
        };
        let phase = match &st.phase {
            Phase::Idle => "idle",
            Phase::Queued(_) => "queued",
            Phase::Waiting { why, until, .. } => {
                obj.insert("retryAt".into(), rfc3339(*until).into());
                *why
            }
            Phase::InFlight(op) => {
                if let Some(o) = self.ops.get(op) {
                    obj.insert("inFlightSince".into(), rfc3339(o.sent_at).into());
                }
                "in-flight"
            }
        };
        obj.insert("phase".into(), phase.into());
        obj.insert("dirty".into(), st.dirty.into());
        obj.insert(
            "observed".into(),
            st.observed.as_ref().map_or(Value::Null, |o| {
                json!({
                    "enabled": o.enabled,
                    "pending": o.pending,
                    "version": o.version,
                    "dateModified": o.date_modified,
                    "modifiedBy": o.modified_by,
                    "modifiedByApp": o.modified_by_app,
                    "state": o.lifecycle,
                    "queues": o.queues,
                    "at": st.observed_at.map(rfc3339),
                })
            }),
        );
        if let Some(l) = &st.last {
            obj.insert(
                "lastReconcile".into(),
                json!({
                    "at": rfc3339(l.at),
                    "result": l.result,
                    "detail": l.detail,
                    "httpStatus": l.http_status,
                    "correlationId": l.correlation_id,
                }),
            );
        }
        if let Some(w) = &st.last_written {
            obj.insert(
                "lastWritten".into(),
                json!({
                    "at": rfc3339(w.at),
                    "enabled": w.enabled,
                    "version": w.version,
                    "dateModified": w.date_modified,
                    "modifiedByApp": w.modified_by_app,
                }),
            );
        }
        if let Some(r) = &st.row_written {
            obj.insert("row".into(), serde_json::to_value(r).unwrap_or(Value::Null));
        }
        v
    }

    // ---- scheduling -------------------------------------------------------

    /// After `mark_dirty` refused groups: queue every ledger group that is
    /// idle and not known to match the ledger, while there is room.
    fn rescan(&mut self, ledger: &Ledger) {
        if !self.overflowed {
            return;
        }
        let desired = ledger.desired();
        self.overflowed = false;
        for (g, d) in desired {
            if self.ready.len() >= self.cfg.limits.max_backlog {
                self.overflowed = true;
                return;
            }
            let st = self.groups.entry(g.clone()).or_default();
            let stale = match &st.synced {
                None => true,
                Some(t) => {
                    t.enabled != d.enabled
                        || t.queues
                            .iter()
                            .map(String::as_str)
                            .ne(d.queues.iter().map(|q| q.as_str()))
                }
            };
            if st.phase == Phase::Idle && stale {
                st.phase = Phase::Queued(Cycle::default());
                self.ready.push_back(g);
            }
        }
    }

    /// Starts calls while there is room.
    fn pump(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        self.rescan(cx.ledger);
        let mut woken: Vec<GroupId> = Vec::new();
        for (g, st) in self.groups.iter_mut() {
            if let Phase::Waiting { until, cycle, .. } = &st.phase {
                if *until <= now {
                    st.phase = Phase::Queued(cycle.clone());
                    woken.push(g.clone());
                }
            }
        }
        self.ready.extend(woken);
        if let Some(p) = self.paused_until {
            if now < p {
                return;
            }
            self.paused_until = None;
        }
        let max = self.cfg.limits.max_in_flight;
        if self.ops.len() < max && self.token.needs_fetch(now, !self.ready.is_empty()) {
            let op = self.alloc_op();
            let call = self.token.start(op, &self.cfg);
            self.insert_op(op, OpKind::Token, now);
            cx.fx.push(Effect::Call(call));
        }
        if let Some(reason) = self.token.rejection(now).map(str::to_owned) {
            while let Some(g) = self.ready.pop_front() {
                if matches!(self.phase(&g), Some(Phase::Queued(_))) {
                    self.fail(&g, reason.clone(), None, cx);
                }
            }
            return;
        }
        while self.ops.len() < max && self.token.bearer(now).is_some() {
            let Some(g) = self.ready.pop_front() else {
                break;
            };
            let Some(st) = self.groups.get_mut(&g) else {
                continue;
            };
            let cycle = match std::mem::replace(&mut st.phase, Phase::Idle) {
                Phase::Queued(c) => c,
                other => {
                    // A stale entry: the group moved on already.
                    st.phase = other;
                    continue;
                }
            };
            self.send_read(&g, cycle, cx);
            if matches!(self.phase(&g), Some(Phase::Queued(_))) {
                // It could not go out after all; try again on the next pump.
                break;
            }
        }
    }

    fn phase(&self, g: &GroupId) -> Option<&Phase> {
        self.groups.get(g).map(|st| &st.phase)
    }

    fn alloc_op(&mut self) -> OpId {
        let op = self.next_op;
        self.next_op = self.next_op.wrapping_add(1).max(1);
        op
    }

    fn insert_op(&mut self, op: OpId, kind: OpKind, now: DateTime<Utc>) {
        let timeout = i64::try_from(self.cfg.limits.call_timeout_ms).unwrap_or(60_000);
        self.ops.insert(
            op,
            Op {
                kind,
                sent_at: now,
                deadline: now + Duration::milliseconds(timeout + OP_GRACE_MS),
            },
        );
    }

    /// Puts a group back at the head of the queue; its cycle restarts with
    /// a read when it can.
    fn requeue_front(&mut self, g: &GroupId, cycle: Cycle) {
        let st = self.groups.entry(g.clone()).or_default();
        st.phase = Phase::Queued(cycle);
        // A read is coming: it covers any change so far.
        st.dirty = false;
        self.ready.push_front(g.clone());
    }

    fn send_read(&mut self, g: &GroupId, cycle: Cycle, cx: &mut Cx<'_>) {
        let req = self.driver.read(g);
        self.send(g, cycle, Step::Read, req, cx);
    }

    /// Sends `req` for `g` now, or — when calls are paused, the slots are
    /// taken or no token is valid — queues the cycle to start over.
    fn send(&mut self, g: &GroupId, cycle: Cycle, step: Step, req: Request, cx: &mut Cx<'_>) {
        let now = cx.now;
        let paused = self.paused_until.is_some_and(|p| now < p);
        let Some(bearer) = self.token.bearer(now).filter(|_| !paused) else {
            self.requeue_front(g, cycle);
            return;
        };
        if self.ops.len() >= self.cfg.limits.max_in_flight {
            self.requeue_front(g, cycle);
            return;
        }
        let authorization = bearer.header_value();
        let generation = bearer.generation;
        let op = self.alloc_op();
        let call = HttpCall {
            op,
            cluster: self.cfg.api.cluster.clone(),
            method: req.method,
            path: req.path,
            authority: self.cfg.api.authority.clone(),
            headers: vec![
                ("authorization".to_owned(), authorization),
                ("content-type".to_owned(), "application/json".to_owned()),
                ("accept".to_owned(), "application/json".to_owned()),
                ("user-agent".to_owned(), USER_AGENT.to_owned()),
            ],
            body: req.body,
            timeout_ms: self.cfg.limits.call_timeout_ms,
        };
        self.insert_op(
            op,
            OpKind::Group {
                group: g.clone(),
                cycle,
                step,
                token_generation: generation,
            },
            now,
        );
        self.groups.entry(g.clone()).or_default().phase = Phase::InFlight(op);
        cx.fx.push(Effect::Call(call));
    }

    // ---- answers ----------------------------------------------------------

    fn answered(&mut self, op: Op, result: &CallResult, cx: &mut Cx<'_>) {
        let answer = Answer::classify(result, cx.now);
        if answer.rate_limit.is_some() {
            self.rate_limit = answer.rate_limit;
        }
        let body: &[u8] = match result {
            CallResult::Response { body, .. } => body,
            CallResult::Failed => &[],
        };
        match op.kind {
            OpKind::Token => self.token_answered(&answer, body, op.sent_at, cx),
            OpKind::Group {
                group,
                cycle,
                step,
                token_generation,
            } => self.group_answered(&group, cycle, step, token_generation, &answer, body, cx),
        }
    }

    fn token_answered(
        &mut self,
        answer: &Answer,
        body: &[u8],
        sent_at: DateTime<Utc>,
        cx: &mut Cx<'_>,
    ) {
        let outcome = self.token.finish(answer, body, sent_at, cx.now, &self.cfg);
        match outcome {
            TokenOutcome::Obtained { expires_in } => {
                cx.metric(Metric::TokenRefresh);
                cx.fx.push(Effect::Audit(json!({
                    "kind": "emr.genesys.token",
                    "at": rfc3339(cx.now),
                    "decision": "token-obtained",
                    "expiresInSeconds": expires_in,
                    "genesys": answer.to_json(),
                })));
            }
            TokenOutcome::RateLimited => {
                cx.metric(Metric::Failure(FailureKind::RateLimited));
                self.pause(answer, cx);
            }
            TokenOutcome::Transient(reason) => {
                cx.metric(Metric::Failure(FailureKind::of(answer.class)));
                cx.fx.push(Effect::Audit(json!({
                    "kind": "emr.genesys.token",
                    "at": rfc3339(cx.now),
                    "decision": "token-retry",
                    "detail": reason,
                    "genesys": answer.to_json(),
                })));
            }
            TokenOutcome::Rejected(reason) => {
                cx.metric(Metric::Failure(FailureKind::BadCredentials));
                cx.fx.push(Effect::Audit(json!({
                    "kind": "emr.genesys.token",
                    "at": rfc3339(cx.now),
                    "decision": "credentials-rejected",
                    "detail": reason,
                    "genesys": answer.to_json(),
                })));
            }
        }
    }

    /// Pauses every call until the 429's `Retry-After` (or the default).
    fn pause(&mut self, answer: &Answer, cx: &mut Cx<'_>) {
        let limits = &self.cfg.limits;
        let secs = answer
            .retry_after_seconds
            .unwrap_or(limits.retry_after_default_s)
            .min(limits.retry_after_max_s);
        let until = cx.now + Duration::seconds(i64::try_from(secs).unwrap_or(60));
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        cx.metric(Metric::RateLimitPause);
        cx.fx.push(Effect::Audit(json!({
            "kind": "emr.genesys.pause",
            "at": rfc3339(cx.now),
            "decision": "rate-limited",
            "pausedUntil": self.paused_until.map(rfc3339),
            "genesys": answer.to_json(),
        })));
    }

    #[allow(clippy::too_many_arguments)]
    fn group_answered(
        &mut self,
        g: &GroupId,
        mut cycle: Cycle,
        step: Step,
        token_generation: u64,
        answer: &Answer,
        body: &[u8],
        cx: &mut Cx<'_>,
    ) {
        if answer.class != AnswerClass::Success {
            cx.metric(Metric::Failure(FailureKind::of(answer.class)));
            cycle.genesys = Some(answer.genesys_ref());
        }
        match answer.class {
            AnswerClass::Success => match step {
                Step::Read => self.after_read(g, cycle, answer, body, cx),
                Step::Act(act) => self.after_action(g, cycle, *act, answer, body, cx),
            },
            AnswerClass::Unauthorized if !cycle.auth_retried => {
                // One refresh, one more try (from the read).
                cycle.auth_retried = true;
                self.token.invalidate(token_generation);
                self.note(g, "retrying", Some(answer.describe()), Some(answer), cx.now);
                self.audit(g, "token-refresh-and-retry", Some(answer), json!({}), cx);
                self.requeue_front(g, cycle);
            }
            AnswerClass::Unauthorized => {
                let reason = format!("Genesys refused a fresh token too: {}", answer.describe());
                self.fail(g, reason, Some(answer), cx);
            }
            AnswerClass::NotFound if matches!(&step, Step::Act(a) if matches!(a.action, Action::Row { create: false, .. })) =>
            {
                // Genesys wants a missing row created with a POST.
                if let Step::Act(mut act) = step {
                    if let Action::Row { create, .. } = &mut act.action {
                        *create = true;
                    }
                    self.act(g, cycle, *act, cx);
                }
            }
            AnswerClass::Forbidden | AnswerClass::NotFound | AnswerClass::Refused => {
                let what = match &step {
                    Step::Read => "reading",
                    Step::Act(a) => match a.action {
                        Action::Group(_) => "writing",
                        Action::Row { .. } => "writing the data table row of",
                    },
                };
                let reason = format!("{what} group {g}: {}", answer.describe());
                self.fail(g, reason, Some(answer), cx);
            }
            AnswerClass::VersionConflict => {
                cycle.conflicts += 1;
                if cycle.conflicts > self.cfg.limits.max_version_retries {
                    let reason = format!(
                        "version conflict on group {g}: still stale after {} re-reads: {}",
                        self.cfg.limits.max_version_retries,
                        answer.describe()
                    );
                    self.fail(g, reason, Some(answer), cx);
                } else {
                    self.note(g, "retrying", Some(answer.describe()), Some(answer), cx.now);
                    self.audit(g, "conflict-reread", Some(answer), json!({}), cx);
                    self.send_read(g, cycle, cx);
                }
            }
            AnswerClass::RateLimited => {
                self.note(
                    g,
                    "rate-limited",
                    Some(answer.describe()),
                    Some(answer),
                    cx.now,
                );
                self.pause(answer, cx);
                self.requeue_front(g, cycle);
            }
            AnswerClass::ServerError | AnswerClass::Transport => {
                self.retry_later(g, cycle, answer.describe(), Some(answer), cx);
            }
        }
    }

    /// A transient failure: wait (1 s, 2 s, 4 s … capped), then read again.
    fn retry_later(
        &mut self,
        g: &GroupId,
        cycle: Cycle,
        reason: String,
        answer: Option<&Answer>,
        cx: &mut Cx<'_>,
    ) {
        let st = self.groups.entry(g.clone()).or_default();
        st.failures = st.failures.saturating_add(1);
        let until = cx.now + backoff(&self.cfg, st.failures);
        st.phase = Phase::Waiting {
            until,
            cycle,
            why: "backoff",
        };
        st.dirty = false;
        self.note(g, "retrying", Some(reason.clone()), answer, cx.now);
        self.audit(
            g,
            "retry-after-backoff",
            answer,
            json!({"retryAt": rfc3339(until), "detail": reason}),
            cx,
        );
    }

    fn after_read(
        &mut self,
        g: &GroupId,
        mut cycle: Cycle,
        answer: &Answer,
        body: &[u8],
        cx: &mut Cx<'_>,
    ) {
        let observed = match self.driver.observe(body) {
            Ok(o) => o,
            Err(e) => {
                cx.metric(Metric::Failure(FailureKind::Malformed));
                self.retry_later(g, cycle, e, Some(answer), cx);
                return;
            }
        };
        cycle.genesys = Some(genesys_ref(answer, &observed));
        let before = observed_json(&observed);
        let target = self.target(g, cx.ledger);
        let decision = self.driver.decide(g, &observed, &target);
        {
            let st = self.groups.entry(g.clone()).or_default();
            st.observed = Some(observed);
            st.observed_at = Some(cx.now);
        }
        let group_write = match decision {
            Decision::Refuse(reason) => {
                self.fail(g, reason, Some(answer), cx);
                return;
            }
            Decision::Pending => {
                cycle.pending_reads += 1;
                if cycle.pending_reads > self.cfg.guide.max_pending_reads {
                    // After the backoff, as many patient reads again.
                    cycle.pending_reads = 0;
                    let reason = format!(
                        "the routing state stayed PENDING for {} reads",
                        self.cfg.guide.max_pending_reads
                    );
                    self.retry_later(g, cycle, reason, Some(answer), cx);
                } else {
                    self.wait_pending(g, cycle, before, answer, cx);
                }
                return;
            }
            Decision::InSync => None,
            Decision::Write(req) => Some(req),
        };
        let row = self.row_to_write(g, &target, cx.now);
        let mut actions = Vec::new();
        if target.enabled {
            // Queues first, so a flow on the emergency path finds them.
            actions.extend(row.map(|row| Action::Row { row, create: false }));
            actions.extend(group_write.map(Action::Group));
        } else {
            actions.extend(group_write.map(Action::Group));
            actions.extend(row.map(|row| Action::Row { row, create: false }));
        }
        let decision = match (
            actions.len(),
            actions.iter().any(|a| matches!(a, Action::Group(_))),
        ) {
            (0, _) => "in-sync",
            (_, true) => "write",
            (_, false) => "write-row",
        };
        self.audit(
            g,
            decision,
            Some(answer),
            json!({"before": before, "target": target_json(&target)}),
            cx,
        );
        let mut actions = actions.into_iter();
        match actions.next() {
            None => {
                cx.metric(Metric::InSync);
                self.settle_applied(g, cycle, target, "in-sync", cx);
            }
            Some(action) => {
                let act = Act {
                    action,
                    rest: actions.collect(),
                    target,
                    before,
                };
                self.act(g, cycle, act, cx);
            }
        }
    }

    fn wait_pending(
        &mut self,
        g: &GroupId,
        cycle: Cycle,
        before: Value,
        answer: &Answer,
        cx: &mut Cx<'_>,
    ) {
        let wait = i64::try_from(self.cfg.guide.pending_poll_ms).unwrap_or(1_000);
        let until = cx.now + Duration::milliseconds(wait);
        let st = self.groups.entry(g.clone()).or_default();
        st.phase = Phase::Waiting {
            until,
            cycle,
            why: "pending",
        };
        st.dirty = false;
        self.note(g, "pending", None, Some(answer), cx.now);
        self.audit(
            g,
            "pending",
            Some(answer),
            json!({"before": before, "retryAt": rfc3339(until)}),
            cx,
        );
    }

    /// Sends the next write of a cycle.
    fn act(&mut self, g: &GroupId, cycle: Cycle, act: Act, cx: &mut Cx<'_>) {
        let req = match &act.action {
            Action::Group(req) => req.clone(),
            Action::Row { row, create } => match &self.cfg.datatable {
                Some(dt) => row_request(&dt.id, row, *create),
                None => {
                    // Cannot happen: rows are only planned with a table.
                    self.settle_applied(g, cycle, act.target, "applied", cx);
                    return;
                }
            },
        };
        self.send(g, cycle, Step::Act(Box::new(act)), req, cx);
    }

    fn after_action(
        &mut self,
        g: &GroupId,
        mut cycle: Cycle,
        act: Act,
        answer: &Answer,
        body: &[u8],
        cx: &mut Cx<'_>,
    ) {
        let Act {
            action,
            rest,
            target,
            before,
        } = act;
        match action {
            Action::Group(_) => {
                cx.metric(Metric::Transition);
                let written = self.driver.written(body);
                let after = written.as_ref().map(observed_json);
                self.audit(
                    g,
                    "written",
                    Some(answer),
                    json!({"before": before, "after": after, "target": target_json(&target)}),
                    cx,
                );
                let Some(o) = written else {
                    // The answer says too little: read to know.
                    cycle.genesys = Some(answer.genesys_ref());
                    self.send_read(g, cycle, cx);
                    return;
                };
                cycle.genesys = Some(genesys_ref(answer, &o));
                let pending = o.pending;
                if o.modified_by_app.is_some() {
                    self.our_app.clone_from(&o.modified_by_app);
                }
                let st = self.groups.entry(g.clone()).or_default();
                st.last_written = Some(WriteRecord {
                    at: cx.now,
                    enabled: target.enabled,
                    version: o.version,
                    date_modified: o.date_modified.clone(),
                    modified_by_app: o.modified_by_app.clone(),
                });
                st.observed = Some(o);
                st.observed_at = Some(cx.now);
                if pending {
                    // Accepted, propagating: read again after a pause.
                    let before = after.unwrap_or(Value::Null);
                    self.wait_pending(g, cycle, before, answer, cx);
                    return;
                }
            }
            Action::Row { row, .. } => {
                cx.metric(Metric::RowWrite);
                self.audit(
                    g,
                    "row-written",
                    Some(answer),
                    json!({"row": serde_json::to_value(&row).unwrap_or(Value::Null)}),
                    cx,
                );
                self.groups.entry(g.clone()).or_default().row_written = Some(row);
            }
        }
        let mut rest = rest.into_iter();
        match rest.next() {
            Some(action) => {
                let act = Act {
                    action,
                    rest: rest.collect(),
                    target,
                    before,
                };
                self.act(g, cycle, act, cx);
            }
            None => self.settle_applied(g, cycle, target, "applied", cx),
        }
    }

    // ---- ends of a cycle --------------------------------------------------

    /// Genesys now shows `target`. Settles `Applied` if the ledger still
    /// wants that; otherwise reconciles again.
    fn settle_applied(
        &mut self,
        g: &GroupId,
        cycle: Cycle,
        target: Target,
        result: &'static str,
        cx: &mut Cx<'_>,
    ) {
        let current = self.target(g, cx.ledger);
        if !self.same_target(g, &current, &target) {
            self.audit(g, "superseded-reconcile-again", None, json!({}), cx);
            let st = self.groups.entry(g.clone()).or_default();
            st.phase = Phase::Queued(Cycle::default());
            st.dirty = false;
            self.ready.push_back(g.clone());
            return;
        }
        cx.metric(Metric::Applied);
        let genesys = cycle.genesys.clone();
        let st = self.groups.entry(g.clone()).or_default();
        st.synced = Some(target);
        st.failures = 0;
        st.last = Some(LastReconcile {
            at: cx.now,
            result,
            detail: None,
            http_status: genesys.as_ref().and_then(|r| r.http_status),
            correlation_id: genesys.as_ref().and_then(|r| r.correlation_id.clone()),
        });
        cx.fx.push(Effect::Settle {
            group: g.clone(),
            outcome: Settle::Applied,
            genesys,
        });
        self.end_cycle(g);
    }

    /// The cycle failed for good: settle `Failed` with `reason`.
    fn fail(&mut self, g: &GroupId, reason: String, answer: Option<&Answer>, cx: &mut Cx<'_>) {
        cx.metric(Metric::Failed);
        self.audit(g, "failed", answer, json!({"detail": reason}), cx);
        let genesys = answer.map(Answer::genesys_ref);
        let st = self.groups.entry(g.clone()).or_default();
        st.failures = 0;
        st.last = Some(LastReconcile {
            at: cx.now,
            result: "failed",
            detail: Some(reason.clone()),
            http_status: answer.and_then(|a| a.status),
            correlation_id: answer.and_then(|a| a.correlation_id.clone()),
        });
        cx.fx.push(Effect::Settle {
            group: g.clone(),
            outcome: Settle::Failed(reason),
            genesys,
        });
        self.end_cycle(g);
    }

    /// Idle, or — if the ledger changed during the cycle — queued again.
    fn end_cycle(&mut self, g: &GroupId) {
        let st = self.groups.entry(g.clone()).or_default();
        if std::mem::take(&mut st.dirty) {
            st.phase = Phase::Queued(Cycle::default());
            self.ready.push_back(g.clone());
        } else {
            st.phase = Phase::Idle;
        }
    }

    /// Records a step's result for the state view.
    fn note(
        &mut self,
        g: &GroupId,
        result: &'static str,
        detail: Option<String>,
        answer: Option<&Answer>,
        now: DateTime<Utc>,
    ) {
        let st = self.groups.entry(g.clone()).or_default();
        st.last = Some(LastReconcile {
            at: now,
            result,
            detail,
            http_status: answer.and_then(|a| a.status),
            correlation_id: answer.and_then(|a| a.correlation_id.clone()),
        });
    }

    fn audit(
        &self,
        g: &GroupId,
        decision: &str,
        answer: Option<&Answer>,
        extra: Value,
        cx: &mut Cx<'_>,
    ) {
        let incidents: Vec<String> = cx
            .ledger
            .desired_for(g)
            .incidents
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut line = Map::new();
        line.insert("kind".into(), "emr.genesys.reconcile".into());
        line.insert("at".into(), rfc3339(cx.now).into());
        line.insert("group".into(), g.as_str().into());
        line.insert("driver".into(), self.cfg.driver.as_str().into());
        line.insert("decision".into(), decision.into());
        line.insert("incidents".into(), incidents.into());
        if let Some(a) = answer {
            line.insert("genesys".into(), a.to_json());
        }
        if let Value::Object(extra) = extra {
            line.extend(extra);
        }
        cx.fx.push(Effect::Audit(Value::Object(line)));
    }

    // ---- targets ----------------------------------------------------------

    /// What the ledger wants for `g` now.
    fn target(&self, g: &GroupId, ledger: &Ledger) -> Target {
        let d = ledger.desired_for(g);
        let queues: Vec<String> = d.queues.iter().map(|q| q.as_str().to_owned()).collect();
        let incidents: Vec<String> = d
            .incidents
            .iter()
            .map(|k| k.id.as_str().to_owned())
            .collect();
        let reason = if d.enabled {
            let mut types: Vec<&str> = Vec::new();
            for k in &d.incidents {
                if let Some(inc) = ledger.get(k) {
                    if !types.contains(&inc.incident_type.as_str()) {
                        types.push(inc.incident_type.as_str());
                    }
                }
            }
            format!(
                "{}: {} - emergency routing on (emr-edge)",
                incidents.join(", "),
                types.join(", ")
            )
        } else {
            let previous = self
                .groups
                .get(g)
                .and_then(|st| st.synced.as_ref())
                .map(|t| t.incidents.join(", "))
                .filter(|s| !s.is_empty());
            match previous {
                Some(ids) => format!("{ids}: Resolved - emergency routing off (emr-edge)"),
                None => "No open incidents - emergency routing off (emr-edge)".to_owned(),
            }
        };
        Target {
            enabled: d.enabled,
            queues,
            incidents,
            reason: crate::genesys::answer::truncate(&reason, 500),
        }
    }

    /// Whether two targets need the same writes (the reason never does).
    fn same_target(&self, g: &GroupId, a: &Target, b: &Target) -> bool {
        let has_row = self.cfg.row_key_for(g).is_some();
        a.enabled == b.enabled
            && (!(has_row || self.driver.tracks_queues()) || a.queues == b.queues)
            && (!has_row || a.incidents == b.incidents)
    }

    /// The row to write for `target`, unless the last one written matches.
    fn row_to_write(&self, g: &GroupId, target: &Target, now: DateTime<Utc>) -> Option<QueueRow> {
        let key = self.cfg.row_key_for(g)?;
        let row = QueueRow {
            key,
            queue_ids: target.queues.join(","),
            incident_ids: target.incidents.join(","),
            enabled: target.enabled,
            updated_at: rfc3339(now),
        };
        let written = self.groups.get(g).and_then(|st| st.row_written.as_ref());
        match written {
            Some(w) if w.same_content(&row) => None,
            _ => Some(row),
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn genesys_ref(answer: &Answer, o: &Observed) -> GenesysRef {
    GenesysRef {
        correlation_id: answer.correlation_id.clone(),
        version: o.version,
        date_modified: o.date_modified.clone(),
        http_status: answer.status,
    }
}

fn observed_json(o: &Observed) -> Value {
    json!({
        "enabled": o.enabled,
        "pending": o.pending,
        "version": o.version,
        "dateModified": o.date_modified,
        "modifiedByApp": o.modified_by_app,
        "queues": o.queues,
    })
}

fn target_json(t: &Target) -> Value {
    json!({"enabled": t.enabled, "queues": t.queues, "incidents": t.incidents})
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props;
