//! The intake: what the HTTP filter does with one request, as pure decisions.
//!
//! Routes: `POST /webhooks/{source}` takes incidents; `GET /emr/status/{id}`
//! and `GET /emr/state` answer from what the service published. Anything else
//! passes through the filter untouched. The filter calls [`Intake::on_headers`]
//! and, when a body is needed, [`Intake::on_body`] at end of stream; both
//! return the response to send and the counters to bump.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::contract::parse_canonical;
use crate::dedupe::{self, digest, Dedupe, FirstAnswer};
use crate::event::{CorrelationId, IncidentEvent, QueuedEvent, RoutingMode, Source};
use crate::problem::{Problem, PROBLEM_CONTENT_TYPE};
use crate::status;
use crate::store::{EventSink, SharedStore, StoreError};

pub const WEBHOOK_PREFIX: &str = "/webhooks/";
pub const STATUS_PREFIX: &str = "/emr/status/";
pub const STATE_PATH: &str = "/emr/state";

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
            ],
            body,
        }
    }

    fn problem(p: &Problem) -> Self {
        let mut headers = vec![
            ("content-type", PROBLEM_CONTENT_TYPE.to_owned()),
            ("cache-control", "no-store".into()),
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
    Accepted,
    Replayed,
    Conflict,
    /// Refused with this status (4xx).
    Refused(u16),
    /// Could not record or queue it (503): the sender should retry.
    Unavailable,
    DedupeEvicted(u32),
    CasRetries(u32),
    StatusServed,
}

/// A decision and its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled<T> {
    pub value: T,
    pub counters: Vec<Counter>,
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

/// The route a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route<'a> {
    Webhook(&'a str),
    Status(&'a str),
    State,
    UnknownEmr,
    Other,
}

fn route(path: &str) -> Route<'_> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if let Some(rest) = path.strip_prefix(WEBHOOK_PREFIX) {
        Route::Webhook(rest)
    } else if let Some(rest) = path.strip_prefix(STATUS_PREFIX) {
        Route::Status(rest)
    } else if path == STATE_PATH {
        Route::State
    } else if path == "/emr" || path.starts_with("/emr/") || path == "/webhooks" {
        Route::UnknownEmr
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

/// The body of a 202.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted<'a> {
    correlation_id: &'a str,
    routing_mode: RoutingMode,
    status: &'a str,
    status_url: String,
}

fn accepted_body(ev: &IncidentEvent, answer: FirstAnswer) -> Vec<u8> {
    let body = Accepted {
        correlation_id: ev.correlation_id.as_str(),
        routing_mode: ev.routing_mode,
        status: match answer {
            FirstAnswer::Accepted => "PROCESSING",
            FirstAnswer::Ignored => "IGNORED",
        },
        status_url: format!("{STATUS_PREFIX}{}", ev.correlation_id),
    };
    serde_json::to_vec(&body).unwrap_or_default()
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
        let refuse = |p: Problem| Handled {
            counters: vec![Counter::Refused(p.status)],
            value: HeadersStep::Respond(Response::problem(&p)),
        };
        match route(path) {
            Route::Other => Handled {
                value: HeadersStep::PassThrough,
                counters: vec![],
            },
            Route::UnknownEmr => refuse(Problem::not_found(format!(
                "no emr-edge resource at {path}"
            ))),
            Route::Webhook(name) => {
                let Some(source) = Source::from_path_segment(name) else {
                    return refuse(Problem::not_found(format!(
                        "unknown incident source {name:?}; known: canonical"
                    )));
                };
                if source != Source::Canonical {
                    return refuse(Problem::not_found(format!(
                        "incident source {source} is not enabled in this build"
                    )));
                }
                if method != "POST" {
                    return refuse(Problem::method_not_allowed("POST"));
                }
                match header(headers, "content-type") {
                    Some(ct) if is_json(ct) => {}
                    Some(ct) => {
                        return refuse(
                            Problem::new(415, format!("expected application/json, got {ct:?}"))
                                .with_error("content-type", "must be application/json"),
                        )
                    }
                    None => {
                        return refuse(
                            Problem::new(415, "the request has no content-type")
                                .with_error("content-type", "must be application/json"),
                        )
                    }
                }
                let declared =
                    header(headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
                if declared.is_some_and(|n| n > self.config.intake.max_body_bytes as u64) {
                    return refuse(self.too_large());
                }
                if end_of_stream {
                    let out = self.on_body(source, headers, &[], now);
                    return Handled {
                        value: HeadersStep::Respond(out.value),
                        counters: out.counters,
                    };
                }
                Handled {
                    value: HeadersStep::ReadBody(source),
                    counters: vec![],
                }
            }
            Route::Status(id) => {
                if method != "GET" && method != "HEAD" {
                    return refuse(Problem::method_not_allowed("GET, HEAD"));
                }
                self.status(id, now)
            }
            Route::State => {
                if method != "GET" && method != "HEAD" {
                    return refuse(Problem::method_not_allowed("GET, HEAD"));
                }
                match self.store.get(status::STATE_KEY) {
                    Ok(v) => {
                        let body = v
                            .value
                            .filter(|b| !b.is_empty())
                            .unwrap_or_else(|| b"{\"groups\":[]}".to_vec());
                        Handled {
                            value: HeadersStep::Respond(Response::json(200, body)),
                            counters: vec![Counter::StatusServed],
                        }
                    }
                    Err(e) => self.unavailable(&e),
                }
            }
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
        let p = self.too_large();
        Handled {
            counters: vec![Counter::Refused(p.status)],
            value: Response::problem(&p),
        }
    }

    fn unavailable<T>(&self, e: &StoreError) -> Handled<T>
    where
        T: From<Response>,
    {
        let detail = match e {
            StoreError::CasMismatch => "the dedupe store is contended; retry shortly".to_owned(),
            StoreError::Host(m) => format!("shared state unavailable: {m}; retry shortly"),
        };
        Handled {
            value: Response::problem(&Problem::new(503, detail).with_header("retry-after", "1"))
                .into(),
            counters: vec![Counter::Unavailable],
        }
    }

    fn status(&self, id: &str, now: DateTime<Utc>) -> Handled<HeadersStep> {
        let not_found = || Handled {
            value: HeadersStep::Respond(Response::problem(
                &Problem::not_found(format!("no incident {id:?} is known"))
                    .with_error("correlationId", "is not known to emr-edge"),
            )),
            counters: vec![Counter::Refused(404)],
        };
        if CorrelationId::parse(id).is_err() {
            return not_found();
        }
        match status::lookup(self.store, id) {
            Ok(Some(v)) => Handled {
                value: HeadersStep::Respond(Response::json(
                    200,
                    serde_json::to_vec(&v).unwrap_or_default(),
                )),
                counters: vec![Counter::StatusServed],
            },
            Ok(None) => {
                // Accepted a moment ago but not yet recorded by the service:
                // the dedupe store knows it.
                let queued = [RoutingMode::Active, RoutingMode::Resolved]
                    .into_iter()
                    .find(|m| {
                        let key = format!("{}:{}:{}", Source::Canonical, id, m.as_str());
                        self.store_contains(&key, now)
                    });
                match queued {
                    Some(mode) => {
                        let body = serde_json::json!({
                            "correlationId": id,
                            "routingMode": mode,
                            "status": "PROCESSING",
                            "state": "QUEUED",
                        });
                        Handled {
                            value: HeadersStep::Respond(Response::json(
                                200,
                                body.to_string().into_bytes(),
                            )),
                            counters: vec![Counter::StatusServed],
                        }
                    }
                    None => not_found(),
                }
            }
            Err(e) => self.unavailable(&e),
        }
    }

    fn store_contains(&self, key: &str, now: DateTime<Utc>) -> bool {
        Dedupe::new(self.config.intake.dedupe)
            .contains(self.store, key, now.timestamp())
            .unwrap_or(false)
    }

    /// Handles a whole webhook body.
    pub fn on_body(
        &self,
        source: Source,
        headers: &[(String, String)],
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Handled<Response> {
        let refuse = |p: Problem| Handled {
            counters: vec![Counter::Refused(p.status)],
            value: Response::problem(&p),
        };
        if body.len() > self.config.intake.max_body_bytes {
            return refuse(self.too_large());
        }
        let _ = headers;
        let event = match source {
            Source::Canonical => match parse_canonical(body, now, &self.config.intake.contract) {
                Ok(e) => e,
                Err(p) => return refuse(p),
            },
            other => {
                return refuse(Problem::not_found(format!(
                    "incident source {other} is not enabled in this build"
                )))
            }
        };
        self.accept(event, None, now)
    }

    /// Dedupes, queues and answers one valid event.
    fn accept(
        &self,
        event: IncidentEvent,
        delivery_id: Option<String>,
        now: DateTime<Utc>,
    ) -> Handled<Response> {
        let key = event.idempotency_key();
        let fingerprint = digest(&serde_json::to_vec(&event).unwrap_or_default());
        let dedupe = Dedupe::new(self.config.intake.dedupe);
        let decision = match dedupe.check_and_insert(
            self.store,
            &key,
            &fingerprint,
            FirstAnswer::Accepted,
            now.timestamp(),
        ) {
            Ok(d) => d,
            Err(e) => return self.unavailable(&e),
        };
        let mut counters = Vec::with_capacity(3);
        if decision.evicted > 0 {
            counters.push(Counter::DedupeEvicted(decision.evicted));
        }
        if decision.retries > 0 {
            counters.push(Counter::CasRetries(decision.retries));
        }
        match decision.outcome {
            dedupe::Outcome::New => {}
            dedupe::Outcome::Replay(answer) => {
                let mut r = Response::json(202, accepted_body(&event, answer));
                r.headers.push(("idempotent-replayed", "true".into()));
                counters.push(Counter::Replayed);
                return Handled { value: r, counters };
            }
            dedupe::Outcome::Conflict => {
                counters.push(Counter::Conflict);
                let p = Problem::new(
                    409,
                    format!(
                        "{} {} was already accepted with a different payload",
                        event.correlation_id, event.routing_mode
                    ),
                )
                .with_error(
                    "correlationId",
                    "already used with a different payload for this routingMode",
                );
                return Handled {
                    value: Response::problem(&p),
                    counters,
                };
            }
        }
        let queued = QueuedEvent {
            received_ms: now.timestamp_millis(),
            delivery_id,
            event,
        };
        let enqueued = serde_json::to_vec(&queued)
            .map_err(|e| StoreError::Host(e.to_string()))
            .and_then(|msg| self.sink.enqueue(&msg));
        if let Err(e) = enqueued {
            // Not queued: forget it so the sender's retry is processed, not
            // answered as a replay of something that never happened.
            let _ = dedupe.remove(self.store, &key);
            let mut out = self.unavailable(&e);
            out.counters.extend(counters);
            return out;
        }
        counters.push(Counter::Accepted);
        let mut r = Response::json(202, accepted_body(&queued.event, FirstAnswer::Accepted));
        r.headers.push((
            "location",
            format!("{STATUS_PREFIX}{}", queued.event.correlation_id),
        ));
        Handled { value: r, counters }
    }
}

impl From<Response> for HeadersStep {
    fn from(r: Response) -> Self {
        HeadersStep::Respond(r)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::{json, Value};

    use super::*;
    use crate::ledger::Ledger;
    use crate::status::Board;
    use crate::store::{MemoryQueue, MemoryStore};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-08-15T14:25:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    struct World {
        config: Config,
        store: MemoryStore,
        queue: MemoryQueue,
    }

    impl World {
        fn new() -> Self {
            let w = Self {
                config: Config::default(),
                store: MemoryStore::new(),
                queue: MemoryQueue::default(),
            };
            Dedupe::new(w.config.intake.dedupe)
                .create_keys(&w.store)
                .unwrap();
            status::create_keys(&w.store).unwrap();
            w
        }

        fn intake(&self) -> Intake<'_> {
            Intake {
                config: &self.config,
                store: &self.store,
                sink: &self.queue,
            }
        }

        fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Response {
            let headers = vec![
                ("content-type".to_owned(), content_type.to_owned()),
                ("content-length".to_owned(), body.len().to_string()),
            ];
            match self
                .intake()
                .on_headers("POST", path, &headers, false, now())
                .value
            {
                HeadersStep::ReadBody(src) => {
                    self.intake().on_body(src, &headers, body, now()).value
                }
                HeadersStep::Respond(r) => r,
                HeadersStep::PassThrough => panic!("passed through"),
            }
        }

        fn canonical(&self, body: &Value) -> Response {
            self.post(
                "/webhooks/canonical",
                "application/json",
                body.to_string().as_bytes(),
            )
        }

        fn get(&self, path: &str) -> HeadersStep {
            self.intake()
                .on_headers("GET", path, &[], true, now())
                .value
        }
    }

    fn incident(id: &str, mode: &str) -> Value {
        json!({
            "correlationId": id,
            "incidentType": "CARRIER_OUTAGE",
            "targetQueueIds": ["queue-12345"],
            "routingMode": mode,
            "timestamp": "2024-08-15T14:22:01Z",
            "ttl": 3600
        })
    }

    fn body(r: &Response) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn a_valid_incident_is_accepted_queued_and_answered_202() {
        let w = World::new();
        let r = w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
        assert_eq!(r.status, 202);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            body(&r),
            json!({"correlationId": "INC-1", "routingMode": "EMERGENCY_ACTIVE", "status": "PROCESSING", "statusUrl": "/emr/status/INC-1"})
        );
        let queued: QueuedEvent = serde_json::from_slice(&w.queue.messages.borrow()[0]).unwrap();
        assert_eq!(queued.event.correlation_id.as_str(), "INC-1");
        assert_eq!(queued.received_ms, now().timestamp_millis());
    }

    #[test]
    fn a_repeat_gets_the_first_answer_and_is_not_queued_again() {
        let w = World::new();
        let first = w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
        let again = w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
        assert_eq!(again.status, 202);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.body, first.body);
        assert_eq!(w.queue.messages.borrow().len(), 1);
    }

    #[test]
    fn activation_and_resolution_are_different_events() {
        let w = World::new();
        assert_eq!(
            w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE")).status,
            202
        );
        let r = w.canonical(&incident("INC-1", "EMERGENCY_RESOLVED"));
        assert_eq!(r.status, 202);
        assert_eq!(r.header("idempotent-replayed"), None);
        assert_eq!(w.queue.messages.borrow().len(), 2);
    }

    #[test]
    fn same_key_different_payload_is_409() {
        let w = World::new();
        w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
        let mut changed = incident("INC-1", "EMERGENCY_ACTIVE");
        changed["targetQueueIds"] = json!(["queue-other"]);
        let r = w.canonical(&changed);
        assert_eq!(r.status, 409);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(body(&r)["errors"][0]["field"], "correlationId");
        assert_eq!(w.queue.messages.borrow().len(), 1);
    }

    #[test]
    fn reformatted_json_of_the_same_event_is_a_replay_not_a_conflict() {
        let w = World::new();
        w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
        let pretty = serde_json::to_vec_pretty(&incident("INC-1", "EMERGENCY_ACTIVE")).unwrap();
        let r = w.post("/webhooks/canonical", "application/json", &pretty);
        assert_eq!(r.header("idempotent-replayed"), Some("true"));
    }

    #[test]
    fn contract_violations_are_422_naming_fields() {
        let w = World::new();
        let mut bad = incident("INC-1", "EMERGENCY_ACTIVE");
        bad["ttl"] = json!(5);
        let r = w.canonical(&bad);
        assert_eq!(r.status, 422);
        assert_eq!(body(&r)["errors"][0]["field"], "ttl");
        assert!(w.queue.messages.borrow().is_empty());
    }

    #[test]
    fn unreadable_json_is_400() {
        let w = World::new();
        let r = w.post("/webhooks/canonical", "application/json", b"{nope");
        assert_eq!(r.status, 400);
        assert_eq!(body(&r)["status"], 400);
    }

    #[test]
    fn wrong_content_type_is_415() {
        let w = World::new();
        let r = w.post("/webhooks/canonical", "text/plain", b"{}");
        assert_eq!(r.status, 415);
        assert_eq!(body(&r)["errors"][0]["field"], "content-type");
        let no_type = w
            .intake()
            .on_headers("POST", "/webhooks/canonical", &[], false, now());
        assert!(matches!(no_type.value, HeadersStep::Respond(ref r) if r.status == 415));
        // Parameters and +json types are fine.
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON"));
        assert!(is_json("application/cloudevents+json"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }

    #[test]
    fn too_large_is_413_from_the_declared_length_or_the_body() {
        let w = World::new();
        let big = vec![b' '; 70_000];
        let r = w.post("/webhooks/canonical", "application/json", &big);
        assert_eq!(r.status, 413);
        assert_eq!(body(&r)["errors"][0]["field"], "body");
        // No content-length (chunked): caught on the body.
        let r = w
            .intake()
            .on_body(Source::Canonical, &[], &big, now())
            .value;
        assert_eq!(r.status, 413);
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let w = World::new();
        let HeadersStep::Respond(r) = w.get("/webhooks/canonical") else {
            panic!()
        };
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("POST"));
        let out = w
            .intake()
            .on_headers("DELETE", "/emr/status/INC-1", &[], true, now());
        let HeadersStep::Respond(r) = out.value else {
            panic!()
        };
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        assert_eq!(out.counters, vec![Counter::Refused(405)]);
    }

    #[test]
    fn other_paths_pass_through_untouched() {
        let w = World::new();
        for path in ["/", "/healthz", "/api/v2/x", "/webhooksx", "/emrx"] {
            assert_eq!(w.get(path), HeadersStep::PassThrough, "{path}");
        }
    }

    #[test]
    fn unknown_sources_and_emr_paths_are_404() {
        let w = World::new();
        let r = w.post("/webhooks/nagios", "application/json", b"{}");
        assert_eq!(r.status, 404);
        let HeadersStep::Respond(r) = w.get("/emr/nothing") else {
            panic!()
        };
        assert_eq!(r.status, 404);
    }

    #[test]
    fn an_empty_post_is_answered_from_the_headers() {
        let w = World::new();
        let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        let out = w
            .intake()
            .on_headers("POST", "/webhooks/canonical", &headers, true, now());
        let HeadersStep::Respond(r) = out.value else {
            panic!()
        };
        assert_eq!(r.status, 400);
    }

    #[test]
    fn a_broken_queue_is_503_and_forgets_the_key() {
        let w = World::new();
        *w.queue.broken.borrow_mut() = true;
        let r = w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
        // The sender's retry is processed, not answered as a replay.
        *w.queue.broken.borrow_mut() = false;
        let r = w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
        assert_eq!(r.status, 202);
        assert_eq!(r.header("idempotent-replayed"), None);
        assert_eq!(w.queue.messages.borrow().len(), 1);
    }

    #[test]
    fn status_is_served_from_the_board_then_queued_then_404() {
        let w = World::new();
        let HeadersStep::Respond(r) = w.get("/emr/status/INC-1") else {
            panic!()
        };
        assert_eq!(r.status, 404);
        assert_eq!(body(&r)["errors"][0]["field"], "correlationId");

        w.canonical(&incident("INC-1", "EMERGENCY_ACTIVE"));
        // Accepted but not yet recorded by the service.
        let HeadersStep::Respond(r) = w.get("/emr/status/INC-1") else {
            panic!()
        };
        assert_eq!(r.status, 200);
        assert_eq!(body(&r)["state"], "QUEUED");

        // The service records and publishes it.
        let mut ledger = Ledger::default();
        let mut board = Board::default();
        for m in w.queue.messages.borrow().iter() {
            let q: QueuedEvent = serde_json::from_slice(m).unwrap();
            ledger.apply(&q, crate::event::GroupId::parse("G").unwrap(), now());
            board.mark(&q.event.incident_key());
        }
        board.publish(&ledger, &w.store).unwrap();
        let HeadersStep::Respond(r) = w.get("/emr/status/INC-1?x=1") else {
            panic!()
        };
        assert_eq!(r.status, 200);
        assert_eq!(body(&r)["state"], "OPEN");
        assert_eq!(body(&r)["group"], "G");

        let HeadersStep::Respond(r) = w.get("/emr/status/bad%20id") else {
            panic!()
        };
        assert_eq!(r.status, 404);
    }

    #[test]
    fn state_is_served_from_what_the_service_published() {
        let w = World::new();
        let HeadersStep::Respond(r) = w.get("/emr/state") else {
            panic!()
        };
        assert_eq!(body(&r), json!({"groups": []}));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        w.store
            .set(status::STATE_KEY, br#"{"groups":[{"id":"G"}]}"#, None)
            .unwrap();
        let HeadersStep::Respond(r) = w.get("/emr/state") else {
            panic!()
        };
        assert_eq!(body(&r)["groups"][0]["id"], "G");
    }

    #[test]
    fn counters_say_what_happened() {
        let w = World::new();
        let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        let b = incident("INC-1", "EMERGENCY_ACTIVE").to_string();
        let first = w
            .intake()
            .on_body(Source::Canonical, &headers, b.as_bytes(), now());
        assert_eq!(first.counters, vec![Counter::Accepted]);
        let again = w
            .intake()
            .on_body(Source::Canonical, &headers, b.as_bytes(), now());
        assert_eq!(again.counters, vec![Counter::Replayed]);
        let bad = w
            .intake()
            .on_body(Source::Canonical, &headers, b"[]", now());
        assert_eq!(bad.counters, vec![Counter::Refused(422)]);
    }
}
