//! The leader's snapshot of the open incidents, as the service writes and
//! restores it ([`crate::etcd::snapshot`]): every incident open at a log
//! position, per group, in recovery's compact form.
//!
//! ```json
//! {"v":1,"p":4120,"g":[{"g":"<group>","o":[["pagerduty","Q2UE…","CARRIER_OUTAGE",["q1"],1,1723731721000,1723735321000,3600]]}]}
//! ```

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::callout::{CallResult, HttpCall, OpId};
use crate::etcd::answer::{self, Failure};
use crate::etcd::log::Keys;
use crate::etcd::{snapshot, Fence, Gateway};
use crate::event::GroupId;
use crate::ledger::{Ledger, OpenIncident};
use crate::recovery::{PersistedIncident, PersistedRef};

/// How often the leader writes one, at most, while the log moves: well
/// inside the shortest dedupe window (60 s), after which the oldest
/// entries may go.
pub(super) const EVERY_S: i64 = 20;
/// The largest snapshot written: etcd refuses a request over 1.5 MiB
/// unless `--max-request-bytes` says otherwise.
pub(super) const MAX_BYTES: usize = 1_400_000;
const VERSION: u8 = 1;

/// A snapshot as read.
#[derive(Deserialize)]
struct Body {
    v: u8,
    g: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    g: GroupId,
    o: Vec<PersistedIncident>,
}

/// The same, as written: borrowed from the ledger, in recovery's compact
/// form ([`PersistedRef`]), nothing cloned.
#[derive(Serialize)]
struct BodyRef<'a> {
    v: u8,
    p: i64,
    g: Vec<GroupRef<'a>>,
}

#[derive(Serialize)]
struct GroupRef<'a> {
    g: &'a GroupId,
    o: Vec<PersistedRef<'a>>,
}

/// The open incidents of `ledger`, standing for the log up to `position`.
pub(super) fn encode(ledger: &Ledger, position: i64) -> Vec<u8> {
    let g = ledger
        .groups()
        .map(|group| GroupRef {
            g: group,
            o: ledger
                .open_incidents_of(group)
                .into_iter()
                .filter_map(PersistedRef::of)
                .collect(),
        })
        .filter(|g| !g.o.is_empty())
        .collect();
    serde_json::to_vec(&BodyRef {
        v: VERSION,
        p: position,
        g,
    })
    .unwrap_or_default()
}

/// The incidents a snapshot holds, per group.
pub(super) fn decode(bytes: &[u8]) -> Result<Vec<(GroupId, Vec<OpenIncident>)>, String> {
    let body: Body =
        serde_json::from_slice(bytes).map_err(|e| format!("an unreadable snapshot: {e}"))?;
    if body.v != VERSION {
        return Err(format!(
            "a snapshot of format version {}, not {VERSION}",
            body.v
        ));
    }
    Ok(body
        .g
        .into_iter()
        .map(|g| {
            (
                g.g,
                g.o.iter().filter_map(PersistedIncident::open).collect(),
            )
        })
        .collect())
}

/// A snapshot too large to write; `first` of a streak (to say once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooLarge {
    pub(super) first: bool,
}

/// How a write ended.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Written {
    Done,
    /// Another replica leads now: not this one's to write.
    Deposed,
    Failed(Failure),
}

/// When the leader writes its snapshot. One write at a time.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    /// The position of the latest snapshot written (or being written).
    written: i64,
    last_at: DateTime<Utc>,
    /// The write out, and the position it stands for.
    sending: Option<(OpId, i64)>,
    /// The latest snapshot was too large to write.
    too_large: bool,
    next_op: OpId,
}

impl Writer {
    pub(super) fn new(now: DateTime<Utc>) -> Self {
        Self {
            written: 0,
            last_at: now - Duration::seconds(EVERY_S),
            sending: None,
            too_large: false,
            next_op: 1,
        }
    }

    /// Whether a snapshot at `position` is due: the log moved since the
    /// latest, and that one is old enough.
    pub(super) fn due(&self, position: i64, now: DateTime<Utc>) -> bool {
        self.sending.is_none()
            && position > self.written
            && now - self.last_at >= Duration::seconds(EVERY_S)
    }

    /// The write of `body`, the snapshot at `position`, fenced on this
    /// replica's leadership; or, when it is larger than etcd takes (tried
    /// again later), whether that is new since the latest one that fit.
    pub(super) fn send(
        &mut self,
        (gateway, keys): (&Gateway, &Keys),
        (body, position): (&[u8], i64),
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<HttpCall, TooLarge> {
        self.last_at = now;
        if body.len() > MAX_BYTES {
            let first = !std::mem::replace(&mut self.too_large, true);
            return Err(TooLarge { first });
        }
        self.too_large = false;
        let op = self.next_op;
        self.next_op += 1;
        self.sending = Some((op, position));
        Ok(gateway.call(op, snapshot::write(keys, body, fence)))
    }

    /// The answer to a write; `None` for another op's.
    pub(super) fn answered(&mut self, op: OpId, result: &CallResult) -> Option<Written> {
        let (_, position) = self.sending.filter(|(o, _)| *o == op)?;
        self.sending = None;
        Some(match answer::txn(result) {
            Ok(txn) if txn.succeeded => {
                self.written = position;
                Written::Done
            }
            Ok(_) => Written::Deposed,
            Err(f) => Written::Failed(f),
        })
    }
}
