//! Per-group state: where a group stands ([`Phase`]), the bookkeeping of
//! one cycle ([`Cycle`]), the writes a cycle still has to make
//! ([`Act`], [`Action`], [`Then`]) and what the watchdog remembers about
//! writes, overrides and contention.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::genesys::driver::{Observed, Target};
use crate::genesys::models::QueueRow;
use crate::genesys::OpId;
use crate::genesys::Request;
use crate::ledger::GenesysRef;
use crate::watchdog::Corrections;

/// The bookkeeping of one cycle, carried through its calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Cycle {
    /// Version conflicts (or row-create races) so far.
    pub(super) conflicts: u32,
    /// The one token refresh after a 401 is used.
    pub(super) auth_retried: bool,
    /// Reads that found `PENDING`.
    pub(super) pending_reads: u32,
    /// What Genesys said last that the settle should carry.
    pub(super) genesys: Option<GenesysRef>,
    /// Started by the watchdog (for the metrics).
    pub(super) check: bool,
    /// An incident event or a resume started it: it may write over a change
    /// that was not ours.
    pub(super) authorized: bool,
    /// It wrote the group's switch (the next check comes sooner).
    pub(super) wrote_group: bool,
    /// Reads so far, and the version the first one saw.
    pub(super) reads: u32,
    pub(super) first_version: Option<u64>,
    /// When the incident event (or resume) behind `authorized` came.
    pub(super) authorized_at: Option<DateTime<Utc>>,
}

/// Where a group stands.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Phase {
    /// Nothing to do until the ledger changes.
    Idle,
    /// Waiting for a slot, a token or the end of a pause; starts with a read.
    Queued(Cycle),
    /// Waiting until `until` (see [`Wait`] for what for); then queued.
    Waiting {
        until: DateTime<Utc>,
        cycle: Cycle,
        why: Wait,
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

/// What a [`Phase::Waiting`] group waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// Backoff after a failure.
    Backoff,
    /// A `PENDING` state settling.
    Pending,
    /// Drift by our own client being timed against the grace.
    Grace,
    /// Our client's name being learned (`tokens/me`).
    Identity,
    /// A row-only refresh paced ([`ROW_REFRESH_PACE`](super::ROW_REFRESH_PACE)).
    Pacing,
}

impl Wait {
    /// The phase's name on the state view.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Wait::Backoff => "backoff",
            Wait::Pending => "pending",
            Wait::Grace => "grace",
            Wait::Identity => "identity",
            Wait::Pacing => "pacing",
        }
    }
}

/// One write a cycle still has to make.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Action {
    Group(Request),
    /// A data-table row: it names its table, so a row write cannot be
    /// planned without one.
    Row {
        table: String,
        row: QueueRow,
        create: bool,
    },
}

/// What an out call was for.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    Read,
    Act(Box<Act>),
}

/// A write of a cycle, what comes after it, and what it is for.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Act {
    pub(super) action: Action,
    pub(super) rest: Vec<Action>,
    pub(super) target: Target,
    /// The read it follows, for the audit line.
    pub(super) before: Value,
    /// How the cycle ends once the writes are done.
    pub(super) then: Then,
}

/// How a cycle ends after its writes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Then {
    /// Genesys now shows the target.
    Settle,
    /// The group is held for a person: only the row was written.
    Hold(String),
    /// The group is contended: only the row was written.
    Contended(String),
    /// Drift by our client is being timed: read again then.
    Grace(DateTime<Utc>),
}

/// A write of ours Genesys accepted.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct WriteRecord {
    pub(super) at: DateTime<Utc>,
    pub(super) enabled: bool,
    pub(super) version: Option<u64>,
    pub(super) date_modified: Option<String>,
    pub(super) modified_by_app: Option<String>,
}

/// A change to a group that was not ours, which we do not write over.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OverrideInfo {
    pub(super) since: DateTime<Utc>,
    pub(super) enabled: bool,
    pub(super) version: Option<u64>,
    pub(super) date_modified: Option<String>,
    pub(super) modified_by: Option<String>,
    pub(super) modified_by_app: Option<String>,
}

/// A group our own client keeps changing behind our back, whose drift we no
/// longer correct.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ContendedInfo {
    pub(super) since: DateTime<Utc>,
    /// When a read last showed a change by our own client we did not make.
    pub(super) last_seen: DateTime<Utc>,
    /// The latest version read, and who wrote it.
    pub(super) version: Option<u64>,
    pub(super) modified_by_app: Option<String>,
    pub(super) detail: String,
}

/// How a cycle that reached its target found Genesys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reached {
    /// Already as wanted: nothing was written.
    InSync,
    /// As wanted after our writes.
    Applied,
}

/// The result of a group's latest cycle (or its latest step), as the state
/// view names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Reached(Reached),
    Failed,
    Retrying,
    RateLimited,
    Pending,
    Drift,
    Identity,
    Overridden,
    Contended,
}

impl Outcome {
    /// The `result` on the state view.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Outcome::Reached(Reached::InSync) => "in-sync",
            Outcome::Reached(Reached::Applied) => "applied",
            Outcome::Failed => "failed",
            Outcome::Retrying => "retrying",
            Outcome::RateLimited => "rate-limited",
            Outcome::Pending => "pending",
            Outcome::Drift => "drift",
            Outcome::Identity => "identity",
            Outcome::Overridden => "overridden",
            Outcome::Contended => "contended",
        }
    }
}

/// How the latest cycle (or its latest step) ended.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct LastReconcile {
    pub(super) at: DateTime<Utc>,
    pub(super) result: Outcome,
    pub(super) detail: Option<String>,
    pub(super) http_status: Option<u16>,
    pub(super) correlation_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct GroupState {
    pub(super) phase: Phase,
    /// The ledger changed while a call was out: one more cycle after this.
    pub(super) dirty: bool,
    pub(super) observed: Option<Observed>,
    pub(super) observed_at: Option<DateTime<Utc>>,
    pub(super) last_written: Option<WriteRecord>,
    pub(super) last: Option<LastReconcile>,
    /// The data-table row as we last wrote it.
    pub(super) row_written: Option<QueueRow>,
    /// The target Genesys was last seen to match.
    pub(super) synced: Option<Target>,
    /// Transient failures in a row, for the backoff.
    pub(super) failures: u32,
    /// The watchdog reads it again at this time (when idle).
    pub(super) next_check: Option<DateTime<Utc>>,
    /// Drift by our own client first seen at this time.
    pub(super) drift_since: Option<DateTime<Utc>>,
    /// Held for a person until an incident event or a resume.
    pub(super) overridden: Option<OverrideInfo>,
    /// Its latest drift corrections, counted toward contention.
    pub(super) corrections: Corrections,
    /// Flagged contended: its drift is not corrected.
    pub(super) contended: Option<ContendedInfo>,
    /// An incident event or resume came (at this time): the next read may
    /// write over a change that was not ours, made before it.
    pub(super) authorized: Option<DateTime<Utc>>,
    /// The newest version we wrote or read and accepted.
    pub(super) known_version: Option<u64>,
    /// Its first read since start may adopt it (recovery).
    pub(super) adopt_check: bool,
    /// A row-only refresh waits until then ([`ROW_REFRESH_PACE`](super::ROW_REFRESH_PACE)).
    pub(super) row_paced_until: Option<DateTime<Utc>>,
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
