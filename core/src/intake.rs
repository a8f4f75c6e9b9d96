//! The intake: what the HTTP filter does with one request, as pure decisions.
//!
//! Routes: `POST /webhooks/{source}` takes incidents from each source
//! (`canonical`, `standard`, `pagerduty`, `servicenow`, `jsm`, `opsgenie`,
//! `alertmanager`); `GET /emr/status/{id}` and `GET /emr/state` answer from
//! what the service published, `GET /emr/health` says whether the service
//! is alive ([`crate::liveness`]), and `POST /emr/groups/{id}/resume` queues a
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

use crate::auth::{self, hex};
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

mod cross_site;

pub const WEBHOOK_PREFIX: &str = "/webhooks/";
pub const STATUS_PREFIX: &str = "/emr/status/";
pub const STATE_PATH: &str = "/emr/state";
pub const HEALTH_PATH: &str = "/emr/health";
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

    fn map<U>(self, f: impl FnOnce(T) -> U) -> Handled<U> {
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
    /// `POST /emr/groups/{id}/resume`.
    Resume(&'a str),
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
    } else if let Some(id) = path
        .strip_prefix(GROUPS_PREFIX)
        .and_then(|rest| rest.strip_suffix(RESUME_SUFFIX))
        .filter(|id| !id.is_empty() && !id.contains('/'))
    {
        Route::Emr(EmrRoute::Resume(id))
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

/// One item of a 202: the canonical contract's accepted body, or an ignored
/// item's `{correlationId, status, reason}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemAnswer {
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
    fn event(ev: &IncidentEvent, answer: FirstAnswer, replayed: bool) -> Self {
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

/// Whether an event the status board does not show is waiting for the
/// service.
enum Queued {
    Yes(RoutingMode),
    /// Accepted, and recorded since: pruned or not yet published.
    Recorded,
    No,
}

/// The 404 for a resume of a group the config does not name.
fn unknown_group(group: &GroupId, known: &std::collections::BTreeSet<GroupId>) -> Problem {
    /// Listed by name at most; a config names few groups.
    const LISTED: usize = 8;
    let listed: Vec<&str> = known.iter().take(LISTED).map(GroupId::as_str).collect();
    let message = match (known.len(), listed.join(", ")) {
        (0, _) => "is not configured: the config names no emergency group".to_owned(),
        (n, names) if n > LISTED => {
            format!("is not configured: the config names {n} emergency groups ({names}, …)")
        }
        (_, names) => format!("is not configured: the config names {names}"),
    };
    Problem::not_found(format!(
        "emergency group {} is not one emr-edge drives: only the groups its config names \
         (genesys.default_group, groups_by_incident_type, datatable.rows_by_group, \
         watchdog.groups, rules' group) can be resumed",
        text::quoted(group.as_str())
    ))
    .with_error("group", message)
}

/// The value of `name` in a query string (`a=1&name=value`), undecoded:
/// the values asked for here are plain words.
fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What `?source=` may name.
fn source_names() -> String {
    let names: Vec<&str> = Source::ANY.iter().map(|s| s.as_str()).collect();
    format!("must be one of {}", names.join(", "))
}

/// Where an incident's status is read: qualified by its source, since an
/// id is unique within its source only.
pub fn status_url(source: Source, id: &str) -> String {
    format!("{STATUS_PREFIX}{id}?source={source}")
}

/// The 202 for a payload's items (see the module doc for the shapes).
fn accepted(answers: &[ItemAnswer]) -> Response {
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
fn conflict(ev: &IncidentEvent) -> Problem {
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

/// What judging a delivery's items found.
struct JudgedItems {
    answers: Vec<ItemAnswer>,
    /// New events, with their dedupe keys.
    to_queue: Vec<(IncidentEvent, String)>,
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
                    EmrRoute::Status(_) | EmrRoute::State | EmrRoute::Health
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
                .map(HeadersStep::Respond);
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

    fn state(&self) -> Handled<HeadersStep> {
        match self.store.get(status::STATE_KEY) {
            Ok(v) => {
                let body = v
                    .value
                    .filter(|b| !b.is_empty())
                    .unwrap_or_else(|| b"{\"groups\":[]}".to_vec());
                Handled::new(
                    HeadersStep::Respond(Response::json(200, body)),
                    vec![Counter::StatusServed],
                )
            }
            Err(e) => self.unavailable(&e),
        }
    }

    /// `GET /emr/health`: 200 while the service beats, 503 when it has
    /// stopped or not started (see [`crate::liveness`]).
    fn health(&self, now: DateTime<Utc>) -> Handled<HeadersStep> {
        let stored = match self.store.get(liveness::HEARTBEAT_KEY) {
            Ok(v) => v.value,
            Err(e) => return self.unavailable(&e),
        };
        let problem = match Liveness::assess(stored.as_deref(), now) {
            Liveness::Alive { age_ms } => {
                // Up, but told by Genesys it cannot switch: still a 200, so
                // a liveness probe does not restart it for a wrong secret.
                let reasons = match self.store.get(liveness::HEALTH_KEY) {
                    Ok(v) => liveness::read_health(v.value.as_deref()),
                    Err(_) => Vec::new(),
                };
                let body = if reasons.is_empty() {
                    serde_json::json!({"status": "ok", "heartbeatAgeMs": age_ms})
                } else {
                    serde_json::json!({"status": "degraded", "reasons": reasons,
                                       "heartbeatAgeMs": age_ms, "stateUrl": STATE_PATH})
                };
                return Handled::new(
                    HeadersStep::Respond(Response::json(200, body.to_string().into_bytes())),
                    vec![Counter::StatusServed],
                );
            }
            Liveness::NotStarted => Problem::new(503, "the emr-edge service has not started"),
            Liveness::Stalled { age_ms } => Problem::new(503, Liveness::stalled_detail(age_ms)),
        };
        Handled::new(
            HeadersStep::Respond(Response::problem(&problem)),
            vec![Counter::StatusServed],
        )
    }

    /// Queues a resume for the service; answered at once (the body, if any,
    /// is not read). The id is percent-decoded first (400 when the encoding
    /// is broken); a group the config does not name is a 404, since no
    /// other group is ever driven ([`Config::groups`]).
    fn resume(&self, raw: &str, now: DateTime<Utc>) -> Handled<HeadersStep> {
        let Some(id) = text::percent_decode(raw) else {
            return refused(
                &Problem::bad_request(format!(
                    "the group id in the path, {}, is not valid percent-encoding",
                    text::quoted(raw)
                ))
                .with_error(
                    "group",
                    "must be percent-encoded: '%' followed by two hex digits, as UTF-8",
                ),
            );
        };
        let group = match GroupId::parse(&id) {
            Ok(g) => g,
            Err(e) => {
                return refused(
                    &Problem::new(422, format!("{} is not a group id", text::quoted(&id)))
                        .with_error("group", e.0),
                )
            }
        };
        if !self.config.groups.contains(&group) {
            return refused(&unknown_group(&group, &self.config.groups));
        }
        let message = ControlMessage {
            control: Control::Resume {
                group: group.clone(),
                received_ms: now.timestamp_millis(),
            },
        };
        let bytes = match serde_json::to_vec(&message) {
            Ok(b) => b,
            Err(e) => return self.unavailable(&StoreError::Host(e.to_string())),
        };
        if let Err(e) = self.sink.enqueue(&bytes) {
            return self.unavailable(&e);
        }
        let body = serde_json::json!({
            "group": group,
            "status": "RESUME_QUEUED",
            "stateUrl": STATE_PATH,
        });
        Handled::new(
            HeadersStep::Respond(Response::json(202, body.to_string().into_bytes())),
            vec![Counter::ResumeQueued],
        )
        .note(
            NoteLevel::Info,
            format!("resume of emergency group {group} queued for the service"),
        )
    }

    /// `GET /emr/status/{id}[?source=name]`. An id is unique within its
    /// source only: without `source`, an id two sources use is refused
    /// (409, naming the sources) rather than answered with either.
    fn status(&self, id: &str, query: Option<&str>, now: DateTime<Utc>) -> Handled<HeadersStep> {
        let not_found = |detail: String| {
            refused(
                &Problem::not_found(detail).with_error("correlationId", "is not known to emr-edge"),
            )
        };
        let source = match query_value(query, "source") {
            None => None,
            Some(name) => match Source::from_name(name) {
                Some(s) => Some(s),
                None => {
                    return refused(
                        &Problem::new(422, format!("{} is not a source", text::quoted(name)))
                            .with_error("source", source_names()),
                    )
                }
            },
        };
        if CorrelationId::parse(id).is_err() {
            return not_found(format!("no incident {} is known", text::quoted(id)));
        }
        let served = |v: &serde_json::Value| {
            Handled::new(
                HeadersStep::Respond(Response::json(
                    200,
                    serde_json::to_vec(v).unwrap_or_default(),
                )),
                vec![Counter::StatusServed],
            )
        };
        match status::find(self.store, id, source) {
            Ok(status::Found::One(v)) => served(&v),
            Ok(status::Found::Ambiguous(sources)) => {
                let names: Vec<String> = sources.iter().map(|s| status_url(*s, id)).collect();
                refused(
                    &Problem::new(
                        409,
                        format!(
                            "several sources have an incident {id}: ask for one of {}",
                            names.join(", ")
                        ),
                    )
                    .with_error("source", "is required: several sources use this id"),
                )
            }
            Ok(status::Found::Nothing) => match ignored::find(self.store, id, source) {
                Ok(Some(v)) => served(&v),
                Ok(None) => self.not_on_board(id, source, now),
                Err(e) => self.unavailable(&e),
            },
            Err(e) => self.unavailable(&e),
        }
    }

    /// A status lookup the board and the ignored notes know nothing of:
    /// queued, recorded and pruned since, or never seen.
    fn not_on_board(
        &self,
        id: &str,
        source: Option<Source>,
        now: DateTime<Utc>,
    ) -> Handled<HeadersStep> {
        let not_found = |detail: String| {
            refused(
                &Problem::not_found(detail).with_error("correlationId", "is not known to emr-edge"),
            )
        };
        match self.queued(id, source, now) {
            Queued::Yes(mode) => {
                let body = serde_json::json!({
                    "correlationId": id,
                    "routingMode": mode,
                    "status": "PROCESSING",
                    "state": "QUEUED",
                });
                Handled::new(
                    HeadersStep::Respond(Response::json(200, body.to_string().into_bytes())),
                    vec![Counter::StatusServed],
                )
            }
            Queued::Recorded => not_found(format!(
                "incident {id} was accepted and recorded, but is no longer on the status board: \
                     closed incidents are kept for ledger.closed_retention_seconds and at most \
                     ledger.max_closed_incidents"
            )),
            Queued::No => not_found(format!("no incident {} is known", text::quoted(id))),
        }
    }

    /// Whether an incident the board does not show was accepted a moment
    /// ago and waits for the service. Only the sender-keyed routes can be
    /// found this way: a tool event's dedupe key holds its event time.
    fn queued(&self, id: &str, source: Option<Source>, now: DateTime<Utc>) -> Queued {
        let dedupe = Dedupe::new(self.config.intake.dedupe);
        let seen = [Source::Canonical, Source::Standard]
            .into_iter()
            .filter(|s| source.is_none_or(|wanted| wanted == *s))
            .flat_map(|s| [RoutingMode::Active, RoutingMode::Resolved].map(|m| (s, m)))
            .find_map(|(s, m)| {
                let key = event::idempotency_key(s, id, m, now);
                let at = dedupe.seen_at(self.store, &key, now.timestamp()).ok()??;
                Some((m, at))
            });
        let Some((mode, accepted_s)) = seen else {
            return Queued::No;
        };
        // Recorded once the service has recorded an event received after
        // it (the queue keeps order); a second of slack covers the dedupe
        // store's whole seconds and the workers' race to the queue.
        let stored = self
            .store
            .get(liveness::RECORDED_KEY)
            .ok()
            .and_then(|v| v.value);
        let recorded_ms = liveness::read_recorded(stored.as_deref());
        match recorded_ms {
            Some(ms) if ms >= accepted_s.saturating_add(2).saturating_mul(1000) => Queued::Recorded,
            _ => Queued::Yes(mode),
        }
    }

    /// Handles a whole webhook body: authenticate, parse, dedupe, queue.
    pub fn on_body(
        &self,
        source: Source,
        headers: &[(String, String)],
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Handled<Response> {
        if body.len() > self.config.intake.max_body_bytes {
            return refused(&self.too_large());
        }
        let cfg = self.config.sources.get(source);
        let delivery = Delivery { headers, body, now };
        if let Err(p) = auth::authenticate(source, &delivery, cfg) {
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
    ) -> Handled<Response> {
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
                let judged = self.judge_items(source, items, &body, now, &mut rec)?;
                let to_queue = self
                    .take_slots(source, judged.to_queue)
                    .map_err(|r| match r {
                        // Nothing of this delivery is kept: the sender's retry,
                        // once there is room, is processed in full.
                        Refusal::Full(p) => Stop::OverShare(p),
                        Refusal::Store(e) => Stop::Store(e),
                    })?;
                let queued = Delivered {
                    delivery_id: delivery_id.as_deref(),
                    delivery_key,
                };
                self.enqueue(source, to_queue, &queued, now, &mut rec)?;
                self.queue_renewals(judged.renewals, now, &mut rec);
                Ok(judged.answers)
            });
        match steps {
            Ok(answers) => Handled {
                value: accepted(&answers),
                counters: rec.counters,
                notes: rec.notes,
            },
            Err(stop) => self.stopped(source, rec, stop),
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
                            out.to_queue.push((ev, key));
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
        to_queue: Vec<(IncidentEvent, String, bool)>,
        queued: &Delivered<'_>,
        now: DateTime<Utc>,
        rec: &mut Recorder<'_>,
    ) -> Result<(), Stop> {
        let received_ms = now.timestamp_millis();
        let mut queue = to_queue.into_iter();
        while let Some((ev, key, slot)) = queue.next() {
            let message = QueuedEvent {
                received_ms,
                delivery_id: queued.delivery_id.map(str::to_owned),
                event: ev,
                slot,
            };
            let enqueued = serde_json::to_vec(&message)
                .map_err(|e| StoreError::Host(e.to_string()))
                .and_then(|msg| self.sink.enqueue(&msg));
            if let Err(e) = enqueued {
                let rest: Vec<(String, bool)> = queue.map(|(_, k, s)| (k, s)).collect();
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
            let message = ControlMessage {
                control: Control::Renew {
                    incident,
                    received_ms: now.timestamp_millis(),
                },
            };
            let enqueued = serde_json::to_vec(&message)
                .map_err(|e| StoreError::Host(e.to_string()))
                .and_then(|msg| self.sink.enqueue(&msg));
            if let Err(e) = enqueued {
                rec.notes.push(Note {
                    level: NoteLevel::Warn,
                    message: format!("a replayed activation's renewal was not queued: {e:?}"),
                    repeated: None,
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
        events: Vec<(IncidentEvent, String)>,
    ) -> Result<Vec<(IncidentEvent, String, bool)>, Refusal> {
        let limit = self.config.shares.limit(source);
        let mut out = Vec::with_capacity(events.len());
        let mut taken = 0u32;
        for (ev, key) in events {
            if ev.routing_mode != RoutingMode::Active {
                out.push((ev, key, false));
                continue;
            }
            let refusal = match quota::take(self.store, source, limit) {
                Ok(quota::Taken::Yes) => {
                    taken += 1;
                    out.push((ev, key, true));
                    continue;
                }
                Ok(quota::Taken::Full(count)) => {
                    if self.is_open(source, &ev) {
                        out.push((ev, key, false));
                        continue;
                    }
                    Refusal::Full(share_full(source, &ev, limit, count))
                }
                Err(e) => Refusal::Store(e),
            };
            let _ = quota::give_back(self.store, source, taken);
            return Err(refusal);
        }
        Ok(out)
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

#[cfg(test)]
mod tests;
