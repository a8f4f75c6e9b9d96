//! The `cluster` config section: where etcd is, and how this replica takes
//! part. Compiled once into [`ClusterSettings`].
//!
//! ```json
//! "cluster": {
//!   "etcd_cluster": "etcd",
//!   "replica_id_env": "EMR_REPLICA_ID",
//!   "key_prefix": "emr/",
//!   "lease_ttl_seconds": 3,
//!   "timeout_ms": 500,
//!   "poll_ms": 50,
//!   "auth": {"user_env": "EMR_ETCD_USER", "password_env": "EMR_ETCD_PASSWORD"}
//! }
//! ```
//!
//! Problems are named within the section (`lease_ttl_seconds`); the config
//! puts them under `cluster`.

use chrono::Duration;
use serde::Deserialize;

use super::election;
use super::log::Keys;
use super::token::Credentials;
use super::Gateway;
use crate::envvar::Env;
use crate::field::{in_range, read_env, Spaces};
use crate::problem::FieldError;

/// The section as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The Envoy cluster of the etcd members (its upstream TLS, with a
    /// client certificate in production, is Envoy's to configure).
    pub etcd_cluster: String,
    /// `:authority` of the calls to etcd; default: `etcd_cluster`.
    pub etcd_authority: Option<String>,
    /// The environment variable holding this replica's id (unique among
    /// the replicas: a pod's name). Listed in the VM's `host_env_keys`.
    pub replica_id_env: String,
    /// Every key emr-edge writes starts with it. Default `emr/`.
    pub key_prefix: Option<String>,
    /// The leadership lease, in seconds (2 to 60, default 3): a replica
    /// that dies is replaced within about this long.
    pub lease_ttl_seconds: Option<u32>,
    /// Each etcd call's deadline (50 to 10,000 ms, default 500).
    pub timeout_ms: Option<u64>,
    /// How often a service looks for new events (20 to 5,000 ms, default
    /// 50): the most an event accepted at another replica waits. The
    /// service ticks this often when it is under 100 ms.
    pub poll_ms: Option<u64>,
    /// etcd's auth, when it is on: where the user and password are.
    pub auth: Option<AuthConfig>,
}

/// `cluster.auth`: the environment variables holding the etcd user and its
/// password (listed in the VM's `host_env_keys`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub user_env: String,
    pub password_env: String,
}

/// The compiled section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub gateway: Gateway,
    pub keys: Keys,
    pub replica: String,
    pub lease_ttl_s: i64,
    pub poll: Duration,
    /// etcd's auth, when it is on.
    pub auth: Option<Credentials>,
}

impl ClusterSettings {
    /// The election's settings for this replica.
    pub fn election(&self) -> election::Settings {
        election::Settings {
            key: self.keys.leader(),
            replica: self.replica.clone(),
            ttl_s: self.lease_ttl_s,
        }
    }
}

/// The longest replica id or key prefix, in characters.
const MAX_NAME: usize = 64;

/// Compiles the section; problems are named within it.
pub fn compile(c: &ClusterConfig, env: Env<'_>) -> Result<ClusterSettings, Vec<FieldError>> {
    let mut problems = Vec::new();
    if c.etcd_cluster.trim().is_empty() {
        problems.push(FieldError::new(
            "etcd_cluster",
            "is required: the Envoy cluster of the etcd members",
        ));
    }
    let authority = c
        .etcd_authority
        .clone()
        .unwrap_or_else(|| c.etcd_cluster.clone());
    let prefix = c.key_prefix.clone().unwrap_or_else(|| "emr/".to_owned());
    if prefix.is_empty()
        || prefix.len() > MAX_NAME
        || !prefix.ends_with('/')
        || !prefix.bytes().all(|b| b.is_ascii_graphic())
    {
        problems.push(FieldError::new(
            "key_prefix",
            format!("must be 1 to {MAX_NAME} visible ASCII characters ending in `/`"),
        ));
    }
    let replica = if c.replica_id_env.trim().is_empty() {
        problems.push(FieldError::new(
            "replica_id_env",
            "is required: the environment variable holding this replica's id",
        ));
        None
    } else {
        read_env(
            env,
            "replica_id_env",
            &c.replica_id_env,
            Spaces::Trim,
            &mut problems,
        )
    };
    if let Some(id) = &replica {
        if id.is_empty() || id.len() > MAX_NAME || !id.bytes().all(|b| b.is_ascii_graphic()) {
            problems.push(FieldError::new(
                "replica_id_env",
                format!(
                    "environment variable {} must hold 1 to {MAX_NAME} visible ASCII characters",
                    c.replica_id_env
                ),
            ));
        }
    }
    let ttl = in_range(
        "lease_ttl_seconds",
        c.lease_ttl_seconds.unwrap_or(3),
        2,
        60,
        &mut problems,
    );
    let timeout_ms = in_range(
        "timeout_ms",
        c.timeout_ms.unwrap_or(500),
        50,
        10_000,
        &mut problems,
    );
    let poll_ms = in_range("poll_ms", c.poll_ms.unwrap_or(50), 20, 5_000, &mut problems);
    let auth = c.auth.as_ref().and_then(|a| {
        let user = read_env(
            env,
            "auth.user_env",
            &a.user_env,
            Spaces::Refuse,
            &mut problems,
        )
        .filter(|u| !u.is_empty());
        let password =
            crate::auth::read_secret_env(env, &a.password_env, "auth.password_env", &mut problems);
        Some(Credentials {
            user: user?,
            password: password?,
        })
    });
    if c.auth.is_some() && auth.is_none() && problems.is_empty() {
        problems.push(FieldError::new(
            "auth.user_env",
            "must name a non-empty user",
        ));
    }
    if u64::from(ttl) * 1000 < timeout_ms * 2 {
        problems.push(FieldError::new(
            "timeout_ms",
            "must be at most half the lease: a renewal that times out must leave time for another",
        ));
    }
    match replica {
        Some(replica) if problems.is_empty() => Ok(ClusterSettings {
            gateway: Gateway {
                cluster: c.etcd_cluster.clone(),
                authority,
                timeout_ms,
            },
            keys: Keys::new(&prefix),
            replica,
            lease_ttl_s: i64::from(ttl),
            poll: Duration::milliseconds(i64::try_from(poll_ms).unwrap_or(50)),
            auth,
        }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "EMR_REPLICA_ID" => Some("envoy-0".into()),
            "ETCD_USER" => Some("emr".into()),
            "ETCD_PASSWORD" => Some("a-long-etcd-password".into()),
            "SHORT" => Some("short".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn compile_json(v: serde_json::Value) -> Result<ClusterSettings, Vec<FieldError>> {
        compile(&serde_json::from_value(v).unwrap(), &env)
    }

    #[test]
    fn the_least_section_takes_the_defaults() {
        let s = compile_json(json!({"etcd_cluster": "etcd", "replica_id_env": "EMR_REPLICA_ID"}))
            .unwrap();
        assert_eq!(s.replica, "envoy-0");
        assert_eq!(s.gateway.cluster, "etcd");
        assert_eq!(s.gateway.authority, "etcd");
        assert_eq!(s.gateway.timeout_ms, 500);
        assert_eq!(s.lease_ttl_s, 3);
        assert_eq!(s.poll, Duration::milliseconds(50));
        assert_eq!(s.keys.leader(), b"emr/leader");
        assert_eq!(s.election().replica, "envoy-0");
    }

    #[test]
    fn every_problem_is_named() {
        let problems = compile_json(json!({
            "etcd_cluster": "", "replica_id_env": "NOT_SET", "key_prefix": "emr",
            "lease_ttl_seconds": 1, "timeout_ms": 5, "poll_ms": 9000
        }))
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "etcd_cluster",
                "key_prefix",
                "replica_id_env",
                "lease_ttl_seconds",
                "timeout_ms",
                "poll_ms"
            ]
        );
        assert!(problems[2].message.contains("NOT_SET"));
        // A replica id that is empty, and a timeout as long as the lease.
        let problems = compile_json(json!({
            "etcd_cluster": "etcd", "replica_id_env": "EMPTY", "timeout_ms": 2000,
            "lease_ttl_seconds": 3
        }))
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["replica_id_env", "timeout_ms"]);
        // etcd's auth: both variables set, the password long enough, and
        // neither value in a message.
        let s = compile_json(
            json!({"etcd_cluster": "etcd", "replica_id_env": "EMR_REPLICA_ID",
            "auth": {"user_env": "ETCD_USER", "password_env": "ETCD_PASSWORD"}}),
        )
        .unwrap();
        assert_eq!(s.auth.as_ref().unwrap().user, "emr");
        assert!(!format!("{s:?}").contains("a-long-etcd-password"));
        let problems = compile_json(
            json!({"etcd_cluster": "etcd", "replica_id_env": "EMR_REPLICA_ID",
            "auth": {"user_env": "NOT_SET", "password_env": "SHORT"}}),
        )
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["auth.user_env", "auth.password_env"]);
        assert!(!format!("{problems:?}").contains("short\""));
        // Unknown fields are refused by name.
        assert!(serde_json::from_value::<ClusterConfig>(json!({"etcd": "x"})).is_err());
    }
}
