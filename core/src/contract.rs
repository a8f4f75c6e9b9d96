//! The canonical contract (`POST /webhooks/canonical`): the guide's payload,
//! every field typed and bounded.
//!
//! Rules: `correlationId` 1–128 of `[A-Za-z0-9._:-]`; `incidentType` upper
//! snake case, 1–64; `routingMode` `EMERGENCY_ACTIVE` | `EMERGENCY_RESOLVED`;
//! `targetQueueIds` 1–50 unique non-empty ids, required when active (optional,
//! possibly empty, when resolved); `timestamp` RFC 3339 with an offset, at most
//! [`MAX_FUTURE_SKEW_SECONDS`] ahead of now and no older than the replay
//! window; `ttl` whole seconds 60–86400, [`DEFAULT_TTL_SECONDS`] when absent.
//! Unknown top-level fields are refused unless the config allows them.
//! Every broken field is reported at once.

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::event::{
    CorrelationId, IncidentEvent, IncidentType, QueueId, RoutingMode, Source, DEFAULT_PRIORITY,
    DEFAULT_TTL_SECONDS,
};
use crate::json::parse_strict;
use crate::problem::{FieldError, Problem};

pub const MAX_QUEUES: usize = 50;
pub const TTL_MIN: u64 = 60;
pub const TTL_MAX: u64 = 86_400;
pub const MAX_FUTURE_SKEW_SECONDS: i64 = 300;
pub const DEFAULT_REPLAY_WINDOW_SECONDS: u32 = 86_400;

const KNOWN_FIELDS: [&str; 6] = [
    "correlationId",
    "incidentType",
    "targetQueueIds",
    "routingMode",
    "timestamp",
    "ttl",
];

/// The configurable parts of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractRules {
    /// Events whose `timestamp` is older than this are refused: a replayed
    /// capture from last week must not switch routing.
    pub replay_window_seconds: u32,
    /// Ignore unknown top-level fields instead of refusing them.
    pub allow_unknown_fields: bool,
}

impl Default for ContractRules {
    fn default() -> Self {
        Self {
            replay_window_seconds: DEFAULT_REPLAY_WINDOW_SECONDS,
            allow_unknown_fields: false,
        }
    }
}

/// Reads a canonical body: 400 when it is not readable JSON, 422 naming every
/// broken field when it breaks the contract.
pub fn parse_canonical(
    body: &[u8],
    now: DateTime<Utc>,
    rules: &ContractRules,
) -> Result<IncidentEvent, Problem> {
    match fast_path(body, now, rules) {
        Some(event) => Ok(event),
        None => full_path(body, now, rules),
    }
}

/// Reads the body as a JSON tree and checks every field, collecting every
/// problem.
fn full_path(
    body: &[u8],
    now: DateTime<Utc>,
    rules: &ContractRules,
) -> Result<IncidentEvent, Problem> {
    let value = parse_strict(body).map_err(|e| Problem::bad_request(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(Problem::unprocessable(vec![FieldError::new(
            "$",
            "must be a JSON object",
        )]));
    };
    check_object(&obj, now, rules).map_err(Problem::unprocessable)
}

/// The contract's fields, read straight into borrowed strings: no JSON
/// tree, no copies. serde's derive refuses a repeated or unknown key, a
/// string with escapes cannot be borrowed, and the shape is fixed (depth 2),
/// so everything [`parse_strict`] would refuse fails here too.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Wire<'a> {
    correlation_id: &'a str,
    incident_type: &'a str,
    #[serde(default, borrow)]
    target_queue_ids: Option<Vec<&'a str>>,
    routing_mode: &'a str,
    timestamp: &'a str,
    #[serde(default)]
    ttl: Option<u64>,
}

/// The common case — a well-formed, valid event — without building a
/// `serde_json::Value`. `None` for anything else (bad JSON, a broken or
/// missing field, an unknown field, an escaped string): the caller then
/// takes the full path, which names every problem. It only accepts what
/// [`check_object`] accepts, and builds the same event from it.
fn fast_path(body: &[u8], now: DateTime<Utc>, rules: &ContractRules) -> Option<IncidentEvent> {
    let text = std::str::from_utf8(body).ok()?;
    let w: Wire = serde_json::from_str(text).ok()?;
    let correlation_id = CorrelationId::parse(w.correlation_id).ok()?;
    let incident_type = IncidentType::parse(w.incident_type).ok()?;
    let routing_mode = RoutingMode::parse(w.routing_mode)?;
    let target_queue_ids = match w.target_queue_ids {
        None if routing_mode == RoutingMode::Active => return None,
        None => Vec::new(),
        Some(items) => {
            if (items.is_empty() && routing_mode != RoutingMode::Resolved)
                || items.len() > MAX_QUEUES
            {
                return None;
            }
            let mut out: Vec<QueueId> = Vec::with_capacity(items.len());
            for item in items {
                let q = QueueId::parse(item).ok()?;
                if out.contains(&q) {
                    return None;
                }
                out.push(q);
            }
            out
        }
    };
    let mut errors = Vec::new();
    let timestamp = timestamp(w.timestamp, now, rules, &mut errors)?;
    let ttl_seconds = match w.ttl {
        None => DEFAULT_TTL_SECONDS,
        Some(secs) if (TTL_MIN..=TTL_MAX).contains(&secs) => u32::try_from(secs).ok()?,
        Some(_) => return None,
    };
    Some(IncidentEvent {
        source: Source::Canonical,
        correlation_id,
        incident_type,
        routing_mode,
        target_queue_ids,
        timestamp,
        ttl_seconds,
        priority: DEFAULT_PRIORITY,
        group: None,
        detail: None,
        about: None,
    })
}

/// Collects every field's verdict, then builds the event only if all passed.
fn check_object(
    obj: &Map<String, Value>,
    now: DateTime<Utc>,
    rules: &ContractRules,
) -> Result<IncidentEvent, Vec<FieldError>> {
    let mut errors = Vec::new();

    if !rules.allow_unknown_fields {
        for key in obj.keys().filter(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            // The key is the sender's text: bounded and printable, and the
            // key `""` named as JSONPath does, so `field` is never empty.
            let field = if key.is_empty() {
                "$[\"\"]".to_owned()
            } else {
                crate::text::printable(key)
            };
            errors.push(FieldError::new(field, "is not a field of the contract"));
        }
    }

    let correlation_id = required_str(obj, "correlationId", &mut errors).and_then(|s| {
        CorrelationId::parse(s)
            .map_err(|e| errors.push(FieldError::new("correlationId", e.0)))
            .ok()
    });
    let incident_type = required_str(obj, "incidentType", &mut errors).and_then(|s| {
        IncidentType::parse(s)
            .map_err(|e| errors.push(FieldError::new("incidentType", e.0)))
            .ok()
    });
    let routing_mode = required_str(obj, "routingMode", &mut errors).and_then(|s| {
        let mode = RoutingMode::parse(s);
        if mode.is_none() {
            errors.push(FieldError::new(
                "routingMode",
                "must be EMERGENCY_ACTIVE or EMERGENCY_RESOLVED",
            ));
        }
        mode
    });
    let queues = queue_ids(obj.get("targetQueueIds"), routing_mode, &mut errors);
    let timestamp = required_str(obj, "timestamp", &mut errors)
        .and_then(|s| timestamp(s, now, rules, &mut errors));
    let ttl = ttl(obj.get("ttl"), &mut errors);

    match (
        correlation_id,
        incident_type,
        routing_mode,
        queues,
        timestamp,
        ttl,
    ) {
        (
            Some(correlation_id),
            Some(incident_type),
            Some(routing_mode),
            Some(q),
            Some(t),
            Some(ttl),
        ) if errors.is_empty() => Ok(IncidentEvent {
            source: Source::Canonical,
            correlation_id,
            incident_type,
            routing_mode,
            target_queue_ids: q,
            timestamp: t,
            ttl_seconds: ttl,
            priority: DEFAULT_PRIORITY,
            group: None,
            detail: None,
            about: None,
        }),
        _ => Err(errors),
    }
}

fn required_str<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<&'a str> {
    match obj.get(field) {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(field, "is required"));
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            errors.push(FieldError::new(field, "must be a string"));
            None
        }
    }
}

fn queue_ids(
    value: Option<&Value>,
    mode: Option<RoutingMode>,
    errors: &mut Vec<FieldError>,
) -> Option<Vec<QueueId>> {
    const FIELD: &str = "targetQueueIds";
    let items = match value {
        None | Some(Value::Null) => {
            if mode == Some(RoutingMode::Active) {
                errors.push(FieldError::new(
                    FIELD,
                    "is required when routingMode is EMERGENCY_ACTIVE",
                ));
                return None;
            }
            return Some(Vec::new());
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(FieldError::new(
                FIELD,
                "must be an array of queue id strings",
            ));
            return None;
        }
    };
    let before = errors.len();
    if items.is_empty() && mode != Some(RoutingMode::Resolved) {
        errors.push(FieldError::new(FIELD, "must hold at least 1 queue id"));
    }
    if items.len() > MAX_QUEUES {
        errors.push(FieldError::new(
            FIELD,
            format!("must hold at most {MAX_QUEUES} queue ids"),
        ));
        return None;
    }
    let mut out: Vec<QueueId> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("{FIELD}[{i}]");
        match item {
            Value::String(s) => match QueueId::parse(s) {
                Ok(q) if out.contains(&q) => {
                    errors.push(FieldError::new(field, format!("repeats queue id {s:?}")));
                }
                Ok(q) => out.push(q),
                Err(e) => errors.push(FieldError::new(field, e.0)),
            },
            _ => errors.push(FieldError::new(field, "must be a string")),
        }
    }
    (errors.len() == before).then_some(out)
}

fn timestamp(
    s: &str,
    now: DateTime<Utc>,
    rules: &ContractRules,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    const FIELD: &str = "timestamp";
    let Ok(t) = DateTime::parse_from_rfc3339(s) else {
        errors.push(FieldError::new(
            FIELD,
            "must be an RFC 3339 date-time with an offset, e.g. 2024-08-15T14:22:01Z",
        ));
        return None;
    };
    let t = t.with_timezone(&Utc);
    if t > now + Duration::seconds(MAX_FUTURE_SKEW_SECONDS) {
        errors.push(FieldError::new(
            FIELD,
            format!("is more than {MAX_FUTURE_SKEW_SECONDS} seconds in the future"),
        ));
        return None;
    }
    if t < now - Duration::seconds(i64::from(rules.replay_window_seconds)) {
        errors.push(FieldError::new(
            FIELD,
            format!(
                "is older than the replay window of {} seconds",
                rules.replay_window_seconds
            ),
        ));
        return None;
    }
    Some(t)
}

fn ttl(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<u32> {
    const FIELD: &str = "ttl";
    let n = match value {
        None | Some(Value::Null) => return Some(DEFAULT_TTL_SECONDS),
        Some(Value::Number(n)) => n,
        Some(_) => {
            errors.push(FieldError::new(FIELD, "must be a whole number of seconds"));
            return None;
        }
    };
    match n.as_u64() {
        Some(secs) if (TTL_MIN..=TTL_MAX).contains(&secs) => u32::try_from(secs).ok(),
        Some(_) => {
            errors.push(FieldError::new(
                FIELD,
                format!("must be between {TTL_MIN} and {TTL_MAX} seconds"),
            ));
            None
        }
        None if n.is_i64() => {
            errors.push(FieldError::new(
                FIELD,
                format!("must be between {TTL_MIN} and {TTL_MAX} seconds"),
            ));
            None
        }
        None => {
            errors.push(FieldError::new(FIELD, "must be a whole number of seconds"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-08-15T14:25:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn valid() -> Value {
        json!({
            "correlationId": "INC-2024-08-15-7742",
            "incidentType": "CARRIER_OUTAGE",
            "targetQueueIds": ["queue-12345", "queue-67890"],
            "routingMode": "EMERGENCY_ACTIVE",
            "timestamp": "2024-08-15T14:22:01Z",
            "ttl": 3600
        })
    }

    /// The fast path never accepts what the full path refuses, and builds
    /// the same event from what it accepts.
    fn agrees(body: &str) -> Option<IncidentEvent> {
        let rules = ContractRules::default();
        let fast = fast_path(body.as_bytes(), now(), &rules);
        if let Some(e) = &fast {
            assert_eq!(
                full_path(body.as_bytes(), now(), &rules).as_ref(),
                Ok(e),
                "{body}"
            );
        }
        fast
    }

    #[test]
    fn the_fast_path_takes_valid_events_and_nothing_else() {
        assert!(agrees(&valid().to_string()).is_some());
        let resolved = r#"{"correlationId":"A","incidentType":"X","routingMode":"EMERGENCY_RESOLVED","timestamp":"2024-08-15T14:22:01Z"}"#;
        assert!(agrees(resolved).is_some());
        let empty_resolved = r#"{"correlationId":"A","incidentType":"X","targetQueueIds":[],"routingMode":"EMERGENCY_RESOLVED","timestamp":"2024-08-15T14:22:01+02:00","ttl":null}"#;
        assert!(agrees(empty_resolved).is_some());
        for refused in [
            // repeated, unknown, escaped, null, float, negative, out of range
            r#"{"correlationId":"A","correlationId":"B","incidentType":"X","targetQueueIds":["q"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"2024-08-15T14:22:01Z"}"#,
            r#"{"correlationId":"A","incidentType":"X","targetQueueIds":["q"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"2024-08-15T14:22:01Z","extra":1}"#,
            r#"{"correlationId":"A\u0042","incidentType":"X","targetQueueIds":["q"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"2024-08-15T14:22:01Z"}"#,
            r#"{"correlationId":null,"incidentType":"X","targetQueueIds":["q"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"2024-08-15T14:22:01Z"}"#,
            r#"{"correlationId":"A","incidentType":"X","targetQueueIds":["q"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"2024-08-15T14:22:01Z","ttl":3600.0}"#,
            r#"{"correlationId":"A","incidentType":"X","targetQueueIds":["q"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"2024-08-15T14:22:01Z","ttl":-60}"#,
            r#"{"correlationId":"A","incidentType":"X","targetQueueIds":["q"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"2024-08-15T14:22:01Z","ttl":59}"#,
            r#"{"correlationId":"A","incidentType":"X","routingMode":"EMERGENCY_ACTIVE","timestamp":"2024-08-15T14:22:01Z"}"#,
            r#"{"correlationId":"A","incidentType":"X","targetQueueIds":[],"routingMode":"EMERGENCY_ACTIVE","timestamp":"2024-08-15T14:22:01Z"}"#,
            r#"{"correlationId":"A","incidentType":"X","targetQueueIds":["q","q"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"2024-08-15T14:22:01Z"}"#,
            r#"{"correlationId":"A","incidentType":"x","targetQueueIds":["q"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"2024-08-15T14:22:01Z"}"#,
            r#"{"correlationId":"A","incidentType":"X","targetQueueIds":["q"],"routingMode":"ACTIVE","timestamp":"2024-08-15T14:22:01Z"}"#,
            r#"{"correlationId":"A","incidentType":"X","targetQueueIds":["q"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"2024-08-14T14:22:01Z"}"#,
            r#"{"correlationId":"A","incidentType":"X","targetQueueIds":["q"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"2024-08-15T14:22:01"}"#,
            r#"{"correlationId":"A","incidentType":"X","targetQueueIds":["q"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"2024-08-15T14:22:01Z"} x"#,
            r#"[{"correlationId":"A"}]"#,
            "",
        ] {
            assert_eq!(agrees(refused), None, "{refused}");
        }
    }

    fn parse(v: &Value) -> Result<IncidentEvent, Problem> {
        parse_canonical(v.to_string().as_bytes(), now(), &ContractRules::default())
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = valid();
        v[field] = value;
        v
    }

    fn without(field: &str) -> Value {
        let mut v = valid();
        v.as_object_mut().unwrap().remove(field);
        v
    }

    /// The fields named by a 422, in order.
    fn fields(v: &Value) -> Vec<String> {
        let p = parse(v).unwrap_err();
        assert_eq!(p.status, 422, "{p:?}");
        p.errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn the_guides_example_is_accepted() {
        let e = parse(&valid()).unwrap();
        assert_eq!(e.correlation_id.as_str(), "INC-2024-08-15-7742");
        assert_eq!(e.incident_type.as_str(), "CARRIER_OUTAGE");
        assert_eq!(e.routing_mode, RoutingMode::Active);
        assert_eq!(e.target_queue_ids.len(), 2);
        assert_eq!(e.target_queue_ids[1].as_str(), "queue-67890");
        assert_eq!(e.ttl_seconds, 3600);
        assert_eq!(e.source, Source::Canonical);
        assert_eq!(e.timestamp.to_rfc3339(), "2024-08-15T14:22:01+00:00");
    }

    #[test]
    fn ttl_defaults_to_an_hour() {
        assert_eq!(parse(&without("ttl")).unwrap().ttl_seconds, 3600);
        assert_eq!(parse(&with("ttl", Value::Null)).unwrap().ttl_seconds, 3600);
    }

    #[test]
    fn ttl_bounds_and_type() {
        assert_eq!(parse(&with("ttl", json!(60))).unwrap().ttl_seconds, 60);
        assert_eq!(
            parse(&with("ttl", json!(86400))).unwrap().ttl_seconds,
            86400
        );
        for bad in [
            json!(59),
            json!(86401),
            json!(-5),
            json!(60.5),
            json!("3600"),
            json!(true),
        ] {
            assert_eq!(fields(&with("ttl", bad.clone())), ["ttl"], "{bad}");
        }
    }

    #[test]
    fn correlation_id_rules() {
        assert_eq!(fields(&without("correlationId")), ["correlationId"]);
        assert_eq!(fields(&with("correlationId", json!(""))), ["correlationId"]);
        assert_eq!(
            fields(&with("correlationId", json!("a b"))),
            ["correlationId"]
        );
        assert_eq!(
            fields(&with("correlationId", json!("x".repeat(129)))),
            ["correlationId"]
        );
        assert_eq!(fields(&with("correlationId", json!(42))), ["correlationId"]);
        assert!(parse(&with("correlationId", json!("x".repeat(128)))).is_ok());
    }

    #[test]
    fn incident_type_rules() {
        assert_eq!(fields(&without("incidentType")), ["incidentType"]);
        assert_eq!(
            fields(&with("incidentType", json!("carrier_outage"))),
            ["incidentType"]
        );
        assert_eq!(
            fields(&with("incidentType", json!("A".repeat(65)))),
            ["incidentType"]
        );
    }

    #[test]
    fn routing_mode_rules() {
        assert_eq!(fields(&without("routingMode")), ["routingMode"]);
        assert_eq!(
            fields(&with("routingMode", json!("ACTIVE"))),
            ["routingMode"]
        );
        let resolved = parse(&with("routingMode", json!("EMERGENCY_RESOLVED"))).unwrap();
        assert_eq!(resolved.routing_mode, RoutingMode::Resolved);
    }

    #[test]
    fn queue_rules() {
        assert_eq!(fields(&without("targetQueueIds")), ["targetQueueIds"]);
        assert_eq!(
            fields(&with("targetQueueIds", json!([]))),
            ["targetQueueIds"]
        );
        assert_eq!(
            fields(&with("targetQueueIds", json!("queue-1"))),
            ["targetQueueIds"]
        );
        assert_eq!(
            fields(&with("targetQueueIds", json!(["a", "", 7, "a"]))),
            [
                "targetQueueIds[1]",
                "targetQueueIds[2]",
                "targetQueueIds[3]"
            ]
        );
        let fifty: Vec<String> = (0..50).map(|i| format!("q{i}")).collect();
        assert_eq!(
            parse(&with("targetQueueIds", json!(fifty)))
                .unwrap()
                .target_queue_ids
                .len(),
            50
        );
        let fifty_one: Vec<String> = (0..51).map(|i| format!("q{i}")).collect();
        assert_eq!(
            fields(&with("targetQueueIds", json!(fifty_one))),
            ["targetQueueIds"]
        );
    }

    #[test]
    fn a_resolution_needs_no_queues() {
        let mut v = without("targetQueueIds");
        v["routingMode"] = json!("EMERGENCY_RESOLVED");
        assert!(parse(&v).unwrap().target_queue_ids.is_empty());
        v["targetQueueIds"] = json!([]);
        assert!(parse(&v).is_ok());
    }

    #[test]
    fn timestamp_rules() {
        assert_eq!(fields(&without("timestamp")), ["timestamp"]);
        // No offset, not RFC 3339, not a string.
        for bad in [
            json!("2024-08-15T14:22:01"),
            json!("15/08/2024"),
            json!(1723731721),
        ] {
            assert_eq!(
                fields(&with("timestamp", bad.clone())),
                ["timestamp"],
                "{bad}"
            );
        }
        // Offsets are honoured and normalised to UTC.
        let e = parse(&with("timestamp", json!("2024-08-15T16:22:01+02:00"))).unwrap();
        assert_eq!(e.timestamp.to_rfc3339(), "2024-08-15T14:22:01+00:00");
        // Five minutes ahead is fine, a second more is not.
        assert!(parse(&with("timestamp", json!("2024-08-15T14:30:00Z"))).is_ok());
        assert_eq!(
            fields(&with("timestamp", json!("2024-08-15T14:30:01Z"))),
            ["timestamp"]
        );
        // The replay window (24 h by default) bounds the past.
        assert!(parse(&with("timestamp", json!("2024-08-14T14:25:00Z"))).is_ok());
        assert_eq!(
            fields(&with("timestamp", json!("2024-08-14T14:24:59Z"))),
            ["timestamp"]
        );
    }

    #[test]
    fn replay_window_is_configurable() {
        let rules = ContractRules {
            replay_window_seconds: 600,
            ..ContractRules::default()
        };
        let old = with("timestamp", json!("2024-08-15T14:14:00Z"));
        let p = parse_canonical(old.to_string().as_bytes(), now(), &rules).unwrap_err();
        assert_eq!(p.errors[0].field, "timestamp");
        assert!(p.errors[0].message.contains("600"));
    }

    #[test]
    fn unknown_fields_are_refused_by_name_or_ignored_by_config() {
        let v = with("severity", json!("high"));
        assert_eq!(fields(&v), ["severity"]);
        let lenient = ContractRules {
            allow_unknown_fields: true,
            ..ContractRules::default()
        };
        assert!(parse_canonical(v.to_string().as_bytes(), now(), &lenient).is_ok());
    }

    #[test]
    fn an_unknown_key_is_named_by_a_non_empty_bounded_field() {
        // fuzz/regressions/canonical_contract/empty-key
        assert_eq!(fields(&with("", json!(60.5))), ["$[\"\"]"]);
        let long = format!("x\u{0}{}", "y".repeat(10_000));
        let named = fields(&with(&long, json!(1)));
        assert_eq!(named.len(), 1);
        assert!(
            named[0].starts_with("x?y") && named[0].len() == 64,
            "{named:?}"
        );
    }

    #[test]
    fn every_broken_field_is_named_at_once() {
        let v = json!({
            "correlationId": "bad id",
            "incidentType": "lower",
            "routingMode": "ON",
            "targetQueueIds": [],
            "timestamp": "yesterday",
            "ttl": 5,
            "extra": 1
        });
        let mut got = fields(&v);
        got.sort();
        assert_eq!(
            got,
            [
                "correlationId",
                "extra",
                "incidentType",
                "routingMode",
                "targetQueueIds",
                "timestamp",
                "ttl"
            ]
        );
    }

    #[test]
    fn unreadable_bodies_are_400() {
        for body in [
            &b"not json"[..],
            b"",
            b"{\"a\":1,\"a\":2}",
            b"\xff\xfe",
            b"{} {}",
        ] {
            let p = parse_canonical(body, now(), &ContractRules::default()).unwrap_err();
            assert_eq!(p.status, 400, "{body:?}");
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            parse_canonical(deep.as_bytes(), now(), &ContractRules::default())
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn a_non_object_is_422_at_the_root() {
        for body in ["[]", "\"x\"", "7", "null"] {
            let p = parse_canonical(body.as_bytes(), now(), &ContractRules::default()).unwrap_err();
            assert_eq!(p.status, 422);
            assert_eq!(p.errors[0].field, "$");
        }
    }

    #[test]
    fn duplicate_keys_are_refused_not_last_wins() {
        let body = br#"{"correlationId":"A","correlationId":"B","incidentType":"X","routingMode":"EMERGENCY_RESOLVED","timestamp":"2024-08-15T14:22:01Z"}"#;
        let p = parse_canonical(body, now(), &ContractRules::default()).unwrap_err();
        assert_eq!(p.status, 400);
        assert!(p.detail.contains("correlationId"));
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props {
    use proptest::prelude::*;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-08-15T14:25:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    /// A JSON value for one field: good, wrong type, edge of a bound, escaped.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#""INC-1""#.to_owned()),
            Just(r#""CARRIER_OUTAGE""#.to_owned()),
            Just(r#""EMERGENCY_ACTIVE""#.to_owned()),
            Just(r#""EMERGENCY_RESOLVED""#.to_owned()),
            Just(r#""2024-08-15T14:22:01Z""#.to_owned()),
            Just(r#""2024-08-15T14:31:01Z""#.to_owned()),
            Just(r#""A\u0042""#.to_owned()),
            Just(r#"["q1","q2"]"#.to_owned()),
            Just(r#"["q1","q1"]"#.to_owned()),
            Just("[]".to_owned()),
            Just(r#"[1]"#.to_owned()),
            Just("null".to_owned()),
            Just("3600".to_owned()),
            Just("60".to_owned()),
            Just("59".to_owned()),
            Just("3600.0".to_owned()),
            Just("-1".to_owned()),
            Just("{}".to_owned()),
            "[a-zA-Z0-9_ -]{0,8}".prop_map(|s| format!("\"{s}\"")),
        ]
    }

    fn body() -> impl Strategy<Value = String> {
        let names = prop_oneof![
            Just("correlationId"),
            Just("incidentType"),
            Just("targetQueueIds"),
            Just("routingMode"),
            Just("timestamp"),
            Just("ttl"),
            Just("other"),
        ];
        proptest::collection::vec((names, piece()), 0..9).prop_map(|fields| {
            let inner: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", inner.join(","))
        })
    }

    proptest! {
        /// Whatever the body, the fast path accepts only what the full path
        /// accepts, and builds the same event.
        #[test]
        fn fast_path_agrees_with_the_full_path(body in body()) {
            let rules = ContractRules::default();
            if let Some(fast) = fast_path(body.as_bytes(), now(), &rules) {
                prop_assert_eq!(full_path(body.as_bytes(), now(), &rules), Ok(fast));
            }
        }
    }
}
