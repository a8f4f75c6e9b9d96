//! Opsgenie alert webhooks (the Webhook integration's outgoing callbacks).
//!
//! `action` `Create` opens and `Close` resolves the incident `alert.alertId`
//! (else `alert.alias`, hashed when it is not a usable id); every other
//! action (Acknowledge, AddNote, Delete…) is ignored unless `modes` maps it.
//! The time is `alert.updatedAt` (Opsgenie sends nanoseconds there), else
//! `alert.createdAt` (milliseconds), else the time received.
//!
//! Opsgenie cannot sign webhooks; configure a bearer token, either as an
//! `Authorization: Bearer …` custom header or in a header of your choosing
//! (`{"kind": "bearer", "header": "x-emr-token", …}`).
//!
//! Facts for rules: `action`, `priority` (`P1`…`P5`), `tags`, `teams` (ids
//! and team responder names), `entity`, `source`, `integration_name`.
//! Default incident type: `OPSGENIE_INCIDENT`. Default priority: `P1`…`P5`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ids::{correlation_id, epoch};
use super::node::Node;
use super::pagerduty::p_number;
use super::Reading;
use crate::event::{About, RoutingMode};
use crate::mapping::{Candidate, Facts, Update, Verdict, Vocabulary};
use crate::problem::FieldError;
use crate::text::printable;

pub(crate) const VOCABULARY: Vocabulary = Vocabulary {
    facts: &[
        "action",
        "priority",
        "tags",
        "teams",
        "entity",
        "source",
        "integration_name",
    ],
    labels: false,
    modes: true,
    canonical: false,
};

pub(crate) fn read(root: &Value, now: DateTime<Utc>) -> Result<Vec<Reading>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let r = Node::root(root);
    let action = r.get("action").str_req(&mut errors);
    let alert = r.get("alert");
    let before = errors.len();
    let alert_id = alert.get("alertId").str_opt(&mut errors);
    let alias = alert.get("alias").str_opt(&mut errors);
    let id = alert_id
        .filter(|s| !s.trim().is_empty())
        .or(alias)
        .and_then(correlation_id);
    if id.is_none() && errors.len() == before {
        errors.push(alert.get("alertId").error("is required (or alert.alias)"));
    }
    let updated = alert.get("updatedAt");
    let created = alert.get("createdAt");
    let (timestamp, timestamp_field) = [&updated, &created]
        .into_iter()
        .find_map(|n| {
            let t = n.value().and_then(Value::as_i64).and_then(epoch)?;
            Some((t, n.path().to_owned()))
        })
        .unwrap_or_else(|| (now, "alert.updatedAt".to_owned()));
    let (Some(action), Some(id), true) = (action, id, errors.is_empty()) else {
        return Err(errors);
    };

    let verdict = if action.eq_ignore_ascii_case("create") {
        Verdict::Mode(RoutingMode::Active)
    } else if action.eq_ignore_ascii_case("close") {
        Verdict::Mode(RoutingMode::Resolved)
    } else {
        Verdict::Ignore(format!(
            "action {} neither opens nor resolves an incident",
            printable(action)
        ))
    };
    let priority = alert.get("priority").as_str();
    let mut facts = Facts::default();
    facts.add("action", action);
    facts.add_opt("priority", priority);
    for tag in alert.get("tags").strings() {
        facts.add("tags", tag);
    }
    for team in alert.get("teams").strings() {
        facts.add("teams", team);
    }
    facts.add_opt("teams", alert.get("team").as_str());
    for responder in alert.get("responders").items(false, &mut Vec::new()) {
        if responder.get("type").as_str() == Some("team") {
            facts.add_opt("teams", responder.get("name").as_str());
        }
    }
    facts.add_opt("entity", alert.get("entity").as_str());
    facts.add_opt("source", alert.get("source").as_str());
    facts.add_opt("integration_name", r.get("integrationName").as_str());

    Ok(vec![Reading::Candidate(Candidate {
        id,
        mode_keys: vec![action.to_owned()],
        verdict,
        timestamp,
        timestamp_field,
        facts,
        type_hint: None,
        natural_priority: priority.and_then(p_number),
        update: Update::No,
        about: About::new(alert.get("message").as_str(), None),
    })])
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::super::testing::{at, compiled, events, parse_with};
    use super::super::{CompiledSource, Item, Parsed};
    use crate::event::{GroupId, RoutingMode, Source};
    use crate::problem::Problem;

    const CREATE: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/opsgenie/alert_create.json");
    const CLOSE: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/opsgenie/alert_close.json");
    const ACK: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/opsgenie/alert_acknowledge.json");
    const LOW: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/opsgenie/alert_create_low_priority.json");

    const TOKEN: &str = "test-token-0123456789abcdef";

    fn cfg() -> CompiledSource {
        compiled(
            Source::Opsgenie,
            r#"{
              "auth": [{"kind": "bearer", "token_env": "TOKEN", "header": "x-emr-token"}],
              "rules": [
                {"match": {"priority": ["P1", "P2"], "tags": "voice"},
                 "incident_type": "CARRIER_OUTAGE", "group": "eg-voice", "queues": ["queue-12345"]}
              ]
            }"#,
        )
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        at("2024-08-15T15:30:00Z")
    }

    fn send(body: &[u8]) -> Result<Parsed, Problem> {
        parse_with(
            Source::Opsgenie,
            &cfg(),
            &[("x-emr-token", TOKEN)],
            body,
            now(),
        )
    }

    #[test]
    fn create_opens_and_close_resolves_the_alert() {
        let parsed = send(CREATE).unwrap();
        let e = events(&parsed)[0];
        assert_eq!(e.source, Source::Opsgenie);
        assert_eq!(
            e.correlation_id.as_str(),
            "70ea1b5b-2c5b-4dfe-a7a4-2a1a3ad0a0c5-1723731721329"
        );
        assert_eq!(e.routing_mode, RoutingMode::Active);
        assert_eq!(e.group.as_ref().map(GroupId::as_str), Some("eg-voice"));
        assert_eq!(e.timestamp, at("2024-08-15T14:22:01.329Z"));
        assert_eq!(e.priority, 1);
        assert_eq!(parsed.delivery_id, None);

        let parsed = send(CLOSE).unwrap();
        let e = events(&parsed)[0];
        assert_eq!(e.routing_mode, RoutingMode::Resolved);
        assert_eq!(e.timestamp, at("2024-08-15T15:02:13.917Z"));
    }

    #[test]
    fn acknowledge_and_unmatched_alerts_are_ignored() {
        let parsed = send(ACK).unwrap();
        assert!(matches!(&parsed.items[..], [Item::Ignored { reason, .. }]
            if reason == "action Acknowledge neither opens nor resolves an incident"));
        let parsed = send(LOW).unwrap();
        assert!(matches!(&parsed.items[..], [Item::Ignored { reason, .. }]
            if reason.starts_with("no mapping rule matches (")));
    }

    #[test]
    fn alias_stands_in_for_a_missing_alert_id_and_is_hashed() {
        let cfg = compiled(
            Source::Opsgenie,
            r#"{"insecure": true, "rules": [{"match": {"teams": "Voice Platform"}}],
                "modes": {"delete": "resolved"}}"#,
        );
        let body = br#"{"action": "Delete", "alert": {"alias": "sip trunk carrier-a", "team": "Voice Platform"}}"#;
        let parsed = parse_with(Source::Opsgenie, &cfg, &[], body, now()).unwrap();
        let e = events(&parsed)[0];
        assert!(e.correlation_id.as_str().starts_with("sha256:"));
        assert_eq!(e.routing_mode, RoutingMode::Resolved);
        assert_eq!(e.timestamp, now(), "no times in the payload: time received");
        assert_eq!(e.incident_type.as_str(), "OPSGENIE_INCIDENT");
    }

    #[test]
    fn wrong_and_missing_tokens_are_401() {
        let p = parse_with(
            Source::Opsgenie,
            &cfg(),
            &[("x-emr-token", "test-token-0123456789abcdeX")],
            CREATE,
            now(),
        )
        .unwrap_err();
        assert_eq!((p.status, p.errors[0].field.as_str()), (401, "x-emr-token"));
        assert!(!String::from_utf8(p.to_json())
            .unwrap()
            .contains("test-token"));
        let p = parse_with(Source::Opsgenie, &cfg(), &[], CREATE, now()).unwrap_err();
        assert_eq!(p.errors[0].message, "is missing");
    }

    #[test]
    fn broken_payloads_name_their_fields() {
        let cfg = compiled(Source::Opsgenie, r#"{"insecure": true, "rules": [{}]}"#);
        let p = parse_with(
            Source::Opsgenie,
            &cfg,
            &[],
            br#"{"alert": {"alertId": 5}}"#,
            now(),
        )
        .unwrap_err();
        let fields: Vec<&str> = p.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["action", "alert.alertId"]);
        assert_eq!(p.errors[1].message, "must be a string");
        let p = parse_with(
            Source::Opsgenie,
            &cfg,
            &[],
            br#"{"action": "Create", "alert": {}}"#,
            now(),
        )
        .unwrap_err();
        assert_eq!(p.errors[0].message, "is required (or alert.alias)");
    }
}
