//! The singleton service (`envoy.bootstrap.wasm`, main thread): drains the
//! event queue into the incident ledger, expires incidents, and publishes
//! status for the filters to serve.
//!
//! Upstream work lives here, not in the filter: a callout made from a stream
//! that was already answered never gets its response.

use std::time::Duration;

use chrono::{DateTime, Utc};

use emr_core::config::Config;
use emr_core::event::{GroupId, QueuedEvent};
use emr_core::ledger::{Applied, IncidentState, Ledger};
use emr_core::status::{self, Board};
use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;
use serde_json::json;

use crate::host::{self, Shared, QUEUE_NAME};
use crate::metrics::Metric;

/// How often the service wakes up: expiry, pruning and the state view are
/// handled here rather than per event, so a flood of events costs little.
const TICK_MS: i64 = 100;
const TICK: Duration = Duration::from_millis(100);
/// Pruning walks the whole ledger: once a second is plenty.
const PRUNE_EVERY_MS: i64 = 1000;
/// Status freshness under load.
const STATUS_EVERY_MS: i64 = 20;
/// The group used until a Genesys group mapping is configured.
const UNMAPPED_GROUP: &str = "default";

struct ServiceMetrics {
    events: Metric,
    decode_errors: Metric,
    stale: Metric,
    expired: Metric,
    full: Metric,
    open: Metric,
}

pub struct ServiceRoot {
    ledger: Ledger,
    board: Board,
    queue_id: u32,
    default_group: GroupId,
    /// Desired state may have changed since the state view was published.
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
        let queue_id = hostcalls::register_shared_queue(QUEUE_NAME)
            .map_err(|s| format!("cannot register the event queue: {s:?}"))?;
        hostcalls::set_tick_period(TICK)
            .map_err(|s| format!("cannot set the tick period: {s:?}"))?;
        let default_group =
            GroupId::parse(UNMAPPED_GROUP).map_err(|e| format!("default group: {}", e.0))?;
        host::log(LogLevel::Info, "emr-edge service started");
        Ok(Self {
            ledger: Ledger::new(config.retention),
            board: Board::default(),
            queue_id,
            default_group,
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
        self.maintain(now, false);
    }

    fn record(&mut self, q: &QueuedEvent, now: DateTime<Utc>) {
        let group = q
            .event
            .group
            .clone()
            .unwrap_or_else(|| self.default_group.clone());
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
        self.maintain(host::now(), true);
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
            for key in self.ledger.expire(now) {
                self.metrics.expired.add(1);
                self.board.mark(&key);
                self.state_dirty = true;
                audit(
                    json!({"audit": "expired", "at": now.to_rfc3339(), "incident": key.to_string()}),
                );
            }
        }
        // Status is published at most every few milliseconds under load, so
        // one flood of events costs one write per bucket, not one per event.
        if self.board.is_dirty() && (from_tick || due(self.last_status, STATUS_EVERY_MS)) {
            self.last_status = now;
            self.publish_status();
        }
        if self.state_dirty && (from_tick || due(self.last_state, TICK_MS)) {
            self.last_state = now;
            self.publish_state(now);
        }
    }

    fn publish_status(&mut self) {
        if let Err(e) = self.board.publish(&self.ledger, &Shared) {
            host::log(
                LogLevel::Error,
                &format!("emr-edge: cannot publish status: {e:?}"),
            );
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
        let groups: Vec<_> = self
            .ledger
            .desired()
            .into_iter()
            .map(|(id, d)| json!({"id": id, "desired": d}))
            .collect();
        let state = json!({"updatedAt": now.to_rfc3339(), "groups": groups});
        if let Err(e) =
            hostcalls::set_shared_data(status::STATE_KEY, Some(state.to_string().as_bytes()), None)
        {
            host::log(
                LogLevel::Error,
                &format!("emr-edge: cannot publish state: {e:?}"),
            );
        }
    }

    pub fn on_http_call_response(
        &mut self,
        _token_id: u32,
        _num_headers: usize,
        _body_size: usize,
    ) {
    }
}

/// One JSON line per decision, for auditors; never holds a secret.
fn audit(v: serde_json::Value) {
    host::log(LogLevel::Info, &v.to_string());
}
