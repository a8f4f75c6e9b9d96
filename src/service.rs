//! The singleton service (`envoy.bootstrap.wasm`, main thread): drains the
//! event queue into the incident ledger, drives Genesys through the
//! reconciler, expires incidents, and publishes status for the filters.
//!
//! Upstream work lives here, not in the filter: a callout made from a stream
//! that was already answered never gets its response.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use emr_core::config::Config;
use emr_core::event::{GroupId, QueuedEvent};
use emr_core::ledger::{Applied, IncidentState, Ledger};
use emr_core::reconcile::{
    CallResult, Effect, HttpCall, Metric as ReconcileMetric, OpId, Reconciler,
};
use emr_core::status::{self, Board};
use emr_core::store::{ensure_key, SharedStore};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};
use serde_json::json;

use crate::host::{self, Shared, QUEUE_NAME};
use crate::metrics::Metric;

/// How often the service wakes up: expiry, pruning, reconciler timers and
/// the state view are handled here rather than per event.
const TICK_MS: i64 = 100;
const TICK: Duration = Duration::from_millis(100);
/// Pruning walks the whole ledger: once a second is plenty.
const PRUNE_EVERY_MS: i64 = 1000;
/// Status freshness under load.
const STATUS_EVERY_MS: i64 = 20;
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
    /// The reconciler's metrics, defined on first use (`emr.genesys.*`).
    genesys: BTreeMap<&'static str, Metric>,
}

impl ServiceMetrics {
    fn reconcile(&mut self, m: &ReconcileMetric) {
        let name = m.name();
        let metric = *self.genesys.entry(name).or_insert_with(|| {
            // genesys_failures_forbidden → emr.genesys.failures.forbidden
            let full = format!(
                "emr.{}",
                name.replacen("genesys_", "genesys.", 1)
                    .replacen("failures_", "failures.", 1)
            );
            match m {
                ReconcileMetric::CalloutLatencyMs(_) => Metric::histogram(&full),
                _ => Metric::counter(&full),
            }
        });
        match m {
            ReconcileMetric::CalloutLatencyMs(ms) => metric.record(*ms),
            _ => metric.add(1),
        }
    }
}

/// The reconciler and its callouts in flight.
struct Genesys {
    reconciler: Reconciler,
    /// Host callout token → reconciler op.
    pending: BTreeMap<u32, OpId>,
    /// The first poll waits for the first tick or event: Envoy creates the
    /// main-thread root twice, and only the live one gets ticks and events.
    started: bool,
}

pub struct ServiceRoot {
    ledger: Ledger,
    board: Board,
    queue_id: u32,
    config: Config,
    default_group: GroupId,
    genesys: Option<Genesys>,
    /// Desired or observed state may have changed since the state view was
    /// published.
    state_dirty: bool,
    last_prune: DateTime<Utc>,
    last_expire: DateTime<Utc>,
    last_status: DateTime<Utc>,
    last_state: DateTime<Utc>,
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
                pending: BTreeMap::new(),
                started: false,
            }
        });
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
        Ok(Self {
            ledger: Ledger::new(config.retention),
            board: Board::default(),
            queue_id,
            config,
            default_group,
            genesys,
            state_dirty: true,
            last_prune: DateTime::<Utc>::MIN_UTC,
            last_expire: DateTime::<Utc>::MIN_UTC,
            last_status: DateTime::<Utc>::MIN_UTC,
            last_state: DateTime::<Utc>::MIN_UTC,
            metrics: ServiceMetrics {
                events: Metric::counter("emr.service.events"),
                decode_errors: Metric::counter("emr.service.decode_errors"),
                stale: Metric::counter("emr.service.stale_events"),
                expired: Metric::counter("emr.service.expired"),
                full: Metric::counter("emr.service.ledger_full"),
                open: Metric::gauge("emr.service.open_incidents"),
                genesys: BTreeMap::new(),
            },
        })
    }

    pub fn on_queue_ready(&mut self, queue_id: u32) {
        if queue_id != self.queue_id {
            return;
        }
        let now = host::now();
        loop {
            let message = match hostcalls::dequeue_shared_queue(self.queue_id) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(s) => {
                    host::log(LogLevel::Error, &format!("emr-edge: dequeue failed: {s:?}"));
                    break;
                }
            };
            match serde_json::from_slice::<QueuedEvent>(&message) {
                Ok(q) => self.record(&q, now),
                Err(e) => {
                    self.metrics.decode_errors.add(1);
                    host::log(
                        LogLevel::Error,
                        &format!("emr-edge: unreadable queued event: {e}"),
                    );
                }
            }
        }
        // One reconcile pass per batch: many events for a group coalesce.
        self.drive(now);
        self.maintain(now, false);
    }

    fn record(&mut self, q: &QueuedEvent, now: DateTime<Utc>) {
        let group = match &self.config.genesys {
            Some(settings) => settings.group_for(&q.event),
            None => q
                .event
                .group
                .clone()
                .unwrap_or_else(|| self.default_group.clone()),
        };
        let applied = self.ledger.apply(q, group.clone(), now);
        self.metrics.events.add(1);
        match applied {
            Applied::Stale => self.metrics.stale.add(1),
            Applied::Full => self.metrics.full.add(1),
            _ => {}
        }
        self.board.mark(&q.event.incident_key());
        for key in self.ledger.take_dropped() {
            self.board.mark(&key);
        }
        if !matches!(applied, Applied::Duplicate | Applied::Stale | Applied::Full) {
            self.state_dirty = true;
            if let Some(g) = &mut self.genesys {
                g.reconciler.mark_dirty(&group);
            }
        }
        audit(json!({
            "audit": "event",
            "at": now.to_rfc3339(),
            "incident": q.event.incident_key().to_string(),
            "routingMode": q.event.routing_mode,
            "timestamp": q.event.timestamp.to_rfc3339(),
            "group": group,
            "deliveryId": q.delivery_id,
            "outcome": format!("{applied:?}"),
        }));
    }

    pub fn on_tick(&mut self) {
        let now = host::now();
        self.drive(now);
        self.maintain(now, true);
    }

    /// Lets the reconciler start whatever is due (new work, timers that
    /// passed), and carries it out. Polling when nothing is due is harmless,
    /// and the tick is short enough to serve as its timer.
    fn drive(&mut self, now: DateTime<Utc>) {
        let Some(g) = &mut self.genesys else { return };
        if !g.started {
            g.started = true;
            g.reconciler.mark_all(&self.ledger);
        }
        let effects = g.reconciler.poll(&self.ledger, now);
        self.apply_effects(effects, now);
    }

    pub fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize) {
        let now = host::now();
        let Some(g) = &mut self.genesys else { return };
        let Some(op) = g.pending.remove(&token_id) else {
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
        let effects = g.reconciler.on_result(op, result, &self.ledger, now);
        self.apply_effects(effects, now);
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
                        if let Err(failed_op) = self.dispatch(&call) {
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
                    Effect::Audit(line) => audit(line),
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

    fn dispatch(&mut self, call: &HttpCall) -> Result<(), OpId> {
        let Some(g) = &mut self.genesys else {
            return Err(call.op);
        };
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
                g.pending.insert(token, call.op);
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
        if due(self.last_prune, PRUNE_EVERY_MS) {
            self.last_prune = now;
            for key in self.ledger.prune(now) {
                self.board.mark(&key);
            }
        }
        if from_tick || due(self.last_expire, TICK_MS) {
            self.last_expire = now;
            let expired = self.ledger.expire(now);
            for key in &expired {
                self.metrics.expired.add(1);
                self.board.mark(key);
                self.state_dirty = true;
                audit(
                    json!({"audit": "expired", "at": now.to_rfc3339(), "incident": key.to_string()}),
                );
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
        if self.board.is_dirty() && (from_tick || due(self.last_status, STATUS_EVERY_MS)) {
            self.last_status = now;
            if let Err(e) = self.board.publish(&self.ledger, &Shared) {
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
        let open = self
            .ledger
            .incidents()
            .filter(|i| i.state == IncidentState::Open)
            .count();
        self.metrics
            .open
            .set(u64::try_from(open).unwrap_or(u64::MAX));
        let state = match &self.genesys {
            Some(g) => g.reconciler.state_view(&self.ledger, now),
            None => {
                let groups: Vec<_> = self
                    .ledger
                    .desired()
                    .into_iter()
                    .map(|(id, d)| json!({"id": id, "desired": d}))
                    .collect();
                json!({"updatedAt": now.to_rfc3339(), "genesys": null, "groups": groups})
            }
        };
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
