//! The HTTP filter: hands each request to `emr_core::intake` and sends what
//! it decides.
//!
//! Headers return `Continue` (pausing there stalls the stream); the body
//! callback pauses until end of stream, so `envoy.filters.http.buffer` must
//! follow this filter. A body followed by trailers (HTTP/2, or HTTP/1.1
//! chunked where Envoy keeps trailers) never reaches end of stream in the
//! body callback: the trailers callback is its end, and is handled the same
//! way — otherwise the request would go on to the router unauthenticated. A
//! request that is not ours is never touched.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use chrono::{DateTime, Utc};
use emr_core::callout::CallResult;
use emr_core::config::{Config, StatusAccess};
use emr_core::event::Source;
use emr_core::intake::{
    BodyStep, Handled, HeadersStep, Intake, Note, NoteLevel, Pending, Response,
};
use emr_core::log_budget::NoteBudget;
use emr_core::store::Backlog;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use crate::host::{self, Queue, Shared};
use crate::metrics::IntakeMetrics;

/// Per-VM state shared by every stream of the filter.
pub struct IntakeRoot {
    shared: Rc<StreamShared>,
}

struct StreamShared {
    config: Config,
    metrics: IntakeMetrics,
    queue_id: Cell<Option<u32>>,
    service: emr_core::liveness::Watch,
    backlog: Backlog,
    /// Bounds the log lines a flood of refusals writes (this VM's share).
    notes: RefCell<NoteBudget>,
}

impl IntakeRoot {
    pub fn new(config: Config) -> Self {
        let shared = Rc::new(StreamShared {
            config,
            metrics: IntakeMetrics::define(),
            queue_id: Cell::new(None),
            service: emr_core::liveness::Watch::default(),
            backlog: Backlog::default(),
            notes: RefCell::new(NoteBudget::default()),
        });
        // Buckets must exist before the first CAS write; the service creates
        // them too, whichever starts first.
        let _ = emr_core::dedupe::Dedupe::new(shared.config.intake.dedupe).create_keys(&Shared);
        let _ = emr_core::quota::create_keys(&Shared);
        let _ = emr_core::ignored::create_keys(&Shared);
        // Say loudly what takes requests without a credential: fine for a
        // local demo, a finding anywhere else.
        let open = shared.config.sources.insecure_sources();
        if !open.is_empty() {
            let names: Vec<&str> = open.iter().map(|s| s.as_str()).collect();
            host::log(
                LogLevel::Warn,
                &format!(
                    "routes accepting deliveries without a credential (insecure): {}",
                    names.join(", ")
                ),
            );
        }
        if matches!(shared.config.status, StatusAccess::Open) {
            host::log(
                LogLevel::Warn,
                "/emr/* is served without a credential (status.insecure)",
            );
        }
        Self { shared }
    }

    pub fn new_stream(&self) -> Stream {
        Stream {
            root: Rc::clone(&self.shared),
            waiting: None,
            committing: None,
        }
    }
}

/// One request's context.
pub struct Stream {
    root: Rc<StreamShared>,
    /// Set when the headers said "ours, read the body".
    waiting: Option<(Source, Vec<(String, String)>)>,
    /// Cluster mode: the delivery waiting for etcd, and the call's token.
    committing: Option<(u32, Pending)>,
}

impl Stream {
    fn intake<'a>(&'a self, queue: &'a Queue<'a>) -> Intake<'a> {
        Intake {
            config: &self.root.config,
            store: &Shared,
            sink: queue,
        }
    }

    fn queue(&self, now: DateTime<Utc>) -> Queue<'_> {
        Queue {
            id: &self.root.queue_id,
            service: &self.root.service,
            backlog: &self.root.backlog,
            metrics: &self.root.metrics,
            now,
        }
    }

    /// Counts what the core decided, and logs it within the VM's budget.
    fn record<T>(&self, out: &Handled<T>, now: DateTime<Utc>) {
        self.root.metrics.count(&out.counters);
        match self.root.notes.try_borrow_mut() {
            Ok(mut budget) => log_notes(&budget.lines(out.notes.clone(), now)),
            // Not reentrant, so never busy; were it, log rather than lose.
            Err(_) => log_notes(&out.notes),
        }
    }

    fn respond(&self, r: &Response) -> Action {
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        if let Err(s) = hostcalls::send_http_response(u32::from(r.status), headers, Some(&r.body)) {
            host::log(
                LogLevel::Error,
                &format!("emr-edge could not send a local reply: {s:?}"),
            );
        }
        Action::Pause
    }

    /// The request is complete: hands its buffered body to the core and
    /// sends the answer.
    fn finish_body(&mut self) -> Action {
        let Some((source, headers)) = self.waiting.take() else {
            return Action::Continue;
        };
        // One byte over the limit is enough for the core to refuse it; the
        // host copies at most what it buffered.
        let limit = self.root.config.intake.max_body_bytes.saturating_add(1);
        let now = host::now();
        let queue = self.queue(now);
        let out = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, limit) {
            // `None` when nothing was buffered: trailers with no body.
            Ok(body) => {
                self.intake(&queue)
                    .on_body(source, &headers, &body.unwrap_or_default(), now)
            }
            Err(s) => {
                host::log(
                    LogLevel::Error,
                    &format!("emr-edge could not read a request body: {s:?}"),
                );
                self.intake(&queue)
                    .refuse_unreadable_body()
                    .map(BodyStep::Respond)
            }
        };
        self.record(&out, now);
        match out.value {
            BodyStep::Respond(r) => self.respond(&r),
            // Cluster mode: the stream waits while etcd records it. The call
            // is made before the stream is answered, so its answer comes
            // back here (`on_http_call_response`).
            BodyStep::Commit(c) => match host::dispatch(&c.call) {
                Some(token) => {
                    self.committing = Some((token, c.pending));
                    Action::Pause
                }
                None => self.committed(c.pending, &CallResult::Failed),
            },
        }
    }

    /// The delivery's commit was answered: the answer goes out.
    fn committed(&self, pending: Pending, result: &CallResult) -> Action {
        let now = host::now();
        let queue = self.queue(now);
        let out = self.intake(&queue).on_commit(pending, result);
        self.record(&out, now);
        self.respond(&out.value)
    }
}

impl Context for Stream {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _: usize,
    ) {
        match self.committing.take() {
            Some((token, pending)) if token == token_id => {
                let result = host::call_result(body_size);
                self.committed(pending, &result);
            }
            other => self.committing = other,
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let headers = hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default();
        let pseudo = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default()
        };
        let (method, path) = (pseudo(":method"), pseudo(":path"));
        #[cfg(feature = "crash-test")]
        crate::crash::intake(path);
        let now = host::now();
        let queue = self.queue(now);
        let out = self
            .intake(&queue)
            .on_headers(method, path, &headers, end_of_stream, now);
        self.record(&out, now);
        match out.value {
            HeadersStep::PassThrough => Action::Continue,
            HeadersStep::Respond(r) => self.respond(&r),
            HeadersStep::ReadBody(source) => {
                self.waiting = Some((source, headers));
                Action::Continue
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.waiting.is_none() {
            return Action::Continue;
        }
        if !end_of_stream {
            // Refuse early rather than buffer past the limit.
            if body_size > self.root.config.intake.max_body_bytes {
                self.waiting = None;
                let now = host::now();
                let queue = self.queue(now);
                let out = self.intake(&queue).refuse_too_large();
                self.record(&out, now);
                return self.respond(&out.value);
            }
            return Action::Pause;
        }
        self.finish_body()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers end the request: what the body callbacks buffered (by
        // pausing) is the whole body, or there was none.
        if self.waiting.is_none() {
            return Action::Continue;
        }
        self.finish_body()
    }
}

fn log_notes(notes: &[Note]) {
    for n in notes {
        let level = match n.level {
            NoteLevel::Info => LogLevel::Info,
            NoteLevel::Warn => LogLevel::Warn,
        };
        host::log(level, &n.message);
    }
}

/// What an unconfigured root hands out: does nothing.
pub struct PassThrough;

impl Context for PassThrough {}
impl HttpContext for PassThrough {}
