//! Jira Service Management (Jira Cloud) issue webhooks.
//!
//! `jira:issue_created` and `jira:issue_updated` open the incident `issue.key`
//! while its status category (`issue.fields.status.statusCategory.key`) is
//! `new` or `indeterminate`, and resolve it once it is `done`;
//! `jira:issue_deleted` resolves it. Other events (comments, worklogs) are
//! ignored. `modes` keys are tried in this order: the `webhookEvent`, then
//! the status name (e.g. `"Waiting for customer": "ignore"`), then the status
//! category key; a delete only consults the `webhookEvent`. The time is
//! `timestamp` (ms since the epoch).
//!
//! Facts for rules: `webhook_event`, `project` (key and name), `priority`
//! (name), `issue_type`, `status`, `labels`, `components`. Default incident
//! type: `JSM_INCIDENT`. Default priority: Highest/Blocker/Critical 1,
//! High/Major 2, Medium 3, Low/Minor 4, Lowest/Trivial 5.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ids::{epoch, id_at};
use super::node::Node;
use super::Reading;
use crate::event::{About, Priority, RoutingMode};
use crate::mapping::{Candidate, Facts, Update, Verdict, Vocabulary};
use crate::problem::FieldError;
use crate::text::printable;

pub(crate) const DELIVERY_ID_HEADER: &str = "x-atlassian-webhook-identifier";

pub(crate) const VOCABULARY: Vocabulary = Vocabulary {
    facts: &[
        "webhook_event",
        "project",
        "priority",
        "issue_type",
        "status",
        "labels",
        "components",
    ],
    labels: false,
    modes: true,
    canonical: false,
};

const CREATED: &str = "jira:issue_created";
const UPDATED: &str = "jira:issue_updated";
const DELETED: &str = "jira:issue_deleted";

pub(crate) fn read(root: &Value, _now: DateTime<Utc>) -> Result<Vec<Reading>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let r = Node::root(root);
    let Some(event) = r.get("webhookEvent").str_req(&mut errors) else {
        return Err(errors);
    };
    let issue = r.get("issue");
    if ![CREATED, UPDATED, DELETED].contains(&event) {
        return Ok(vec![Reading::Ignored {
            id: printable(issue.get("key").as_str().unwrap_or("-")),
            reason: format!(
                "webhook event {} is not about an issue's lifecycle",
                printable(event)
            ),
        }]);
    }
    let id = id_at(&issue.get("key"), &mut errors);
    let ts_node = r.get("timestamp");
    let timestamp = match ts_node.value().and_then(Value::as_i64).and_then(epoch) {
        Some(t) => Some(t),
        None => {
            errors.push(ts_node.error("must be milliseconds since the UNIX epoch"));
            None
        }
    };
    let fields = issue.get("fields");
    let status = fields.get("status");
    let status_name = status.get("name").as_str();
    let category_node = status.get("statusCategory").get("key");
    let category = if event == DELETED {
        None
    } else {
        category_node.str_req(&mut errors)
    };
    let (Some(id), Some(timestamp), true) = (id, timestamp, errors.is_empty()) else {
        return Err(errors);
    };

    let (verdict, mode_keys) = match category {
        None => (Verdict::Mode(RoutingMode::Resolved), vec![event.to_owned()]),
        Some(cat) => {
            let verdict = if cat.eq_ignore_ascii_case("done") {
                Verdict::Mode(RoutingMode::Resolved)
            } else {
                Verdict::Mode(RoutingMode::Active)
            };
            let keys = [Some(event), status_name, Some(cat)]
                .into_iter()
                .flatten()
                .map(str::to_owned)
                .collect();
            (verdict, keys)
        }
    };

    let project = fields.get("project");
    let priority = fields.get("priority").get("name").as_str();
    let mut facts = Facts::default();
    facts.add("webhook_event", event);
    facts.add_opt("project", project.get("key").as_str());
    facts.add_opt("project", project.get("name").as_str());
    facts.add_opt("priority", priority);
    facts.add_opt("issue_type", fields.get("issuetype").get("name").as_str());
    facts.add_opt("status", status_name);
    for label in fields.get("labels").strings() {
        facts.add("labels", label);
    }
    for c in fields.get("components").items(false, &mut Vec::new()) {
        facts.add_opt("components", c.get("name").as_str());
    }

    Ok(vec![Reading::Candidate(Candidate {
        id,
        mode_keys,
        verdict,
        timestamp,
        timestamp_field: ts_node.path().to_owned(),
        facts,
        type_hint: None,
        natural_priority: priority.and_then(priority_number),
        // An edit (a priority raised or lowered) re-evaluates the rules.
        update: if event == UPDATED {
            Update::Reevaluate
        } else {
            Update::No
        },
        about: About::new(fields.get("summary").as_str(), None),
    })])
}

/// Jira's default priority names (and the classic Blocker…Trivial scheme).
fn priority_number(name: &str) -> Option<Priority> {
    match name.trim().to_ascii_lowercase().as_str() {
        "highest" | "blocker" | "critical" => Some(1),
        "high" | "major" => Some(2),
        "medium" => Some(3),
        "low" | "minor" => Some(4),
        "lowest" | "trivial" => Some(5),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::super::testing::{at, compiled, events, parse_with};
    use super::super::{CompiledSource, Item, Parsed};
    use crate::auth::hub_signature;
    use crate::event::{GroupId, RoutingMode, Source};
    use crate::problem::Problem;

    const CREATED: &[u8] = include_bytes!("../../../tests/fixtures/sources/jsm/issue_created.json");
    const RESOLVED: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/jsm/issue_updated_resolved.json");
    const LOW: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/jsm/issue_created_low_priority.json");
    const COMMENT: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/jsm/comment_created.json");
    const DELETED: &[u8] = include_bytes!("../../../tests/fixtures/sources/jsm/issue_deleted.json");

    const SECRET: &str = "test-secret-0123456789abcdef";
    const SECRET_NEXT: &str = "test-secret-next-0123456789";
    const DELIVERY: &str = "d1f7c0e2-5a8b-4c3d-9e6f-0a1b2c3d4e5f";

    fn cfg() -> CompiledSource {
        compiled(
            Source::Jsm,
            r#"{
              "auth": [{"kind": "hub_signature", "secret_envs": ["SECRET", "SECRET_NEXT"]}],
              "rules": [
                {"match": {"project": "ITSM", "priority": ["Highest", "High"], "labels": "major-incident"},
                 "incident_type": "CARRIER_OUTAGE", "group": "eg-voice",
                 "queues": ["queue-12345", "queue-67890"]}
              ]
            }"#,
        )
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        at("2024-08-15T15:30:00Z")
    }

    fn signed(body: &[u8], secret: &str) -> Result<Parsed, Problem> {
        let sig = hub_signature(secret.as_bytes(), body);
        parse_with(
            Source::Jsm,
            &cfg(),
            &[
                ("x-hub-signature", &sig),
                ("x-atlassian-webhook-identifier", DELIVERY),
            ],
            body,
            now(),
        )
    }

    #[test]
    fn created_issue_in_progress_opens() {
        let parsed = signed(CREATED, SECRET).unwrap();
        assert_eq!(parsed.delivery_id.as_deref(), Some(DELIVERY));
        let e = events(&parsed)[0];
        assert_eq!(e.source, Source::Jsm);
        assert_eq!(e.correlation_id.as_str(), "ITSM-42");
        assert_eq!(e.routing_mode, RoutingMode::Active);
        assert_eq!(e.incident_type.as_str(), "CARRIER_OUTAGE");
        assert_eq!(e.group.as_ref().map(GroupId::as_str), Some("eg-voice"));
        assert_eq!(e.timestamp, at("2024-08-15T14:22:01.329Z"));
        assert_eq!(e.priority, 1, "Highest → 1");
    }

    #[test]
    fn done_category_and_delete_resolve() {
        let e = signed(RESOLVED, SECRET).unwrap();
        let e = events(&e)[0];
        assert_eq!(e.routing_mode, RoutingMode::Resolved);
        assert_eq!(e.timestamp, at("2024-08-15T15:02:13.917Z"));
        let d = signed(DELETED, SECRET).unwrap();
        assert_eq!(events(&d)[0].routing_mode, RoutingMode::Resolved);
    }

    #[test]
    fn comments_and_unmatched_issues_are_ignored() {
        let parsed = signed(COMMENT, SECRET).unwrap();
        assert_eq!(
            parsed.items,
            vec![Item::Ignored {
                id: "ITSM-42".into(),
                reason: "webhook event comment_created is not about an issue's lifecycle".into()
            }]
        );
        let parsed = signed(LOW, SECRET).unwrap();
        assert!(matches!(&parsed.items[..], [Item::Ignored { id, .. }] if id == "ITSM-57"));
    }

    #[test]
    fn modes_by_status_name() {
        let cfg = compiled(
            Source::Jsm,
            r#"{"insecure": true, "rules": [{"match": {"issue_type": "Service Request"}}],
                "modes": {"Waiting for support": "ignore"}}"#,
        );
        let parsed = parse_with(Source::Jsm, &cfg, &[], LOW, now()).unwrap();
        assert!(matches!(&parsed.items[..], [Item::Ignored { reason, .. }]
            if reason == "Waiting for support is mapped to ignore by sources.jsm.modes"));
        let cfg = compiled(
            Source::Jsm,
            r#"{"insecure": true, "rules": [{"match": {"issue_type": "Service Request"}}]}"#,
        );
        let parsed = parse_with(Source::Jsm, &cfg, &[], LOW, now()).unwrap();
        let e = events(&parsed)[0];
        assert_eq!((e.incident_type.as_str(), e.priority), ("JSM_INCIDENT", 4));
    }

    #[test]
    fn rotated_wrong_tampered_and_missing_signatures() {
        assert!(signed(CREATED, SECRET_NEXT).is_ok());
        let p = signed(CREATED, "wrong-secret-0123456789abcd").unwrap_err();
        assert_eq!(
            (p.status, p.errors[0].field.as_str()),
            (401, "x-hub-signature")
        );
        let sig = hub_signature(SECRET.as_bytes(), CREATED);
        let tampered = String::from_utf8(CREATED.to_vec())
            .unwrap()
            .replace("\"key\": \"indeterminate\"", "\"key\": \"done\"");
        assert_ne!(tampered.as_bytes(), CREATED);
        let p = parse_with(
            Source::Jsm,
            &cfg(),
            &[("x-hub-signature", &sig)],
            tampered.as_bytes(),
            now(),
        )
        .unwrap_err();
        assert_eq!(p.status, 401);
        assert!(!String::from_utf8(p.to_json()).unwrap().contains(&sig[7..]));
        let p = parse_with(Source::Jsm, &cfg(), &[], CREATED, now()).unwrap_err();
        assert_eq!(p.errors[0].field, "x-hub-signature");
    }

    #[test]
    fn broken_payloads_name_their_fields() {
        let cfg = compiled(Source::Jsm, r#"{"insecure": true, "rules": [{}]}"#);
        let p = parse_with(
            Source::Jsm,
            &cfg,
            &[],
            br#"{"webhookEvent": "jira:issue_updated", "timestamp": "now", "issue": {"fields": {}}}"#,
            now(),
        )
        .unwrap_err();
        let fields: Vec<&str> = p.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "issue.key",
                "timestamp",
                "issue.fields.status.statusCategory.key"
            ]
        );
    }
}
