//! Prometheus Alertmanager webhooks (`webhook_config`, payload version 4).
//!
//! **One incident per alert**, identified by its `fingerprint` (a hash of its
//! label set, stable across notifications and Alertmanager replicas), not
//! per group: a group notification lists every alert of the group, each with
//! its own `status`, so one payload can open some incidents and resolve
//! others, and an alert joining or leaving a group keeps its identity. The
//! group's `groupKey` (e.g. `{}:{alertname="X"}`) is not an id we use.
//!
//! An alert `firing` opens, `resolved` resolves (`modes` may remap by
//! status). The time is `startsAt` for a firing alert — stable across
//! repeated notifications, so a repeat is the same event — and `endsAt` for a
//! resolved one. A notification may carry at most
//! `sources.alertmanager.max_alerts` alerts (100; more is refused whole,
//! `crate::sources::parse`); set the receiver's own `max_alerts` to that or
//! less, and Alertmanager truncates the list itself (`truncatedAlerts`),
//! sending the alerts it left out with the group's next notification.
//!
//! Facts for rules: `labels` (a map of label conditions, e.g.
//! `{"labels": {"severity": "critical", "team": ["voice", "sip"]}}`),
//! `receiver`, `status`. Default incident type: the `alertname` label
//! (`SipTrunkDown` → `SIP_TRUNK_DOWN`). Default priority: a `priority` label
//! (`P1`/`1`…), else `severity` critical 1, high/error/major 2, warning 3,
//! low/minor 4, info 5.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ids::{id_at, rfc3339};
use super::node::Node;
use super::pagerduty::p_number;
use super::Reading;
use crate::event::{About, Priority, RoutingMode};
use crate::mapping::{Candidate, Facts, Update, Verdict, Vocabulary};
use crate::problem::FieldError;

pub(crate) const VOCABULARY: Vocabulary = Vocabulary {
    facts: &["receiver", "status"],
    labels: true,
    modes: true,
    canonical: false,
};

pub(crate) fn read(root: &Value, _now: DateTime<Utc>) -> Result<Vec<Reading>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let r = Node::root(root);
    let version = r.get("version");
    if version.str_req(&mut errors).is_some_and(|v| v != "4") {
        errors.push(version.error("must be \"4\" (Alertmanager webhook payload version 4)"));
    }
    let receiver = r.get("receiver").as_str();
    let candidates: Vec<Reading> = r
        .get("alerts")
        .items(true, &mut errors)
        .iter()
        .filter_map(|a| read_alert(a, receiver, &mut errors))
        .map(Reading::Candidate)
        .collect();
    if errors.is_empty() {
        Ok(candidates)
    } else {
        Err(errors)
    }
}

fn read_alert(
    alert: &Node<'_>,
    receiver: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<Candidate> {
    let id = id_at(&alert.get("fingerprint"), errors);
    let status_node = alert.get("status");
    let status = status_node.str_req(errors);
    let mode = match status {
        Some("firing") => Some(RoutingMode::Active),
        Some("resolved") => Some(RoutingMode::Resolved),
        Some(_) => {
            errors.push(status_node.error("must be firing or resolved"));
            None
        }
        None => None,
    };
    let time_node = match mode {
        Some(RoutingMode::Resolved) => alert.get("endsAt"),
        _ => alert.get("startsAt"),
    };
    let timestamp = time_node.str_req(errors).and_then(|s| {
        // Alertmanager writes the zero time `0001-01-01T00:00:00Z` for "unset".
        let t = rfc3339(s).filter(|t| t.timestamp() > 0);
        if t.is_none() {
            errors.push(time_node.error("must be an RFC 3339 date-time after 1970"));
        }
        t
    });
    let (id, status, mode, timestamp) = (id?, status?, mode?, timestamp?);

    let labels = alert.get("labels").string_map();
    let mut facts = Facts::default();
    facts.add_opt("receiver", receiver);
    facts.add("status", status);
    for (k, v) in &labels {
        facts.add(&format!("labels.{k}"), v);
    }
    let label = |name: &str| labels.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    Some(Candidate {
        id,
        mode_keys: vec![status.to_owned()],
        verdict: Verdict::Mode(mode),
        timestamp,
        timestamp_field: time_node.path().to_owned(),
        facts,
        type_hint: label("alertname").map(str::to_owned),
        natural_priority: label("priority")
            .and_then(|p| p_number(p).or_else(|| p.trim().parse().ok()))
            .filter(|p: &Priority| (1..=5).contains(p))
            .or_else(|| label("severity").and_then(severity_priority)),
        update: Update::No,
        about: About::new(
            alert
                .get("annotations")
                .get("summary")
                .as_str()
                .or_else(|| label("alertname")),
            alert.get("generatorURL").as_str(),
        ),
    })
}

fn severity_priority(severity: &str) -> Option<Priority> {
    match severity.trim().to_ascii_lowercase().as_str() {
        "critical" | "page" | "emergency" => Some(1),
        "high" | "error" | "major" => Some(2),
        "warning" | "medium" => Some(3),
        "low" | "minor" => Some(4),
        "info" | "none" => Some(5),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::super::testing::{at, compiled, events, parse_with};
    use super::super::{CompiledSource, Item, Parsed};
    use crate::event::{GroupId, RoutingMode, Source};
    use crate::problem::Problem;

    const FIRING: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/alertmanager/firing.json");
    const MIXED: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/alertmanager/one_resolved_one_firing.json");
    const RESOLVED: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/alertmanager/resolved.json");
    const WARNING: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/alertmanager/firing_warning.json");

    const TOKEN: &str = "test-token-0123456789abcdef";

    fn cfg() -> CompiledSource {
        compiled(
            Source::Alertmanager,
            r#"{
              "auth": [{"kind": "bearer", "token_env": "TOKEN"}],
              "rules": [
                {"match": {"labels": {"team": "voice", "severity": ["critical", "page"]}},
                 "group": "eg-voice", "queues": ["queue-12345", "queue-67890"], "ttl_seconds": 1800}
              ]
            }"#,
        )
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        at("2024-08-15T15:05:00Z")
    }

    fn send(body: &[u8]) -> Result<Parsed, Problem> {
        let bearer = format!("Bearer {TOKEN}");
        parse_with(
            Source::Alertmanager,
            &cfg(),
            &[("authorization", &bearer)],
            body,
            now(),
        )
    }

    #[test]
    fn each_firing_alert_opens_its_own_incident() {
        let parsed = send(FIRING).unwrap();
        let es = events(&parsed);
        assert_eq!(es.len(), 2);
        let ids: Vec<&str> = es.iter().map(|e| e.correlation_id.as_str()).collect();
        assert_eq!(ids, ["5f3c8e2a9b1d7c40", "a07e61d9c2b84f35"]);
        for e in &es {
            assert_eq!(e.source, Source::Alertmanager);
            assert_eq!(e.routing_mode, RoutingMode::Active);
            assert_eq!(e.incident_type.as_str(), "SIP_TRUNK_DOWN");
            assert_eq!(e.group.as_ref().map(GroupId::as_str), Some("eg-voice"));
            assert_eq!((e.priority, e.ttl_seconds), (1, 1800));
        }
        assert_eq!(es[0].timestamp, at("2024-08-15T14:20:31.402Z"));
        assert_eq!(parsed.delivery_id, None);
    }

    #[test]
    fn one_payload_can_resolve_one_alert_and_keep_another_open() {
        let parsed = send(MIXED).unwrap();
        let modes: Vec<(&str, RoutingMode)> = events(&parsed)
            .iter()
            .map(|e| (e.correlation_id.as_str(), e.routing_mode))
            .collect();
        assert_eq!(
            modes,
            [
                ("5f3c8e2a9b1d7c40", RoutingMode::Resolved),
                ("a07e61d9c2b84f35", RoutingMode::Active)
            ]
        );
        assert_eq!(events(&parsed)[0].timestamp, at("2024-08-15T14:58:01.402Z"));
        let parsed = send(RESOLVED).unwrap();
        assert!(events(&parsed)
            .iter()
            .all(|e| e.routing_mode == RoutingMode::Resolved));
    }

    #[test]
    fn alerts_matching_no_rule_are_ignored() {
        let parsed = send(WARNING).unwrap();
        assert_eq!(
            parsed.items,
            vec![Item::Ignored {
                id: "e2b9a1c04d7f3865".into(),
                reason: "no mapping rule matches (receiver=emr-edge, status=firing, \
                         labels.alertname=QueueWaitHigh, labels.job=genesys-exporter, \
                         labels.queue=billing, labels.severity=warning, labels.team=wfm)"
                    .into()
            }]
        );
        let all = compiled(
            Source::Alertmanager,
            r#"{"insecure": true, "rules": [{"match": {"receiver": "emr-edge"}}]}"#,
        );
        let parsed = parse_with(Source::Alertmanager, &all, &[], WARNING, now()).unwrap();
        let e = events(&parsed)[0];
        assert_eq!(
            (e.incident_type.as_str(), e.priority),
            ("QUEUE_WAIT_HIGH", 3)
        );
    }

    #[test]
    fn wrong_and_missing_tokens_are_401() {
        let p = parse_with(
            Source::Alertmanager,
            &cfg(),
            &[("authorization", "Bearer nope-nope-nope-nope-nope")],
            FIRING,
            now(),
        )
        .unwrap_err();
        assert_eq!(p.status, 401);
        let p = parse_with(Source::Alertmanager, &cfg(), &[], FIRING, now()).unwrap_err();
        assert_eq!(p.errors[0].field, "authorization");
    }

    #[test]
    fn broken_payloads_name_every_broken_alert_field() {
        let cfg = compiled(Source::Alertmanager, r#"{"insecure": true, "rules": [{}]}"#);
        let body = br#"{"version": "3", "status": "firing", "alerts": [
            {"status": "firing", "fingerprint": "ab12", "startsAt": "2024-08-15T14:20:31Z"},
            {"status": "pending", "startsAt": "2024-08-15T14:20:31Z"},
            {"status": "resolved", "fingerprint": "cd34", "endsAt": "0001-01-01T00:00:00Z"}
        ]}"#;
        let p = parse_with(Source::Alertmanager, &cfg, &[], body, now()).unwrap_err();
        let fields: Vec<&str> = p.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "version",
                "alerts[1].fingerprint",
                "alerts[1].status",
                "alerts[2].endsAt"
            ]
        );
        let p = parse_with(
            Source::Alertmanager,
            &cfg,
            &[],
            br#"{"version": "4"}"#,
            now(),
        )
        .unwrap_err();
        assert_eq!(p.errors[0].field, "alerts");
    }

    #[test]
    fn future_alert_times_are_named() {
        let cfg = compiled(Source::Alertmanager, r#"{"insecure": true, "rules": [{}]}"#);
        let p = parse_with(
            Source::Alertmanager,
            &cfg,
            &[],
            FIRING,
            at("2024-08-15T14:10:00Z"),
        )
        .unwrap_err();
        let fields: Vec<&str> = p.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["alerts[0].startsAt", "alerts[1].startsAt"]);
    }

    #[test]
    fn severities_and_priority_labels() {
        assert_eq!(super::severity_priority("Critical"), Some(1));
        assert_eq!(super::severity_priority("warning"), Some(3));
        assert_eq!(super::severity_priority("whatever"), None);
    }
}
