//! Timestamps in JSON, as chrono writes and reads them, without chrono's
//! general formatting machinery on the common path.
//!
//! Every queued event carries one timestamp and every published incident
//! five: chrono's `Serialize` goes through `fmt` and its `Deserialize`
//! through a general parser, which made dates most of the cost of
//! serialising an incident. The fast paths here cover UTC times in years
//! 0–9999 without a leap second — what the filter ever writes — and give
//! the same bytes (writing) and the same instant (reading) as chrono; any
//! other input goes to chrono, so what is accepted and refused is
//! unchanged (tests hold both to chrono).

use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, Timelike, Utc};
use serde::{de, Deserializer, Serializer};

/// The longest text [`format`] writes: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const MAX_LEN: usize = 30;

/// Writes `t` as chrono's `Serialize` does (RFC 3339, `Z`, 0/3/6/9
/// fractional digits); `None` when the fast path does not apply.
fn format(t: &DateTime<Utc>, buf: &mut [u8; MAX_LEN]) -> Option<usize> {
    let year = t.year();
    let nano = t.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return None;
    }
    let fraction = if nano == 0 {
        None
    } else if nano.is_multiple_of(1_000_000) {
        Some((3, nano / 1_000_000))
    } else if nano.is_multiple_of(1_000) {
        Some((6, nano / 1_000))
    } else {
        Some((9, nano))
    };
    let mut n = 0;
    let mut put = |byte: u8| -> Option<()> {
        *buf.get_mut(n)? = byte;
        n += 1;
        Some(())
    };
    let digits = |count: u32, value: u32, put: &mut dyn FnMut(u8) -> Option<()>| {
        (0..count).rev().try_for_each(|i| {
            // A decimal digit: fits a byte.
            put(b'0' + ((value / 10u32.pow(i)) % 10) as u8)
        })
    };
    digits(4, year.unsigned_abs(), &mut put)?;
    put(b'-')?;
    digits(2, t.month(), &mut put)?;
    put(b'-')?;
    digits(2, t.day(), &mut put)?;
    put(b'T')?;
    digits(2, t.hour(), &mut put)?;
    put(b':')?;
    digits(2, t.minute(), &mut put)?;
    put(b':')?;
    digits(2, t.second(), &mut put)?;
    if let Some((count, value)) = fraction {
        put(b'.')?;
        digits(count, value, &mut put)?;
    }
    put(b'Z')?;
    Some(n)
}

/// Reads the exact shape [`format`] writes (1–9 fractional digits
/// allowed); `None` for anything else, which chrono then reads.
fn parse_fast(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        b.get(from..from + len)?.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, min, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    // Leap seconds and the like are chrono's to judge.
    if sec > 59 {
        return None;
    }
    let rest = b.get(19..)?;
    let (nano, tail) = match rest.split_first() {
        Some((b'.', frac)) => {
            let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if !(1..=9).contains(&digits) {
                return None;
            }
            let value = num(20, digits)?;
            (value * 10u32.pow(9 - digits as u32), frac.get(digits..)?)
        }
        _ => (0, rest),
    };
    if tail != b"Z" {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    let time = NaiveTime::from_hms_nano_opt(hour, min, sec, nano)?;
    Some(date.and_time(time).and_utc())
}

/// The one format of every time emr-edge writes itself (audit lines, the
/// state and status views): RFC 3339 in UTC, with `Z` and milliseconds,
/// e.g. `2024-08-15T14:22:01.000Z`. (A time a sender gave is echoed by
/// [`serialize`], as precise as it came, also with `Z`.)
pub fn text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Every string in `v` that is a time but not in the one format emr-edge
/// writes — RFC 3339, UTC, `Z`, with 0, 3, 6 or 9 fraction digits, never
/// `+00:00` — as `path: value`. The tests hold every view and audit line to
/// it.
pub fn times_out_of_format(v: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, path: &str, bad: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) if DateTime::parse_from_rfc3339(s).is_ok() => {
                let ok = s.strip_suffix('Z').is_some_and(|m| {
                    let (main, frac) = m.split_once('.').unwrap_or((m, ""));
                    main.len() == 19
                        && [0, 3, 6, 9].contains(&frac.len())
                        && frac.bytes().all(|b| b.is_ascii_digit())
                });
                if !ok {
                    bad.push(format!("{path}: {s}"));
                }
            }
            serde_json::Value::Array(items) => {
                for (i, x) in items.iter().enumerate() {
                    walk(x, &format!("{path}[{i}]"), bad);
                }
            }
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    walk(x, &format!("{path}.{k}"), bad);
                }
            }
            _ => {}
        }
    }
    let mut bad = Vec::new();
    walk(v, "", &mut bad);
    bad
}

/// Reads a timestamp as chrono's `Deserialize` for `DateTime<Utc>` does.
pub fn parse(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match parse_fast(s) {
        Some(t) => Ok(t),
        None => s
            .parse::<DateTime<FixedOffset>>()
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// `#[serde(with = "crate::rfc3339")]` for a `DateTime<Utc>` field.
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match format(t, &mut buf)
        .and_then(|n| buf.get(..n))
        .and_then(|b| std::str::from_utf8(b).ok())
    {
        Some(text) => s.serialize_str(text),
        None => serde::Serialize::serialize(t, s),
    }
}

/// [`serialize`] for an optional time (with `skip_serializing_if`).
pub fn serialize_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => serialize(t, s),
        None => s.serialize_none(),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    d.deserialize_str(Visitor)
}

struct Visitor;

impl de::Visitor<'_> for Visitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an RFC 3339 formatted date and time string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    /// What chrono itself writes.
    fn chrono_json(t: &DateTime<Utc>) -> String {
        serde_json::to_string(t).unwrap()
    }

    fn ours_json(t: &DateTime<Utc>) -> String {
        let mut out = Vec::new();
        serialize(t, &mut serde_json::Serializer::new(&mut out)).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn ours_read(json: &str) -> Result<DateTime<Utc>, serde_json::Error> {
        deserialize(&mut serde_json::Deserializer::from_str(json))
    }

    #[test]
    fn one_format_is_z_with_whole_fractions() {
        let v = serde_json::json!({
            "ok": ["2024-08-15T14:22:01Z", "2024-08-15T14:22:01.000Z", "2024-08-15T14:22:01.123456789Z"],
            "bad": {"at": "2024-08-15T14:22:01+00:00", "n": "2024-08-15T14:22:01.1Z"},
            "not a time": "INC-1",
        });
        assert_eq!(
            super::times_out_of_format(&v),
            [
                ".bad.at: 2024-08-15T14:22:01+00:00",
                ".bad.n: 2024-08-15T14:22:01.1Z"
            ]
        );
    }

    #[test]
    fn writes_what_chrono_writes() {
        let base = DateTime::from_timestamp(1_723_731_721, 0).unwrap();
        for nanos in [
            0,
            1,
            999,
            1_000,
            120_000,
            1_000_000,
            329_000_000,
            999_999_999,
        ] {
            let t = base + chrono::Duration::nanoseconds(nanos);
            assert_eq!(ours_json(&t), chrono_json(&t), "{nanos}");
            assert_eq!(ours_read(&ours_json(&t)).unwrap(), t);
        }
        for t in [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            DateTime::from_timestamp(-62_167_219_200, 0).unwrap(), // year 0
            DateTime::from_timestamp(253_402_300_799, 0).unwrap(), // 9999-12-31T23:59:59
            DateTime::from_timestamp(253_402_300_800, 0).unwrap(), // year 10000
            DateTime::from_timestamp(59, 1_500_000_000).unwrap(),  // a leap second
        ] {
            assert_eq!(ours_json(&t), chrono_json(&t), "{t:?}");
        }
    }

    #[test]
    fn reads_what_chrono_reads() {
        for text in [
            "2024-08-15T14:22:01Z",
            "2024-08-15T14:22:01.5Z",
            "2024-08-15T14:22:01.123456789Z",
            "2024-08-15T14:22:01.1234567891Z",
            "2024-08-15t14:22:01z",
            "2024-08-15 14:22:01Z",
            "2024-08-15T14:22:01+02:00",
            "2024-08-15T14:22:01-00:30",
            "2016-12-31T23:59:60Z",
            "2024-02-30T14:22:01Z",
            "2024-08-15T24:00:00Z",
            "2024-08-15T14:22:01.Z",
            "2024-08-15T14:22:01",
            "+12024-08-15T14:22:01Z",
            "2024-8-15T14:22:01Z",
            "",
            "nonsense",
        ] {
            let json = format!("\"{text}\"");
            let chrono: Result<DateTime<Utc>, _> = serde_json::from_str(&json);
            let ours = ours_read(&json);
            assert_eq!(ours.ok(), chrono.ok(), "{text}");
        }
        assert!(ours_read("12").is_err());
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any instant chrono can hold is written as chrono writes it, and
        /// read back to itself.
        #[test]
        fn round_trips_like_chrono(secs in -62_167_219_200i64..253_402_300_800, nanos in prop_oneof![
            Just(0u32), (0u32..1000).prop_map(|m| m * 1_000_000), (0u32..1_000_000).prop_map(|u| u * 1000), 0u32..1_000_000_000
        ]) {
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            let mut out = Vec::new();
            serialize(&t, &mut serde_json::Serializer::new(&mut out)).unwrap();
            prop_assert_eq!(&out, &serde_json::to_vec(&t).unwrap());
            let back = deserialize(&mut serde_json::Deserializer::from_slice(&out)).unwrap();
            prop_assert_eq!(back, t);
        }

        /// Whatever the text, the fast path reads only what chrono reads,
        /// as the same instant.
        #[test]
        fn reads_only_what_chrono_reads(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,11})?([Zz]|[+-][0-9]{2}:[0-9]{2})?") {
            let chrono = text.parse::<DateTime<FixedOffset>>().ok().map(|t| t.with_timezone(&Utc));
            prop_assert_eq!(parse(&text).ok(), chrono);
            if let Some(fast) = parse_fast(&text) {
                prop_assert_eq!(Some(fast), chrono);
            }
        }
    }
}
