//! emr-sim: a local simulator of the Genesys Cloud and ITSM APIs emr-edge talks to.
//!
//! One listener serves both the login host (`/oauth/token`) and the API host (`/api/v2/…`), plus
//! the ITSM status endpoints and a control API under `/__sim/`, so Envoy's clusters can all point
//! at it. Models, status codes and error bodies follow the real services (docs/genesys-api.md), so the
//! driver is tested against what production will answer, failures included.
//!
//! In-process use (tests):
//!
//! ```no_run
//! # async fn demo() -> Result<(), emr_sim::SimError> {
//! let sim = emr_sim::Sim::start(emr_sim::SimConfig::default()).await?;
//! let url = format!("{}/api/v2/architect/emergencygroups", sim.base_url());
//! sim.add_fault(emr_sim::Fault::answer(503).on_method("PUT").times(3))?;
//! // … drive emr-edge against `url`, then look at what it sent:
//! let puts = sim.requests().into_iter().filter(|r| r.method == "PUT").count();
//! sim.shutdown().await;
//! # let _ = (url, puts);
//! # Ok(())
//! # }
//! ```
//!
//! As a process: `emr-sim --listen 127.0.0.1:PORT [--config file.json]` (see `main.rs`).

mod auth;
mod clock;
mod config;
mod control;
mod datatables;
mod errors;
mod faults;
mod frontdoor;
mod groups;
mod guide;
mod ids;
mod itsm;
pub mod loopback;
mod oauth;
mod query;
mod ratelimit;
mod requestlog;
mod server;
mod state;
mod tableschema;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::http::{Method, StatusCode};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{
    ClientConfig, DataTableConfig, Organization, SimConfig, CARRIER_OUTAGE_GROUP_ID,
    DEFAULT_DATATABLE_ID, DEFAULT_GROUP_ID, EMR_EDGE_CLIENT_ID, EMR_EDGE_CLIENT_NAME,
    EMR_EDGE_CLIENT_SECRET, NO_PERMS_CLIENT_ID, NO_PERMS_CLIENT_SECRET, PERM_DATATABLE_VIEW,
    PERM_GROUP_EDIT, PERM_GROUP_VIEW, PERM_ROW_ADD, PERM_ROW_EDIT, UI_ADMIN_CLIENT_ID,
    UI_ADMIN_CLIENT_NAME, UI_ADMIN_CLIENT_SECRET, UI_ADMIN_USER_ID,
};
pub use datatables::Row;
pub use errors::SimError;
pub use faults::{Fault, FaultEntry, OutageMode};
pub use groups::{DomainRef, EmergencyCallFlow, EmergencyGroup, GroupLifecycle};
pub use guide::{GuideRouting, RoutingConfiguration, RoutingState};
pub use itsm::{ItsmSeed, ItsmTool};
pub use oauth::Revoke;
pub use requestlog::RequestRecord;
pub use tableschema::ROUTING_SCHEMA;

use crate::errors::ApiError;
use crate::faults::{Outage, MAX_OUTAGE};
use crate::state::{App, Shared};

/// Starts simulators.
#[derive(Debug)]
pub struct Sim;

impl Sim {
    /// Validates `config`, binds `config.listen` and serves until [`SimHandle::shutdown`] (or
    /// until the handle is dropped).
    pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        let shared = Arc::new(Shared::new(config)?);
        let addr = shared.config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr, source })?;
        let (shutdown, stopped) = watch::channel(false);
        let router = app_router(Arc::clone(&shared));
        let task = tokio::spawn(server::run(listener, router, stopped));
        Ok(SimHandle {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }
}

/// Every route, behind the front door; the Genesys API routes also behind authentication.
fn app_router(app: App) -> Router {
    let genesys_api = Router::new()
        .route("/api/v2/tokens/me", get(oauth::token_info))
        .route("/api/v2/architect/emergencygroups", get(groups::list))
        .route(
            "/api/v2/architect/emergencygroups/{id}",
            get(groups::get).put(groups::put),
        )
        .route(
            "/api/v2/flows/datatables/{table}/rows",
            get(datatables::list_rows).post(datatables::create_row),
        )
        .route(
            "/api/v2/flows/datatables/{table}/rows/{row}",
            get(datatables::get_row).put(datatables::put_row),
        )
        .route(
            "/api/v2/telephony/emergencyrouting",
            get(guide::get).post(guide::post),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            auth::authenticate,
        ));
    Router::new()
        .route("/oauth/token", post(oauth::issue_token))
        .route("/incidents/{id}", get(itsm::pagerduty))
        .route("/api/now/table/incident", get(itsm::servicenow))
        .route("/rest/api/3/issue/{key}", get(itsm::jira))
        .merge(genesys_api)
        .merge(control::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            frontdoor::front_door,
        ))
        .with_state(app)
}

async fn not_found() -> impl IntoResponse {
    ApiError::not_found("The requested resource was not found.")
}

async fn method_not_allowed(method: Method) -> impl IntoResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method.not.allowed",
        format!("The method {method} is not supported for this resource."),
    )
}

/// A running simulator. Dropping it stops the server too; [`SimHandle::shutdown`] also waits
/// for it to finish.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: App,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base of every route (login, API, ITSM and control).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The config it was started with.
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// Stops accepting, lets open connections finish (briefly), and waits for the server.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Puts everything back as the config seeded it: groups, rows, guide state, ITSM
    /// incidents, tokens, rate-limit windows, faults, outage and request log.
    pub fn reset(&self) -> Result<(), SimError> {
        self.shared.reset()
    }

    // --- OAuth ---

    /// Issues a token for a configured client without going through `/oauth/token`.
    pub fn issue_token(&self, client_id: &str) -> Result<String, SimError> {
        let client = self
            .shared
            .client(client_id)
            .ok_or_else(|| SimError::NotFound(format!("no client {client_id}")))?;
        let (token, _) = self.shared.lock().tokens.issue(&client.id, Instant::now());
        Ok(token)
    }

    /// Revokes tokens; returns how many. A revoked token gets 401 `bad.credentials`.
    pub fn revoke_tokens(&self, which: Revoke) -> usize {
        self.shared.lock().tokens.revoke(&which)
    }

    // --- Emergency groups ---

    pub fn emergency_group(&self, id: &str) -> Option<EmergencyGroup> {
        self.shared.lock().groups.get(id).cloned()
    }

    pub fn emergency_groups(&self) -> Vec<EmergencyGroup> {
        self.shared.lock().groups.all()
    }

    /// Stores a group exactly as given (no version bump), creating or replacing it.
    pub fn set_emergency_group(&self, group: EmergencyGroup) -> EmergencyGroup {
        self.shared.lock().groups.set(group)
    }

    /// Sets the fields of `patch` (camelCase, like `PUT /__sim/groups/{id}`); `version` is
    /// bumped and `dateModified` stamped unless the patch sets them.
    pub fn patch_emergency_group(
        &self,
        id: &str,
        patch: Value,
    ) -> Result<EmergencyGroup, SimError> {
        let Value::Object(patch) = patch else {
            return Err(SimError::Invalid(
                "a group patch must be a JSON object".to_owned(),
            ));
        };
        self.shared
            .lock()
            .groups
            .patch(id, patch, SystemTime::now())
            .map_err(SimError::Invalid)
    }

    /// Switches a group "behind emr-edge's back" as if `client_id` had written it: `enabled`
    /// set, `version` bumped, `modifiedByApp`/`modifiedBy` those of the client.
    pub fn flip_emergency_group(
        &self,
        id: &str,
        enabled: bool,
        client_id: &str,
    ) -> Result<EmergencyGroup, SimError> {
        let client = self
            .shared
            .client(client_id)
            .ok_or_else(|| SimError::NotFound(format!("no client {client_id}")))?;
        let mut state = self.shared.lock();
        if state.groups.get(id).is_none() {
            return Err(SimError::NotFound(format!("no emergency group {id}")));
        }
        let mut patch = Map::new();
        patch.insert("enabled".to_owned(), Value::Bool(enabled));
        patch.insert(
            "modifiedByApp".to_owned(),
            Value::from(client.name.as_str()),
        );
        patch.insert(
            "modifiedBy".to_owned(),
            client.user_id.as_deref().map_or(Value::Null, Value::from),
        );
        state
            .groups
            .patch(id, patch, SystemTime::now())
            .map_err(SimError::Invalid)
    }

    // --- Data tables ---

    pub fn datatable_row(&self, table: &str, row_id: &str) -> Option<Row> {
        self.shared.lock().tables.row(table, row_id).ok().cloned()
    }

    pub fn datatable_rows(&self, table: &str) -> Result<Vec<Row>, SimError> {
        Ok(self.shared.lock().tables.rows(table)?)
    }

    /// Writes a row (its `key` must equal `row_id`).
    pub fn set_datatable_row(&self, table: &str, row_id: &str, row: Row) -> Result<(), SimError> {
        self.shared.lock().tables.set(table, row_id, row)?;
        Ok(())
    }

    // --- Guide contract ---

    /// What `GET /api/v2/telephony/emergencyrouting` would answer now.
    pub fn guide_routing(&self) -> GuideRouting {
        self.shared.lock().guide.view(Instant::now())
    }

    // --- ITSM ---

    /// Creates or changes an ITSM incident: PagerDuty `triggered|acknowledged|resolved`,
    /// ServiceNow `1`-`8` or a state name, Jira a status name (category from the name).
    pub fn set_itsm_status(&self, tool: ItsmTool, id: &str, status: &str) -> Result<(), SimError> {
        self.shared
            .lock()
            .itsm
            .set(tool, id, status, None)
            .map_err(SimError::Invalid)
    }

    /// Sets a Jira issue's status with an explicit category (`new`, `indeterminate`, `done`).
    pub fn set_jira_status(&self, key: &str, status: &str, category: &str) -> Result<(), SimError> {
        self.shared
            .lock()
            .itsm
            .set(ItsmTool::Jira, key, status, Some(category))
            .map_err(SimError::Invalid)
    }

    // --- Faults and outages ---

    /// Adds a fault; returns its id.
    pub fn add_fault(&self, fault: Fault) -> Result<u64, SimError> {
        self.shared
            .lock()
            .faults
            .add(fault)
            .map_err(SimError::Invalid)
    }

    /// Removes one fault; false if it was unknown (or used up).
    pub fn remove_fault(&self, id: u64) -> bool {
        self.shared.lock().faults.remove(id)
    }

    pub fn faults(&self) -> Vec<FaultEntry> {
        self.shared.lock().faults.list()
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Refuses every request outside the control API for `duration`.
    pub fn go_down(&self, duration: Duration, mode: OutageMode) -> Result<(), SimError> {
        if duration > MAX_OUTAGE {
            return Err(SimError::Invalid(
                "an outage lasts at most a day".to_owned(),
            ));
        }
        self.shared.lock().outage = Some(Outage {
            until: Instant::now() + duration,
            mode,
        });
        Ok(())
    }

    /// Ends an outage early.
    pub fn come_up(&self) {
        self.shared.lock().outage = None;
    }

    // --- Request log ---

    /// Every logged request, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.records()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
