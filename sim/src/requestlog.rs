//! The request log: what reached the simulated services, when, and what they answered.
//!
//! Tests assert on it ("exactly one PUT", "no call before `Retry-After`"), so each record has
//! the receive time in milliseconds and the answer's status — or `reset` when the connection
//! was cut. Control-API requests are not logged. The log is bounded: the oldest records go first.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bodies are kept up to this size; longer ones are cut (and kept as text).
const BODY_LIMIT: usize = 64 * 1024;

/// One request and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Arrival order.
    pub seq: u64,
    pub method: String,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// The answer's status; absent when the connection was reset.
    pub status: Option<u16>,
    /// The connection was closed without an answer.
    pub reset: bool,
    /// An injected fault or an outage decided the outcome.
    pub injected: bool,
    /// When the request arrived, in milliseconds since the UNIX epoch.
    pub received_ms: u64,
    /// How long the answer took, in milliseconds (injected delays included).
    pub duration_ms: u64,
    /// The OAuth client, when the request authenticated (or obtained a token).
    pub client_id: Option<String>,
    /// The answer's `ININ-Correlation-Id`.
    pub correlation_id: Option<String>,
    /// The body of a write (POST, PUT, PATCH, DELETE): JSON when it parses, else text.
    pub body: Option<Value>,
    /// The scheme of the `Authorization` header (`Bearer`, `Basic`, PagerDuty's `Token`), never
    /// the credential: tests check how a caller authenticates without the log holding secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_scheme: Option<String>,
}

/// The scheme word of an `Authorization` value (at most 16 characters).
pub(crate) fn auth_scheme(value: &str) -> Option<String> {
    let scheme = value.split_whitespace().next()?;
    (scheme.len() <= 16 && scheme.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| scheme.to_owned())
}

/// Turns a request body into what the log keeps.
pub(crate) fn loggable_body(method: &str, body: &[u8]) -> Option<Value> {
    let is_write = matches!(method, "POST" | "PUT" | "PATCH" | "DELETE");
    if !is_write || body.is_empty() {
        return None;
    }
    if body.len() <= BODY_LIMIT {
        if let Ok(json) = serde_json::from_slice(body) {
            return Some(json);
        }
    }
    let kept = body.get(..BODY_LIMIT).unwrap_or(body);
    Some(Value::String(String::from_utf8_lossy(kept).into_owned()))
}

/// The bounded log.
#[derive(Debug)]
pub(crate) struct RequestLog {
    capacity: usize,
    records: VecDeque<RequestRecord>,
}

impl RequestLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            records: VecDeque::new(),
        }
    }

    pub fn push(&mut self, record: RequestRecord) {
        while self.records.len() >= self.capacity {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    /// All records in arrival order (a delayed request is logged when it is answered, so the
    /// log is sorted here).
    pub fn records(&self) -> Vec<RequestRecord> {
        let mut records: Vec<RequestRecord> = self.records.iter().cloned().collect();
        records.sort_by_key(|record| record.seq);
        records
    }

    pub fn clear(&mut self) {
        self.records.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> RequestRecord {
        RequestRecord {
            seq,
            method: "GET".to_owned(),
            path: "/".to_owned(),
            query: None,
            status: Some(200),
            reset: false,
            injected: false,
            received_ms: 0,
            duration_ms: 0,
            client_id: None,
            correlation_id: None,
            body: None,
            auth_scheme: None,
        }
    }

    #[test]
    fn only_the_scheme_of_a_credential_is_kept() {
        assert_eq!(auth_scheme("Token token=s3cr3t").as_deref(), Some("Token"));
        assert_eq!(auth_scheme("Basic ZW1yOnB3").as_deref(), Some("Basic"));
        assert_eq!(auth_scheme("s3cr3t=").as_deref(), None);
        assert_eq!(auth_scheme(""), None);
    }

    #[test]
    fn the_log_is_bounded_and_in_arrival_order() {
        let mut log = RequestLog::new(2);
        log.push(record(2));
        log.push(record(1));
        log.push(record(3));
        let seqs: Vec<u64> = log.records().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 3]);
    }

    #[test]
    fn only_write_bodies_are_kept() {
        assert_eq!(loggable_body("GET", b"{}"), None);
        assert_eq!(
            loggable_body("PUT", br#"{"a":1}"#),
            Some(serde_json::json!({"a": 1}))
        );
        assert_eq!(
            loggable_body("POST", b"grant_type=client_credentials"),
            Some(Value::String("grant_type=client_credentials".to_owned()))
        );
    }
}
