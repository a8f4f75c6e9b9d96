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
    /// emr-edge itself: the synthetic incidents it makes (an adopted
    /// group's, `crate::recovery::adopted_key`). No route has this name, so
    /// no sender can address them: a canonical event with the same id is
    /// another incident.
    Emr,
}

impl Source {
    /// Every source an intake route takes, in route order. [`Source::Emr`]
    /// is not among them.
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
            Source::Emr => "emr",
        }
    }

    /// The tool's name as a person writes it, for text a person reads.
    pub fn label(self) -> &'static str {
        match self {
            Source::Canonical => "canonical",
            Source::Pagerduty => "PagerDuty",
            Source::Servicenow => "ServiceNow",
            Source::Jsm => "Jira",
            Source::Opsgenie => "Opsgenie",
            Source::Alertmanager => "Alertmanager",
            Source::Standard => "Standard Webhooks",
            Source::Emr => "emr-edge",
        }
    }

    /// Every source, [`Source::Emr`] included.
    pub const ANY: [Source; 8] = [
        Source::Canonical,
        Source::Pagerduty,
        Source::Servicenow,
        Source::Jsm,
        Source::Opsgenie,
        Source::Alertmanager,
        Source::Standard,
        Source::Emr,
    ];

    /// Any source by its name, [`Source::Emr`] included (a status lookup
    /// may ask for emr-edge's own incidents).
    pub fn from_name(s: &str) -> Option<Source> {
        Source::ANY.into_iter().find(|src| src.as_str() == s)
    }

    /// The route source named by a path segment; never [`Source::Emr`].
    pub fn from_path_segment(s: &str) -> Option<Source> {
        Source::from_name(s).filter(|src| *src != Source::Emr)
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
                // Checked where the deserializer holds the text, then copied
                // once (or taken, when it hands over a `String`): the
                // service decodes five of these per queued event.
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        $name::parse(s).map_err(|e| E::custom(e.0))
                    }
                    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<$name, E> {
                        $check(&s).map(|()| $name(s)).map_err(|e| E::custom(e.0))
                    }
                }
                d.deserialize_string(Visitor)
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

/// Genesys ids are UUIDs; other drivers' ids are names of the same kind. The
/// alphabet is narrow on purpose: ids are joined with `,` into the data-table
/// row (a `,` would split one id in two for a flow), put into URL paths, and
/// shown to people (bidi and line-separator characters would disguise them).
fn check_opaque_id(s: &str) -> Result<(), InvalidId> {
    if s.is_empty() {
        return Err(InvalidId("must not be empty"));
    }
    if s.len() > QUEUE_ID_MAX {
        return Err(InvalidId("must be at most 128 characters"));
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
    /// A Genesys queue id, kept opaque: 1–128 of `[A-Za-z0-9._:-]`.
    QueueId,
    check_opaque_id
);
validated_string!(
    /// A Genesys emergency group id, kept opaque: 1–128 of `[A-Za-z0-9._:-]`.
    GroupId,
    check_opaque_id
);

/// What counts as an emergency group's id, said wherever the config gives
/// one that is not.
pub const GROUP_ID_HINT: &str = "give the emergency group's id, not its name: Genesys ids are \
     UUIDs such as 3c3f7a3e-2f5c-4f3a-9b1e-000000000001 \
     (GET /api/v2/architect/emergencygroups?name=… lists a group's id); \
     a name such as \"Voice Outage\" is not an id";

impl GroupId {
    /// A group id written in the config: the same rule as [`GroupId::parse`],
    /// refused with a message that says what is wrong with this value and
    /// what counts ([`GROUP_ID_HINT`]). Ids are not required to be UUIDs:
    /// the simulator and the guide-contract driver use other ids, and whether
    /// a group exists is Genesys's to say at start.
    pub fn from_config(s: &str) -> Result<GroupId, String> {
        GroupId::parse(s).map_err(|_| {
            format!(
                "{} is not an emergency group id ({}); {GROUP_ID_HINT}",
                crate::text::quoted(s),
                not_an_id_because(s)
            )
        })
    }
}

/// Why `s` is not an id of the `[A-Za-z0-9._:-]` alphabet, in words.
pub fn not_an_id_because(s: &str) -> &'static str {
    if s.trim().is_empty() {
        "it is empty"
    } else if s.chars().any(char::is_whitespace) {
        "it holds a space, as a name does"
    } else if s.len() > GROUP_ID_MAX {
        "it is longer than 128 characters"
    } else {
        "ids hold only A-Z, a-z, 0-9, '.', '_', ':' and '-'"
    }
}

/// An incident's priority; 1 is the most urgent. Orders queue lists when
/// several incidents drive one group.
pub type Priority = u8;
pub const DEFAULT_PRIORITY: Priority = 3;
pub const DEFAULT_TTL_SECONDS: u32 = 3600;

/// What a person reads about an incident when its tool sent it (PagerDuty's
/// title and link, an alert's summary…): shown on `/emr/state` and
/// `/emr/status/{id}`, never matched or acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct About {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// An `http(s)` URL, or nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// Characters of an [`About`] title at most.
pub const TITLE_MAX: usize = 200;
/// Characters of an [`About`] link at most; a longer one is dropped.
pub const LINK_MAX: usize = 512;

impl About {
    /// From what the tool sent; `None` when it sent nothing usable. A link
    /// that is not a plain `http(s)` URL is dropped, not shown.
    pub fn new(title: Option<&str>, link: Option<&str>) -> Option<About> {
        let title = title
            .map(|t| crate::text::shown(t, TITLE_MAX))
            .filter(|t| !t.is_empty());
        let link = link.map(str::trim).filter(|l| {
            (l.starts_with("https://") || l.starts_with("http://"))
                && l.len() <= LINK_MAX
                && l.bytes().all(|b| b.is_ascii_graphic())
        });
        (title.is_some() || link.is_some()).then(|| About {
            title,
            link: link.map(str::to_owned),
        })
    }
}

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
    #[serde(with = "crate::rfc3339")]
    pub timestamp: DateTime<Utc>,
    pub ttl_seconds: u32,
    pub priority: Priority,
    /// The emergency group a mapping rule chose; `None` lets the service map
    /// `incident_type` to a group by its own config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// Why the event has this mode when the source did not say so itself:
    /// an update that no mapping rule matches any more releases the
    /// incident (`crate::mapping`). Shown on the incident's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Its title and link, when the tool sent them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<About>,
}

impl IncidentEvent {
    /// The identity of the incident this event belongs to.
    pub fn incident_key(&self) -> IncidentKey {
        IncidentKey {
            source: self.source,
            id: self.correlation_id.clone(),
        }
    }

    /// The event's dedupe key; see [`idempotency_key`].
    pub fn idempotency_key(&self) -> String {
        idempotency_key(
            self.source,
            self.correlation_id.as_str(),
            self.routing_mode,
            self.timestamp,
        )
    }

    /// When the incident lapses if nothing else is heard.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.timestamp + chrono::Duration::seconds(i64::from(self.ttl_seconds))
    }
}

// Dedupe keys. Every key the intake records is built here, so the rules
// live in one place (docs/sources.md repeats them for operators):
//
// - event, canonical and Standard Webhooks routes: `source:id:mode`. The
//   sender chose the id for this event, so the same key with a different
//   payload is a mistake worth a 409, as the contract says.
// - event, tool routes: `source:id:mode:timestamp_ms`. Tools send several
//   events for one incident in one mode (PagerDuty reopened, ServiceNow state
//   changes, Jira edits), each with its own event time: a redelivery of one
//   event is a replay, a genuinely new event is new.
// - delivery: `source#delivery#<delivery id>`, when the tool sends one.
// - ignored item: `source#ignored#<id>#<digest of the body>`: the same
//   delivery again is a replay; another delivery about the same id is not.
//
// Correlation ids never hold `#` and source names never hold `:`, so the
// three families cannot collide.

/// Whether a route's sender chooses the event identity itself (the
/// canonical contract) rather than a tool whose events we key by time.
pub fn sender_keyed(source: Source) -> bool {
    matches!(source, Source::Canonical | Source::Standard)
}

/// The dedupe key of an incident event (see the comment above).
pub fn idempotency_key(
    source: Source,
    id: &str,
    mode: RoutingMode,
    timestamp: DateTime<Utc>,
) -> String {
    if sender_keyed(source) {
        format!("{source}:{id}:{}", mode.as_str())
    } else {
        format!(
            "{source}:{id}:{}:{}",
            mode.as_str(),
            timestamp.timestamp_millis()
        )
    }
}

/// The dedupe key of a delivery id the sender put in a header.
pub fn delivery_key(source: Source, delivery_id: &str) -> String {
    format!("{source}#delivery#{delivery_id}")
}

/// The dedupe key of an ignored item; `body_digest` is the hex digest of
/// the delivery's raw body.
pub fn ignored_key(source: Source, id: &str, body_digest: &str) -> String {
    format!("{source}#ignored#{id}#{body_digest}")
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
    /// The intake took one of its source's open-incident slots for this
    /// event (`crate::quota`): the service gives it back once recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub slot: bool,
}

/// An instruction from the intake to the service, on the same queue as the
/// events (the filter cannot call Genesys itself). Serialised as
/// `{"control": {"resume": {"group": "…", "receivedMs": …}}}`, which no
/// [`QueuedEvent`] can be mistaken for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlMessage {
    pub control: Control,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Control {
    /// `POST /emr/groups/{id}/resume`: stop holding the group for a person's
    /// change and drive it to what the incidents want.
    #[serde(rename_all = "camelCase")]
    Resume { group: GroupId, received_ms: i64 },
    /// An activation arrived again (a replay: Alertmanager re-sends a firing
    /// alert every `repeat_interval`): the tool still says the incident is
    /// open, so its ttl runs again from now (`Ledger::renew`).
    #[serde(rename_all = "camelCase")]
    Renew {
        incident: IncidentKey,
        received_ms: i64,
    },
    /// Cluster mode: how the leader's reconcile of `group` ended, for every
    /// replica's ledger: the events it settled (each incident and its
    /// event's receipt time, ms), the reason when it failed, and what
    /// Genesys answered (`crate::genesys::answer::GenesysRef`, as JSON).
    #[serde(rename_all = "camelCase")]
    Settled {
        group: GroupId,
        events: Vec<(IncidentKey, i64)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        genesys: Option<serde_json::Value>,
    },
    /// Cluster mode: what the leader's status poll of the incident's tool
    /// found, for every replica's ledger, as of `atMs`: resolved (what the
    /// tool said), or still open, its expiry moved to at least
    /// `renewSeconds` on.
    #[serde(rename_all = "camelCase")]
    Polled {
        incident: IncidentKey,
        at_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resolved: Option<String>,
        #[serde(default)]
        renew_seconds: i64,
    },
}

/// What the service takes off the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueMessage {
    Event(QueuedEvent),
    Control(Control),
}

impl QueueMessage {
    /// Reads a queued message: an event (by far the most common, tried
    /// first), else a control message. The error is the event's, which is
    /// what a broken message most likely meant to be.
    pub fn decode(bytes: &[u8]) -> Result<QueueMessage, serde_json::Error> {
        match serde_json::from_slice::<QueuedEvent>(bytes) {
            Ok(e) => Ok(QueueMessage::Event(e)),
            Err(e) => serde_json::from_slice::<ControlMessage>(bytes)
                .map(|c| QueueMessage::Control(c.control))
                .map_err(|_| e),
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn about_keeps_a_bounded_title_and_only_a_plain_web_link() {
        let a = About::new(Some("  Trunk\u{7} down é "), Some("https://x.example/i/1")).unwrap();
        assert_eq!(a.title.as_deref(), Some("Trunk down é"));
        assert_eq!(a.link.as_deref(), Some("https://x.example/i/1"));
        let long = "t".repeat(TITLE_MAX + 50);
        assert_eq!(
            About::new(Some(&long), None).unwrap().title.unwrap().len(),
            TITLE_MAX
        );
        for bad in ["javascript:alert(1)", "https://x y", "ftp://x"] {
            assert_eq!(About::new(None, Some(bad)), None, "{bad}");
        }
        assert_eq!(About::new(Some("   "), None), None);
    }

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
        assert!(QueueId::parse(&"q".repeat(128)).is_ok());
        assert!(QueueId::parse("").is_err());
        assert!(QueueId::parse("   ").is_err());
        assert!(QueueId::parse("a\nb").is_err());
        assert!(QueueId::parse(&"q".repeat(129)).is_err());
        // One id must stay one entry of the row's comma-joined list, and
        // look like what it is.
        for bad in [
            "q,evil",
            "q evil",
            "q\u{202e}live",
            "q\u{2028}x",
            "q/x",
            "q%2C",
        ] {
            assert!(QueueId::parse(bad).is_err(), "{bad:?}");
            assert!(GroupId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_group_id_in_the_config_is_refused_saying_what_counts() {
        assert!(GroupId::from_config("3c3f7a3e-2f5c-4f3a-9b1e-000000000001").is_ok());
        // Not a UUID, but an id: the simulator's and the guide driver's.
        assert!(GroupId::from_config("eg-voice").is_ok());
        let e = GroupId::from_config("Voice Outage").unwrap_err();
        assert!(
            e.starts_with("\"Voice Outage\" is not an emergency group id (it holds a space, as a name does); give the emergency group's id, not its name: Genesys ids are UUIDs such as 3c3f7a3e-"),
            "{e}"
        );
        assert!(
            e.ends_with("a name such as \"Voice Outage\" is not an id"),
            "{e}"
        );
        assert!(GroupId::from_config("")
            .unwrap_err()
            .starts_with("\"\" is not an emergency group id (it is empty)"));
        assert!(GroupId::from_config("<emergency group id>")
            .unwrap_err()
            .contains("(it holds a space"));
        assert!(GroupId::from_config("<group>")
            .unwrap_err()
            .contains("(ids hold only A-Z"));
        assert!(GroupId::from_config(&"g".repeat(129))
            .unwrap_err()
            .contains("longer than 128"));
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
    fn dedupe_keys_follow_the_documented_rules() {
        let t = DateTime::from_timestamp_millis(1_723_731_721_329).unwrap();
        assert_eq!(
            idempotency_key(Source::Canonical, "INC-1", RoutingMode::Active, t),
            "canonical:INC-1:EMERGENCY_ACTIVE"
        );
        assert_eq!(
            idempotency_key(Source::Standard, "INC-1", RoutingMode::Resolved, t),
            "standard:INC-1:EMERGENCY_RESOLVED"
        );
        assert_eq!(
            idempotency_key(Source::Pagerduty, "Q2UEJOMV3XYQ9N", RoutingMode::Active, t),
            "pagerduty:Q2UEJOMV3XYQ9N:EMERGENCY_ACTIVE:1723731721329"
        );
        assert_eq!(delivery_key(Source::Jsm, "a1b2"), "jsm#delivery#a1b2");
        assert_eq!(
            ignored_key(Source::Opsgenie, "x", "00ff"),
            "opsgenie#ignored#x#00ff"
        );
    }

    #[test]
    fn control_messages_share_the_queue_with_events() {
        let c = ControlMessage {
            control: Control::Resume {
                group: GroupId::parse("G1").unwrap(),
                received_ms: 7,
            },
        };
        let bytes = serde_json::to_vec(&c).unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"control":{"resume":{"group":"G1","receivedMs":7}}}"#
        );
        assert_eq!(
            QueueMessage::decode(&bytes).unwrap(),
            QueueMessage::Control(c.control)
        );
        let ev = QueuedEvent {
            event: IncidentEvent {
                source: Source::Canonical,
                correlation_id: CorrelationId::parse("INC-1").unwrap(),
                incident_type: IncidentType::parse("X").unwrap(),
                routing_mode: RoutingMode::Active,
                target_queue_ids: vec![],
                timestamp: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                ttl_seconds: 60,
                priority: 3,
                group: None,
                detail: None,
                about: None,
            },
            received_ms: 1,
            delivery_id: None,
            slot: false,
        };
        let bytes = serde_json::to_vec(&ev).unwrap();
        assert_eq!(
            QueueMessage::decode(&bytes).unwrap(),
            QueueMessage::Event(ev)
        );
        assert!(QueueMessage::decode(br#"{"event": 1}"#).is_err());
        assert!(QueueMessage::decode(br#"{"control":{"explode":{}}}"#).is_err());
        assert!(QueueMessage::decode(br#"{"control":{"resume":{"group":""}}}"#).is_err());
    }

    #[test]
    fn source_names_match_route_segments() {
        for s in Source::ALL {
            assert_eq!(Source::from_path_segment(s.as_str()), Some(s));
        }
        assert_eq!(Source::from_path_segment("nagios"), None);
        // emr-edge's own synthetic incidents have no route.
        assert!(!Source::ALL.contains(&Source::Emr));
        assert_eq!(Source::from_path_segment(Source::Emr.as_str()), None);
    }
}
