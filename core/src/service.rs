//! The singleton service's decisions: it drains the event queue into the
//! incident ledger, drives Genesys through the reconciler (and its
//! watchdog), polls the ITSM tools for lost resolutions, expires incidents,
//! and publishes status for the filters.
//!
//! [`Service`] owns the ledger, the status board, the reconciler, the
//! poller and the cadences. Like [`crate::intake::Intake`] for the filter,
//! it is given the host's shared store and the time, and hands back what the
//! glue must do ([`Out`]): calls to dispatch, metric samples, log lines. The
//! glue (`src/service.rs`) keeps only what needs the host: dequeueing,
//! dispatching with its token map, reading answers, and writing metrics and
//! logs.
//!
//! Both state machines (the reconciler and the ITSM poller) hand out calls
//! with their own op ids; a [`Callout`] says which one an answer goes to.
//!
//! At start the reconciler recovers first (restart safety, see
//! [`crate::recovery`]): nothing is written to Genesys before the data
//! table's rows have been read back into the ledger.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::callout::{CallResult, HttpCall, OpId};
use crate::config::Config;
use crate::event::{Control, GroupId, IncidentKey, QueueMessage, QueuedEvent};
use crate::itsm::{PollChange, PollChanged, PollEffect, PollMetric, Poller};
use crate::ledger::{Applied, Ledger, Settle};
use crate::reconcile::{Effect, Metric as ReconcileMetric, Reconciler};
use crate::rfc3339;
use crate::status::{self, Board};
use crate::store::{ensure_key, SharedStore};
use crate::{ignored, liveness, quota};

/// Events taken off the queue and recorded.
pub const EVENTS_METRIC: &str = "emr.service.events";
/// Every message taken off the queue (events, controls, unreadable ones).
/// The filters read it, with `emr.intake.queued`, for the queue's depth:
/// one name for the writer and the readers, or the backlog gate would
/// refuse every event once the two drifted apart.
pub const MESSAGES_METRIC: &str = "emr.service.messages";
/// Queue messages the service could not read; counted as taken off too.
pub const DECODE_ERRORS_METRIC: &str = "emr.service.decode_errors";
/// The service's own counters, defined by the glue at start so that every
/// one is on `/stats` (at 0) before anything happens.
pub const COUNTERS: [&str; 7] = [
    MESSAGES_METRIC,
    EVENTS_METRIC,
    DECODE_ERRORS_METRIC,
    "emr.service.stale_events",
    "emr.service.expired",
    "emr.service.ledger_full",
    "emr.service.resumes",
];
/// Gauge: incidents open now.
pub const OPEN_GAUGE: &str = "emr.service.open_incidents";
/// How often the glue ticks the service.
pub const TICK_MS: i64 = 100;
/// Pruning walks the whole ledger: once a second is plenty.
const PRUNE_EVERY_MS: i64 = 1000;
/// Status freshness under load. Short, so that each publish is short: the
/// buckets written grow with the time between publishes, and a long publish
/// stalls the requests behind it when the service shares a worker's core.
const STATUS_EVERY_MS: i64 = 5;
/// Buckets of a removal sweep written per publish, for the same reason: a
/// sweep under a flood touches every bucket.
const SWEEP_PER_PUBLISH: usize = 64;
/// The group used when no `genesys` section maps incidents to groups.
const UNMAPPED_GROUP: &str = "default";
/// Where the Genesys token is mirrored, so a reloaded VM need not log in again.
pub const TOKEN_KEY: &str = "emr.genesys.token";

/// Which state machine a callout belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callout {
    Genesys(OpId),
    Itsm(OpId),
    /// Cluster mode: the leader election's calls to etcd.
    Election(OpId),
    /// Cluster mode: the event log's reads.
    Feed(OpId),
    /// Cluster mode: a control message (a resume, a renewal) put in the log.
    Outbox(OpId),
    /// Cluster mode: a lease for the log's entries.
    Lease(OpId),
    /// Cluster mode: the leader's snapshot written.
    Snapshot(OpId),
    /// Cluster mode with etcd's auth: an authentication.
    Auth(OpId),
}

/// What one metric sample does to its stat, named by the core as
/// documented (`emr.genesys.failures.forbidden`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    Count(u64),
    Histogram(u64),
    Gauge(u64),
}

/// How loud a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Audit lines: one JSON line per decision, never a secret.
    Info,
    Warn,
    /// Something an operator must act on.
    Error,
}

/// What the glue must do after a call into the service.
#[derive(Debug, Default)]
pub struct Out {
    /// Calls to dispatch; one that cannot be dispatched goes back through
    /// [`Service::dispatch_failed`].
    pub calls: Vec<(Callout, HttpCall)>,
    pub samples: Vec<(&'static str, Sample)>,
    pub logs: Vec<(Level, String)>,
}

impl Out {
    fn log(&mut self, level: Level, line: String) {
        self.logs.push((level, line));
    }

    fn audit(&mut self, line: serde_json::Value) {
        self.logs.push((Level::Info, line.to_string()));
    }

    fn count(&mut self, name: &'static str, n: u64) {
        if n > 0 {
            self.samples.push((name, Sample::Count(n)));
        }
    }

    fn reconcile(&mut self, m: ReconcileMetric) {
        let sample = match m {
            ReconcileMetric::CalloutLatencyMs(ms) => Sample::Histogram(ms),
            ReconcileMetric::ContendedGroups(n) => Sample::Gauge(n),
            _ => Sample::Count(1),
        };
        self.samples.push((m.name(), sample));
    }

    fn poll(&mut self, m: PollMetric) {
        let sample = match m {
            PollMetric::LatencyMs(ms) => Sample::Histogram(ms),
            _ => Sample::Count(1),
        };
        self.samples.push((m.name(), sample));
    }

    /// `result` of a store write, logged at error when it failed.
    fn check<T, E: std::fmt::Debug>(&mut self, result: Result<T, E>, what: &str) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.log(Level::Error, format!("emr-edge: cannot {what}: {e:?}"));
                None
            }
        }
    }
}

/// The reconciler, and whether it has started.
struct Genesys {
    reconciler: Reconciler,
    /// Recovery and the first poll wait for the first tick or batch: Envoy
    /// creates the main-thread root twice, and only the live one gets ticks
    /// and events.
    started: bool,
}

/// Where a batch of messages comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// This replica's filters, through the shared queue.
    Queue,
    /// Cluster mode: the event log, from any replica.
    Log,
}

/// What a queue batch did, counted once per batch.
#[derive(Debug, Default)]
struct Tally {
    events: u64,
    stale: u64,
    full: u64,
}

/// The service: see the module doc.
pub struct Service {
    ledger: Ledger,
    board: Board,
    config: Config,
    default_group: GroupId,
    genesys: Option<Genesys>,
    poller: Option<Poller>,
    /// Desired or observed state may have changed since the state view was
    /// published.
    state_dirty: bool,
    last_prune: DateTime<Utc>,
    last_expire: DateTime<Utc>,
    last_status: DateTime<Utc>,
    last_removals: DateTime<Utc>,
    last_state: DateTime<Utc>,
    last_beat: DateTime<Utc>,
    /// Cluster mode: the election and the event log's feed.
    cluster: Option<cluster::Cluster>,
    /// Whether an audit line per event is wanted (the glue's log level).
    audit_events: bool,
    /// The cluster's problem as last written to the health record.
    cluster_problem: Option<String>,
    /// The sources' shares of open incidents, as written for the filters.
    slots: quota::Book,
    /// The receipt time of the newest event recorded (ms), for the filters'
    /// `QUEUED` answers; and whether it changed since it was written.
    recorded_ms: i64,
    recorded_dirty: bool,
}

/// The service's tick for `config`, in ms: [`TICK_MS`], or cluster mode's
/// `poll_ms` when that is shorter, since the feed reads etcd at ticks.
pub fn tick_ms(config: &Config) -> i64 {
    config
        .cluster
        .as_ref()
        .map_or(TICK_MS, |c| c.poll.num_milliseconds().clamp(1, TICK_MS))
}

/// Creates every shared-data key the service and the filters use; safe to
/// repeat (a key that exists is left as it is).
pub fn create_keys(config: &Config, store: &dyn SharedStore) -> Result<(), String> {
    crate::dedupe::Dedupe::new(config.intake.dedupe)
        .create_keys(store)
        .map_err(|e| format!("cannot create dedupe keys: {e:?}"))?;
    status::create_keys(store).map_err(|e| format!("cannot create status keys: {e:?}"))?;
    ignored::create_keys(store)
        .map_err(|e| format!("cannot create the ignored-event keys: {e:?}"))?;
    ensure_key(store, liveness::HEALTH_KEY)
        .map_err(|e| format!("cannot create the health key: {e:?}"))?;
    ensure_key(store, liveness::READY_KEY)
        .map_err(|e| format!("cannot create the readiness key: {e:?}"))?;
    quota::create_keys(store).map_err(|e| format!("cannot create the share keys: {e:?}"))?;
    ensure_key(store, TOKEN_KEY).map_err(|e| format!("cannot create the token key: {e:?}"))
}

impl Service {
    /// The service for `config`, with the token a previous VM mirrored into
    /// `store`, if any.
    pub fn new(
        config: Config,
        store: &dyn SharedStore,
        now: DateTime<Utc>,
    ) -> Result<(Self, Out), String> {
        let mut out = Out::default();
        let default_group =
            GroupId::parse(UNMAPPED_GROUP).map_err(|e| format!("default group: {}", e.0))?;
        let genesys = config.genesys.as_ref().map(|settings| {
            let mut reconciler = Reconciler::new(settings.clone());
            if let Some(token) = store
                .get(TOKEN_KEY)
                .ok()
                .and_then(|v| v.value)
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                reconciler.import_token(token, now);
            }
            Genesys {
                reconciler,
                started: false,
            }
        });
        let poller = config.itsm.as_ref().map(|s| Poller::new(s.clone()));
        if let Some(open) = poller
            .as_ref()
            .map(Poller::insecure_tools)
            .filter(|t| !t.is_empty())
        {
            out.log(
                Level::Warn,
                format!(
                    "ITSM status APIs polled without a credential (insecure): {}",
                    open.join(", ")
                ),
            );
        }
        out.log(
            Level::Info,
            format!(
                "emr-edge service started ({})",
                if genesys.is_some() {
                    "Genesys configured"
                } else {
                    "no genesys section: recording only"
                }
            ),
        );
        if genesys.is_some() {
            // The gauge exists from the start: an alert on it needs no
            // "absent" case.
            out.reconcile(ReconcileMetric::ContendedGroups(0));
        }
        let cluster = config.cluster.as_ref().map(|s| {
            let window = i64::from(config.intake.dedupe.window_seconds);
            cluster::Cluster::new(s, window, now)
        });
        let service = Self {
            ledger: Ledger::new(config.retention),
            board: Board::default(),
            config,
            default_group,
            genesys,
            poller,
            state_dirty: true,
            last_prune: DateTime::<Utc>::MIN_UTC,
            last_expire: DateTime::<Utc>::MIN_UTC,
            last_status: DateTime::<Utc>::MIN_UTC,
            last_removals: DateTime::<Utc>::MIN_UTC,
            last_state: DateTime::<Utc>::MIN_UTC,
            last_beat: DateTime::<Utc>::MIN_UTC,
            cluster,
            audit_events: true,
            cluster_problem: None,
            slots: quota::Book::default(),
            recorded_ms: 0,
            recorded_dirty: false,
        };
        Ok((service, out))
    }

    /// A batch taken off the queue (`decode_errors` more could not be
    /// read). `audit_events`: whether an audit line per event is wanted (at
    /// `--log-level warn` it was a tenth of the service's cost per event,
    /// built and dropped).
    pub fn on_messages(
        &mut self,
        messages: Vec<QueueMessage>,
        decode_errors: u64,
        audit_events: bool,
        store: &dyn SharedStore,
        now: DateTime<Utc>,
    ) -> Out {
        let mut out = Out::default();
        self.audit_events = audit_events;
        let taken = u64::try_from(messages.len()).unwrap_or(u64::MAX);
        out.count(MESSAGES_METRIC, taken.saturating_add(decode_errors));
        self.take_messages(messages, decode_errors, Origin::Queue, now, &mut out);
        // One reconcile pass per batch: many events for a group coalesce.
        self.drive(now, &mut out);
        self.maintain(store, now, false, &mut out);
        out
    }

    /// Records a batch of messages, from the queue or (cluster mode) the
    /// event log.
    fn take_messages(
        &mut self,
        messages: Vec<QueueMessage>,
        decode_errors: u64,
        origin: Origin,
        now: DateTime<Utc>,
        out: &mut Out,
    ) {
        let mut tally = Tally::default();
        for message in messages {
            match message {
                QueueMessage::Event(q) => {
                    self.record(&q, self.audit_events, now, &mut tally, out);
                }
                // In cluster mode a control from this replica's filters goes
                // to the log first, and every replica applies it from there.
                QueueMessage::Control(c) => match (origin, &mut self.cluster) {
                    (Origin::Queue, Some(cluster)) => cluster.post(c, now),
                    _ => self.control(c, now, out),
                },
            }
        }
        // Counters once per batch: under a flood each host call per event
        // is a measurable share of the main thread.
        out.count(EVENTS_METRIC, tally.events);
        out.count(DECODE_ERRORS_METRIC, decode_errors);
        out.count("emr.service.stale_events", tally.stale);
        out.count("emr.service.ledger_full", tally.full);
    }

    /// The tick: timers that passed, and the time-driven work.
    pub fn on_tick(&mut self, store: &dyn SharedStore, now: DateTime<Utc>) -> Out {
        let mut out = Out::default();
        self.drive(now, &mut out);
        self.maintain(store, now, true, &mut out);
        out
    }

    /// The answer to a callout.
    pub fn on_result(
        &mut self,
        callout: Callout,
        result: CallResult,
        store: &dyn SharedStore,
        now: DateTime<Utc>,
    ) -> Out {
        let mut out = Out::default();
        self.answered(callout, result, now, &mut out);
        self.state_dirty = true;
        // Settles change incidents' status: publish promptly.
        self.maintain(store, now, false, &mut out);
        out
    }

    /// A call the glue could not even dispatch: failed at once, which may
    /// yield more to do.
    pub fn dispatch_failed(
        &mut self,
        callout: Callout,
        store: &dyn SharedStore,
        now: DateTime<Utc>,
    ) -> Out {
        let mut out = Out::default();
        self.answered(callout, CallResult::Failed, now, &mut out);
        self.mirror_token_if_refreshed(store);
        self.authorize(&mut out);
        out
    }

    fn answered(
        &mut self,
        callout: Callout,
        result: CallResult,
        now: DateTime<Utc>,
        out: &mut Out,
    ) {
        match callout {
            Callout::Genesys(op) => {
                if let Some(g) = &mut self.genesys {
                    let effects = g.reconciler.on_result(op, result, &self.ledger, now);
                    self.apply_effects(effects, now, out);
                }
            }
            Callout::Itsm(op) => {
                if let Some(p) = &mut self.poller {
                    let effects = p.on_result(op, result, &self.ledger, now);
                    self.apply_poll_effects(effects, now, out);
                }
            }
            Callout::Election(_)
            | Callout::Feed(_)
            | Callout::Outbox(_)
            | Callout::Lease(_)
            | Callout::Snapshot(_)
            | Callout::Auth(_) => {
                self.cluster_answered(callout, result, now, out);
            }
        }
    }

    fn record(
        &mut self,
        q: &QueuedEvent,
        audit_events: bool,
        now: DateTime<Utc>,
        tally: &mut Tally,
        out: &mut Out,
    ) {
        let group = match &self.config.genesys {
            Some(settings) => settings.group_for(&q.event),
            None => q
                .event
                .group
                .clone()
                .unwrap_or_else(|| self.default_group.clone()),
        };
        let key = q.event.incident_key();
        let applied = self.ledger.apply(q, group.clone(), now);
        self.slots.recorded(q);
        if q.received_ms > self.recorded_ms {
            self.recorded_ms = q.received_ms;
            self.recorded_dirty = true;
        }
        tally.events += 1;
        match applied {
            Applied::Stale => tally.stale += 1,
            Applied::Full => tally.full += 1,
            _ => {}
        }
        self.board.mark(&key);
        for key in self.ledger.take_dropped() {
            self.board.forget(&key);
        }
        if !matches!(applied, Applied::Duplicate | Applied::Stale | Applied::Full) {
            self.state_dirty = true;
            if let Some(g) = &mut self.genesys {
                if matches!(applied, Applied::ResolvedUnknown | Applied::Renewed) {
                    // Changes nothing wanted: no say over a person's change.
                    // (A renewal's new expiry reaches the row this way.)
                    g.reconciler.mark_dirty(&group);
                } else {
                    // An incident event: it also ends a person's override.
                    g.reconciler.mark_event(&group, now);
                    // The group the incident left, if it moved, at once too.
                    for left in self.ledger.take_left() {
                        g.reconciler.mark_event(&left, now);
                    }
                }
            }
        }
        if matches!(applied, Applied::Opened | Applied::Updated) {
            if let Some(p) = &mut self.poller {
                p.watch(&key, &self.ledger, now);
            }
        }
        if audit_events {
            out.audit(applied.audit_line(q, &group, now));
        }
    }

    /// The tool still says `key` is open (a poll, or a repeated
    /// activation): its ttl runs again. When the expiry moved, its status
    /// and the state are refreshed, and its group's row, which persists the
    /// expiry for a restart.
    fn renew(&mut self, key: &IncidentKey, at_least: chrono::Duration, now: DateTime<Utc>) {
        if let Some(group) = self.ledger.renew(key, at_least, now) {
            let (key, urgent) = (key.clone(), false);
            self.incident_changed(PollChanged { key, group, urgent }, now);
        }
    }

    /// An incident a status poll (or a renewal) changed: republished, and
    /// its group reconciled, at once for a resolution, or whenever next
    /// for a new expiry (the row persists it for a restart).
    fn incident_changed(&mut self, c: PollChanged, now: DateTime<Utc>) {
        self.board.mark(&c.key);
        self.state_dirty = true;
        if let Some(g) = &mut self.genesys {
            if c.urgent {
                g.reconciler.mark_event(&c.group, now);
            } else {
                g.reconciler.mark_dirty(&c.group);
            }
        }
    }

    /// A control message from the intake.
    fn control(&mut self, c: Control, now: DateTime<Utc>, out: &mut Out) {
        match c {
            Control::Renew { incident, .. } => {
                self.renew(&incident, chrono::Duration::zero(), now);
            }
            Control::Polled {
                incident,
                at_ms,
                resolved,
                renew_seconds,
            } => {
                let at = DateTime::from_timestamp_millis(at_ms).unwrap_or(now);
                let change = PollChange::polled(incident, resolved, renew_seconds);
                if let Some(changed) = change.apply(&mut self.ledger, at) {
                    self.incident_changed(changed, now);
                }
            }
            Control::Settled {
                events,
                failed,
                genesys,
                ..
            } => {
                let outcome = failed.map_or(Settle::Applied, Settle::Failed);
                let genesys = genesys.and_then(|g| serde_json::from_value(g).ok());
                for key in self.ledger.settle_events(&events, outcome, genesys, now) {
                    self.board.mark(&key);
                }
                self.state_dirty = true;
            }
            Control::Resume { group, .. } => {
                out.count("emr.service.resumes", 1);
                let Some(g) = &mut self.genesys else {
                    out.audit(
                        json!({"audit": "resume", "at": rfc3339::text(now), "group": group,
                                     "outcome": "ignored: no genesys section, nothing is driven"}),
                    );
                    return;
                };
                let effects = g.reconciler.resume(&group, &self.ledger, now);
                self.apply_effects(effects, now, out);
                self.state_dirty = true;
            }
        }
    }

    /// Lets the reconciler and the poller start whatever is due (new work,
    /// timers that passed). Polling when nothing is due is harmless, and the
    /// tick is short enough to serve as its timer.
    fn drive(&mut self, now: DateTime<Utc>, out: &mut Out) {
        // A follower records every event but never acts.
        if !self.drive_cluster(now, out) {
            return;
        }
        if let Some(g) = &mut self.genesys {
            if !g.started {
                g.started = true;
                // Restart safety: read what survived in Genesys (the rows)
                // before any write; without rows, check the configured
                // groups for one our client left enabled. Every group the
                // config names (its rules' too) is read at start, so a
                // wrong one shows now, not at the incident.
                let groups: Vec<_> = self.config.groups.iter().cloned().collect();
                if self.cluster.is_some() {
                    g.reconciler.start_from_ledger(&groups);
                } else {
                    g.reconciler.start_recovery(&groups);
                }
                g.reconciler.mark_all(&self.ledger);
                self.state_dirty = true;
            }
            let effects = g.reconciler.poll(&self.ledger, now);
            self.apply_effects(effects, now, out);
        }
        if let Some(p) = &mut self.poller {
            let effects = p.poll(&self.ledger, now);
            self.apply_poll_effects(effects, now, out);
        }
    }

    /// Carries out the reconciler's effects on the ledger and the board;
    /// calls, lines and samples go to `out`.
    fn apply_effects(&mut self, effects: Vec<Effect>, now: DateTime<Utc>, out: &mut Out) {
        for effect in effects {
            match effect {
                Effect::Call(call) => out.calls.push((Callout::Genesys(call.op), call)),
                Effect::Ledger(change) => {
                    let settled = change
                        .settlement()
                        .map(|(g, o, r)| (g.clone(), o.clone(), r.cloned()));
                    let changed = change.apply(&mut self.ledger, now);
                    if let Some(settled) = settled {
                        self.share_settlement(settled, &changed.keys, now);
                    }
                    for key in &changed.keys {
                        if changed.rebuilt {
                            self.watched(key, now);
                        } else {
                            self.board.mark(key);
                        }
                    }
                    self.state_dirty = true;
                }
                Effect::Audit(line) => out.audit(line),
                Effect::Alarm(line) => out.log(Level::Error, line),
                Effect::Metric(m) => out.reconcile(m),
            }
        }
    }

    /// A rebuilt incident: published, and polled if its tool has a status API.
    fn watched(&mut self, key: &IncidentKey, now: DateTime<Utc>) {
        self.board.mark(key);
        if let Some(p) = &mut self.poller {
            p.watch(key, &self.ledger, now);
        }
    }

    /// Carries out the poller's effects. A resolution it found is recorded
    /// in the ledger and reconciled like a resolution webhook, at once.
    fn apply_poll_effects(&mut self, effects: Vec<PollEffect>, now: DateTime<Utc>, out: &mut Out) {
        for effect in effects {
            match effect {
                PollEffect::Call(call) => out.calls.push((Callout::Itsm(call.op), call)),
                // Cluster mode: through the log, so every replica's ledger
                // has it, and a new leader does not undo it.
                PollEffect::Ledger(change) if self.cluster.is_some() => {
                    self.share_poll(&change, now);
                }
                PollEffect::Ledger(change) => {
                    if let Some(changed) = change.apply(&mut self.ledger, now) {
                        self.incident_changed(changed, now);
                    }
                }
                PollEffect::Audit(line) => out.audit(line),
                PollEffect::Metric(m) => out.poll(m),
            }
        }
        // A resolution found: reconcile it now, not at the next tick.
        if let Some(g) = &mut self.genesys {
            let effects = g.reconciler.poll(&self.ledger, now);
            self.apply_effects(effects, now, out);
        }
    }

    /// After an answer that brought a new token, mirrors it into shared
    /// data, so a reloaded VM need not log in again.
    fn mirror_token_if_refreshed(&mut self, store: &dyn SharedStore) {
        let Some(g) = self.genesys.as_mut() else {
            return;
        };
        if let Some(bytes) = g
            .reconciler
            .take_new_token()
            .and_then(|t| serde_json::to_vec(&t).ok())
        {
            // Best effort: the next VM logs in again without it.
            let _ = store.set(TOKEN_KEY, &bytes, None);
        }
    }

    /// Time-driven work, from the tick and after each queue batch: under a
    /// sustained flood of events Envoy was seen to starve the main thread's
    /// timer, so nothing bounded or timely may depend on the tick alone.
    fn maintain(
        &mut self,
        store: &dyn SharedStore,
        now: DateTime<Utc>,
        from_tick: bool,
        out: &mut Out,
    ) {
        self.mirror_token_if_refreshed(store);
        self.publish_for_filters(store, out);
        let due = |last: DateTime<Utc>, every_ms: i64| (now - last).num_milliseconds() >= every_ms;
        if due(self.last_beat, liveness::BEAT_EVERY_MS) {
            self.last_beat = now;
            out.check(
                store.set(liveness::HEARTBEAT_KEY, &liveness::beat(now), None),
                "write the service heartbeat",
            );
            let genesys_changed = self
                .genesys
                .as_mut()
                .is_some_and(|g| g.reconciler.take_health_change().is_some());
            let cluster_problem = self.cluster.as_ref().and_then(cluster::Cluster::problem);
            if genesys_changed || cluster_problem != self.cluster_problem {
                self.cluster_problem = cluster_problem;
                let mut reasons: Vec<String> = self
                    .genesys
                    .as_ref()
                    .map(|g| g.reconciler.health().reasons())
                    .unwrap_or_default();
                reasons.extend(self.cluster_problem.clone());
                let unready: Vec<String> = self.cluster_problem.iter().cloned().collect();
                out.check(
                    store.set(liveness::READY_KEY, &liveness::health(&unready), None),
                    "write the replica's readiness",
                );
                self.state_dirty = true;
                out.check(
                    store.set(liveness::HEALTH_KEY, &liveness::health(&reasons), None),
                    "write the service's health",
                );
            }
            if self.recorded_dirty {
                let written = store.set(
                    liveness::RECORDED_KEY,
                    &liveness::recorded(self.recorded_ms),
                    None,
                );
                self.recorded_dirty = written.is_err();
            }
        }
        // The filters' view of each source's share: after every batch, so
        // that the slots the batch's events held come back at once.
        out.check(
            self.slots.sync(&self.ledger, store),
            "write the sources' open counts",
        );
        if due(self.last_prune, PRUNE_EVERY_MS) {
            self.last_prune = now;
            for key in self.ledger.prune(now) {
                self.board.forget(&key);
            }
        }
        if from_tick || due(self.last_expire, TICK_MS) {
            self.last_expire = now;
            self.expire(now, out);
        }
        // Status is published at most every few milliseconds under load, so
        // a flood of events costs one write per bucket, not one per event.
        // Buckets that only lost pruned incidents wait for the prune
        // cadence: under a flood of unique ids most buckets lose one in a
        // second, and one sweep then serves them all, a few buckets per
        // publish.
        if !self.board.is_sweeping()
            && self.board.has_removals()
            && due(self.last_removals, PRUNE_EVERY_MS)
        {
            self.last_removals = now;
            self.board.start_sweep();
        }
        if (self.board.is_dirty() || self.board.is_sweeping())
            && (from_tick || due(self.last_status, STATUS_EVERY_MS))
        {
            self.last_status = now;
            out.check(
                self.board
                    .publish_swept(&self.ledger, store, SWEEP_PER_PUBLISH),
                "publish status",
            );
        }
        if self.state_dirty && (from_tick || due(self.last_state, TICK_MS)) {
            self.last_state = now;
            self.publish_state(store, now, out);
        }
        // Last, once every call of this round is made.
        self.authorize(out);
    }

    /// Closes the incidents whose ttl ran out, and reconciles their groups.
    fn expire(&mut self, now: DateTime<Utc>, out: &mut Out) {
        let expired = self.ledger.expire(now);
        if expired.is_empty() {
            return;
        }
        out.count("emr.service.expired", expired.len() as u64);
        for key in &expired {
            self.board.mark(key);
            let inc = self.ledger.get(key);
            out.audit(json!({
                "audit": "expired",
                "decision": "expired",
                "at": rfc3339::text(now),
                "incident": key.to_string(),
                "group": inc.map(|i| i.group.as_str()),
                "expiresAt": inc.and_then(|i| i.expires_at).map(rfc3339::text),
            }));
            if let (Some(g), Some(inc)) = (&mut self.genesys, inc) {
                g.reconciler.mark_dirty(&inc.group);
            }
        }
        self.state_dirty = true;
        self.drive(now, out);
    }

    /// The state view the filters answer `GET /emr/state` with.
    fn publish_state(&mut self, store: &dyn SharedStore, now: DateTime<Utc>, out: &mut Out) {
        self.state_dirty = false;
        let open = u64::try_from(self.ledger.open_len()).unwrap_or(u64::MAX);
        out.samples.push((OPEN_GAUGE, Sample::Gauge(open)));
        let mut state = match &self.genesys {
            Some(g) => g.reconciler.state_view(&self.ledger, now),
            None => {
                let groups: Vec<_> = self
                    .ledger
                    .desired()
                    .map(|(id, d)| json!({"id": id, "desired": d.view()}))
                    .collect();
                json!({"updatedAt": rfc3339::text(now), "genesys": null, "groups": groups})
            }
        };
        if let (Some(obj), Some(p)) = (state.as_object_mut(), &self.poller) {
            obj.insert("itsm".into(), p.view(now));
        }
        if let (Some(obj), Some(c)) = (state.as_object_mut(), &self.cluster) {
            obj.insert("cluster".into(), c.view(now));
        }
        out.check(
            store.set(status::STATE_KEY, state.to_string().as_bytes(), None),
            "publish state",
        );
    }
}

mod cluster;
#[cfg(test)]
mod tests;
