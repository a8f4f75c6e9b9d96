//! Callouts: what the service's two state machines, the reconciler
//! (`crate::reconcile`, toward Genesys) and the poller (`crate::itsm`,
//! toward the incident tools), share about asking another service over
//! HTTP. Each hands the glue [`HttpCall`]s with its own [`OpId`]s and takes
//! back a [`CallResult`]; neither reads a clock or a socket. The request
//! budget ([`budget`]) paces both.

use std::fmt;

use chrono::{DateTime, Utc};

pub mod budget;

pub use budget::Budget;

/// Identifies one outstanding call between the reconciler and the glue. The
/// glue maps its host token to this id and hands it back with the answer.
pub type OpId = u64;

/// `user-agent` of every request.
pub const USER_AGENT: &str = "emr-edge/0.1";

/// One HTTP callout for the glue to dispatch with `dispatch_http_call`.
///
/// `method`, `path` and `authority` become the `:method`, `:path` and
/// `:authority` pseudo-headers; `headers` are the ordinary ones. `Debug`
/// never prints the `authorization` header's value.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub op: OpId,
    /// The Envoy cluster to send it through.
    pub cluster: String,
    pub method: &'static str,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// Passed to the host as the call's timeout; the reconciler also gives up
    /// on the op itself a little after it.
    pub timeout_ms: u64,
}

impl HttpCall {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

impl fmt::Debug for HttpCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                if k.eq_ignore_ascii_case("authorization") {
                    (k.as_str(), "<redacted>")
                } else {
                    (k.as_str(), v.as_str())
                }
            })
            .collect();
        f.debug_struct("HttpCall")
            .field("op", &self.op)
            .field("cluster", &self.cluster)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("authority", &self.authority)
            .field("headers", &headers)
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// What the host reported for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    /// An answer with a `:status` (the glue reads it from the headers).
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Reset, timeout, no `:status`: the host gives no detail.
    Failed,
}

/// Percent-encodes `s` for use as one path segment: everything but RFC 3986
/// unreserved characters is escaped, so an id can never add a segment or a
/// query to the path; `.` and `..` are escaped too, so it cannot climb one.
pub fn encode_segment(s: &str) -> String {
    let dots_only = s.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'~')
            || (b == b'.' && !dots_only);
        if plain {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0f));
        }
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n), 16)
        .map(|c| c.to_ascii_uppercase())
        .unwrap_or('0')
}

/// The value of header `name` in `headers` (case-insensitive).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `Retry-After` as seconds from `now`: delta-seconds (what Genesys sends) or
/// an HTTP-date. A date in the past is 0.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<u64> {
    let value = value.trim();
    if let Ok(s) = value.parse::<u64>() {
        return Some(s);
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    let delta = at.with_timezone(&Utc) - now;
    // Round up: waiting a fraction too long is fine, too short is not.
    let ms = delta.num_milliseconds().max(0);
    u64::try_from((ms + 999) / 1000).ok()
}

#[cfg(test)]
impl CallResult {
    /// A JSON answer with `status`, as the host hands it over.
    pub(crate) fn json(status: u16, body: &serde_json::Value) -> Self {
        CallResult::Response {
            status,
            headers: vec![],
            body: body.to_string().into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(
            encode_segment("3c3f7a3e-2f5c-4f3a-9b1e-000000000001"),
            "3c3f7a3e-2f5c-4f3a-9b1e-000000000001"
        );
        assert_eq!(encode_segment("a/b?c d"), "a%2Fb%3Fc%20d");
        assert_eq!(encode_segment("é"), "%C3%A9");
        assert_eq!(encode_segment(".."), "%2E%2E");
        assert_eq!(encode_segment("a.b"), "a.b");
    }

    #[test]
    fn debug_hides_the_authorization_header() {
        let call = HttpCall {
            op: 1,
            cluster: "genesys_api".into(),
            method: "GET",
            path: "/".into(),
            authority: "api.mypurecloud.com".into(),
            headers: vec![("authorization".into(), "Bearer s3cr3t".into())],
            body: None,
            timeout_ms: 1000,
        };
        let shown = format!("{call:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>"));
        assert_eq!(call.header("Authorization"), Some("Bearer s3cr3t"));
    }
}
