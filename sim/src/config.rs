//! Simulator configuration and the default seed.
//!
//! Everything a test or `make run` may want to vary lives here: who can log in and with which
//! permissions, which emergency groups, data tables and ITSM incidents exist, and the timing
//! knobs (token lifetime, rate limit, the guide contract's propagation delay). A JSON file may
//! give any subset of the fields; the others keep the seed values, so `{"token_lifetime_secs": 5}`
//! is a whole config. Unknown fields are refused, so a typo does not silently fall back to a seed
//! value.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::errors::SimError;
use crate::groups::{DomainRef, EmergencyCallFlow, EmergencyGroup, GroupLifecycle};
use crate::itsm::ItsmSeed;

/// The seeded default emergency group.
pub const DEFAULT_GROUP_ID: &str = "3c3f7a3e-2f5c-4f3a-9b1e-000000000001";
/// The seeded second emergency group ("Carrier Outage").
pub const CARRIER_OUTAGE_GROUP_ID: &str = "3c3f7a3e-2f5c-4f3a-9b1e-000000000002";
/// The seeded data table the driver writes the queue list into.
pub const DEFAULT_DATATABLE_ID: &str = "emr-datatable-0001";

/// emr-edge's own OAuth client.
pub const EMR_EDGE_CLIENT_ID: &str = "emr-edge-client";
pub const EMR_EDGE_CLIENT_SECRET: &str = "emr-edge-secret";
pub const EMR_EDGE_CLIENT_NAME: &str = "emr-edge";
/// A client standing for a person in the Genesys admin UI: all permissions, a user id.
pub const UI_ADMIN_CLIENT_ID: &str = "ui-admin-client";
pub const UI_ADMIN_CLIENT_SECRET: &str = "ui-admin-secret";
pub const UI_ADMIN_CLIENT_NAME: &str = "Genesys Cloud Admin UI";
pub const UI_ADMIN_USER_ID: &str = "5e1d2c3b-4a59-4b68-8c7d-00000000a001";
/// A client whose role grants nothing, for 403 paths.
pub const NO_PERMS_CLIENT_ID: &str = "no-perms-client";
pub const NO_PERMS_CLIENT_SECRET: &str = "no-perms-secret";

/// Permission to read emergency groups.
pub const PERM_GROUP_VIEW: &str = "routing:emergencyGroup:view";
/// Permission to update emergency groups.
pub const PERM_GROUP_EDIT: &str = "routing:emergencyGroup:edit";
/// Permission to update data table rows.
pub const PERM_ROW_EDIT: &str = "architect:datatableRow:edit";
/// Permission to create data table rows.
pub const PERM_ROW_ADD: &str = "architect:datatableRow:add";
/// Permission to read data tables and their rows.
pub const PERM_DATATABLE_VIEW: &str = "architect:datatable:view";

const MAX_TOKEN_LIFETIME_SECS: u64 = 366 * 86_400;
const MAX_WINDOW_SECS: u64 = 86_400;
const MAX_PROPAGATION_DELAY_MS: u64 = 3_600_000;

const ORG_ID: &str = "9b0f6e2a-7c1d-4e5f-8a6b-0000000000e1";
const DIVISION_ID: &str = "7a2b3c4d-5e6f-4a1b-9c2d-0000000000d1";
const EMERGENCY_FLOW_ID: &str = "1f2e3d4c-5b6a-4978-8695-0000000000f1";
const IVR_ID: &str = "2a3b4c5d-6e7f-4a8b-9c0d-0000000000c1";

/// The whole simulator configuration. `SimConfig::default()` is the seed described in the
/// crate README.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Where to listen. Port 0 picks a free port (what tests want).
    pub listen: SocketAddr,
    /// The organization every client belongs to (shown by `/api/v2/tokens/me`).
    pub organization: Organization,
    /// OAuth clients that may use the client-credentials grant.
    pub clients: Vec<ClientConfig>,
    /// Emergency groups, in the Genesys model (camelCase fields).
    pub emergency_groups: Vec<EmergencyGroup>,
    /// Data tables and their initial rows.
    pub datatables: Vec<DataTableConfig>,
    /// Lifetime of an issued access token, answered as `expires_in`.
    pub token_lifetime_secs: u64,
    /// Requests one access token may make per rate-limit window (Genesys: 300 a minute).
    pub rate_limit_per_minute: u32,
    /// Length of the rate-limit window; 60 s like Genesys, shorter only for tests.
    pub rate_limit_window_secs: u64,
    /// How long the guide contract's routing stays `PENDING` after a POST.
    pub propagation_delay_ms: u64,
    /// Initial ITSM incident states for the status-poll endpoints.
    pub itsm: ItsmSeed,
    /// How many requests the request log keeps (oldest dropped first).
    pub request_log_capacity: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            organization: Organization::default(),
            clients: default_clients(),
            emergency_groups: default_groups(),
            datatables: vec![DataTableConfig {
                id: DEFAULT_DATATABLE_ID.to_owned(),
                name: "EMR Routing".to_owned(),
                schema: None,
                rows: BTreeMap::new(),
            }],
            token_lifetime_secs: 86_400,
            rate_limit_per_minute: 300,
            rate_limit_window_secs: 60,
            propagation_delay_ms: 0,
            itsm: ItsmSeed::default(),
            request_log_capacity: 100_000,
        }
    }
}

impl SimConfig {
    /// Reads a JSON config file; absent fields keep their seed values.
    pub fn from_file(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::ConfigFile {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// Parses a JSON config; absent fields keep their seed values.
    pub fn from_json(text: &str) -> Result<Self, SimError> {
        let config: Self =
            serde_json::from_str(text).map_err(|error| SimError::Config(error.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: bounds and unique ids. The message names the field.
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |message: String| Err(SimError::Config(message));
        // Upper bounds keep every deadline computed from these far from overflow.
        if !(1..=MAX_TOKEN_LIFETIME_SECS).contains(&self.token_lifetime_secs) {
            return invalid(format!(
                "token_lifetime_secs must be 1-{MAX_TOKEN_LIFETIME_SECS}"
            ));
        }
        if self.rate_limit_per_minute == 0 {
            return invalid("rate_limit_per_minute must be at least 1".to_owned());
        }
        if !(1..=MAX_WINDOW_SECS).contains(&self.rate_limit_window_secs) {
            return invalid(format!(
                "rate_limit_window_secs must be 1-{MAX_WINDOW_SECS}"
            ));
        }
        if self.propagation_delay_ms > MAX_PROPAGATION_DELAY_MS {
            return invalid(format!(
                "propagation_delay_ms must be at most {MAX_PROPAGATION_DELAY_MS}"
            ));
        }
        if self.request_log_capacity == 0 {
            return invalid("request_log_capacity must be at least 1".to_owned());
        }
        let mut seen = BTreeSet::new();
        for (index, client) in self.clients.iter().enumerate() {
            if client.id.is_empty() || client.secret.is_empty() {
                return invalid(format!("clients[{index}]: id and secret must not be empty"));
            }
            if client.id.contains(':') {
                return invalid(format!(
                    "clients[{index}].id: must not contain ':' (Basic credentials)"
                ));
            }
            if !seen.insert(client.id.as_str()) {
                return invalid(format!("clients[{index}].id: duplicate id {}", client.id));
            }
        }
        let mut seen = BTreeSet::new();
        for (index, group) in self.emergency_groups.iter().enumerate() {
            if group.id.is_empty() {
                return invalid(format!("emergency_groups[{index}].id must not be empty"));
            }
            if !seen.insert(group.id.as_str()) {
                return invalid(format!(
                    "emergency_groups[{index}].id: duplicate id {}",
                    group.id
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (index, table) in self.datatables.iter().enumerate() {
            if !seen.insert(table.id.as_str()) {
                return invalid(format!("datatables[{index}].id: duplicate id {}", table.id));
            }
            let schema = table.table_schema().map_err(|message| {
                SimError::Config(format!("datatables[{index}].schema.{message}"))
            })?;
            for (row_id, row) in &table.rows {
                crate::datatables::check_row(row_id, row)
                    .and_then(|()| schema.check(row))
                    .map_err(|message| {
                        SimError::Config(format!("datatables[{index}].rows.{row_id}: {message}"))
                    })?;
            }
        }
        self.itsm
            .validate()
            .map_err(|message| SimError::Config(format!("itsm.{message}")))?;
        Ok(())
    }
}

/// The organization the simulated clients belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    pub id: String,
    pub name: String,
}

impl Default for Organization {
    fn default() -> Self {
        Self {
            id: ORG_ID.to_owned(),
            name: "emr-sim".to_owned(),
        }
    }
}

/// An OAuth client of the client-credentials grant. Real clients get their rights from roles;
/// here the role is flattened into a permission list. `*` grants everything, and a trailing
/// `*` segment grants a whole domain (`routing:*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub id: String,
    pub secret: String,
    /// Shown as `modifiedByApp` on the objects this client writes.
    pub name: String,
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Set for a client that stands for a person: written as `modifiedBy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl ClientConfig {
    /// Whether this client's role grants `permission`.
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions
            .iter()
            .any(|granted| permission_matches(granted, permission))
    }
}

fn permission_matches(granted: &str, wanted: &str) -> bool {
    let mut granted_parts = granted.split(':');
    let mut wanted_parts = wanted.split(':');
    loop {
        match (granted_parts.next(), wanted_parts.next()) {
            (Some("*"), _) => return true,
            (Some(g), Some(w)) if g == w => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A data table: its schema and rows, keyed by the `key` column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataTableConfig {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// The table's JSON Schema, as Genesys holds it; absent, emr-edge's routing table
    /// (`genesys/datatable.schema.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default)]
    pub rows: BTreeMap<String, Map<String, Value>>,
}

impl DataTableConfig {
    /// The compiled schema; the message names the schema's field.
    pub fn table_schema(&self) -> Result<crate::tableschema::TableSchema, String> {
        match &self.schema {
            Some(schema) => crate::tableschema::TableSchema::compile(schema),
            None => crate::tableschema::TableSchema::routing(),
        }
    }
}

fn default_clients() -> Vec<ClientConfig> {
    vec![
        ClientConfig {
            id: EMR_EDGE_CLIENT_ID.to_owned(),
            secret: EMR_EDGE_CLIENT_SECRET.to_owned(),
            name: EMR_EDGE_CLIENT_NAME.to_owned(),
            permissions: vec![
                PERM_GROUP_VIEW.to_owned(),
                PERM_GROUP_EDIT.to_owned(),
                PERM_DATATABLE_VIEW.to_owned(),
                PERM_ROW_EDIT.to_owned(),
                PERM_ROW_ADD.to_owned(),
            ],
            user_id: None,
        },
        ClientConfig {
            id: UI_ADMIN_CLIENT_ID.to_owned(),
            secret: UI_ADMIN_CLIENT_SECRET.to_owned(),
            name: UI_ADMIN_CLIENT_NAME.to_owned(),
            permissions: vec!["*".to_owned()],
            user_id: Some(UI_ADMIN_USER_ID.to_owned()),
        },
        ClientConfig {
            id: NO_PERMS_CLIENT_ID.to_owned(),
            secret: NO_PERMS_CLIENT_SECRET.to_owned(),
            name: "no-perms".to_owned(),
            permissions: Vec::new(),
            user_id: None,
        },
    ]
}

fn default_groups() -> Vec<EmergencyGroup> {
    let group = |id: &str, name: &str, description: &str| EmergencyGroup {
        id: id.to_owned(),
        name: name.to_owned(),
        division: Some(DomainRef::new(
            DIVISION_ID,
            "Home",
            "/api/v2/authorization/divisions",
        )),
        description: Some(description.to_owned()),
        version: 1,
        date_modified: Some("2024-08-01T09:00:00.000Z".to_owned()),
        modified_by: Some(UI_ADMIN_USER_ID.to_owned()),
        modified_by_app: Some(UI_ADMIN_CLIENT_NAME.to_owned()),
        state: GroupLifecycle::Active,
        enabled: false,
        emergency_call_flows: vec![EmergencyCallFlow {
            emergency_flow: Some(DomainRef::new(
                EMERGENCY_FLOW_ID,
                "Emergency Inbound Flow",
                "/api/v2/flows",
            )),
            ivrs: vec![DomainRef::new(IVR_ID, "Main IVR", "/api/v2/architect/ivrs")],
        }],
        self_uri: None,
    };
    vec![
        group(
            DEFAULT_GROUP_ID,
            "Default Emergency",
            "Default emergency group switched by emr-edge",
        ),
        group(
            CARRIER_OUTAGE_GROUP_ID,
            "Carrier Outage",
            "Emergency routing while a carrier is down",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_is_valid() {
        assert!(SimConfig::default().validate().is_ok());
    }

    #[test]
    fn a_partial_file_keeps_the_seed() {
        let config = SimConfig::from_json(r#"{"token_lifetime_secs": 5}"#).unwrap();
        assert_eq!(config.token_lifetime_secs, 5);
        assert_eq!(config.clients.len(), 3);
        assert_eq!(config.emergency_groups.len(), 2);
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let error = SimConfig::from_json(r#"{"token_lifetime": 5}"#).unwrap_err();
        assert!(error.to_string().contains("token_lifetime"));
        let error = SimConfig::from_json(r#"{"rate_limit_per_minute": 0}"#).unwrap_err();
        assert!(error.to_string().contains("rate_limit_per_minute"));
    }

    #[test]
    fn permission_wildcards() {
        assert!(permission_matches("*", "routing:emergencyGroup:view"));
        assert!(permission_matches(
            "routing:*",
            "routing:emergencyGroup:view"
        ));
        assert!(permission_matches(
            "routing:emergencyGroup:view",
            "routing:emergencyGroup:view"
        ));
        assert!(!permission_matches(
            "routing:emergencyGroup:view",
            "routing:emergencyGroup:edit"
        ));
        assert!(!permission_matches(
            "routing",
            "routing:emergencyGroup:view"
        ));
    }
}
