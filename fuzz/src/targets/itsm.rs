//! `itsm_answers`: what PagerDuty, ServiceNow and Jira answer when the
//! watchdog asks about an incident (`emr_core::itsm`).
//!
//! Input: a byte picking the tool, then the body.
//!
//! Parsing is total; a verdict agrees with what the body says by the tool's
//! own rules (PagerDuty `resolved`; ServiceNow states 6–8 or their labels;
//! Jira status category `done`); what a verdict repeats of the answer is
//! short and printable, so it is safe in a status, a log line or an audit.

use emr_core::itsm::{parse_jira, parse_pagerduty, parse_servicenow, ToolStatus};
use serde_json::Value;

use super::Input;

#[derive(Clone, Copy, Debug)]
enum Tool {
    PagerDuty,
    ServiceNow,
    Jira,
}

pub fn itsm_answers(data: &[u8]) {
    let mut input = Input::new(data);
    let tool = input.pick(&[Tool::PagerDuty, Tool::ServiceNow, Tool::Jira]);
    let body = input.rest();
    let verdict = match tool {
        Tool::PagerDuty => parse_pagerduty(body),
        Tool::ServiceNow => parse_servicenow(body),
        Tool::Jira => parse_jira(body),
    };
    let v: Option<Value> = serde_json::from_slice(body).ok();
    match &verdict {
        Err(reason) => {
            assert!(!reason.is_empty(), "{tool:?}: an empty reason");
            assert!(reason.chars().count() <= 400, "{tool:?}: {reason}");
        }
        Ok(ToolStatus::Open(shown) | ToolStatus::Resolved(shown)) => {
            assert!(shown.chars().count() <= 140, "{tool:?}: {shown:?}");
            assert!(!shown.chars().any(char::is_control), "{tool:?}: {shown:?}");
        }
        Ok(ToolStatus::NotFound) => {}
    }
    let Ok(verdict) = verdict else {
        return;
    };
    // Whatever the parser concluded, the body said so.
    let v = v.expect("a verdict from a body that is not JSON");
    let resolved = matches!(verdict, ToolStatus::Resolved(_));
    match tool {
        Tool::PagerDuty => {
            let status = v.pointer("/incident/status").and_then(Value::as_str);
            assert_eq!(resolved, status == Some("resolved"), "{verdict:?}");
            assert_ne!(verdict, ToolStatus::NotFound);
        }
        Tool::ServiceNow => {
            let first = v.pointer("/result/0");
            if first.is_none() {
                assert_eq!(verdict, ToolStatus::NotFound);
                return;
            }
            let state = first.and_then(|r| r.get("state")).expect("no state");
            let state = match state {
                Value::Object(o) => o.get("value").or_else(|| o.get("display_value")),
                other => Some(other),
            };
            let text = match state {
                Some(Value::String(s)) => s.trim().to_owned(),
                Some(Value::Number(n)) => n.to_string(),
                _ => panic!("a verdict from a state that is not a string or number"),
            };
            let says_resolved = text.parse::<u32>().map_or_else(
                |_| {
                    ["resolved", "closed", "canceled", "cancelled"]
                        .contains(&text.to_ascii_lowercase().as_str())
                },
                |n| (6..=8).contains(&n),
            );
            assert_eq!(resolved, says_resolved, "{text:?} gave {verdict:?}");
        }
        Tool::Jira => {
            let category = v
                .pointer("/fields/status/statusCategory/key")
                .and_then(Value::as_str);
            assert!(category.is_some(), "a verdict without a category");
            assert_eq!(resolved, category == Some("done"), "{verdict:?}");
            assert_ne!(verdict, ToolStatus::NotFound);
        }
    }
}
