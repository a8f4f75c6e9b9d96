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
use crate::event::Source;
use crate::genesys::{GenesysConfig, GenesysSettings};
use crate::itsm::{ItsmConfig, ItsmSettings};
use crate::ledger::Retention;
use crate::quota::{Shares, RACE_MARGIN};
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
    tombstones_per_source: u32,
}

impl Default for RawLedger {
    fn default() -> Self {
        let r = Retention::default();
        Self {
            closed_retention_seconds: u32::try_from(r.closed_seconds).unwrap_or(86_400),
            max_closed_incidents: u32::try_from(r.max_closed).unwrap_or(1_000),
            max_open_incidents: u32::try_from(r.max_open).unwrap_or(1_000),
            tombstones_per_source: u32::try_from(r.max_tombstones).unwrap_or(10_000),
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
    /// Each source's share of the open incidents ([`crate::quota`]).
    pub shares: Shares,
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
    let tombstones = in_range(
        "ledger.tombstones_per_source",
        l.tombstones_per_source,
        100,
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
    let shares = shares(&sources, max_open)?;
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
    no_shared_secrets(&sources, &status)?;
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
    // A tombstone must outlive any event time the intake still accepts.
    let skew = Source::ALL
        .iter()
        .map(|s| sources.get(*s).mapping().max_future_skew_seconds())
        .max()
        .unwrap_or(0);
    Ok(Config {
        sources,
        shares,
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
            // The ledger's own bound: the shares, plus room for the one
            // race that can pass a share (see `crate::quota`).
            max_open: usize::try_from(max_open)
                .unwrap_or(1_000)
                .saturating_add(RACE_MARGIN),
            tombstone_seconds: i64::from(replay) + i64::from(skew),
            max_tombstones: usize::try_from(tombstones).unwrap_or(10_000),
        },
    })
}

/// Each source's share of `ledger.max_open_incidents`: what its
/// `max_open_incidents` says, and for the routes that take deliveries and
/// say nothing, an equal part of what is left. The shares add up to at most
/// the ledger's bound, so no source can take another's room.
fn shares(sources: &CompiledSources, max_open: u32) -> Result<Shares, ConfigError> {
    let mut limits = std::collections::BTreeMap::new();
    let mut given: u64 = 0;
    let mut unset = Vec::new();
    for s in Source::ALL {
        let cfg = sources.get(s);
        match cfg.max_open_incidents() {
            Some(n) => {
                in_range(&format!("sources.{s}.max_open_incidents"), n, 1, max_open)?;
                given += u64::from(n);
                limits.insert(s, n);
            }
            None if cfg.auth().accepts_deliveries() => unset.push(s),
            None => {}
        }
    }
    if given > u64::from(max_open) {
        return Err(ConfigError::new(
            "sources",
            format!(
                "the sources' max_open_incidents add up to {given}, more than \
                 ledger.max_open_incidents ({max_open}): one source could take another's room"
            ),
        ));
    }
    let left = u64::from(max_open) - given;
    if let Some(first) = unset.first() {
        let share = left / unset.len() as u64;
        if share == 0 {
            return Err(ConfigError::new(
                format!("sources.{first}.max_open_incidents"),
                format!(
                    "is not set, and ledger.max_open_incidents ({max_open}) leaves no room for it \
                     after the shares given to other sources"
                ),
            ));
        }
        for s in unset {
            limits.insert(s, u32::try_from(share).unwrap_or(u32::MAX));
        }
    }
    Ok(Shares::new(limits))
}

/// Refuses a secret that two routes accept: a delivery signed or
/// authorised for one route would be accepted on the other (a Standard
/// Webhooks delivery for `/webhooks/standard` replayed to
/// `/webhooks/canonical` opened a second incident there).
fn no_shared_secrets(sources: &CompiledSources, status: &StatusAccess) -> Result<(), ConfigError> {
    // (route, [(config field, SHA-256 of a secret it accepts)])
    type Secrets = Vec<(String, [u8; 32])>;
    let mut routes: Vec<(String, Secrets)> = Source::ALL
        .iter()
        .map(|s| {
            let base = format!("sources.{s}.auth");
            (s.to_string(), sources.get(*s).auth().secret_digests(&base))
        })
        .collect();
    if let StatusAccess::Credential(c) = status {
        routes.push(("/emr".into(), c.secret_digests("status.auth")));
    }
    for (i, (_, secrets)) in routes.iter().enumerate() {
        for (field, digest) in secrets {
            let earlier = routes
                .iter()
                .take(i)
                .flat_map(|(_, s)| s)
                .find(|(_, d)| d == digest);
            if let Some((other, _)) = earlier {
                return Err(ConfigError::new(
                    field.clone(),
                    format!(
                        "uses the same secret as {other}: give each route its own, or a delivery \
                         meant for one route is accepted on the other"
                    ),
                ));
            }
        }
    }
    Ok(())
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
    fn each_source_that_takes_deliveries_gets_a_share_of_the_open_incidents() {
        // Two routes open, none given: half each; the ledger keeps a margin.
        let c = parse(
            br#"{"sources":{"canonical":{"insecure":true},"alertmanager":{"insecure":true}}}"#,
        )
        .unwrap();
        assert_eq!(c.shares.limit(Source::Canonical), 500);
        assert_eq!(c.shares.limit(Source::Alertmanager), 500);
        assert_eq!(c.shares.limit(Source::Pagerduty), 0);
        assert_eq!(c.retention.max_open, 1_000 + RACE_MARGIN);
        // One given: the others share what it leaves.
        let c = parse(
            br#"{"ledger":{"max_open_incidents":100},"sources":{
                "canonical":{"insecure":true},
                "standard":{"insecure":true},
                "alertmanager":{"insecure":true,"max_open_incidents":10}}}"#,
        )
        .unwrap();
        assert_eq!(c.shares.limit(Source::Alertmanager), 10);
        assert_eq!(c.shares.limit(Source::Canonical), 45);
        assert_eq!(c.shares.limit(Source::Standard), 45);
        // More than the ledger holds: refused, named.
        let e = parse(
            br#"{"ledger":{"max_open_incidents":100},"sources":{
                "canonical":{"insecure":true,"max_open_incidents":60},
                "alertmanager":{"insecure":true,"max_open_incidents":60}}}"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "sources");
        assert!(e.message.contains("add up to 120"), "{e}");
        let e = parse(
            br#"{"ledger":{"max_open_incidents":100},"sources":{
                "canonical":{"insecure":true,"max_open_incidents":100},
                "alertmanager":{"insecure":true}}}"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "sources.alertmanager.max_open_incidents");
        let e = parse(br#"{"sources":{"canonical":{"insecure":true,"max_open_incidents":0}}}"#)
            .unwrap_err();
        assert_eq!(e.field, "sources.canonical.max_open_incidents");
    }

    #[test]
    fn max_alerts_is_for_alertmanager_only() {
        let c =
            parse(br#"{"sources":{"alertmanager":{"insecure":true,"max_alerts":20}}}"#).unwrap();
        assert_eq!(c.sources.get(Source::Alertmanager).max_items(), 20);
        let c = parse(br#"{"sources":{"alertmanager":{"insecure":true}}}"#).unwrap();
        assert_eq!(c.sources.get(Source::Alertmanager).max_items(), 100);
        let e =
            parse(br#"{"sources":{"pagerduty":{"insecure":true,"max_alerts":20}}}"#).unwrap_err();
        assert_eq!(e.field, "sources.pagerduty.max_alerts");
        let e =
            parse(br#"{"sources":{"alertmanager":{"insecure":true,"max_alerts":0}}}"#).unwrap_err();
        assert_eq!(e.field, "sources.alertmanager.max_alerts");
    }

    #[test]
    fn one_secret_on_two_routes_is_refused() {
        // A Standard Webhooks delivery signed for /webhooks/standard was
        // accepted on /webhooks/canonical (issue 12, finding 11).
        let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let env = |k: &str| match k {
            "A" | "B" => Some(whsec.to_owned()),
            "TOKEN" | "SAME_TOKEN" => Some("a-long-enough-shared-token".to_owned()),
            "OTHER" => Some("another-long-enough-token".to_owned()),
            _ => None,
        };
        let e = super::parse(
            br#"{"sources":{
                "canonical":{"auth":[{"kind":"standard_webhooks","secret_env":"A"}]},
                "standard":{"auth":[{"kind":"standard_webhooks","secret_env":"B"}]}}}"#,
            &env,
        )
        .unwrap_err();
        assert_eq!(e.field, "sources.standard.auth[0]");
        assert!(e.message.contains("sources.canonical.auth[0]"), "{e}");
        assert!(!e.to_string().contains("MfKQ9r8"), "{e}");
        // A bearer token of a route reused as the /emr credential.
        let e = super::parse(
            br#"{"sources":{"opsgenie":{"auth":[{"kind":"bearer","token_env":"TOKEN"}]}},
                "status":{"auth":{"kind":"bearer","token_env":"SAME_TOKEN"}}}"#,
            &env,
        )
        .unwrap_err();
        assert_eq!(e.field, "status.auth");
        // Distinct secrets, and one route listing two (a rotation): fine.
        super::parse(
            br#"{"sources":{"opsgenie":{"auth":[{"kind":"bearer","token_env":"TOKEN"},
                                                {"kind":"bearer","token_env":"SAME_TOKEN"}]}},
                "status":{"auth":{"kind":"bearer","token_env":"OTHER"}}}"#,
            &env,
        )
        .unwrap();
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
