//! Cluster mode: a delivery's new events are committed to etcd's event log
//! before the `202` (docs/cluster.md). The shared-data dedupe stays in
//! front as a fast path for this replica's replays; etcd decides.
//!
//! The filter's stream is paused while etcd answers. The glue makes the
//! call from the stream before it is answered, so the answer reaches it,
//! and hands it to [`Intake::on_commit`]:
//! - every event created (or recorded before, by any replica): `202`;
//! - an event recorded before with another payload: `409`;
//! - etcd failing, slow or without a leader: `503` with `Retry-After`, and
//!   what this request recorded in shared data is forgotten, so the
//!   sender's retry is processed in full. Nothing is both refused and kept.

use super::accept::{accepted, conflict, ItemAnswer, JudgedItems};
use super::*;
use crate::callout::{CallResult, HttpCall};
use crate::etcd::config::ClusterSettings;
use crate::etcd::log::{self, Committed, Entry, Record};
use crate::etcd::{retention, token};

/// What a delivery's body leads to.
#[derive(Debug)]
pub enum BodyStep {
    Respond(Response),
    /// Cluster mode: call etcd from the stream, then [`Intake::on_commit`].
    Commit(Commit),
}

impl From<Response> for BodyStep {
    fn from(r: Response) -> Self {
        BodyStep::Respond(r)
    }
}

impl Handled<BodyStep> {
    /// The answer, when it is ready (always outside cluster mode), or the
    /// commit to make first.
    pub fn ready(self) -> Result<Handled<Response>, Box<Commit>> {
        let Handled {
            value,
            counters,
            notes,
        } = self;
        match value {
            BodyStep::Respond(r) => Ok(Handled {
                value: r,
                counters,
                notes,
            }),
            BodyStep::Commit(c) => Err(Box::new(c)),
        }
    }
}

/// A delivery waiting for etcd.
#[derive(Debug)]
pub struct Commit {
    pub call: HttpCall,
    pub pending: Pending,
}

/// What the answer to a commit is judged with. Opaque to the glue.
#[derive(Debug)]
pub struct Pending {
    source: Source,
    answers: Vec<ItemAnswer>,
    /// The events committed, with the index of each one's answer.
    events: Vec<(IncidentEvent, usize)>,
    entries: Vec<Entry>,
    /// Shared-data dedupe keys this request added: forgotten unless the
    /// commit holds.
    added: Vec<String>,
    /// Share slots taken: given back unless the commit holds.
    slots: u32,
}

impl Intake<'_> {
    /// The commit of a delivery's new events (`judged.to_queue`, their
    /// slots taken), in place of queueing them; `judged.answers` is what
    /// each item is answered if the commit holds.
    pub(super) fn commit(
        &self,
        cluster: &ClusterSettings,
        source: Source,
        judged: JudgedItems,
        delivery_id: Option<&str>,
        added: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<Commit, Problem> {
        let JudgedItems {
            answers, to_queue, ..
        } = judged;
        let slots = u32::try_from(to_queue.iter().filter(|n| n.slot).count()).unwrap_or(0);
        if to_queue.len() > log::MAX_BATCH {
            self.undo(source, &added, slots);
            return Err(Problem::new(
                413,
                format!(
                    "this delivery carries {} new events; in cluster mode at most {} are \
                     accepted at once (set the tool's batch size, e.g. Alertmanager's \
                     max_alerts, to at most that)",
                    to_queue.len(),
                    log::MAX_BATCH
                ),
            ));
        }
        // What the service got from etcd for the filters: the lease the
        // entries go on (so they leave after the dedupe window) and, with
        // etcd's auth on, the token. Without them nothing is put.
        let lease = retention::current(self.store, now);
        // `Some(None)`: etcd's auth is on and there is no token yet.
        let token = cluster.auth.as_ref().map(|_| token::current(self.store));
        let (Some(lease), None | Some(Some(_))) = (lease, &token) else {
            self.undo(source, &added, slots);
            return Err(Problem::new(
                503,
                "this replica has no lease or token from etcd yet; retry shortly",
            )
            .with_header("retry-after", "1"));
        };
        let received_ms = now.timestamp_millis();
        let mut events = Vec::with_capacity(to_queue.len());
        let mut entries = Vec::with_capacity(to_queue.len());
        for n in to_queue {
            let message = serde_json::to_value(QueuedEvent {
                event: n.event.clone(),
                received_ms,
                delivery_id: delivery_id.map(str::to_owned),
                slot: n.slot,
            })
            .unwrap_or_default();
            entries.push(Entry {
                idempotency_key: n.key,
                record: Record {
                    fingerprint: hex::encode(&n.fingerprint),
                    message,
                },
            });
            events.push((n.event, n.answer));
        }
        let mut call = cluster
            .gateway
            .call(0, log::commit(&cluster.keys, &entries, lease));
        if let Some(Some(t)) = &token {
            token::authorize(&mut call, t);
        }
        Ok(Commit {
            call,
            pending: Pending {
                source,
                answers,
                events,
                entries,
                added,
                slots,
            },
        })
    }

    /// The answer to a delivery's commit.
    pub fn on_commit(&self, pending: Pending, result: &CallResult) -> Handled<Response> {
        let Pending {
            source,
            mut answers,
            events,
            entries,
            added,
            slots,
        } = pending;
        let outcomes = match log::committed(&entries, result) {
            Ok(o) => o,
            Err(failure) => {
                self.undo(source, &added, slots);
                let p = Problem::new(
                    503,
                    format!("the event log (etcd) did not record it: {failure}; retry shortly"),
                )
                .with_header("retry-after", "1");
                let line = format!("{source} delivery refused (503): etcd: {failure}");
                return Handled::new(Response::problem(&p), vec![Counter::Unavailable])
                    .note(NoteLevel::Warn, line);
            }
        };
        let mut counters = Vec::with_capacity(outcomes.len());
        let mut conflicting = None;
        let mut replayed_slots = 0;
        for ((ev, at), outcome) in events.iter().zip(outcomes) {
            match outcome {
                Committed::Created { .. } => counters.push(Counter::Accepted),
                Committed::Replay { .. } => {
                    // Another replica recorded it first: the first answer.
                    counters.push(Counter::Replayed);
                    if let Some(a) = answers.get_mut(*at) {
                        *a = ItemAnswer::event(ev, FirstAnswer::Accepted, true);
                    }
                    replayed_slots += 1;
                }
                Committed::Conflict => {
                    conflicting.get_or_insert(ev);
                }
            }
        }
        // A replay opens nothing here: its slot goes back.
        let _ = quota::give_back(self.store, source, replayed_slots.min(slots));
        if let Some(ev) = conflicting {
            // The others are recorded and stay so: a retry replays them.
            counters.push(Counter::Conflict);
            counters.push(Counter::Refused(409));
            return Handled::new(Response::problem(&conflict(ev)), counters);
        }
        Handled::new(accepted(&answers), counters)
    }

    /// Forgets what a request recorded in shared data and gives its slots
    /// back: nothing of it is kept.
    fn undo(&self, source: Source, added: &[String], slots: u32) {
        let dedupe = Dedupe::new(self.config.intake.dedupe);
        for key in added {
            let _ = dedupe.remove(self.store, key);
        }
        let _ = quota::give_back(self.store, source, slots);
    }
}
