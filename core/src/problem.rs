//! RFC 9457 problem details: the one shape every refusal takes.
//!
//! Errors are collected as [`FieldError`]s while a request is checked, so a
//! sender learns about every broken field at once instead of one per retry.
//! A refused configuration names its fields with the same type
//! ([`crate::config::ConfigError`]).

use std::fmt;

use serde::Serialize;

/// One broken field: a JSON pointer-ish name (`targetQueueIds[2]`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error named from `prefix`, the part of the document it was
    /// found in: `prefix.field`, or `prefix` alone for an error about the
    /// whole part (an empty field). A part checks its fields by their names
    /// within it; the caller that knows where the part sits names them from
    /// the root with this.
    pub fn under(self, prefix: &str) -> Self {
        let field = if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        };
        Self { field, ..self }
    }
}

/// `field: message`, or the message alone for an error about the whole part.
impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// A refusal, turned into `application/problem+json` in one place ([`Problem::to_json`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: u16,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// Extra response headers the refusal needs (`Allow` for 405, `WWW-Authenticate` for 401).
    pub headers: Vec<(&'static str, String)>,
}

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    errors: &'a [FieldError],
}

impl Problem {
    pub fn new(status: u16, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn with_error(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.errors.push(FieldError::new(field, message));
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, detail)
    }

    pub fn unprocessable(errors: Vec<FieldError>) -> Self {
        Self::new(422, "the request is valid JSON but breaks the contract").with_errors(errors)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, detail)
    }

    pub fn method_not_allowed(allow: &str) -> Self {
        Self::new(405, format!("this resource only answers {allow}"))
            .with_error("method", format!("must be {allow}"))
            .with_header("allow", allow)
    }

    /// The URI naming the problem type, stable so clients can branch on it.
    pub fn type_uri(&self) -> &'static str {
        match self.status {
            400 => "urn:emr-edge:problem:unreadable-body",
            401 => "urn:emr-edge:problem:unauthenticated",
            404 => "urn:emr-edge:problem:not-found",
            405 => "urn:emr-edge:problem:method-not-allowed",
            409 => "urn:emr-edge:problem:idempotency-conflict",
            413 => "urn:emr-edge:problem:body-too-large",
            415 => "urn:emr-edge:problem:unsupported-media-type",
            422 => "urn:emr-edge:problem:contract-violation",
            429 => "urn:emr-edge:problem:too-many-requests",
            503 => "urn:emr-edge:problem:unavailable",
            _ => "about:blank",
        }
    }

    pub fn title(&self) -> &'static str {
        match self.status {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            413 => "Content Too Large",
            415 => "Unsupported Media Type",
            422 => "Unprocessable Content",
            429 => "Too Many Requests",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Error",
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let body = ProblemBody {
            kind: self.type_uri(),
            title: self.title(),
            status: self.status,
            detail: &self.detail,
            errors: &self.errors,
        };
        // Serialising plain strings and numbers cannot fail; fall back to a
        // fixed body rather than panic if it ever did.
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"type":"about:blank","title":"Error","status":500,"detail":"unserialisable problem","errors":[]}"#.to_vec()
        })
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn problem_json_has_rfc9457_members_and_field_errors() {
        let p = Problem::unprocessable(vec![FieldError::new("ttl", "must be at least 60")]);
        let v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(v["status"], 422);
        assert_eq!(v["title"], "Unprocessable Content");
        assert_eq!(v["type"], "urn:emr-edge:problem:contract-violation");
        assert_eq!(v["errors"][0]["field"], "ttl");
        assert_eq!(v["errors"][0]["message"], "must be at least 60");
    }

    #[test]
    fn an_error_is_named_from_the_part_it_was_found_in() {
        let e = FieldError::new("limits.burst", "must be between 1 and 300, got 0");
        assert_eq!(e.clone().under("genesys").field, "genesys.limits.burst");
        assert_eq!(
            FieldError::new("", "is invalid").under("genesys").field,
            "genesys"
        );
        assert_eq!(
            e.to_string(),
            "limits.burst: must be between 1 and 300, got 0"
        );
        assert_eq!(FieldError::new("", "is invalid").to_string(), "is invalid");
    }

    #[test]
    fn method_not_allowed_carries_allow_header() {
        let p = Problem::method_not_allowed("POST");
        assert_eq!(p.status, 405);
        assert_eq!(p.headers, vec![("allow", "POST".to_string())]);
        assert_eq!(p.errors[0].field, "method");
    }
}
