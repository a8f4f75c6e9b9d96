//! The control API under `/__sim/`: JSON, no authentication, never logged or faulted.
//!
//! Tests and benchmarks use it to see and steer the simulated services from outside the
//! process (in-process tests have the same operations as [`crate::SimHandle`] methods). It can
//! do what no real client could — set a group behind the API's back, make the services fail,
//! revoke tokens — and read the request log to check what emr-edge actually sent.

use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::datatables::Row;
use crate::errors::{ControlError, SimError};
use crate::faults::{Fault, FaultEntry, Outage, OutageMode, MAX_OUTAGE};
use crate::groups::EmergencyGroup;
use crate::guide::GuideRouting;
use crate::itsm::ItsmTool;
use crate::oauth::Revoke;
use crate::requestlog::RequestRecord;
use crate::state::App;

type Answer<T> = Result<Json<T>, ControlError>;

/// The control routes, with their full `/__sim/…` paths.
pub(crate) fn router() -> Router<App> {
    Router::new()
        .route("/__sim/health", get(health))
        .route("/__sim/reset", post(reset))
        .route(
            "/__sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/__sim/faults/{id}", delete(remove_fault))
        .route("/__sim/tokens/revoke", post(revoke_tokens))
        .route("/__sim/requests", get(list_requests).delete(clear_requests))
        .route("/__sim/groups", get(list_groups))
        .route("/__sim/groups/{id}", get(get_group).put(patch_group))
        .route("/__sim/datatables/{table}/rows", get(list_rows))
        .route(
            "/__sim/datatables/{table}/rows/{row}",
            get(get_row).put(put_row),
        )
        .route("/__sim/guide", get(guide))
        .route("/__sim/itsm/{tool}/{id}", put(set_itsm))
        .route("/__sim/down", post(go_down).delete(come_up))
}

/// Parses a JSON body; an empty body reads as `{}`.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|error| ControlError::bad_request(format!("invalid JSON body: {error}")))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn reset(State(app): State<App>) -> Result<StatusCode, ControlError> {
    app.reset()?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_faults(State(app): State<App>) -> Json<Vec<FaultEntry>> {
    Json(app.lock().faults.list())
}

async fn add_fault(
    State(app): State<App>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ControlError> {
    let fault: Fault = parse(&body)?;
    let id = app
        .lock()
        .faults
        .add(fault)
        .map_err(ControlError::bad_request)?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

async fn clear_faults(State(app): State<App>) -> StatusCode {
    app.lock().faults.clear();
    StatusCode::NO_CONTENT
}

async fn remove_fault(
    State(app): State<App>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ControlError> {
    if app.lock().faults.remove(id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ControlError::not_found(format!("no fault {id}")))
    }
}

/// `{}` revokes every token; `{"access_token": …}` one; `{"client_id": …}` a client's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    access_token: Option<String>,
    client_id: Option<String>,
}

async fn revoke_tokens(State(app): State<App>, body: Bytes) -> Answer<Value> {
    let request: RevokeRequest = parse(&body)?;
    let which = match request {
        RevokeRequest {
            access_token: Some(token),
            client_id: None,
        } => Revoke::AccessToken(token),
        RevokeRequest {
            access_token: None,
            client_id: Some(client_id),
        } => Revoke::ClientId(client_id),
        RevokeRequest {
            access_token: None,
            client_id: None,
        } => Revoke::All,
        RevokeRequest { .. } => {
            return Err(ControlError::bad_request(
                "give access_token or client_id, not both",
            ))
        }
    };
    let revoked = app.lock().tokens.revoke(&which);
    Ok(Json(json!({ "revoked": revoked })))
}

/// Optional filters of `GET /__sim/requests`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestFilter {
    method: Option<String>,
    path_prefix: Option<String>,
    since_ms: Option<u64>,
}

async fn list_requests(
    State(app): State<App>,
    RawQuery(query): RawQuery,
) -> Answer<Vec<RequestRecord>> {
    let filter: RequestFilter = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|error| ControlError::bad_request(format!("invalid query: {error}")))?;
    let records = app
        .lock()
        .requests
        .records()
        .into_iter()
        .filter(|record| {
            filter
                .method
                .as_deref()
                .is_none_or(|method| method.eq_ignore_ascii_case(&record.method))
                && filter
                    .path_prefix
                    .as_deref()
                    .is_none_or(|prefix| record.path.starts_with(prefix))
                && filter
                    .since_ms
                    .is_none_or(|since| record.received_ms >= since)
        })
        .collect();
    Ok(Json(records))
}

async fn clear_requests(State(app): State<App>) -> StatusCode {
    app.lock().requests.clear();
    StatusCode::NO_CONTENT
}

async fn list_groups(State(app): State<App>) -> Json<Vec<EmergencyGroup>> {
    Json(app.lock().groups.all())
}

async fn get_group(State(app): State<App>, Path(id): Path<String>) -> Answer<EmergencyGroup> {
    app.lock()
        .groups
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ControlError::not_found(format!("no emergency group {id}")))
}

/// Sets fields of a group (or creates one) as given; see `GroupStore::patch`.
async fn patch_group(
    State(app): State<App>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<EmergencyGroup> {
    let patch: Map<String, Value> = parse(&body)?;
    app.lock()
        .groups
        .patch(&id, patch, SystemTime::now())
        .map(Json)
        .map_err(ControlError::bad_request)
}

async fn list_rows(State(app): State<App>, Path(table): Path<String>) -> Answer<Vec<Row>> {
    app.lock()
        .tables
        .rows(&table)
        .map(Json)
        .map_err(|_| ControlError::not_found(format!("no data table {table}")))
}

async fn get_row(
    State(app): State<App>,
    Path((table, row)): Path<(String, String)>,
) -> Answer<Row> {
    app.lock()
        .tables
        .row(&table, &row)
        .cloned()
        .map(Json)
        .map_err(|_| ControlError::not_found(format!("no row {row} in data table {table}")))
}

async fn put_row(
    State(app): State<App>,
    Path((table, row_id)): Path<(String, String)>,
    body: Bytes,
) -> Answer<Row> {
    let row: Row = parse(&body)?;
    app.lock()
        .tables
        .set(&table, &row_id, row)
        .map(Json)
        .map_err(|error| SimError::from(error).into())
}

async fn guide(State(app): State<App>) -> Json<GuideRouting> {
    Json(app.lock().guide.view(Instant::now()))
}

/// `{"status": …}`, plus `"category"` for Jira.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItsmStatus {
    status: String,
    #[serde(default)]
    category: Option<String>,
}

async fn set_itsm(
    State(app): State<App>,
    Path((tool, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ControlError> {
    let tool: ItsmTool = tool.parse().map_err(ControlError::not_found)?;
    let status: ItsmStatus = parse(&body)?;
    app.lock()
        .itsm
        .set(tool, &id, &status.status, status.category.as_deref())
        .map_err(ControlError::bad_request)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{"seconds": 30, "mode": "reset" | "unavailable"}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DownRequest {
    seconds: f64,
    #[serde(default)]
    mode: OutageMode,
}

async fn go_down(State(app): State<App>, body: Bytes) -> Result<StatusCode, ControlError> {
    let request: DownRequest = parse(&body)?;
    let duration = Duration::try_from_secs_f64(request.seconds)
        .ok()
        .filter(|duration| *duration <= MAX_OUTAGE)
        .ok_or_else(|| ControlError::bad_request("seconds must be between 0 and 86400"))?;
    app.lock().outage = Some(Outage {
        until: Instant::now() + duration,
        mode: request.mode,
    });
    Ok(StatusCode::NO_CONTENT)
}

async fn come_up(State(app): State<App>) -> StatusCode {
    app.lock().outage = None;
    StatusCode::NO_CONTENT
}
