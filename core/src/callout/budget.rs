//! The request budget toward Genesys: a token bucket every call spends from.
//!
//! Genesys allows 300 requests a minute per token. The reconciler, the
//! watchdog and the recovery all draw from one bucket of `burst` calls that
//! refills at `per_minute`, so in any 60-second window at most
//! `burst + per_minute` calls go out, whatever the number of groups, events
//! or failures (the defaults, 20 + 120 = 140, stay under half the limit).
//!
//! The watchdog only starts a check while at least `reserve` calls are left,
//! so routine checks never take the calls an incident's transition needs.
//!
//! Pure: the caller passes `now`; the bucket counts thousandths of a call so
//! that slow refill rates still refill smoothly.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

const MILLI: i64 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    per_minute: u32,
    burst: u32,
    /// Thousandths of a call available at `at`.
    milli: i64,
    at: Option<DateTime<Utc>>,
    /// Calls taken since start, for the state view.
    spent: u64,
}

impl Budget {
    /// A full bucket.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            burst: burst.max(1),
            milli: i64::from(burst.max(1)) * MILLI,
            at: None,
            spent: 0,
        }
    }

    fn cap(&self) -> i64 {
        i64::from(self.burst) * MILLI
    }

    /// Thousandths of a call available at `now` (not stored).
    fn level(&self, now: DateTime<Utc>) -> i64 {
        let Some(at) = self.at else {
            return self.milli;
        };
        let elapsed = (now - at).num_milliseconds().max(0);
        // per_minute calls per 60 000 ms = per_minute / 60 milli-calls per ms.
        let gained = elapsed.saturating_mul(i64::from(self.per_minute)) / 60;
        self.milli.saturating_add(gained).min(self.cap())
    }

    /// Whole calls available at `now`.
    pub fn available(&self, now: DateTime<Utc>) -> u32 {
        u32::try_from(self.level(now) / MILLI).unwrap_or(0)
    }

    /// Spends one call if there is one.
    pub fn try_take(&mut self, now: DateTime<Utc>) -> bool {
        let level = self.level(now);
        // Never move the clock backwards: a late `now` must not refill twice.
        let at = self.at.map_or(now, |a| a.max(now));
        if level < MILLI {
            self.milli = level;
            self.at = Some(at);
            return false;
        }
        self.milli = level - MILLI;
        self.at = Some(at);
        self.spent += 1;
        true
    }

    /// When `calls` whole calls will be available (`None`: more than the
    /// bucket holds, never).
    pub fn ready_at(&self, now: DateTime<Utc>, calls: u32) -> Option<DateTime<Utc>> {
        if calls > self.burst {
            return None;
        }
        let need = i64::from(calls) * MILLI - self.level(now);
        if need <= 0 {
            return Some(now);
        }
        // Round up so the call is really there at that time.
        let per_minute = i64::from(self.per_minute);
        let ms = (need * 60 + per_minute - 1) / per_minute;
        Some(now + Duration::milliseconds(ms))
    }

    /// Most calls any 60-second window can hold.
    pub fn window_max(&self) -> u32 {
        self.burst.saturating_add(self.per_minute)
    }

    pub fn view(&self, now: DateTime<Utc>) -> Value {
        json!({
            "perMinute": self.per_minute,
            "burst": self.burst,
            "available": self.available(now),
            "spent": self.spent,
        })
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_723_731_721, 0).unwrap() + Duration::milliseconds(ms)
    }

    #[test]
    fn a_full_bucket_allows_a_burst_then_refills_at_the_rate() {
        let mut b = Budget::new(120, 3);
        assert_eq!(b.available(t(0)), 3);
        assert!(b.try_take(t(0)));
        assert!(b.try_take(t(0)));
        assert!(b.try_take(t(0)));
        assert!(!b.try_take(t(0)));
        // 120 a minute: one every 500 ms.
        assert_eq!(b.ready_at(t(0), 1), Some(t(500)));
        assert!(!b.try_take(t(499)));
        assert!(b.try_take(t(500)));
        assert_eq!(b.available(t(60_000)), 3, "never more than the burst");
        assert_eq!(b.ready_at(t(0), 4), None);
        assert_eq!(b.window_max(), 123);
    }

    #[test]
    fn no_window_of_a_minute_holds_more_than_burst_plus_rate() {
        let mut b = Budget::new(120, 20);
        let mut taken = Vec::new();
        // Try every 10 ms for three minutes.
        for ms in (0..180_000).step_by(10) {
            if b.try_take(t(ms)) {
                taken.push(ms);
            }
        }
        for (i, start) in taken.iter().enumerate() {
            let in_window = taken[i..]
                .iter()
                .take_while(|&&x| x < start + 60_000)
                .count();
            assert!(
                in_window <= 140,
                "{in_window} calls in a minute from {start}"
            );
        }
        // Steady state: the rate.
        let last_minute = taken.iter().filter(|&&x| x >= 120_000).count();
        assert!((119..=121).contains(&last_minute), "{last_minute}");
    }

    #[test]
    fn a_clock_going_backwards_does_not_refill() {
        let mut b = Budget::new(60, 1);
        assert!(b.try_take(t(10_000)));
        assert!(!b.try_take(t(5_000)));
        assert!(!b.try_take(t(10_999)));
        assert!(b.try_take(t(11_000)));
    }
}
