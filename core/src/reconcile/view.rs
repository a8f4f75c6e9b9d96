//! The state view (`GET /emr/state`): per group desired, observed, last
//! reconcile, what is out or waiting; recovery, the token and the pause;
//! and its one-line summary.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};

use crate::event::GroupId;
use crate::genesys::driver::Observed;
use crate::ledger::{Ledger, VIEW_LIST_MAX};

use super::{
    rfc3339, row_view, ContendedInfo, GroupState, LastReconcile, OverrideInfo, Phase, Reconciler,
    Recovery, WriteRecord,
};

impl Reconciler {
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

    pub(super) fn recovery_view(&self) -> Value {
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
    /// made this 1.4 MB (RELIABILITY.md, hostile senders, #14).
    /// One line for a person at 3 a.m.: which groups are in emergency,
    /// since when, held by which incident; or that none is, and what stops
    /// switching if anything does.
    pub(super) fn summary(&self, ledger: &Ledger) -> String {
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

    pub(super) fn summary_of_groups(&self, ledger: &Ledger) -> String {
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
    pub(super) fn group_name(&self, g: &GroupId) -> Option<&str> {
        self.groups.get(g)?.observed.as_ref()?.name()
    }

    pub(super) fn group_view(
        &self,
        g: &GroupId,
        ledger: &Ledger,
        st: Option<&GroupState>,
    ) -> Value {
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
        let phase = self.phase_view(&st.phase, obj);
        obj.insert("phase".into(), phase.into());
        obj.insert("dirty".into(), st.dirty.into());
        obj.insert("overridden".into(), st.overridden.is_some().into());
        if let Some(o) = &st.overridden {
            obj.insert("override".into(), o.view(g));
        }
        let window = self.cfg.watchdog.contention_window();
        obj.insert(
            "contended".into(),
            st.contended
                .as_ref()
                .map_or(Value::Null, |c| c.view(g, window)),
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
            st.observed
                .as_ref()
                .map_or(Value::Null, |o| observed_view(o, st.observed_at)),
        );
        if let Some(l) = &st.last {
            obj.insert("lastReconcile".into(), l.view());
        }
        if let Some(w) = &st.last_written {
            obj.insert("lastWritten".into(), w.view());
        }
        if let Some(r) = &st.row_written {
            obj.insert("row".into(), row_view(r));
        }
        v
    }

    /// The phase's name; a wait adds when it ends, a call out when it left.
    fn phase_view(&self, phase: &Phase, obj: &mut Map<String, Value>) -> &'static str {
        match phase {
            Phase::Idle => "idle",
            Phase::Queued(_) => "queued",
            Phase::Waiting { why, until, .. } => {
                obj.insert("retryAt".into(), rfc3339(*until).into());
                why.as_str()
            }
            Phase::InFlight(op) => {
                if let Some(o) = self.ops.get(op) {
                    obj.insert("inFlightSince".into(), rfc3339(o.sent_at).into());
                }
                "in-flight"
            }
            Phase::Deferred { .. } => "deferred",
        }
    }
}

impl OverrideInfo {
    fn view(&self, g: &GroupId) -> Value {
        json!({
            "since": rfc3339(self.since),
            "enabled": self.enabled,
            "version": self.version,
            "dateModified": self.date_modified,
            "modifiedBy": self.modified_by,
            "modifiedByApp": self.modified_by_app,
            "resume": format!("POST /emr/groups/{g}/resume, or the next incident event for this group"),
        })
    }
}

impl ContendedInfo {
    fn view(&self, g: &GroupId, window: Duration) -> Value {
        json!({
            "since": rfc3339(self.since),
            "lastSeen": rfc3339(self.last_seen),
            "version": self.version,
            "modifiedByApp": self.modified_by_app,
            "detail": self.detail,
            "resume": format!(
                "once one emr-edge instance is left: POST /emr/groups/{g}/resume, or the next \
                 incident event for this group; by itself after {} s with the group as wanted \
                 and no change by our client that this instance did not make",
                window.num_seconds()
            ),
        })
    }
}

impl LastReconcile {
    fn view(&self) -> Value {
        json!({
            "at": rfc3339(self.at),
            "result": self.result.as_str(),
            "detail": self.detail,
            "httpStatus": self.http_status,
            "correlationId": self.correlation_id,
        })
    }
}

impl WriteRecord {
    fn view(&self) -> Value {
        json!({
            "at": rfc3339(self.at),
            "enabled": self.enabled,
            "version": self.version,
            "dateModified": self.date_modified,
            "modifiedByApp": self.modified_by_app,
        })
    }
}

/// Genesys as a read showed it, and when.
fn observed_view(o: &Observed, at: Option<DateTime<Utc>>) -> Value {
    json!({
        "enabled": o.enabled,
        "pending": o.pending,
        "version": o.version,
        "dateModified": o.date_modified,
        "modifiedBy": o.modified_by,
        "modifiedByApp": o.modified_by_app,
        "state": o.lifecycle,
        "queues": o.queues.as_ref().map(|q| q.iter().take(VIEW_LIST_MAX).collect::<Vec<_>>()),
        "at": at.map(rfc3339),
    })
}
