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
//! **The watchdog** (rules in [`crate::watchdog`]): every group that ended a
//! cycle is read again after `watchdog.period` (`watchdog.converging` after
//! a write of ours). A read that differs from the target is judged: an
//! incident event or a resume writes at once; a change by someone else marks
//! the group *overridden* and it is not written until the next incident event
//! ([`Reconciler::mark_event`]) or [`Reconciler::resume`]; drift by our own
//! client is timed and corrected once it outlasted `watchdog.grace`. A read
//! that finds Genesys as wanted ends drift and any override.
//!
//! **Contention** (two writers with our credentials): the third drift by our
//! own client within the contention window is not corrected. The group is
//! flagged *contended* on the state view, with an error line
//! ([`Effect::Alarm`]), an audit line and [`Metric::Contended`], and its
//! drift is not corrected until an incident event of the group, a resume,
//! or a whole window with Genesys as wanted and no change by our client
//! that we did not make. Transitions (events, our own ledger's changes)
//! still write.
//!
//! **The request budget** ([`crate::genesys::budget`]): every call spends
//! from one token bucket; routine checks only start while a reserve is left.
//!
//! **Recovery** ([`crate::recovery`]): after [`Reconciler::start_recovery`]
//! nothing is written until the data table's rows have been read and their
//! open incidents handed to the glue ([`Effect::Restore`]); the first read of
//! every configured group may adopt a group our client left enabled
//! ([`Effect::Adopt`]) rather than switch it off.
//!
//! How the glue drives it:
//! 1. `on_configure`: `Reconciler::new(Arc::new(settings))`, optionally
//!    `import_token` from shared data, `start_recovery(..)`, `mark_all(&ledger)`,
//!    `poll`.
//! 2. For each dequeued event: `ledger.apply(..)`, then `mark_event(group)`
//!    when the desired state may have changed (`mark_dirty` for changes that
//!    are no incident event, like an expiry); one `poll` per batch. A resume
//!    request: `resume(group)`.
//! 3. Each `Effect::Call`: `dispatch_http_call` with `:method`, `:path`,
//!    `:authority` from the call, its headers, body and `timeout_ms`; keep
//!    host token → `op`. If dispatching fails, hand `CallResult::Failed` to
//!    `on_result` at once.
//! 4. `on_http_call_response`: read `:status` (absent → `Failed`), headers
//!    and body; `on_result(op, …)`.
//! 5. Each `Effect::Settle`: `ledger.settle_group(..)` and refresh the
//!    published status of the incidents it returns. `Restore`/`Adopt`: put
//!    the incidents into the ledger (the reconciler has queued their groups
//!    already; their reads are answered only after the effect is applied).
//!    `Audit`: log one line. `Alarm`: log it at error level.
//!    `Metric`: bump the counter / record the histogram / set the gauge
//!    named by `name()`.
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

use crate::event::{GroupId, IncidentKey};
use crate::genesys::answer::{Answer, AnswerClass, RateLimit};
use crate::genesys::budget::Budget;
use crate::genesys::config::GenesysSettings;
use crate::genesys::driver::{driver_for, row_request, Decision, Driver, Observed, Target};
use crate::genesys::models::{join_ids, summarise_ids, QueueRow, TokenInfo};
use crate::genesys::token::{backoff, StoredToken, TokenManager, TokenOutcome};
use crate::genesys::{Request, USER_AGENT};
use crate::ledger::{GenesysRef, Ledger, Settle, VIEW_LIST_MAX};
use crate::recovery::{self, PersistedIncident};
use crate::watchdog::{self, Corrections, Facts, Verdict};
use health::{Check, Health};

pub use crate::genesys::{CallResult, HttpCall, OpId};

/// Extra time past a call's timeout before the reconciler gives up on it by
/// itself (the host should have reported a failure by then).
const OP_GRACE_MS: i64 = 2_000;
/// Rows pages tried this many times (5xx, timeouts) before recovery goes on
/// without them (adopting what our client left enabled).
const MAX_ROWS_ATTEMPTS: u32 = 5;
/// After a failed `tokens/me`, ask again no sooner.
const IDENTITY_RETRY_S: i64 = 30;
/// A change by someone else stamped (Genesys's `dateModified`) this long
/// after an incident event was made after it: the person wins. The margin
/// absorbs clock differences between Envoy's host and Genesys.
const AFTER_EVENT_MARGIN: Duration = Duration::seconds(1);
/// A group already switched as its incidents want gets its data-table row
/// rewritten (a longer queue list, more incident ids) at most this often.
/// One sender's thousand incidents for one group otherwise kept that group
/// in back-to-back read-and-row-write cycles, and the request budget they
/// spent made another group's switch wait seconds for its calls (issue 12,
/// finding 1). A switch — the group's `enabled` changing — is never paced.
const ROW_REFRESH_PACE: Duration = Duration::seconds(2);

/// Whether `date_modified` (RFC 3339) is after `t`; unreadable means no.
fn modified_after(date_modified: Option<&str>, t: DateTime<Utc>) -> bool {
    date_modified
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .is_some_and(|d| d.with_timezone(&Utc) > t)
}

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
    /// Recovery at start: `ledger.restore(p, group, now)` for each incident
    /// (the ledger skips those it knows already), and refresh their status.
    Restore {
        group: GroupId,
        incidents: Vec<PersistedIncident>,
    },
    /// Recovery at start: the group was found enabled by our own client with
    /// nothing persisted to explain it. `ledger.adopt(key, group, detail,
    /// expires_at, now)`.
    Adopt {
        group: GroupId,
        key: IncidentKey,
        expires_at: DateTime<Utc>,
        detail: String,
    },
    /// One JSON audit line (a decision: incident ids, before, after, what
    /// Genesys answered).
    Audit(Value),
    /// A line for Envoy's log at error level: something an operator must
    /// act on (beside its audit line, which is logged at info): a group
    /// another instance keeps writing, or something that stops switching
    /// (refused credentials, a missing group or permission, an unreadable
    /// data table; the list is on [`Reconciler::health`]).
    Alarm(String),
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
/// histogram value and `ContendedGroups` a gauge's. [`Metric::name`] is the
/// stat name.
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
    /// A watchdog read.
    Checked,
    /// A watchdog read found Genesys as wanted.
    CheckInSync,
    /// Drift by our own client seen (timed against the grace).
    DriftSeen,
    /// Drift corrected after the grace period.
    Corrected,
    /// A change by someone else: the group is held (overridden).
    Overridden,
    /// A held group was not written.
    SkippedOverridden,
    /// A held group given back by an incident event or a resume.
    Resumed,
    /// A group flagged contended: our own client keeps changing it with
    /// versions we did not write (another instance, a script).
    Contended,
    /// Gauge: the groups flagged contended now.
    ContendedGroups(u64),
    /// An incident persisted in a row, handed back at start.
    Restored,
    /// A group adopted at start.
    Adopted,
    /// A call waited for the request budget.
    BudgetWait,
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
            Metric::Checked => "watchdog_checked",
            Metric::CheckInSync => "watchdog_in_sync",
            Metric::DriftSeen => "watchdog_drift",
            Metric::Corrected => "watchdog_corrected",
            Metric::Overridden => "watchdog_overridden",
            Metric::SkippedOverridden => "watchdog_skipped_overridden",
            Metric::Resumed => "watchdog_resumed",
            Metric::Contended => "watchdog_contended",
            Metric::ContendedGroups(_) => "watchdog_contended_groups",
            Metric::Restored => "recovery_restored",
            Metric::Adopted => "recovery_adopted",
            Metric::BudgetWait => "genesys_budget_waits",
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
    /// Started by the watchdog (for the metrics).
    check: bool,
    /// An incident event or a resume started it: it may write over a change
    /// that was not ours.
    authorized: bool,
    /// It wrote the group's switch (the next check comes sooner).
    wrote_group: bool,
    /// Reads so far, and the version the first one saw.
    reads: u32,
    first_version: Option<u64>,
    /// When the incident event (or resume) behind `authorized` came.
    authorized_at: Option<DateTime<Utc>>,
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
    /// A write that followed a read waits for the request budget (a moment):
    /// it goes out as soon as there is a call to spend, before any new read,
    /// so a read is never wasted on a write that cannot follow.
    Deferred {
        cycle: Cycle,
        step: Step,
        req: Request,
    },
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
    /// How the cycle ends once the writes are done.
    then: Then,
}

/// How a cycle ends after its writes.
#[derive(Debug, Clone, PartialEq)]
enum Then {
    /// Genesys now shows the target.
    Settle,
    /// The group is held for a person: only the row was written.
    Hold(String),
    /// The group is contended: only the row was written.
    Contended(String),
    /// Drift by our client is being timed: read again then.
    Grace(DateTime<Utc>),
}

#[derive(Debug, Clone, PartialEq)]
enum OpKind {
    Token,
    /// `GET /api/v2/tokens/me`: our client's name.
    Identity {
        token_generation: u64,
    },
    /// A page of the data table's rows, at start.
    Rows {
        page: u32,
        attempts: u32,
        token_generation: u64,
    },
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

/// A change to a group that was not ours, which we do not write over.
#[derive(Debug, Clone, PartialEq)]
struct OverrideInfo {
    since: DateTime<Utc>,
    enabled: bool,
    version: Option<u64>,
    date_modified: Option<String>,
    modified_by: Option<String>,
    modified_by_app: Option<String>,
}

/// A group our own client keeps changing behind our back, whose drift we no
/// longer correct.
#[derive(Debug, Clone, PartialEq)]
struct ContendedInfo {
    since: DateTime<Utc>,
    /// When a read last showed a change by our own client we did not make.
    last_seen: DateTime<Utc>,
    /// The latest version read, and who wrote it.
    version: Option<u64>,
    modified_by_app: Option<String>,
    detail: String,
}

/// Where recovery at start stands.
#[derive(Debug, Clone, PartialEq)]
enum Recovery {
    /// Next: read page `page` of the rows (not before `not_before`).
    Rows {
        page: u32,
        attempts: u32,
        not_before: Option<DateTime<Utc>>,
    },
    /// A page read is out.
    Reading,
    /// Finished (or never asked for): reconciles may write.
    Done,
}

/// What recovery found, for the state view.
#[derive(Debug, Clone, PartialEq, Default)]
struct RecoveryReport {
    started: bool,
    persisted_incidents: usize,
    groups: usize,
    adopted: usize,
    detail: Option<String>,
}

/// Our OAuth client's name, when it must be learned from `tokens/me`.
#[derive(Debug, Clone, PartialEq, Default)]
struct Identity {
    wanted: bool,
    fetching: bool,
    retry_at: Option<DateTime<Utc>>,
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
    /// The watchdog reads it again at this time (when idle).
    next_check: Option<DateTime<Utc>>,
    /// Drift by our own client first seen at this time.
    drift_since: Option<DateTime<Utc>>,
    /// Held for a person until an incident event or a resume.
    overridden: Option<OverrideInfo>,
    /// Its latest drift corrections, counted toward contention.
    corrections: Corrections,
    /// Flagged contended: its drift is not corrected.
    contended: Option<ContendedInfo>,
    /// An incident event or resume came (at this time): the next read may
    /// write over a change that was not ours, made before it.
    authorized: Option<DateTime<Utc>>,
    /// The newest version we wrote or read and accepted.
    known_version: Option<u64>,
    /// Its first read since start may adopt it (recovery).
    adopt_check: bool,
    /// A row-only refresh waits until then ([`ROW_REFRESH_PACE`]).
    row_paced_until: Option<DateTime<Utc>>,
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
            next_check: None,
            drift_since: None,
            overridden: None,
            corrections: Corrections::default(),
            contended: None,
            authorized: None,
            known_version: None,
            adopt_check: false,
            row_paced_until: None,
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
    budget: Budget,
    /// A call waits for the budget until then.
    budget_wait: Option<DateTime<Utc>>,
    /// Groups in `Phase::Deferred`, oldest first.
    deferred: VecDeque<GroupId>,
    recovery: Recovery,
    report: RecoveryReport,
    /// The configured groups, checked for adoption if the rows cannot be read.
    fallback_groups: Vec<GroupId>,
    identity: Identity,
    health: Health,
}

impl Reconciler {
    pub fn new(cfg: Arc<GenesysSettings>) -> Self {
        let driver = driver_for(cfg.driver, &cfg.guide);
        let budget = Budget::new(cfg.limits.requests_per_minute, cfg.limits.burst);
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
            budget,
            budget_wait: None,
            deferred: VecDeque::new(),
            recovery: Recovery::Done,
            report: RecoveryReport::default(),
            fallback_groups: Vec::new(),
            identity: Identity::default(),
            health: Health::default(),
        }
    }

    /// What stops switching now, as Genesys has told us.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The health's reasons when they changed since the last call (to
    /// publish for `/emr/health`).
    pub fn take_health_change(&mut self) -> Option<Vec<String>> {
        self.health.take_changed().then(|| self.health.reasons())
    }

    /// `check` failed for good with `detail`: news is logged at error.
    fn check_failed(&mut self, check: Check, detail: String, cx: &mut Cx<'_>) {
        let text = format!(
            "emr-edge cannot switch: {}: {detail}",
            match &check {
                Check::Credentials => "Genesys refused the OAuth client credentials".to_owned(),
                Check::DataTable => "the data table cannot be read".to_owned(),
                Check::Group(g) => format!("emergency group {g}"),
            }
        );
        if self.health.fail(check, detail, cx.now) {
            cx.fx.push(Effect::Alarm(text));
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
            // Paced: looked at again, in case the change is a switch.
            Phase::Waiting { why: "pacing", .. } => {
                if let Phase::Waiting { cycle, .. } = std::mem::replace(&mut st.phase, Phase::Idle)
                {
                    st.phase = Phase::Queued(cycle);
                    self.ready.push_back(group.clone());
                }
                Marked::Coalesced
            }
            // Its next read sees the change.
            Phase::Queued(_) | Phase::Waiting { .. } => Marked::Coalesced,
            Phase::InFlight(_) | Phase::Deferred { .. } => {
                st.dirty = true;
                Marked::Coalesced
            }
        }
    }

    /// An incident event changed the ledger for `group`: like
    /// [`Reconciler::mark_dirty`], and its next read may write over a change
    /// that was not ours (correction resumes at the next incident event).
    pub fn mark_event(&mut self, group: &GroupId, now: DateTime<Utc>) -> Marked {
        let st = self.groups.entry(group.clone()).or_default();
        st.authorized = Some(st.authorized.map_or(now, |a| a.max(now)));
        // Waiting out a grace or for our identity: the event decides now.
        if let Phase::Waiting {
            why: "grace" | "identity",
            cycle,
            ..
        } = &st.phase
        {
            st.phase = Phase::Queued(cycle.clone());
            self.ready.push_back(group.clone());
            return Marked::Queued;
        }
        self.mark_dirty(group)
    }

    /// An explicit, authenticated `POST /emr/groups/{id}/resume`: the group
    /// is no longer held and its next read writes what the incidents want.
    /// Returns `false` for a group the reconciler has never driven (nothing
    /// is kept for it, so requests cannot grow memory).
    pub fn resume(&mut self, group: &GroupId, ledger: &Ledger, now: DateTime<Utc>) -> Vec<Effect> {
        let mut cx = Cx {
            ledger,
            now,
            fx: Vec::new(),
        };
        if !self.groups.contains_key(group) {
            self.audit(
                group,
                "resume-unknown-group",
                None,
                json!({"detail": "no such group is driven; nothing to resume"}),
                &mut cx,
            );
            return cx.fx;
        }
        let (was, was_contended) = self
            .groups
            .get_mut(group)
            .map(|st| (st.overridden.take(), st.contended.take()))
            .unwrap_or_default();
        cx.metric(Metric::Resumed);
        self.audit(
            group,
            "resumed",
            None,
            json!({
                "by": "POST /emr/groups/{id}/resume",
                "wasOverridden": was.is_some(),
                "wasContended": was_contended.is_some(),
            }),
            &mut cx,
        );
        if was_contended.is_some() {
            self.contended_gauge(&mut cx);
        }
        self.mark_event(group, now);
        self.pump(&mut cx);
        cx.fx
    }

    /// Recovery at start (restart safety): nothing is written until the data
    /// table's rows have been read (with `datatable.persist_incidents`); the
    /// first read of every group a row names may adopt a group our client
    /// left enabled. Without rows to read — no table, or the rows could not
    /// be read — each of `groups` (the configured ones) is checked that way
    /// instead. Call before the first `poll`.
    pub fn start_recovery(&mut self, groups: &[GroupId]) {
        self.report = RecoveryReport {
            started: true,
            ..RecoveryReport::default()
        };
        if self.cfg.persists_incidents() {
            self.recovery = Recovery::Rows {
                page: 1,
                attempts: 0,
                not_before: None,
            };
            self.fallback_groups = groups.to_vec();
            // Every configured group is read once the rows are (issue 13:
            // a group given by name, or missing, shows at start, not at the
            // incident), and is on `/emr/state` from the start.
            for g in groups {
                self.mark_dirty(g);
            }
        } else {
            self.recovery = Recovery::Done;
            self.adopt_checks(groups);
        }
    }

    /// The first read of each of `groups` may adopt it.
    fn adopt_checks(&mut self, groups: &[GroupId]) {
        for g in groups {
            self.groups.entry(g.clone()).or_default().adopt_check = true;
            self.mark_dirty(g);
        }
    }

    /// Whether recovery still holds every write back.
    pub fn is_recovering(&self) -> bool {
        self.recovery != Recovery::Done
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
        let has_work = !self.ready.is_empty() || self.is_recovering() || self.identity.wanted;
        let waits = self.groups.values().filter_map(|st| match st.phase {
            Phase::Waiting { until, .. } => Some(until),
            _ => None,
        });
        let deadlines = self.ops.values().map(|op| op.deadline);
        // With every slot taken the token waits for an answer (which pumps);
        // during a pause, for the pause's end.
        let free = self.ops.len() < self.cfg.limits.max_in_flight && self.paused_until.is_none();
        let token = if free {
            self.token.wakeup(has_work)
        } else {
            None
        };
        // Checks wait for the recovery and the pause (which wake us anyway).
        let checks = self
            .groups
            .values()
            .filter(|st| st.phase == Phase::Idle)
            .filter_map(|st| st.next_check)
            .filter(|_| !self.is_recovering() && self.paused_until.is_none())
            .min();
        let rows = match self.recovery {
            Recovery::Rows {
                not_before: Some(t),
                ..
            } => Some(t),
            _ => None,
        };
        let identity = self
            .identity
            .retry_at
            .filter(|_| self.identity.wanted && !self.identity.fetching);
        let budget = self.budget_wait.filter(|_| free);
        waits
            .chain(deadlines)
            .chain(self.paused_until)
            .chain(token)
            .chain(checks)
            .chain(rows)
            .chain(identity)
            .chain(budget)
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
        let mut ids: Vec<&GroupId> = ledger.groups().collect();
        ids.extend(self.groups.keys().filter(|g| !ledger.knows_group(g)));
        ids.sort();
        ids.dedup();
        let groups: Vec<Value> = ids
            .into_iter()
            .map(|g| self.group_view(g, ledger, self.groups.get(g)))
            .collect();
        json!({
            "summary": self.summary(ledger),
            "driver": self.cfg.driver.as_str(),
            "token": self.token.view(now),
            "pausedUntil": self.paused_until.filter(|p| *p > now).map(rfc3339),
            "inFlight": self.ops.len(),
            "maxInFlight": self.cfg.limits.max_in_flight,
            "backlog": self.ready.len(),
            "rateLimit": self.rate_limit,
            "ourApp": self.our_app,
            "budget": {
                "perMinute": self.cfg.limits.requests_per_minute,
                "burst": self.cfg.limits.burst,
                "windowMax": self.budget.window_max(),
                "available": self.budget.available(now),
                "waitUntil": self.budget_wait.filter(|w| *w > now).map(rfc3339),
            },
            "watchdog": self.cfg.watchdog.view(),
            "recovery": self.recovery_view(),
            "health": self.health.view(),
            "groups": groups,
        })
    }

    fn recovery_view(&self) -> Value {
        let phase = match (&self.recovery, self.report.started) {
            (Recovery::Done, false) => "not-needed",
            (Recovery::Done, true) => "done",
            (Recovery::Rows { .. } | Recovery::Reading, _) => "reading-rows",
        };
        json!({
            "phase": phase,
            "rowGroups": self.report.groups,
            "persistedIncidents": self.report.persisted_incidents,
            "adoptedGroups": self.report.adopted,
            "detail": self.report.detail,
        })
    }

    /// One group of `GET /emr/state`. Every list in it is cut at
    /// [`VIEW_LIST_MAX`] with its total beside it, and the row's columns are
    /// bounded: a group of a thousand incidents with long queue lists once
    /// made this 1.4 MB (issue 12, finding 14).
    /// One line for a person at 3 a.m.: which groups are in emergency,
    /// since when, held by which incident; or that none is, and what stops
    /// switching if anything does.
    fn summary(&self, ledger: &Ledger) -> String {
        let line = self.summary_of_groups(ledger);
        let contended: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, st)| st.contended.is_some())
            .map(|(g, _)| {
                self.group_name(g)
                    .map_or_else(|| g.to_string(), str::to_owned)
            })
            .take(3)
            .collect();
        if contended.is_empty() {
            return line;
        }
        format!(
            "{line}; another emr-edge instance (or a script with this OAuth client) keeps writing {}: \
             exactly one instance may run",
            contended.join(", ")
        )
    }

    fn summary_of_groups(&self, ledger: &Ledger) -> String {
        let on: Vec<(&GroupId, &crate::ledger::Desired)> =
            ledger.desired().filter(|(_, d)| d.enabled).collect();
        let problem = self.health.reasons().into_iter().next();
        if on.is_empty() {
            let watched = self.groups.len().max(ledger.groups().count());
            let mut line = format!(
                "No group in emergency ({watched} group{} watched)",
                if watched == 1 { "" } else { "s" }
            );
            if let Some(p) = problem {
                line.push_str(&format!("; emr-edge cannot switch: {p}"));
            }
            return line;
        }
        let shown: Vec<String> = on
            .iter()
            .take(3)
            .map(|(g, d)| {
                let name = self
                    .group_name(g)
                    .map_or_else(|| g.to_string(), str::to_owned);
                let since = d
                    .incidents
                    .iter()
                    .filter_map(|k| ledger.get(k))
                    .filter_map(|i| {
                        i.events
                            .iter()
                            .map(|e| e.timestamp.min(e.received_at))
                            .min()
                    })
                    .min()
                    .map(|t| format!(" since {} UTC", t.format("%H:%M")))
                    .unwrap_or_default();
                let held = d.incidents.first().map_or_else(String::new, |k| {
                    let more = d.incidents.len() - 1;
                    format!(
                        ", held by {} {}{}",
                        k.source.label(),
                        k.id,
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        }
                    )
                });
                let lagging = self
                    .groups
                    .get(*g)
                    .and_then(|st| st.observed.as_ref())
                    .is_some_and(|o| !o.enabled);
                format!(
                    "{name}{since}{held}{}",
                    if lagging {
                        " (not switched on in Genesys yet)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let n = on.len();
        let more = if n > shown.len() {
            format!("; and {} more", n - shown.len())
        } else {
            String::new()
        };
        format!(
            "{n} group{} in emergency: {}{more}",
            if n == 1 { "" } else { "s" },
            shown.join("; ")
        )
    }

    /// A group's name, as Genesys last showed it.
    fn group_name(&self, g: &GroupId) -> Option<&str> {
        self.groups.get(g)?.observed.as_ref()?.name()
    }

    fn group_view(&self, g: &GroupId, ledger: &Ledger, st: Option<&GroupState>) -> Value {
        let d = ledger.desired_for(g);
        let desired = d.view();
        let incidents: Vec<Value> = d
            .incidents
            .iter()
            .take(VIEW_LIST_MAX)
            .map(|k| ledger.brief(k))
            .collect();
        let mut v = json!({
            "id": g,
            "name": self.group_name(g),
            "openIncidents": incidents,
            "openIncidentsTotal": d.incidents.len(),
            "queues": desired.get("queues"),
            "queuesTotal": d.queues_total,
            "desired": desired,
            "phase": "idle",
            "overridden": false,
            "contended": null,
        });
        if let (Some(obj), Some(problem)) = (v.as_object_mut(), self.health.of_group(g)) {
            obj.insert("problem".into(), problem);
        }
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
            Phase::Deferred { .. } => "deferred",
        };
        obj.insert("phase".into(), phase.into());
        obj.insert("dirty".into(), st.dirty.into());
        obj.insert("overridden".into(), st.overridden.is_some().into());
        if let Some(o) = &st.overridden {
            obj.insert(
                "override".into(),
                json!({
                    "since": rfc3339(o.since),
                    "enabled": o.enabled,
                    "version": o.version,
                    "dateModified": o.date_modified,
                    "modifiedBy": o.modified_by,
                    "modifiedByApp": o.modified_by_app,
                    "resume": format!("POST /emr/groups/{g}/resume, or the next incident event for this group"),
                }),
            );
        }
        obj.insert(
            "contended".into(),
            st.contended.as_ref().map_or(Value::Null, |c| {
                json!({
                    "since": rfc3339(c.since),
                    "lastSeen": rfc3339(c.last_seen),
                    "version": c.version,
                    "modifiedByApp": c.modified_by_app,
                    "detail": c.detail,
                    "resume": format!(
                        "once one emr-edge instance is left: POST /emr/groups/{g}/resume, or the next \
                         incident event for this group; by itself after {} s with the group as wanted \
                         and no change by our client that this instance did not make",
                        self.cfg.watchdog.contention_window().num_seconds()
                    ),
                })
            }),
        );
        if let Some(since) = st.drift_since {
            let correct_at = since + self.cfg.watchdog.grace;
            obj.insert(
                "drift".into(),
                json!({"since": rfc3339(since), "correctAt": rfc3339(correct_at)}),
            );
        }
        if let Some(next) = st.next_check {
            obj.insert("nextCheck".into(), rfc3339(next).into());
        }
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
                    "queues": o.queues.as_ref().map(|q| q.iter().take(VIEW_LIST_MAX).collect::<Vec<_>>()),
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
            obj.insert("row".into(), row_view(r));
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
        self.overflowed = false;
        for (g, d) in ledger.desired() {
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
                self.ready.push_back(g.clone());
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
        if self.budget_wait.is_some_and(|w| w <= now) {
            self.budget_wait = None;
        }
        let max = self.cfg.limits.max_in_flight;
        let has_work = !self.ready.is_empty() || self.is_recovering() || self.identity.wanted;
        if self.ops.len() < max && self.token.needs_fetch(now, has_work) && self.take_budget(cx) {
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
        if self.token.bearer(now).is_none() {
            return;
        }
        if let Recovery::Rows {
            page,
            attempts,
            not_before,
        } = self.recovery
        {
            if not_before.is_none_or(|t| t <= now) && self.ops.len() < max {
                self.send_rows(page, attempts, cx);
            }
        }
        let identity_due = self.identity.wanted
            && !self.identity.fetching
            && self.identity.retry_at.is_none_or(|t| t <= now);
        if identity_due && self.ops.len() < max {
            self.send_identity(cx);
        }
        if self.is_recovering() {
            // Nothing is written (or read for a decision) before the rows.
            return;
        }
        // Writes that wait for the budget go before any new read.
        while self.ops.len() < max && self.budget_wait.is_none() {
            let Some(g) = self.deferred.pop_front() else {
                break;
            };
            let Some(st) = self.groups.get_mut(&g) else {
                continue;
            };
            let (cycle, step, req) = match std::mem::replace(&mut st.phase, Phase::Idle) {
                Phase::Deferred { cycle, step, req } => (cycle, step, req),
                other => {
                    st.phase = other;
                    continue;
                }
            };
            self.send(&g, cycle, step, req, cx);
            if matches!(self.phase(&g), Some(Phase::Deferred { .. })) {
                // Still no budget: keep its place.
                if let Some(back) = self.deferred.pop_back() {
                    self.deferred.push_front(back);
                }
                break;
            }
        }
        self.schedule_checks(now);
        while self.ops.len() < max && self.budget_wait.is_none() && self.deferred.is_empty() {
            let Some(g) = self.ready.pop_front() else {
                break;
            };
            let Some(st) = self.groups.get_mut(&g) else {
                continue;
            };
            let mut cycle = match std::mem::replace(&mut st.phase, Phase::Idle) {
                Phase::Queued(c) => c,
                other => {
                    // A stale entry: the group moved on already.
                    st.phase = other;
                    continue;
                }
            };
            // Nothing to switch, only the row to refresh, and it was
            // refreshed a moment ago: wait, and leave the budget to switches.
            let paced = st.row_paced_until.filter(|until| *until > now);
            if let (Some(until), false) = (paced, cycle.check) {
                // Genesys as we last saw it — a read, or the answer to our
                // own write — whatever became of the cycle that saw it.
                let wanted = cx.ledger.desired_for(&g).enabled;
                let switch = st.observed.as_ref().is_none_or(|o| o.enabled != wanted);
                if !switch && st.overridden.is_none() {
                    st.phase = Phase::Waiting {
                        until,
                        cycle,
                        why: "pacing",
                    };
                    continue;
                }
            }
            // An incident event or resume since the last read: this cycle
            // may write over a change that was not ours. Later ones are for
            // the next cycle.
            if let Some(at) = st.authorized.take() {
                cycle.authorized = true;
                cycle.authorized_at = Some(cycle.authorized_at.map_or(at, |a| a.max(at)));
            }
            self.send_read(&g, cycle, cx);
            if matches!(self.phase(&g), Some(Phase::Queued(_))) {
                // It could not go out after all; try again on the next pump.
                break;
            }
        }
    }

    /// Queues the watchdog's due checks, while the budget keeps its reserve
    /// for transitions and the backlog has room; a check that cannot start
    /// now is pushed back rather than left due.
    fn schedule_checks(&mut self, now: DateTime<Utc>) {
        let reserve = self.check_reserve();
        let mut queued_checks = self
            .ready
            .iter()
            .filter(|g| matches!(self.phase(g), Some(Phase::Queued(c)) if c.check))
            .count();
        let due: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, st)| st.phase == Phase::Idle && st.next_check.is_some_and(|t| t <= now))
            .map(|(g, _)| g.clone())
            .collect();
        for g in due {
            let available = usize::try_from(self.budget.available(now)).unwrap_or(0);
            let later = if self.ready.len() >= self.cfg.limits.max_backlog {
                Some(now + self.cfg.watchdog.converging)
            } else if available < reserve + queued_checks {
                let need = u32::try_from(reserve + queued_checks).unwrap_or(u32::MAX);
                Some(
                    self.budget
                        .ready_at(now, need)
                        .unwrap_or(now + self.cfg.watchdog.period),
                )
            } else {
                None
            };
            let Some(st) = self.groups.get_mut(&g) else {
                continue;
            };
            match later {
                Some(t) => st.next_check = Some(t.max(now + Duration::milliseconds(1))),
                None => {
                    st.next_check = None;
                    st.phase = Phase::Queued(Cycle {
                        check: true,
                        ..Cycle::default()
                    });
                    self.ready.push_back(g);
                    queued_checks += 1;
                }
            }
        }
    }

    /// Calls a routine check leaves in the bucket for transitions: half the
    /// burst (at least one).
    fn check_reserve(&self) -> usize {
        usize::try_from(self.cfg.limits.burst / 2)
            .unwrap_or(1)
            .max(1)
    }

    /// Spends one call from the budget, or notes when the next one comes.
    fn take_budget(&mut self, cx: &mut Cx<'_>) -> bool {
        if self.budget.try_take(cx.now) {
            return true;
        }
        if self.budget_wait.is_none() {
            cx.metric(Metric::BudgetWait);
        }
        self.budget_wait = Some(
            self.budget
                .ready_at(cx.now, 1)
                .unwrap_or(cx.now + Duration::seconds(1)),
        );
        false
    }

    /// The headers of every API call.
    fn api_call(&self, op: OpId, req: Request, authorization: String) -> HttpCall {
        HttpCall {
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
        }
    }

    /// Reads a page of the data table's rows (recovery).
    fn send_rows(&mut self, page: u32, attempts: u32, cx: &mut Cx<'_>) {
        let Some(dt) = &self.cfg.datatable else {
            self.recovery = Recovery::Done;
            return;
        };
        let path = recovery::rows_path(&dt.id, page);
        let kind = |token_generation| OpKind::Rows {
            page,
            attempts,
            token_generation,
        };
        if self.send_get(path, kind, cx) {
            self.recovery = Recovery::Reading;
        }
    }

    /// Asks Genesys for our OAuth client's name (`GET /api/v2/tokens/me`).
    fn send_identity(&mut self, cx: &mut Cx<'_>) {
        let kind = |token_generation| OpKind::Identity { token_generation };
        if self.send_get("/api/v2/tokens/me".to_owned(), kind, cx) {
            self.identity.fetching = true;
        }
    }

    /// Sends a `GET` that belongs to no group's cycle (recovery, identity)
    /// when a token and the budget allow; returns whether it went. One that
    /// did not is tried again by the next pump.
    fn send_get(
        &mut self,
        path: String,
        kind: impl FnOnce(u64) -> OpKind,
        cx: &mut Cx<'_>,
    ) -> bool {
        let Some((authorization, generation)) = self
            .token
            .bearer(cx.now)
            .map(|b| (b.header_value(), b.generation))
        else {
            return false;
        };
        if !self.take_budget(cx) {
            return false;
        }
        let op = self.alloc_op();
        let call = self.api_call(
            op,
            Request {
                method: "GET",
                path,
                body: None,
            },
            authorization,
        );
        self.insert_op(op, kind(generation), cx.now);
        cx.fx.push(Effect::Call(call));
        true
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
        if !self.take_budget(cx) {
            match step {
                Step::Read => self.requeue_front(g, cycle),
                Step::Act(_) => {
                    self.groups.entry(g.clone()).or_default().phase =
                        Phase::Deferred { cycle, step, req };
                    self.deferred.push_back(g.clone());
                }
            }
            return;
        }
        let op = self.alloc_op();
        let call = self.api_call(op, req, authorization);
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
        // The token manager names its own failures (bad credentials are not
        // a 401 on a call); every other call's failure is its class.
        if answer.class != AnswerClass::Success && !matches!(op.kind, OpKind::Token) {
            cx.metric(Metric::Failure(FailureKind::of(answer.class)));
        }
        match op.kind {
            OpKind::Token => self.token_answered(&answer, body, op.sent_at, cx),
            OpKind::Identity { token_generation } => {
                self.identity_answered(token_generation, &answer, body, cx);
            }
            OpKind::Rows {
                page,
                attempts,
                token_generation,
            } => self.rows_answered(page, attempts, token_generation, &answer, body, cx),
            OpKind::Group {
                group,
                cycle,
                step,
                token_generation,
            } => {
                self.judge_group_answer(&group, &answer, cx);
                self.group_answered(&group, cycle, step, token_generation, &answer, body, cx);
            }
        }
    }

    /// A group's read or write answered: a refusal no retry mends (no such
    /// group, a missing permission, an id Genesys cannot read) fails its
    /// check; a success passes it.
    fn judge_group_answer(&mut self, g: &GroupId, answer: &Answer, cx: &mut Cx<'_>) {
        let hint = match answer.class {
            AnswerClass::Success => {
                self.health.pass(&Check::Group(g.clone()));
                return;
            }
            AnswerClass::NotFound => {
                "no such emergency group: give its id (Admin > Routing > Emergency Groups), not its name"
            }
            AnswerClass::Forbidden => "the OAuth client's role lacks a permission this needs",
            AnswerClass::Refused => "Genesys refused the request",
            _ => return,
        };
        let detail = format!("{hint}; Genesys answered {}", answer.describe());
        self.check_failed(Check::Group(g.clone()), detail, cx);
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
                self.health.pass(&Check::Credentials);
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
                self.check_failed(
                    Check::Credentials,
                    format!(
                        "{reason} (check the client id and secret, and the region's login host)"
                    ),
                    cx,
                );
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

    fn identity_answered(
        &mut self,
        token_generation: u64,
        answer: &Answer,
        body: &[u8],
        cx: &mut Cx<'_>,
    ) {
        self.identity.fetching = false;
        let name = match answer.class {
            AnswerClass::Success => serde_json::from_slice::<TokenInfo>(body)
                .ok()
                .and_then(|i| i.oauth_client)
                .and_then(|c| c.name)
                .filter(|n| !n.trim().is_empty()),
            AnswerClass::Unauthorized => {
                self.token.invalidate(token_generation);
                return;
            }
            AnswerClass::RateLimited => {
                self.pause(answer, cx);
                return;
            }
            _ => None,
        };
        match name {
            Some(name) => {
                self.identity = Identity::default();
                self.our_app = Some(name.clone());
                cx.fx.push(Effect::Audit(json!({
                    "kind": "emr.genesys.identity",
                    "at": rfc3339(cx.now),
                    "decision": "identity",
                    "ourApp": name,
                    "genesys": answer.to_json(),
                })));
            }
            None => {
                // Groups that need it wait until the next try; without it a
                // change by an unknown app is never written over.
                self.identity.retry_at = Some(cx.now + Duration::seconds(IDENTITY_RETRY_S));
                cx.fx.push(Effect::Audit(json!({
                    "kind": "emr.genesys.identity",
                    "at": rfc3339(cx.now),
                    "decision": "identity-unknown",
                    "detail": "GET /api/v2/tokens/me did not name our OAuth client",
                    "genesys": answer.to_json(),
                })));
            }
        }
    }

    fn rows_answered(
        &mut self,
        page: u32,
        attempts: u32,
        token_generation: u64,
        answer: &Answer,
        body: &[u8],
        cx: &mut Cx<'_>,
    ) {
        let retry = |attempts: u32, not_before: Option<DateTime<Utc>>| Recovery::Rows {
            page,
            attempts,
            not_before,
        };
        match answer.class {
            AnswerClass::Success => match recovery::parse_rows_page(body) {
                Ok(rows) => {
                    self.health.pass(&Check::DataTable);
                    for bad in &rows.unreadable {
                        cx.fx.push(Effect::Audit(json!({
                            "kind": "emr.recovery",
                            "at": rfc3339(cx.now),
                            "decision": "row-unreadable",
                            "detail": bad,
                        })));
                    }
                    let more = rows.has_more();
                    for doc in rows.groups {
                        self.report.groups += 1;
                        self.report.persisted_incidents += doc.o.len();
                        for _ in &doc.o {
                            cx.metric(Metric::Restored);
                        }
                        cx.fx.push(Effect::Audit(json!({
                            "kind": "emr.recovery",
                            "at": rfc3339(cx.now),
                            "decision": "restore",
                            "group": doc.g,
                            "incidents": doc.o.iter().map(|p| p.key().to_string()).collect::<Vec<_>>(),
                            "omitted": doc.m,
                        })));
                        self.groups.entry(doc.g.clone()).or_default().adopt_check = true;
                        self.mark_dirty(&doc.g);
                        cx.fx.push(Effect::Restore {
                            group: doc.g,
                            incidents: doc.o,
                        });
                    }
                    if more {
                        self.recovery = Recovery::Rows {
                            page: page + 1,
                            attempts: 0,
                            not_before: None,
                        };
                    } else {
                        self.finish_recovery(None, cx);
                    }
                }
                Err(e) => self.finish_recovery(Some(e), cx),
            },
            AnswerClass::Unauthorized if attempts + 1 < MAX_ROWS_ATTEMPTS => {
                self.token.invalidate(token_generation);
                self.recovery = retry(attempts + 1, None);
            }
            AnswerClass::RateLimited => {
                self.pause(answer, cx);
                self.recovery = retry(attempts, None);
            }
            AnswerClass::ServerError | AnswerClass::Transport | AnswerClass::VersionConflict
                if attempts + 1 < MAX_ROWS_ATTEMPTS =>
            {
                let until = cx.now + backoff(&self.cfg, attempts + 1);
                self.recovery = retry(attempts + 1, Some(until));
            }
            _ => {
                let detail = format!(
                    "could not read the data table's rows: {}",
                    answer.describe()
                );
                // A table that is not there or not ours to read will not
                // come back by itself; a 5xx streak might, at the next start.
                if matches!(
                    answer.class,
                    AnswerClass::NotFound | AnswerClass::Forbidden | AnswerClass::Refused
                ) {
                    let hint = match answer.class {
                        AnswerClass::NotFound => "no such data table: check genesys.datatable.id",
                        AnswerClass::Forbidden => {
                            "the OAuth client's role cannot read the data table"
                        }
                        _ => "Genesys refused to list the data table's rows",
                    };
                    self.check_failed(
                        Check::DataTable,
                        format!("{hint}; Genesys answered {}", answer.describe()),
                        cx,
                    );
                }
                self.finish_recovery(Some(detail), cx);
            }
        }
    }

    /// Recovery is over: reconciles may write from now on. Without the rows,
    /// the configured groups are checked for adoption instead.
    fn finish_recovery(&mut self, problem: Option<String>, cx: &mut Cx<'_>) {
        self.recovery = Recovery::Done;
        let fallback = std::mem::take(&mut self.fallback_groups);
        if problem.is_some() {
            self.adopt_checks(&fallback);
        }
        let detail = problem.map(|p| {
            format!("{p}; going on without them (groups our client left enabled are adopted)")
        });
        self.report.detail.clone_from(&detail);
        cx.fx.push(Effect::Audit(json!({
            "kind": "emr.recovery",
            "at": rfc3339(cx.now),
            "decision": "recovered",
            "groups": self.report.groups,
            "persistedIncidents": self.report.persisted_incidents,
            "detail": detail,
        })));
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
        if cycle.check && cycle.reads == 0 {
            cx.metric(Metric::Checked);
        }
        let changed_in_cycle = cycle.reads > 0 && observed.version != cycle.first_version;
        if cycle.reads == 0 {
            cycle.first_version = observed.version;
        }
        cycle.reads = cycle.reads.saturating_add(1);
        let before = observed_json(&observed);
        let target = self.target(g, cx.ledger);
        let decision = self.driver.decide(g, &observed, &target);
        {
            let st = self.groups.entry(g.clone()).or_default();
            st.observed = Some(observed.clone());
            st.observed_at = Some(cx.now);
        }
        if cycle.authorized {
            self.lift_contention(g, answer, cx);
        }
        if let Decision::InSync | Decision::Write(_) = &decision {
            let in_sync = matches!(decision, Decision::InSync);
            self.contention_read(g, &observed, in_sync, answer, cx);
        }
        let (group_write, then) = match decision {
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
            Decision::InSync => {
                self.accept_in_sync(g, &observed, cx);
                (None, Then::Settle)
            }
            Decision::Write(req) => {
                match self.judge_read(
                    g,
                    cycle.clone(),
                    changed_in_cycle,
                    &observed,
                    &target,
                    answer,
                    cx,
                ) {
                    Some(Then::Settle) => (Some(req), Then::Settle),
                    Some(then) => (None, then),
                    // Adopted, or waiting to learn whose change it is.
                    None => return,
                }
            }
        };
        let row = self.row_to_write(g, &target, cx.ledger, cx.now);
        let mut actions = Vec::new();
        if target.enabled {
            // Queues first, so a flow on the emergency path finds them.
            actions.extend(row.map(|row| Action::Row { row, create: false }));
            actions.extend(group_write.map(Action::Group));
        } else {
            actions.extend(group_write.map(Action::Group));
            actions.extend(row.map(|row| Action::Row { row, create: false }));
        }
        let writes_group = actions.iter().any(|a| matches!(a, Action::Group(_)));
        let decision = match (&then, actions.len(), writes_group) {
            (Then::Settle, 0, _) => Some("in-sync"),
            (_, 0, _) => None,
            (_, _, true) => Some("write"),
            (_, _, false) => Some("write-row"),
        };
        if let Some(decision) = decision {
            self.audit(
                g,
                decision,
                Some(answer),
                json!({"before": before, "target": target_json(&target)}),
                cx,
            );
        }
        let mut actions = actions.into_iter();
        match actions.next() {
            None => self.finish(g, cycle, target, then, "in-sync", cx),
            Some(action) => {
                let act = Act {
                    action,
                    rest: actions.collect(),
                    target,
                    before,
                    then,
                };
                self.act(g, cycle, act, cx);
            }
        }
    }

    /// A read found Genesys as the incidents want it: any drift is over, any
    /// override has nothing left to protect, and the version is accepted.
    fn accept_in_sync(&mut self, g: &GroupId, observed: &Observed, cx: &mut Cx<'_>) {
        let (drift, held) = {
            let st = self.groups.entry(g.clone()).or_default();
            st.known_version = observed.version;
            st.adopt_check = false;
            (st.drift_since.take(), st.overridden.take())
        };
        if let Some(since) = drift {
            self.audit(
                g,
                "drift-ended",
                None,
                json!({"driftSince": rfc3339(since), "detail": "Genesys is back as wanted without a write"}),
                cx,
            );
        }
        if held.is_some() {
            self.audit(
                g,
                "override-ended",
                None,
                json!({"detail": "Genesys matches what the incidents want again"}),
                cx,
            );
        }
    }

    /// An incident event (or resume) started this cycle: it decides, so a
    /// contended group is no longer held. Its corrections stay counted: if
    /// the fight starts again, its first drift flags the group again.
    fn lift_contention(&mut self, g: &GroupId, answer: &Answer, cx: &mut Cx<'_>) {
        let lifted = self.groups.get_mut(g).and_then(|st| st.contended.take());
        if let Some(c) = lifted {
            self.audit(
                g,
                "contention-lifted",
                Some(answer),
                json!({"by": "incident event", "contendedSince": rfc3339(c.since)}),
                cx,
            );
            self.contended_gauge(cx);
        }
    }

    /// A read of a contended group: a change by our own client that we did
    /// not make keeps it contended for another window; a whole window
    /// without one, with Genesys as wanted, gives it back
    /// ([`watchdog::contention_over`]).
    fn contention_read(
        &mut self,
        g: &GroupId,
        observed: &Observed,
        in_sync: bool,
        answer: &Answer,
        cx: &mut Cx<'_>,
    ) {
        let writer = watchdog::writer(
            observed.modified_by_app.as_deref(),
            &self.cfg.client_id,
            self.our_app.as_deref(),
        );
        let window = self.cfg.watchdog.contention_window();
        let Some(st) = self.groups.get_mut(g) else {
            return;
        };
        let ours = st.known_version;
        let Some(c) = st.contended.as_mut() else {
            return;
        };
        // Whose it is may not be known yet: only a person's is surely not ours.
        let changed_by_our_client = observed.version.is_some()
            && observed.version != c.version
            && observed.version != ours
            && writer != watchdog::Writer::Foreign;
        if changed_by_our_client {
            c.last_seen = cx.now;
        }
        c.version = observed.version;
        c.modified_by_app.clone_from(&observed.modified_by_app);
        if !watchdog::contention_over(in_sync, c.last_seen, cx.now, window) {
            return;
        }
        let quiet_since = c.last_seen;
        st.contended = None;
        self.audit(
            g,
            "contention-ended",
            Some(answer),
            json!({
                "quietSince": rfc3339(quiet_since),
                "detail": "Genesys is as wanted and our own client has made no change we did not make for a whole window",
            }),
            cx,
        );
        self.contended_gauge(cx);
    }

    /// Sets the gauge of contended groups.
    fn contended_gauge(&self, cx: &mut Cx<'_>) {
        let n = self
            .groups
            .values()
            .filter(|st| st.contended.is_some())
            .count();
        cx.metric(Metric::ContendedGroups(
            u64::try_from(n).unwrap_or(u64::MAX),
        ));
    }

    /// A read differs from the target: [`watchdog::judge`] decides. `Some`
    /// says how the cycle ends (with the group write only for
    /// `Then::Settle`); `None` means it was handled here (adopted, or
    /// waiting to learn our client's name).
    #[allow(clippy::too_many_arguments)]
    fn judge_read(
        &mut self,
        g: &GroupId,
        cycle: Cycle,
        changed_in_cycle: bool,
        observed: &Observed,
        target: &Target,
        answer: &Answer,
        cx: &mut Cx<'_>,
    ) -> Option<Then> {
        let writer = watchdog::writer(
            observed.modified_by_app.as_deref(),
            &self.cfg.client_id,
            self.our_app.as_deref(),
        );
        let tracks_queues = self.driver.tracks_queues();
        let grace = self.cfg.watchdog.grace;
        let window = self.cfg.watchdog.contention_window();
        let mut authorized = cycle.authorized;
        if authorized {
            // The event (or resume) decides only over changes made before it.
            // A change by someone else after it — seen as a version that
            // moved during this cycle (a 409), or stamped later than the
            // event — is that person's last word.
            let known = self.groups.get(g).and_then(|st| st.known_version);
            let stamped_after = cycle.authorized_at.is_some_and(|at| {
                observed.version != known
                    && modified_after(observed.date_modified.as_deref(), at + AFTER_EVENT_MARGIN)
            });
            if changed_in_cycle || stamped_after {
                match writer {
                    watchdog::Writer::Ours => {}
                    watchdog::Writer::Foreign => {
                        authorized = false;
                        self.audit(
                            g,
                            "authority-void",
                            Some(answer),
                            json!({"detail": "changed by someone else after the incident event; that change is not written over"}),
                            cx,
                        );
                    }
                    watchdog::Writer::Unknown => {
                        return self.wait_for_identity(g, cycle, answer, cx);
                    }
                }
            }
        }
        let (verdict, was_held) = {
            let st = self.groups.entry(g.clone()).or_default();
            let transition = st.synced.as_ref().is_none_or(|s| {
                s.enabled != target.enabled || (tracks_queues && s.queues != target.queues)
            });
            let facts = Facts {
                authorized,
                adopt_check: st.adopt_check,
                overridden: st.overridden.is_some(),
                transition,
                observed_enabled: observed.enabled,
                target_enabled: target.enabled,
                new_version: observed.version.is_some() && observed.version != st.known_version,
                writer,
                drift_since: st.drift_since,
                contended: st.contended.is_some(),
                recent_corrections: st.corrections.recent(cx.now, window),
                now: cx.now,
                grace,
            };
            let verdict = watchdog::judge(&facts);
            if verdict != Verdict::NeedIdentity {
                st.adopt_check = false;
            }
            (verdict, st.overridden.is_some())
        };
        let who = observed
            .modified_by_app
            .clone()
            .unwrap_or_else(|| "a person (no modifiedByApp)".to_owned());
        let held_reason = format!(
            "held: emergency group {g} was changed in Genesys by {who}; emr-edge does not \
             write over it until the next incident event or POST /emr/groups/{g}/resume"
        );
        match verdict {
            Verdict::Write { corrects_drift } => {
                let drift = {
                    let st = self.groups.entry(g.clone()).or_default();
                    st.overridden = None;
                    if corrects_drift {
                        st.corrections.record(cx.now);
                    }
                    st.drift_since.take()
                };
                if was_held {
                    cx.metric(Metric::Resumed);
                    self.audit(
                        g,
                        "override-lifted",
                        Some(answer),
                        json!({"by": "incident event"}),
                        cx,
                    );
                }
                if corrects_drift {
                    cx.metric(Metric::Corrected);
                    self.audit(
                        g,
                        "correct-drift",
                        Some(answer),
                        json!({
                            "driftSince": drift.map(rfc3339),
                            "graceSeconds": grace.num_seconds(),
                            "observed": observed_json(observed),
                            "target": target_json(target),
                        }),
                        cx,
                    );
                }
                Some(Then::Settle)
            }
            Verdict::Override => {
                {
                    let st = self.groups.entry(g.clone()).or_default();
                    st.drift_since = None;
                    st.overridden = Some(OverrideInfo {
                        since: cx.now,
                        enabled: observed.enabled,
                        version: observed.version,
                        date_modified: observed.date_modified.clone(),
                        modified_by: observed.modified_by.clone(),
                        modified_by_app: observed.modified_by_app.clone(),
                    });
                }
                cx.metric(Metric::Overridden);
                self.audit(
                    g,
                    "overridden",
                    Some(answer),
                    json!({
                        "observed": observed_json(observed),
                        "modifiedBy": observed.modified_by,
                        "target": target_json(target),
                        "detail": held_reason,
                    }),
                    cx,
                );
                Some(Then::Hold(held_reason))
            }
            Verdict::Hold => {
                cx.metric(Metric::SkippedOverridden);
                self.audit(
                    g,
                    "skipped-overridden",
                    Some(answer),
                    json!({"observed": observed_json(observed), "target": target_json(target)}),
                    cx,
                );
                Some(Then::Hold(held_reason))
            }
            Verdict::Contended => {
                let detail = format!(
                    "another emr-edge instance (or a script with this OAuth client) keeps writing \
                     emergency group {g}: our own OAuth client ({who}) changed it in a version \
                     this instance did not write for the {} time within {w} s; exactly one \
                     emr-edge instance may run until cluster mode exists; emr-edge stops \
                     correcting {g} until the next incident event for it, \
                     POST /emr/groups/{g}/resume, or {w} s with it as wanted and untouched",
                    ordinal(watchdog::CONTENDED_AT_DRIFT),
                    w = window.num_seconds()
                );
                let drift = {
                    let st = self.groups.entry(g.clone()).or_default();
                    st.contended = Some(ContendedInfo {
                        since: cx.now,
                        last_seen: cx.now,
                        version: observed.version,
                        modified_by_app: observed.modified_by_app.clone(),
                        detail: detail.clone(),
                    });
                    st.drift_since.take()
                };
                cx.metric(Metric::Contended);
                self.contended_gauge(cx);
                cx.fx
                    .push(Effect::Alarm(format!("emr-edge: contended: {detail}")));
                self.audit(
                    g,
                    "contended",
                    Some(answer),
                    json!({
                        "driftSince": drift.map(rfc3339),
                        "windowSeconds": window.num_seconds(),
                        "observed": observed_json(observed),
                        "target": target_json(target),
                        "detail": detail,
                    }),
                    cx,
                );
                Some(Then::Contended(format!("contended: {detail}")))
            }
            Verdict::HoldContended => {
                self.audit(
                    g,
                    "skipped-contended",
                    Some(answer),
                    json!({"observed": observed_json(observed), "target": target_json(target)}),
                    cx,
                );
                let detail = self
                    .groups
                    .get(g)
                    .and_then(|st| st.contended.as_ref())
                    .map(|c| c.detail.clone())
                    .unwrap_or_default();
                Some(Then::Contended(format!("contended: {detail}")))
            }
            Verdict::Drift { since, correct_at } => {
                let first = {
                    let st = self.groups.entry(g.clone()).or_default();
                    let first = st.drift_since.is_none();
                    st.drift_since = Some(since);
                    first
                };
                if first {
                    cx.metric(Metric::DriftSeen);
                    self.audit(
                        g,
                        "drift-seen",
                        Some(answer),
                        json!({
                            "observed": observed_json(observed),
                            "target": target_json(target),
                            "correctAt": rfc3339(correct_at),
                        }),
                        cx,
                    );
                }
                Some(Then::Grace(correct_at))
            }
            Verdict::Adopt => {
                let Some(key) = recovery::adopted_key(g) else {
                    return Some(Then::Hold(held_reason));
                };
                let expires_at =
                    recovery::adopted_expiry(observed.date_modified.as_deref(), cx.now);
                let detail = format!(
                    "found enabled by {who} at start with no open incident persisted for it; \
                     kept on until {}",
                    rfc3339(expires_at)
                );
                self.report.adopted += 1;
                cx.metric(Metric::Adopted);
                self.audit(
                    g,
                    "adopted",
                    Some(answer),
                    json!({"incident": key.to_string(), "expiresAt": rfc3339(expires_at), "observed": observed_json(observed)}),
                    cx,
                );
                cx.fx.push(Effect::Adopt {
                    group: g.clone(),
                    key,
                    expires_at,
                    detail,
                });
                // Read again once the glue has put the incident in the ledger.
                let st = self.groups.entry(g.clone()).or_default();
                st.phase = Phase::Queued(Cycle::default());
                st.dirty = false;
                self.ready.push_back(g.clone());
                None
            }
            Verdict::NeedIdentity => self.wait_for_identity(g, cycle, answer, cx),
        }
    }

    /// Whose change a read shows depends on our client's name: learn it
    /// (`tokens/me`), then read again.
    fn wait_for_identity(
        &mut self,
        g: &GroupId,
        cycle: Cycle,
        answer: &Answer,
        cx: &mut Cx<'_>,
    ) -> Option<Then> {
        self.identity.wanted = true;
        let until = self
            .identity
            .retry_at
            .filter(|t| *t > cx.now)
            .unwrap_or(cx.now + Duration::seconds(1));
        let st = self.groups.entry(g.clone()).or_default();
        st.phase = Phase::Waiting {
            until,
            cycle,
            why: "identity",
        };
        st.dirty = false;
        self.note(
            g,
            "identity",
            Some("learning our OAuth client's name to tell whose change this is".into()),
            Some(answer),
            cx.now,
        );
        None
    }

    /// Ends a cycle once its writes (if any) are done.
    fn finish(
        &mut self,
        g: &GroupId,
        cycle: Cycle,
        target: Target,
        then: Then,
        result: &'static str,
        cx: &mut Cx<'_>,
    ) {
        match then {
            Then::Settle => {
                if result == "in-sync" {
                    cx.metric(Metric::InSync);
                    if cycle.check {
                        cx.metric(Metric::CheckInSync);
                    }
                }
                self.settle_applied(g, cycle, target, result, cx);
            }
            Then::Hold(reason) => self.hold(g, cycle, "overridden", reason, cx),
            Then::Contended(reason) => self.hold(g, cycle, "contended", reason, cx),
            Then::Grace(at) => {
                let st = self.groups.entry(g.clone()).or_default();
                if std::mem::take(&mut st.dirty) {
                    // The ledger changed meanwhile: reconcile again now.
                    st.phase = Phase::Queued(Cycle::default());
                    self.ready.push_back(g.clone());
                } else {
                    st.phase = Phase::Waiting {
                        until: at,
                        cycle: Cycle {
                            check: true,
                            ..Cycle::default()
                        },
                        why: "grace",
                    };
                }
                self.note(
                    g,
                    "drift",
                    Some(format!("corrected at {} unless it ends first", rfc3339(at))),
                    None,
                    cx.now,
                );
            }
        }
    }

    /// Ends a cycle that does not write the group (held for a person, or
    /// contended): its incidents' pending events fail with `reason`.
    fn hold(
        &mut self,
        g: &GroupId,
        cycle: Cycle,
        result: &'static str,
        reason: String,
        cx: &mut Cx<'_>,
    ) {
        self.note(g, result, Some(reason.clone()), None, cx.now);
        cx.fx.push(Effect::Settle {
            group: g.clone(),
            outcome: Settle::Failed(reason),
            genesys: cycle.genesys.clone(),
        });
        self.end_cycle(g, cx.now, cycle.wrote_group);
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
                    self.finish(g, cycle, act.target, act.then, "applied", cx);
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
            then,
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
                cycle.wrote_group = true;
                let st = self.groups.entry(g.clone()).or_default();
                // Ours: the watchdog must not take it for someone else's.
                st.known_version = o.version;
                st.drift_since = None;
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
                    json!({"row": row_view(&row)}),
                    cx,
                );
                let st = self.groups.entry(g.clone()).or_default();
                st.row_written = Some(row);
                st.row_paced_until = Some(cx.now + ROW_REFRESH_PACE);
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
                    then,
                };
                self.act(g, cycle, act, cx);
            }
            None => self.finish(g, cycle, target, then, "applied", cx),
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
        self.end_cycle(g, cx.now, cycle.wrote_group);
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
        self.end_cycle(g, cx.now, false);
    }

    /// Idle until the watchdog's next check, or — if the ledger changed
    /// during the cycle — queued again.
    fn end_cycle(&mut self, g: &GroupId, now: DateTime<Utc>, wrote_group: bool) {
        let next = self.cfg.watchdog.next_check(now, wrote_group);
        let st = self.groups.entry(g.clone()).or_default();
        st.next_check = Some(next);
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
        let wanted = &cx.ledger.desired_for(g).incidents;
        let incidents: Vec<String> = wanted
            .iter()
            .take(VIEW_LIST_MAX)
            .map(ToString::to_string)
            .collect();
        let mut line = Map::new();
        line.insert("kind".into(), "emr.genesys.reconcile".into());
        line.insert("at".into(), rfc3339(cx.now).into());
        line.insert("group".into(), g.as_str().into());
        line.insert("driver".into(), self.cfg.driver.as_str().into());
        line.insert("decision".into(), decision.into());
        line.insert("incidents".into(), incidents.into());
        if wanted.len() > VIEW_LIST_MAX {
            line.insert("incidentsTotal".into(), wanted.len().into());
        }
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
    fn row_to_write(
        &self,
        g: &GroupId,
        target: &Target,
        ledger: &Ledger,
        now: DateTime<Utc>,
    ) -> Option<QueueRow> {
        let key = self.cfg.row_key_for(g)?;
        let (queue_ids, _) = join_ids(&target.queues);
        let row = QueueRow {
            key,
            queue_ids,
            incident_ids: summarise_ids(&target.incidents),
            enabled: target.enabled,
            updated_at: rfc3339(now),
            open_incidents: self
                .cfg
                .persists_incidents()
                .then(|| recovery::encode(g, &ledger.open_incidents_of(g))),
        };
        let written = self.groups.get(g).and_then(|st| st.row_written.as_ref());
        match written {
            Some(w) if w.same_content(&row) => None,
            _ => Some(row),
        }
    }
}

/// "3rd", for a count in a sentence.
fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
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
    json!({
        "enabled": t.enabled,
        "queues": t.queues.iter().take(VIEW_LIST_MAX).collect::<Vec<_>>(),
        "queuesTotal": t.queues.len(),
        "incidents": t.incidents.iter().take(VIEW_LIST_MAX).collect::<Vec<_>>(),
        "incidentsTotal": t.incidents.len(),
    })
}

/// A written row as `/emr/state` and the audit lines show it: its columns
/// (each within `MAX_COLUMN_CHARS`), the queues its list holds, and the
/// persisted incidents' document by its size only (it is for restarts).
fn row_view(r: &QueueRow) -> Value {
    let queues = if r.queue_ids.is_empty() {
        0
    } else {
        r.queue_ids.split(',').count()
    };
    json!({
        "key": r.key,
        "enabled": r.enabled,
        "updatedAt": r.updated_at,
        "queueIds": r.queue_ids,
        "queueCount": queues,
        "incidentIds": r.incident_ids,
        "openIncidentsChars": r.open_incidents.as_ref().map(String::len),
    })
}

#[cfg(test)]
mod fake;
pub mod health;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props;
