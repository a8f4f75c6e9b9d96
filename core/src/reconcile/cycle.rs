//! One cycle of a group: a call's answer (`answered`), the read and its
//! decision (`after_read`), the writes (`act`, `after_action`) and the
//! ends of a cycle (`finish`, `settle_applied`, `fail`) with their audit
//! lines.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};

use crate::callout::CallResult;
use crate::event::GroupId;
use crate::genesys::answer::{Answer, AnswerClass};
use crate::genesys::driver::{row_request, Decision, Observed, Target};
use crate::genesys::token::backoff;
use crate::genesys::Request;
use crate::ledger::{Settle, VIEW_LIST_MAX};

use super::effect::LedgerOp;
use super::group::{Outcome, Reached, Wait};
use super::health::Check;
use super::judge::Read;
use super::{
    genesys_ref, observed_json, rfc3339, row_view, target_json, Act, Action, Cx, Cycle, Effect,
    FailureKind, GroupOp, LastReconcile, Metric, Op, OpKind, Phase, Reconciler, Step, Then,
    WriteRecord, ROW_REFRESH_PACE,
};

impl Reconciler {
    pub(super) fn answered(&mut self, op: Op, result: &CallResult, cx: &mut Cx<'_>) {
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
            OpKind::Group(op) => {
                self.judge_group_answer(&op.group, &answer, cx);
                self.group_answered(op, &answer, body, cx);
            }
        }
    }

    /// A group's read or write answered: a refusal no retry mends (no such
    /// group, a missing permission, an id Genesys cannot read) fails its
    /// check; a success passes it.
    pub(super) fn judge_group_answer(&mut self, g: &GroupId, answer: &Answer, cx: &mut Cx<'_>) {
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

    /// Pauses every call until the 429's `Retry-After` (or the default).
    pub(super) fn pause(&mut self, answer: &Answer, cx: &mut Cx<'_>) {
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

    pub(super) fn group_answered(
        &mut self,
        op: GroupOp,
        answer: &Answer,
        body: &[u8],
        cx: &mut Cx<'_>,
    ) {
        let GroupOp {
            group,
            mut cycle,
            step,
            token_generation,
        } = op;
        let g = &group;
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
                self.note(
                    g,
                    Outcome::Retrying,
                    Some(answer.describe()),
                    Some(answer),
                    cx.now,
                );
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
                    self.note(
                        g,
                        Outcome::Retrying,
                        Some(answer.describe()),
                        Some(answer),
                        cx.now,
                    );
                    self.audit(g, "conflict-reread", Some(answer), json!({}), cx);
                    self.send_read(g, cycle, cx);
                }
            }
            AnswerClass::RateLimited => {
                self.note(
                    g,
                    Outcome::RateLimited,
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
    pub(super) fn retry_later(
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
            why: Wait::Backoff,
        };
        st.dirty = false;
        self.note(g, Outcome::Retrying, Some(reason.clone()), answer, cx.now);
        self.audit(
            g,
            "retry-after-backoff",
            answer,
            json!({"retryAt": rfc3339(until), "detail": reason}),
            cx,
        );
    }

    pub(super) fn after_read(
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
        let changed_in_cycle = count_read(&mut cycle, &observed, answer, cx);
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
                self.pending_read(g, cycle, before, answer, cx);
                return;
            }
            Decision::InSync => {
                self.accept_in_sync(g, &observed, cx);
                (None, Then::Settle)
            }
            Decision::Write(req) => {
                let read = Read {
                    observed: &observed,
                    target: &target,
                    answer,
                    changed_in_cycle,
                };
                match self.judge_read(g, cycle.clone(), &read, cx) {
                    Some(Then::Settle) => (Some(req), Then::Settle),
                    Some(then) => (None, then),
                    // Adopted, or waiting to learn whose change it is.
                    None => return,
                }
            }
        };
        let actions = self.writes(g, &target, group_write, cx);
        if let Some(decision) = decision_name(&then, &actions) {
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
            None => self.finish(g, cycle, target, then, Reached::InSync, cx),
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

    /// A read found `PENDING`: read again after a pause, or after a backoff
    /// once it stayed so for `guide.max_pending_reads` reads.
    fn pending_read(
        &mut self,
        g: &GroupId,
        mut cycle: Cycle,
        before: Value,
        answer: &Answer,
        cx: &mut Cx<'_>,
    ) {
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
    }

    /// The writes a cycle makes, in order: the row before the group when
    /// switching on, after it when switching off.
    fn writes(
        &self,
        g: &GroupId,
        target: &Target,
        group_write: Option<Request>,
        cx: &Cx<'_>,
    ) -> Vec<Action> {
        let row_write = self.row_to_write(g, target, cx.ledger, cx.now);
        let mut actions = Vec::new();
        if target.enabled {
            // Queues first, so a flow on the emergency path finds them.
            actions.extend(row_write);
            actions.extend(group_write.map(Action::Group));
        } else {
            actions.extend(group_write.map(Action::Group));
            actions.extend(row_write);
        }
        actions
    }

    /// Ends a cycle once its writes (if any) are done.
    pub(super) fn finish(
        &mut self,
        g: &GroupId,
        cycle: Cycle,
        target: Target,
        then: Then,
        reached: Reached,
        cx: &mut Cx<'_>,
    ) {
        match then {
            Then::Settle => {
                if reached == Reached::InSync {
                    cx.metric(Metric::InSync);
                    if cycle.check {
                        cx.metric(Metric::CheckInSync);
                    }
                }
                self.settle_applied(g, cycle, target, reached, cx);
            }
            Then::Hold(reason) => self.hold(g, cycle, Outcome::Overridden, reason, cx),
            Then::Contended(reason) => self.hold(g, cycle, Outcome::Contended, reason, cx),
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
                        why: Wait::Grace,
                    };
                }
                self.note(
                    g,
                    Outcome::Drift,
                    Some(format!("corrected at {} unless it ends first", rfc3339(at))),
                    None,
                    cx.now,
                );
            }
        }
    }

    /// Ends a cycle that does not write the group (held for a person, or
    /// contended): its incidents' pending events fail with `reason`.
    pub(super) fn hold(
        &mut self,
        g: &GroupId,
        cycle: Cycle,
        result: Outcome,
        reason: String,
        cx: &mut Cx<'_>,
    ) {
        self.note(g, result, Some(reason.clone()), None, cx.now);
        cx.change(LedgerOp::Settle {
            group: g.clone(),
            outcome: Settle::Failed(reason),
            genesys: cycle.genesys.clone(),
        });
        self.end_cycle(g, cx.now, cycle.wrote_group);
    }

    pub(super) fn wait_pending(
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
            why: Wait::Pending,
        };
        st.dirty = false;
        self.note(g, Outcome::Pending, None, Some(answer), cx.now);
        self.audit(
            g,
            "pending",
            Some(answer),
            json!({"before": before, "retryAt": rfc3339(until)}),
            cx,
        );
    }

    /// Sends the next write of a cycle.
    pub(super) fn act(&mut self, g: &GroupId, cycle: Cycle, act: Act, cx: &mut Cx<'_>) {
        let req = match &act.action {
            Action::Group(req) => req.clone(),
            Action::Row { table, row, create } => row_request(table, row, *create),
        };
        self.send(g, cycle, Step::Act(Box::new(act)), req, cx);
    }

    pub(super) fn after_action(
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
            None => self.finish(g, cycle, target, then, Reached::Applied, cx),
        }
    }

    /// Genesys now shows `target`. Settles `Applied` if the ledger still
    /// wants that; otherwise reconciles again.
    pub(super) fn settle_applied(
        &mut self,
        g: &GroupId,
        cycle: Cycle,
        target: Target,
        reached: Reached,
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
            result: Outcome::Reached(reached),
            detail: None,
            http_status: genesys.as_ref().and_then(|r| r.http_status),
            correlation_id: genesys.as_ref().and_then(|r| r.correlation_id.clone()),
        });
        cx.change(LedgerOp::Settle {
            group: g.clone(),
            outcome: Settle::Applied,
            genesys,
        });
        self.end_cycle(g, cx.now, cycle.wrote_group);
    }

    /// The cycle failed for good: settle `Failed` with `reason`.
    pub(super) fn fail(
        &mut self,
        g: &GroupId,
        reason: String,
        answer: Option<&Answer>,
        cx: &mut Cx<'_>,
    ) {
        cx.metric(Metric::Failed);
        self.audit(g, "failed", answer, json!({"detail": reason}), cx);
        let genesys = answer.map(Answer::genesys_ref);
        let st = self.groups.entry(g.clone()).or_default();
        st.failures = 0;
        st.last = Some(LastReconcile {
            at: cx.now,
            result: Outcome::Failed,
            detail: Some(reason.clone()),
            http_status: answer.and_then(|a| a.status),
            correlation_id: answer.and_then(|a| a.correlation_id.clone()),
        });
        cx.change(LedgerOp::Settle {
            group: g.clone(),
            outcome: Settle::Failed(reason),
            genesys,
        });
        self.end_cycle(g, cx.now, false);
    }

    /// Idle until the watchdog's next check, or — if the ledger changed
    /// during the cycle — queued again.
    pub(super) fn end_cycle(&mut self, g: &GroupId, now: DateTime<Utc>, wrote_group: bool) {
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
    pub(super) fn note(
        &mut self,
        g: &GroupId,
        result: Outcome,
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

    pub(super) fn audit(
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
}

/// Counts a read of the cycle (and a watchdog check's first). Whether the
/// group's version moved since the cycle's first read.
fn count_read(cycle: &mut Cycle, observed: &Observed, answer: &Answer, cx: &mut Cx<'_>) -> bool {
    cycle.genesys = Some(genesys_ref(answer, observed));
    if cycle.check && cycle.reads == 0 {
        cx.metric(Metric::Checked);
    }
    let changed_in_cycle = cycle.reads > 0 && observed.version != cycle.first_version;
    if cycle.reads == 0 {
        cycle.first_version = observed.version;
    }
    cycle.reads = cycle.reads.saturating_add(1);
    changed_in_cycle
}

/// The audit decision for a cycle's writes; `None` when it writes nothing
/// and does not settle (held, contended, timed).
fn decision_name(then: &Then, actions: &[Action]) -> Option<&'static str> {
    let writes_group = actions.iter().any(|a| matches!(a, Action::Group(_)));
    match (then, actions.len(), writes_group) {
        (Then::Settle, 0, _) => Some("in-sync"),
        (_, 0, _) => None,
        (_, _, true) => Some("write"),
        (_, _, false) => Some("write-row"),
    }
}
