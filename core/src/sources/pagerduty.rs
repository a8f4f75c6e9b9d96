//! PagerDuty webhooks v3 (generic webhook subscriptions).
//!
//! One event per delivery: `{"event": {"event_type", "occurred_at", "data"}}`.
//! `incident.triggered` and `incident.reopened` open, `incident.resolved`
//! resolves. `incident.priority_updated` re-evaluates the rules:
//! a P3 raised to P1 opens, a P1 lowered to P3 releases its group (see
//! `crate::mapping`; `reevaluate_updates: false` ignores it), unless the
//! incident is already resolved there. Other `incident.*` events
//! (acknowledged, escalated…) are ignored unless `modes` maps their
//! `event_type`. Non-incident events
//! (`pagey.ping` when a subscription is tested, `service.*`) are always
//! ignored. The incident id is `event.data.id`, the time `event.occurred_at`.
//!
//! Facts for rules: `event_type`, `service_id`, `service_name`, `urgency`
//! (`high`/`low`), `priority` (the priority's name, e.g. `P1`, and its id),
//! `team_id`, `team_name`, `escalation_policy_id`. Default incident type: the
//! service name (`Voice Platform - SIP Trunks` → `VOICE_PLATFORM_SIP_TRUNKS`).
//! Default priority: `P1`…`P5` → 1…5.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ids::{id_at, rfc3339};
use super::node::Node;
use super::Reading;
use crate::event::{About, Priority, RoutingMode};
use crate::mapping::{Candidate, Facts, Update, Verdict, Vocabulary};
use crate::problem::FieldError;
use crate::text::printable;

pub(crate) const DELIVERY_ID_HEADER: &str = "x-webhook-id";

const PRIORITY_UPDATED: &str = "incident.priority_updated";

pub(crate) const VOCABULARY: Vocabulary = Vocabulary {
    facts: &[
        "event_type",
        "service_id",
        "service_name",
        "urgency",
        "priority",
        "team_id",
        "team_name",
        "escalation_policy_id",
    ],
    labels: false,
    modes: true,
    canonical: false,
};

pub(crate) fn read(root: &Value, _now: DateTime<Utc>) -> Result<Vec<Reading>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let event = Node::root(root).get("event");
    let Some(event_type) = event.get("event_type").str_req(&mut errors) else {
        return Err(errors);
    };
    if !event_type.starts_with("incident.") {
        let id = event.get("id").as_str().unwrap_or("-");
        return Ok(vec![Reading::Ignored {
            id: printable(id),
            reason: format!(
                "event type {} is not about an incident",
                printable(event_type)
            ),
        }]);
    }
    let data = event.get("data");
    let id = id_at(&data.get("id"), &mut errors);
    let occurred = event.get("occurred_at");
    let timestamp = occurred.str_req(&mut errors).and_then(|s| {
        let t = rfc3339(s);
        if t.is_none() {
            errors.push(occurred.error("must be an RFC 3339 date-time"));
        }
        t
    });
    let (Some(id), Some(timestamp), true) = (id, timestamp, errors.is_empty()) else {
        return Err(errors);
    };

    let resolved_there = data.get("status").as_str() == Some("resolved");
    let (verdict, update) = match event_type {
        "incident.triggered" | "incident.reopened" => {
            (Verdict::Mode(RoutingMode::Active), Update::No)
        }
        "incident.resolved" => (Verdict::Mode(RoutingMode::Resolved), Update::No),
        PRIORITY_UPDATED if resolved_there => (
            Verdict::Ignore("a priority change of an incident resolved there".to_owned()),
            Update::No,
        ),
        PRIORITY_UPDATED => (
            Verdict::Mode(RoutingMode::Active),
            Update::ReevaluateOrIgnore(
                "event type incident.priority_updated is ignored: sources.pagerduty.reevaluate_updates is false",
            ),
        ),
        other => (
            Verdict::Ignore(format!(
                "event type {} neither opens nor resolves an incident",
                printable(other)
            )),
            Update::No,
        ),
    };
    let service = data.get("service");
    let priority = data.get("priority");
    let mut facts = Facts::default();
    facts.add("event_type", event_type);
    facts.add_opt("service_id", service.get("id").as_str());
    facts.add_opt("service_name", service.get("summary").as_str());
    facts.add_opt("urgency", data.get("urgency").as_str());
    facts.add_opt("priority", priority.get("summary").as_str());
    facts.add_opt("priority", priority.get("id").as_str());
    for team in data.get("teams").items(false, &mut Vec::new()) {
        facts.add_opt("team_id", team.get("id").as_str());
        facts.add_opt("team_name", team.get("summary").as_str());
    }
    facts.add_opt(
        "escalation_policy_id",
        data.get("escalation_policy").get("id").as_str(),
    );

    Ok(vec![Reading::Candidate(Candidate {
        id,
        mode_keys: vec![event_type.to_owned()],
        verdict,
        timestamp,
        timestamp_field: occurred.path().to_owned(),
        facts,
        type_hint: service.get("summary").as_str().map(str::to_owned),
        natural_priority: priority.get("summary").as_str().and_then(p_number),
        update,
        about: About::new(data.get("title").as_str(), data.get("html_url").as_str()),
    })])
}

/// `P1`…`P5` (any case) → 1…5.
pub(crate) fn p_number(s: &str) -> Option<Priority> {
    let digits = s.trim().strip_prefix(['P', 'p'])?;
    digits
        .parse::<Priority>()
        .ok()
        .filter(|p| (1..=5).contains(p))
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::super::testing::{at, compiled, events, parse_with};
    use super::super::{CompiledSource, Item};
    use crate::auth::pagerduty_signature;
    use crate::event::{GroupId, RoutingMode, Source};

    const TRIGGERED: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/pagerduty/incident_triggered.json");
    const RESOLVED: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/pagerduty/incident_resolved.json");
    const ACKNOWLEDGED: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/pagerduty/incident_acknowledged.json");
    const LOW_URGENCY: &[u8] = include_bytes!(
        "../../../tests/fixtures/sources/pagerduty/incident_triggered_low_urgency.json"
    );
    const PING: &[u8] = include_bytes!("../../../tests/fixtures/sources/pagerduty/pagey_ping.json");
    const PRIORITY_UPDATED: &[u8] =
        include_bytes!("../../../tests/fixtures/sources/pagerduty/incident_priority_updated.json");

    const SECRET: &str = "test-secret-0123456789abcdef";
    const SECRET_NEXT: &str = "test-secret-next-0123456789";

    fn cfg() -> CompiledSource {
        compiled(
            Source::Pagerduty,
            r#"{
              "auth": [{"kind": "pagerduty_signature", "secret_envs": ["SECRET", "SECRET_NEXT"]}],
              "rules": [
                {"name": "voice high urgency", "match": {"service_id": "PIJ90N7", "urgency": "high"},
                 "incident_type": "CARRIER_OUTAGE", "group": "eg-voice",
                 "queues": ["queue-12345", "queue-67890"], "ttl_seconds": 7200}
              ]
            }"#,
        )
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        at("2024-08-15T15:05:00Z")
    }

    fn signed(body: &[u8], secret: &str) -> Result<super::super::Parsed, crate::problem::Problem> {
        let sig = pagerduty_signature(secret.as_bytes(), body);
        parse_with(
            Source::Pagerduty,
            &cfg(),
            &[
                ("x-pagerduty-signature", &sig),
                ("x-webhook-id", "a4c1a3e6-5c0f-4d3a-9d0e-8b8f6f0c9b21"),
                ("content-type", "application/json"),
            ],
            body,
            now(),
        )
    }

    #[test]
    fn triggered_opens_the_incident_with_the_rules_outputs() {
        let parsed = signed(TRIGGERED, SECRET).unwrap();
        assert_eq!(
            parsed.delivery_id.as_deref(),
            Some("a4c1a3e6-5c0f-4d3a-9d0e-8b8f6f0c9b21")
        );
        let e = events(&parsed)[0];
        assert_eq!(e.source, Source::Pagerduty);
        assert_eq!(e.correlation_id.as_str(), "Q2UEJOMV3XYQ9N");
        assert_eq!(e.routing_mode, RoutingMode::Active);
        assert_eq!(e.incident_type.as_str(), "CARRIER_OUTAGE");
        assert_eq!(e.group.as_ref().map(GroupId::as_str), Some("eg-voice"));
        let queues: Vec<&str> = e.target_queue_ids.iter().map(|q| q.as_str()).collect();
        assert_eq!(queues, ["queue-12345", "queue-67890"]);
        assert_eq!(e.timestamp, at("2024-08-15T14:22:01.329Z"));
        assert_eq!((e.priority, e.ttl_seconds), (1, 7200), "P1 → priority 1");
    }

    #[test]
    fn resolved_resolves_the_same_incident() {
        let parsed = signed(RESOLVED, SECRET).unwrap();
        let e = events(&parsed)[0];
        assert_eq!(e.correlation_id.as_str(), "Q2UEJOMV3XYQ9N");
        assert_eq!(e.routing_mode, RoutingMode::Resolved);
        assert_eq!(e.timestamp, at("2024-08-15T15:03:44.912Z"));
    }

    #[test]
    fn acknowledged_and_ping_are_ignored() {
        let parsed = signed(ACKNOWLEDGED, SECRET).unwrap();
        assert_eq!(
            parsed.items,
            vec![Item::Ignored {
                id: "Q2UEJOMV3XYQ9N".into(),
                reason: "event type incident.acknowledged neither opens nor resolves an incident"
                    .into()
            }]
        );
        let parsed = signed(PING, SECRET).unwrap();
        assert!(matches!(&parsed.items[..], [Item::Ignored { reason, .. }]
            if reason == "event type pagey.ping is not about an incident"));
    }

    /// The fixture's priority update with `edit` applied, signed.
    fn priority_update(
        cfg: &CompiledSource,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> Vec<Item> {
        let mut v: serde_json::Value = serde_json::from_slice(PRIORITY_UPDATED).unwrap();
        edit(&mut v["event"]["data"]);
        let body = serde_json::to_vec(&v).unwrap();
        parse_with(Source::Pagerduty, cfg, &[], &body, now())
            .unwrap()
            .items
    }

    #[test]
    fn a_priority_raised_to_match_a_rule_opens() {
        let insecure = compiled(
            Source::Pagerduty,
            r#"{"insecure": true, "rules": [{"match": {"priority": "P1"}, "group": "eg-voice"}]}"#,
        );
        let items = priority_update(&insecure, |_| {});
        let [Item::Event(e)] = &items[..] else {
            panic!("{items:?}")
        };
        assert_eq!(e.routing_mode, RoutingMode::Active);
        assert_eq!(e.priority, 1);
        assert_eq!(e.timestamp, at("2024-08-15T14:40:00Z"));
        assert_eq!(e.detail, None);
        // What a person reads on /emr/state: the incident's title and link.
        let about = e.about.clone().unwrap();
        assert_eq!(
            about.title.as_deref(),
            Some("SIP trunk carrier-a: 100% call setup failures")
        );
        assert_eq!(
            about.link.as_deref(),
            Some("https://acme.pagerduty.com/incidents/Q2UEJOMV3XYQ9N")
        );
    }

    #[test]
    fn a_priority_lowered_below_every_rule_releases_the_incident() {
        let insecure = compiled(
            Source::Pagerduty,
            r#"{"insecure": true, "rules": [{"match": {"priority": "P1"}, "group": "eg-voice"}]}"#,
        );
        let items = priority_update(&insecure, |d| d["priority"]["summary"] = "P3".into());
        let [Item::Event(e)] = &items[..] else {
            panic!("{items:?}")
        };
        assert_eq!(e.routing_mode, RoutingMode::Resolved);
        let detail = e.detail.as_deref().unwrap();
        assert!(
            detail.starts_with(
                "released: incident.priority_updated matches no mapping rule any more ("
            ) && detail.contains("priority=P3"),
            "{detail}"
        );
        // Already resolved in PagerDuty: its resolution decides, not this.
        let items = priority_update(&insecure, |d| d["status"] = "resolved".into());
        assert!(matches!(&items[..], [Item::Ignored { reason, .. }]
            if reason == "a priority change of an incident resolved there"));
        // Turned off: ignored, as it was before updates re-evaluated the rules.
        let off = compiled(
            Source::Pagerduty,
            r#"{"insecure": true, "reevaluate_updates": false,
                "rules": [{"match": {"priority": "P1"}, "group": "eg-voice"}]}"#,
        );
        let items = priority_update(&off, |_| {});
        assert!(
            matches!(&items[..], [Item::Ignored { reason, .. }]
            if reason.contains("reevaluate_updates is false")),
            "{items:?}"
        );
    }

    #[test]
    fn an_incident_matching_no_rule_is_ignored() {
        let parsed = signed(LOW_URGENCY, SECRET).unwrap();
        assert_eq!(
            parsed.items,
            vec![Item::Ignored {
                id: "Q1LQ0ZZ8TT3JKA".into(),
                reason: "no mapping rule matches (event_type=incident.triggered, \
                         service_id=PZ3M8QK, service_name=Reporting Database, urgency=low, \
                         team_id=PFCVPS0, team_name=Contact Centre Engineering, \
                         escalation_policy_id=PT20YPA)"
                    .into()
            }]
        );
    }

    #[test]
    fn modes_can_count_acknowledgements_and_defaults_derive_type() {
        let cfg = compiled(
            Source::Pagerduty,
            r#"{"insecure": true, "modes": {"incident.acknowledged": "active"},
                "rules": [{"match": {"team_name": "Contact Centre Engineering"}}]}"#,
        );
        let parsed = parse_with(Source::Pagerduty, &cfg, &[], ACKNOWLEDGED, now()).unwrap();
        let e = events(&parsed)[0];
        assert_eq!(e.routing_mode, RoutingMode::Active);
        assert_eq!(e.incident_type.as_str(), "VOICE_PLATFORM_SIP_TRUNKS");
        assert_eq!(
            (e.priority, e.ttl_seconds, e.group.is_none()),
            (1, 3600, true)
        );
        assert_eq!(parsed.delivery_id, None);
    }

    #[test]
    fn rotated_secret_is_accepted() {
        assert!(signed(TRIGGERED, SECRET_NEXT).is_ok());
        // PagerDuty signs with old and new secret during rotation.
        let both = format!(
            "{},{}",
            pagerduty_signature(b"retired-secret-0123456789", TRIGGERED),
            pagerduty_signature(SECRET_NEXT.as_bytes(), TRIGGERED)
        );
        let r = parse_with(
            Source::Pagerduty,
            &cfg(),
            &[("x-pagerduty-signature", &both)],
            TRIGGERED,
            now(),
        );
        assert!(r.is_ok());
    }

    #[test]
    fn wrong_secret_tampered_body_and_missing_header_are_401() {
        let p = signed(TRIGGERED, "wrong-secret-0123456789abc").unwrap_err();
        assert_eq!(
            (p.status, p.errors[0].field.as_str()),
            (401, "x-pagerduty-signature")
        );

        let sig = pagerduty_signature(SECRET.as_bytes(), TRIGGERED);
        let tampered = String::from_utf8(TRIGGERED.to_vec())
            .unwrap()
            .replace("\"urgency\": \"high\"", "\"urgency\": \"low\"");
        let p = parse_with(
            Source::Pagerduty,
            &cfg(),
            &[("x-pagerduty-signature", &sig)],
            tampered.as_bytes(),
            now(),
        )
        .unwrap_err();
        assert_eq!(p.status, 401);
        let body = String::from_utf8(p.to_json()).unwrap();
        assert!(
            !body.contains(&sig[3..]) && !body.contains(SECRET),
            "{body}"
        );

        let p = parse_with(Source::Pagerduty, &cfg(), &[], TRIGGERED, now()).unwrap_err();
        assert_eq!(p.status, 401);
        assert_eq!(p.errors[0].field, "x-pagerduty-signature");
        assert_eq!(p.errors[0].message, "is missing");
    }

    #[test]
    fn broken_payloads_name_their_fields() {
        let cfg = compiled(Source::Pagerduty, r#"{"insecure": true, "rules": [{}]}"#);
        let p = parse_with(Source::Pagerduty, &cfg, &[], b"{\"event\":", now()).unwrap_err();
        assert_eq!(p.status, 400);
        let p = parse_with(Source::Pagerduty, &cfg, &[], b"[]", now()).unwrap_err();
        assert_eq!((p.status, p.errors[0].field.as_str()), (422, "$"));
        let body = br#"{"event": {"event_type": "incident.triggered", "occurred_at": "yesterday",
                        "data": {"id": 42}}}"#;
        let p = parse_with(Source::Pagerduty, &cfg, &[], body, now()).unwrap_err();
        let fields: Vec<&str> = p.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["event.data.id", "event.occurred_at"]);
        let p = parse_with(Source::Pagerduty, &cfg, &[], br#"{"evnt": {}}"#, now()).unwrap_err();
        assert_eq!(p.errors[0].field, "event.event_type");
    }

    #[test]
    fn future_event_times_are_refused() {
        let cfg = compiled(Source::Pagerduty, r#"{"insecure": true, "rules": [{}]}"#);
        let early = at("2024-08-15T14:10:00Z");
        let p = parse_with(Source::Pagerduty, &cfg, &[], TRIGGERED, early).unwrap_err();
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].field, "event.occurred_at");
        assert_eq!(
            p.errors[0].message,
            "is more than 300 seconds in the future"
        );
        // Within the skew: fine. Long past (a retry 20 min later): fine.
        assert!(parse_with(
            Source::Pagerduty,
            &cfg,
            &[],
            TRIGGERED,
            at("2024-08-15T14:18:00Z")
        )
        .is_ok());
        assert!(parse_with(
            Source::Pagerduty,
            &cfg,
            &[],
            TRIGGERED,
            at("2024-08-16T14:22:00Z")
        )
        .is_ok());
    }

    #[test]
    fn p_numbers() {
        assert_eq!(super::p_number("P1"), Some(1));
        assert_eq!(super::p_number("p5"), Some(5));
        assert_eq!(super::p_number("P0"), None);
        assert_eq!(super::p_number("SEV1"), None);
    }
}
