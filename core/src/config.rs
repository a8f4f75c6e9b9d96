//! The plugin configuration: parsed once in `on_configure`, validated, and
//! compiled into an immutable [`Config`] every request shares.
//!
//! The same JSON is given to the intake filter and to the singleton service
//! (YAML anchors keep it in one place in Envoy configs); each reads the parts
//! it needs. A bad config is refused with the exact field named, which makes
//! Envoy refuse to start rather than run half-configured.

use std::fmt;

use serde::Deserialize;

use std::sync::Arc;

use crate::auth::{Credential, CredentialConfig};
use crate::contract::{ContractRules, DEFAULT_REPLAY_WINDOW_SECONDS};
use crate::dedupe::DedupeConfig;
use crate::genesys::{GenesysConfig, GenesysSettings};
use crate::itsm::{ItsmConfig, ItsmSettings};
use crate::ledger::Retention;
use crate::sources::{CompiledSources, SourcesConfig};

/// A refused configuration: which field, and why. Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid emr-edge configuration: `{}` {}",
            self.field, self.message
        )
    }
}

/// Largest body the intake accepts at most (Genesys's own API limit; anything
/// an incident tool sends is far smaller).
pub const MAX_BODY_LIMIT: u32 = 512_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    intake: RawIntake,
    #[serde(default)]
    ledger: RawLedger,
    #[serde(default)]
    sources: SourcesConfig,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    genesys: Option<GenesysConfig>,
    #[serde(default)]
    itsm: Option<ItsmConfig>,
}

/// Who may read `/emr/*`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    #[serde(default)]
    auth: Option<CredentialConfig>,
    /// Serve `/emr/*` without a credential (the local default only).
    #[serde(default)]
    insecure: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIntake {
    max_body_bytes: u32,
    replay_window_seconds: u32,
    allow_unknown_fields: bool,
    dedupe_window_seconds: u32,
    dedupe_buckets: u16,
    dedupe_entries_per_bucket: u16,
}

impl Default for RawIntake {
    fn default() -> Self {
        let d = DedupeConfig::default();
        Self {
            max_body_bytes: 65_536,
            replay_window_seconds: DEFAULT_REPLAY_WINDOW_SECONDS,
            allow_unknown_fields: false,
            dedupe_window_seconds: d.window_seconds,
            dedupe_buckets: d.buckets,
            dedupe_entries_per_bucket: d.per_bucket,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLedger {
    closed_retention_seconds: u32,
    max_closed_incidents: u32,
    max_open_incidents: u32,
}

impl Default for RawLedger {
    fn default() -> Self {
        let r = Retention::default();
        Self {
            closed_retention_seconds: u32::try_from(r.closed_seconds).unwrap_or(86_400),
            max_closed_incidents: u32::try_from(r.max_closed).unwrap_or(1_000),
            max_open_incidents: u32::try_from(r.max_open).unwrap_or(1_000),
        }
    }
}

/// The intake's compiled settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intake {
    pub max_body_bytes: usize,
    pub contract: ContractRules,
    pub dedupe: DedupeConfig,
}

/// Who may read the `/emr/*` endpoints.
#[derive(Debug, Clone)]
pub enum StatusAccess {
    Credential(Credential),
    /// Explicitly open (`status.insecure`).
    Open,
    /// No credential configured: refuse everything (fail closed).
    Closed,
}

/// The whole compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub intake: Intake,
    pub retention: Retention,
    pub sources: CompiledSources,
    pub status: StatusAccess,
    /// `None` when no `genesys` section is given: incidents are recorded and
    /// served, but Genesys is never called.
    pub genesys: Option<Arc<GenesysSettings>>,
    /// The ITSM status APIs polled for lost resolution webhooks; `None`
    /// when no `itsm` section is given.
    pub itsm: Option<Arc<ItsmSettings>>,
}

/// Reads an environment variable (in the VM: `vm_config.environment_variables`).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Parses and validates the plugin configuration. Empty means all defaults
/// (every source and the status endpoints then refuse everything: fail closed).
pub fn parse(bytes: &[u8], env: Env<'_>) -> Result<Config, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return compile(RawConfig::default(), env);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        // The root, and an unknown key `""` (serde_path_to_error names it by
        // its empty segment), are `$`: an error always names a field.
        let field = if path == "." || path.is_empty() {
            "$".to_owned()
        } else {
            path
        };
        ConfigError::new(field, strip_position(&e.into_inner().to_string()))
    })?;
    compile(raw, env)
}

fn first_error(base: &str, errors: Vec<crate::problem::FieldError>) -> ConfigError {
    let mut it = errors.into_iter();
    match it.next() {
        Some(e) => {
            let field = if e.field.starts_with(base) {
                e.field
            } else {
                format!("{base}.{}", e.field)
            };
            let more = it.count();
            let message = if more > 0 {
                format!("{} (and {more} more problem(s))", e.message)
            } else {
                e.message
            };
            ConfigError::new(field, message)
        }
        None => ConfigError::new(base, "is invalid"),
    }
}

fn strip_position(msg: &str) -> String {
    msg.rsplit_once(" at line ")
        .map_or(msg, |(m, _)| m)
        .to_owned()
}

fn in_range<T: PartialOrd + fmt::Display + Copy>(
    field: &str,
    v: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    if v < min || v > max {
        return Err(ConfigError::new(
            field,
            format!("must be between {min} and {max}, got {v}"),
        ));
    }
    Ok(v)
}

fn compile(raw: RawConfig, env: Env<'_>) -> Result<Config, ConfigError> {
    let i = raw.intake;
    let max_body = in_range(
        "intake.max_body_bytes",
        i.max_body_bytes,
        1024,
        MAX_BODY_LIMIT,
    )?;
    let replay = in_range(
        "intake.replay_window_seconds",
        i.replay_window_seconds,
        60,
        7 * 86_400,
    )?;
    let window = in_range(
        "intake.dedupe_window_seconds",
        i.dedupe_window_seconds,
        60,
        7 * 86_400,
    )?;
    let buckets = in_range("intake.dedupe_buckets", i.dedupe_buckets, 1, 16_384)?;
    let per_bucket = in_range(
        "intake.dedupe_entries_per_bucket",
        i.dedupe_entries_per_bucket,
        1,
        1024,
    )?;
    let l = raw.ledger;
    let closed = in_range(
        "ledger.closed_retention_seconds",
        l.closed_retention_seconds,
        60,
        30 * 86_400,
    )?;
    let max_closed = in_range(
        "ledger.max_closed_incidents",
        l.max_closed_incidents,
        1,
        1_000_000,
    )?;
    let max_open = in_range(
        "ledger.max_open_incidents",
        l.max_open_incidents,
        1,
        1_000_000,
    )?;
    let contract = ContractRules {
        replay_window_seconds: replay,
        allow_unknown_fields: i.allow_unknown_fields,
    };
    let sources = raw
        .sources
        .compile(env)
        .map_err(|e| first_error("sources", e))?
        .with_contract(&contract);
    let status = match (raw.status.auth, raw.status.insecure) {
        (Some(_), true) => {
            return Err(ConfigError::new(
                "status.insecure",
                "cannot be set together with status.auth",
            ))
        }
        (Some(auth), false) => StatusAccess::Credential(
            auth.compile("status.auth", env)
                .map_err(|e| first_error("status.auth", e))?,
        ),
        (None, true) => StatusAccess::Open,
        (None, false) => StatusAccess::Closed,
    };
    let genesys = match raw.genesys {
        Some(g) => Some(Arc::new(g.compile(env).map_err(|e| {
            let e = e.prefixed("genesys");
            ConfigError::new(e.field, e.message)
        })?)),
        None => None,
    };
    let itsm = match raw.itsm {
        Some(i) => Some(Arc::new(i.compile(env).map_err(|e| {
            ConfigError::new(format!("itsm.{}", e.field), e.message)
        })?)),
        None => None,
    };
    Ok(Config {
        sources,
        status,
        genesys,
        itsm,
        intake: Intake {
            max_body_bytes: usize::try_from(max_body).unwrap_or(65_536),
            contract,
            dedupe: DedupeConfig {
                buckets,
                per_bucket,
                window_seconds: window,
            },
        },
        retention: Retention {
            closed_seconds: i64::from(closed),
            max_closed: usize::try_from(max_closed).unwrap_or(1_000),
            max_open: usize::try_from(max_open).unwrap_or(1_000),
            ..Retention::default()
        },
    })
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        super::parse(bytes, &no_env)
    }

    #[test]
    fn an_unknown_empty_key_is_named_as_the_root() {
        // fuzz/regressions/plugin_config/unknown-empty-key
        for body in [&br#"{"": 1}"#[..], br#"{"intake": {"": 1}}"#, b"[1]"] {
            let e = parse(body).unwrap_err();
            assert!(!e.field.is_empty(), "{e:?}");
        }
        assert_eq!(parse(br#"{"": 1}"#).unwrap_err().field, "$");
    }

    #[test]
    fn empty_config_means_defaults_and_fails_closed() {
        let c = parse(b"").unwrap();
        assert_eq!(c.intake.max_body_bytes, 65_536);
        assert_eq!(c.intake.contract.replay_window_seconds, 86_400);
        assert!(!c.intake.contract.allow_unknown_fields);
        assert!(matches!(c.status, StatusAccess::Closed));
        assert!(c.genesys.is_none());
        assert_eq!(parse(b"{}").unwrap().intake, c.intake);
    }

    #[test]
    fn status_access_is_explicit() {
        let open = parse(br#"{"status":{"insecure":true}}"#).unwrap();
        assert!(matches!(open.status, StatusAccess::Open));
        let env = |k: &str| (k == "TOK").then(|| "a-long-enough-status-token".to_owned());
        let cred = super::parse(
            br#"{"status":{"auth":{"kind":"bearer","token_env":"TOK"}}}"#,
            &env,
        )
        .unwrap();
        assert!(matches!(cred.status, StatusAccess::Credential(_)));
        let missing =
            parse(br#"{"status":{"auth":{"kind":"bearer","token_env":"TOK"}}}"#).unwrap_err();
        assert!(missing.field.starts_with("status.auth"), "{missing}");
        assert!(!missing.to_string().contains("a-long-enough"));
        let both = super::parse(
            br#"{"status":{"insecure":true,"auth":{"kind":"bearer","token_env":"TOK"}}}"#,
            &env,
        )
        .unwrap_err();
        assert_eq!(both.field, "status.insecure");
    }

    #[test]
    fn sources_and_genesys_errors_are_prefixed() {
        let e = parse(br#"{"sources":{"pagerduty":{"auth":[{"kind":"pagerduty_signature","secret_env":"NOPE"}]}}}"#).unwrap_err();
        assert!(e.field.starts_with("sources.pagerduty"), "{e}");
        let e = parse(br#"{"genesys":{"region":"mypurecloud.ie"}}"#).unwrap_err();
        assert!(e.field.starts_with("genesys"), "{e}");
    }

    #[test]
    fn the_itsm_section_is_compiled_with_its_errors_named() {
        let c = parse(br#"{"itsm":{"pagerduty":{"insecure":true,"poll_seconds":2}}}"#).unwrap();
        let itsm = c.itsm.unwrap();
        assert_eq!(itsm.tools.len(), 1);
        assert!(parse(b"{}").unwrap().itsm.is_none());
        let e = parse(br#"{"itsm":{"servicenow":{"insecure":true}}}"#).unwrap_err();
        assert_eq!(e.field, "itsm.servicenow.authority");
        let e = parse(br#"{"itsm":{"jira":{}}}"#).unwrap_err();
        assert_eq!(e.field, "itsm.jira");
        let e = parse(br#"{"genesys":{"region":"mypurecloud.ie","default_group":"g","watchdog":{"period_seconds":1}}}"#);
        let e = e.unwrap_err();
        assert!(e.field.starts_with("genesys"), "{e}");
    }

    #[test]
    fn values_are_read() {
        let c = parse(br#"{"intake":{"max_body_bytes":2048,"allow_unknown_fields":true,"dedupe_buckets":8},"ledger":{"max_closed_incidents":5}}"#).unwrap();
        assert_eq!(c.intake.max_body_bytes, 2048);
        assert!(c.intake.contract.allow_unknown_fields);
        assert_eq!(c.intake.dedupe.buckets, 8);
        assert_eq!(c.retention.max_closed, 5);
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let e = parse(br#"{"intake":{"max_bodybytes":1}}"#).unwrap_err();
        assert_eq!(e.field, "intake.max_bodybytes");
        assert!(e.message.contains("unknown field"), "{e}");
        let e = parse(br#"{"intakes":{}}"#).unwrap_err();
        assert_eq!(e.field, "intakes");
    }

    #[test]
    fn wrong_types_and_ranges_are_named() {
        let e = parse(br#"{"intake":{"max_body_bytes":"big"}}"#).unwrap_err();
        assert_eq!(e.field, "intake.max_body_bytes");
        let e = parse(br#"{"intake":{"max_body_bytes":10}}"#).unwrap_err();
        assert_eq!(e.field, "intake.max_body_bytes");
        assert!(e.message.contains("between"));
        let e = parse(br#"{"ledger":{"closed_retention_seconds":1}}"#).unwrap_err();
        assert_eq!(e.field, "ledger.closed_retention_seconds");
        assert!(parse(b"not json").is_err());
    }
}
