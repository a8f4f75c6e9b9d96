//! Incident sources: each tool's webhook payload, read into canonical
//! incident events.
//!
//! One module per tool reads its payload into [`Candidate`]s (id, verdict,
//! timestamp, facts); [`crate::mapping`] then applies the source's `modes`
//! and rules the same way for all. The canonical and Standard Webhooks routes
//! read the guide's contract ([`crate::contract`]) instead.
//!
//! | route | incident id | event time | delivery id |
//! | --- | --- | --- | --- |
//! | `pagerduty` | `event.data.id` | `event.occurred_at` | `x-webhook-id` |
//! | `servicenow` | `number` (else `sys_id`) | `sys_updated_on` (else now) | — |
//! | `jsm` | `issue.key` | `timestamp` (ms) | `x-atlassian-webhook-identifier` |
//! | `opsgenie` | `alert.alertId` (else `alias`) | `alert.updatedAt`/`createdAt` (else now) | — |
//! | `alertmanager` | each `alerts[].fingerprint` | `startsAt` / `endsAt` | — |
//! | `standard`, `canonical` | `correlationId` | `timestamp` | `webhook-id` |
//!
//! Authenticate first ([`crate::auth::CompiledAuth::verify`]), then [`parse`]. Event times more
//! than `max_future_skew_seconds` (default 300) ahead of `now` are refused
//! with a `422`: such an event would outrank every later one in the ledger.
//! Old event times are accepted from most tools (a long-firing alert's
//! `startsAt` may be days old), but not from PagerDuty and Jira: they sign
//! the body and no time, so a captured delivery would stay valid for ever;
//! past the replay window (`intake.replay_window_seconds`, 24 h) their
//! events are refused with a `422`, and within it the ledger remembers
//! what it closed (its tombstones), so a replay never reopens an incident.
//! The canonical contract has its own replay window. An Alertmanager
//! notification may carry at most `max_alerts` alerts (default 100).

mod alertmanager;
mod config;
pub mod ids;
mod jsm;
mod node;
mod opsgenie;
mod pagerduty;
mod servicenow;
mod standard;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

pub use crate::delivery::Delivery;
use crate::event::Source;
use crate::json::parse_strict;
pub use crate::mapping::Item;
use crate::mapping::{Candidate, Vocabulary};
use crate::problem::{FieldError, Problem};

pub use config::{
    CompiledSource, CompiledSources, SourceConfig, SourcesConfig, DEFAULT_MAX_ALERTS,
};

/// A parsed delivery: one item per incident it mentions, in payload order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub items: Vec<Item>,
    /// The sender's delivery id, for dedupe of redeliveries.
    pub delivery_id: Option<String>,
}

/// What a tool parser reads from a payload, before mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reading {
    Candidate(Candidate),
    /// Not about an incident at all (a PagerDuty ping, a Jira comment).
    Ignored {
        id: String,
        reason: String,
    },
}

/// Reads `delivery` for `source`: `400` when the body is not readable JSON,
/// `422` naming every missing or broken field. Authenticate first.
pub fn parse(source: Source, delivery: &Delivery, cfg: &CompiledSource) -> Result<Parsed, Problem> {
    let (read, delivery_header): (ReadFn, Option<&str>) = match source {
        Source::Canonical | Source::Standard => return standard::parse(source, delivery, cfg),
        Source::Pagerduty => (pagerduty::read, Some(pagerduty::DELIVERY_ID_HEADER)),
        Source::Servicenow => (servicenow::read, None),
        Source::Jsm => (jsm::read, Some(jsm::DELIVERY_ID_HEADER)),
        Source::Opsgenie => (opsgenie::read, None),
        Source::Alertmanager => (alertmanager::read, None),
        Source::Emr => {
            return Err(Problem::not_found(
                "emr-edge's own incidents take no deliveries",
            ))
        }
    };
    let value = parse_strict(delivery.body).map_err(|e| Problem::bad_request(e.to_string()))?;
    if !value.is_object() {
        return Err(Problem::unprocessable(vec![FieldError::new(
            "$",
            "must be a JSON object",
        )]));
    }
    let readings = read(&value, delivery.now).map_err(Problem::unprocessable)?;
    if readings.len() > cfg.max_items() {
        return Err(Problem::unprocessable(vec![FieldError::new(
            "alerts",
            format!(
                "holds {} alerts, more than the {} one notification may carry \
                 (sources.{source}.max_alerts); set max_alerts: {} in Alertmanager's webhook_config",
                readings.len(),
                cfg.max_items(),
                cfg.max_items()
            ),
        )]));
    }
    let mapping = cfg.mapping();
    let skew = Duration::seconds(i64::from(mapping.max_future_skew_seconds()));
    let too_late: Vec<FieldError> = readings
        .iter()
        .filter_map(|r| match r {
            Reading::Candidate(c) if c.timestamp > delivery.now + skew => Some(FieldError::new(
                c.timestamp_field.clone(),
                format!(
                    "is more than {} seconds in the future",
                    mapping.max_future_skew_seconds()
                ),
            )),
            _ => None,
        })
        .collect();
    if !too_late.is_empty() {
        return Err(Problem::unprocessable(too_late));
    }
    if matches!(source, Source::Pagerduty | Source::Jsm) {
        let window = cfg.contract().replay_window_seconds;
        let oldest = delivery.now - Duration::seconds(i64::from(window));
        let too_old: Vec<FieldError> = readings
            .iter()
            .filter_map(|r| match r {
                Reading::Candidate(c) if c.timestamp < oldest => Some(FieldError::new(
                    c.timestamp_field.clone(),
                    format!(
                        "is older than the replay window ({window} s, intake.replay_window_seconds): \
                         this tool signs no time, so an old delivery may be a captured replay"
                    ),
                )),
                _ => None,
            })
            .collect();
        if !too_old.is_empty() {
            return Err(Problem::unprocessable(too_old));
        }
    }
    let items = readings
        .into_iter()
        .map(|r| match r {
            Reading::Candidate(c) => mapping.map(c),
            Reading::Ignored { id, reason } => Item::Ignored { id, reason },
        })
        .collect();
    Ok(Parsed {
        items,
        delivery_id: delivery_header.and_then(|h| ids::delivery_id(delivery.header(h))),
    })
}

type ReadFn = fn(&Value, DateTime<Utc>) -> Result<Vec<Reading>, Vec<FieldError>>;

/// What each source's rules may match on.
pub fn vocabulary(source: Source) -> Vocabulary {
    match source {
        // Emr has no route and no rules; the contract's words are as good.
        Source::Canonical | Source::Standard | Source::Emr => standard::VOCABULARY,
        Source::Pagerduty => pagerduty::VOCABULARY,
        Source::Servicenow => servicenow::VOCABULARY,
        Source::Jsm => jsm::VOCABULARY,
        Source::Opsgenie => opsgenie::VOCABULARY,
        Source::Alertmanager => alertmanager::VOCABULARY,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn delivery_debug_hides_header_values() {
        let headers = vec![(
            "authorization".to_string(),
            "Bearer s3cr3t-value".to_string(),
        )];
        let d = Delivery {
            headers: &headers,
            body: b"{}",
            now: DateTime::from_timestamp(0, 0).unwrap(),
        };
        let shown = format!("{d:?}");
        assert!(shown.contains("authorization") && !shown.contains("s3cr3t"));
        assert_eq!(d.header("Authorization"), Some("Bearer s3cr3t-value"));
    }
}

/// Shared by the source modules' tests: compile one source from JSON config.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::event::IncidentEvent;

    pub(crate) fn compiled(source: Source, json: &str) -> CompiledSource {
        let cfg: SourceConfig = serde_json::from_str(json).unwrap();
        let mut all = SourcesConfig::default();
        *all.get_mut(source) = cfg;
        let env = |k: &str| match k {
            "SECRET" => Some("test-secret-0123456789abcdef".to_string()),
            "SECRET_NEXT" => Some("test-secret-next-0123456789".to_string()),
            "TOKEN" => Some("test-token-0123456789abcdef".to_string()),
            "WHSEC" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()),
            _ => None,
        };
        all.compile(&env).unwrap().get(source).clone()
    }

    pub(crate) fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
    }

    pub(crate) fn events(parsed: &Parsed) -> Vec<&IncidentEvent> {
        parsed
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Event(e) => Some(e),
                Item::Ignored { .. } => None,
            })
            .collect()
    }

    pub(crate) fn parse_with(
        source: Source,
        cfg: &CompiledSource,
        headers: &[(&str, &str)],
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Parsed, Problem> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let d = Delivery {
            headers: &headers,
            body,
            now,
        };
        cfg.auth().verify(source, &d)?;
        parse(source, &d, cfg)
    }
}
