//! What each tool's status API is asked, and what its answer means.

use serde_json::Value;

use crate::callout::encode_segment;
use crate::event::Source;

use super::config::Tool;

/// What a tool says about an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolStatus {
    /// Still open there; the tool's status.
    Open(String),
    /// Resolved (or closed, canceled, done) there; the tool's status.
    Resolved(String),
    /// The tool does not know the incident.
    NotFound,
}

/// PagerDuty `{"incident": {"status": "triggered|acknowledged|resolved"}}`.
pub fn parse_pagerduty(body: &[u8]) -> Result<ToolStatus, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    let status = v
        .pointer("/incident/status")
        .and_then(Value::as_str)
        .ok_or("no incident.status in the answer")?;
    match status {
        "resolved" => Ok(ToolStatus::Resolved(status.to_owned())),
        "triggered" | "acknowledged" => Ok(ToolStatus::Open(status.to_owned())),
        other => Err(format!("unknown incident status {:?}", short(other))),
    }
}

/// ServiceNow `{"result": [{"state": "6"}]}`: 6 Resolved, 7 Closed, 8
/// Canceled. The state may come as a number, a numeric string, a label, or
/// `{"value", "display_value"}`.
pub fn parse_servicenow(body: &[u8]) -> Result<ToolStatus, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    let result = v
        .get("result")
        .and_then(Value::as_array)
        .ok_or("no result list in the answer")?;
    let Some(record) = result.first() else {
        return Ok(ToolStatus::NotFound);
    };
    let state = record.get("state").ok_or("no state in the record")?;
    let state = match state {
        Value::Object(o) => o
            .get("value")
            .or_else(|| o.get("display_value"))
            .cloned()
            .unwrap_or(Value::Null),
        other => other.clone(),
    };
    let text = match &state {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return Err("the state is not a string or number".to_owned()),
    };
    let resolved = match text.parse::<u32>() {
        Ok(n) => matches!(n, 6..=8),
        Err(_) => matches!(
            text.to_ascii_lowercase().as_str(),
            "resolved" | "closed" | "canceled" | "cancelled"
        ),
    };
    let shown = format!("state {}", short(&text));
    Ok(if resolved {
        ToolStatus::Resolved(shown)
    } else {
        ToolStatus::Open(shown)
    })
}

/// Jira `{"fields": {"status": {"name", "statusCategory": {"key"}}}}`:
/// category `done` is finished.
pub fn parse_jira(body: &[u8]) -> Result<ToolStatus, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("unreadable answer: {e}"))?;
    let status = v
        .pointer("/fields/status")
        .ok_or("no fields.status in the answer")?;
    let name = status.get("name").and_then(Value::as_str).unwrap_or("?");
    let category = status
        .pointer("/statusCategory/key")
        .and_then(Value::as_str)
        .ok_or("no fields.status.statusCategory.key in the answer")?;
    let shown = format!("{} ({})", short(name), short(category));
    Ok(if category == "done" {
        ToolStatus::Resolved(shown)
    } else {
        ToolStatus::Open(shown)
    })
}

/// At most 64 printable characters of something a tool said.
fn short(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// A 32-hex-digit ServiceNow `sys_id`.
fn is_sys_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The request that asks `tool` about incident `id`.
pub fn request(tool: &Tool, id: &str) -> (String, &'static str) {
    match tool.source {
        Source::Pagerduty => (
            format!("/incidents/{}", encode_segment(id)),
            "application/json",
        ),
        Source::Servicenow => {
            let field = if is_sys_id(id) { "sys_id" } else { "number" };
            (
                format!(
                    "/api/now/table/{}?sysparm_query={}&sysparm_fields=number%2Cstate%2Csys_id&sysparm_limit=1",
                    tool.table,
                    encode_segment(&format!("{field}={id}"))
                ),
                "application/json",
            )
        }
        _ => (
            format!("/rest/api/3/issue/{}?fields=status", encode_segment(id)),
            "application/json",
        ),
    }
}
