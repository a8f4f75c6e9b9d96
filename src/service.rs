//! The singleton service's glue (`envoy.bootstrap.wasm`, main thread).
//! Every decision is `emr_core::service::Service`'s; this file does what
//! needs the host: it dequeues, dispatches the calls the service asks for
//! (keeping the host's token → callout map), reads their answers, and
//! writes the service's metrics and log lines.
//!
//! Upstream work lives here, not in the filter: a callout made from a stream
//! that was already answered never gets its response.

use std::collections::BTreeMap;
use std::time::Duration;

use emr_core::callout::HttpCall;
use emr_core::config::Config;
use emr_core::event::QueueMessage;
use emr_core::service::{self, Callout, Level, Out, Sample, Service};
use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

use crate::host::{self, Shared, QUEUE_NAME};
use crate::metrics::Metric;

pub struct ServiceRoot {
    service: Service,
    queue_id: u32,
    /// Host callout token → the state machine and op it belongs to.
    pending: BTreeMap<u32, Callout>,
    /// Every stat, defined at its first sample by the name the core gives.
    metrics: BTreeMap<&'static str, Metric>,
}

impl ServiceRoot {
    /// Creates the shared keys and the queue; safe to repeat, since Envoy may
    /// create main-thread root contexts more than once.
    pub fn start(config: Config) -> Result<Self, String> {
        service::create_keys(&config, &Shared)?;
        let queue_id = hostcalls::register_shared_queue(QUEUE_NAME)
            .map_err(|s| format!("cannot register the event queue: {s:?}"))?;
        let tick = Duration::from_millis(service::tick_ms(&config).unsigned_abs());
        hostcalls::set_tick_period(tick)
            .map_err(|s| format!("cannot set the tick period: {s:?}"))?;
        let (service, out) = Service::new(config, &Shared, host::now())?;
        let mut root = Self {
            service,
            queue_id,
            pending: BTreeMap::new(),
            metrics: BTreeMap::new(),
        };
        for name in service::COUNTERS {
            root.sample(name, Sample::Count(0));
        }
        root.sample(service::OPEN_GAUGE, Sample::Gauge(0));
        root.carry_out(out);
        Ok(root)
    }

    pub fn on_queue_ready(&mut self, queue_id: u32) {
        if queue_id != self.queue_id {
            return;
        }
        let now = host::now();
        host::refresh_log_level();
        let mut messages = Vec::new();
        let mut decode_errors = 0;
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
                Ok(m) => {
                    #[cfg(feature = "crash-test")]
                    if let QueueMessage::Event(q) = &m {
                        crate::crash::service(q.event.correlation_id.as_str());
                    }
                    messages.push(m);
                }
                Err(e) => {
                    decode_errors += 1;
                    host::log(
                        LogLevel::Error,
                        &format!("emr-edge: unreadable queued event: {e}"),
                    );
                }
            }
        }
        let audit_events = host::logs(LogLevel::Info);
        let out = self
            .service
            .on_messages(messages, decode_errors, audit_events, &Shared, now);
        self.carry_out(out);
    }

    pub fn on_tick(&mut self) {
        let now = host::now();
        host::refresh_log_level();
        let out = self.service.on_tick(&Shared, now);
        self.carry_out(out);
    }

    pub fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize) {
        let now = host::now();
        let Some(callout) = self.pending.remove(&token_id) else {
            host::log(
                LogLevel::Warn,
                &format!("emr-edge: answer for unknown callout {token_id}"),
            );
            return;
        };
        let result = host::call_result(body_size);
        let out = self.service.on_result(callout, result, &Shared, now);
        self.carry_out(out);
    }

    /// Dispatches the calls, writes the samples and the lines. A call that
    /// cannot even be dispatched goes back to the service as failed, which
    /// may ask for more.
    fn carry_out(&mut self, out: Out) {
        let mut work = vec![out];
        while let Some(out) = work.pop() {
            for (level, line) in out.logs {
                host::log(
                    match level {
                        Level::Info => LogLevel::Info,
                        Level::Warn => LogLevel::Warn,
                        Level::Error => LogLevel::Error,
                    },
                    &line,
                );
            }
            for (name, sample) in out.samples {
                self.sample(name, sample);
            }
            for (callout, call) in out.calls {
                if !self.dispatch(&call, callout) {
                    work.push(self.service.dispatch_failed(callout, &Shared, host::now()));
                }
            }
        }
    }

    fn sample(&mut self, name: &'static str, sample: Sample) {
        let metric = *self.metrics.entry(name).or_insert_with(|| match sample {
            Sample::Count(_) => Metric::counter(name),
            Sample::Histogram(_) => Metric::histogram(name),
            Sample::Gauge(_) => Metric::gauge(name),
        });
        match sample {
            Sample::Count(n) => metric.add(n),
            Sample::Histogram(v) => metric.record(v),
            Sample::Gauge(v) => metric.set(v),
        }
    }

    /// Whether the host took the call.
    fn dispatch(&mut self, call: &HttpCall, callout: Callout) -> bool {
        match host::dispatch(call) {
            Some(token) => {
                self.pending.insert(token, callout);
                true
            }
            None => false,
        }
    }
}
