//! The front door every request passes, around all routes.
//!
//! For the simulated services (everything outside `/__sim/`) it: reads the body (at most
//! 512000 bytes, Genesys's limit), applies an outage or the first matching fault, runs the
//! handler, renders a Genesys error body with the answer's correlation id, adds
//! `ININ-Correlation-Id`, and logs the request with its outcome. Control-API requests only get
//! their error bodies rendered: they are neither logged nor subject to faults.

use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;

use crate::auth::CallerId;
use crate::clock::unix_ms;
use crate::errors::{render_api_error, ApiError};
use crate::faults::OutageMode;
use crate::ids::correlation_id;
use crate::requestlog::{loggable_body, RequestRecord};
use crate::server::ConnectionControl;
use crate::state::App;

/// Where the control API lives.
pub(crate) const CONTROL_PREFIX: &str = "/__sim/";

/// Genesys's maximum request body.
const MAX_BODY_BYTES: usize = 512_000;

/// How long a reset request's handler lingers after asking for the reset; the connection task
/// drops it long before (see `server`), this only bounds a leak if it did not.
const RESET_LINGER: Duration = Duration::from_secs(30);

const CORRELATION_HEADER: HeaderName = HeaderName::from_static("inin-correlation-id");

/// Middleware: see the module doc.
pub(crate) async fn front_door(State(app): State<App>, request: Request, next: Next) -> Response {
    let correlation = correlation_id();
    if request.uri().path().starts_with(CONTROL_PREFIX) {
        let mut response = next.run(request).await;
        render_api_error(&mut response, &correlation);
        return response;
    }
    let started = Instant::now();
    let connection = request.extensions().get::<ConnectionControl>().cloned();
    let (parts, body) = request.into_parts();
    let mut record = RequestRecord {
        seq: app.next_seq(),
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        status: None,
        reset: false,
        injected: false,
        received_ms: unix_ms(SystemTime::now()),
        duration_ms: 0,
        client_id: None,
        correlation_id: Some(correlation.clone()),
        body: None,
        auth_scheme: parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::requestlog::auth_scheme),
    };
    let bytes = match read_body(body).await {
        Ok(bytes) => bytes,
        Err(error) => return finish(&app, record, started, error.into_response()),
    };
    record.body = loggable_body(&record.method, &bytes);

    let outage = app.lock().outage_mode(Instant::now());
    if let Some(mode) = outage {
        record.injected = true;
        return match mode {
            OutageMode::Reset => cut(&app, record, started, connection).await,
            OutageMode::Unavailable => {
                let answer = ApiError::for_status(StatusCode::SERVICE_UNAVAILABLE, None);
                finish(&app, record, started, answer.into_response())
            }
        };
    }

    let fault = app.lock().faults.take(&record.method, &record.path);
    let mut answer_delay = None;
    if let Some(fault) = fault {
        answer_delay = fault.answer_delay();
        if let Some(pause) = fault.pause() {
            tokio::time::sleep(pause).await;
        }
        if fault.reset {
            record.injected = true;
            return cut(&app, record, started, connection).await;
        }
        if let Some(answer) = fault.response() {
            record.injected = true;
            return finish(&app, record, started, answer);
        }
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let Some(hold) = answer_delay else {
        return finish(&app, record, started, response);
    };
    // Logged now: the change is made whether or not the caller waits.
    record.injected = true;
    let response = finish(&app, record, started, response);
    tokio::time::sleep(hold).await;
    response
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|error| {
            let error = error.into_inner();
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
            while let Some(current) = cause {
                if current.is::<LengthLimitError>() {
                    return ApiError::payload_too_large(MAX_BODY_BYTES);
                }
                cause = current.source();
            }
            ApiError::bad_request("The request body could not be read.")
        })
}

/// Completes an answered request: error body, correlation header, log record.
fn finish(
    app: &App,
    mut record: RequestRecord,
    started: Instant,
    mut response: Response,
) -> Response {
    if let Some(correlation) = record.correlation_id.as_deref() {
        render_api_error(&mut response, correlation);
        if let Ok(value) = HeaderValue::from_str(correlation) {
            response.headers_mut().insert(CORRELATION_HEADER, value);
        }
    }
    record.status = Some(response.status().as_u16());
    record.client_id = response
        .extensions()
        .get::<CallerId>()
        .map(|caller| caller.0.clone());
    record.duration_ms = elapsed_ms(started);
    app.lock().requests.push(record);
    response
}

/// Resets the connection instead of answering. Without a connection to reset (a router used
/// outside our server), answers 503.
async fn cut(
    app: &App,
    mut record: RequestRecord,
    started: Instant,
    connection: Option<ConnectionControl>,
) -> Response {
    let Some(connection) = connection else {
        let answer = ApiError::for_status(StatusCode::SERVICE_UNAVAILABLE, None);
        return finish(app, record, started, answer.into_response());
    };
    record.reset = true;
    record.duration_ms = elapsed_ms(started);
    app.lock().requests.push(record);
    connection.reset();
    tokio::time::sleep(RESET_LINGER).await;
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
