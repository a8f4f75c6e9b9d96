//! `canonical_contract`: the guide's payload, read by `parse_canonical`.
//!
//! The whole input is the body. It is read under the default rules and
//! with unknown fields allowed: what the strict rules accept, the lenient
//! ones accept identically. An accepted event keeps every bound of the
//! contract and re-validates: written back as a canonical body, it parses to
//! itself. A refusal is a 400 or a 422 naming every broken field.

use chrono::{Duration, SecondsFormat};
use emr_core::contract::{
    parse_canonical, ContractRules, MAX_FUTURE_SKEW_SECONDS, MAX_QUEUES, TTL_MAX, TTL_MIN,
};
use emr_core::event::{IncidentEvent, QueuedEvent, RoutingMode, Source, DEFAULT_PRIORITY};
use serde_json::json;

use super::{check_problem, check_queued_round_trip, now};

pub fn canonical_contract(data: &[u8]) {
    let strict = ContractRules::default();
    let lenient = ContractRules {
        allow_unknown_fields: true,
        ..ContractRules::default()
    };
    let s = parse_canonical(data, now(), &strict);
    let l = parse_canonical(data, now(), &lenient);
    if let Ok(ev) = &s {
        assert_eq!(
            l.as_ref().ok(),
            Some(ev),
            "lenient rules refused or changed it"
        );
    }
    // An accepted body may take the reader's fast path; the same body with
    // one unknown field (allowed) must take the full one, to the same event.
    if let (Ok(ev), Some(rest)) = (&s, data.trim_ascii_start().strip_prefix(b"{")) {
        let mut slow = br#"{"zzUnknownField":0,"#.to_vec();
        slow.extend_from_slice(rest);
        let full = parse_canonical(&slow, now(), &lenient);
        assert_eq!(full.as_ref(), Ok(ev), "fast and full paths disagree");
    }
    for (result, rules) in [(&s, &strict), (&l, &lenient)] {
        match result {
            Ok(ev) => check_canonical_event(ev, rules),
            Err(p) => check_problem(p, &[400, 422]),
        }
    }
}

/// Every bound of the contract holds, and the event re-validates.
pub fn check_canonical_event(ev: &IncidentEvent, rules: &ContractRules) {
    assert_eq!(ev.source, Source::Canonical);
    assert_eq!(ev.priority, DEFAULT_PRIORITY);
    assert_eq!(ev.group, None);
    assert!((TTL_MIN..=TTL_MAX).contains(&u64::from(ev.ttl_seconds)));
    let queues = &ev.target_queue_ids;
    assert!(queues.len() <= MAX_QUEUES);
    for (i, q) in queues.iter().enumerate() {
        assert!(!queues[..i].contains(q), "queue {q} repeated");
    }
    if ev.routing_mode == RoutingMode::Active {
        assert!(!queues.is_empty(), "an activation without queues");
    }
    let t = ev.timestamp;
    assert!(t <= now() + Duration::seconds(MAX_FUTURE_SKEW_SECONDS));
    assert!(t >= now() - Duration::seconds(i64::from(rules.replay_window_seconds)));

    let body = json!({
        "correlationId": ev.correlation_id,
        "incidentType": ev.incident_type,
        "targetQueueIds": ev.target_queue_ids,
        "routingMode": ev.routing_mode,
        "timestamp": ev.timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "ttl": ev.ttl_seconds,
    });
    let again = parse_canonical(body.to_string().as_bytes(), now(), rules)
        .unwrap_or_else(|p| panic!("an accepted event does not re-validate: {p:?} {body}"));
    assert_eq!(&again, ev, "an accepted event re-validates differently");

    check_queued_round_trip(&QueuedEvent {
        event: ev.clone(),
        received_ms: now().timestamp_millis(),
        delivery_id: None,
        slot: false,
    });
}
