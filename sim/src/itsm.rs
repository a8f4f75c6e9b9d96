//! Incident status endpoints of the ITSM tools, for emr-edge's lost-resolution poll.
//!
//! Each answers only what the poll reads, in the shape of the real API:
//! - PagerDuty `GET /incidents/{id}` → `{"incident": {"id", "status", …}}`;
//! - ServiceNow `GET /api/now/table/incident?sysparm_query=number=INC…` → `{"result": [{"number",
//!   "sys_id", "state"}]}` with the numeric state as a string (6 Resolved, 7 Closed, 8 Canceled);
//! - Jira `GET /rest/api/3/issue/{key}` → `{"key", "fields": {"status": {"name", "statusCategory":
//!   {"key"}}}}` where the category key `done` means finished.
//!
//! No credentials are checked: the poll's authentication is the real tools' business.
//! Incidents are created and changed through the control API (or the config's `itsm` seed).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::ids::sys_id;
use crate::state::App;

/// An ITSM tool whose incident status the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItsmTool {
    PagerDuty,
    ServiceNow,
    Jira,
}

impl FromStr for ItsmTool {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "pagerduty" => Ok(Self::PagerDuty),
            "servicenow" => Ok(Self::ServiceNow),
            "jira" => Ok(Self::Jira),
            other => Err(format!(
                "unknown ITSM tool '{other}' (pagerduty, servicenow or jira)"
            )),
        }
    }
}

impl fmt::Display for ItsmTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PagerDuty => "pagerduty",
            Self::ServiceNow => "servicenow",
            Self::Jira => "jira",
        })
    }
}

/// Initial incidents: id → status, per tool. Statuses as the control API takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ItsmSeed {
    pub pagerduty: BTreeMap<String, String>,
    pub servicenow: BTreeMap<String, String>,
    pub jira: BTreeMap<String, String>,
}

impl ItsmSeed {
    /// Checks every status; the error names the tool and incident.
    pub(crate) fn validate(&self) -> Result<(), String> {
        ItsmStore::new(self).map(|_| ())
    }

    fn entries(&self) -> impl Iterator<Item = (ItsmTool, &String, &String)> {
        self.pagerduty
            .iter()
            .map(|(id, status)| (ItsmTool::PagerDuty, id, status))
            .chain(
                self.servicenow
                    .iter()
                    .map(|(id, status)| (ItsmTool::ServiceNow, id, status)),
            )
            .chain(
                self.jira
                    .iter()
                    .map(|(id, status)| (ItsmTool::Jira, id, status)),
            )
    }
}

/// PagerDuty incident statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PagerDutyStatus {
    Triggered,
    Acknowledged,
    Resolved,
}

impl PagerDutyStatus {
    fn parse(status: &str) -> Result<Self, String> {
        match status {
            "triggered" => Ok(Self::Triggered),
            "acknowledged" => Ok(Self::Acknowledged),
            "resolved" => Ok(Self::Resolved),
            other => Err(format!(
                "PagerDuty status '{other}' is not triggered, acknowledged or resolved"
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Triggered => "triggered",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }
}

/// A ServiceNow incident: its `sys_id` and numeric `state` (1 New … 8 Canceled).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceNowIncident {
    sys_id: String,
    state: u8,
}

/// ServiceNow's incident state, by number (`"6"`) or by name (`"Resolved"`).
fn servicenow_state(status: &str) -> Result<u8, String> {
    let by_name = match status.to_ascii_lowercase().as_str() {
        "new" => Some(1),
        "in progress" => Some(2),
        "on hold" => Some(3),
        "resolved" => Some(6),
        "closed" => Some(7),
        "canceled" | "cancelled" => Some(8),
        _ => None,
    };
    match by_name.or_else(|| status.parse().ok()) {
        Some(state @ 1..=8) => Ok(state),
        _ => Err(format!(
            "ServiceNow state '{status}' is not 1-8 or New, In Progress, On Hold, Resolved, Closed, Canceled"
        )),
    }
}

/// A Jira status category (`statusCategory.key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JiraCategory {
    New,
    Indeterminate,
    Done,
}

impl JiraCategory {
    fn parse(key: &str) -> Result<Self, String> {
        match key {
            "new" => Ok(Self::New),
            "indeterminate" => Ok(Self::Indeterminate),
            "done" => Ok(Self::Done),
            other => Err(format!(
                "Jira status category '{other}' is not new, indeterminate or done"
            )),
        }
    }

    /// The category Jira's default workflows give a status of this name.
    fn of_status(name: &str) -> Self {
        match name.to_ascii_lowercase().as_str() {
            "done" | "resolved" | "closed" | "canceled" | "cancelled" | "completed" => Self::Done,
            "to do" | "open" | "new" | "backlog" | "reopened" => Self::New,
            _ => Self::Indeterminate,
        }
    }

    /// `(key, id, name)` as Jira answers them.
    fn describe(self) -> (&'static str, u8, &'static str) {
        match self {
            Self::New => ("new", 2, "To Do"),
            Self::Indeterminate => ("indeterminate", 4, "In Progress"),
            Self::Done => ("done", 3, "Done"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct JiraStatus {
    name: String,
    category: JiraCategory,
}

/// Every simulated ITSM incident.
#[derive(Debug, Default)]
pub(crate) struct ItsmStore {
    pagerduty: BTreeMap<String, PagerDutyStatus>,
    servicenow: BTreeMap<String, ServiceNowIncident>,
    jira: BTreeMap<String, JiraStatus>,
}

impl ItsmStore {
    pub fn new(seed: &ItsmSeed) -> Result<Self, String> {
        let mut store = Self::default();
        for (tool, id, status) in seed.entries() {
            store
                .set(tool, id, status, None)
                .map_err(|message| format!("{tool}.{id}: {message}"))?;
        }
        Ok(store)
    }

    /// Creates or changes an incident. `category` is only read for Jira, where it defaults to
    /// what the status name implies.
    pub fn set(
        &mut self,
        tool: ItsmTool,
        id: &str,
        status: &str,
        category: Option<&str>,
    ) -> Result<(), String> {
        if id.is_empty() {
            return Err("the incident id must not be empty".to_owned());
        }
        match tool {
            ItsmTool::PagerDuty => {
                self.pagerduty
                    .insert(id.to_owned(), PagerDutyStatus::parse(status)?);
            }
            ItsmTool::ServiceNow => {
                let state = servicenow_state(status)?;
                let incident =
                    self.servicenow
                        .entry(id.to_owned())
                        .or_insert_with(|| ServiceNowIncident {
                            sys_id: sys_id(),
                            state,
                        });
                incident.state = state;
            }
            ItsmTool::Jira => {
                if status.trim().is_empty() {
                    return Err("the Jira status name must not be empty".to_owned());
                }
                let category = match category {
                    Some(key) => JiraCategory::parse(key)?,
                    None => JiraCategory::of_status(status),
                };
                self.jira.insert(
                    id.to_owned(),
                    JiraStatus {
                        name: status.to_owned(),
                        category,
                    },
                );
            }
        }
        Ok(())
    }

    fn pagerduty_incident(&self, id: &str) -> Option<Value> {
        let status = self.pagerduty.get(id)?;
        Some(json!({
            "incident": {
                "id": id,
                "type": "incident",
                "summary": format!("[emr-sim] incident {id}"),
                "status": status.as_str(),
                "self": format!("https://api.pagerduty.com/incidents/{id}"),
                "html_url": format!("https://emr-sim.pagerduty.com/incidents/{id}"),
            }
        }))
    }

    fn servicenow_records(&self, filter: &ServiceNowFilter) -> Vec<Map<String, Value>> {
        self.servicenow
            .iter()
            .filter(|(number, incident)| {
                filter
                    .number
                    .as_ref()
                    .is_none_or(|wanted| wanted == *number)
                    && filter
                        .sys_id
                        .as_ref()
                        .is_none_or(|wanted| *wanted == incident.sys_id)
            })
            .map(|(number, incident)| {
                let mut record = Map::new();
                record.insert("number".to_owned(), Value::from(number.as_str()));
                record.insert("sys_id".to_owned(), Value::from(incident.sys_id.as_str()));
                record.insert("state".to_owned(), Value::from(incident.state.to_string()));
                if let Some(fields) = &filter.fields {
                    record.retain(|name, _| fields.iter().any(|field| field == name));
                }
                record
            })
            .collect()
    }

    fn jira_issue(&self, key: &str) -> Option<Value> {
        let status = self.jira.get(key)?;
        let (category_key, category_id, category_name) = status.category.describe();
        Some(json!({
            "key": key,
            "self": format!("https://emr-sim.atlassian.net/rest/api/3/issue/{key}"),
            "fields": {
                "status": {
                    "name": status.name,
                    "statusCategory": {
                        "id": category_id,
                        "key": category_key,
                        "name": category_name,
                    }
                }
            }
        }))
    }
}

/// The parts of a ServiceNow Table API query the poll uses.
#[derive(Debug, Default)]
struct ServiceNowFilter {
    number: Option<String>,
    sys_id: Option<String>,
    fields: Option<Vec<String>>,
}

impl ServiceNowFilter {
    /// Reads `sysparm_query` (`number=…` and `sys_id=…` terms joined by `^`; other terms are
    /// ignored) and `sysparm_fields`.
    fn parse(query: Option<&str>) -> Self {
        let pairs: Vec<(String, String)> = query
            .and_then(|raw| serde_urlencoded::from_str(raw).ok())
            .unwrap_or_default();
        let mut filter = Self::default();
        for (name, value) in pairs {
            match name.as_str() {
                "sysparm_query" => {
                    for term in value.split('^') {
                        if let Some(number) = term.strip_prefix("number=") {
                            filter.number = Some(number.to_owned());
                        } else if let Some(id) = term.strip_prefix("sys_id=") {
                            filter.sys_id = Some(id.to_owned());
                        }
                    }
                }
                "sysparm_fields" => {
                    filter.fields = Some(value.split(',').map(|f| f.trim().to_owned()).collect());
                }
                _ => {}
            }
        }
        filter
    }
}

/// PagerDuty `GET /incidents/{id}`
pub(crate) async fn pagerduty(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.lock().itsm.pagerduty_incident(&id) {
        Some(incident) => Json(incident).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"message": "Not Found", "code": 2100}})),
        )
            .into_response(),
    }
}

/// ServiceNow `GET /api/now/table/incident?sysparm_query=number=INC…`
pub(crate) async fn servicenow(State(app): State<App>, RawQuery(query): RawQuery) -> Json<Value> {
    let filter = ServiceNowFilter::parse(query.as_deref());
    let records = app.lock().itsm.servicenow_records(&filter);
    Json(json!({ "result": records }))
}

/// Jira `GET /rest/api/3/issue/{key}` (`fields` is ignored: status is always answered).
pub(crate) async fn jira(State(app): State<App>, Path(key): Path<String>) -> Response {
    match app.lock().itsm.jira_issue(&key) {
        Some(issue) => Json(issue).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({
                "errorMessages": ["Issue does not exist or you do not have permission to see it."],
                "errors": {},
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_checked_per_tool() {
        let mut store = ItsmStore::default();
        assert!(store
            .set(ItsmTool::PagerDuty, "P1", "resolved", None)
            .is_ok());
        assert!(store
            .set(ItsmTool::PagerDuty, "P1", "closed", None)
            .is_err());
        assert!(store
            .set(ItsmTool::ServiceNow, "INC1", "Resolved", None)
            .is_ok());
        assert!(store.set(ItsmTool::ServiceNow, "INC1", "9", None).is_err());
        assert!(store.set(ItsmTool::Jira, "OPS-1", "Done", None).is_ok());
        assert!(store
            .set(ItsmTool::Jira, "OPS-1", "Fixed", Some("later"))
            .is_err());
        assert_eq!(
            store.jira.get("OPS-1").unwrap().category,
            JiraCategory::Done
        );
    }

    #[test]
    fn servicenow_keeps_its_sys_id_across_changes() {
        let mut store = ItsmStore::default();
        store.set(ItsmTool::ServiceNow, "INC1", "1", None).unwrap();
        let first = store.servicenow.get("INC1").unwrap().sys_id.clone();
        store.set(ItsmTool::ServiceNow, "INC1", "6", None).unwrap();
        let incident = store.servicenow.get("INC1").unwrap();
        assert_eq!(incident.sys_id, first);
        assert_eq!(incident.state, 6);
    }

    #[test]
    fn servicenow_queries_filter_by_number_and_fields() {
        let mut store = ItsmStore::default();
        store.set(ItsmTool::ServiceNow, "INC1", "2", None).unwrap();
        store.set(ItsmTool::ServiceNow, "INC2", "7", None).unwrap();
        let filter = ServiceNowFilter::parse(Some(
            "sysparm_query=active%3Dtrue%5Enumber%3DINC2&sysparm_fields=number,state",
        ));
        let records = store.servicenow_records(&filter);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["state"], "7");
        assert!(records[0].get("sys_id").is_none());
    }
}
