//! The singleton service (`envoy.bootstrap.wasm`, main thread): drains the
//! event queue into the incident ledger, drives Genesys through the
//! reconciler (and its watchdog), polls the ITSM tools for lost resolutions,
//! expires incidents, and publishes status for the filters.
//!
//! Upstream work lives here, not in the filter: a callout made from a stream
//! that was already answered never gets its response. Both state machines
//! (the reconciler and the ITSM poller) hand out calls with their own op
//! ids; one map from host token to a tagged op routes every answer.
//!
//! At start the reconciler recovers first (restart safety, see
//! `emr_core::recovery`): nothing is written to Genesys before the data
//! table's rows have been read back into the ledger.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use emr_core::config::Config;
use emr_core::event::{Control, GroupId, IncidentKey, QueueMessage, QueuedEvent};
use emr_core::itsm::{PollEffect, PollMetric, Poller};
use emr_core::ledger::{Applied, Ledger};
use emr_core::liveness;
use emr_core::quota;
use emr_core::reconcile::{
    CallResult, Effect, HttpCall, Metric as ReconcileMetric, OpId, Reconciler,
};
use emr_core::rfc3339;
use emr_core::status::{self, Board};
use emr_core::store::{ensure_key, SharedStore};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};
use serde_json::json;

use crate::host::{self, Shared, QUEUE_NAME};
use crate::metrics::{self, Metric};

/// How often the service wakes up: expiry, pruning, reconciler timers and
/// the state view are handled here rather than per event.
const TICK_MS: i64 = 100;
const TICK: Duration = Duration::from_millis(100);
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
const TOKEN_KEY: &str = "emr.genesys.token";

struct ServiceMetrics {
    events: Metric,
    decode_errors: Metric,
    stale: Metric,
    expired: Metric,
    full: Metric,
    open: Metric,
    resumes: Metric,
    /// The reconciler's and the poller's metrics, defined on first use
    /// (`emr.genesys.*`, `emr.watchdog.*`, `emr.recovery.*`, `emr.itsm.*`).
    defined: BTreeMap<&'static str, Metric>,
}

/// What a state machine's metric sample does to its stat.
#[derive(Debug, Clone, Copy)]
enum Sample {
    Count,
    Histogram(u64),
    Gauge(u64),
}

impl ServiceMetrics {
    /// The core names each metric as documented
    /// (`emr.genesys.failures.forbidden`); it is defined at its first sample.
    fn sample(&mut self, name: &'static str, sample: Sample) {
        let metric = *self.defined.entry(name).or_insert_with(|| match sample {
            Sample::Count => Metric::counter(name),
            Sample::Histogram(_) => Metric::histogram(name),
            Sample::Gauge(_) => Metric::gauge(name),
        });
        match sample {
            Sample::Count => metric.add(1),
            Sample::Histogram(v) => metric.record(v),
            Sample::Gauge(v) => metric.set(v),
        }
    }

    fn reconcile(&mut self, m: &ReconcileMetric) {
        let sample = match m {
            ReconcileMetric::CalloutLatencyMs(ms) => Sample::Histogram(*ms),
            ReconcileMetric::ContendedGroups(n) => Sample::Gauge(*n),
            _ => Sample::Count,
        };
        self.sample(m.name(), sample);
    }

    fn poll(&mut self, m: &PollMetric) {
        let sample = match m {
            PollMetric::LatencyMs(ms) => Sample::Histogram(*ms),
            _ => Sample::Count,
        };
        self.sample(m.name(), sample);
    }
}

/// What a queue batch did, counted once per batch.
#[derive(Debug, Default)]
struct Tally {
    events: u64,
    stale: u64,
    full: u64,
}

/// Which state machine a callout belongs to.
#[derive(Debug, Clone, Copy)]
enum Callout {
    Genesys(OpId),
    Itsm(OpId),
}

/// The reconciler.
struct Genesys {
    reconciler: Reconciler,
    /// The first poll (and recovery) waits for the first tick or event:
    /// Envoy creates the main-thread root twice, and only the live one gets
    /// ticks and events.
    started: bool,
}

pub struct ServiceRoot {
    ledger: Ledger,
    board: Board,
    queue_id: u32,
    config: Config,
    default_group: GroupId,
    genesys: Option<Genesys>,
    poller: Option<Poller>,
    /// Host callout token → the op of the state machine that made it.
    pending: BTreeMap<u32, Callout>,
    /// Desired or observed state may have changed since the state view was
    /// published.
    state_dirty: bool,
    last_prune: DateTime<Utc>,
    last_expire: DateTime<Utc>,
    last_status: DateTime<Utc>,
    last_removals: DateTime<Utc>,
    last_state: DateTime<Utc>,
    last_beat: DateTime<Utc>,
    /// The sources' shares of open incidents, as written for the filters.
    slots: quota::Book,
    /// The receipt time of the newest event recorded (ms), for the filters'
    /// `QUEUED` answers; and whether it changed since it was written.
    recorded_ms: i64,
    recorded_dirty: bool,
    metrics: ServiceMetrics,
}

impl ServiceRoot {
    /// Creates the shared keys and the queue; safe to repeat, since Envoy may
    /// create main-thread root contexts more than once.
    pub fn start(config: Config) -> Result<Self, String> {
        emr_core::dedupe::Dedupe::new(config.intake.dedupe)
            .create_keys(&Shared)
            .map_err(|e| format!("cannot create dedupe keys: {e:?}"))?;
        status::create_keys(&Shared).map_err(|e| format!("cannot create status keys: {e:?}"))?;
        emr_core::ignored::create_keys(&Shared)
            .map_err(|e| format!("cannot create the ignored-event keys: {e:?}"))?;
        ensure_key(&Shared, liveness::HEALTH_KEY)
            .map_err(|e| format!("cannot create the health key: {e:?}"))?;
        quota::create_keys(&Shared).map_err(|e| format!("cannot create the share keys: {e:?}"))?;
        ensure_key(&Shared, TOKEN_KEY)
            .map_err(|e| format!("cannot create the token key: {e:?}"))?;
        let queue_id = hostcalls::register_shared_queue(QUEUE_NAME)
            .map_err(|s| format!("cannot register the event queue: {s:?}"))?;
        hostcalls::set_tick_period(TICK)
            .map_err(|s| format!("cannot set the tick period: {s:?}"))?;
        let default_group =
            GroupId::parse(UNMAPPED_GROUP).map_err(|e| format!("default group: {}", e.0))?;
        let genesys = config.genesys.as_ref().map(|settings| {
            let mut reconciler = Reconciler::new(settings.clone());
            if let Some(token) = Shared
                .get(TOKEN_KEY)
                .ok()
                .and_then(|v| v.value)
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                reconciler.import_token(token, host::now());
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
            host::log(
                LogLevel::Warn,
                &format!(
                    "ITSM status APIs polled without a credential (insecure): {}",
                    open.join(", ")
                ),
            );
        }
        host::log(
            LogLevel::Info,
            &format!(
                "emr-edge service started ({})",
                if genesys.is_some() {
                    "Genesys configured"
                } else {
                    "no genesys section: recording only"
                }
            ),
        );
        let mut root = Self {
            ledger: Ledger::new(config.retention),
            board: Board::default(),
            queue_id,
            config,
            default_group,
            genesys,
            poller,
            pending: BTreeMap::new(),
            state_dirty: true,
            last_prune: DateTime::<Utc>::MIN_UTC,
            last_expire: DateTime::<Utc>::MIN_UTC,
            last_status: DateTime::<Utc>::MIN_UTC,
            last_removals: DateTime::<Utc>::MIN_UTC,
            last_state: DateTime::<Utc>::MIN_UTC,
            last_beat: DateTime::<Utc>::MIN_UTC,
            slots: quota::Book::default(),
            recorded_ms: 0,
            recorded_dirty: false,
            metrics: ServiceMetrics {
                events: Metric::counter(metrics::SERVICE_EVENTS),
                decode_errors: Metric::counter(metrics::SERVICE_DECODE_ERRORS),
                stale: Metric::counter("emr.service.stale_events"),
                expired: Metric::counter("emr.service.expired"),
                full: Metric::counter("emr.service.ledger_full"),
                open: Metric::gauge("emr.service.open_incidents"),
                resumes: Metric::counter("emr.service.resumes"),
                defined: BTreeMap::new(),
            },
        };
        if root.genesys.is_some() {
            // The gauge exists from the start: an alert on it needs no
            // "absent" case.
            root.metrics.reconcile(&ReconcileMetric::ContendedGroups(0));
        }
        Ok(root)
    }

    pub fn on_queue_ready(&mut self, queue_id: u32) {
        if queue_id != self.queue_id {
            return;
        }
        let now = host::now();
        host::refresh_log_level();
        let mut tally = Tally::default();
        loop {
            let message = match hostcalls::dequeue_shared_queue(self.queue_id) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(s) => {
                    host::log(LogLevel::Error, &format!("emr-edge: dequeue failed: {s:?}"));
                    break;
                }
            };
            match QueueMessage::decode(&message) {
                Ok(QueueMessage::Event(q)) => self.record(&q, now, &mut tally),
                Ok(QueueMessage::Control(c)) => self.control(c, now),
                Err(e) => {
                    self.metrics.decode_errors.add(1);
                    host::log(
                        LogLevel::Error,
                        &format!("emr-edge: unreadable queued event: {e}"),
                    );
                }
            }
        }
        // Counters once per batch: under a flood each host call per event
        // is a measurable share of the main thread.
        self.metrics.events.add(tally.events);
        self.metrics.stale.add(tally.stale);
        self.metrics.full.add(tally.full);
        // One reconcile pass per batch: many events for a group coalesce.
        self.drive(now);
        self.maintain(now, false);
    }

    fn record(&mut self, q: &QueuedEvent, now: DateTime<Utc>, tally: &mut Tally) {
        #[cfg(feature = "crash-test")]
        crate::crash::service(q.event.correlation_id.as_str());
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
                p.watch(&q.event.incident_key(), &self.ledger, now);
            }
        }
        // Built only when Envoy would write it: at `--log-level warn` it was
        // a tenth of the service's cost per event, built and dropped.
        if !host::logs(LogLevel::Info) {
            return;
        }
        audit(applied.audit_line(q, &group, now));
    }

    /// The tool still says `key` is open (a poll, or a repeated
    /// activation): its ttl runs again. When the expiry moved, its status
    /// and the state are refreshed, and its group's row, which persists the
    /// expiry for a restart.
    fn renew(&mut self, key: &IncidentKey, at_least: chrono::Duration, now: DateTime<Utc>) {
        if let Some(group) = self.ledger.renew(key, at_least, now) {
            self.board.mark(key);
            self.state_dirty = true;
            if let Some(g) = &mut self.genesys {
                g.reconciler.mark_dirty(&group);
            }
        }
    }

    /// A control message from the intake.
    fn control(&mut self, c: Control, now: DateTime<Utc>) {
        match c {
            Control::Renew { incident, .. } => {
                self.renew(&incident, chrono::Duration::zero(), now);
            }
            Control::Resume { group, .. } => {
                self.metrics.resumes.add(1);
                let Some(g) = &mut self.genesys else {
                    audit(
                        json!({"audit": "resume", "at": rfc3339::text(now), "group": group,
                                 "outcome": "ignored: no genesys section, nothing is driven"}),
                    );
                    return;
                };
                let effects = g.reconciler.resume(&group, &self.ledger, now);
                self.apply_effects(effects, now);
                self.state_dirty = true;
            }
        }
    }

    pub fn on_tick(&mut self) {
        let now = host::now();
        host::refresh_log_level();
        self.drive(now);
        self.maintain(now, true);
    }

    /// Lets the reconciler start whatever is due (new work, timers that
    /// passed), and carries it out. Polling when nothing is due is harmless,
    /// and the tick is short enough to serve as its timer.
    fn drive(&mut self, now: DateTime<Utc>) {
        if let Some(g) = &mut self.genesys {
            if !g.started {
                g.started = true;
                // Restart safety: read what survived in Genesys (the rows)
                // before any write; without rows, check the configured
                // groups for one our client left enabled. Every group the
                // config names (its rules' too) is read at start, so a
                // wrong one shows now, not at the incident.
                let groups: Vec<_> = self.config.groups.iter().cloned().collect();
                g.reconciler.start_recovery(&groups);
                g.reconciler.mark_all(&self.ledger);
                self.state_dirty = true;
            }
            let effects = g.reconciler.poll(&self.ledger, now);
            self.apply_effects(effects, now);
        }
        if let Some(p) = &mut self.poller {
            let effects = p.poll(&self.ledger, now);
            self.apply_poll_effects(effects, now);
        }
    }

    pub fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize) {
        let now = host::now();
        let Some(op) = self.pending.remove(&token_id) else {
            host::log(
                LogLevel::Warn,
                &format!("emr-edge: answer for unknown callout {token_id}"),
            );
            return;
        };
        let headers = hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default();
        let status = headers
            .iter()
            .find(|(n, _)| n == ":status")
            .and_then(|(_, v)| v.parse::<u16>().ok());
        // A failed call (reset, timeout, no upstream) arrives with no headers.
        let result = match status {
            Some(status) => CallResult::Response {
                status,
                body: hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
                headers,
            },
            None => CallResult::Failed,
        };
        match op {
            Callout::Genesys(op) => {
                if let Some(g) = &mut self.genesys {
                    let effects = g.reconciler.on_result(op, result, &self.ledger, now);
                    self.apply_effects(effects, now);
                }
            }
            Callout::Itsm(op) => {
                if let Some(p) = &mut self.poller {
                    let effects = p.on_result(op, result, &self.ledger, now);
                    self.apply_poll_effects(effects, now);
                }
            }
        }
        self.state_dirty = true;
        // Settles change incidents' status: publish promptly.
        self.maintain(now, false);
    }

    /// Carries out the reconciler's effects. A call that cannot even be
    /// dispatched is reported back as failed, which may yield more effects.
    fn apply_effects(&mut self, effects: Vec<Effect>, now: DateTime<Utc>) {
        let mut work = effects;
        let mut token_refreshed = false;
        while !work.is_empty() {
            let mut next = Vec::new();
            for effect in work {
                match effect {
                    Effect::Call(call) => {
                        if let Err(failed_op) = self.dispatch(&call, Callout::Genesys(call.op)) {
                            if let Some(g) = &mut self.genesys {
                                next.extend(g.reconciler.on_result(
                                    failed_op,
                                    CallResult::Failed,
                                    &self.ledger,
                                    now,
                                ));
                            }
                        }
                    }
                    Effect::Settle {
                        group,
                        outcome,
                        genesys,
                    } => {
                        for key in self.ledger.settle_group(&group, outcome, genesys, now) {
                            self.board.mark(&key);
                        }
                        self.state_dirty = true;
                    }
                    Effect::Restore { group, incidents } => {
                        for p in &incidents {
                            if let Some(key) = self.ledger.restore(p, group.clone(), now) {
                                self.watched(&key, now);
                            }
                        }
                        self.state_dirty = true;
                    }
                    Effect::Adopt {
                        group,
                        key,
                        expires_at,
                        detail,
                    } => {
                        if let Some(key) = self.ledger.adopt(key, group, detail, expires_at, now) {
                            self.board.mark(&key);
                        }
                        self.state_dirty = true;
                    }
                    Effect::Audit(line) => audit(line),
                    Effect::Alarm(line) => host::log(LogLevel::Error, &line),
                    Effect::Metric(m) => {
                        if m == ReconcileMetric::TokenRefresh {
                            token_refreshed = true;
                        }
                        self.metrics.reconcile(&m);
                    }
                }
            }
            work = next;
        }
        if token_refreshed {
            self.mirror_token();
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
    /// in the ledger and reconciled like a resolution webhook.
    fn apply_poll_effects(&mut self, effects: Vec<PollEffect>, now: DateTime<Utc>) {
        let mut work = effects;
        while !work.is_empty() {
            let mut next = Vec::new();
            for effect in work {
                match effect {
                    PollEffect::Call(call) => {
                        if let Err(op) = self.dispatch(&call, Callout::Itsm(call.op)) {
                            if let Some(p) = &mut self.poller {
                                next.extend(p.on_result(op, CallResult::Failed, &self.ledger, now));
                            }
                        }
                    }
                    PollEffect::Resolved { key, detail } => {
                        let group = self.ledger.resolve_by_poll(&key, detail, now);
                        self.board.mark(&key);
                        if let (Some(group), Some(g)) = (group, &mut self.genesys) {
                            g.reconciler.mark_event(&group, now);
                        }
                        self.state_dirty = true;
                    }
                    PollEffect::Renew { key, at_least } => self.renew(&key, at_least, now),
                    PollEffect::Audit(line) => audit(line),
                    PollEffect::Metric(m) => self.metrics.poll(&m),
                }
            }
            work = next;
        }
        // A resolution found: reconcile it now, not at the next tick.
        if let Some(g) = &mut self.genesys {
            let effects = g.reconciler.poll(&self.ledger, now);
            self.apply_effects(effects, now);
        }
    }

    fn dispatch(&mut self, call: &HttpCall, callout: Callout) -> Result<(), OpId> {
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", call.method),
            (":path", call.path.as_str()),
            (":authority", call.authority.as_str()),
        ];
        headers.extend(call.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        match hostcalls::dispatch_http_call(
            &call.cluster,
            headers,
            call.body.as_deref(),
            vec![],
            Duration::from_millis(call.timeout_ms),
        ) {
            Ok(token) => {
                self.pending.insert(token, callout);
                Ok(())
            }
            Err(s) => {
                // Never log the call itself: it carries the credentials.
                host::log(
                    LogLevel::Error,
                    &format!(
                        "emr-edge: cannot call cluster {} ({} {}): {s:?}",
                        call.cluster, call.method, call.path
                    ),
                );
                Err(call.op)
            }
        }
    }

    fn mirror_token(&self) {
        let Some(g) = &self.genesys else { return };
        if let Some(token) = g.reconciler.export_token() {
            if let Ok(bytes) = serde_json::to_vec(&token) {
                if let Err(e) = Shared.set(TOKEN_KEY, &bytes, None) {
                    host::log(
                        LogLevel::Warn,
                        &format!("emr-edge: cannot cache the token: {e:?}"),
                    );
                }
            }
        }
    }

    /// Time-driven work, from the tick and after each queue batch: under a
    /// sustained flood of events Envoy was seen to starve the main thread's
    /// timer, so nothing bounded or timely may depend on the tick alone.
    fn maintain(&mut self, now: DateTime<Utc>, from_tick: bool) {
        let due = |last: DateTime<Utc>, every_ms: i64| (now - last).num_milliseconds() >= every_ms;
        if due(self.last_beat, liveness::BEAT_EVERY_MS) {
            self.last_beat = now;
            if let Err(e) = Shared.set(liveness::HEARTBEAT_KEY, &liveness::beat(now), None) {
                host::log(
                    LogLevel::Error,
                    &format!("emr-edge: cannot write the service heartbeat: {e:?}"),
                );
            }
            if let Some(reasons) = self
                .genesys
                .as_mut()
                .and_then(|g| g.reconciler.take_health_change())
            {
                self.state_dirty = true;
                if let Err(e) = Shared.set(liveness::HEALTH_KEY, &liveness::health(&reasons), None)
                {
                    host::log(
                        LogLevel::Error,
                        &format!("emr-edge: cannot write the service's health: {e:?}"),
                    );
                }
            }
            if self.recorded_dirty {
                let written = Shared.set(
                    liveness::RECORDED_KEY,
                    &liveness::recorded(self.recorded_ms),
                    None,
                );
                self.recorded_dirty = written.is_err();
            }
        }
        // The filters' view of each source's share: after every batch, so
        // that the slots the batch's events held come back at once.
        if let Err(e) = self.slots.sync(&self.ledger, &Shared) {
            host::log(
                LogLevel::Error,
                &format!("emr-edge: cannot write the sources' open counts: {e:?}"),
            );
        }
        if due(self.last_prune, PRUNE_EVERY_MS) {
            self.last_prune = now;
            for key in self.ledger.prune(now) {
                self.board.forget(&key);
            }
        }
        if from_tick || due(self.last_expire, TICK_MS) {
            self.last_expire = now;
            let expired = self.ledger.expire(now);
            for key in &expired {
                self.metrics.expired.add(1);
                self.board.mark(key);
                self.state_dirty = true;
                let inc = self.ledger.get(key);
                audit(json!({
                    "audit": "expired",
                    "decision": "expired",
                    "at": rfc3339::text(now),
                    "incident": key.to_string(),
                    "group": inc.map(|i| i.group.as_str()),
                    "expiresAt": inc.and_then(|i| i.expires_at).map(rfc3339::text),
                }));
            }
            if !expired.is_empty() {
                if let Some(g) = &mut self.genesys {
                    for key in &expired {
                        if let Some(inc) = self.ledger.get(key) {
                            g.reconciler.mark_dirty(&inc.group);
                        }
                    }
                }
                self.drive(now);
            }
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
            let published = self
                .board
                .publish_swept(&self.ledger, &Shared, SWEEP_PER_PUBLISH);
            if let Err(e) = published {
                host::log(
                    LogLevel::Error,
                    &format!("emr-edge: cannot publish status: {e:?}"),
                );
            }
        }
        if self.state_dirty && (from_tick || due(self.last_state, TICK_MS)) {
            self.last_state = now;
            self.publish_state(now);
        }
    }

    fn publish_state(&mut self, now: DateTime<Utc>) {
        self.state_dirty = false;
        let open = self.ledger.open_len();
        self.metrics
            .open
            .set(u64::try_from(open).unwrap_or(u64::MAX));
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
        if let Err(e) = Shared.set(status::STATE_KEY, state.to_string().as_bytes(), None) {
            host::log(
                LogLevel::Error,
                &format!("emr-edge: cannot publish state: {e:?}"),
            );
        }
    }
}

/// One JSON line per decision, for auditors; never holds a secret.
fn audit(v: serde_json::Value) {
    host::log(LogLevel::Info, &v.to_string());
}
