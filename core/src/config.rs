//! The plugin configuration: parsed once in `on_configure`, validated, and
//! compiled into an immutable [`Config`] every request shares.
//!
//! The same JSON is given to the intake filter and to the singleton service
//! (YAML anchors keep it in one place in Envoy configs); each reads the parts
//! it needs. A bad config is refused with every problem named by its field,
//! all at once, which makes Envoy refuse to start rather than run
//! half-configured. Each section (and each source) is read on its own, so a
//! typo in one does not hide the problems of the others; only a JSON syntax
//! error stops the reading at the first.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use std::sync::Arc;

use crate::auth::{Credential, CredentialConfig};
use crate::contract::{ContractRules, DEFAULT_REPLAY_WINDOW_SECONDS};
use crate::dedupe::DedupeConfig;
use crate::etcd::config::{ClusterConfig, ClusterSettings};
use crate::event::{GroupId, Source};
use crate::field::in_range;
use crate::genesys::{GenesysConfig, GenesysSettings};
use crate::itsm::{ItsmConfig, ItsmSettings};
use crate::ledger::Retention;
use crate::placeholder;
use crate::problem::FieldError;
use crate::quota::{Shares, RACE_MARGIN};
use crate::sources::{CompiledSources, SourceConfig, SourcesConfig};

/// A refused configuration: every problem found, each naming its field.
/// Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Never empty.
    problems: Vec<FieldError>,
}

/// What every line about a refused configuration starts with (the filter's
/// log lines, `make run`'s summary).
pub const REFUSED: &str = "invalid emr-edge configuration";

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![FieldError::new(field, message)],
        }
    }

    fn from_problems(problems: Vec<FieldError>) -> Self {
        if problems.is_empty() {
            return Self::new("$", "is invalid");
        }
        Self { problems }
    }

    /// Every problem: those of reading the JSON first, then the checks of
    /// each section in turn.
    pub fn problems(&self) -> &[FieldError] {
        &self.problems
    }

    /// The fields named, in order.
    pub fn fields(&self) -> Vec<&str> {
        self.problems.iter().map(|p| p.field.as_str()).collect()
    }

    /// One line per problem, each whole on its own (a log line is read
    /// alone): `invalid emr-edge configuration: `field` message`, or with
    /// `(2 of 3)` after the prefix when there are several.
    pub fn lines(&self) -> Vec<String> {
        let n = self.problems.len();
        self.problems
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let count = if n > 1 {
                    format!(" ({} of {n})", i + 1)
                } else {
                    String::new()
                };
                format!(
                    "{REFUSED}{count}: `{}` {}",
                    one_line(&p.field),
                    one_line(&p.message)
                )
            })
            .collect()
    }
}

#[cfg(test)]
impl ConfigError {
    /// The one problem a test expects.
    pub(crate) fn only(&self) -> &FieldError {
        assert_eq!(self.problems.len(), 1, "{self}");
        &self.problems[0]
    }
}

/// `s` with control characters shown as `?`: a key of the config may hold
/// a line break, and one problem is one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

/// Largest body the intake accepts at most (Genesys's own API limit; anything
/// an incident tool sends is far smaller).
pub const MAX_BODY_LIMIT: u32 = 512_000;

/// `intake.max_body_bytes` when the config gives none.
pub const DEFAULT_MAX_BODY_BYTES: u32 = 65_536;

/// `intake.max_body_bytes` as a plugin configuration says it, or the
/// default: for the tools that render Envoy configs (`scripts/render.py`,
/// the test and bench harnesses). Envoy's buffer filter after the emr-edge
/// filter must let through every body the intake accepts: with a lower
/// `max_request_bytes`, Envoy answers a body in between with its own
/// plain-text 413 before the filter sees it. The shipped templates write
/// `max_request_bytes: {{MAX_BODY_BYTES}}`, filled with this number.
pub fn declared_max_body_bytes(config: &Value) -> u64 {
    config
        .get("intake")
        .and_then(|i| i.get("max_body_bytes"))
        .and_then(Value::as_u64)
        .unwrap_or(u64::from(DEFAULT_MAX_BODY_BYTES))
}

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
    #[serde(default)]
    cluster: Option<ClusterConfig>,
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
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
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
    /// Cluster mode on etcd ([`crate::etcd`]); `None`: one process, its
    /// shared data.
    pub cluster: Option<Arc<ClusterSettings>>,
    /// Every emergency group the config names: `genesys.default_group`,
    /// `groups_by_incident_type`, `datatable.rows_by_group`,
    /// `watchdog.groups` and each mapping rule's `group`. No other group is
    /// ever driven, so no other can be resumed.
    pub groups: BTreeSet<GroupId>,
}

/// Reads an environment variable (in the VM: `vm_config.environment_variables`).
pub type Env<'a> = crate::envvar::Env<'a>;

/// The sections of the configuration.
const SECTIONS: [&str; 7] = [
    "intake", "ledger", "sources", "status", "genesys", "itsm", "cluster",
];

/// Parses and validates the plugin configuration. Empty means all defaults
/// (every source and the status endpoints then refuse everything: fail closed).
/// Refused with every problem found (see the module doc).
pub fn parse(bytes: &[u8], env: Env<'_>) -> Result<Config, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return compile(RawConfig::default(), env).map_err(ConfigError::from_problems);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let typed: Result<RawConfig, _> = serde_path_to_error::deserialize(de);
    let typed_error = typed.as_ref().err().map(|e| from_root(serde_problem(e)));
    // Not JSON at all: nothing more can be read.
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            let error =
                typed_error.unwrap_or_else(|| FieldError::new("$", strip_position(&e.to_string())));
            return Err(ConfigError::from_problems(vec![error]));
        }
    };
    let mut problems = Vec::new();
    placeholder::scan(&value, "", &mut problems);
    let placeholders: BTreeSet<String> = problems.iter().map(|p| p.field.clone()).collect();
    let raw = match typed {
        Ok(raw) => raw,
        Err(_) => {
            // Every section on its own finds what serde stopped at, and
            // what lies after it. Only what a JSON value cannot show (a key
            // given twice) is left to serde's own error.
            let mut found = Vec::new();
            let raw = read_sections(&value, &mut found);
            if found.is_empty() {
                problems.extend(typed_error);
            }
            problems.extend(found);
            raw
        }
    };
    match compile(raw, env) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError::from_problems(problems)),
        Err(more) => {
            // A placeholder is told once, as a placeholder, whatever else
            // its value breaks.
            problems.extend(
                more.into_iter()
                    .filter(|p| !placeholders.contains(&p.field)),
            );
            Err(ConfigError::from_problems(problems))
        }
    }
}

/// Reads each section (and each source) on its own, so that every one of
/// them is told about; a section that cannot be read keeps its defaults.
fn read_sections(value: &Value, problems: &mut Vec<FieldError>) -> RawConfig {
    let mut raw = RawConfig::default();
    let Value::Object(map) = value else {
        problems.push(FieldError::new(
            "$",
            format!(
                "must be a JSON object of the sections {}",
                backticked(SECTIONS.iter().copied())
            ),
        ));
        return raw;
    };
    for (key, v) in map {
        match key.as_str() {
            "intake" => raw.intake = section(v, key, problems).unwrap_or_default(),
            "ledger" => raw.ledger = section(v, key, problems).unwrap_or_default(),
            "sources" => raw.sources = read_sources(v, problems),
            "status" => raw.status = section(v, key, problems).unwrap_or_default(),
            "genesys" => raw.genesys = section(v, key, problems).flatten(),
            "itsm" => raw.itsm = section(v, key, problems).flatten(),
            "cluster" => raw.cluster = section(v, key, problems).flatten(),
            _ => problems.push(from_root(unknown_key(key, SECTIONS.iter().copied()))),
        }
    }
    raw
}

/// The `sources` section, one source at a time.
fn read_sources(value: &Value, problems: &mut Vec<FieldError>) -> SourcesConfig {
    let Value::Object(map) = value else {
        return section(value, "sources", problems).unwrap_or_default();
    };
    let mut sources = SourcesConfig::default();
    for (key, v) in map {
        let field = format!("sources.{key}");
        match Source::from_path_segment(key) {
            Some(s) => {
                *sources.get_mut(s) =
                    section::<SourceConfig>(v, &field, problems).unwrap_or_default();
            }
            None => problems
                .push(unknown_key(key, Source::ALL.iter().map(|s| s.as_str())).under("sources")),
        }
    }
    sources
}

/// One part of the config read as `T`; its error is named under `base`.
fn section<T: DeserializeOwned>(
    value: &Value,
    base: &str,
    problems: &mut Vec<FieldError>,
) -> Option<T> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| problems.push(serde_problem(&e).under(base)))
        .ok()
}

/// What serde found wrong in a part of the config, named within the part:
/// empty for the part itself, and for an unknown key `""`
/// (serde_path_to_error names it by its empty segment).
fn serde_problem(e: &serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let path = e.path().to_string();
    // The part itself reads `.`.
    let field = if path == "." { String::new() } else { path };
    FieldError::new(field, strip_position(&e.inner().to_string()))
}

/// `e` named from the root: an error about the whole config is named `$`,
/// since an error always names a field.
fn from_root(e: FieldError) -> FieldError {
    if e.field.is_empty() {
        FieldError::new("$", e.message)
    } else {
        e
    }
}

/// An unknown key, named within its part (empty for the key `""`).
fn unknown_key<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> FieldError {
    FieldError::new(
        key,
        format!(
            "unknown field `{key}`, expected one of {}",
            backticked(known)
        ),
    )
}

fn backticked<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn strip_position(msg: &str) -> String {
    msg.rsplit_once(" at line ")
        .map_or(msg, |(m, _)| m)
        .to_owned()
}

fn compile(raw: RawConfig, env: Env<'_>) -> Result<Config, Vec<FieldError>> {
    let mut p = Vec::new();
    let i = raw.intake;
    let max_body = in_range(
        "intake.max_body_bytes",
        i.max_body_bytes,
        1024,
        MAX_BODY_LIMIT,
        &mut p,
    );
    let replay = in_range(
        "intake.replay_window_seconds",
        i.replay_window_seconds,
        60,
        7 * 86_400,
        &mut p,
    );
    let window = in_range(
        "intake.dedupe_window_seconds",
        i.dedupe_window_seconds,
        60,
        7 * 86_400,
        &mut p,
    );
    let buckets = in_range("intake.dedupe_buckets", i.dedupe_buckets, 1, 16_384, &mut p);
    let per_bucket = in_range(
        "intake.dedupe_entries_per_bucket",
        i.dedupe_entries_per_bucket,
        1,
        1024,
        &mut p,
    );
    let l = raw.ledger;
    let closed = in_range(
        "ledger.closed_retention_seconds",
        l.closed_retention_seconds,
        60,
        30 * 86_400,
        &mut p,
    );
    let max_closed = in_range(
        "ledger.max_closed_incidents",
        l.max_closed_incidents,
        1,
        1_000_000,
        &mut p,
    );
    let max_open = in_range(
        "ledger.max_open_incidents",
        l.max_open_incidents,
        1,
        1_000_000,
        &mut p,
    );
    let tombstones = in_range(
        "ledger.tombstones_per_source",
        l.tombstones_per_source,
        100,
        1_000_000,
        &mut p,
    );
    let contract = ContractRules {
        replay_window_seconds: replay,
        allow_unknown_fields: i.allow_unknown_fields,
    };
    // The sources and the status credential are given where they sit
    // (`sources.pagerduty`, `status.auth`) and name their fields from the
    // root; the genesys and itsm sections name theirs within the section.
    let sources = match raw.sources.compile(env) {
        Ok(s) => Some(s.with_contract(&contract)),
        Err(e) => {
            p.extend(e);
            None
        }
    };
    let shares = sources.as_ref().map(|s| shares(s, max_open, &mut p));
    let status = match (raw.status.auth, raw.status.insecure) {
        (Some(_), true) => {
            p.push(FieldError::new(
                "status.insecure",
                "cannot be set together with status.auth",
            ));
            None
        }
        (Some(auth), false) => match auth.compile("status.auth", env) {
            Ok(c) => Some(StatusAccess::Credential(c)),
            Err(e) => {
                p.extend(e);
                None
            }
        },
        (None, true) => Some(StatusAccess::Open),
        (None, false) => Some(StatusAccess::Closed),
    };
    if let (Some(sources), Some(status)) = (&sources, &status) {
        no_shared_secrets(sources, status, &mut p);
    }
    let genesys = match raw.genesys {
        Some(g) => match g.compile(env) {
            Ok(g) => Some(Arc::new(g)),
            Err(errors) => {
                p.extend(errors.into_iter().map(|e| e.under("genesys")));
                None
            }
        },
        None => None,
    };
    let itsm = match raw.itsm {
        Some(i) => match i.compile(env) {
            Ok(i) => Some(Arc::new(i)),
            Err(errors) => {
                p.extend(errors.into_iter().map(|e| e.under("itsm")));
                None
            }
        },
        None => None,
    };
    let cluster = match raw.cluster {
        Some(c) => match crate::etcd::config::compile(&c, env) {
            Ok(c) => Some(Arc::new(c)),
            Err(errors) => {
                p.extend(errors.into_iter().map(|e| e.under("cluster")));
                None
            }
        },
        None => None,
    };
    // One commit to etcd carries a delivery's new events.
    let alerts = raw
        .sources
        .alertmanager
        .max_alerts
        .unwrap_or(crate::sources::DEFAULT_MAX_ALERTS);
    if cluster.is_some() && alerts as usize > crate::etcd::log::MAX_BATCH {
        p.push(FieldError::new(
            "sources.alertmanager.max_alerts",
            format!(
                "must be at most {} in cluster mode (one commit to etcd per notification)",
                crate::etcd::log::MAX_BATCH
            ),
        ));
    }
    let (Some(sources), Some(shares), Some(status), true) = (sources, shares, status, p.is_empty())
    else {
        return Err(p);
    };
    // A tombstone must outlive any event time the intake still accepts.
    let skew = Source::ALL
        .iter()
        .map(|s| sources.get(*s).mapping().max_future_skew_seconds())
        .max()
        .unwrap_or(0);
    let mut groups: BTreeSet<GroupId> = Source::ALL
        .iter()
        .flat_map(|s| sources.get(*s).mapping().groups())
        .cloned()
        .collect();
    if let Some(g) = &genesys {
        groups.extend(g.configured_groups());
    }
    Ok(Config {
        sources,
        shares,
        status,
        genesys,
        itsm,
        cluster,
        groups,
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
fn shares(sources: &CompiledSources, max_open: u32, problems: &mut Vec<FieldError>) -> Shares {
    let mut limits = std::collections::BTreeMap::new();
    let mut given: u64 = 0;
    let mut unset = Vec::new();
    for s in Source::ALL {
        let cfg = sources.get(s);
        match cfg.max_open_incidents() {
            Some(n) => {
                let field = format!("sources.{s}.max_open_incidents");
                in_range(&field, n, 1, max_open, problems);
                given += u64::from(n);
                limits.insert(s, n);
            }
            None if cfg.auth().accepts_deliveries() => unset.push(s),
            None => {}
        }
    }
    if given > u64::from(max_open) {
        problems.push(FieldError::new(
            "sources",
            format!(
                "the sources' max_open_incidents add up to {given}, more than \
                 ledger.max_open_incidents ({max_open}): one source could take another's room"
            ),
        ));
        return Shares::new(limits);
    }
    let left = u64::from(max_open) - given;
    if !unset.is_empty() {
        let share = left / unset.len() as u64;
        if share == 0 {
            for s in unset {
                problems.push(FieldError::new(
                    format!("sources.{s}.max_open_incidents"),
                    format!(
                        "is not set, and ledger.max_open_incidents ({max_open}) leaves no room \
                         for it after the shares given to other sources"
                    ),
                ));
            }
            return Shares::new(limits);
        }
        for s in unset {
            limits.insert(s, u32::try_from(share).unwrap_or(u32::MAX));
        }
    }
    Shares::new(limits)
}

/// Refuses a secret that two routes accept: a delivery signed or
/// authorised for one route would be accepted on the other (a Standard
/// Webhooks delivery for `/webhooks/standard` replayed to
/// `/webhooks/canonical` opened a second incident there).
fn no_shared_secrets(
    sources: &CompiledSources,
    status: &StatusAccess,
    problems: &mut Vec<FieldError>,
) {
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
                problems.push(FieldError::new(
                    field.clone(),
                    format!(
                        "uses the same secret as {other}: give each route its own, or a delivery \
                         meant for one route is accepted on the other"
                    ),
                ));
            }
        }
    }
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
    fn the_documented_complete_example_compiles() {
        const EXAMPLE: &str = include_str!("../../examples/config.json");
        // Every variable the example names, with a plausible value.
        let env = |k: &str| {
            use base64::Engine as _;
            let v = if k.contains("WHSEC") {
                // One secret per route: a shared one is refused.
                let key = format!("{k}-0123456789abcdef");
                format!(
                    "whsec_{}",
                    base64::engine::general_purpose::STANDARD.encode(key)
                )
            } else if k.ends_with("_USER") {
                "emr-edge".to_string()
            } else {
                format!("{}-0123456789abcdef", k.to_ascii_lowercase())
            };
            EXAMPLE.contains(k).then_some(v)
        };
        let c = crate::config::parse(EXAMPLE.as_bytes(), &env).unwrap();
        assert!(c.sources.insecure_sources().is_empty());
        assert!(c.genesys.is_some() && c.itsm.is_some());
        // The names the docs use, and only those.
        let docs = [
            include_str!("../../docs/sources.md"),
            include_str!("../../docs/convergence.md"),
            include_str!("../../docs/configuration.md"),
        ];
        for name in EXAMPLE.split('"').filter(|s| s.starts_with("EMR_")) {
            assert!(
                docs.iter().any(|d| d.contains(name)),
                "{name} is in the example but in no doc"
            );
        }
        // Without its variables, it names each one.
        let none = |_: &str| None;
        let e = crate::config::parse(EXAMPLE.as_bytes(), &none).unwrap_err();
        assert!(e.lines().len() >= 15, "{:?}", e.lines());
    }

    #[test]
    fn an_unknown_empty_key_is_named_as_the_root() {
        // fuzz/regressions/plugin_config/unknown-empty-key
        for body in [&br#"{"": 1}"#[..], br#"{"intake": {"": 1}}"#, b"[1]"] {
            let e = parse(body).unwrap_err();
            assert!(!e.only().field.is_empty(), "{e:?}");
        }
        assert_eq!(parse(br#"{"": 1}"#).unwrap_err().only().field, "$");
    }

    #[test]
    fn every_problem_is_told_at_once_each_naming_its_field() {
        // A typo in one section, a wrong type in another, a bad source, a
        // range, a missing secret and a group given by name: all of them.
        let e = parse(
            br#"{
                "intake": {"max_body_bytes": 10, "replay_window_seconds": 1},
                "ledger": {"max_closed_incidents": "many"},
                "sources": {
                    "pagerduty": {"auth": [{"kind": "pagerduty_signature", "secret_env": "PD"}],
                                  "rules": [{"group": "Voice Outage"}]},
                    "opsgenie": {"insecure": true, "rulez": []},
                    "nagios": {}
                },
                "status": {"insecure": true},
                "genesys": {"region": "mypurecloud.ie", "default_group": "g", "limits": {"burst": 0}},
                "itsm": {"servicenow": {"insecure": true}},
                "extra": 1
            }"#,
        )
        .unwrap_err();
        assert_eq!(
            e.fields(),
            [
                "extra",
                "ledger.max_closed_incidents",
                "sources.nagios",
                "sources.opsgenie.rulez",
                "intake.max_body_bytes",
                "intake.replay_window_seconds",
                "sources.pagerduty.auth[0].secret_env",
                "sources.pagerduty.rules[0].group",
                "genesys.client_id_env",
                "genesys.client_secret_env",
                "genesys.limits.burst",
                "itsm.servicenow.authority",
            ],
            "{e}"
        );
        // One line each, each whole on its own.
        let shown = e.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 12, "{shown}");
        assert_eq!(
            lines[4],
            "invalid emr-edge configuration (5 of 12): `intake.max_body_bytes` must be between 1024 and 512000, got 10"
        );
        assert!(lines.iter().all(|l| l.starts_with(REFUSED)), "{shown}");
        assert!(!shown.contains("more problem"), "{shown}");
        // One problem: the line as it always was.
        let e = parse(br#"{"intake":{"max_body_bytes":10}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid emr-edge configuration: `intake.max_body_bytes` must be between 1024 and 512000, got 10"
        );
        // A key given twice is serde's to tell, and still told.
        let e = parse(br#"{"intake":{},"intake":{}}"#).unwrap_err();
        assert!(e.only().message.contains("duplicate field"), "{e}");
        // Not JSON: the one syntax error.
        let e = parse(br#"{"intake": {"max_body_bytes": 10,}}"#).unwrap_err();
        assert_eq!(e.problems().len(), 1, "{e}");
    }

    #[test]
    fn placeholders_left_from_the_example_are_refused_by_field() {
        let env = |k: &str| match k {
            "PD" => Some("a-long-enough-pagerduty-secret".to_owned()),
            "ID" => Some("emr-edge-client".to_owned()),
            "SECRET" => Some("REPLACE-WITH-GENESYS-CLIENT-SECRET".to_owned()),
            _ => None,
        };
        let e = super::parse(
            br#"{
                "sources": {"pagerduty": {
                    "auth": [{"kind": "pagerduty_signature", "secret_env": "PD"}],
                    "rules": [{"match": {}, "queues": ["REPLACE-WITH-QUEUE-ID"]}]}},
                "genesys": {
                    "region": "mypurecloud.ie",
                    "client_id_env": "ID", "client_secret_env": "SECRET",
                    "default_group": "REPLACE-WITH-EMERGENCY-GROUP-ID",
                    "groups_by_incident_type": {"CARRIER_OUTAGE": "Replace with the carrier group"},
                    "datatable": {"id": "replace-with-datatable-id", "row_key": "{group}"}}
            }"#,
            &env,
        )
        .unwrap_err();
        assert_eq!(
            e.fields(),
            [
                "genesys.datatable.id",
                "genesys.default_group",
                "genesys.groups_by_incident_type.CARRIER_OUTAGE",
                "sources.pagerduty.rules[0].queues[0]",
                "genesys.client_secret_env",
            ],
            "{e}"
        );
        let p = e.problems();
        // Each told once, as a placeholder (not also as "not an id").
        assert!(
            p.iter()
                .take(4)
                .all(|p| p.message.starts_with("is still a placeholder")),
            "{e}"
        );
        assert!(
            p[4].message.contains("SECRET still holds a placeholder"),
            "{e}"
        );
        assert!(!e.to_string().contains("GENESYS-CLIENT-SECRET"), "{e}");
    }

    #[test]
    fn every_group_the_config_names_is_known() {
        let env = |k: &str| match k {
            "GENESYS_CLIENT_ID" => Some("emr-edge-client".to_owned()),
            "GENESYS_CLIENT_SECRET" => Some("a-long-enough-client-secret".to_owned()),
            _ => None,
        };
        let c = super::parse(
            br#"{
                "sources": {"pagerduty": {"insecure": true, "rules": [
                    {"match": {"priority": "P1"}, "group": "g-rule"}, {"match": {}}]}},
                "genesys": {"region": "mypurecloud.ie", "default_group": "g-default",
                    "groups_by_incident_type": {"CARRIER_OUTAGE": "g-carrier"},
                    "datatable": {"id": "t", "row_key": "r", "rows_by_group": {"g-row": "k"}},
                    "watchdog": {"groups": ["g-watched"]}}
            }"#,
            &env,
        )
        .unwrap();
        let groups: Vec<&str> = c.groups.iter().map(GroupId::as_str).collect();
        assert_eq!(
            groups,
            ["g-carrier", "g-default", "g-row", "g-rule", "g-watched"]
        );
        assert!(parse(b"").unwrap().groups.is_empty());
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
        assert_eq!(e.only().field, "sources");
        assert!(e.only().message.contains("add up to 120"), "{e}");
        let e = parse(
            br#"{"ledger":{"max_open_incidents":100},"sources":{
                "canonical":{"insecure":true,"max_open_incidents":100},
                "alertmanager":{"insecure":true}}}"#,
        )
        .unwrap_err();
        assert_eq!(e.only().field, "sources.alertmanager.max_open_incidents");
        let e = parse(br#"{"sources":{"canonical":{"insecure":true,"max_open_incidents":0}}}"#)
            .unwrap_err();
        assert_eq!(e.only().field, "sources.canonical.max_open_incidents");
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
        assert_eq!(e.only().field, "sources.pagerduty.max_alerts");
        let e =
            parse(br#"{"sources":{"alertmanager":{"insecure":true,"max_alerts":0}}}"#).unwrap_err();
        assert_eq!(e.only().field, "sources.alertmanager.max_alerts");
    }

    #[test]
    fn one_secret_on_two_routes_is_refused() {
        // A Standard Webhooks delivery signed for /webhooks/standard was
        // accepted on /webhooks/canonical (RELIABILITY.md, hostile senders, #11).
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
        assert_eq!(e.only().field, "sources.standard.auth[0]");
        assert!(
            e.only().message.contains("sources.canonical.auth[0]"),
            "{e}"
        );
        assert!(!e.to_string().contains("MfKQ9r8"), "{e}");
        // A bearer token of a route reused as the /emr credential.
        let e = super::parse(
            br#"{"sources":{"opsgenie":{"auth":[{"kind":"bearer","token_env":"TOKEN"}]}},
                "status":{"auth":{"kind":"bearer","token_env":"SAME_TOKEN"}}}"#,
            &env,
        )
        .unwrap_err();
        assert_eq!(e.only().field, "status.auth");
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
        assert!(missing.only().field.starts_with("status.auth"), "{missing}");
        assert!(!missing.to_string().contains("a-long-enough"));
        let both = super::parse(
            br#"{"status":{"insecure":true,"auth":{"kind":"bearer","token_env":"TOK"}}}"#,
            &env,
        )
        .unwrap_err();
        assert_eq!(both.only().field, "status.insecure");
    }

    #[test]
    fn sources_and_genesys_errors_are_prefixed() {
        let e = parse(br#"{"sources":{"pagerduty":{"auth":[{"kind":"pagerduty_signature","secret_env":"NOPE"}]}}}"#).unwrap_err();
        assert!(e.only().field.starts_with("sources.pagerduty"), "{e}");
        let e = parse(br#"{"genesys":{"region":"mypurecloud.ie"}}"#).unwrap_err();
        assert!(e.only().field.starts_with("genesys"), "{e}");
    }

    #[test]
    fn the_cluster_section_turns_cluster_mode_on_with_its_errors_named() {
        let env = |k: &str| (k == "EMR_REPLICA_ID").then(|| "envoy-1".to_owned());
        let c = super::parse(
            br#"{"cluster":{"etcd_cluster":"etcd","replica_id_env":"EMR_REPLICA_ID"}}"#,
            &env,
        )
        .unwrap();
        assert_eq!(c.cluster.unwrap().replica, "envoy-1");
        assert!(parse(b"{}").unwrap().cluster.is_none());
        let e = parse(br#"{"cluster":{"etcd_cluster":"etcd","replica_id_env":"EMR_REPLICA_ID","lease_ttl_seconds":1}}"#)
            .unwrap_err();
        assert_eq!(
            e.fields(),
            ["cluster.replica_id_env", "cluster.lease_ttl_seconds"]
        );
        let e = parse(br#"{"cluster":{"etcd":"x"}}"#).unwrap_err();
        assert!(e.fields().iter().any(|f| f.starts_with("cluster")), "{e:?}");
        // An Alertmanager notification is one commit: at most 100 alerts.
        let e = super::parse(
            br#"{"cluster":{"etcd_cluster":"etcd","replica_id_env":"EMR_REPLICA_ID"},
                 "sources":{"alertmanager":{"insecure":true,"max_alerts":500}}}"#,
            &env,
        )
        .unwrap_err();
        assert_eq!(e.only().field, "sources.alertmanager.max_alerts");
    }

    #[test]
    fn the_itsm_section_is_compiled_with_its_errors_named() {
        let c = parse(br#"{"itsm":{"pagerduty":{"insecure":true,"poll_seconds":2}}}"#).unwrap();
        let itsm = c.itsm.unwrap();
        assert_eq!(itsm.tools.len(), 1);
        assert!(parse(b"{}").unwrap().itsm.is_none());
        let e = parse(br#"{"itsm":{"servicenow":{"insecure":true}}}"#).unwrap_err();
        assert_eq!(e.only().field, "itsm.servicenow.authority");
        let e = parse(br#"{"itsm":{"jira":{}}}"#).unwrap_err();
        assert_eq!(e.only().field, "itsm.jira");
        let e = parse(br#"{"genesys":{"region":"mypurecloud.ie","default_group":"g","watchdog":{"period_seconds":1}}}"#);
        let e = e.unwrap_err();
        assert_eq!(
            e.fields(),
            [
                "genesys.client_id_env",
                "genesys.client_secret_env",
                "genesys.watchdog.period_seconds",
                "genesys.watchdog.converging_seconds"
            ],
            "{e}"
        );
    }

    #[test]
    fn the_declared_body_limit_is_the_configs_or_the_default() {
        let limit = |v: Value| declared_max_body_bytes(&v);
        assert_eq!(limit(serde_json::json!({})), 65_536);
        assert_eq!(limit(serde_json::json!({"intake": {}})), 65_536);
        assert_eq!(
            limit(serde_json::json!({"intake": {"max_body_bytes": 131_072}})),
            131_072
        );
        assert_eq!(
            parse(b"").unwrap().intake.max_body_bytes,
            DEFAULT_MAX_BODY_BYTES as usize
        );
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
        assert_eq!(e.only().field, "intake.max_bodybytes");
        assert!(e.only().message.contains("unknown field"), "{e}");
        let e = parse(br#"{"intakes":{}}"#).unwrap_err();
        assert_eq!(e.only().field, "intakes");
    }

    #[test]
    fn wrong_types_and_ranges_are_named() {
        let e = parse(br#"{"intake":{"max_body_bytes":"big"}}"#).unwrap_err();
        assert_eq!(e.only().field, "intake.max_body_bytes");
        let e = parse(br#"{"intake":{"max_body_bytes":10}}"#).unwrap_err();
        assert_eq!(e.only().field, "intake.max_body_bytes");
        assert!(e.only().message.contains("between"));
        let e = parse(br#"{"ledger":{"closed_retention_seconds":1}}"#).unwrap_err();
        assert_eq!(e.only().field, "ledger.closed_retention_seconds");
        assert!(parse(b"not json").is_err());
    }
}
