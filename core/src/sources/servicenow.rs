//! ServiceNow incidents, sent by an outbound REST message from a business
//! rule (or Flow Designer) on the `incident` table.
//!
//! ServiceNow has no fixed webhook format, so this route reads the incident
//! record's own field names. Each field may be a plain string, a number, or
//! the Table API's `{"value": …, "display_value": …}` pair
//! (`sysparm_display_value=all`); both the value and the label are used.
//!
//! ```json
//! {"number": "INC0010023", "sys_id": "9d38…", "state": "2", "priority": "1",
//!  "category": "network", "assignment_group": "Voice Platform",
//!  "sys_updated_on": "2024-08-15 14:22:01"}
//! ```
//!
//! `state` opens with New (1), In Progress (2), On Hold (3) and resolves with
//! Resolved (6), Closed (7), Canceled (8) — codes or labels; any other state
//! is ignored unless `modes` maps its label or code. The incident id is
//! `number` (else `sys_id`); the time is `sys_updated_on` as
//! `YYYY-MM-DD HH:MM:SS` UTC (`current.sys_updated_on.getValue()`, not the
//! display value, which is in the user's time zone), else the time received.
//!
//! Facts for rules: `priority`, `impact`, `urgency`, `category`,
//! `subcategory`, `assignment_group`, `business_service`, `cmdb_ci` (values
//! and labels). Default incident type: the category (`network` → `NETWORK`).
//! Default priority: the priority's number (`1 - Critical` → 1).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ids::{correlation_id, servicenow_time};
use super::node::Node;
use super::Reading;
use crate::event::{About, Priority, RoutingMode};
use crate::mapping::{Candidate, Facts, Update, Verdict, Vocabulary};
use crate::problem::FieldError;
use crate::text::printable;

const FACT_FIELDS: [&str; 8] = [
    "priority",
    "impact",
    "urgency",
    "category",
    "subcategory",
    "assignment_group",
    "business_service",
    "cmdb_ci",
];

pub(crate) const VOCABULARY: Vocabulary = Vocabulary {
    facts: &FACT_FIELDS,
    labels: false,
    modes: true,
    canonical: false,
};

/// A ServiceNow field's stored value and display label, when present.
#[derive(Debug, Default)]
struct Field {
    value: Option<String>,
    display: Option<String>,
}

impl Field {
    fn read(node: &Node<'_>) -> Field {
        fn scalar(v: &Value) -> Option<String> {
            match v {
                Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        }
        match node.value() {
            Some(Value::Object(o)) => Field {
                value: o.get("value").and_then(scalar),
                display: o.get("display_value").and_then(scalar),
            },
            Some(v) => Field {
                value: scalar(v),
                display: None,
            },
            None => Field::default(),
        }
    }

    fn both(&self) -> impl Iterator<Item = &str> {
        self.value
            .iter()
            .chain(self.display.iter())
            .map(String::as_str)
    }

    fn is_empty(&self) -> bool {
        self.value.is_none() && self.display.is_none()
    }
}

pub(crate) fn read(root: &Value, now: DateTime<Utc>) -> Result<Vec<Reading>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let r = Node::root(root);

    let number = Field::read(&r.get("number"));
    let sys_id = Field::read(&r.get("sys_id"));
    let raw_id = number.both().next().or_else(|| sys_id.both().next());
    let id = raw_id.and_then(correlation_id);
    if id.is_none() {
        errors.push(r.get("number").error("is required (or sys_id)"));
    }

    let state_node = r.get("state");
    let state = Field::read(&state_node);
    if state.is_empty() {
        errors.push(state_node.error("is required"));
    }

    let updated = r.get("sys_updated_on");
    let updated_field = Field::read(&updated);
    let timestamp = match updated_field
        .value
        .as_deref()
        .or(updated_field.display.as_deref())
    {
        None => Some(now),
        Some(s) => {
            let t = servicenow_time(s);
            if t.is_none() {
                errors.push(updated.error("must be YYYY-MM-DD HH:MM:SS (UTC)"));
            }
            t
        }
    };
    let (Some(id), Some(timestamp), true) = (id, timestamp, errors.is_empty()) else {
        return Err(errors);
    };

    let mut facts = Facts::default();
    for name in FACT_FIELDS {
        for v in Field::read(&r.get(name)).both() {
            facts.add(name, v);
        }
    }
    let category = Field::read(&r.get("category"));
    let natural_priority = Field::read(&r.get("priority"))
        .both()
        .find_map(leading_number);
    Ok(vec![Reading::Candidate(Candidate {
        id,
        mode_keys: state
            .display
            .iter()
            .chain(state.value.iter())
            .cloned()
            .collect(),
        verdict: state_verdict(&state),
        timestamp,
        timestamp_field: updated.path().to_owned(),
        facts,
        type_hint: category.value.or(category.display),
        natural_priority,
        update: if is_update(&r) {
            Update::Reevaluate
        } else {
            Update::No
        },
        about: About::new(Field::read(&r.get("short_description")).both().next(), None),
    })])
}

/// Whether the record was changed after its creation: `operation`
/// (`current.operation()`, `update`) or `sys_mod_count` above 0. Without
/// either, an event is read as the incident's creation.
fn is_update(r: &Node<'_>) -> bool {
    let operation = Field::read(&r.get("operation"));
    let mods = Field::read(&r.get("sys_mod_count"));
    operation.both().any(|o| o.eq_ignore_ascii_case("update"))
        || mods.both().any(|m| m.parse::<u64>().is_ok_and(|n| n > 0))
}

fn state_verdict(state: &Field) -> Verdict {
    for s in state.both() {
        match s.to_ascii_lowercase().as_str() {
            "1" | "2" | "3" | "new" | "in progress" | "on hold" => {
                return Verdict::Mode(RoutingMode::Active)
            }
            "6" | "7" | "8" | "resolved" | "closed" | "canceled" | "cancelled" => {
                return Verdict::Mode(RoutingMode::Resolved)
            }
            _ => {}
        }
    }
    let shown = state
        .display
        .as_deref()
        .or(state.value.as_deref())
        .unwrap_or("-");
    Verdict::Ignore(format!(
        "state {} neither opens nor resolves an incident",
        printable(shown)
    ))
}

/// `1 - Critical` → 1; values outside 1–5 are not priorities.
fn leading_number(s: &str) -> Option<Priority> {
    let digits: String = s.trim().chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse::<Priority>()
        .ok()
        .filter(|p| (1..=5).contains(p))
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    use super::super::testing::{at, compiled, events, parse_with};
    use super::super::{CompiledSource, Item, Parsed};
    use crate::event::{GroupId, RoutingMode, Source};
    use crate::problem::Problem;

    const NEW: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/servicenow/incident_new.json");
    const IN_PROGRESS: &[u8] = include_bytes!(
        "../../../tests/fixtures/sources/servicenow/incident_in_progress_display_values.json"
    );
    const RESOLVED: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/servicenow/incident_resolved_labels.json");
    const LOW: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/servicenow/incident_low_priority.json");

    const TOKEN: &str = "test-token-0123456789abcdef";

    fn cfg() -> CompiledSource {
        compiled(
            Source::Servicenow,
            r#"{
              "auth": [{"kind": "bearer", "token_env": "TOKEN"}],
              "rules": [
                {"match": {"priority": ["1", "2"], "assignment_group": "Voice Platform"},
                 "incident_type": "CARRIER_OUTAGE", "group": "eg-voice", "queues": ["queue-12345"]}
              ],
              "default_ttl_seconds": 5400
            }"#,
        )
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        at("2024-08-15T15:10:00Z")
    }

    fn send(cfg: &CompiledSource, auth: &str, body: &[u8]) -> Result<Parsed, Problem> {
        parse_with(
            Source::Servicenow,
            cfg,
            &[("authorization", auth)],
            body,
            now(),
        )
    }

    fn bearer() -> String {
        format!("Bearer {TOKEN}")
    }

    #[test]
    fn new_incident_by_state_code_opens() {
        let parsed = send(&cfg(), &bearer(), NEW).unwrap();
        let e = events(&parsed)[0];
        assert_eq!(e.source, Source::Servicenow);
        assert_eq!(e.correlation_id.as_str(), "INC0010023");
        assert_eq!(e.routing_mode, RoutingMode::Active);
        assert_eq!(e.incident_type.as_str(), "CARRIER_OUTAGE");
        assert_eq!(e.group.as_ref().map(GroupId::as_str), Some("eg-voice"));
        assert_eq!(e.timestamp, at("2024-08-15T14:22:01Z"));
        assert_eq!((e.priority, e.ttl_seconds), (1, 5400));
        assert_eq!(parsed.delivery_id, None);
    }

    #[test]
    fn display_value_objects_are_read_by_value_and_label() {
        let parsed = send(&cfg(), &bearer(), IN_PROGRESS).unwrap();
        let e = events(&parsed)[0];
        assert_eq!(e.correlation_id.as_str(), "INC0010023");
        assert_eq!(e.routing_mode, RoutingMode::Active);
        // The stored value (UTC), not the display value (user's zone).
        assert_eq!(e.timestamp, at("2024-08-15T14:27:40Z"));
        assert_eq!(e.group.as_ref().map(GroupId::as_str), Some("eg-voice"));
    }

    #[test]
    fn resolved_by_label_resolves() {
        let parsed = send(&cfg(), &bearer(), RESOLVED).unwrap();
        let e = events(&parsed)[0];
        assert_eq!(e.routing_mode, RoutingMode::Resolved);
        assert_eq!(e.timestamp, at("2024-08-15T15:02:13Z"));
    }

    #[test]
    fn every_state_code_and_label() {
        let cfg = compiled(Source::Servicenow, r#"{"insecure": true, "rules": [{}]}"#);
        for (state, mode) in [
            ("1", Some(RoutingMode::Active)),
            ("2", Some(RoutingMode::Active)),
            ("3", Some(RoutingMode::Active)),
            ("On Hold", Some(RoutingMode::Active)),
            ("6", Some(RoutingMode::Resolved)),
            ("7", Some(RoutingMode::Resolved)),
            ("8", Some(RoutingMode::Resolved)),
            ("Closed", Some(RoutingMode::Resolved)),
            ("Canceled", Some(RoutingMode::Resolved)),
            ("Cancelled", Some(RoutingMode::Resolved)),
            ("18", None),
            ("Awaiting Caller", None),
        ] {
            let body = format!(r#"{{"number": "INC1", "state": "{state}"}}"#);
            let parsed = parse_with(Source::Servicenow, &cfg, &[], body.as_bytes(), now()).unwrap();
            let got = match &parsed.items[0] {
                Item::Event(e) => {
                    assert_eq!(e.timestamp, now(), "no sys_updated_on: time received");
                    assert_eq!(e.incident_type.as_str(), "SERVICENOW_INCIDENT");
                    Some(e.routing_mode)
                }
                Item::Ignored { .. } => None,
            };
            assert_eq!(got, mode, "state {state}");
        }
        // A custom state can be mapped by label or code.
        let mapped = compiled(
            Source::Servicenow,
            r#"{"insecure": true, "rules": [{}], "modes": {"awaiting caller": "active"}}"#,
        );
        let body =
            br#"{"number": "INC1", "state": {"value": "18", "display_value": "Awaiting Caller"}}"#;
        let parsed = parse_with(Source::Servicenow, &mapped, &[], body, now()).unwrap();
        assert_eq!(events(&parsed)[0].routing_mode, RoutingMode::Active);
    }

    #[test]
    fn an_edit_that_no_longer_matches_releases_a_creation_is_ignored() {
        let mut v: serde_json::Value = serde_json::from_slice(LOW).unwrap();
        v["sys_mod_count"] = "3".into();
        let parsed = send(&cfg(), &bearer(), &serde_json::to_vec(&v).unwrap()).unwrap();
        let [Item::Event(e)] = &parsed.items[..] else {
            panic!("{:?}", parsed.items)
        };
        assert_eq!(e.routing_mode, RoutingMode::Resolved);
        assert!(e.detail.as_deref().unwrap().starts_with("released: "));
        v["sys_mod_count"] = "0".into();
        v["operation"] = "update".into();
        let parsed = send(&cfg(), &bearer(), &serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(
            matches!(&parsed.items[..], [Item::Event(e)] if e.routing_mode == RoutingMode::Resolved)
        );
        v["operation"] = "insert".into();
        let parsed = send(&cfg(), &bearer(), &serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(matches!(&parsed.items[..], [Item::Ignored { .. }]));
    }

    #[test]
    fn low_priority_matches_no_rule_and_defaults_derive() {
        let parsed = send(&cfg(), &bearer(), LOW).unwrap();
        assert_eq!(
            parsed.items,
            vec![Item::Ignored {
                id: "INC0010031".into(),
                reason: "no mapping rule matches (priority=4, impact=3, urgency=3, \
                         category=software, subcategory=email, assignment_group=Service Desk)"
                    .into()
            }]
        );
        let all = compiled(
            Source::Servicenow,
            r#"{"insecure": true, "rules": [{"match": {"category": "Software"}}]}"#,
        );
        let parsed = parse_with(Source::Servicenow, &all, &[], LOW, now()).unwrap();
        let e = events(&parsed)[0];
        assert_eq!(e.incident_type.as_str(), "SOFTWARE");
        assert_eq!(e.priority, 4);
    }

    #[test]
    fn basic_credentials_work_too() {
        let cfg = compiled(
            Source::Servicenow,
            r#"{"auth": [{"kind": "basic", "username_env": "TOKEN", "password_env": "SECRET"}],
                "rules": [{}]}"#,
        );
        let good = STANDARD.encode(format!("{TOKEN}:test-secret-0123456789abcdef"));
        assert!(send(&cfg, &format!("Basic {good}"), NEW).is_ok());
        let bad = STANDARD.encode(format!("{TOKEN}:test-secret-0123456789abcdeX"));
        let p = send(&cfg, &format!("Basic {bad}"), NEW).unwrap_err();
        assert_eq!(p.status, 401);
        assert!(!String::from_utf8(p.to_json())
            .unwrap()
            .contains("test-secret"));
    }

    #[test]
    fn wrong_and_missing_tokens_are_401() {
        let p = send(&cfg(), "Bearer not-the-token-0123456789", NEW).unwrap_err();
        assert_eq!(p.status, 401);
        assert_eq!(p.errors[0].message, "does not carry a valid token");
        let p = parse_with(Source::Servicenow, &cfg(), &[], NEW, now()).unwrap_err();
        assert_eq!(p.errors[0].field, "authorization");
        assert_eq!(p.headers[0].0, "www-authenticate");
    }

    #[test]
    fn broken_payloads_name_their_fields() {
        let cfg = compiled(Source::Servicenow, r#"{"insecure": true, "rules": [{}]}"#);
        let p = parse_with(
            Source::Servicenow,
            &cfg,
            &[],
            br#"{"short_description": "x", "sys_updated_on": "15/08/2024 14:22"}"#,
            now(),
        )
        .unwrap_err();
        let fields: Vec<&str> = p.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["number", "state", "sys_updated_on"]);
        // sys_id stands in for a missing number.
        let parsed = parse_with(
            Source::Servicenow,
            &cfg,
            &[],
            br#"{"sys_id": "46e18c0fa9fe19810066a0083f76bd56", "state": "1"}"#,
            now(),
        )
        .unwrap();
        assert_eq!(
            events(&parsed)[0].correlation_id.as_str(),
            "46e18c0fa9fe19810066a0083f76bd56"
        );
    }
}
