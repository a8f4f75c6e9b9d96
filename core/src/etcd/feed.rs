//! The log read in order: how a replica's service learns of every event
//! any replica committed ([`super::log`]).
//!
//! At each period it reads the marker, one key whose cost does not grow
//! with the log. When the marker moved past what it has read, it reads the
//! log from there, oldest first, a page at a time, and hands the events on.
//! From a fresh start (`after` 0) that is the whole log: what a new leader
//! rebuilds its ledger from before it acts ([`Feed::caught_up`]).
//!
//! Before the log, a fresh feed reads the leader's snapshot
//! ([`super::snapshot`]) and hands it on once the log is read up to the
//! snapshot's revision: after the entries it stands for that are still
//! there, before any later one.
//!
//! One call at a time, by value, like the election.

use chrono::{DateTime, Duration, Utc};

use super::answer::Failure;
use super::log::{self, Keys, Logged};
use super::snapshot::{self, Snapshot};
use super::Gateway;
use crate::callout::{CallResult, HttpCall, OpId};

/// What the service must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Dispatch; hand the answer to [`Feed::on_result`].
    Call(HttpCall),
    /// Events read, oldest first: record them as if dequeued.
    Events(Vec<Logged>),
    /// The leader's snapshot, once every event up to its revision was
    /// handed on: restore what it holds that the ledger does not.
    Snapshot(Snapshot),
    /// Log entries that could not be read (skipped; counted).
    Unreadable(usize),
    /// A call failed: retried next period.
    Failed(Failure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Snapshot,
    Marker,
    Page,
}

/// Where the snapshot stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    /// Not read yet: nothing else is read before it.
    Unread,
    /// Read: handed on when reading passes its revision.
    Waiting(Snapshot),
    /// Handed on, or there was none.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Out {
    op: OpId,
    step: Step,
}

/// The reader's state.
#[derive(Debug, Clone)]
pub struct Feed {
    keys: Keys,
    gateway: Gateway,
    /// How often the marker is read.
    period: Duration,
    /// Events per page.
    page_size: i64,
    /// Every event up to this revision has been handed on.
    after: i64,
    /// Events of revision `after + 1` handed on already: a page can end in
    /// the middle of one commit's events, and the next one starts again at
    /// that revision.
    partial: Vec<Vec<u8>>,
    /// The marker's revision, as last read.
    marker: i64,
    /// Reached the marker at least once since the start.
    caught_up: bool,
    /// The latest read failed.
    failing: bool,
    start: Start,
    out: Option<Out>,
    /// When the current round of reads began: the next one is a period
    /// after it, not after its answer, or every round would last a period
    /// plus its reads, and the tick that polls (as long as the period)
    /// would skip every other one.
    round_started: DateTime<Utc>,
    next_at: DateTime<Utc>,
    next_op: OpId,
}

impl Feed {
    /// A reader from the start of the log. `first_op` keeps its op ids apart
    /// from the other state machines' that share the service's calls.
    pub fn new(
        keys: Keys,
        gateway: Gateway,
        period: Duration,
        page_size: i64,
        first_op: OpId,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            keys,
            gateway,
            period,
            // Larger than a commit, so every page ends past the revision it
            // started at and reading always moves on.
            page_size: page_size.max(i64::try_from(log::MAX_BATCH).unwrap_or(100) + 1),
            after: 0,
            partial: Vec::new(),
            marker: 0,
            caught_up: false,
            failing: false,
            start: Start::Unread,
            out: None,
            round_started: now,
            next_at: now,
            next_op: first_op,
        }
    }

    /// Whether every event committed before the latest marker read has
    /// been handed on: a new leader acts only from then on.
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// Whether the latest read worked.
    pub fn healthy(&self) -> bool {
        !self.failing
    }

    /// Revisions committed but not handed on yet, as last known.
    pub fn lag(&self) -> i64 {
        (self.marker - self.after).max(0)
    }

    /// The revision everything up to has been handed on.
    pub fn position(&self) -> i64 {
        self.after
    }

    /// When the next read is due (the service ticks; tests ask).
    #[cfg(test)]
    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        self.out.is_none().then_some(self.next_at)
    }

    /// Starts the read that is due.
    pub fn poll(&mut self, now: DateTime<Utc>) -> Vec<Effect> {
        if self.out.is_some() || now < self.next_at {
            return Vec::new();
        }
        self.round_started = now;
        let step = if self.start == Start::Unread {
            Step::Snapshot
        } else if self.marker > self.after {
            Step::Page
        } else {
            Step::Marker
        };
        vec![Effect::Call(self.send(step))]
    }

    fn send(&mut self, step: Step) -> HttpCall {
        let op = self.next_op;
        self.next_op += 1;
        self.out = Some(Out { op, step });
        let request = match step {
            Step::Snapshot => snapshot::read(&self.keys),
            Step::Marker => log::read_marker(&self.keys),
            Step::Page => log::read_since(&self.keys, self.after, self.page_size),
        };
        self.gateway.call(op, request)
    }

    /// The answer to a call; one of another op is ignored.
    /// (`_now` as the other state machines take it: the next read is timed
    /// from the round's start, not from the answer.)
    pub fn on_result(&mut self, op: OpId, result: CallResult, _now: DateTime<Utc>) -> Vec<Effect> {
        let Some(out) = self.out.filter(|o| o.op == op) else {
            return Vec::new();
        };
        self.out = None;
        let mut fx = Vec::new();
        let read = match out.step {
            Step::Snapshot => snapshot::stored(&result).map(|s| {
                self.start = s.map_or(Start::Done, Start::Waiting);
                fx.push(Effect::Call(self.send(Step::Marker)));
            }),
            Step::Marker => log::marker_revision(&result).map(|marker| {
                self.marker = self.marker.max(marker);
                if self.marker > self.after {
                    fx.push(Effect::Call(self.send(Step::Page)));
                } else {
                    self.hand_on_snapshot(&mut fx);
                    self.caught_up = true;
                }
            }),
            Step::Page => log::page(&result).map(|page| {
                if page.unreadable > 0 {
                    fx.push(Effect::Unreadable(page.unreadable));
                }
                let after = self.after;
                let partial = std::mem::take(&mut self.partial);
                let last = page.seen.last().map(|(_, r)| *r);
                match last {
                    // Events share a revision when one commit made them,
                    // and a page may end inside one: the next page starts
                    // again at its revision and skips what was handed on.
                    // (A page is larger than a commit, so `r > after + 1`
                    // and reading moves on.)
                    Some(r) if page.more => {
                        self.after = after.max(r - 1);
                        self.partial = page
                            .seen
                            .iter()
                            .filter(|(_, rev)| *rev == r)
                            .map(|(key, _)| key.clone())
                            .collect();
                    }
                    _ => {
                        // Everything up to the revision read at is handed on.
                        self.after = after.max(page.revision);
                        self.marker = self.marker.max(page.revision);
                    }
                }
                // A page that ends before the snapshot's revision holds
                // nothing after it: `later` is empty then.
                let (events, later): (Vec<Logged>, Vec<Logged>) = page
                    .events
                    .into_iter()
                    .filter(|e| !(e.revision == after + 1 && partial.contains(&e.key)))
                    .partition(|e| self.before_snapshot(e.revision));
                if !events.is_empty() {
                    fx.push(Effect::Events(events));
                }
                if self.after >= self.snapshot_position().unwrap_or(0) {
                    self.hand_on_snapshot(&mut fx);
                }
                if !later.is_empty() {
                    fx.push(Effect::Events(later));
                }
                if page.more {
                    fx.push(Effect::Call(self.send(Step::Page)));
                } else {
                    self.caught_up = true;
                }
            }),
        };
        self.failing = read.is_err();
        if let (Err(Failure::Malformed(_)), Step::Snapshot) = (&read, out.step) {
            // A snapshot that cannot be read is as good as none: the log is
            // read whole all the same, and the failure said.
            self.start = Start::Done;
        }
        if let Err(failure) = read {
            fx.push(Effect::Failed(failure));
        }
        if self.out.is_none() {
            // Less a tenth: a tick that fires a little early still reads.
            self.next_at = self.round_started + self.period - self.period / 10;
        }
        fx
    }
}

impl Feed {
    fn snapshot_position(&self) -> Option<i64> {
        match &self.start {
            Start::Waiting(s) => Some(s.position),
            _ => None,
        }
    }

    /// Whether an event of `revision` comes before the snapshot is handed
    /// on (always, when there is none waiting).
    fn before_snapshot(&self, revision: i64) -> bool {
        self.snapshot_position().is_none_or(|p| revision <= p)
    }

    fn hand_on_snapshot(&mut self, fx: &mut Vec<Effect>) {
        if let Start::Waiting(s) = std::mem::replace(&mut self.start, Start::Done) {
            fx.push(Effect::Snapshot(s));
        }
    }
}

#[cfg(test)]
mod tests;
