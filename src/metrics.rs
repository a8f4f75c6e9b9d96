//! Filter metrics: Envoy shows them as `wasmcustom.emr.*` on `/stats`,
//! summed over every VM.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use emr_core::intake::Counter;

/// A metric id, or nothing when the host refused to define it (metrics must
/// never break request handling).
#[derive(Debug, Clone, Copy, Default)]
pub struct Metric(Option<u32>);

impl Metric {
    pub fn counter(name: &str) -> Self {
        Metric(hostcalls::define_metric(MetricType::Counter, name).ok())
    }

    pub fn gauge(name: &str) -> Self {
        Metric(hostcalls::define_metric(MetricType::Gauge, name).ok())
    }

    pub fn histogram(name: &str) -> Self {
        Metric(hostcalls::define_metric(MetricType::Histogram, name).ok())
    }

    pub fn record(self, v: u64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::record_metric(id, v);
        }
    }

    pub fn add(self, n: u64) {
        // Adding nothing is not worth a host call.
        if let Some(id) = self.0.filter(|_| n > 0) {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The metric's value, summed over every VM that defined the name.
    pub fn value(self) -> Option<u64> {
        self.0.and_then(|id| hostcalls::get_metric(id).ok())
    }

    pub fn set(self, v: u64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::record_metric(id, v);
        }
    }
}

/// The intake's counters.
#[derive(Debug, Clone, Copy)]
pub struct IntakeMetrics {
    accepted: Metric,
    replayed: Metric,
    ignored: Metric,
    conflicts: Metric,
    refused: [(u16, Metric); 10],
    refused_other: Metric,
    unavailable: Metric,
    dedupe_evicted: Metric,
    cas_retries: Metric,
    status_served: Metric,
    resumes_queued: Metric,
    delivery_ids_reused: Metric,
    /// Every message put on the shared queue, and (the service's) taken
    /// off it: their difference is the queue's depth.
    queued: Metric,
    taken: Metric,
    renewals_dropped: Metric,
}

impl IntakeMetrics {
    pub fn define() -> Self {
        let refused = |code: u16| (code, Metric::counter(&format!("emr.intake.refused.{code}")));
        Self {
            accepted: Metric::counter("emr.intake.accepted"),
            replayed: Metric::counter("emr.intake.replayed"),
            ignored: Metric::counter("emr.intake.ignored"),
            conflicts: Metric::counter("emr.intake.conflicts"),
            refused: [
                refused(400),
                refused(401),
                refused(403),
                refused(404),
                refused(405),
                refused(409),
                refused(413),
                refused(415),
                refused(422),
                refused(429),
            ],
            refused_other: Metric::counter("emr.intake.refused.other"),
            unavailable: Metric::counter("emr.intake.unavailable"),
            dedupe_evicted: Metric::counter("emr.intake.dedupe_evicted"),
            cas_retries: Metric::counter("emr.intake.cas_retries"),
            status_served: Metric::counter("emr.status.served"),
            resumes_queued: Metric::counter("emr.intake.resumes_queued"),
            delivery_ids_reused: Metric::counter("emr.intake.delivery_id_reused"),
            queued: Metric::counter("emr.intake.queued"),
            renewals_dropped: Metric::counter("emr.intake.renewals_dropped"),
            taken: Metric::counter(emr_core::service::MESSAGES_METRIC),
        }
    }

    /// Messages put on the queue by every filter, and taken off it by the
    /// service.
    pub fn queue_counts(&self) -> Option<(u64, u64)> {
        Some((self.queued.value()?, self.taken.value()?))
    }

    pub fn count(&self, counters: &[Counter]) {
        for c in counters {
            match *c {
                Counter::Accepted => self.accepted.add(1),
                Counter::Replayed => self.replayed.add(1),
                Counter::Ignored => self.ignored.add(1),
                Counter::Conflict => self.conflicts.add(1),
                Counter::Refused(code) => self
                    .refused
                    .iter()
                    .find(|(c, _)| *c == code)
                    .map_or(self.refused_other, |(_, m)| *m)
                    .add(1),
                Counter::Unavailable => self.unavailable.add(1),
                Counter::DedupeEvicted(n) => self.dedupe_evicted.add(u64::from(n)),
                Counter::CasRetries(n) => self.cas_retries.add(u64::from(n)),
                Counter::StatusServed => self.status_served.add(1),
                Counter::ResumeQueued => self.resumes_queued.add(1),
                Counter::Queued => self.queued.add(1),
                Counter::RenewalDropped => self.renewals_dropped.add(1),
                Counter::DeliveryIdReused => self.delivery_ids_reused.add(1),
            }
        }
    }
}
