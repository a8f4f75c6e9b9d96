//! Scheduling: the calls out ([`Op`]), which group goes next (`pump`),
//! the request budget and pause, the watchdog's routine checks, and
//! building and sending each call.

use chrono::{DateTime, Duration, Utc};

use crate::callout::USER_AGENT;
use crate::event::GroupId;
use crate::genesys::rows;
use crate::genesys::Request;
use crate::genesys::{HttpCall, OpId};
use crate::ledger::Ledger;

use super::group::Wait;
use super::{Cx, Cycle, Effect, Metric, Phase, Reconciler, Recovery, Step, OP_GRACE_MS};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum OpKind {
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
    Group(GroupOp),
}

/// A call of one group's cycle: the cycle travels with it, and comes back
/// with the answer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct GroupOp {
    pub(super) group: GroupId,
    pub(super) cycle: Cycle,
    pub(super) step: Step,
    /// The token it was sent with (a 401 invalidates that one only).
    pub(super) token_generation: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Op {
    pub(super) kind: OpKind,
    pub(super) sent_at: DateTime<Utc>,
    pub(super) deadline: DateTime<Utc>,
}

impl Reconciler {
    /// After `mark_dirty` refused groups: queue every ledger group that is
    /// idle and not known to match the ledger, while there is room.
    pub(super) fn rescan(&mut self, ledger: &Ledger) {
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
    pub(super) fn pump(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        self.rescan(cx.ledger);
        self.wake_waiting(now);
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
        if !self.token_ready(max, cx) {
            return;
        }
        self.send_startup_calls(max, cx);
        if self.is_recovering() {
            // Nothing is written (or read for a decision) before the rows.
            return;
        }
        self.send_deferred(max, cx);
        self.schedule_checks(now);
        self.start_reads(max, cx);
    }

    /// Groups whose wait is over are queued.
    fn wake_waiting(&mut self, now: DateTime<Utc>) {
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
    }

    /// Asks for a token when one is needed. If the login host refused our
    /// credentials, every queued cycle fails. Whether calls can go out.
    fn token_ready(&mut self, max: usize, cx: &mut Cx<'_>) -> bool {
        let now = cx.now;
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
            return false;
        }
        self.token.bearer(now).is_some()
    }

    /// The start-up calls that are due: a page of the rows (recovery) and
    /// our client's name.
    fn send_startup_calls(&mut self, max: usize, cx: &mut Cx<'_>) {
        let now = cx.now;
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
    }

    /// Writes that wait for the budget go before any new read.
    fn send_deferred(&mut self, max: usize, cx: &mut Cx<'_>) {
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
    }

    /// Starts queued cycles with their read while there are slots and
    /// budget; a row-only refresh paced a moment ago waits instead.
    fn start_reads(&mut self, max: usize, cx: &mut Cx<'_>) {
        let now = cx.now;
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
                        why: Wait::Pacing,
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
    pub(super) fn schedule_checks(&mut self, now: DateTime<Utc>) {
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
    pub(super) fn check_reserve(&self) -> usize {
        usize::try_from(self.cfg.limits.burst / 2)
            .unwrap_or(1)
            .max(1)
    }

    /// Spends one call from the budget, or notes when the next one comes.
    pub(super) fn take_budget(&mut self, cx: &mut Cx<'_>) -> bool {
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
    pub(super) fn api_call(&self, op: OpId, req: Request, authorization: String) -> HttpCall {
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
    pub(super) fn send_rows(&mut self, page: u32, attempts: u32, cx: &mut Cx<'_>) {
        let Some(dt) = &self.cfg.datatable else {
            self.recovery = Recovery::Done;
            return;
        };
        let path = rows::rows_path(&dt.id, page);
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
    pub(super) fn send_identity(&mut self, cx: &mut Cx<'_>) {
        let kind = |token_generation| OpKind::Identity { token_generation };
        if self.send_get("/api/v2/tokens/me".to_owned(), kind, cx) {
            self.identity.fetching = true;
        }
    }

    /// Sends a `GET` that belongs to no group's cycle (recovery, identity)
    /// when a token and the budget allow; returns whether it went. One that
    /// did not is tried again by the next pump.
    pub(super) fn send_get(
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

    pub(super) fn phase(&self, g: &GroupId) -> Option<&Phase> {
        self.groups.get(g).map(|st| &st.phase)
    }

    pub(super) fn alloc_op(&mut self) -> OpId {
        let op = self.next_op;
        self.next_op = self.next_op.wrapping_add(1).max(1);
        op
    }

    pub(super) fn insert_op(&mut self, op: OpId, kind: OpKind, now: DateTime<Utc>) {
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
    pub(super) fn requeue_front(&mut self, g: &GroupId, cycle: Cycle) {
        let st = self.groups.entry(g.clone()).or_default();
        st.phase = Phase::Queued(cycle);
        // A read is coming: it covers any change so far.
        st.dirty = false;
        self.ready.push_front(g.clone());
    }

    pub(super) fn send_read(&mut self, g: &GroupId, cycle: Cycle, cx: &mut Cx<'_>) {
        let req = self.driver.read(g);
        self.send(g, cycle, Step::Read, req, cx);
    }

    /// Sends `req` for `g` now, or — when calls are paused, the slots are
    /// taken or no token is valid — queues the cycle to start over.
    pub(super) fn send(
        &mut self,
        g: &GroupId,
        cycle: Cycle,
        step: Step,
        req: Request,
        cx: &mut Cx<'_>,
    ) {
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
            OpKind::Group(GroupOp {
                group: g.clone(),
                cycle,
                step,
                token_generation: generation,
            }),
            now,
        );
        self.groups.entry(g.clone()).or_default().phase = Phase::InFlight(op);
        cx.fx.push(Effect::Call(call));
    }
}
