//! The login host's client-credentials grant, the token store, and `/api/v2/tokens/me`.
//!
//! Tokens are opaque strings remembered with their client and expiry. Revoking one forgets it,
//! so a revoked and an unknown token look the same to the API — as they do to the real one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::json;

use crate::auth::{Caller, CallerId};
use crate::errors::OAuthError;
use crate::ids::access_token;
use crate::state::App;

/// Which tokens to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoke {
    /// Every issued token.
    All,
    /// One token.
    AccessToken(String),
    /// Every token of one client.
    ClientId(String),
}

/// Why a bearer token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    Unknown,
    Expired,
}

#[derive(Debug, Clone)]
struct IssuedToken {
    client_id: String,
    expires_at: Instant,
}

/// Issued access tokens.
#[derive(Debug)]
pub(crate) struct TokenStore {
    lifetime: Duration,
    tokens: HashMap<String, IssuedToken>,
}

impl TokenStore {
    pub fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            tokens: HashMap::new(),
        }
    }

    /// Issues a token for `client_id`; returns it with its lifetime in seconds.
    pub fn issue(&mut self, client_id: &str, now: Instant) -> (String, u64) {
        self.tokens.retain(|_, token| token.expires_at > now);
        let token = access_token();
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                client_id: client_id.to_owned(),
                expires_at: now + self.lifetime,
            },
        );
        (token, self.lifetime.as_secs())
    }

    /// The client of a live token.
    pub fn resolve(&self, token: &str, now: Instant) -> Result<&str, TokenProblem> {
        let issued = self.tokens.get(token).ok_or(TokenProblem::Unknown)?;
        if issued.expires_at <= now {
            return Err(TokenProblem::Expired);
        }
        Ok(&issued.client_id)
    }

    /// Forgets the selected tokens; returns how many.
    pub fn revoke(&mut self, which: &Revoke) -> usize {
        let before = self.tokens.len();
        match which {
            Revoke::All => self.tokens.clear(),
            Revoke::AccessToken(token) => {
                self.tokens.remove(token);
            }
            Revoke::ClientId(client_id) => {
                self.tokens.retain(|_, token| &token.client_id != client_id);
            }
        }
        before - self.tokens.len()
    }
}

/// `id:secret` from `Authorization: Basic base64(id:secret)`.
fn basic_credentials(headers: &HeaderMap) -> Result<(String, String), OAuthError> {
    let missing = || OAuthError::invalid_client("client authentication is required (HTTP Basic)");
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(missing());
    }
    let malformed = || OAuthError::invalid_client("malformed Basic credentials");
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok((id.to_owned(), secret.to_owned()))
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// `POST /oauth/token` — the client-credentials grant.
pub(crate) async fn issue_token(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match grant(&app, &headers, &body) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn grant(app: &App, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let (client_id, secret) = basic_credentials(headers)?;
    let client = app
        .client(&client_id)
        .filter(|client| client.secret == secret)
        .ok_or_else(|| OAuthError::invalid_client("client not found or bad client secret"))?;
    if !is_form(headers) {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| OAuthError::invalid_request("the form body could not be parsed"))?;
    match form.iter().find(|(key, _)| key == "grant_type") {
        None => return Err(OAuthError::invalid_request("grant_type is required")),
        Some((_, grant)) if grant != "client_credentials" => {
            return Err(OAuthError::unsupported_grant_type(format!(
                "grant type {grant} is not supported; use client_credentials"
            )))
        }
        Some(_) => {}
    }
    let (token, expires_in) = app.lock().tokens.issue(&client.id, Instant::now());
    let mut response = Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": expires_in,
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .extensions_mut()
        .insert(CallerId(client.id.clone()));
    Ok(response)
}

/// `GET`/`HEAD /api/v2/tokens/me` — who the token belongs to.
pub(crate) async fn token_info(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> Json<serde_json::Value> {
    let org = &app.config.organization;
    let organization = json!({
        "id": org.id,
        "name": org.name,
        "selfUri": format!("/api/v2/organizations/{}", org.id),
    });
    Json(json!({
        "organization": organization,
        "homeOrganization": organization,
        "authorizedScope": [],
        "OAuthClient": {
            "id": caller.client.id,
            "name": caller.client.name,
            "organization": { "id": org.id },
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_can_be_revoked() {
        let mut store = TokenStore::new(Duration::from_secs(10));
        let now = Instant::now();
        let (a, lifetime) = store.issue("a", now);
        let (b, _) = store.issue("b", now);
        assert_eq!(lifetime, 10);
        assert_eq!(store.resolve(&a, now), Ok("a"));
        assert_eq!(
            store.resolve(&a, now + Duration::from_secs(10)),
            Err(TokenProblem::Expired)
        );
        assert_eq!(store.revoke(&Revoke::ClientId("a".to_owned())), 1);
        assert_eq!(store.resolve(&a, now), Err(TokenProblem::Unknown));
        assert_eq!(store.revoke(&Revoke::AccessToken(b.clone())), 1);
        assert_eq!(store.revoke(&Revoke::All), 0);
    }

    #[test]
    fn basic_credentials_are_decoded() {
        let mut headers = HeaderMap::new();
        assert!(basic_credentials(&headers).is_err());
        let encoded = format!("Basic {}", STANDARD.encode("id:se:cret"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&encoded).unwrap(),
        );
        assert_eq!(
            basic_credentials(&headers).unwrap(),
            ("id".to_owned(), "se:cret".to_owned())
        );
    }
}
