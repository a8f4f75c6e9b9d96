//! The host, behind the core's traits: shared data, the event queue, the
//! clock, logs and plugin properties. Every host call's error is handled here
//! (the SDK's trait helpers `unwrap` them, so they are not used).

use std::cell::Cell;

use std::time::Duration;

use chrono::{DateTime, Utc};
use emr_core::callout::{CallResult, HttpCall};
use emr_core::liveness;
use emr_core::store::{Backlog, EventSink, SharedStore, StoreError, Versioned};

use crate::metrics::IntakeMetrics;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, Status};

/// The queue from the filters to the service.
pub const QUEUE_NAME: &str = "emr.events";
/// Used when the host does not tell the plugin its `vm_id`.
pub const DEFAULT_VM_ID: &str = "emr-edge";

pub fn log(level: LogLevel, message: &str) {
    // Nothing useful to do when logging itself fails.
    let _ = hostcalls::log(level, message);
}

thread_local! {
    /// The host's log level as last read; `Trace` (log everything) until
    /// then. A VM lives on one thread, so this is per VM.
    static LOG_LEVEL: Cell<LogLevel> = const { Cell::new(LogLevel::Trace) };
}

/// Reads the host's log level again: it can change at run time (Envoy's
/// `/logging`), and one host call per batch of work is cheap where one per
/// line is not.
pub fn refresh_log_level() {
    if let Ok(level) = hostcalls::get_log_level() {
        LOG_LEVEL.with(|l| l.set(level));
    }
}

/// Whether the host would write a line at `level` (as of the last
/// [`refresh_log_level`]): lines it would drop need not be built.
pub fn logs(level: LogLevel) -> bool {
    LOG_LEVEL.with(|l| level as u32 >= l.get() as u32)
}

pub fn now() -> DateTime<Utc> {
    hostcalls::get_current_time()
        .ok()
        .map(DateTime::<Utc>::from)
        .unwrap_or_default()
}

fn property(path: &str) -> Option<String> {
    hostcalls::get_property(vec![path])
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
}

pub fn root_id() -> String {
    property("plugin_root_id").unwrap_or_default()
}

pub fn vm_id() -> String {
    property("plugin_vm_id")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_VM_ID.to_owned())
}

pub fn plugin_configuration() -> Vec<u8> {
    hostcalls::get_buffer(
        proxy_wasm::types::BufferType::PluginConfiguration,
        0,
        usize::MAX,
    )
    .ok()
    .flatten()
    .unwrap_or_default()
}

fn store_error(s: Status) -> StoreError {
    match s {
        Status::CasMismatch => StoreError::CasMismatch,
        other => StoreError::Host(format!("{other:?}")),
    }
}

/// Proxy-wasm shared data (per `vm_id`).
pub struct Shared;

impl SharedStore for Shared {
    fn get(&self, key: &str) -> Result<Versioned, StoreError> {
        let (value, cas) = hostcalls::get_shared_data(key).map_err(store_error)?;
        Ok(Versioned { value, cas })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(store_error)
    }
}

/// The shared queue, resolved lazily: the singleton registers it. Before
/// queueing it checks that the service is alive and keeping up.
pub struct Queue<'a> {
    pub id: &'a Cell<Option<u32>>,
    /// The VM's look at the service's heartbeat.
    pub service: &'a liveness::Watch,
    /// Refuses events while the service is too far behind.
    pub backlog: &'a Backlog,
    /// Accepted and processed counts, for the backlog.
    pub metrics: &'a IntakeMetrics,
    /// The request's time, as the intake was given it.
    pub now: DateTime<Utc>,
}

impl Queue<'_> {
    fn resolve(&self) -> Result<u32, StoreError> {
        if let Some(id) = self.id.get() {
            return Ok(id);
        }
        match hostcalls::resolve_shared_queue(&vm_id(), QUEUE_NAME) {
            Ok(Some(id)) => {
                self.id.set(Some(id));
                Ok(id)
            }
            Ok(None) => Err(StoreError::Host(
                "the emr-edge service is not running (no event queue)".into(),
            )),
            Err(s) => Err(store_error(s)),
        }
    }
}

impl EventSink for Queue<'_> {
    fn enqueue(&self, message: &[u8]) -> Result<(), StoreError> {
        // Nobody would ever process an event for a stopped service: the
        // sender must keep it (503, retried).
        self.service.admit(self.now, || {
            hostcalls::get_shared_data(liveness::HEARTBEAT_KEY)
                .ok()
                .and_then(|(v, _)| v)
        })?;
        self.backlog.admit(|| self.metrics.queue_counts())?;
        let id = self.resolve()?;
        hostcalls::enqueue_shared_queue(id, Some(message)).map_err(|s| {
            // A stale id (service restarted): resolve again next time.
            self.id.set(None);
            store_error(s)
        })
    }
}

/// Dispatches `call`; the host's token, or `None` (logged) when the host
/// refused it (an unknown cluster, say).
pub fn dispatch(call: &HttpCall) -> Option<u32> {
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
        Ok(token) => Some(token),
        Err(s) => {
            // Never log the call itself: it carries the credentials.
            log(
                LogLevel::Error,
                &format!(
                    "emr-edge: cannot call cluster {} ({} {}): {s:?}",
                    call.cluster, call.method, call.path
                ),
            );
            None
        }
    }
}

/// The answer to the call being reported, read in `on_http_call_response`.
/// A failed call (reset, timeout, no upstream) arrives with no headers.
pub fn call_result(body_size: usize) -> CallResult {
    let headers = hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default();
    let status = headers
        .iter()
        .find(|(n, _)| n == ":status")
        .and_then(|(_, v)| v.parse::<u16>().ok());
    match status {
        Some(status) => CallResult::Response {
            status,
            body: hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default(),
            headers,
        },
        None => CallResult::Failed,
    }
}
