//! An HTTP answer from Genesys, sorted into the classes docs/genesys.md's answer table acts on.
//!
//! The class decides what the reconciler does next; the rest (correlation id,
//! `Retry-After`, rate-limit headers, Genesys's error code and message) is
//! what the audit line, the status endpoint and the failure reason show.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::models::{ErrorBody, OAuthErrorBody};
use super::CallResult;
use crate::callout::{header, parse_retry_after};

/// What Genesys answered when it last acted for an incident: kept on the
/// incident (`crate::ledger`) and shown on its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GenesysRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_modified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

/// What an answer means for the operation that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerClass {
    /// 2xx.
    Success,
    /// 401: the token expired or was revoked — refresh once, retry once.
    Unauthorized,
    /// 403: a missing permission. Failed, no retry.
    Forbidden,
    /// 404: a wrong group or table id. Failed, no retry.
    NotFound,
    /// 409, or 400 "does not match the current version": read again.
    VersionConflict,
    /// 429: wait `Retry-After`, then reconcile again.
    RateLimited,
    /// 5xx or 408: reconcile again with backoff.
    ServerError,
    /// Reset, timeout, no `:status`: reconcile again with backoff.
    Transport,
    /// Any other answer (other 4xx, 1xx, 3xx): Genesys refused the request as
    /// sent; repeating it cannot help.
    Refused,
}

impl AnswerClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerClass::Success => "success",
            AnswerClass::Unauthorized => "unauthorized",
            AnswerClass::Forbidden => "forbidden",
            AnswerClass::NotFound => "not-found",
            AnswerClass::VersionConflict => "version-conflict",
            AnswerClass::RateLimited => "rate-limited",
            AnswerClass::ServerError => "server-error",
            AnswerClass::Transport => "transport",
            AnswerClass::Refused => "refused",
        }
    }

    /// Worth trying again later (after a backoff or a pause).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            AnswerClass::RateLimited | AnswerClass::ServerError | AnswerClass::Transport
        )
    }
}

impl fmt::Display for AnswerClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Genesys's rate-limit headers (`inin-ratelimit-*`) of the latest answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    pub count: Option<u64>,
    pub allowed: Option<u64>,
    /// Seconds until the window resets.
    pub reset_seconds: Option<u64>,
}

/// An answer, read once.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `None` when the call failed without a status.
    pub status: Option<u16>,
    pub class: AnswerClass,
    /// `ININ-Correlation-Id` (or the error body's `contextId`).
    pub correlation_id: Option<String>,
    /// Seconds to wait, from `Retry-After` or the 429 body; only on 429.
    pub retry_after_seconds: Option<u64>,
    pub rate_limit: Option<RateLimit>,
    /// Genesys's error body, when the answer is an error with one.
    pub error: Option<ErrorBody>,
    /// The OAuth error, when the answer came from the login host.
    pub oauth_error: Option<OAuthErrorBody>,
}

/// The longest error body read for its message; a larger one is not a
/// Genesys error body.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The phrase of Genesys's stale-version answer (409, and 400 on some APIs).
const VERSION_MISMATCH: &str = "does not match the current version";

impl Answer {
    /// Reads `result`. `now` resolves an HTTP-date `Retry-After`.
    pub fn classify(result: &CallResult, now: DateTime<Utc>) -> Answer {
        let (status, headers, body) = match result {
            CallResult::Response {
                status,
                headers,
                body,
            } if (100..=599).contains(status) => (*status, headers, body),
            _ => return Answer::transport(),
        };
        let error = if (200..300).contains(&status) || body.len() > MAX_ERROR_BODY {
            None
        } else {
            serde_json::from_slice::<ErrorBody>(body).ok()
        };
        let oauth_error = if (400..500).contains(&status) && body.len() <= MAX_ERROR_BODY {
            serde_json::from_slice::<OAuthErrorBody>(body)
                .ok()
                .filter(|e| e.error.is_some())
        } else {
            None
        };
        let class = match status {
            200..=299 => AnswerClass::Success,
            401 => AnswerClass::Unauthorized,
            403 => AnswerClass::Forbidden,
            404 => AnswerClass::NotFound,
            409 => AnswerClass::VersionConflict,
            400 if error.as_ref().is_some_and(is_version_mismatch) => AnswerClass::VersionConflict,
            429 => AnswerClass::RateLimited,
            408 | 500..=599 => AnswerClass::ServerError,
            _ => AnswerClass::Refused,
        };
        let correlation_id = header(headers, "inin-correlation-id")
            .map(str::to_owned)
            .or_else(|| error.as_ref().and_then(|e| e.context_id.clone()));
        let retry_after_seconds = (class == AnswerClass::RateLimited)
            .then(|| {
                header(headers, "retry-after")
                    .and_then(|v| parse_retry_after(v, now))
                    .or_else(|| {
                        error
                            .as_ref()
                            .and_then(|e| e.message.as_deref())
                            .and_then(seconds_in_brackets)
                    })
            })
            .flatten();
        let number = |name: &str| header(headers, name).and_then(|v| v.trim().parse::<u64>().ok());
        let rate_limit = RateLimit {
            count: number("inin-ratelimit-count"),
            allowed: number("inin-ratelimit-allowed"),
            reset_seconds: number("inin-ratelimit-reset"),
        };
        let rate_limit = (rate_limit.count.is_some()
            || rate_limit.allowed.is_some()
            || rate_limit.reset_seconds.is_some())
        .then_some(rate_limit);
        Answer {
            status: Some(status),
            class,
            correlation_id,
            retry_after_seconds,
            rate_limit,
            error,
            oauth_error,
        }
    }

    fn transport() -> Answer {
        Answer {
            status: None,
            class: AnswerClass::Transport,
            correlation_id: None,
            retry_after_seconds: None,
            rate_limit: None,
            error: None,
            oauth_error: None,
        }
    }

    /// One line for a reason or a log: status, class, and what Genesys said
    /// (`403 forbidden: missing.permissions: You are missing …`).
    pub fn describe(&self) -> String {
        let mut out = match self.status {
            Some(s) => format!("{s} {}", self.class),
            None => "no answer (connection reset or timed out)".to_owned(),
        };
        if let Some(e) = &self.error {
            if let Some(code) = &e.code {
                out.push_str(": ");
                out.push_str(code);
            }
            if let Some(msg) = &e.message {
                out.push_str(": ");
                out.push_str(&truncate(msg, 300));
            }
        }
        if let Some(e) = &self.oauth_error {
            if let Some(code) = &e.error {
                out.push_str(": ");
                out.push_str(code);
            }
            if let Some(d) = &e.error_description {
                out.push_str(": ");
                out.push_str(&truncate(d, 300));
            }
        }
        if let Some(id) = &self.correlation_id {
            out.push_str(" (correlation id ");
            out.push_str(id);
            out.push(')');
        }
        out
    }

    /// The fields of [`GenesysRef`] this answer knows.
    pub fn genesys_ref(&self) -> GenesysRef {
        GenesysRef {
            correlation_id: self.correlation_id.clone(),
            version: None,
            date_modified: None,
            http_status: self.status,
        }
    }

    /// The answer as an audit/state JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "status": self.status,
            "class": self.class,
        });
        if let Some(obj) = v.as_object_mut() {
            if let Some(id) = &self.correlation_id {
                obj.insert("correlationId".into(), id.clone().into());
            }
            if let Some(e) = &self.error {
                if let Some(code) = &e.code {
                    obj.insert("code".into(), code.clone().into());
                }
                if let Some(msg) = &e.message {
                    obj.insert("message".into(), truncate(msg, 300).into());
                }
            }
            if let Some(e) = &self.oauth_error {
                if let Some(code) = &e.error {
                    obj.insert("code".into(), code.clone().into());
                }
            }
            if let Some(s) = self.retry_after_seconds {
                obj.insert("retryAfterSeconds".into(), s.into());
            }
        }
        v
    }
}

fn is_version_mismatch(e: &ErrorBody) -> bool {
    e.message
        .as_deref()
        .is_some_and(|m| m.to_ascii_lowercase().contains(VERSION_MISMATCH))
}

/// The `[42]` of "Retry the request in [42] seconds".
fn seconds_in_brackets(message: &str) -> Option<u64> {
    let start = message.find('[')?;
    let rest = message.get(start + 1..)?;
    let end = rest.find(']')?;
    rest.get(..end)?.trim().parse().ok()
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-08-15T14:22:01Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> CallResult {
        CallResult::Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn class(status: u16, body: &str) -> AnswerClass {
        Answer::classify(&resp(status, &[], body), now()).class
    }

    #[test]
    fn statuses_map_to_classes() {
        assert_eq!(class(200, "{}"), AnswerClass::Success);
        assert_eq!(class(202, ""), AnswerClass::Success);
        assert_eq!(class(401, ""), AnswerClass::Unauthorized);
        assert_eq!(class(403, ""), AnswerClass::Forbidden);
        assert_eq!(class(404, ""), AnswerClass::NotFound);
        assert_eq!(class(409, ""), AnswerClass::VersionConflict);
        assert_eq!(class(429, ""), AnswerClass::RateLimited);
        assert_eq!(class(500, ""), AnswerClass::ServerError);
        assert_eq!(class(503, ""), AnswerClass::ServerError);
        assert_eq!(class(408, ""), AnswerClass::ServerError);
        assert_eq!(class(400, r#"{"message":"bad"}"#), AnswerClass::Refused);
        assert_eq!(class(422, ""), AnswerClass::Refused);
        assert_eq!(class(302, ""), AnswerClass::Refused);
        assert_eq!(
            Answer::classify(&CallResult::Failed, now()).class,
            AnswerClass::Transport
        );
        assert_eq!(class(0, ""), AnswerClass::Transport);
        assert_eq!(class(999, ""), AnswerClass::Transport);
    }

    #[test]
    fn a_400_version_mismatch_is_a_conflict() {
        let body = r#"{"message":"The version supplied (3) does not match the current version (4) of the object.","code":"bad.request","status":400}"#;
        assert_eq!(class(400, body), AnswerClass::VersionConflict);
        // Another "does not match" is not.
        let other = r#"{"message":"The key column value 'a' does not match the row id 'b'.","code":"bad.request"}"#;
        assert_eq!(class(400, other), AnswerClass::Refused);
    }

    #[test]
    fn retry_after_comes_from_the_header_then_the_body() {
        let body = r#"{"message":"Rate limit exceeded the maximum. Retry the request in [42] seconds","code":"too.many.requests.retry.after","status":429,"contextId":"ctx-1","details":[],"errors":[]}"#;
        let a = Answer::classify(&resp(429, &[("Retry-After", "7")], body), now());
        assert_eq!(a.retry_after_seconds, Some(7));
        assert_eq!(a.correlation_id.as_deref(), Some("ctx-1"));
        let b = Answer::classify(&resp(429, &[], body), now());
        assert_eq!(b.retry_after_seconds, Some(42));
        let c = Answer::classify(&resp(429, &[], ""), now());
        assert_eq!(c.retry_after_seconds, None);
        // Only a 429 carries one.
        let d = Answer::classify(&resp(503, &[("retry-after", "5")], ""), now());
        assert_eq!(d.retry_after_seconds, None);
    }

    #[test]
    fn retry_after_accepts_an_http_date() {
        assert_eq!(
            parse_retry_after("Thu, 15 Aug 2024 14:22:31 GMT", now()),
            Some(30)
        );
        assert_eq!(
            parse_retry_after("Thu, 15 Aug 2024 14:00:00 GMT", now()),
            Some(0)
        );
        assert_eq!(parse_retry_after(" 12 ", now()), Some(12));
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-1", now()), None);
    }

    #[test]
    fn headers_are_read_case_insensitively() {
        let a = Answer::classify(
            &resp(
                200,
                &[
                    ("ININ-Correlation-Id", "corr-9"),
                    ("inin-ratelimit-count", "12"),
                    ("ININ-RateLimit-Allowed", "300"),
                    ("inin-ratelimit-reset", "48"),
                ],
                "{}",
            ),
            now(),
        );
        assert_eq!(a.correlation_id.as_deref(), Some("corr-9"));
        assert_eq!(
            a.rate_limit,
            Some(RateLimit {
                count: Some(12),
                allowed: Some(300),
                reset_seconds: Some(48)
            })
        );
    }

    #[test]
    fn describe_names_status_and_genesys_message() {
        let body = r#"{"message":"Unable to perform the requested action. You are missing the following permission(s): [routing:emergencyGroup:edit]","code":"missing.permissions","status":403,"contextId":"c-1"}"#;
        let a = Answer::classify(&resp(403, &[("inin-correlation-id", "c-1")], body), now());
        let d = a.describe();
        assert!(d.starts_with("403 forbidden: missing.permissions: "), "{d}");
        assert!(d.contains("routing:emergencyGroup:edit"));
        assert!(d.ends_with("(correlation id c-1)"));
        assert_eq!(a.genesys_ref().http_status, Some(403));
        let o = Answer::classify(
            &resp(
                401,
                &[],
                r#"{"error":"invalid_client","error_description":"client not found"}"#,
            ),
            now(),
        );
        assert_eq!(
            o.describe(),
            "401 unauthorized: invalid_client: client not found"
        );
        assert_eq!(
            Answer::classify(&CallResult::Failed, now()).describe(),
            "no answer (connection reset or timed out)"
        );
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
