//! The canonical incident event: what every source is normalised into before
//! it is deduplicated, queued to the service and recorded in the ledger.
//!
//! Values are validated newtypes: once a [`CorrelationId`] exists it is known to
//! be 1–128 characters of `[A-Za-z0-9._:-]`, so nothing downstream re-checks.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where an event came from. Part of an incident's identity: the same id from
/// two tools is two incidents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Canonical,
    Pagerduty,
    Servicenow,
    Jsm,
    Opsgenie,
    Alertmanager,
    Standard,
}

impl Source {
    pub const ALL: [Source; 7] = [
        Source::Canonical,
        Source::Pagerduty,
        Source::Servicenow,
        Source::Jsm,
        Source::Opsgenie,
        Source::Alertmanager,
        Source::Standard,
    ];

    /// The path segment of the source's intake route, `/webhooks/{name}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Canonical => "canonical",
            Source::Pagerduty => "pagerduty",
            Source::Servicenow => "servicenow",
            Source::Jsm => "jsm",
            Source::Opsgenie => "opsgenie",
            Source::Alertmanager => "alertmanager",
            Source::Standard => "standard",
        }
    }

    pub fn from_path_segment(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|src| src.as_str() == s)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an event opens (or keeps open) an incident or ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RoutingMode {
    #[serde(rename = "EMERGENCY_ACTIVE")]
    Active,
    #[serde(rename = "EMERGENCY_RESOLVED")]
    Resolved,
}

impl RoutingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RoutingMode::Active => "EMERGENCY_ACTIVE",
            RoutingMode::Resolved => "EMERGENCY_RESOLVED",
        }
    }

    pub fn parse(s: &str) -> Option<RoutingMode> {
        match s {
            "EMERGENCY_ACTIVE" => Some(RoutingMode::Active),
            "EMERGENCY_RESOLVED" => Some(RoutingMode::Resolved),
            _ => None,
        }
    }
}

impl fmt::Display for RoutingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string was refused as one of the validated ids below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId(pub &'static str);

macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                $check(s).map(|()| Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(|e| serde::de::Error::custom(e.0))
            }
        }
    };
}

pub const CORRELATION_ID_MAX: usize = 128;
pub const INCIDENT_TYPE_MAX: usize = 64;
pub const QUEUE_ID_MAX: usize = 128;
pub const GROUP_ID_MAX: usize = 128;

fn check_correlation_id(s: &str) -> Result<(), InvalidId> {
    if s.is_empty() || s.len() > CORRELATION_ID_MAX {
        return Err(InvalidId("must be 1 to 128 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(InvalidId(
            "may only hold A-Z, a-z, 0-9, '.', '_', ':' and '-'",
        ));
    }
    Ok(())
}

fn check_incident_type(s: &str) -> Result<(), InvalidId> {
    if s.is_empty() || s.len() > INCIDENT_TYPE_MAX {
        return Err(InvalidId("must be 1 to 64 characters"));
    }
    let upper_snake = s.split('_').all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    }) && s.bytes().next().is_some_and(|b| b.is_ascii_uppercase());
    if !upper_snake {
        return Err(InvalidId(
            "must be UPPER_SNAKE_CASE: A-Z and 0-9 words joined by single '_', starting with a letter",
        ));
    }
    Ok(())
}

fn check_opaque_id(s: &str) -> Result<(), InvalidId> {
    if s.trim().is_empty() {
        return Err(InvalidId("must not be empty"));
    }
    if s.len() > QUEUE_ID_MAX {
        return Err(InvalidId("must be at most 128 characters"));
    }
    if s.chars().any(char::is_control) {
        return Err(InvalidId("must not contain control characters"));
    }
    Ok(())
}

validated_string!(
    /// An incident's id at its source: 1–128 of `[A-Za-z0-9._:-]`.
    CorrelationId,
    check_correlation_id
);
validated_string!(
    /// An incident class such as `CARRIER_OUTAGE`; selects the emergency group.
    IncidentType,
    check_incident_type
);
validated_string!(
    /// A Genesys queue id, kept opaque: non-empty, at most 128 characters.
    QueueId,
    check_opaque_id
);
validated_string!(
    /// A Genesys emergency group id, kept opaque.
    GroupId,
    check_opaque_id
);

/// An incident's priority; 1 is the most urgent. Orders queue lists when
/// several incidents drive one group.
pub type Priority = u8;
pub const DEFAULT_PRIORITY: Priority = 3;
pub const DEFAULT_TTL_SECONDS: u32 = 3600;

/// One normalised incident event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentEvent {
    pub source: Source,
    pub correlation_id: CorrelationId,
    pub incident_type: IncidentType,
    pub routing_mode: RoutingMode,
    /// Ordered, without repeats.
    pub target_queue_ids: Vec<QueueId>,
    /// When the source says the event happened; orders events of one incident.
    pub timestamp: DateTime<Utc>,
    pub ttl_seconds: u32,
    pub priority: Priority,
    /// The emergency group a mapping rule chose; `None` lets the service map
    /// `incident_type` to a group by its own config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
}

impl IncidentEvent {
    /// The identity of the incident this event belongs to.
    pub fn incident_key(&self) -> IncidentKey {
        IncidentKey {
            source: self.source,
            id: self.correlation_id.clone(),
        }
    }

    /// The idempotency key: an activation and its resolution share a
    /// correlation id but are different events.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}:{}:{}",
            self.source,
            self.correlation_id,
            self.routing_mode.as_str()
        )
    }

    /// When the incident lapses if nothing else is heard.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.timestamp + chrono::Duration::seconds(i64::from(self.ttl_seconds))
    }
}

/// An incident's identity: its source and its id there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IncidentKey {
    pub source: Source,
    pub id: CorrelationId,
}

impl fmt::Display for IncidentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.id)
    }
}

/// What the intake filter puts on the shared queue for the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedEvent {
    pub event: IncidentEvent,
    /// Milliseconds since the UNIX epoch when the filter accepted it.
    pub received_ms: i64,
    /// The sender's delivery id, when the tool sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn correlation_id_accepts_the_documented_alphabet() {
        assert!(CorrelationId::parse("INC-2024-08-15-7742").is_ok());
        assert!(CorrelationId::parse("a.b_c:d-E9").is_ok());
        assert!(CorrelationId::parse(&"x".repeat(128)).is_ok());
        assert!(CorrelationId::parse("").is_err());
        assert!(CorrelationId::parse(&"x".repeat(129)).is_err());
        assert!(CorrelationId::parse("INC 1").is_err());
        assert!(CorrelationId::parse("INC/1").is_err());
        assert!(CorrelationId::parse("INCé").is_err());
    }

    #[test]
    fn incident_type_must_be_upper_snake_case() {
        for ok in ["CARRIER_OUTAGE", "A", "SIP_TRUNK_2", "X9"] {
            assert!(IncidentType::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "carrier_outage",
            "_A",
            "A_",
            "A__B",
            "9A",
            "A-B",
            &"A".repeat(65),
        ] {
            assert!(IncidentType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queue_ids_are_opaque_but_bounded() {
        assert!(QueueId::parse("queue-12345").is_ok());
        assert!(QueueId::parse("3c3f7a3e-2f5c-4f3a-9b1e-4a1c2b3d4e5f").is_ok());
        assert!(QueueId::parse("").is_err());
        assert!(QueueId::parse("   ").is_err());
        assert!(QueueId::parse("a\nb").is_err());
        assert!(QueueId::parse(&"q".repeat(129)).is_err());
    }

    #[test]
    fn routing_mode_round_trips_its_wire_names() {
        for m in [RoutingMode::Active, RoutingMode::Resolved] {
            assert_eq!(RoutingMode::parse(m.as_str()), Some(m));
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
        }
        assert_eq!(RoutingMode::parse("ACTIVE"), None);
    }

    #[test]
    fn source_names_match_route_segments() {
        for s in Source::ALL {
            assert_eq!(Source::from_path_segment(s.as_str()), Some(s));
        }
        assert_eq!(Source::from_path_segment("nagios"), None);
    }
}
