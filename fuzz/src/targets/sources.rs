//! `sources`: every source parser, through `sources::parse`.
//!
//! Input: a byte picking the source, a byte picking one of three mapping
//! configs (no rules; the shipped example's rules; a catch-all rule with
//! mode overrides, no forwarding of unmatched resolves and no future skew),
//! a short string sent as every delivery-id header, then the body.
//!
//! A refusal is a well-formed 400 or 422. An accepted delivery's events keep
//! every bound (ids, types, queues, ttl, priority, no time beyond the allowed
//! skew), come from the route's source, and survive the queue's JSON round
//! trip; ignored items carry a valid id and a printable ASCII reason; a
//! delivery id is 1–200 visible ASCII characters. The canonical routes read
//! exactly what `parse_canonical` reads.

use std::sync::OnceLock;

use chrono::Duration;
use emr_core::contract::{parse_canonical, MAX_FUTURE_SKEW_SECONDS, MAX_QUEUES, TTL_MAX, TTL_MIN};
use emr_core::event::{
    CorrelationId, GroupId, IncidentEvent, IncidentType, QueueId, QueuedEvent, RoutingMode, Source,
};
use emr_core::mapping::PRIORITY_RANGE;
use emr_core::sources::{self, CompiledSource, CompiledSources, Delivery, Item, SourcesConfig};

use super::{check_problem, check_queued_round_trip, now, Input};

/// The three mapping configs, every route open (parsing comes after auth).
pub const CONFIGS: [&str; 3] = [BARE, EXAMPLE, CATCH_ALL];

const BARE: &str = r#"{
  "canonical": {"insecure": true}, "pagerduty": {"insecure": true},
  "servicenow": {"insecure": true}, "jsm": {"insecure": true},
  "opsgenie": {"insecure": true}, "alertmanager": {"insecure": true},
  "standard": {"insecure": true}
}"#;

/// `examples/config.json`'s rules and modes.
const EXAMPLE: &str = r#"{
  "canonical": {"insecure": true, "rules": [
    {"match": {"incident_type": ["CARRIER_OUTAGE", "SIP_TRUNK_DOWN"]}, "group": "eg-voice", "priority": 1}]},
  "pagerduty": {"insecure": true, "modes": {"incident.priority_updated": "active"},
    "default_ttl_seconds": 3600, "rules": [
    {"name": "voice platform, P1/P2", "match": {"service_id": "PIJ90N7", "priority": ["P1", "P2"]},
     "incident_type": "CARRIER_OUTAGE", "group": "eg-voice",
     "queues": ["queue-12345", "queue-67890"], "priority": 1, "ttl_seconds": 7200},
    {"match": {"team_name": "Contact Centre Engineering", "urgency": "high"},
     "group": "eg-voice", "queues": ["queue-12345"]}]},
  "servicenow": {"insecure": true, "modes": {"Awaiting Caller": "active"}, "rules": [
    {"match": {"priority": ["1", "2"], "assignment_group": "Voice Platform", "category": "network"},
     "incident_type": "CARRIER_OUTAGE", "group": "eg-voice", "queues": ["queue-12345"]}]},
  "jsm": {"insecure": true, "modes": {"Waiting for customer": "ignore"}, "rules": [
    {"match": {"project": "ITSM", "priority": ["Highest", "High"], "labels": "major-incident"},
     "incident_type": "MAJOR_INCIDENT", "group": "eg-voice", "queues": ["queue-12345"]}]},
  "opsgenie": {"insecure": true, "modes": {"Delete": "resolved"}, "rules": [
    {"match": {"priority": ["P1", "P2"], "tags": ["voice", "sip"]},
     "group": "eg-voice", "queues": ["queue-12345"]}]},
  "alertmanager": {"insecure": true, "default_ttl_seconds": 86400, "rules": [
    {"match": {"labels": {"team": "voice", "severity": ["critical", "page"]}},
     "group": "eg-voice", "queues": ["queue-12345", "queue-67890"]}]},
  "standard": {"insecure": true}
}"#;

const CATCH_ALL: &str = r#"{
  "canonical": {"insecure": true, "forward_unmatched_resolves": false,
    "rules": [{"match": {"incident_type": "SIP_TRUNK_DOWN"}, "group": "eg-sip", "queues": ["q-sip"], "priority": 2}]},
  "pagerduty": {"insecure": true, "forward_unmatched_resolves": false, "max_future_skew_seconds": 0,
    "default_ttl_seconds": 60,
    "modes": {"incident.acknowledged": "resolved", "incident.reopened": "ignore", "incident.annotated": "active"},
    "rules": [{"match": {}, "incident_type": "ANY_INCIDENT", "group": "eg-any",
               "queues": ["q-1", "q-2"], "priority": 5, "ttl_seconds": 86400}]},
  "servicenow": {"insecure": true, "forward_unmatched_resolves": false, "max_future_skew_seconds": 0,
    "modes": {"6": "active", "7": "ignore", "In Progress": "resolved"},
    "rules": [{"match": {}, "group": "eg-any"}]},
  "jsm": {"insecure": true, "forward_unmatched_resolves": false, "max_future_skew_seconds": 0,
    "modes": {"jira:issue_deleted": "active", "Done": "ignore", "indeterminate": "resolved"},
    "rules": [{"match": {}, "queues": ["q-1"]}]},
  "opsgenie": {"insecure": true, "forward_unmatched_resolves": false, "max_future_skew_seconds": 0,
    "modes": {"Close": "active", "Create": "ignore", "AddNote": "resolved"},
    "rules": [{"match": {}, "priority": 1}]},
  "alertmanager": {"insecure": true, "forward_unmatched_resolves": false, "max_future_skew_seconds": 0,
    "modes": {"resolved": "active", "firing": "resolved"},
    "rules": [{"match": {"labels": {"severity": "critical"}}, "group": "eg-crit"}, {"match": {}}]},
  "standard": {"insecure": true, "forward_unmatched_resolves": false,
    "rules": [{"match": {"incident_type": ["CARRIER_OUTAGE"]}, "group": "eg-voice", "queues": ["q-9"]}]}
}"#;

/// The headers a delivery id may come in.
const DELIVERY_ID_HEADERS: [&str; 3] = [
    "x-webhook-id",
    "x-atlassian-webhook-identifier",
    "webhook-id",
];

pub fn compiled(variant: usize) -> &'static CompiledSources {
    static COMPILED: OnceLock<Vec<CompiledSources>> = OnceLock::new();
    let all = COMPILED.get_or_init(|| {
        CONFIGS
            .iter()
            .map(|json| {
                let cfg: SourcesConfig = serde_json::from_str(json).unwrap();
                cfg.compile(&|_| None).unwrap()
            })
            .collect()
    });
    &all[variant % all.len()]
}

pub fn sources(data: &[u8]) {
    let mut input = Input::new(data);
    let source = input.pick(&Source::ALL);
    let cfg = compiled(usize::from(input.byte())).get(source);
    let id = input.string();
    let headers: Vec<(String, String)> = DELIVERY_ID_HEADERS
        .iter()
        .map(|h| ((*h).to_owned(), id.clone()))
        .collect();
    let body = input.rest();
    let delivery = Delivery {
        headers: &headers,
        body,
        now: now(),
    };
    let parsed = sources::parse(source, &delivery, cfg);
    if matches!(source, Source::Canonical | Source::Standard) {
        check_canonical_route(source, cfg, body, &parsed);
    }
    let parsed = match parsed {
        Ok(p) => p,
        Err(p) => return check_problem(&p, &[400, 422]),
    };
    if let Some(d) = &parsed.delivery_id {
        assert!(!d.is_empty() && d.len() <= 200, "delivery id {d:?}");
        assert!(d.bytes().all(|b| b.is_ascii_graphic()), "delivery id {d:?}");
    }
    for item in &parsed.items {
        match item {
            Item::Event(ev) => {
                assert_eq!(ev.source, source);
                check_event(ev, cfg);
                check_queued_round_trip(&QueuedEvent {
                    event: ev.clone(),
                    received_ms: now().timestamp_millis(),
                    delivery_id: parsed.delivery_id.clone(),
                    slot: false,
                });
            }
            // The id is the correlation id, or the tool's own event id
            // (a PagerDuty ping's) made printable: both go into logs.
            Item::Ignored { id, reason } => {
                assert!(id.len() <= 128, "ignored id {id:?}");
                assert!(printable(id), "ignored id is not printable ASCII: {id:?}");
                assert!(!reason.is_empty());
                assert!(
                    printable(reason),
                    "ignored reason is not printable ASCII: {reason:?}"
                );
            }
        }
    }
}

fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// The bounds every event keeps, whatever its source.
pub fn check_event(ev: &IncidentEvent, cfg: &CompiledSource) {
    assert!(CorrelationId::parse(ev.correlation_id.as_str()).is_ok());
    assert!(IncidentType::parse(ev.incident_type.as_str()).is_ok());
    if let Some(g) = &ev.group {
        assert!(GroupId::parse(g.as_str()).is_ok());
    }
    let queues = &ev.target_queue_ids;
    assert!(queues.len() <= MAX_QUEUES);
    for (i, q) in queues.iter().enumerate() {
        assert!(QueueId::parse(q.as_str()).is_ok());
        assert!(!queues[..i].contains(q), "queue {q} repeated in {ev:?}");
    }
    assert!(
        (TTL_MIN..=TTL_MAX).contains(&u64::from(ev.ttl_seconds)),
        "ttl {} out of bounds",
        ev.ttl_seconds
    );
    assert!(
        PRIORITY_RANGE.contains(&ev.priority),
        "priority {}",
        ev.priority
    );
    // The canonical routes keep the contract's own bound.
    let skew = match ev.source {
        Source::Canonical | Source::Standard => MAX_FUTURE_SKEW_SECONDS,
        _ => i64::from(cfg.mapping().max_future_skew_seconds()),
    };
    let skew = Duration::seconds(skew);
    assert!(
        ev.timestamp <= now() + skew,
        "event time beyond the skew: {ev:?}"
    );
}

/// The canonical routes read what `parse_canonical` reads, then only refine
/// group, priority and (for an activation without any) queues.
fn check_canonical_route(
    source: Source,
    cfg: &CompiledSource,
    body: &[u8],
    parsed: &Result<sources::Parsed, emr_core::problem::Problem>,
) {
    match (parse_canonical(body, now(), cfg.contract()), parsed) {
        (Err(a), Err(b)) => assert_eq!(&a, b),
        (Ok(ev), Ok(p)) => {
            assert_eq!(p.items.len(), 1);
            match &p.items[0] {
                Item::Event(got) => {
                    assert_eq!(got.source, source);
                    assert_eq!(got.correlation_id, ev.correlation_id);
                    assert_eq!(got.incident_type, ev.incident_type);
                    assert_eq!(got.routing_mode, ev.routing_mode);
                    assert_eq!(got.timestamp, ev.timestamp);
                    assert_eq!(got.ttl_seconds, ev.ttl_seconds);
                    if !ev.target_queue_ids.is_empty() || ev.routing_mode == RoutingMode::Resolved {
                        assert_eq!(got.target_queue_ids, ev.target_queue_ids);
                    }
                }
                Item::Ignored { id, .. } => assert_eq!(id, ev.correlation_id.as_str()),
            }
        }
        (a, b) => panic!("canonical route and parse_canonical disagree: {a:?} / {b:?}"),
    }
}
