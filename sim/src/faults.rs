//! Injected faults and outages: how tests make the simulated services misbehave.
//!
//! A [`Fault`] matches requests by method and path prefix and, for its next `count` matches (or
//! forever), delays them, answers them with a status of its own, or resets the connection
//! without answering. An outage answers every request (except the control API) with a reset or
//! a 503 until it ends — "Genesys is down for 30 s". Faults are checked in the order they were
//! added; the first one that matches applies.

use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::errors::ApiError;

/// A fault to inject. Build one with [`Fault::answer`], [`Fault::reset_connection`] or
/// [`Fault::delay`] and narrow it with the `on_*`/`times` methods, or send the same fields as
/// JSON to `POST /__sim/faults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fault {
    /// Only requests with this method (any when absent).
    pub method: Option<String>,
    /// Only requests whose path starts with this (any when absent).
    pub path_prefix: Option<String>,
    /// Answer with this status instead of the real handler.
    pub status: Option<u16>,
    /// The answer's JSON body; a Genesys error body for `status` when absent.
    pub body: Option<Value>,
    /// Wait this long first, then answer normally (or as `status`/`reset` say).
    pub delay_ms: Option<u64>,
    /// Run the real handler (the change is made, the request logged), then
    /// hold the answer this long: a write whose answer the caller gives up on.
    pub answer_delay_ms: Option<u64>,
    /// Close the connection without answering (a TCP reset).
    pub reset: bool,
    /// Apply to this many matching requests, then disappear (forever when absent).
    pub count: Option<u32>,
    /// Send `Retry-After` with this many seconds (defaults to 1 for a 429).
    pub retry_after: Option<u64>,
}

impl Fault {
    /// Answer matching requests with `status`.
    pub fn answer(status: u16) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    /// Reset the connection of matching requests.
    pub fn reset_connection() -> Self {
        Self {
            reset: true,
            ..Self::default()
        }
    }

    /// Delay matching requests, then answer them normally.
    pub fn delay(delay: Duration) -> Self {
        Self::default().after(delay)
    }

    /// Only requests with this method.
    pub fn on_method(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }

    /// Only requests whose path starts with `prefix`.
    pub fn on_path(mut self, prefix: &str) -> Self {
        self.path_prefix = Some(prefix.to_owned());
        self
    }

    /// Only the next `count` matching requests.
    pub fn times(mut self, count: u32) -> Self {
        self.count = Some(count);
        self
    }

    /// Make the change, then hold the answer for `delay` (see `answer_delay_ms`).
    pub fn answer_late(delay: Duration) -> Self {
        Self {
            answer_delay_ms: Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            ..Self::default()
        }
    }

    /// Wait `delay` before acting.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Answer this JSON body.
    pub fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Send `Retry-After: secs`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(status) = self.status {
            if !(200..=599).contains(&status) {
                return Err(format!("status {status} is not 200-599"));
            }
        }
        if self.status.is_none()
            && !self.reset
            && self.delay_ms.is_none()
            && self.answer_delay_ms.is_none()
        {
            return Err("a fault needs status, reset, delay_ms or answer_delay_ms".to_owned());
        }
        if self.answer_delay_ms.is_some() && (self.status.is_some() || self.reset) {
            return Err(
                "answer_delay_ms holds the real handler's answer: not with status or reset"
                    .to_owned(),
            );
        }
        if self.status.is_some() && self.reset {
            return Err("a fault cannot both answer a status and reset".to_owned());
        }
        if self.count == Some(0) {
            return Err("count must be at least 1 (leave it out for no limit)".to_owned());
        }
        Ok(())
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|wanted| wanted.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
    }

    /// How long to hold the real handler's answer.
    pub(crate) fn answer_delay(&self) -> Option<Duration> {
        self.answer_delay_ms.map(Duration::from_millis)
    }

    /// How long to wait before acting.
    pub(crate) fn pause(&self) -> Option<Duration> {
        self.delay_ms.map(Duration::from_millis)
    }

    /// The answer this fault gives instead of the handler's, if it gives one.
    pub(crate) fn response(&self) -> Option<Response> {
        let status = StatusCode::from_u16(self.status?).ok()?;
        let retry_after = self
            .retry_after
            .or((status == StatusCode::TOO_MANY_REQUESTS).then_some(1));
        let Some(body) = &self.body else {
            return Some(ApiError::for_status(status, retry_after).into_response());
        };
        let mut response = (status, Json(body.clone())).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        Some(response)
    }
}

/// An active fault, as `GET /__sim/faults` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEntry {
    pub id: u64,
    #[serde(flatten)]
    pub fault: Fault,
    /// Requests it has applied to so far.
    pub hits: u64,
}

/// The active faults, in the order they were added.
#[derive(Debug, Default)]
pub(crate) struct FaultList {
    next_id: u64,
    entries: Vec<FaultEntry>,
}

impl FaultList {
    pub fn add(&mut self, fault: Fault) -> Result<u64, String> {
        fault.validate()?;
        self.next_id += 1;
        self.entries.push(FaultEntry {
            id: self.next_id,
            fault,
            hits: 0,
        });
        Ok(self.next_id)
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.id != id);
        self.entries.len() != before
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn list(&self) -> Vec<FaultEntry> {
        self.entries.clone()
    }

    /// The first fault matching the request, counted as used (and dropped once used up).
    pub fn take(&mut self, method: &str, path: &str) -> Option<Fault> {
        let index = self
            .entries
            .iter()
            .position(|entry| entry.fault.matches(method, path))?;
        let entry = self.entries.get_mut(index)?;
        entry.hits += 1;
        let fault = entry.fault.clone();
        if let Some(count) = entry.fault.count.as_mut() {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.entries.remove(index);
            }
        }
        Some(fault)
    }
}

/// The longest outage one call can ask for (bounded so its deadline cannot overflow).
pub(crate) const MAX_OUTAGE: Duration = Duration::from_secs(86_400);

/// How an outage answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageMode {
    /// Reset every connection without answering.
    #[default]
    Reset,
    /// Answer 503 with the Genesys error body.
    #[serde(alias = "503")]
    Unavailable,
}

/// Every request is refused until `until`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outage {
    pub until: Instant,
    pub mode: OutageMode,
}

impl Outage {
    /// The mode, if the outage is still on at `now`.
    pub fn active(&self, now: Instant) -> Option<OutageMode> {
        (now < self.until).then_some(self.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_fault_is_used_up() {
        let mut faults = FaultList::default();
        faults
            .add(
                Fault::answer(503)
                    .on_method("put")
                    .on_path("/api/v2/")
                    .times(2),
            )
            .unwrap();
        assert!(faults.take("GET", "/api/v2/x").is_none());
        assert!(faults.take("PUT", "/oauth/token").is_none());
        assert!(faults.take("PUT", "/api/v2/x").is_some());
        assert!(faults.take("PUT", "/api/v2/x").is_some());
        assert!(faults.take("PUT", "/api/v2/x").is_none());
        assert!(faults.list().is_empty());
    }

    #[test]
    fn the_first_matching_fault_applies() {
        let mut faults = FaultList::default();
        let first = faults.add(Fault::reset_connection().on_path("/a")).unwrap();
        faults.add(Fault::answer(500)).unwrap();
        assert!(faults.take("GET", "/a/b").unwrap().reset);
        assert_eq!(faults.take("GET", "/b").unwrap().status, Some(500));
        assert!(faults.remove(first));
        assert_eq!(faults.take("GET", "/a").unwrap().status, Some(500));
        assert_eq!(faults.list().first().unwrap().hits, 2);
    }

    #[test]
    fn pointless_or_contradictory_faults_are_refused() {
        let mut faults = FaultList::default();
        assert!(faults.add(Fault::default()).is_err());
        assert!(faults.add(Fault::answer(42)).is_err());
        assert!(faults.add(Fault::answer(503).times(0)).is_err());
        let mut both = Fault::answer(503);
        both.reset = true;
        assert!(faults.add(both).is_err());
    }

    #[test]
    fn a_429_fault_says_when_to_retry() {
        let response = Fault::answer(429).response().unwrap();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let response = Fault::answer(503)
            .with_retry_after(5)
            .with_body(serde_json::json!({"x": 1}))
            .response()
            .unwrap();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }
}
