//! What can go wrong, and how each kind of failure is answered.
//!
//! Three hosts, three error dialects, because the filter must cope with each as it really is:
//! - the Genesys API answers one JSON body for every error (`message`, `code`, `status`,
//!   `contextId`, `details`, `errors`), whose `contextId` is the answer's `ININ-Correlation-Id`.
//!   That id belongs to the front door, so handlers return an [`ApiError`] that travels in the
//!   response extensions and is rendered there, in one place ([`render_api_error`]);
//! - the login host answers OAuth-style `{"error", "description"}` bodies ([`OAuthError`]);
//! - the control API answers a plain `{"error": "..."}` ([`ControlError`]).
//!
//! [`SimError`] is the one error type of the public Rust API (starting, config).

use std::fmt;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer of the Genesys Cloud API, before its `contextId` is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (seconds) when set.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// No, unknown, expired or revoked bearer token.
    pub fn bad_credentials(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "bad.credentials", message)
    }

    /// The caller lacks the one permission the operation requires.
    pub fn missing_permission(permission: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "missing.permissions",
            format!(
                "Unable to perform the requested action. You are missing the following permission(s): [{permission}]"
            ),
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not.found", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad.request", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "general.conflict", message)
    }

    /// The stale-`version` answer of an Architect PUT.
    pub fn version_mismatch(supplied: u64, current: u64) -> Self {
        Self::conflict(format!(
            "The version supplied ({supplied}) does not match the current version ({current}) of the object. Read the object again and retry."
        ))
    }

    /// The 429 of Genesys's per-token rate limit, with its `Retry-After`.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too.many.requests.retry.after",
                format!(
                    "Rate limit exceeded the maximum. Retry the request in [{retry_after_secs}] seconds"
                ),
            )
        }
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request.entity.too.large",
            format!("The request body exceeds the maximum of {limit} bytes."),
        )
    }

    /// The body Genesys would send with `status` when nothing more specific is known
    /// (injected faults, outages, unknown routes).
    pub fn for_status(status: StatusCode, retry_after: Option<u64>) -> Self {
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Self::too_many_requests(retry_after.unwrap_or(1));
        }
        let (code, message) = match status.as_u16() {
            400 => ("bad.request", "The request could not be understood by the server due to malformed syntax."),
            401 => ("bad.credentials", "Invalid login credentials."),
            403 => ("missing.permissions", "Unable to perform the requested action."),
            404 => ("not.found", "The requested resource was not found."),
            405 => ("method.not.allowed", "The request method is not supported for this resource."),
            409 => ("general.conflict", "The request could not be completed because of a conflict."),
            500 => ("internal.server.error", "The server encountered an unexpected condition which prevented it from fulfilling the request."),
            502 => ("bad.gateway", "The server received an invalid response from an upstream server."),
            503 => ("service.unavailable", "Service Unavailable - The server is currently unavailable (because it is overloaded or down for maintenance)."),
            504 => ("gateway.timeout", "The server did not receive a timely response from an upstream server."),
            _ => ("error", "The request failed."),
        };
        Self {
            retry_after,
            ..Self::new(status, code, message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(self);
        response
    }
}

/// Replaces the body of a response that carries an [`ApiError`] with the Genesys error body,
/// using `correlation_id` as its `contextId`. Other responses are left alone.
pub(crate) fn render_api_error(response: &mut Response, correlation_id: &str) {
    let Some(error) = response.extensions_mut().remove::<ApiError>() else {
        return;
    };
    let body = json!({
        "message": error.message,
        "code": error.code,
        "status": error.status.as_u16(),
        "contextId": correlation_id,
        "details": [],
        "errors": [],
    });
    *response.body_mut() = Body::from(body.to_string());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
}

/// An error answer of the login host's `/oauth/token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: description.into(),
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            description: description.into(),
        }
    }

    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: "unsupported_grant_type",
            description: description.into(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.error,
            "description": self.description,
            "error_description": self.description,
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"oauth\""),
            );
        }
        response
    }
}

/// An error answer of the `/__sim/` control API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ControlError {
    pub status: StatusCode,
    pub message: String,
}

impl ControlError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

/// Why the simulator could not start or a control call through the Rust API was refused.
#[derive(Debug)]
pub enum SimError {
    /// The configuration is invalid; the message names the field.
    Config(String),
    /// The config file could not be read.
    ConfigFile {
        path: String,
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// A control request named something the simulator does not hold.
    NotFound(String),
    /// A control request was malformed.
    Invalid(String),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(message) => write!(f, "invalid config: {message}"),
            Self::ConfigFile { path, source } => write!(f, "cannot read config {path}: {source}"),
            Self::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Self::NotFound(message) => write!(f, "not found: {message}"),
            Self::Invalid(message) => write!(f, "invalid request: {message}"),
        }
    }
}

impl std::error::Error for SimError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ConfigFile { source, .. } | Self::Bind { source, .. } => Some(source),
            Self::Config(_) | Self::NotFound(_) | Self::Invalid(_) => None,
        }
    }
}

impl From<SimError> for ControlError {
    fn from(error: SimError) -> Self {
        match error {
            SimError::NotFound(message) => Self::not_found(message),
            other => Self::bad_request(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_api_error_has_the_genesys_shape() {
        let mut response = ApiError::too_many_requests(42).into_response();
        render_api_error(&mut response, "ctx-1");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "42");
        assert!(response.extensions().get::<ApiError>().is_none());
    }

    #[test]
    fn a_fault_status_gets_a_matching_code() {
        let error = ApiError::for_status(StatusCode::SERVICE_UNAVAILABLE, None);
        assert_eq!(error.code, "service.unavailable");
        let error = ApiError::for_status(StatusCode::TOO_MANY_REQUESTS, Some(7));
        assert_eq!(error.retry_after, Some(7));
        assert!(error.message.contains("[7]"));
    }
}
