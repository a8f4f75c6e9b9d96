//! Wall-clock formats the simulated services answer with.
//!
//! Deadlines (token expiry, rate-limit windows, outages, propagation delays) use
//! [`std::time::Instant`] so they are immune to clock steps; only timestamps that appear in
//! answers or in the request log are wall-clock values, made here.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the UNIX epoch, as the request log records them.
pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// ISO 8601 with milliseconds and a `Z`, as Genesys writes `dateModified`
/// (e.g. `2024-08-15T14:22:01.123Z`).
pub(crate) fn iso_millis(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn formats_like_genesys() {
        let at = UNIX_EPOCH + Duration::from_millis(1_723_731_721_123);
        assert_eq!(iso_millis(at), "2024-08-15T14:22:01.123Z");
        assert_eq!(unix_ms(at), 1_723_731_721_123);
    }
}
