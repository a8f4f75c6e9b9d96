//! etcd's JSON gateway, as pure logic: the requests cluster mode makes and
//! what their answers mean. Like [`crate::genesys`], it only says *which*
//! call to make; the service's glue dispatches it with `dispatch_http_call`.
//!
//! Why the gateway (`POST /v3/kv/txn`, `/v3/lease/*`, JSON over HTTP/1.1)
//! rather than etcd's gRPC: every call cluster mode needs is one request and
//! one answer (a transaction, a lease grant or keepalive, a range), which
//! `dispatch_http_call` does today, through an ordinary Envoy cluster with
//! upstream TLS. The gateway's watch never completes over a callout, so
//! changes are found by reading one small key, not by a watch.
//!
//! What the gateway is like (measured on etcd 3.4; docs/cluster.md):
//! - keys and values are standard base64; a prefix's `range_end` is the
//!   prefix with its last byte incremented ([`prefix_end`]);
//! - int64 fields come back as strings, and fields that are false or zero
//!   are left out: `succeeded` is absent when a compare failed, `kvs` when
//!   nothing matched, `TTL` in a keepalive when the lease is gone;
//! - unknown request fields are silently ignored, so every compare names
//!   its `target` and `result`, and the builders here are the only place
//!   request JSON is written;
//! - without a deadline a request to a cluster that lost its quorum hangs
//!   for 7 s: every call carries `Grpc-Timeout` and
//!   `Grpc-Metadata-hasleader: true`, which fails it in milliseconds.
//!
//! - [`config`]: the `cluster` config section;
//! - [`answer`]: answers and errors, sorted into what the caller acts on;
//! - [`election`]: leader election on a lease, by-value like the
//!   reconciler;
//! - [`log`]: the event log: an intake's commit, the leader's reads;
//! - [`feed`]: the log read in order, from the start or where it was;
//! - [`retention`]: the leases that keep the log one dedupe window long;
//! - [`snapshot`]: the leader's record of what the log said, for when its
//!   oldest entries have gone;
//! - [`token`]: etcd's auth, when it is on.

pub mod answer;
pub mod config;
pub mod election;
pub mod feed;
pub mod log;
pub mod retention;
pub mod snapshot;
pub mod token;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::callout::{HttpCall, OpId, USER_AGENT};

/// The smallest lease TTL etcd grants, in seconds.
pub const MIN_LEASE_TTL_S: i64 = 2;

/// A request to the gateway, before the host, headers and op are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub path: &'static str,
    pub body: Value,
}

/// Where and how calls to etcd go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// The Envoy cluster of the etcd members.
    pub cluster: String,
    /// `:authority` of every call.
    pub authority: String,
    /// Each call's deadline, told to etcd too (`Grpc-Timeout`), so that a
    /// slow cluster answers an error instead of holding the call.
    pub timeout_ms: u64,
}

impl Gateway {
    /// The call for `request`, with its deadline and the header that makes
    /// a member without a leader refuse at once.
    pub fn call(&self, op: OpId, request: Request) -> HttpCall {
        HttpCall {
            op,
            cluster: self.cluster.clone(),
            method: "POST",
            path: request.path.to_owned(),
            authority: self.authority.clone(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("user-agent".into(), USER_AGENT.into()),
                ("grpc-timeout".into(), format!("{}m", self.timeout_ms)),
                ("grpc-metadata-hasleader".into(), "true".into()),
            ],
            body: Some(request.body.to_string().into_bytes()),
            timeout_ms: self.timeout_ms,
        }
    }
}

#[cfg(test)]
impl Gateway {
    /// The gateway the state machines' tests call: cluster `etcd`, 500 ms.
    pub(crate) fn for_tests() -> Self {
        Gateway {
            cluster: "etcd".into(),
            authority: "etcd".into(),
            timeout_ms: 500,
        }
    }
}

/// Base64, as the gateway wants keys and values.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The `range_end` that makes a range cover every key starting with
/// `prefix`: the prefix with its last byte that is not `0xff` incremented
/// (and what follows it dropped). A prefix of only `0xff` bytes (or none)
/// has no such end: `[0]`, which etcd reads as "to the end of the keys".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Creates `key` with `value` only if it does not exist; otherwise reads
/// what is there, so the caller can tell a replay from a conflict in the
/// same round trip. With `lease`, the key goes when the lease does.
pub fn create_if_absent(key: &[u8], value: &[u8], lease: Option<i64>) -> Request {
    Request {
        path: "/v3/kv/txn",
        body: json!({
            "compare": [absent(key)],
            "success": [put(key, value, lease)],
            "failure": [{"request_range": {"key": b64(key)}}],
        }),
    }
}

/// Reads one key.
pub fn get(key: &[u8]) -> Request {
    Request {
        path: "/v3/kv/range",
        body: json!({"key": b64(key)}),
    }
}

/// Grants a lease of `ttl_s` seconds (at least [`MIN_LEASE_TTL_S`]).
pub fn lease_grant(ttl_s: i64) -> Request {
    Request {
        path: "/v3/lease/grant",
        body: json!({"TTL": ttl_s.max(MIN_LEASE_TTL_S).to_string()}),
    }
}

/// Renews lease `id` to its full TTL.
pub fn lease_keepalive(id: i64) -> Request {
    Request {
        path: "/v3/lease/keepalive",
        body: json!({"ID": id.to_string()}),
    }
}

/// Ends lease `id` now, deleting its keys (a leader stepping down).
pub fn lease_revoke(id: i64) -> Request {
    Request {
        path: "/v3/lease/revoke",
        body: json!({"ID": id.to_string()}),
    }
}

/// The leadership a write is fenced on ([`log::commit_fenced`]): the leader key and the revision at
/// which this replica created it (etcd never reuses a revision, so a later
/// leader's key has another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub revision: i64,
}

impl Fence {
    /// The compare that holds while this leadership does.
    pub(crate) fn compare(&self) -> Value {
        json!({
            "key": b64(&self.key),
            "target": "CREATE",
            "result": "EQUAL",
            "create_revision": self.revision.to_string(),
        })
    }
}

fn absent(key: &[u8]) -> Value {
    json!({"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
}

/// A `request_put` of `value` under `key`, on `lease` if any.
fn put(key: &[u8], value: &[u8], lease: Option<i64>) -> Value {
    let mut put = json!({"key": b64(key), "value": b64(value)});
    if let (Some(lease), Some(obj)) = (lease, put.as_object_mut()) {
        obj.insert("lease".into(), Value::String(lease.to_string()));
    }
    json!({ "request_put": put })
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn a_prefix_range_ends_past_every_key_under_it() {
        assert_eq!(prefix_end(b"emr/"), b"emr0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn create_if_absent_compares_the_create_revision_and_reads_on_failure() {
        let r = create_if_absent(b"emr/e/1", b"{}", Some(7));
        assert_eq!(r.path, "/v3/kv/txn");
        assert_eq!(
            r.body,
            json!({
                "compare": [{"key": "ZW1yL2UvMQ==", "target": "CREATE", "result": "EQUAL",
                             "create_revision": "0"}],
                "success": [{"request_put": {"key": "ZW1yL2UvMQ==", "value": "e30=",
                                              "lease": "7"}}],
                "failure": [{"request_range": {"key": "ZW1yL2UvMQ=="}}],
            })
        );
        // No lease: none named (a zero lease would be read as none anyway).
        let r = create_if_absent(b"k", b"v", None);
        assert_eq!(r.body["success"][0]["request_put"].get("lease"), None);
    }

    #[test]
    fn every_call_has_a_deadline_etcd_knows_and_refuses_without_a_leader() {
        let gw = Gateway {
            cluster: "etcd".into(),
            authority: "etcd".into(),
            timeout_ms: 500,
        };
        let call = gw.call(3, lease_grant(1));
        assert_eq!(
            (call.op, call.method, call.path.as_str()),
            (3, "POST", "/v3/lease/grant")
        );
        assert_eq!(call.header("grpc-timeout"), Some("500m"));
        assert_eq!(call.header("grpc-metadata-hasleader"), Some("true"));
        assert_eq!(call.timeout_ms, 500);
        // The TTL is raised to etcd's least.
        let body: Value = serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
        assert_eq!(body, json!({"TTL": "2"}));
    }
}
