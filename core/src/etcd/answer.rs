//! What etcd's gateway answered: the values a caller reads, and errors
//! sorted into what it does about them.
//!
//! int64 fields arrive as strings (numbers are taken too), and the gateway
//! leaves out every field that is false, zero or empty: a missing
//! `succeeded` is a failed compare, missing `kvs` is nothing found, a
//! keepalive without `TTL` found no lease.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use crate::callout::CallResult;

/// Why a call to etcd did not work, as the caller acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer: reset, refused, timed out at the host.
    Transport,
    /// The member has no leader (quorum lost), or it is shutting down or
    /// unreachable behind the gateway: try again shortly, elsewhere.
    Unavailable(String),
    /// The deadline passed inside etcd (`Grpc-Timeout`).
    DeadlineExceeded,
    /// The database is at its quota (`NOSPACE`): writes fail until an
    /// operator compacts, defragments and disarms the alarm.
    QuotaFull,
    /// The lease named is gone (expired or revoked).
    LeaseNotFound,
    /// A revision asked for was compacted away.
    Compacted,
    /// The request is over etcd's size limit.
    TooLarge,
    /// Authentication or permission refused: a setup problem.
    Denied(String),
    /// etcd's auth is on and the call's token is missing, expired or
    /// revoked: authenticate again ([`super::token`]).
    Unauthenticated(String),
    /// A 2xx whose body is not what the gateway sends.
    Malformed(String),
    /// Anything else etcd said.
    Other(String),
}

impl Failure {
    /// Whether the same call may work shortly (the caller answers 503 with
    /// `Retry-After` meanwhile, or retries itself).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Failure::Transport
                | Failure::Unavailable(_)
                | Failure::DeadlineExceeded
                | Failure::Unauthenticated(_)
        )
    }

    /// The metric suffix of this failure's class.
    pub fn class(&self) -> &'static str {
        match self {
            Failure::Transport => "transport",
            Failure::Unavailable(_) => "unavailable",
            Failure::DeadlineExceeded => "deadline",
            Failure::QuotaFull => "quota_full",
            Failure::LeaseNotFound => "lease_not_found",
            Failure::Compacted => "compacted",
            Failure::TooLarge => "too_large",
            Failure::Denied(_) => "denied",
            Failure::Unauthenticated(_) => "unauthenticated",
            Failure::Malformed(_) => "malformed",
            Failure::Other(_) => "other",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Transport => {
                f.write_str("etcd did not answer (connection failed or timed out)")
            }
            Failure::Unavailable(m) => write!(f, "etcd is unavailable: {m}"),
            Failure::DeadlineExceeded => f.write_str("etcd did not answer within the deadline"),
            Failure::QuotaFull => f.write_str(
                "etcd's database is full (NOSPACE): compact, defragment and disarm the alarm",
            ),
            Failure::LeaseNotFound => f.write_str("etcd lease not found (expired or revoked)"),
            Failure::Compacted => f.write_str("etcd revision compacted"),
            Failure::TooLarge => {
                f.write_str("the request is larger than etcd accepts (bytes or operations)")
            }
            Failure::Denied(m) => write!(f, "etcd refused the credentials or permission: {m}"),
            Failure::Unauthenticated(m) => write!(f, "etcd wants a valid auth token: {m}"),
            Failure::Malformed(m) => write!(f, "etcd's answer is unreadable: {m}"),
            Failure::Other(m) => write!(f, "etcd refused: {m}"),
        }
    }
}

/// One key-value pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// The lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// A transaction's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// Whether the compares held (the `success` branch ran).
    pub succeeded: bool,
    /// The store's revision after it: a put in the success branch was
    /// made at this revision.
    pub revision: i64,
    /// What the branch's ranges read, in order.
    pub ranged: Vec<Kv>,
}

/// A range's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub kvs: Vec<Kv>,
    /// More keys matched than were returned (a `limit`).
    pub more: bool,
    pub revision: i64,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Its TTL in seconds, as granted.
    pub ttl_s: i64,
}

/// The body of a successful answer, or why there is none.
pub fn body(result: &CallResult) -> Result<Value, Failure> {
    let (status, body) = match result {
        CallResult::Failed => return Err(Failure::Transport),
        CallResult::Response { status, body, .. } => (*status, body),
    };
    let v: Option<Value> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        return v.ok_or_else(|| Failure::Malformed("not JSON".into()));
    }
    Err(failure(status, v.as_ref()))
}

/// Sorts an error answer: the gateway's `{"error", "message", "code"}` (the
/// gRPC code; newer etcd drops `error`), or a bare HTTP status from a proxy
/// in between.
fn failure(status: u16, v: Option<&Value>) -> Failure {
    let code = v.and_then(|v| v.get("code")).and_then(int);
    let message: String = v
        .and_then(|v| v.get("message").or_else(|| v.get("error")))
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let said = if message.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {message}")
    };
    // gRPC codes: 4 deadline, 5 not found, 7 denied, 8 exhausted,
    // 11 out of range, 14 unavailable, 16 unauthenticated.
    match (code, status) {
        (Some(4), _) | (None, 504) => Failure::DeadlineExceeded,
        (Some(5), _) if message.contains("lease") => Failure::LeaseNotFound,
        (Some(8), _) if message.contains("space") || message.contains("quota") => {
            Failure::QuotaFull
        }
        (Some(11), _) | (_, 400) if message.contains("compacted") => Failure::Compacted,
        (_, 400) if message.contains("too large") || message.contains("too many operations") => {
            Failure::TooLarge
        }
        // A token missing (auth on, none sent: code 3 on 3.4), expired or
        // revoked; a wrong password is code 3 too, but says so.
        (Some(16), _) | (None, 401) => Failure::Unauthenticated(said),
        (Some(3), _) if message.contains("user name is empty") => Failure::Unauthenticated(said),
        (Some(3), _) if message.contains("authentication failed") => Failure::Denied(said),
        (Some(7), _) | (None, 403) => Failure::Denied(said),
        (Some(14), _) | (None, 502 | 503) => Failure::Unavailable(said),
        _ => Failure::Other(said),
    }
}

/// A transaction's answer.
pub fn txn(result: &CallResult) -> Result<Txn, Failure> {
    let v = body(result)?;
    let ranged = v
        .get("responses")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r.get("response_range"))
                .map(kvs_of)
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    Ok(Txn {
        succeeded: v.get("succeeded").and_then(Value::as_bool).unwrap_or(false),
        revision: revision(&v)?,
        ranged,
    })
}

/// A range's answer.
pub fn range(result: &CallResult) -> Result<Range, Failure> {
    let v = body(result)?;
    Ok(Range {
        kvs: kvs_of(&v)?,
        more: v.get("more").and_then(Value::as_bool).unwrap_or(false),
        revision: revision(&v)?,
    })
}

/// A lease grant's answer.
pub fn lease_grant(result: &CallResult) -> Result<Lease, Failure> {
    let v = body(result)?;
    if let Some(e) = v
        .get("error")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
    {
        return Err(Failure::Other(e.chars().take(200).collect()));
    }
    let id = v.get("ID").and_then(int).filter(|id| *id != 0);
    let ttl_s = v.get("TTL").and_then(int).filter(|t| *t > 0);
    match (id, ttl_s) {
        (Some(id), Some(ttl_s)) => Ok(Lease { id, ttl_s }),
        _ => Err(Failure::Malformed("a lease grant without ID or TTL".into())),
    }
}

/// A keepalive's answer: the lease's renewed TTL, or
/// [`Failure::LeaseNotFound`] when it is gone (the gateway answers 200 with
/// no `TTL` then, or a 404 from newer versions).
pub fn lease_keepalive(result: &CallResult) -> Result<i64, Failure> {
    let v = body(result)?;
    // The gateway streams: one answer, wrapped in `result`.
    let r = v.get("result").unwrap_or(&v);
    r.get("TTL")
        .and_then(int)
        .filter(|t| *t > 0)
        .ok_or(Failure::LeaseNotFound)
}

pub(super) fn revision(v: &Value) -> Result<i64, Failure> {
    v.get("header")
        .and_then(|h| h.get("revision"))
        .and_then(int)
        .ok_or_else(|| Failure::Malformed("no header.revision".into()))
}

pub(super) fn kvs_of(v: &Value) -> Result<Vec<Kv>, Failure> {
    let Some(list) = v.get("kvs") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| Failure::Malformed("kvs is not a list".into()))?;
    list.iter()
        .map(|kv| {
            let bytes = |name: &str| match kv.get(name).and_then(Value::as_str) {
                None => Ok(Vec::new()),
                Some(s) => STANDARD
                    .decode(s)
                    .map_err(|_| Failure::Malformed(format!("{name} is not base64"))),
            };
            let number = |name: &str| kv.get(name).and_then(int).unwrap_or(0);
            Ok(Kv {
                key: bytes("key")?,
                value: bytes("value")?,
                create_revision: number("create_revision"),
                mod_revision: number("mod_revision"),
                lease: number("lease"),
            })
        })
        .collect()
}

/// An int64 as the gateway writes it: a string, or (leniently) a number.
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;

    fn answer(status: u16, body: Value) -> CallResult {
        CallResult::json(status, &body)
    }

    // Bodies as etcd 3.4's gateway writes them.
    const HEADER: &str = r#"{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"8","raft_term":"2"}"#;

    fn header() -> Value {
        serde_json::from_str(HEADER).unwrap()
    }

    #[test]
    fn a_created_key_and_a_compare_that_failed_read_alike() {
        let won = answer(
            200,
            json!({"header": header(), "succeeded": true,
            "responses": [{"response_put": {"header": {"revision": "8"}}}]}),
        );
        assert_eq!(
            txn(&won).unwrap(),
            Txn {
                succeeded: true,
                revision: 8,
                ranged: vec![]
            }
        );
        // `succeeded` left out: false. The failure branch read the key.
        let lost = answer(
            200,
            json!({"header": header(), "responses": [{"response_range": {
            "header": {"revision": "8"},
            "kvs": [{"key": "ZW1yL2xlYWRlcg==", "create_revision": "5", "mod_revision": "5",
                     "version": "1", "value": "cmVwbGljYS0x", "lease": "7587869102"}],
            "count": "1"}}]}),
        );
        let t = txn(&lost).unwrap();
        assert!(!t.succeeded);
        assert_eq!(t.ranged.len(), 1);
        assert_eq!(t.ranged[0].key, b"emr/leader");
        assert_eq!(t.ranged[0].value, b"replica-1");
        assert_eq!(
            (t.ranged[0].create_revision, t.ranged[0].lease),
            (5, 7_587_869_102)
        );
    }

    #[test]
    fn nothing_found_is_an_empty_range() {
        let r = range(&answer(200, json!({"header": header()}))).unwrap();
        assert_eq!((r.kvs.len(), r.more, r.revision), (0, false, 8));
        assert!(matches!(
            range(&answer(
                200,
                json!({"header": header(), "kvs": [{"key": "%%"}]})
            )),
            Err(Failure::Malformed(_))
        ));
    }

    #[test]
    fn leases_are_granted_and_kept_alive_until_gone() {
        let granted = answer(
            200,
            json!({"header": header(), "ID": "7587869102", "TTL": "3"}),
        );
        assert_eq!(
            lease_grant(&granted).unwrap(),
            Lease {
                id: 7_587_869_102,
                ttl_s: 3
            }
        );
        let alive = answer(
            200,
            json!({"result": {"header": header(), "ID": "7587869102", "TTL": "3"}}),
        );
        assert_eq!(lease_keepalive(&alive).unwrap(), 3);
        // Gone: no TTL in the answer (3.4), or a 404 with code 5 (newer).
        let gone = answer(
            200,
            json!({"result": {"header": header(), "ID": "7587869102"}}),
        );
        assert_eq!(lease_keepalive(&gone), Err(Failure::LeaseNotFound));
        let gone = answer(
            404,
            json!({"error": "etcdserver: requested lease not found",
            "message": "etcdserver: requested lease not found", "code": 5}),
        );
        assert_eq!(lease_keepalive(&gone), Err(Failure::LeaseNotFound));
    }

    #[test]
    fn errors_are_sorted_by_what_the_caller_does() {
        let e = |status, body| body_failure(answer(status, body));
        fn body_failure(r: CallResult) -> Failure {
            body(&r).unwrap_err()
        }
        let no_leader = e(
            503,
            json!({"error": "etcdserver: no leader",
                                     "message": "etcdserver: no leader", "code": 14}),
        );
        assert!(matches!(&no_leader, Failure::Unavailable(m) if m.contains("no leader")));
        assert!(no_leader.is_transient());
        assert_eq!(
            e(
                429,
                json!({"message": "etcdserver: mvcc: database space exceeded", "code": 8})
            ),
            Failure::QuotaFull
        );
        assert!(!Failure::QuotaFull.is_transient());
        assert_eq!(
            e(
                400,
                json!({"message": "etcdserver: mvcc: required revision has been compacted", "code": 11})
            ),
            Failure::Compacted
        );
        assert!(matches!(
            e(
                403,
                json!({"message": "etcdserver: permission denied", "code": 7})
            ),
            Failure::Denied(_)
        ));
        // etcd's auth: a token to get again, or credentials that are wrong.
        let expired = e(
            401,
            json!({"message": "etcdserver: invalid auth token", "code": 16}),
        );
        assert!(matches!(expired, Failure::Unauthenticated(_)));
        assert!(expired.is_transient());
        assert!(matches!(
            e(
                400,
                json!({"message": "etcdserver: user name is empty", "code": 3})
            ),
            Failure::Unauthenticated(_)
        ));
        assert!(matches!(
            e(
                400,
                json!({"message": "etcdserver: authentication failed, invalid user ID or password", "code": 3})
            ),
            Failure::Denied(_)
        ));
        assert_eq!(
            e(
                400,
                json!({"message": "etcdserver: too many operations in txn request", "code": 3})
            ),
            Failure::TooLarge
        );
        assert_eq!(
            e(
                504,
                json!({"message": "context deadline exceeded", "code": 4})
            ),
            Failure::DeadlineExceeded
        );
        // A proxy's bare 503 (no member reachable).
        assert!(matches!(
            body_failure(CallResult::Response { status: 503, headers: vec![], body: b"no healthy upstream".to_vec() }),
            Failure::Unavailable(m) if m == "HTTP 503"
        ));
        assert_eq!(body(&CallResult::Failed), Err(Failure::Transport));
        assert!(matches!(
            body(&CallResult::Response {
                status: 200,
                headers: vec![],
                body: b"<html>".to_vec()
            }),
            Err(Failure::Malformed(_))
        ));
        // What is shown is bounded and printable.
        let long = e(
            500,
            json!({"message": format!("x\u{1b}{}", "y".repeat(500)), "code": 2}),
        );
        assert!(matches!(&long, Failure::Other(m) if m.len() < 220 && !m.contains('\u{1b}')));
    }
}
