//! Start-up: recovery from the data table's rows, learning our OAuth
//! client's name (`tokens/me`) and the token's answers. Until recovery is
//! done nothing is written.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::genesys::answer::{Answer, AnswerClass};
use crate::genesys::models::TokenInfo;
use crate::genesys::rows::{self, RowsPage};
use crate::genesys::token::{backoff, TokenOutcome};
use crate::recovery::{self, PersistedIncident};

use super::effect::LedgerOp;
use super::health::Check;
use super::{
    rfc3339, Cx, Effect, FailureKind, Metric, Reconciler, IDENTITY_RETRY_S, MAX_ROWS_ATTEMPTS,
};

/// Where recovery at start stands.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Recovery {
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
pub(super) struct RecoveryReport {
    pub(super) started: bool,
    pub(super) persisted_incidents: usize,
    pub(super) groups: usize,
    pub(super) adopted: usize,
    pub(super) detail: Option<String>,
}

/// Our OAuth client's name, when it must be learned from `tokens/me`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Identity {
    pub(super) wanted: bool,
    pub(super) fetching: bool,
    pub(super) retry_at: Option<DateTime<Utc>>,
}

impl Reconciler {
    pub(super) fn token_answered(
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
                self.token_unmirrored = true;
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

    pub(super) fn identity_answered(
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

    pub(super) fn rows_answered(
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
            AnswerClass::Success => match rows::parse_rows_page(body, recovery::COLUMN) {
                Ok(rows) => self.restore_rows(page, rows, cx),
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
            _ => self.rows_unreadable(answer, cx),
        }
    }

    /// A page of rows read: every group a row names is handed its
    /// persisted incidents (and read, possibly adopted); then the next
    /// page, or recovery is over.
    fn restore_rows(&mut self, page: u32, rows: RowsPage, cx: &mut Cx<'_>) {
        self.health.pass(&Check::DataTable);
        let more = rows.has_more();
        let read = recovery::read_rows(&rows);
        for bad in &read.unreadable {
            cx.fx.push(Effect::Audit(json!({
                "kind": "emr.recovery",
                "at": rfc3339(cx.now),
                "decision": "row-unreadable",
                "detail": bad,
            })));
        }
        for doc in read.groups {
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
            cx.change(LedgerOp::Restore {
                group: doc.g,
                incidents: doc.o.iter().filter_map(PersistedIncident::open).collect(),
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

    /// The rows cannot be read: recovery goes on without them. A table that
    /// is not there or not ours to read fails its check.
    fn rows_unreadable(&mut self, answer: &Answer, cx: &mut Cx<'_>) {
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
                AnswerClass::Forbidden => "the OAuth client's role cannot read the data table",
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

    /// Recovery is over: reconciles may write from now on. Without the rows,
    /// the configured groups are checked for adoption instead.
    pub(super) fn finish_recovery(&mut self, problem: Option<String>, cx: &mut Cx<'_>) {
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
}
