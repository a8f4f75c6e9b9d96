//! Everything emr-edge knows about talking to Genesys Cloud, as pure logic.
//!
//! The singleton's glue owns the host calls; this module only says *which*
//! call to make and what an answer means:
//! - [`config`]: the `genesys` config section, compiled once into
//!   [`GenesysSettings`] (hosts, clusters, credentials, group mapping, limits);
//! - [`models`]: Genesys's JSON models (emergency group, error body, token,
//!   data-table row, the guide's routing contract);
//! - [`answer`]: an HTTP answer sorted into the classes of docs/genesys.md's answer table, with
//!   `Retry-After`, `ININ-Correlation-Id` and rate-limit headers read;
//! - [`token`]: the client-credentials token and when to refresh it;
//! - [`budget`]: the token bucket every call to Genesys spends from;
//! - [`driver`]: how one group is read, compared and written — the real
//!   emergency-group API or the guide's contract, behind one trait.
//!
//! The reconciler (`crate::reconcile`) strings these together into the
//! per-group state machine the glue drives.

use std::fmt;

pub mod answer;
pub mod budget;
pub mod config;
pub mod driver;
pub mod models;
pub mod token;

pub use answer::{Answer, AnswerClass, RateLimit};
pub use config::{ConfigError, DriverKind, GenesysConfig, GenesysSettings};
pub use driver::Driver;
pub use token::TokenManager;

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
        answer::header(&self.headers, name)
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

/// A request a driver wants made, before the reconciler adds the host, the
/// cluster and the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Vec<u8>>,
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
