//! The OAuth client-credentials token: when to ask for one, how, and what an
//! answer means.
//!
//! - Asked for at start (so bad credentials show at once, and the first
//!   incident does not wait for a login), and again when a share of its
//!   lifetime (`token_refresh_percent`) has passed — the old token stays in
//!   use until the new one arrives.
//! - A 401 from the API drops the token that got it (only that one: a newer
//!   token already fetched is kept), which makes the next poll fetch anew.
//! - The login host refusing the credentials (4xx: `invalid_client`, …) is
//!   reported and not retried in a loop: the next try waits
//!   `bad_credentials_retry_s`, and only happens when there is work.
//! - 5xx and failed calls back off like any other call.
//!
//! The token value lives only here; nothing prints it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::answer::{Answer, AnswerClass};
use super::config::{GenesysSettings, Secret};
use super::models::TokenAnswer;
use super::{HttpCall, OpId, USER_AGENT};

/// The longest lifetime believed (Genesys allows at most 48 h).
const MAX_LIFETIME_S: u64 = 7 * 86_400;

#[derive(Debug, Clone)]
struct Token {
    value: Secret,
    generation: u64,
    obtained_at: DateTime<Utc>,
    refresh_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
enum Fetch {
    Idle,
    InFlight,
    Backoff {
        until: DateTime<Utc>,
    },
    Rejected {
        since: DateTime<Utc>,
        retry_at: DateTime<Utc>,
        reason: String,
    },
}

/// A token ready to use, and its generation (to tell, on a 401, whether the
/// token that failed is still the current one).
#[derive(Debug, Clone, Copy)]
pub struct Bearer<'a> {
    value: &'a str,
    pub generation: u64,
}

impl Bearer<'_> {
    /// The `authorization` header value.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.value)
    }
}

/// A token as the glue mirrors it into shared data, so a reloaded VM (or the
/// next `on_configure`) does not have to log in again. It holds the token
/// itself: keep it in memory only, never in a log. `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredToken {
    access_token: String,
    obtained_at: DateTime<Utc>,
    refresh_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("access_token", &"<redacted>")
            .field("obtained_at", &self.obtained_at)
            .field("refresh_at", &self.refresh_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What a token answer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOutcome {
    Obtained {
        expires_in: u64,
    },
    /// The login host refused the credentials; the reason names its answer.
    Rejected(String),
    /// Try again after a backoff.
    Transient(String),
    /// 429: the caller pauses everything.
    RateLimited,
}

/// The token and the state of fetching one.
#[derive(Debug, Clone)]
pub struct TokenManager {
    current: Option<Token>,
    fetch: Fetch,
    generation: u64,
    /// Consecutive transient failures, for the backoff.
    failures: u32,
    refreshes: u64,
    last_error: Option<String>,
}

impl Default for TokenManager {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenManager {
    pub fn new() -> Self {
        Self {
            current: None,
            fetch: Fetch::Idle,
            generation: 0,
            failures: 0,
            refreshes: 0,
            last_error: None,
        }
    }

    /// The token to send, if one is valid at `now`.
    pub fn bearer(&self, now: DateTime<Utc>) -> Option<Bearer<'_>> {
        self.current
            .as_ref()
            .filter(|t| now < t.expires_at)
            .map(|t| Bearer {
                value: t.value.expose(),
                generation: t.generation,
            })
    }

    /// Whether a token request should start now. `has_work` says groups are
    /// waiting: refused credentials are only tried again for work.
    pub fn needs_fetch(&self, now: DateTime<Utc>, has_work: bool) -> bool {
        match &self.fetch {
            Fetch::InFlight => false,
            Fetch::Backoff { until } => now >= *until,
            Fetch::Rejected { retry_at, .. } => has_work && now >= *retry_at,
            Fetch::Idle => !matches!(&self.current, Some(t) if now < t.refresh_at),
        }
    }

    /// Whether a request is out.
    pub fn is_fetching(&self) -> bool {
        matches!(self.fetch, Fetch::InFlight)
    }

    /// Why there is no token, when the login host refused the credentials
    /// and no valid token is left.
    pub fn rejection(&self, now: DateTime<Utc>) -> Option<&str> {
        match &self.fetch {
            Fetch::Rejected { reason, .. } if self.bearer(now).is_none() => Some(reason),
            _ => None,
        }
    }

    /// The token request: `POST /oauth/token` on the login cluster.
    pub fn start(&mut self, op: OpId, cfg: &GenesysSettings) -> HttpCall {
        self.fetch = Fetch::InFlight;
        HttpCall {
            op,
            cluster: cfg.login.cluster.clone(),
            method: "POST",
            path: "/oauth/token".to_owned(),
            authority: cfg.login.authority.clone(),
            headers: vec![
                ("authorization".to_owned(), cfg.basic_authorization()),
                (
                    "content-type".to_owned(),
                    "application/x-www-form-urlencoded".to_owned(),
                ),
                ("accept".to_owned(), "application/json".to_owned()),
                ("user-agent".to_owned(), USER_AGENT.to_owned()),
            ],
            body: Some(b"grant_type=client_credentials".to_vec()),
            timeout_ms: cfg.limits.call_timeout_ms,
        }
    }

    /// Takes the answer to the request sent at `sent_at`.
    pub fn finish(
        &mut self,
        answer: &Answer,
        body: &[u8],
        sent_at: DateTime<Utc>,
        now: DateTime<Utc>,
        cfg: &GenesysSettings,
    ) -> TokenOutcome {
        let outcome = match answer.class {
            AnswerClass::Success => match parse_token(body) {
                Ok(t) => {
                    self.store(t, sent_at, cfg);
                    TokenOutcome::Obtained {
                        expires_in: self
                            .current
                            .as_ref()
                            .map_or(0, |t| (t.expires_at - t.obtained_at).num_seconds())
                            .try_into()
                            .unwrap_or(0),
                    }
                }
                Err(e) => TokenOutcome::Transient(format!("unreadable token answer: {e}")),
            },
            AnswerClass::RateLimited => TokenOutcome::RateLimited,
            AnswerClass::ServerError | AnswerClass::Transport => {
                TokenOutcome::Transient(answer.describe())
            }
            // 400/401/403 invalid_client, unauthorized_client, … and any
            // other refusal: asking again at once cannot help.
            _ => TokenOutcome::Rejected(format!(
                "Genesys refused the OAuth client credentials: {}",
                answer.describe()
            )),
        };
        match &outcome {
            TokenOutcome::Obtained { .. } => {
                self.fetch = Fetch::Idle;
                self.failures = 0;
                self.refreshes += 1;
                self.last_error = None;
            }
            TokenOutcome::RateLimited => {
                // The caller pauses every call; ask again after it.
                self.fetch = Fetch::Idle;
                self.last_error = Some(answer.describe());
            }
            TokenOutcome::Transient(reason) => {
                self.failures = self.failures.saturating_add(1);
                self.fetch = Fetch::Backoff {
                    until: now + backoff(cfg, self.failures),
                };
                self.last_error = Some(reason.clone());
            }
            TokenOutcome::Rejected(reason) => {
                self.fetch = Fetch::Rejected {
                    since: now,
                    retry_at: now
                        + Duration::seconds(
                            i64::try_from(cfg.limits.bad_credentials_retry_s).unwrap_or(300),
                        ),
                    reason: reason.clone(),
                };
                self.last_error = Some(reason.clone());
            }
        }
        outcome
    }

    /// The API answered 401 to a call made with token `generation`: drop it
    /// if it is still the current one.
    pub fn invalidate(&mut self, generation: u64) {
        if self
            .current
            .as_ref()
            .is_some_and(|t| t.generation == generation)
        {
            self.current = None;
        }
    }

    /// When the token next needs attention (refresh, end of a backoff, a new
    /// try after refused credentials when there is work).
    pub fn wakeup(&self, has_work: bool) -> Option<DateTime<Utc>> {
        match &self.fetch {
            Fetch::InFlight => None,
            Fetch::Backoff { until } => Some(*until),
            Fetch::Rejected { retry_at, .. } => has_work.then_some(*retry_at),
            Fetch::Idle => self.current.as_ref().map(|t| t.refresh_at),
        }
    }

    /// The current token, for the glue to mirror into shared data.
    pub fn export(&self) -> Option<StoredToken> {
        self.current.as_ref().map(|t| StoredToken {
            access_token: t.value.expose().to_owned(),
            obtained_at: t.obtained_at,
            refresh_at: t.refresh_at,
            expires_at: t.expires_at,
        })
    }

    /// Takes a mirrored token back, unless it has expired or the one held
    /// lives longer. Returns whether it was taken.
    pub fn import(&mut self, t: StoredToken, now: DateTime<Utc>) -> bool {
        let usable = now < t.expires_at
            && t.refresh_at <= t.expires_at
            && !t.access_token.is_empty()
            && !t.access_token.chars().any(|c| c.is_control() || c == ' ');
        if !usable
            || self
                .current
                .as_ref()
                .is_some_and(|c| c.expires_at >= t.expires_at)
        {
            return false;
        }
        self.generation += 1;
        self.current = Some(Token {
            value: Secret::new(t.access_token),
            generation: self.generation,
            obtained_at: t.obtained_at,
            refresh_at: t.refresh_at,
            expires_at: t.expires_at,
        });
        if !matches!(self.fetch, Fetch::InFlight) {
            self.fetch = Fetch::Idle;
            self.failures = 0;
        }
        true
    }

    /// Tokens obtained so far.
    pub fn refreshes(&self) -> u64 {
        self.refreshes
    }

    /// For `GET /emr/state`: never the token.
    pub fn view(&self, now: DateTime<Utc>) -> Value {
        let status = match (&self.fetch, self.bearer(now)) {
            (Fetch::Rejected { .. }, None) => "rejected",
            (Fetch::InFlight, None) => "fetching",
            (Fetch::Backoff { .. }, None) => "retrying",
            (_, Some(_)) => "valid",
            (Fetch::Idle, None) => "none",
        };
        let mut v = json!({
            "status": status,
            "refreshes": self.refreshes,
        });
        if let Some(obj) = v.as_object_mut() {
            if let Some(t) = &self.current {
                obj.insert(
                    "obtainedAt".into(),
                    crate::rfc3339::text(t.obtained_at).into(),
                );
                obj.insert(
                    "refreshAt".into(),
                    crate::rfc3339::text(t.refresh_at).into(),
                );
                obj.insert(
                    "expiresAt".into(),
                    crate::rfc3339::text(t.expires_at).into(),
                );
            }
            match &self.fetch {
                Fetch::Backoff { until } => {
                    obj.insert("retryAt".into(), crate::rfc3339::text(*until).into());
                }
                Fetch::Rejected {
                    since, retry_at, ..
                } => {
                    obj.insert("rejectedSince".into(), crate::rfc3339::text(*since).into());
                    obj.insert("retryAt".into(), crate::rfc3339::text(*retry_at).into());
                }
                Fetch::Idle | Fetch::InFlight => {}
            }
            if let Some(e) = &self.last_error {
                obj.insert("lastError".into(), e.clone().into());
            }
        }
        v
    }

    fn store(&mut self, t: TokenAnswer, sent_at: DateTime<Utc>, cfg: &GenesysSettings) {
        self.generation += 1;
        // Genesys started the clock when it got the request: count from when
        // we sent it, and stop using it a little early.
        let life_s = t.expires_in.min(MAX_LIFETIME_S);
        let life_ms = i64::try_from(life_s.saturating_mul(1_000)).unwrap_or(i64::MAX);
        let margin_ms = (life_ms / 20).min(30_000);
        let refresh_ms = life_ms / 100 * i64::from(cfg.limits.token_refresh_percent);
        let expires_at = sent_at + Duration::milliseconds(life_ms - margin_ms);
        let refresh_at = (sent_at + Duration::milliseconds(refresh_ms)).min(expires_at);
        self.current = Some(Token {
            value: Secret::new(t.access_token),
            generation: self.generation,
            obtained_at: sent_at,
            refresh_at,
            expires_at,
        });
    }
}

fn parse_token(body: &[u8]) -> Result<TokenAnswer, String> {
    let t: TokenAnswer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if t.access_token.is_empty() || t.access_token.chars().any(|c| c.is_control() || c == ' ') {
        return Err("access_token is empty or not a token".to_owned());
    }
    if let Some(ty) = &t.token_type {
        if !ty.eq_ignore_ascii_case("bearer") {
            return Err(format!("token_type `{ty}` is not bearer"));
        }
    }
    if t.expires_in == 0 {
        return Err("expires_in is 0".to_owned());
    }
    Ok(t)
}

/// `initial × 2^(n-1)`, capped: the backoff after the n-th failure in a row.
pub(crate) fn backoff(cfg: &GenesysSettings, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let ms = cfg
        .limits
        .backoff_initial_ms
        .saturating_mul(1u64 << exp)
        .min(cfg.limits.backoff_max_ms);
    Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::genesys::config::tests::{base, env, SECRET};
    use crate::genesys::CallResult;

    fn cfg() -> GenesysSettings {
        GenesysSettings::from_json(&base(), &env).unwrap()
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_723_731_721 + s, 0).unwrap()
    }

    fn answer(status: u16, body: &str) -> (Answer, Vec<u8>) {
        let r = CallResult::Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        };
        (Answer::classify(&r, t(0)), body.as_bytes().to_vec())
    }

    fn ok(expires_in: u64) -> (Answer, Vec<u8>) {
        answer(
            200,
            &format!(
                r#"{{"access_token":"tok-{expires_in}","token_type":"bearer","expires_in":{expires_in}}}"#
            ),
        )
    }

    #[test]
    fn the_request_is_client_credentials_with_basic_auth() {
        let c = cfg();
        let mut tm = TokenManager::new();
        assert!(tm.needs_fetch(t(0), false), "fetched eagerly at start");
        let call = tm.start(7, &c);
        assert_eq!(call.op, 7);
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, "/oauth/token");
        assert_eq!(call.cluster, "genesys_login");
        assert_eq!(call.authority, "login.mypurecloud.ie");
        assert!(call.header("authorization").unwrap().starts_with("Basic "));
        assert_eq!(
            call.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            call.body.as_deref(),
            Some(&b"grant_type=client_credentials"[..])
        );
        assert!(!format!("{call:?}").contains(SECRET));
        assert!(!tm.needs_fetch(t(0), true), "one request at a time");
    }

    #[test]
    fn a_token_is_cached_and_refreshed_before_it_expires() {
        let c = cfg();
        let mut tm = TokenManager::new();
        tm.start(1, &c);
        let (a, body) = ok(100);
        assert_eq!(
            tm.finish(&a, &body, t(0), t(1), &c),
            TokenOutcome::Obtained { expires_in: 95 }
        );
        let b = tm.bearer(t(1)).unwrap();
        assert_eq!(b.header_value(), "Bearer tok-100");
        assert!(!tm.needs_fetch(t(84), true));
        assert_eq!(tm.wakeup(false), Some(t(85)));
        assert!(tm.needs_fetch(t(85), false), "refresh at 85 %");
        assert!(tm.bearer(t(94)).is_some(), "still used while refreshing");
        assert!(tm.bearer(t(95)).is_none(), "not used in its last 5 %");
        let v = tm.view(t(1));
        assert_eq!(v["status"], "valid");
        assert!(!v.to_string().contains("tok-100"));
    }

    #[test]
    fn a_401_drops_only_the_token_that_got_it() {
        let c = cfg();
        let mut tm = TokenManager::new();
        tm.start(1, &c);
        let (a, body) = ok(3600);
        tm.finish(&a, &body, t(0), t(0), &c);
        let old = tm.bearer(t(1)).unwrap().generation;
        tm.start(2, &c);
        let (a, body) = ok(7200);
        tm.finish(&a, &body, t(1), t(1), &c);
        tm.invalidate(old);
        assert!(tm.bearer(t(2)).is_some(), "a newer token survives");
        let now_gen = tm.bearer(t(2)).unwrap().generation;
        tm.invalidate(now_gen);
        assert!(tm.bearer(t(2)).is_none());
        assert!(tm.needs_fetch(t(2), false));
    }

    #[test]
    fn refused_credentials_are_not_retried_in_a_loop() {
        let c = cfg();
        let mut tm = TokenManager::new();
        tm.start(1, &c);
        let (a, body) = answer(
            401,
            r#"{"error":"invalid_client","error_description":"client not found or bad client secret"}"#,
        );
        let out = tm.finish(&a, &body, t(0), t(0), &c);
        let TokenOutcome::Rejected(reason) = out else {
            panic!("{out:?}")
        };
        assert!(reason.contains("invalid_client"), "{reason}");
        assert_eq!(tm.rejection(t(1)), Some(reason.as_str()));
        assert!(!tm.needs_fetch(t(299), true));
        assert!(!tm.needs_fetch(t(300), false), "only for work");
        assert!(tm.needs_fetch(t(300), true));
        assert_eq!(tm.wakeup(false), None);
        assert_eq!(tm.wakeup(true), Some(t(300)));
        assert_eq!(tm.view(t(1))["status"], "rejected");
        // A 400 invalid_client is the same.
        let mut tm = TokenManager::new();
        tm.start(1, &c);
        let (a, body) = answer(400, r#"{"error":"invalid_client"}"#);
        assert!(matches!(
            tm.finish(&a, &body, t(0), t(0), &c),
            TokenOutcome::Rejected(_)
        ));
    }

    #[test]
    fn server_errors_back_off() {
        let c = cfg();
        let mut tm = TokenManager::new();
        for (i, wait) in [(1, 1), (2, 2), (3, 4)] {
            tm.start(i, &c);
            let (a, body) = answer(503, "");
            assert!(matches!(
                tm.finish(&a, &body, t(0), t(0), &c),
                TokenOutcome::Transient(_)
            ));
            assert!(!tm.needs_fetch(t(wait) - Duration::milliseconds(1), true));
            assert!(tm.needs_fetch(t(wait), true));
        }
        tm.start(9, &c);
        let (a, body) = ok(60);
        tm.finish(&a, &body, t(5), t(5), &c);
        assert!(tm.bearer(t(5)).is_some());
        assert_eq!(tm.refreshes(), 1);
    }

    #[test]
    fn an_unreadable_token_is_transient() {
        let c = cfg();
        let mut tm = TokenManager::new();
        for body in [
            "not json",
            r#"{"access_token":"","expires_in":10}"#,
            r#"{"access_token":"a","token_type":"mac","expires_in":10}"#,
            r#"{"access_token":"a","expires_in":0}"#,
        ] {
            tm.start(1, &c);
            let (a, b) = answer(200, body);
            assert!(
                matches!(
                    tm.finish(&a, &b, t(0), t(0), &c),
                    TokenOutcome::Transient(_)
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn a_mirrored_token_survives_a_reload() {
        let c = cfg();
        let mut tm = TokenManager::new();
        assert!(tm.export().is_none());
        tm.start(1, &c);
        let (a, body) = ok(100);
        tm.finish(&a, &body, t(0), t(0), &c);
        let stored = tm.export().unwrap();
        assert!(!format!("{stored:?}").contains("tok-100"));
        let json = serde_json::to_string(&stored).unwrap();
        let back: StoredToken = serde_json::from_str(&json).unwrap();

        let mut fresh = TokenManager::new();
        assert!(fresh.import(back.clone(), t(10)));
        assert_eq!(
            fresh.bearer(t(10)).unwrap().header_value(),
            "Bearer tok-100"
        );
        assert!(!fresh.needs_fetch(t(10), true));
        assert_eq!(fresh.wakeup(false), Some(t(85)));
        // Not an older one over a newer one, not an expired one.
        assert!(!fresh.import(back.clone(), t(11)));
        assert!(!TokenManager::new().import(back, t(95)));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let c = cfg();
        let secs: Vec<i64> = (1..=7).map(|n| backoff(&c, n).num_seconds()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(&c, u32::MAX).num_seconds(), 30);
    }
}
