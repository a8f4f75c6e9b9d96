//! The reconciler: drives each emergency group in Genesys to the state the
//! ledger wants, as a by-value state machine the singleton service ([`crate::service`]) runs.
//!
//! The service feeds it three things — "the ledger changed for this group"
//! ([`Reconciler::mark_dirty`]), "time passed" ([`Reconciler::poll`]) and "a
//! call answered" ([`Reconciler::on_result`]) — and carries out the
//! [`Effect`]s that come back: HTTP calls, changes to the ledger, audit lines,
//! metrics. It never reads a clock.
//!
//! One reconcile of a group (a *cycle*) is: a pre-flight read, a decision,
//! and only if Genesys differs from the target, the writes — then a settle.
//! The rules (docs/genesys.md and docs/convergence.md):
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
//! **The request budget** ([`crate::callout::budget`]): every call spends
//! from one token bucket; routine checks only start while a reserve is left.
//!
//! **Recovery** ([`crate::recovery`]): after [`Reconciler::start_recovery`]
//! nothing is written until the data table's rows have been read and their
//! open incidents handed to the ledger (a [`Change`]); the first read of
//! every configured group may adopt a group our client left enabled
//! (another [`Change`]) rather than switch it off.
//!
//! How the service drives it (the filter's glue only dispatches the calls
//! and hands back their answers):
//! 1. At start, `Reconciler::new(Arc::new(settings))` and, optionally,
//!    `import_token` from shared data; at the service's first tick,
//!    `start_recovery(..)` with every group the config names, then
//!    `mark_all(&ledger)` and `poll`.
//! 2. For each dequeued event: `ledger.apply(..)`, then `mark_event(group)`
//!    when the desired state may have changed (`mark_dirty` for changes that
//!    are no incident event, like an expiry); one `poll` per batch. A resume
//!    request: `resume(group)`.
//! 3. Each `Effect::Call` goes out through the glue (`dispatch_http_call`
//!    with `:method`, `:path`, `:authority` from the call, its headers, body
//!    and `timeout_ms`). If dispatching fails, `CallResult::Failed` goes to
//!    `on_result` at once.
//! 4. An answer (`:status` absent → `Failed`, headers, body):
//!    `on_result(op, …)`.
//! 5. Each `Effect::Ledger`: [`Change::apply`] it to the ledger and refresh
//!    the published status of the incidents it returns (a settled reconcile,
//!    incidents rebuilt or adopted at start; the reconciler has queued the
//!    rebuilt groups already, and their reads are answered only after the
//!    change is applied). `Audit`: log one line. `Alarm`: log it at error level.
//!    `Metric`: bump the counter / record the histogram / set the gauge
//!    named by `name()` (the glue records the samples).
//! 6. Tick: a fixed 100 ms tick, and after each queue batch, calls `poll`
//!    (polling when nothing is due is harmless: the reconciler keeps its own
//!    deadlines). After a token was obtained, `take_new_token()` gives it
//!    once, to mirror into shared data.
//!
//! Layout: this file holds the [`Reconciler`] and the calls the service makes
//! on it; its child modules add `impl Reconciler` blocks along the steps:
//! `effect` (what the service must do, metrics), `group` (per-group state,
//! phases, cycles), `schedule` (calls out, pump, budget, checks), `startup`
//! (recovery, identity, token answers), `cycle` (answered, act, finish,
//! fail), `judge` (a read that differs from the target), `target` (what the
//! ledger wants, the row to write) and `view` (the state view).
//!
//! Memory is bounded by the number of groups (config and mapping rules
//! name them), `max_in_flight` calls and `max_backlog` queued groups.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use crate::callout::Budget;
use crate::event::GroupId;
use crate::genesys::answer::{Answer, RateLimit};
use crate::genesys::config::GenesysSettings;
use crate::genesys::driver::{driver_for, Driver, Observed, Target};
use crate::genesys::models::QueueRow;
use crate::genesys::token::{StoredToken, TokenManager};
use crate::ledger::{GenesysRef, Ledger, VIEW_LIST_MAX};

use crate::rfc3339::text as rfc3339;
use group::{
    Act, Action, ContendedInfo, Cycle, GroupState, LastReconcile, OverrideInfo, Phase, Step, Then,
    Wait, WriteRecord,
};
use health::{Check, Health};
use schedule::{GroupOp, Op, OpKind};
use startup::{Identity, Recovery, RecoveryReport};

pub use crate::callout::{CallResult, HttpCall, OpId};
use effect::LedgerOp;
pub use effect::{Change, Changed, Effect, FailureKind, Metric};

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
/// spent made another group's switch wait seconds for its calls
/// (RELIABILITY.md, hostile senders, #1). A switch — the group's `enabled`
/// changing — is never paced.
const ROW_REFRESH_PACE: Duration = Duration::seconds(2);

/// Whether `date_modified` (RFC 3339) is after `t`; unreadable means no.
fn modified_after(date_modified: Option<&str>, t: DateTime<Utc>) -> bool {
    date_modified
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .is_some_and(|d| d.with_timezone(&Utc) > t)
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

    /// Asks the ledger's owner to make a change.
    fn change(&mut self, op: LedgerOp) {
        self.fx.push(Effect::Ledger(Change(op)));
    }
}

/// The per-group reconciler, token manager and call scheduler.
#[derive(Debug)]
pub struct Reconciler {
    cfg: Arc<GenesysSettings>,
    driver: Box<dyn Driver>,
    token: TokenManager,
    /// A token obtained that the service has not mirrored yet.
    token_unmirrored: bool,
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
            token_unmirrored: false,
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
            Phase::Waiting {
                why: Wait::Pacing, ..
            } => {
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
            why: Wait::Grace | Wait::Identity,
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
            // Every configured group is read once the rows are (
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

    /// Cluster mode's start, in place of [`Reconciler::start_recovery`]:
    /// the ledger, rebuilt from etcd's log and snapshot, is the truth. Rows
    /// are written (a mirror for flows) but not read, and no group is
    /// adopted: one found enabled that no incident wants was left so by a
    /// leader that died before it switched it off. Each of `groups` is read
    /// at once.
    pub fn start_from_ledger(&mut self, groups: &[GroupId]) {
        self.report = RecoveryReport {
            started: true,
            detail: Some("cluster mode: the ledger is rebuilt from etcd".into()),
            ..RecoveryReport::default()
        };
        self.recovery = Recovery::Done;
        for g in groups {
            self.mark_dirty(g);
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

    #[cfg(test)]
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

    /// The current token, for the service to mirror into shared data.
    pub fn export_token(&self) -> Option<StoredToken> {
        self.token.export()
    }

    /// A token obtained since the last call, once: the service mirrors it
    /// into shared data, so a reloaded VM need not log in again.
    pub fn take_new_token(&mut self) -> Option<StoredToken> {
        std::mem::take(&mut self.token_unmirrored)
            .then(|| self.token.export())
            .flatten()
    }

    /// Takes back a token mirrored in shared data (at start, after a VM
    /// reload). Returns whether it was usable.
    pub fn import_token(&mut self, token: StoredToken, now: DateTime<Utc>) -> bool {
        self.token.import(token, now)
    }

    #[cfg(test)]
    /// Calls out now.
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    #[cfg(test)]
    /// What was last read from Genesys for `group`.
    pub fn observed(&self, group: &GroupId) -> Option<&Observed> {
        self.groups.get(group).and_then(|st| st.observed.as_ref())
    }

    #[cfg(test)]
    /// The `modifiedByApp` Genesys stamped on our own latest write.
    pub fn our_app(&self) -> Option<&str> {
        self.our_app.as_deref()
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

mod cycle;
mod effect;
mod group;
mod judge;
mod schedule;
mod startup;
mod target;
mod view;

#[cfg(test)]
mod fake;
pub mod health;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props;
