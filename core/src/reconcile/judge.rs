//! Judging a read that differs from the target: whose change it is, and
//! whether it is written over, held for a person, timed as drift or
//! flagged contended ([`crate::watchdog::judge`] holds the rules).

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::event::GroupId;
use crate::genesys::answer::Answer;
use crate::genesys::driver::{Observed, Target};
use crate::ledger::OpenIncident;
use crate::recovery;
use crate::watchdog::{self, Facts, Verdict};

use super::effect::LedgerOp;
use super::group::{Outcome, Wait};
use super::{
    modified_after, observed_json, ordinal, rfc3339, target_json, ContendedInfo, Cx, Cycle, Effect,
    Metric, OverrideInfo, Phase, Reconciler, Then, AFTER_EVENT_MARGIN,
};

/// A read that differs from the target, as it is judged: what Genesys
/// showed, what the ledger wants, the answer the read came in, and whether
/// the group's version moved during the cycle.
pub(super) struct Read<'a> {
    pub(super) observed: &'a Observed,
    pub(super) target: &'a Target,
    pub(super) answer: &'a Answer,
    pub(super) changed_in_cycle: bool,
}

impl Reconciler {
    /// A read found Genesys as the incidents want it: any drift is over, any
    /// override has nothing left to protect, and the version is accepted.
    pub(super) fn accept_in_sync(&mut self, g: &GroupId, observed: &Observed, cx: &mut Cx<'_>) {
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
    pub(super) fn lift_contention(&mut self, g: &GroupId, answer: &Answer, cx: &mut Cx<'_>) {
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
    pub(super) fn contention_read(
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
    pub(super) fn contended_gauge(&self, cx: &mut Cx<'_>) {
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
    pub(super) fn judge_read(
        &mut self,
        g: &GroupId,
        cycle: Cycle,
        read: &Read<'_>,
        cx: &mut Cx<'_>,
    ) -> Option<Then> {
        let observed = read.observed;
        let writer = watchdog::writer(
            observed.modified_by_app.as_deref(),
            &self.cfg.client_id,
            self.our_app.as_deref(),
        );
        let Some(authorized) = self.authority(g, &cycle, read, writer, cx) else {
            return self.wait_for_identity(g, cycle, read.answer, cx);
        };
        let (verdict, was_held) = self.verdict(g, authorized, writer, read, cx.now);
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
                self.write_over(g, corrects_drift, was_held, read, cx);
                Some(Then::Settle)
            }
            Verdict::Override => {
                self.hold_for_person(g, read, &held_reason, cx);
                Some(Then::Hold(held_reason))
            }
            Verdict::Hold => {
                cx.metric(Metric::SkippedOverridden);
                self.audit(
                    g,
                    "skipped-overridden",
                    Some(read.answer),
                    json!({"observed": observed_json(observed), "target": target_json(read.target)}),
                    cx,
                );
                Some(Then::Hold(held_reason))
            }
            Verdict::Contended => {
                let detail = self.flag_contended(g, read, &who, cx);
                Some(Then::Contended(format!("contended: {detail}")))
            }
            Verdict::HoldContended => {
                self.audit(
                    g,
                    "skipped-contended",
                    Some(read.answer),
                    json!({"observed": observed_json(observed), "target": target_json(read.target)}),
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
                self.drift_seen(g, since, correct_at, read, cx);
                Some(Then::Grace(correct_at))
            }
            Verdict::Adopt => {
                match recovery::adopted(g, read.observed.date_modified.as_deref(), cx.now) {
                    Some(incident) => {
                        self.adopt(g, incident, read, &who, cx);
                        None
                    }
                    None => Some(Then::Hold(held_reason)),
                }
            }
            Verdict::NeedIdentity => self.wait_for_identity(g, cycle, read.answer, cx),
        }
    }

    /// Whether the incident event (or resume) behind the cycle still lets it
    /// write over a change that was not ours. The event decides only over
    /// changes made before it. A change by someone else after it — seen as
    /// a version that moved during this cycle (a 409), or stamped later than
    /// the event — is that person's last word. `None`: whose change it is
    /// needs our client's name.
    fn authority(
        &mut self,
        g: &GroupId,
        cycle: &Cycle,
        read: &Read<'_>,
        writer: watchdog::Writer,
        cx: &mut Cx<'_>,
    ) -> Option<bool> {
        let observed = read.observed;
        let known = self.groups.get(g).and_then(|st| st.known_version);
        let stamped_after = cycle.authorized_at.is_some_and(|at| {
            observed.version != known
                && modified_after(observed.date_modified.as_deref(), at + AFTER_EVENT_MARGIN)
        });
        let changed_after = read.changed_in_cycle || stamped_after;
        match watchdog::authority(cycle.authorized, changed_after, writer) {
            watchdog::Authority::None => Some(false),
            watchdog::Authority::Holds => Some(true),
            watchdog::Authority::Void => {
                self.audit(
                    g,
                    "authority-void",
                    Some(read.answer),
                    json!({"detail": "changed by someone else after the incident event; that change is not written over"}),
                    cx,
                );
                Some(false)
            }
            watchdog::Authority::Unknown => None,
        }
    }

    /// Puts the read's facts to [`watchdog::judge`]. Also says whether the
    /// group was held for a person before.
    fn verdict(
        &mut self,
        g: &GroupId,
        authorized: bool,
        writer: watchdog::Writer,
        read: &Read<'_>,
        now: DateTime<Utc>,
    ) -> (Verdict, bool) {
        let (observed, target) = (read.observed, read.target);
        let tracks_queues = self.driver.tracks_queues();
        let grace = self.cfg.watchdog.grace;
        let window = self.cfg.watchdog.contention_window();
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
            recent_corrections: st.corrections.recent(now, window),
            now,
            grace,
        };
        let verdict = watchdog::judge(&facts);
        if verdict != Verdict::NeedIdentity {
            st.adopt_check = false;
        }
        (verdict, st.overridden.is_some())
    }

    /// The cycle writes: any hold is lifted, and drift being corrected is
    /// counted toward contention.
    fn write_over(
        &mut self,
        g: &GroupId,
        corrects_drift: bool,
        was_held: bool,
        read: &Read<'_>,
        cx: &mut Cx<'_>,
    ) {
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
                Some(read.answer),
                json!({"by": "incident event"}),
                cx,
            );
        }
        if corrects_drift {
            cx.metric(Metric::Corrected);
            self.audit(
                g,
                "correct-drift",
                Some(read.answer),
                json!({
                    "driftSince": drift.map(rfc3339),
                    "graceSeconds": self.cfg.watchdog.grace.num_seconds(),
                    "observed": observed_json(read.observed),
                    "target": target_json(read.target),
                }),
                cx,
            );
        }
    }

    /// A change by someone else: the group is held for that person.
    fn hold_for_person(
        &mut self,
        g: &GroupId,
        read: &Read<'_>,
        held_reason: &str,
        cx: &mut Cx<'_>,
    ) {
        let observed = read.observed;
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
            Some(read.answer),
            json!({
                "observed": observed_json(observed),
                "modifiedBy": observed.modified_by,
                "target": target_json(read.target),
                "detail": held_reason,
            }),
            cx,
        );
    }

    /// Our own client keeps changing the group: it is flagged contended, with
    /// an alarm. Returns the detail the cycle ends with.
    fn flag_contended(
        &mut self,
        g: &GroupId,
        read: &Read<'_>,
        who: &str,
        cx: &mut Cx<'_>,
    ) -> String {
        let observed = read.observed;
        let window = self.cfg.watchdog.contention_window();
        let detail = format!(
            "another emr-edge instance (or a script with this OAuth client) keeps writing \
             emergency group {g}: our own OAuth client ({who}) changed it in a version \
             this instance did not write for the {} time within {w} s; exactly one \
             emr-edge instance may run, or one cluster of replicas on etcd; emr-edge stops \
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
            Some(read.answer),
            json!({
                "driftSince": drift.map(rfc3339),
                "windowSeconds": window.num_seconds(),
                "observed": observed_json(observed),
                "target": target_json(read.target),
                "detail": detail,
            }),
            cx,
        );
        detail
    }

    /// Drift by our own client, timed against the grace: counted and
    /// audited when first seen.
    fn drift_seen(
        &mut self,
        g: &GroupId,
        since: DateTime<Utc>,
        correct_at: DateTime<Utc>,
        read: &Read<'_>,
        cx: &mut Cx<'_>,
    ) {
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
                Some(read.answer),
                json!({
                    "observed": observed_json(read.observed),
                    "target": target_json(read.target),
                    "correctAt": rfc3339(correct_at),
                }),
                cx,
            );
        }
    }

    /// At start, the group was found enabled by our own client with nothing
    /// persisted to explain it: it is adopted under `key`, and read again
    /// once the glue has put the incident in the ledger.
    fn adopt(
        &mut self,
        g: &GroupId,
        incident: OpenIncident,
        read: &Read<'_>,
        who: &str,
        cx: &mut Cx<'_>,
    ) {
        let observed = read.observed;
        let expires_at = incident.expires_at;
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
            Some(read.answer),
            json!({"incident": incident.key.to_string(), "expiresAt": rfc3339(expires_at), "observed": observed_json(observed)}),
            cx,
        );
        cx.change(LedgerOp::Adopt {
            group: g.clone(),
            incident,
            detail,
        });
        // Read again once the glue has put the incident in the ledger.
        let st = self.groups.entry(g.clone()).or_default();
        st.phase = Phase::Queued(Cycle::default());
        st.dirty = false;
        self.ready.push_back(g.clone());
    }

    /// Whose change a read shows depends on our client's name: learn it
    /// (`tokens/me`), then read again.
    pub(super) fn wait_for_identity(
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
            why: Wait::Identity,
        };
        st.dirty = false;
        self.note(
            g,
            Outcome::Identity,
            Some("learning our OAuth client's name to tell whose change this is".into()),
            Some(answer),
            cx.now,
        );
        None
    }
}
