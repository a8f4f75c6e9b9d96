//! A webhook body, once routed: authenticate, parse, dedupe each item
//! against the shared store, take the source's share, queue, answer.

use super::*;

/// One item of a 202: the canonical contract's accepted body, or an ignored
/// item's `{correlationId, status, reason}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ItemAnswer {
    correlation_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    routing_mode: Option<RoutingMode>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Seen before: this answer repeats the first one.
    #[serde(skip)]
    replayed: bool,
}

impl ItemAnswer {
    pub(super) fn event(ev: &IncidentEvent, answer: FirstAnswer, replayed: bool) -> Self {
        Self {
            correlation_id: ev.correlation_id.to_string(),
            routing_mode: Some(ev.routing_mode),
            status: match answer {
                FirstAnswer::Accepted => "PROCESSING",
                FirstAnswer::Ignored => "IGNORED",
            },
            status_url: Some(status_url(ev.source, ev.correlation_id.as_str())),
            reason: None,
            replayed,
        }
    }

    fn ignored(id: String, reason: String, replayed: bool) -> Self {
        Self {
            correlation_id: id,
            routing_mode: None,
            status: "IGNORED",
            status_url: None,
            reason: Some(reason),
            replayed,
        }
    }

    /// What `item` was first answered, for a delivery seen before.
    fn first(item: &Item) -> Self {
        match item {
            Item::Event(ev) => Self::event(ev, FirstAnswer::Accepted, true),
            Item::Ignored { id, reason } => Self::ignored(id.clone(), reason.clone(), true),
        }
    }
}

/// The 202 for a payload's items (see the module doc for the shapes).
pub(super) fn accepted(answers: &[ItemAnswer]) -> Response {
    #[derive(Serialize)]
    struct Items<'a> {
        items: &'a [ItemAnswer],
    }
    let (body, replayed) = match answers {
        [one] => (serde_json::to_vec(one), one.replayed),
        many => (
            serde_json::to_vec(&Items { items: many }),
            !many.is_empty() && many.iter().all(|a| a.replayed),
        ),
    };
    let mut r = Response::json(202, body.unwrap_or_default());
    if replayed {
        r.headers.push(("idempotent-replayed", "true".into()));
    }
    if let [one] = answers {
        if !one.replayed && one.status == "PROCESSING" {
            if let Some(url) = &one.status_url {
                r.headers.push(("location", url.clone()));
            }
        }
    }
    r
}

/// Why a delivery's events could not all be given room.
enum Refusal {
    /// Its source's share is used up (the 429).
    Full(Problem),
    Store(StoreError),
}

/// The 429 for an activation its source has no room for. A 429 rather
/// than a 503: Envoy and Genesys are fine, it is this sender that has too
/// much open; and every tool retries a 429 with `Retry-After`.
fn share_full(source: Source, ev: &IncidentEvent, limit: u32, count: quota::Count) -> Problem {
    Problem::new(
        429,
        format!(
            "the {source} route already has {} incidents open or on their way (its share, \
             sources.{source}.max_open_incidents, is {limit}): incident {} cannot be opened until \
             some of them resolve or expire; nothing of this delivery was recorded",
            count.open.saturating_add(count.pending),
            ev.correlation_id
        ),
    )
    .with_error(
        "correlationId",
        format!("would be one more open incident than the {source} route's share ({limit})"),
    )
    .with_header("retry-after", quota::RETRY_AFTER_SECONDS.to_string())
}

/// The 409 for an event whose key was first used with another payload.
pub(super) fn conflict(ev: &IncidentEvent) -> Problem {
    if event::sender_keyed(ev.source) {
        Problem::new(
            409,
            format!(
                "{} {} was already accepted with a different payload",
                ev.correlation_id, ev.routing_mode
            ),
        )
        .with_error(
            "correlationId",
            "already used with a different payload for this routingMode",
        )
    } else {
        Problem::new(
            409,
            format!(
                "{} {} at {} was already accepted with a different payload",
                ev.correlation_id,
                ev.routing_mode,
                crate::rfc3339::text(ev.timestamp)
            ),
        )
        .with_error(
            "correlationId",
            "already used with a different payload for this routingMode and event time",
        )
    }
}

/// What tells two payloads of one event key apart: every field of the
/// event — the same equality as its JSON, without serialising it, and in
/// half the bytes to hash.
fn event_fingerprint(ev: &IncidentEvent) -> Fingerprint {
    let mut f = FingerprintBuilder::default();
    f.field(ev.source.as_str().as_bytes())
        .field(ev.correlation_id.as_str().as_bytes())
        .field(ev.incident_type.as_str().as_bytes())
        .field(ev.routing_mode.as_str().as_bytes());
    let queues = u32::try_from(ev.target_queue_ids.len()).unwrap_or(u32::MAX);
    f.field(&queues.to_le_bytes());
    for q in &ev.target_queue_ids {
        f.field(q.as_str().as_bytes());
    }
    f.field(&ev.timestamp.timestamp().to_le_bytes())
        .field(&ev.timestamp.timestamp_subsec_nanos().to_le_bytes())
        .field(&ev.ttl_seconds.to_le_bytes())
        .field(&[ev.priority]);
    match &ev.group {
        Some(g) => f.field(b"group").field(g.as_str().as_bytes()),
        None => f.field(b""),
    };
    f.finish()
}

/// Why a delivery's handling stops before its 202.
enum Stop {
    /// The answer is ready: a replay of the whole delivery, or a conflict.
    Answer(Response),
    /// Over the source's share: 429, nothing kept.
    OverShare(Problem),
    /// The dedupe store failed: 503, nothing kept.
    Store(StoreError),
    /// The queue refused an event: 503; what was queued stays recorded.
    Unavailable(StoreError),
}

/// A new event of a delivery, on its way to the queue (or, in cluster
/// mode, to etcd), with what judging it found.
pub(super) struct NewEvent {
    pub(super) event: IncidentEvent,
    /// Its dedupe key: forgotten if it cannot be queued.
    pub(super) key: String,
    pub(super) fingerprint: Fingerprint,
    /// The index of its answer in the delivery's answers.
    pub(super) answer: usize,
    /// It took a slot of its source's share ([`Intake::take_slots`]).
    pub(super) slot: bool,
}

/// What judging a delivery's items found.
pub(super) struct JudgedItems {
    pub(super) answers: Vec<ItemAnswer>,
    /// New events, in payload order.
    pub(super) to_queue: Vec<NewEvent>,
    /// Open incidents a replayed activation renews.
    renewals: Vec<IncidentKey>,
}

/// The delivery's id, as queued with its events, and its dedupe key when
/// this request recorded it (to forget on a failure).
struct Delivered<'a> {
    delivery_id: Option<&'a str>,
    delivery_key: Option<String>,
}

/// A body's digest, computed at most once: only a delivery id or an
/// ignored item needs it.
struct BodyDigest<'a> {
    body: &'a [u8],
    digest: OnceCell<Fingerprint>,
}

impl<'a> BodyDigest<'a> {
    fn new(body: &'a [u8]) -> Self {
        Self {
            body,
            digest: OnceCell::new(),
        }
    }

    fn digest(&self) -> Fingerprint {
        *self.digest.get_or_init(|| digest(self.body))
    }

    fn hex(&self) -> String {
        hex::encode(&self.digest())
    }
}

/// Records dedupe keys for one request, remembering which it added so a
/// refusal or failure can forget them again.
struct Recorder<'a> {
    store: &'a dyn SharedStore,
    dedupe: Dedupe,
    now: i64,
    counters: Vec<Counter>,
    added: Vec<String>,
    /// Log lines of an accepted delivery (a refused one logs its refusal).
    notes: Vec<Note>,
}

impl Recorder<'_> {
    fn record(
        &mut self,
        key: &str,
        fingerprint: &Fingerprint,
        answer: FirstAnswer,
    ) -> Result<Outcome, StoreError> {
        let d = self
            .dedupe
            .check_and_insert(self.store, key, fingerprint, answer, self.now)?;
        if d.evicted > 0 {
            self.counters.push(Counter::DedupeEvicted(d.evicted));
        }
        if d.retries > 0 {
            self.counters.push(Counter::CasRetries(d.retries));
        }
        if d.outcome == Outcome::New {
            self.added.push(key.to_owned());
        }
        Ok(d.outcome)
    }

    /// Forgets `keys`. A failure here only means a retry is answered as a
    /// replay of what it repeats; nothing better can be done about it.
    fn forget<'k>(&self, keys: impl IntoIterator<Item = &'k String>) {
        for k in keys {
            let _ = self.dedupe.remove(self.store, k);
        }
    }

    /// Forgets everything this request added.
    fn forget_all(&self) {
        self.forget(&self.added);
    }
}

impl Intake<'_> {
    /// Handles a whole webhook body: authenticate, parse, dedupe, queue.
    pub fn on_body(
        &self,
        source: Source,
        headers: &[(String, String)],
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Handled<BodyStep> {
        if body.len() > self.config.intake.max_body_bytes {
            return refused(&self.too_large());
        }
        let cfg = self.config.sources.get(source);
        let delivery = Delivery { headers, body, now };
        if let Err(p) = cfg.auth().verify(source, &delivery) {
            // The detail names a header and a fixed reason, never a value.
            let line = format!("{source} delivery refused (401): {}", p.detail);
            return refused(&p).note_repeated(Repeated::Unauthenticated(source), line);
        }
        match sources::parse(source, &delivery, cfg) {
            Ok(parsed) => self.accept(source, parsed, body, now),
            Err(p) => refused(&p),
        }
    }

    /// Dedupes, queues and answers a parsed delivery (see the module doc),
    /// in steps: the delivery id, each item, the source's share, the queue.
    fn accept(
        &self,
        source: Source,
        parsed: Parsed,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Handled<BodyStep> {
        let mut rec = Recorder {
            store: self.store,
            dedupe: Dedupe::new(self.config.intake.dedupe),
            now: now.timestamp(),
            counters: Vec::with_capacity(parsed.items.len() + 2),
            added: Vec::new(),
            notes: Vec::new(),
        };
        let body = BodyDigest::new(body);
        let Parsed { items, delivery_id } = parsed;
        let steps = self
            .record_delivery(source, delivery_id.as_deref(), &items, &body, &mut rec)
            .and_then(|delivery_key| {
                let mut judged = self.judge_items(source, items, &body, now, &mut rec)?;
                judged.to_queue = self
                    .take_slots(source, std::mem::take(&mut judged.to_queue))
                    .map_err(|r| match r {
                        // Nothing of this delivery is kept: the sender's retry,
                        // once there is room, is processed in full.
                        Refusal::Full(p) => Stop::OverShare(p),
                        Refusal::Store(e) => Stop::Store(e),
                    })?;
                let renewals = std::mem::take(&mut judged.renewals);
                if let (Some(cluster), false) = (&self.config.cluster, judged.to_queue.is_empty()) {
                    // Cluster mode: recorded once etcd says so.
                    self.queue_renewals(renewals, now, &mut rec);
                    let added = rec.added.clone();
                    return self
                        .commit(cluster, source, judged, delivery_id.as_deref(), added, now)
                        .map(BodyStep::Commit)
                        .map_err(|p| Stop::Answer(Response::problem(&p)));
                }
                let queued = Delivered {
                    delivery_id: delivery_id.as_deref(),
                    delivery_key,
                };
                self.enqueue(source, judged.to_queue, &queued, now, &mut rec)?;
                self.queue_renewals(renewals, now, &mut rec);
                Ok(BodyStep::Respond(accepted(&judged.answers)))
            });
        match steps {
            Ok(step) => Handled {
                value: step,
                counters: rec.counters,
                notes: rec.notes,
            },
            Err(stop) => self.stopped(source, rec, stop).map(BodyStep::Respond),
        }
    }

    /// A delivery id already seen with this body: the whole delivery is a
    /// replay, answered as it was. Returns the id's dedupe key when new.
    fn record_delivery(
        &self,
        source: Source,
        delivery_id: Option<&str>,
        items: &[Item],
        body: &BodyDigest<'_>,
        rec: &mut Recorder<'_>,
    ) -> Result<Option<String>, Stop> {
        let Some(id) = delivery_id else {
            return Ok(None);
        };
        let key = event::delivery_key(source, id);
        match rec.record(&key, &body.digest(), FirstAnswer::Accepted) {
            Ok(Outcome::New) => Ok(Some(key)),
            Ok(Outcome::Replay(_)) => {
                rec.counters.push(Counter::Replayed);
                let answers: Vec<ItemAnswer> = items.iter().map(ItemAnswer::first).collect();
                Err(Stop::Answer(accepted(&answers)))
            }
            Ok(Outcome::Conflict) => {
                // No signature covers PagerDuty's or Jira's delivery id, so
                // whoever saw one can claim it first with another body
                // (RELIABILITY.md, hostile senders, #7). A delivery id only marks a replay
                // of the same body; another body is judged by its events'
                // own keys, like a delivery with no id.
                rec.counters.push(Counter::DeliveryIdReused);
                rec.notes.push(Note {
                    level: NoteLevel::Info,
                    message: format!(
                        "{source} delivery id {} was seen before with another body; \
                         its events are judged on their own",
                        text::quoted(id)
                    ),
                    repeated: Some(Repeated::DeliveryIdReused(source)),
                });
                Ok(None)
            }
            Err(e) => Err(Stop::Store(e)),
        }
    }

    /// Each item against the dedupe store: new events to queue, replays
    /// answered as before (a replayed activation renews its incident),
    /// ignored items noted; a conflicting event refuses the whole payload.
    fn judge_items(
        &self,
        source: Source,
        items: Vec<Item>,
        body: &BodyDigest<'_>,
        now: DateTime<Utc>,
        rec: &mut Recorder<'_>,
    ) -> Result<JudgedItems, Stop> {
        let mut out = JudgedItems {
            answers: Vec::with_capacity(items.len()),
            to_queue: Vec::new(),
            renewals: Vec::new(),
        };
        for item in items {
            match item {
                Item::Event(ev) => {
                    let key = ev.idempotency_key();
                    let fingerprint = event_fingerprint(&ev);
                    match rec.record(&key, &fingerprint, FirstAnswer::Accepted) {
                        Ok(Outcome::New) => {
                            out.answers
                                .push(ItemAnswer::event(&ev, FirstAnswer::Accepted, false));
                            out.to_queue.push(NewEvent {
                                event: ev,
                                key,
                                fingerprint,
                                answer: out.answers.len() - 1,
                                slot: false,
                            });
                        }
                        Ok(Outcome::Replay(first)) => {
                            rec.counters.push(Counter::Replayed);
                            out.answers.push(ItemAnswer::event(&ev, first, true));
                            if ev.routing_mode == RoutingMode::Active
                                && first == FirstAnswer::Accepted
                            {
                                out.renewals.push(ev.incident_key());
                            }
                        }
                        Ok(Outcome::Conflict) => {
                            // Refuse the whole payload: forget its other items
                            // so a corrected retry is processed in full.
                            rec.forget_all();
                            rec.counters.push(Counter::Conflict);
                            return Err(Stop::Answer(Response::problem(&conflict(&ev))));
                        }
                        Err(e) => return Err(Stop::Store(e)),
                    }
                }
                Item::Ignored { id, reason } => {
                    let replayed = self.record_ignored(source, &id, &reason, body, now, rec)?;
                    out.answers.push(ItemAnswer::ignored(id, reason, replayed));
                }
            }
        }
        Ok(out)
    }

    /// An ignored item: recorded (so the same delivery gets the same
    /// answer), noted for the status endpoint, logged. Returns whether it
    /// was a replay.
    fn record_ignored(
        &self,
        source: Source,
        id: &str,
        reason: &str,
        body: &BodyDigest<'_>,
        now: DateTime<Utc>,
        rec: &mut Recorder<'_>,
    ) -> Result<bool, Stop> {
        let key = event::ignored_key(source, id, &body.hex());
        // The body digest is in the key, so this can only be new or a
        // replay of the same delivery.
        let replayed = match rec.record(&key, &body.digest(), FirstAnswer::Ignored) {
            Ok(Outcome::New) => {
                rec.counters.push(Counter::Ignored);
                // For `GET /emr/status/{id}`: why it was ignored.
                if let Err(e) = ignored::note(self.store, source, id, reason, now) {
                    rec.notes.push(Note {
                        level: NoteLevel::Warn,
                        message: format!(
                            "{source} {id} ignored, and the note of it for the status endpoint was not written: {e:?}"
                        ),
                        repeated: None,
                    });
                }
                false
            }
            Ok(Outcome::Replay(_) | Outcome::Conflict) => {
                rec.counters.push(Counter::Replayed);
                true
            }
            Err(e) => return Err(Stop::Store(e)),
        };
        rec.notes.push(Note {
            level: NoteLevel::Info,
            message: format!(
                "{source} {id} ignored{}: {reason}",
                if replayed { " (replayed)" } else { "" }
            ),
            repeated: None,
        });
        Ok(replayed)
    }

    /// Queues the new events in order. One that cannot be queued is
    /// forgotten with those after it and the delivery id, so the sender's
    /// retry is processed rather than answered as a replay of something
    /// that never happened, and their slots are given back. Events already
    /// queued stay recorded: the retry replays them.
    fn enqueue(
        &self,
        source: Source,
        to_queue: Vec<NewEvent>,
        queued: &Delivered<'_>,
        now: DateTime<Utc>,
        rec: &mut Recorder<'_>,
    ) -> Result<(), Stop> {
        let received_ms = now.timestamp_millis();
        let mut queue = to_queue.into_iter();
        while let Some(NewEvent {
            event, key, slot, ..
        }) = queue.next()
        {
            let message = QueuedEvent {
                received_ms,
                delivery_id: queued.delivery_id.map(str::to_owned),
                event,
                slot,
            };
            if let Err(e) = self.send(&message, &mut rec.counters) {
                let rest: Vec<(String, bool)> = queue.map(|n| (n.key, n.slot)).collect();
                let unused = u32::from(slot)
                    + u32::try_from(rest.iter().filter(|(_, s)| *s).count()).unwrap_or(0);
                let _ = quota::give_back(self.store, source, unused);
                let keys: Vec<String> = rest.into_iter().map(|(k, _)| k).collect();
                rec.forget(
                    std::iter::once(&key)
                        .chain(&keys)
                        .chain(&queued.delivery_key),
                );
                return Err(Stop::Unavailable(e));
            }
            rec.counters.push(Counter::Accepted);
        }
        Ok(())
    }

    /// A re-sent activation says the incident is still open: its ttl runs
    /// again. Best effort: the replay's answer does not depend on it.
    fn queue_renewals(
        &self,
        renewals: Vec<IncidentKey>,
        now: DateTime<Utc>,
        rec: &mut Recorder<'_>,
    ) {
        for incident in renewals {
            let source = incident.source;
            let message = ControlMessage {
                control: Control::Renew {
                    incident,
                    received_ms: now.timestamp_millis(),
                },
            };
            if let Err(e) = self.send(&message, &mut rec.counters) {
                rec.counters.push(Counter::RenewalDropped);
                rec.notes.push(Note {
                    level: NoteLevel::Warn,
                    message: format!("a replayed activation's renewal was not queued: {e:?}"),
                    repeated: Some(Repeated::RenewalDropped(source)),
                });
            }
        }
    }

    /// The answer of a delivery whose handling stopped before its 202.
    fn stopped(&self, source: Source, rec: Recorder<'_>, stop: Stop) -> Handled<Response> {
        match stop {
            Stop::Answer(r) => Handled::new(r, rec.counters),
            Stop::OverShare(p) => {
                rec.forget_all();
                let mut counters = rec.counters;
                counters.push(Counter::Refused(p.status));
                let line = format!("{source} delivery refused (429): {}", p.detail);
                Handled::new(Response::problem(&p), counters)
                    .note_repeated(Repeated::OverShare(source), line)
            }
            Stop::Store(e) => self.failed(rec, &e),
            Stop::Unavailable(e) => {
                let mut out = self.unavailable(&e);
                out.counters.extend(rec.counters);
                out
            }
        }
    }

    /// Takes a slot of the source's share ([`crate::quota`]) for every
    /// activation, before anything is queued: an incident the ledger has no
    /// room for is refused here (429), never answered 202 and then failed.
    /// An activation of an incident already open takes no room, and needs
    /// none when the share is used up. On a refusal, the slots this
    /// delivery took are given back.
    fn take_slots(
        &self,
        source: Source,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, Refusal> {
        let limit = self.config.shares.limit(source);
        let mut taken = 0u32;
        for n in &mut events {
            if n.event.routing_mode != RoutingMode::Active {
                continue;
            }
            let refusal = match quota::take(self.store, source, limit) {
                Ok(quota::Taken::Yes) => {
                    taken += 1;
                    n.slot = true;
                    continue;
                }
                Ok(quota::Taken::Full(count)) => {
                    if self.is_open(source, &n.event) {
                        continue;
                    }
                    Refusal::Full(share_full(source, &n.event, limit, count))
                }
                Err(e) => Refusal::Store(e),
            };
            let _ = quota::give_back(self.store, source, taken);
            return Err(refusal);
        }
        Ok(events)
    }

    /// Whether the status board shows `ev`'s incident open.
    fn is_open(&self, source: Source, ev: &IncidentEvent) -> bool {
        matches!(
            status::find(self.store, ev.correlation_id.as_str(), Some(source)),
            Ok(status::Found::One(v)) if v.get("state").and_then(serde_json::Value::as_str) == Some("OPEN")
        )
    }

    /// The 503 for a store failure while recording: forget what this
    /// request recorded so the sender's retry starts afresh.
    fn failed(&self, rec: Recorder<'_>, e: &StoreError) -> Handled<Response> {
        rec.forget_all();
        let mut out = self.unavailable(e);
        out.counters.extend(rec.counters);
        out
    }
}
