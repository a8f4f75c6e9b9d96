//! Genesys's per-token rate limit: a fixed window (60 s by default) that starts with a token's
//! first request, `rate_limit_per_minute` requests allowed in it.
//!
//! Every authenticated answer reports the window through `inin-ratelimit-count`,
//! `inin-ratelimit-allowed` and `inin-ratelimit-reset`; the first request over the limit and
//! all later ones in the window get a 429 whose `Retry-After` is the time left in the window.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Windows are pruned once this many tokens are tracked, so a benchmark minting tokens cannot
/// grow the map without bound.
const PRUNE_ABOVE: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u32,
}

/// Per-token request windows.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    allowed: u32,
    length: Duration,
    windows: HashMap<String, Window>,
}

/// Where a token stands in its window after one more request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub count: u32,
    pub allowed: u32,
    /// Whole seconds until the window resets (at least 1).
    pub reset_secs: u64,
}

impl Usage {
    pub fn exceeded(&self) -> bool {
        self.count > self.allowed
    }
}

impl RateLimiter {
    pub fn new(allowed: u32, length: Duration) -> Self {
        Self {
            allowed,
            length,
            windows: HashMap::new(),
        }
    }

    /// Counts one request by `token` at `now`.
    pub fn hit(&mut self, token: &str, now: Instant) -> Usage {
        if self.windows.len() > PRUNE_ABOVE {
            let length = self.length;
            self.windows
                .retain(|_, window| now.saturating_duration_since(window.started) < length);
        }
        let window = self.windows.entry(token.to_owned()).or_insert(Window {
            started: now,
            count: 0,
        });
        if now.saturating_duration_since(window.started) >= self.length {
            *window = Window {
                started: now,
                count: 0,
            };
        }
        window.count = window.count.saturating_add(1);
        let left = self
            .length
            .saturating_sub(now.saturating_duration_since(window.started));
        let reset_secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Usage {
            count: window.count,
            allowed: self.allowed,
            reset_secs: reset_secs.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_allows_then_refuses_then_resets() {
        let mut limiter = RateLimiter::new(2, Duration::from_secs(60));
        let start = Instant::now();
        assert!(!limiter.hit("t", start).exceeded());
        assert!(!limiter.hit("t", start).exceeded());
        let over = limiter.hit("t", start + Duration::from_millis(17_500));
        assert!(over.exceeded());
        assert_eq!(over.reset_secs, 43);
        assert!(!limiter.hit("other", start).exceeded());
        let later = limiter.hit("t", start + Duration::from_secs(60));
        assert_eq!(later.count, 1);
        assert!(!later.exceeded());
    }
}
