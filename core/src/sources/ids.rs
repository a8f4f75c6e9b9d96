//! Turning a tool's ids and times into ours.
//!
//! **Correlation ids.** A source id that is already a valid [`CorrelationId`]
//! (1–128 of `[A-Za-z0-9._:-]`, as PagerDuty `PT4KHLK`, ServiceNow
//! `INC0010023`, Jira `ITSM-42`, Opsgenie alert ids and Alertmanager
//! fingerprints are) is kept as it is, so operators can look it up by the id
//! they know. Any other id — an Opsgenie alias with spaces, an id longer than
//! 128 — becomes `sha256:` followed by the first 32 hex digits (128 bits) of
//! the SHA-256 of its UTF-8 bytes: deterministic, so an activation and its
//! resolution still meet, and free of characters that could break a log line
//! or a URL.
//!
//! **Delivery ids** are kept only when 1–200 visible ASCII characters.

use chrono::{DateTime, NaiveDateTime, Utc};
use sha2::{Digest, Sha256};

use super::node::Node;
use crate::auth::hex;
use crate::event::CorrelationId;
use crate::problem::FieldError;

/// Prefix of hashed correlation ids.
pub const HASHED_PREFIX: &str = "sha256:";

/// The correlation id for source id `raw` (see the module doc).
pub fn correlation_id(raw: &str) -> Option<CorrelationId> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    CorrelationId::parse(raw).ok().or_else(|| {
        let digest = Sha256::digest(raw.as_bytes());
        let short: Vec<u8> = digest.iter().take(16).copied().collect();
        CorrelationId::parse(&format!("{HASHED_PREFIX}{}", hex::encode(&short))).ok()
    })
}

/// Reads the id at `node` (required) and maps it with [`correlation_id`].
pub(crate) fn id_at(node: &Node<'_>, errors: &mut Vec<FieldError>) -> Option<CorrelationId> {
    let raw = node.str_req(errors)?;
    let id = correlation_id(raw);
    if id.is_none() {
        errors.push(node.error("is not a usable id"));
    }
    id
}

/// A delivery id header value, when it is 1–200 visible ASCII characters.
pub(crate) fn delivery_id(value: Option<&str>) -> Option<String> {
    let v = value?.trim();
    (!v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| v.to_owned())
}

/// An RFC 3339 date-time with an offset.
pub(crate) fn rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// ServiceNow's `YYYY-MM-DD HH:MM:SS` (UTC, as `getValue()` gives it), or RFC 3339.
pub(crate) fn servicenow_time(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc())
        .or_else(|| rfc3339(s))
}

/// A UNIX time in seconds, milliseconds, microseconds or nanoseconds, told
/// apart by magnitude (Jira sends ms; Opsgenie `createdAt` ms, `updatedAt` ns).
/// Any real time after 2001 is unambiguous this way.
pub(crate) fn epoch(n: i64) -> Option<DateTime<Utc>> {
    if n <= 0 {
        return None;
    }
    let (secs, nanos) = if n >= 100_000_000_000_000_000 {
        (n / 1_000_000_000, n % 1_000_000_000)
    } else if n >= 100_000_000_000_000 {
        (n / 1_000_000, (n % 1_000_000) * 1_000)
    } else if n >= 100_000_000_000 {
        (n / 1_000, (n % 1_000) * 1_000_000)
    } else {
        (n, 0)
    };
    DateTime::from_timestamp(secs, u32::try_from(nanos).ok()?)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn valid_ids_are_kept_and_others_hashed_deterministically() {
        for id in ["PT4KHLK", "INC0010023", "ITSM-42", "c4a1f0b27e3f9d11"] {
            assert_eq!(correlation_id(id).unwrap().as_str(), id);
        }
        let group_key = r#"{}:{alertname="SipTrunkDown"}"#;
        let a = correlation_id(group_key).unwrap();
        assert_eq!(a, correlation_id(group_key).unwrap());
        assert!(a.as_str().starts_with(HASHED_PREFIX));
        assert_eq!(a.as_str().len(), HASHED_PREFIX.len() + 32);
        assert_ne!(a, correlation_id("payment gateway down").unwrap());
        assert!(correlation_id(&"x".repeat(129))
            .unwrap()
            .as_str()
            .starts_with("sha256:"));
        assert_eq!(correlation_id("   "), None);
    }

    #[test]
    fn delivery_ids_must_be_visible_ascii() {
        assert_eq!(delivery_id(Some(" 2a9f ")).as_deref(), Some("2a9f"));
        assert_eq!(delivery_id(Some("a b")), None);
        assert_eq!(delivery_id(Some("")), None);
        assert_eq!(delivery_id(Some(&"x".repeat(201))), None);
        assert_eq!(delivery_id(None), None);
    }

    #[test]
    fn times_in_each_source_format() {
        let t = DateTime::parse_from_rfc3339("2024-08-15T14:22:01Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(rfc3339("2024-08-15T16:22:01+02:00"), Some(t));
        assert_eq!(servicenow_time("2024-08-15 14:22:01"), Some(t));
        assert_eq!(servicenow_time("2024-08-15T14:22:01Z"), Some(t));
        assert_eq!(servicenow_time("15/08/2024"), None);
        assert_eq!(epoch(1_723_731_721), Some(t));
        assert_eq!(epoch(1_723_731_721_000), Some(t));
        assert_eq!(epoch(1_723_731_721_000_000), Some(t));
        assert_eq!(epoch(1_723_731_721_000_000_000), Some(t));
        assert_eq!(
            epoch(1_723_731_721_250).map(|d| d.timestamp_subsec_millis()),
            Some(250)
        );
        assert_eq!(epoch(0), None);
        assert_eq!(epoch(-5), None);
    }
}
