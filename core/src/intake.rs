//! The intake: what the HTTP filter does with one request, as pure decisions.
//!
//! Routes: `POST /webhooks/{source}` takes incidents from each source
//! (`canonical`, `standard`, `pagerduty`, `servicenow`, `jsm`, `opsgenie`,
//! `alertmanager`); `GET /emr/status/{id}` and `GET /emr/state` answer from
//! what the service published, `GET /emr/health` says whether the service
//! is alive ([`crate::liveness`]), `GET /emr/groups/{id}` and
//! `GET /emr/incidents/{id}` answer flat for data actions
//! ([`crate::data_actions`]), and `POST /emr/groups/{id}/resume` queues a
//! control message for the service (the filter cannot call Genesys: it ends
//! a person's override of that group, see `crate::watchdog`) — all behind the
//! status credential (`status` in config). Anything else passes through the
//! filter untouched. The filter
//! calls [`Intake::on_headers`] and, when a body is needed,
//! [`Intake::on_body`] at end of stream; both return the response to send,
//! the counters to bump and the lines to log.
//!
//! A webhook goes through: route, method, content type and declared size
//! (headers) → size, authentication ([`crate::auth`], failing closed),
//! parsing and mapping ([`crate::sources`]) → dedupe and queueing, item by
//! item. Nothing is read from a body whose credential did not check out.
//!
//! **Answers.** A payload with one item (every source but Alertmanager, and
//! an Alertmanager group of one alert) is answered with the canonical
//! contract's 202 body, `{correlationId, routingMode, status, statusUrl}`,
//! or `{correlationId, status: "IGNORED", reason}` for an event no mapping
//! rule takes. A payload with several items is answered `{"items": [...]}`,
//! one such object per item in payload order. `Idempotent-Replayed: true`
//! is set when every item had been seen before.
//!
//! **Dedupe.** The keys are built in [`crate::event`] (`idempotency_key`,
//! `delivery_key`, `ignored_key`; docs/sources.md lists them). A delivery
//! id seen before gets the first answer again and nothing else happens.
//! Otherwise every item is recorded; a conflict on any item refuses the whole
//! payload (409) and forgets what this request recorded, so nothing is half
//! applied. Events are then queued in order; one that cannot be queued is
//! forgotten together with those after it and the delivery id, so the
//! sender's retry processes exactly what is missing.

use std::cell::OnceCell;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::auth::hex;
use crate::config::{Config, StatusAccess};
use crate::dedupe::{digest, Dedupe, Fingerprint, FingerprintBuilder, FirstAnswer, Outcome};
use crate::event::{
    self, Control, ControlMessage, CorrelationId, GroupId, IncidentEvent, IncidentKey, QueuedEvent,
    RoutingMode, Source,
};
use crate::ignored;
use crate::liveness::{self, Liveness};
use crate::problem::{Problem, PROBLEM_CONTENT_TYPE};
use crate::quota;
use crate::sources::{self, Delivery, Item, Parsed};
use crate::status;
use crate::store::{EventSink, SharedStore, StoreError};
use crate::text;

mod commit;
mod cross_site;

mod accept;
mod emr;
mod flat;

pub use commit::{BodyStep, Commit, Pending};
pub use emr::status_url;

pub const WEBHOOK_PREFIX: &str = "/webhooks/";
pub const STATUS_PREFIX: &str = "/emr/status/";
pub const STATE_PATH: &str = "/emr/state";
pub const HEALTH_PATH: &str = "/emr/health";
pub const READY_PATH: &str = "/emr/ready";
pub const GROUPS_PREFIX: &str = "/emr/groups/";
const RESUME_SUFFIX: &str = "/resume";

/// On every answer: a browser must take the body for the JSON it says it
/// is, never sniff it into something it would render or run (a detail can
/// quote the sender's own text).
fn nosniff() -> (&'static str, String) {
    ("x-content-type-options", "nosniff".into())
}

/// A response for the filter to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type", "application/json".into()),
                ("cache-control", "no-store".into()),
                nosniff(),
            ],
            body,
        }
    }

    fn problem(p: &Problem) -> Self {
        let mut headers = vec![
            ("content-type", PROBLEM_CONTENT_TYPE.to_owned()),
            ("cache-control", "no-store".into()),
            nosniff(),
        ];
        headers.extend(p.headers.iter().cloned());
        Self {
            status: p.status,
            headers,
            body: p.to_json(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What happened, for the filter's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// One event queued for the service.
    Accepted,
    /// One item (or a whole delivery, by its delivery id) seen before.
    Replayed,
    /// One item no mapping rule takes, answered `IGNORED` the first time.
    Ignored,
    Conflict,
    /// Refused with this status (4xx); 401 covers every failed credential.
    Refused(u16),
    /// Could not record or queue it (503): the sender should retry.
    Unavailable,
    DedupeEvicted(u32),
    CasRetries(u32),
    StatusServed,
    /// A resume request queued for the service.
    ResumeQueued,
    /// One message of any kind put on the service's queue (an event, a
    /// renewal, a resume): with [`crate::service::MESSAGES_METRIC`], the
    /// queue's depth, which the backlog gate reads.
    Queued,
    /// A replayed activation's renewal that could not be queued.
    RenewalDropped,
    /// A delivery id seen before came with another body: its events were
    /// judged on their own.
    DeliveryIdReused,
}

/// How loud a [`Note`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteLevel {
    Info,
    Warn,
}

/// A line for the filter to log. Notes are built from fixed text, ids and
/// problem details, none of which ever holds a header value or a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub level: NoteLevel,
    pub message: String,
    /// Set on a kind of line anyone can make the filter repeat: written
    /// within a budget ([`crate::log_budget::NoteBudget`]).
    pub repeated: Option<Repeated>,
}

/// A kind of [`Note`] a flood repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Repeated {
    /// A delivery to this source refused for its credential (401).
    Unauthenticated(Source),
    /// A delivery to this source refused for its share of open incidents
    /// (429): a holder of its credential can send them as fast as a 401.
    OverShare(Source),
    /// A delivery id of this source seen before with another body.
    DeliveryIdReused(Source),
    /// A replayed activation of this source whose renewal could not be
    /// queued (the queue is full or gone): a replay flood repeats it.
    RenewalDropped(Source),
}

/// A decision, its counters and what to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled<T> {
    pub value: T,
    pub counters: Vec<Counter>,
    pub notes: Vec<Note>,
}

impl<T> Handled<T> {
    fn new(value: T, counters: Vec<Counter>) -> Self {
        Self {
            value,
            counters,
            notes: Vec::new(),
        }
    }

    fn note(mut self, level: NoteLevel, message: String) -> Self {
        self.notes.push(Note {
            level,
            message,
            repeated: None,
        });
        self
    }

    fn note_repeated(mut self, kind: Repeated, message: String) -> Self {
        self.notes.push(Note {
            level: NoteLevel::Warn,
            message,
            repeated: Some(kind),
        });
        self
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Handled<U> {
        Handled {
            value: f(self.value),
            counters: self.counters,
            notes: self.notes,
        }
    }
}

/// A refusal, counted by its status.
fn refused<T: From<Response>>(p: &Problem) -> Handled<T> {
    Handled::new(
        Response::problem(p).into(),
        vec![Counter::Refused(p.status)],
    )
}

/// What to do after the request headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadersStep {
    /// Not ours: let the request through untouched.
    PassThrough,
    /// Answer now.
    Respond(Response),
    /// Wait for the whole body, then call [`Intake::on_body`] with this.
    ReadBody(Source),
}

impl From<Response> for HeadersStep {
    fn from(r: Response) -> Self {
        HeadersStep::Respond(r)
    }
}

/// The route a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route<'a> {
    Webhook(&'a str),
    /// `/webhooks` itself: ours, but nothing there.
    WebhooksRoot,
    /// Under `/emr`: needs the status credential.
    Emr(EmrRoute<'a>),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EmrRoute<'a> {
    Status(&'a str),
    State,
    /// Whether the service is alive: for liveness probes.
    Health,
    /// Whether this replica takes webhooks: for readiness probes.
    Ready,
    /// `POST /emr/groups/{id}/resume`.
    Resume(&'a str),
    /// `GET /emr/groups/{id}`: a group's routing, flat.
    Group(&'a str),
    /// `GET /emr/incidents/{id}`: an incident's status, flat.
    Incident(&'a str),
    Unknown,
}

fn route(path: &str) -> Route<'_> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if let Some(rest) = path.strip_prefix(WEBHOOK_PREFIX) {
        Route::Webhook(rest)
    } else if path == "/webhooks" {
        Route::WebhooksRoot
    } else if let Some(rest) = path.strip_prefix(STATUS_PREFIX) {
        Route::Emr(EmrRoute::Status(rest))
    } else if path == STATE_PATH {
        Route::Emr(EmrRoute::State)
    } else if path == HEALTH_PATH {
        Route::Emr(EmrRoute::Health)
    } else if path == READY_PATH {
        Route::Emr(EmrRoute::Ready)
    } else if let Some(id) = path
        .strip_prefix(GROUPS_PREFIX)
        .and_then(|rest| rest.strip_suffix(RESUME_SUFFIX))
        .filter(|id| !id.is_empty() && !id.contains('/'))
    {
        Route::Emr(EmrRoute::Resume(id))
    } else if let Some(id) = path
        .strip_prefix(GROUPS_PREFIX)
        .filter(|id| !id.is_empty() && !id.contains('/'))
    {
        Route::Emr(EmrRoute::Group(id))
    } else if let Some(id) = path
        .strip_prefix(crate::data_actions::INCIDENTS_PREFIX)
        .filter(|id| !id.is_empty() && !id.contains('/'))
    {
        Route::Emr(EmrRoute::Incident(id))
    } else if path == "/emr" || path.starts_with("/emr/") {
        Route::Emr(EmrRoute::Unknown)
    } else {
        Route::Other
    }
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `application/json`, with parameters, or any `application/*+json`.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The intake over the host's shared data and queue.
pub struct Intake<'a> {
    pub config: &'a Config,
    pub store: &'a dyn SharedStore,
    pub sink: &'a dyn EventSink,
}

impl Intake<'_> {
    pub fn on_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        end_of_stream: bool,
        now: DateTime<Utc>,
    ) -> Handled<HeadersStep> {
        match route(path) {
            Route::Other => Handled::new(HeadersStep::PassThrough, vec![]),
            Route::WebhooksRoot => refused(&Problem::not_found(format!(
                "no emr-edge resource at {}",
                text::quoted(path)
            ))),
            Route::Webhook(name) => self.webhook_headers(name, method, headers, end_of_stream, now),
            Route::Emr(emr) => {
                // Before anything else, so nothing under /emr (not even
                // which paths exist) is told to an unauthenticated caller.
                if let Err(p) = self.status_access(headers) {
                    return refused(&p);
                }
                match emr {
                    EmrRoute::Unknown => refused(&Problem::not_found(format!(
                        "no emr-edge resource at {}",
                        text::quoted(path)
                    ))),
                    EmrRoute::Status(_)
                    | EmrRoute::State
                    | EmrRoute::Health
                    | EmrRoute::Ready
                    | EmrRoute::Group(_)
                    | EmrRoute::Incident(_)
                        if method != "GET" && method != "HEAD" =>
                    {
                        refused(&Problem::method_not_allowed("GET, HEAD"))
                    }
                    EmrRoute::Resume(_) if method != "POST" => {
                        refused(&Problem::method_not_allowed("POST"))
                    }
                    EmrRoute::Status(id) => {
                        let query = path.split_once('?').map(|(_, q)| q);
                        self.status(id, query, now)
                    }
                    EmrRoute::State => self.state(),
                    EmrRoute::Health => self.health(now),
                    EmrRoute::Ready => self.ready(now),
                    EmrRoute::Group(id) => self.group_routing(id),
                    EmrRoute::Incident(id) => {
                        let query = path.split_once('?').map(|(_, q)| q);
                        self.incident_summary(id, query)
                    }
                    EmrRoute::Resume(id) => match cross_site::check(headers) {
                        Ok(()) => self.resume(id, now),
                        Err(p) => refused(&p),
                    },
                }
            }
        }
    }

    fn webhook_headers(
        &self,
        name: &str,
        method: &str,
        headers: &[(String, String)],
        end_of_stream: bool,
        now: DateTime<Utc>,
    ) -> Handled<HeadersStep> {
        let Some(source) = Source::from_path_segment(name) else {
            let known: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
            return refused(&Problem::not_found(format!(
                "unknown incident source {}; known: {}",
                text::quoted(name),
                known.join(", ")
            )));
        };
        if method != "POST" {
            return refused(&Problem::method_not_allowed("POST"));
        }
        match header(headers, "content-type") {
            Some(ct) if is_json(ct) => {}
            Some(ct) => {
                return refused(
                    &Problem::new(
                        415,
                        // The sender's header, bounded: it may be of any length.
                        format!("expected application/json, got {}", text::quoted(ct)),
                    )
                    .with_error("content-type", "must be application/json"),
                );
            }
            None => {
                return refused(
                    &Problem::new(415, "the request has no content-type")
                        .with_error("content-type", "must be application/json"),
                )
            }
        }
        let declared = header(headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.config.intake.max_body_bytes as u64) {
            return refused(&self.too_large());
        }
        if end_of_stream {
            return self
                .on_body(source, headers, &[], now)
                .map(|step| match step {
                    BodyStep::Respond(r) => HeadersStep::Respond(r),
                    // An empty body carries no event, so nothing is committed;
                    // were it otherwise, the stream cannot wait here: 503,
                    // nothing kept, and the sender retries.
                    BodyStep::Commit(c) => HeadersStep::Respond(
                        self.on_commit(c.pending, &crate::callout::CallResult::Failed)
                            .value,
                    ),
                });
        }
        Handled::new(HeadersStep::ReadBody(source), vec![])
    }

    /// Whether `headers` may read `/emr/*`.
    fn status_access(&self, headers: &[(String, String)]) -> Result<(), Problem> {
        match &self.config.status {
            StatusAccess::Open => Ok(()),
            StatusAccess::Credential(c) => c.check(headers),
            StatusAccess::Closed => Err(Problem::new(
                401,
                "the /emr/* endpoints have no credential configured and refuse every \
                 request; configure status.auth",
            )
            .with_error(
                "authorization",
                "cannot be accepted: no status credential is configured",
            )),
        }
    }

    fn too_large(&self) -> Problem {
        Problem::new(
            413,
            format!(
                "the body is larger than {} bytes",
                self.config.intake.max_body_bytes
            ),
        )
        .with_error(
            "body",
            format!(
                "must be at most {} bytes",
                self.config.intake.max_body_bytes
            ),
        )
    }

    /// The 413 for a body that grew past the limit while streaming.
    pub fn refuse_too_large(&self) -> Handled<Response> {
        refused(&self.too_large())
    }

    /// The 503 for a body the host could not hand over: nothing was read,
    /// so the sender must send it again (a 4xx would make it give up).
    pub fn refuse_unreadable_body(&self) -> Handled<Response> {
        Handled::new(
            Response::problem(
                &Problem::new(503, "the request body could not be read; retry shortly")
                    .with_header("retry-after", "1"),
            ),
            vec![Counter::Unavailable],
        )
    }

    /// Puts one message on the service's queue, and counts it: every kind
    /// counts, so nothing can fill the queue behind the backlog gate's back.
    fn send(
        &self,
        message: &impl serde::Serialize,
        counters: &mut Vec<Counter>,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(message).map_err(|e| StoreError::Host(e.to_string()))?;
        self.sink.enqueue(&bytes)?;
        counters.push(Counter::Queued);
        Ok(())
    }

    fn unavailable<T>(&self, e: &StoreError) -> Handled<T>
    where
        T: From<Response>,
    {
        let detail = match e {
            StoreError::CasMismatch => "the dedupe store is contended; retry shortly".to_owned(),
            StoreError::Host(m) => format!("shared state unavailable: {m}; retry shortly"),
        };
        Handled::new(
            Response::problem(&Problem::new(503, detail).with_header("retry-after", "1")).into(),
            vec![Counter::Unavailable],
        )
    }
}

#[cfg(test)]
mod tests;
