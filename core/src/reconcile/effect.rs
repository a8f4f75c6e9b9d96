//! What the reconciler hands the glue: [`Effect`]s to carry out, the
//! [`FailureKind`] of a failed call and the [`Metric`] samples with their
//! stat names. Plain values, so the reconciler's tests need no host mock.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::callout::HttpCall;
use crate::event::{GroupId, IncidentKey};
use crate::genesys::answer::AnswerClass;
use crate::ledger::{GenesysRef, Ledger, OpenIncident, Settle};

/// What the glue must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Dispatch this call; hand its answer to [`Reconciler::on_result`](super::Reconciler::on_result).
    Call(HttpCall),
    /// A change to the ledger, which the reconciler only reads: its owner
    /// applies it with [`Change::apply`] and republishes what it touched.
    Ledger(Change),
    /// One JSON audit line (a decision: incident ids, before, after, what
    /// Genesys answered).
    Audit(Value),
    /// A line for Envoy's log at error level: something an operator must
    /// act on (beside its audit line, which is logged at info): a group
    /// another instance keeps writing, or something that stops switching
    /// (refused credentials, a missing group or permission, an unreadable
    /// data table; the list is on [`Reconciler::health`](super::Reconciler::health)).
    Alarm(String),
    Metric(Metric),
}

/// A change the reconciler asks of the ledger. Opaque: the only thing to
/// do with one is [`Change::apply`] it, so every owner of a ledger (the
/// service, the tests' world) applies it the same way.
#[derive(Debug, Clone, PartialEq)]
pub struct Change(pub(super) LedgerOp);

#[derive(Debug, Clone, PartialEq)]
pub(super) enum LedgerOp {
    /// A reconcile of `group` ended: its pending events settle.
    Settle {
        group: GroupId,
        outcome: Settle,
        genesys: Option<GenesysRef>,
    },
    /// Recovery at start: the incidents a row persisted (the ledger skips
    /// those it knows already).
    Restore {
        group: GroupId,
        incidents: Vec<OpenIncident>,
    },
    /// Recovery at start: the group was found enabled by our own client
    /// with nothing persisted to explain it.
    Adopt {
        group: GroupId,
        incident: OpenIncident,
        detail: String,
    },
}

/// The incidents a [`Change`] touched: their published status is stale.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changed {
    pub keys: Vec<IncidentKey>,
    /// Rebuilt after a restart: to be watched again (polled, if their tool
    /// has a status API) as when their event first arrived.
    pub rebuilt: bool,
}

impl Change {
    /// Incidents to put back in the ledger under `group` (those it knows
    /// are skipped): cluster mode's snapshot, as recovery's rows.
    pub fn restore(group: GroupId, incidents: Vec<OpenIncident>) -> Self {
        Self(LedgerOp::Restore { group, incidents })
    }

    /// When the change settles a reconcile: its group, outcome and what
    /// Genesys answered (cluster mode hands them to the other replicas).
    pub fn settlement(&self) -> Option<(&GroupId, &Settle, Option<&GenesysRef>)> {
        match &self.0 {
            LedgerOp::Settle {
                group,
                outcome,
                genesys,
            } => Some((group, outcome, genesys.as_ref())),
            _ => None,
        }
    }

    pub fn apply(self, ledger: &mut Ledger, now: DateTime<Utc>) -> Changed {
        match self.0 {
            LedgerOp::Settle {
                group,
                outcome,
                genesys,
            } => Changed {
                keys: ledger.settle_group(&group, outcome, genesys, now),
                rebuilt: false,
            },
            LedgerOp::Restore { group, incidents } => Changed {
                keys: incidents
                    .into_iter()
                    .filter_map(|o| ledger.restore(o, group.clone(), now))
                    .collect(),
                rebuilt: true,
            },
            LedgerOp::Adopt {
                group,
                incident,
                detail,
            } => Changed {
                keys: ledger
                    .adopt(incident, group, detail, now)
                    .into_iter()
                    .collect(),
                rebuilt: false,
            },
        }
    }
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
    pub(super) fn of(class: AnswerClass) -> FailureKind {
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
            Metric::Transition => "emr.genesys.transitions",
            Metric::InSync => "emr.genesys.in_sync",
            Metric::Applied => "emr.genesys.applied",
            Metric::Failed => "emr.genesys.failed",
            Metric::Failure(k) => match k {
                FailureKind::Unauthorized => "emr.genesys.failures.unauthorized",
                FailureKind::Forbidden => "emr.genesys.failures.forbidden",
                FailureKind::NotFound => "emr.genesys.failures.not_found",
                FailureKind::VersionConflict => "emr.genesys.failures.version_conflict",
                FailureKind::RateLimited => "emr.genesys.failures.rate_limited",
                FailureKind::ServerError => "emr.genesys.failures.server_error",
                FailureKind::Transport => "emr.genesys.failures.transport",
                FailureKind::Refused => "emr.genesys.failures.refused",
                FailureKind::Malformed => "emr.genesys.failures.malformed",
                FailureKind::BadCredentials => "emr.genesys.failures.bad_credentials",
            },
            Metric::TokenRefresh => "emr.genesys.token_refreshes",
            Metric::RowWrite => "emr.genesys.row_writes",
            Metric::RateLimitPause => "emr.genesys.rate_limit_pauses",
            Metric::BacklogFull => "emr.genesys.backlog_full",
            Metric::CalloutLatencyMs(_) => "emr.genesys.callout_latency_ms",
            Metric::Checked => "emr.watchdog.checked",
            Metric::CheckInSync => "emr.watchdog.in_sync",
            Metric::DriftSeen => "emr.watchdog.drift",
            Metric::Corrected => "emr.watchdog.corrected",
            Metric::Overridden => "emr.watchdog.overridden",
            Metric::SkippedOverridden => "emr.watchdog.skipped_overridden",
            Metric::Resumed => "emr.watchdog.resumed",
            Metric::Contended => "emr.watchdog.contended",
            Metric::ContendedGroups(_) => "emr.watchdog.contended_groups",
            Metric::Restored => "emr.recovery.restored",
            Metric::Adopted => "emr.recovery.adopted",
            Metric::BudgetWait => "emr.genesys.budget_waits",
        }
    }
}
