//! etcd's auth, when it is on (docs/cluster.md, "In production"): a token
//! from `/v3/auth/authenticate`, for the user and password the environment
//! holds, sent in `Authorization` (the token alone, no scheme) on every
//! call.
//!
//! The service authenticates before any other call, and again when a call
//! says its token is no longer good ([`Failure::Unauthenticated`]). It
//! publishes the token in shared data for the filters' commits
//! ([`TOKEN_KEY`]). etcd 3.4's simple tokens live five minutes from their
//! last use and a replica uses its own at every poll, so one is rarely
//! fetched twice; a JWT token that expires is fetched again the same way.
//!
//! Measured on etcd 3.4: once auth is on, its JSON gateway refuses every
//! request whose TLS client certificate carries a Common Name. The client
//! certificate then has a SAN only (envoy/etcd.production.example.yaml).

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::answer::{self, Failure};
use super::{Gateway, Request};
use crate::auth::Secret;
use crate::callout::{CallResult, HttpCall, OpId};
use crate::store::{SharedStore, StoreError};

/// Shared data: the token the filters' commits carry.
pub const TOKEN_KEY: &str = "emr.cluster.etcd_token";

/// After etcd refused the credentials, the next try waits this long: a
/// wrong password is fixed by an operator, not by asking again at once.
const REFUSED_RETRY_S: i64 = 5;

/// The etcd user emr-edge authenticates as.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password)
            .finish()
    }
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.user == other.user && self.password.digest() == other.password.digest()
    }
}

impl Eq for Credentials {}

/// The authentication request. Its body holds the password: it goes to
/// etcd and nowhere else (never logged).
fn authenticate(c: &Credentials) -> Request {
    Request {
        path: "/v3/auth/authenticate",
        body: json!({
            "name": c.user,
            "password": String::from_utf8_lossy(c.password.expose()),
        }),
    }
}

/// The token an authentication answered.
fn token_of(result: &CallResult) -> Result<String, Failure> {
    answer::body(result)?
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Failure::Malformed("an authentication without a token".into()))
}

/// Adds `token` to a call to etcd.
pub fn authorize(call: &mut HttpCall, token: &str) {
    call.headers
        .push(("authorization".to_owned(), token.to_owned()));
}

/// The token the service published, if any.
pub fn current(store: &dyn SharedStore) -> Option<String> {
    let bytes = store.get(TOKEN_KEY).ok()?.value?;
    String::from_utf8(bytes).ok().filter(|t| !t.is_empty())
}

/// Tells the filters of `token`.
pub fn publish(store: &dyn SharedStore, token: &str) -> Result<(), StoreError> {
    store.set(TOKEN_KEY, token.as_bytes(), None)
}

/// Whether an answer says the call's token is no longer good.
pub fn rejected(result: &CallResult) -> bool {
    matches!(
        result,
        CallResult::Response {
            status: 400 | 401,
            ..
        }
    ) && matches!(answer::body(result), Err(Failure::Unauthenticated(_)))
}

/// What the service must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Dispatch; hand the answer to [`Authenticator::on_result`].
    Call(HttpCall),
    /// A new token: publish it.
    Token(String),
    Failed(Failure),
}

/// Keeps a token. One call at a time, by value, like the election.
#[derive(Debug, Clone)]
pub struct Authenticator {
    credentials: Credentials,
    gateway: Gateway,
    token: Option<String>,
    out: Option<OpId>,
    next_at: DateTime<Utc>,
    next_op: OpId,
}

impl Authenticator {
    pub fn new(credentials: Credentials, gateway: Gateway, now: DateTime<Utc>) -> Self {
        Self {
            credentials,
            gateway,
            token: None,
            out: None,
            next_at: now,
            next_op: 1,
        }
    }

    /// The token to send, once there is one.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A call said the token is no longer good: get another.
    pub fn invalidate(&mut self) {
        self.token = None;
    }

    /// Authenticates when there is no token.
    pub fn poll(&mut self, now: DateTime<Utc>) -> Vec<Effect> {
        if self.token.is_some() || self.out.is_some() || now < self.next_at {
            return Vec::new();
        }
        let op = self.next_op;
        self.next_op += 1;
        self.out = Some(op);
        vec![Effect::Call(
            self.gateway.call(op, authenticate(&self.credentials)),
        )]
    }

    /// The answer to an authentication; one of another op is ignored.
    pub fn on_result(&mut self, op: OpId, result: &CallResult, now: DateTime<Utc>) -> Vec<Effect> {
        if self.out != Some(op) {
            return Vec::new();
        }
        self.out = None;
        match token_of(result) {
            Ok(token) => {
                self.token = Some(token.clone());
                vec![Effect::Token(token)]
            }
            Err(failure) => {
                let wait = if failure.is_transient() {
                    1
                } else {
                    REFUSED_RETRY_S
                };
                self.next_at = now + Duration::seconds(wait);
                vec![Effect::Failed(failure)]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::ledger::tests::t;
    use crate::store::MemoryStore;

    fn authenticator() -> Authenticator {
        Authenticator::new(
            Credentials {
                user: "emr".into(),
                password: Secret::new("correct-horse-battery-staple"),
            },
            Gateway::for_tests(),
            t(0),
        )
    }

    fn call(fx: &[Effect]) -> HttpCall {
        match fx {
            [Effect::Call(c)] => c.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn it_authenticates_once_and_again_when_the_token_is_refused() {
        let mut a = authenticator();
        assert_eq!(a.token(), None);
        let c = call(&a.poll(t(0)));
        assert_eq!(c.path, "/v3/auth/authenticate");
        let body: Value = serde_json::from_slice(c.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"name": "emr", "password": "correct-horse-battery-staple"})
        );
        assert!(a.poll(t(0)).is_empty(), "one call at a time");
        let fx = a.on_result(
            c.op,
            &CallResult::json(200, &json!({"header": {}, "token": "tok.1"})),
            t(0),
        );
        assert_eq!(fx, vec![Effect::Token("tok.1".into())]);
        assert_eq!(a.token(), Some("tok.1"));
        assert!(a.poll(t(9)).is_empty(), "a token: nothing to do");
        a.invalidate();
        let again = call(&a.poll(t(9)));
        a.on_result(
            again.op,
            &CallResult::json(200, &json!({"token": "tok.2"})),
            t(9),
        );
        assert_eq!(a.token(), Some("tok.2"));
    }

    #[test]
    fn refused_credentials_wait_and_never_show_the_password() {
        let mut a = authenticator();
        let c = call(&a.poll(t(0)));
        let refused = CallResult::Response {
            status: 400,
            headers: vec![],
            body: br#"{"message":"etcdserver: authentication failed, invalid user ID or password","code":3}"#.to_vec(),
        };
        let fx = a.on_result(c.op, &refused, t(0));
        let [Effect::Failed(f)] = fx.as_slice() else {
            panic!("{fx:?}")
        };
        assert!(matches!(f, Failure::Denied(_)));
        assert!(a.poll(t(4)).is_empty());
        assert_eq!(a.poll(t(5)).len(), 1);
        assert!(!format!("{a:?}").contains("horse"), "{a:?}");
    }

    #[test]
    fn an_answer_tells_a_token_to_get_again() {
        let expired = CallResult::Response {
            status: 401,
            headers: vec![],
            body: br#"{"message":"etcdserver: invalid auth token","code":16}"#.to_vec(),
        };
        assert!(rejected(&expired));
        let denied = CallResult::Response {
            status: 403,
            headers: vec![],
            body: br#"{"message":"etcdserver: permission denied","code":7}"#.to_vec(),
        };
        assert!(!rejected(&denied));
        assert!(!rejected(&CallResult::Failed));
        let mut c = authenticator().gateway.call(1, super::super::get(b"k"));
        authorize(&mut c, "tok.1");
        assert!(c
            .headers
            .contains(&("authorization".to_owned(), "tok.1".to_owned())));
        let store = MemoryStore::new();
        assert_eq!(current(&store), None);
        publish(&store, "tok.1").unwrap();
        assert_eq!(current(&store).as_deref(), Some("tok.1"));
    }
}
