//! Bearer-token authentication and the rate limit, in front of every `/api/v2/` route.
//!
//! A request passes only with a live token (issued, not expired, not revoked); its client's
//! permissions then travel to the handler as a [`Caller`]. The rate-limit headers are added to
//! every authenticated answer, errors included, as Genesys does.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::ClientConfig;
use crate::errors::ApiError;
use crate::groups::Writer;
use crate::oauth::TokenProblem;
use crate::ratelimit::Usage;
use crate::state::App;

/// The authenticated client of an API request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub client: Arc<ClientConfig>,
}

impl Caller {
    /// 403 `missing.permissions` unless the client holds `permission`.
    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        if self.client.has_permission(permission) {
            Ok(())
        } else {
            Err(ApiError::missing_permission(permission))
        }
    }

    /// How this client's writes are stamped.
    pub fn writer(&self) -> Writer {
        Writer {
            app_name: self.client.name.clone(),
            user_id: self.client.user_id.clone(),
        }
    }
}

/// The client id of a request, left in the response extensions for the request log.
#[derive(Debug, Clone)]
pub(crate) struct CallerId(pub String);

/// The bearer token of `Authorization: Bearer <token>`, if any.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Middleware: authenticate, count against the rate limit, then run the handler.
pub(crate) async fn authenticate(
    State(app): State<App>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer_token(request.headers()).map(str::to_owned) else {
        return ApiError::bad_credentials(
            "No authentication bearer token specified in authorization header.",
        )
        .into_response();
    };
    let now = Instant::now();
    let (client, usage) = {
        let mut state = app.lock();
        let client_id = match state.tokens.resolve(&token, now) {
            Ok(client_id) => client_id.to_owned(),
            Err(TokenProblem::Unknown) => {
                return ApiError::bad_credentials("Invalid login credentials.").into_response()
            }
            Err(TokenProblem::Expired) => {
                return ApiError::bad_credentials(
                    "Invalid login credentials. The access token has expired.",
                )
                .into_response()
            }
        };
        let usage = state.limits.hit(&token, now);
        (app.client(&client_id), usage)
    };
    let Some(client) = client else {
        // The token names a client the config no longer has: treat it as revoked.
        return ApiError::bad_credentials("Invalid login credentials.").into_response();
    };
    let client_id = CallerId(client.id.clone());
    let mut response = if usage.exceeded() {
        ApiError::too_many_requests(usage.reset_secs).into_response()
    } else {
        request.extensions_mut().insert(Caller { client });
        next.run(request).await
    };
    add_rate_limit_headers(response.headers_mut(), usage);
    response.extensions_mut().insert(client_id);
    response
}

fn add_rate_limit_headers(headers: &mut HeaderMap, usage: Usage) {
    let pairs = [
        ("inin-ratelimit-count", u64::from(usage.count)),
        ("inin-ratelimit-allowed", u64::from(usage.allowed)),
        ("inin-ratelimit-reset", usage.reset_secs),
    ];
    for (name, value) in pairs {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_found() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&headers), None);
    }
}
