//! The `genesys` config section: parsed with serde, then compiled once into an
//! immutable, validated [`GenesysSettings`] the reconciler shares as an `Arc`.
//!
//! Everything is checked at compile time, so a bad config makes `on_configure`
//! fail with a message naming the field, and nothing later re-validates.
//! Credentials come from environment variables (`vm_config.environment_variables`)
//! read through a closure; the secret is never printed — not by `Debug`, not
//! in an error.
//!
//! ```json
//! {
//!   "region": "mypurecloud.ie",
//!   "login_cluster": "genesys_login",
//!   "api_cluster": "genesys_api",
//!   "client_id_env": "GENESYS_CLIENT_ID",
//!   "client_secret_env": "GENESYS_CLIENT_SECRET",
//!   "driver": "emergency-group",
//!   "default_group": "3c3f7a3e-2f5c-4f3a-9b1e-000000000001",
//!   "groups_by_incident_type": {"CARRIER_OUTAGE": "3c3f7a3e-2f5c-4f3a-9b1e-000000000002"},
//!   "datatable": {"id": "emr-datatable-0001", "row_key": "{group}"},
//!   "limits": {"max_in_flight": 4, "call_timeout_ms": 5000}
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::envvar::Env;
use crate::event::{GroupId, IncidentEvent, IncidentType};
use crate::field::{in_range, read_env, Spaces};
use crate::problem::FieldError;
use crate::watchdog::{WatchdogConfig, WatchdogSettings, MIN_PERIOD_SECONDS};

/// Which API drives the emergency switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DriverKind {
    /// The real Architect emergency-group API (default).
    #[default]
    #[serde(rename = "emergency-group", alias = "emergency_group")]
    EmergencyGroup,
    /// The guide's `/api/v2/telephony/emergencyrouting` contract, for sites
    /// that front Genesys with an internal service of that shape.
    #[serde(rename = "guide-contract", alias = "guide_contract")]
    GuideContract,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::EmergencyGroup => "emergency-group",
            DriverKind::GuideContract => "guide-contract",
        }
    }
}

/// The section as written in the plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesysConfig {
    /// A Genesys Cloud region (`mypurecloud.com`, `euw2.pure.cloud`, … or the
    /// AWS name `eu-west-2`): the hosts are then `login.{region}` and
    /// `api.{region}`.
    #[serde(default)]
    pub region: Option<String>,
    /// Explicit hosts (`host[:port]`), overriding the region's. They become
    /// the `:authority` of the calls.
    #[serde(default)]
    pub login_host: Option<String>,
    #[serde(default)]
    pub api_host: Option<String>,
    /// Envoy clusters the calls go through.
    #[serde(default = "default_login_cluster")]
    pub login_cluster: String,
    #[serde(default = "default_api_cluster")]
    pub api_cluster: String,
    /// Names of the environment variables holding the OAuth client's id and
    /// secret.
    #[serde(default = "default_client_id_env")]
    pub client_id_env: String,
    #[serde(default = "default_client_secret_env")]
    pub client_secret_env: String,
    #[serde(default)]
    pub driver: DriverKind,
    /// The group an event drives when neither the event nor
    /// `groups_by_incident_type` names one.
    pub default_group: String,
    #[serde(default)]
    pub groups_by_incident_type: BTreeMap<String, String>,
    /// Where Architect flows read the queue list, if anywhere.
    #[serde(default)]
    pub datatable: Option<DatatableConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub guide: GuideConfig,
    /// Re-reads, drift correction and people-win ([`crate::watchdog`]).
    #[serde(default)]
    pub watchdog: WatchdogConfig,
}

fn default_login_cluster() -> String {
    "genesys_login".to_owned()
}
fn default_api_cluster() -> String {
    "genesys_api".to_owned()
}
fn default_client_id_env() -> String {
    "GENESYS_CLIENT_ID".to_owned()
}
fn default_client_secret_env() -> String {
    "GENESYS_CLIENT_SECRET".to_owned()
}

/// The data table row the driver keeps the queue list in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatatableConfig {
    pub id: String,
    /// The row's key; `{group}` is replaced by the group id. Without the
    /// placeholder only the default group (and `rows_by_group`) get a row,
    /// so two groups never overwrite one row.
    pub row_key: String,
    /// Explicit row keys for some groups.
    #[serde(default)]
    pub rows_by_group: BTreeMap<String, String>,
    /// Keep each group's open incidents in the row's `openIncidents` column
    /// so a restart can rebuild them ([`crate::recovery`]). Turn off only for
    /// a table without that column.
    #[serde(default = "yes")]
    pub persist_incidents: bool,
}

fn yes() -> bool {
    true
}

/// Limits on what the reconciler does toward Genesys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Calls in flight at once, token fetches included.
    pub max_in_flight: usize,
    /// Timeout of one call.
    pub call_timeout_ms: u64,
    /// Groups waiting for a free slot at most.
    pub max_backlog: usize,
    /// Re-reads after a version conflict before the reconcile fails.
    pub max_version_retries: u32,
    /// First backoff after a 5xx or a failed call; doubles up to the max.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Pause after a 429 that says nothing about how long.
    pub retry_after_default_s: u64,
    /// A longer `Retry-After` is cut to this.
    pub retry_after_max_s: u64,
    /// Refresh the token when this share of its lifetime has passed.
    pub token_refresh_percent: u8,
    /// After the login host refuses the credentials, ask again no sooner.
    pub bad_credentials_retry_s: u64,
    /// The request budget ([`super::budget`]): calls a minute, sustained…
    pub requests_per_minute: u32,
    /// …and at once. No 60-second window holds more than the sum.
    pub burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 4,
            call_timeout_ms: 5_000,
            max_backlog: 1_024,
            max_version_retries: 3,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 30_000,
            retry_after_default_s: 60,
            retry_after_max_s: 900,
            token_refresh_percent: 85,
            bad_credentials_retry_s: 300,
            requests_per_minute: 120,
            burst: 20,
        }
    }
}

/// Settings of the guide-contract driver.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuideConfig {
    /// `routingConfiguration.priority` of an activation.
    pub priority: u32,
    /// While the state reads `PENDING`, read again after this long…
    pub pending_poll_ms: u64,
    /// …this many times at most before backing off.
    pub max_pending_reads: u32,
}

impl Default for GuideConfig {
    fn default() -> Self {
        Self {
            priority: 1,
            pending_poll_ms: 1_000,
            max_pending_reads: 30,
        }
    }
}

/// Genesys Cloud regions: domain and AWS region name.
pub const REGIONS: &[(&str, &str)] = &[
    ("mypurecloud.com", "us-east-1"),
    ("use2.us-gov-pure.cloud", "us-east-2"),
    ("usw2.pure.cloud", "us-west-2"),
    ("cac1.pure.cloud", "ca-central-1"),
    ("mxc1.pure.cloud", "mx-central-1"),
    ("sae1.pure.cloud", "sa-east-1"),
    ("mypurecloud.ie", "eu-west-1"),
    ("euw2.pure.cloud", "eu-west-2"),
    ("mypurecloud.de", "eu-central-1"),
    ("euc2.pure.cloud", "eu-central-2"),
    ("mec1.pure.cloud", "me-central-1"),
    ("aps1.pure.cloud", "ap-south-1"),
    ("apse1.pure.cloud", "ap-southeast-1"),
    ("mypurecloud.com.au", "ap-southeast-2"),
    ("mypurecloud.jp", "ap-northeast-1"),
    ("apne2.pure.cloud", "ap-northeast-2"),
    ("apne3.pure.cloud", "ap-northeast-3"),
];

/// A credential that is never shown.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(s: String) -> Self {
        Self(s)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A host and the Envoy cluster that reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub cluster: String,
    /// `:authority` of the calls.
    pub authority: String,
}

/// Limits, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_in_flight: usize,
    pub call_timeout_ms: u64,
    pub max_backlog: usize,
    pub max_version_retries: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub retry_after_default_s: u64,
    pub retry_after_max_s: u64,
    pub token_refresh_percent: u8,
    pub bad_credentials_retry_s: u64,
    pub requests_per_minute: u32,
    pub burst: u32,
}

/// The guide driver's settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuideSettings {
    pub priority: u32,
    pub pending_poll_ms: u64,
    pub max_pending_reads: u32,
}

/// The data table, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatatableSettings {
    pub id: String,
    pub row_key: String,
    pub rows_by_group: BTreeMap<GroupId, String>,
    pub persist_incidents: bool,
}

/// The compiled `genesys` section. Immutable; shared as `Arc<GenesysSettings>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesysSettings {
    pub login: Endpoint,
    pub api: Endpoint,
    pub client_id: String,
    client_secret: Secret,
    pub driver: DriverKind,
    pub default_group: GroupId,
    pub groups_by_incident_type: BTreeMap<IncidentType, GroupId>,
    pub datatable: Option<DatatableSettings>,
    pub limits: Limits,
    pub guide: GuideSettings,
    pub watchdog: WatchdogSettings,
}

impl GenesysSettings {
    /// Parses and compiles a `genesys` section given as JSON.
    pub fn from_json(value: &serde_json::Value, env: Env<'_>) -> Result<Self, Vec<FieldError>> {
        let cfg = GenesysConfig::deserialize(value)
            .map_err(|e| vec![FieldError::new("", e.to_string())])?;
        cfg.compile(env)
    }

    /// The group an event drives: the event's own group (a mapping rule chose
    /// it), else the one for its incident type, else the default. The guide
    /// contract has one global switch, so under it every event drives the
    /// default group.
    pub fn group_for(&self, ev: &IncidentEvent) -> GroupId {
        if self.driver == DriverKind::GuideContract {
            return self.default_group.clone();
        }
        ev.group
            .clone()
            .or_else(|| self.groups_by_incident_type.get(&ev.incident_type).cloned())
            .unwrap_or_else(|| self.default_group.clone())
    }

    /// The data-table row key for `group`, if it gets a row.
    pub fn row_key_for(&self, group: &GroupId) -> Option<String> {
        let dt = self.datatable.as_ref()?;
        if let Some(k) = dt.rows_by_group.get(group) {
            return Some(k.clone());
        }
        if dt.row_key.contains("{group}") {
            return Some(dt.row_key.replace("{group}", group.as_str()));
        }
        (group == &self.default_group).then(|| dt.row_key.clone())
    }

    /// Every group the config names: the default, the incident types'
    /// explicit rows and `watchdog.groups`. They are read at start (restart
    /// recovery) and watched from then on.
    pub fn configured_groups(&self) -> Vec<GroupId> {
        let mut groups = vec![self.default_group.clone()];
        groups.extend(self.groups_by_incident_type.values().cloned());
        if let Some(dt) = &self.datatable {
            groups.extend(dt.rows_by_group.keys().cloned());
        }
        groups.extend(self.watchdog.groups.iter().cloned());
        groups.sort();
        groups.dedup();
        groups
    }

    /// Whether rows carry the open incidents for a restart.
    pub fn persists_incidents(&self) -> bool {
        self.datatable.as_ref().is_some_and(|d| d.persist_incidents)
    }

    /// `Basic base64(id:secret)` for the token request.
    pub(crate) fn basic_authorization(&self) -> String {
        use base64::Engine as _;
        let raw = format!("{}:{}", self.client_id, self.client_secret.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl GenesysConfig {
    /// Validates everything and reads the credentials through `env`. Every
    /// problem is returned, not only the first, each naming its field within
    /// the section (`limits.max_in_flight`).
    pub fn compile(self, env: Env<'_>) -> Result<GenesysSettings, Vec<FieldError>> {
        let mut p = Problems::default();
        let (login, api) = self.endpoints(&mut p);
        let (id_var, secret_var) = (&self.client_id_env, &self.client_secret_env);
        let client_id = read_env(env, "client_id_env", id_var, Spaces::Trim, &mut p)
            .and_then(|id| p.take(check_client_id(id_var, id)));
        let client_secret =
            read_env(env, "client_secret_env", secret_var, Spaces::Trim, &mut p).map(Secret::new);
        let default_group = p.take(group_id("default_group", &self.default_group));
        let groups_by_incident_type = self.groups_by_type(default_group.as_ref(), &mut p);
        let datatable = self.datatable.map(|dt| dt.compile(&mut p));
        let limits = self.limits.check(&mut p);
        let guide = self.guide.check(&mut p);
        let watchdog = compile_watchdog(&self.watchdog, &mut p);

        let (
            Some(login),
            Some(api),
            Some(client_id),
            Some(client_secret),
            Some(default_group),
            true,
        ) = (
            login,
            api,
            client_id,
            client_secret,
            default_group,
            p.is_empty(),
        )
        else {
            return Err(p.into_errors());
        };
        Ok(GenesysSettings {
            login,
            api,
            client_id,
            client_secret,
            driver: self.driver,
            default_group,
            groups_by_incident_type,
            datatable,
            limits,
            guide,
            watchdog,
        })
    }

    /// The login and API endpoints: the region's hosts, or the ones given,
    /// and the Envoy clusters that reach them.
    fn endpoints(&self, p: &mut Problems) -> (Option<Endpoint>, Option<Endpoint>) {
        let region = match &self.region {
            Some(r) => p.take(resolve_region(r).ok_or_else(|| {
                FieldError::new(
                    "region",
                    format!(
                        "unknown Genesys Cloud region `{r}`; use one of {} (or its AWS name), or set login_host and api_host",
                        REGIONS
                            .iter()
                            .map(|(d, _)| *d)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })),
            None => None,
        };
        // An unknown region has its own error: the hosts it would give are
        // not missing on top of it.
        let region_given = self.region.is_some();
        let host = |field: &str, explicit: &Option<String>, prefix: &str| match (explicit, region) {
            (Some(h), _) => check_authority(h)
                .map(|()| Some(h.clone()))
                .map_err(|m| FieldError::new(field, m)),
            (None, Some(r)) => Ok(Some(format!("{prefix}.{r}"))),
            (None, None) if region_given => Ok(None),
            (None, None) => Err(FieldError::new(
                field,
                "set `region`, or both `login_host` and `api_host`",
            )),
        };
        let login_authority = p
            .take(host("login_host", &self.login_host, "login"))
            .flatten();
        let api_authority = p.take(host("api_host", &self.api_host, "api")).flatten();
        let cluster = |field: &str, v: &str| {
            if v.trim().is_empty() || v.chars().any(char::is_control) {
                Err(FieldError::new(field, "must name an Envoy cluster"))
            } else {
                Ok(v.to_owned())
            }
        };
        let login_cluster = p.take(cluster("login_cluster", &self.login_cluster));
        let api_cluster = p.take(cluster("api_cluster", &self.api_cluster));
        let endpoint = |cluster: Option<String>, authority: Option<String>| {
            Some(Endpoint {
                cluster: cluster?,
                authority: authority?,
            })
        };
        (
            endpoint(login_cluster, login_authority),
            endpoint(api_cluster, api_authority),
        )
    }

    /// `groups_by_incident_type`, checked.
    fn groups_by_type(
        &self,
        default_group: Option<&GroupId>,
        p: &mut Problems,
    ) -> BTreeMap<IncidentType, GroupId> {
        let mut groups_by_incident_type = BTreeMap::new();
        for (ty, group) in &self.groups_by_incident_type {
            let field = format!("groups_by_incident_type.{ty}");
            let ty = p.take(IncidentType::parse(ty).map_err(|e| FieldError::new(&field, e.0)));
            let Some(group) = p.take(group_id(&field, group)) else {
                continue;
            };
            if self.driver == DriverKind::GuideContract
                && default_group.is_some_and(|d| *d != group)
            {
                p.push(FieldError::new(
                    field,
                    "the guide-contract driver has one global switch: every incident type drives default_group",
                ));
                continue;
            }
            if let Some(ty) = ty {
                groups_by_incident_type.insert(ty, group);
            }
        }
        groups_by_incident_type
    }
}

impl DatatableConfig {
    fn compile(self, p: &mut Problems) -> DatatableSettings {
        p.take(check_datatable_id(&self.id));
        p.take(check_row_key("datatable.row_key", &self.row_key));
        let mut rows_by_group = BTreeMap::new();
        for (group, key) in &self.rows_by_group {
            let field = format!("datatable.rows_by_group.{group}");
            let group = p.take(group_id(&field, group));
            if let (Some(group), Some(())) = (group, p.take(check_row_key(&field, key))) {
                rows_by_group.insert(group, key.clone());
            }
        }
        DatatableSettings {
            id: self.id,
            row_key: self.row_key,
            rows_by_group,
            persist_incidents: self.persist_incidents,
        }
    }
}

impl LimitsConfig {
    /// Each limit within its range.
    fn check(&self, p: &mut Problems) -> Limits {
        let l = self;
        in_range("limits.max_in_flight", l.max_in_flight, 1, 64, p);
        in_range("limits.max_backlog", l.max_backlog, 1, 100_000, p);
        in_range("limits.call_timeout_ms", l.call_timeout_ms, 100, 60_000, p);
        in_range(
            "limits.backoff_initial_ms",
            l.backoff_initial_ms,
            10,
            60_000,
            p,
        );
        in_range(
            "limits.backoff_max_ms",
            l.backoff_max_ms,
            l.backoff_initial_ms,
            600_000,
            p,
        );
        in_range(
            "limits.retry_after_default_s",
            l.retry_after_default_s,
            1,
            3_600,
            p,
        );
        in_range(
            "limits.retry_after_max_s",
            l.retry_after_max_s,
            1,
            86_400,
            p,
        );
        in_range(
            "limits.bad_credentials_retry_s",
            l.bad_credentials_retry_s,
            1,
            86_400,
            p,
        );
        in_range(
            "limits.max_version_retries",
            l.max_version_retries,
            0,
            10,
            p,
        );
        in_range(
            "limits.requests_per_minute",
            l.requests_per_minute,
            1,
            300,
            p,
        );
        in_range("limits.burst", l.burst, 1, 300, p);
        in_range(
            "limits.token_refresh_percent",
            l.token_refresh_percent,
            50,
            95,
            p,
        );
        Limits {
            max_in_flight: l.max_in_flight,
            call_timeout_ms: l.call_timeout_ms,
            max_backlog: l.max_backlog,
            max_version_retries: l.max_version_retries,
            backoff_initial_ms: l.backoff_initial_ms,
            backoff_max_ms: l.backoff_max_ms,
            retry_after_default_s: l.retry_after_default_s,
            retry_after_max_s: l.retry_after_max_s,
            token_refresh_percent: l.token_refresh_percent,
            bad_credentials_retry_s: l.bad_credentials_retry_s,
            requests_per_minute: l.requests_per_minute,
            burst: l.burst,
        }
    }
}

impl GuideConfig {
    fn check(&self, p: &mut Problems) -> GuideSettings {
        in_range("guide.priority", self.priority, 1, 1_000, p);
        in_range("guide.pending_poll_ms", self.pending_poll_ms, 10, 60_000, p);
        in_range(
            "guide.max_pending_reads",
            self.max_pending_reads,
            1,
            1_000,
            p,
        );
        GuideSettings {
            priority: self.priority,
            pending_poll_ms: self.pending_poll_ms,
            max_pending_reads: self.max_pending_reads,
        }
    }
}

/// The `watchdog` section, checked.
fn compile_watchdog(w: &WatchdogConfig, p: &mut Problems) -> WatchdogSettings {
    in_range(
        "watchdog.period_seconds",
        w.period_seconds,
        MIN_PERIOD_SECONDS,
        86_400,
        p,
    );
    in_range(
        "watchdog.converging_seconds",
        w.converging_seconds,
        1,
        w.period_seconds,
        p,
    );
    in_range("watchdog.grace_seconds", w.grace_seconds, 0, 3_600, p);
    if w.groups.len() > 256 {
        p.push(FieldError::new("watchdog.groups", "at most 256 groups"));
    }
    let mut watched = Vec::new();
    for (i, group) in w.groups.iter().enumerate() {
        if let Some(g) = p.take(group_id(&format!("watchdog.groups[{i}]"), group)) {
            watched.push(g);
        }
    }
    WatchdogSettings {
        period: chrono::Duration::seconds(i64::from(w.period_seconds)),
        converging: chrono::Duration::seconds(i64::from(w.converging_seconds)),
        grace: chrono::Duration::seconds(i64::from(w.grace_seconds)),
        groups: watched,
    }
}

/// The errors found so far: a config is refused with all of them at once.
/// A list of [`FieldError`]s, as the checks of [`crate::field`] take, that
/// can also keep the error of a `Result`.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    /// The value, or `None` with its error kept.
    fn take<T>(&mut self, r: Result<T, FieldError>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    /// Never empty: a value missing without an error is a bug, said as one.
    fn into_errors(self) -> Vec<FieldError> {
        if self.0.is_empty() {
            vec![FieldError::new("", "is invalid")]
        } else {
            self.0
        }
    }
}

impl std::ops::Deref for Problems {
    type Target = Vec<FieldError>;

    fn deref(&self) -> &Vec<FieldError> {
        &self.0
    }
}

impl std::ops::DerefMut for Problems {
    fn deref_mut(&mut self) -> &mut Vec<FieldError> {
        &mut self.0
    }
}

/// A group id given at `field` ([`GroupId::from_config`] says what counts).
fn group_id(field: &str, value: &str) -> Result<GroupId, FieldError> {
    GroupId::from_config(value).map_err(|m| FieldError::new(field, m))
}

/// The OAuth client id read from `var`: sent as HTTP Basic credentials, and
/// never a name or a sentence.
fn check_client_id(var: &str, id: String) -> Result<String, FieldError> {
    if id.contains(':') {
        return Err(FieldError::new(
            "client_id_env",
            format!(
                "the client id in `{var}` must not contain ':' (it is sent as HTTP Basic credentials)"
            ),
        ));
    }
    if id.chars().any(char::is_whitespace) {
        return Err(FieldError::new(
            "client_id_env",
            format!(
                "the client id in `{var}` holds a space: give the OAuth client's id (a UUID, \
                 shown under Admin > Integrations > OAuth), not its name"
            ),
        ));
    }
    Ok(id)
}

/// The data table's id goes into request paths; a name is not an id.
fn check_datatable_id(id: &str) -> Result<(), FieldError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        return Ok(());
    }
    Err(FieldError::new(
        "datatable.id",
        format!(
            "{} is not a data table id ({}); give the table's id, not its name: Genesys ids are \
             UUIDs (GET /api/v2/flows/datatables lists the tables with their ids)",
            crate::text::quoted(id),
            crate::event::not_an_id_because(id)
        ),
    ))
}

/// The Genesys domain for a region given as domain or AWS name.
fn resolve_region(r: &str) -> Option<&'static str> {
    let r = r.trim().to_ascii_lowercase();
    REGIONS
        .iter()
        .find(|(domain, aws)| *domain == r || *aws == r)
        .map(|(domain, _)| *domain)
}

/// `host[:port]` with no scheme, path or credentials.
pub(crate) fn check_authority(h: &str) -> Result<(), String> {
    if h.contains("://") {
        return Err("give a host name (`api.mypurecloud.com`), without a scheme".to_owned());
    }
    if h.is_empty() || h.len() > 253 {
        return Err("must be 1 to 253 characters".to_owned());
    }
    let ok = h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !ok {
        return Err("must be `host` or `host:port` (letters, digits, '.', '-', ':')".to_owned());
    }
    if let Some((_, port)) = h.rsplit_once(':').filter(|_| !h.ends_with(']')) {
        if !h.starts_with('[') && !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
            return Err(format!("`{port}` is not a port"));
        }
    }
    Ok(())
}

fn check_row_key(field: &str, key: &str) -> Result<(), FieldError> {
    if key.trim().is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must be 1 to 256 characters without control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::{json, Value};

    use super::*;
    use crate::event::{CorrelationId, QueueId, RoutingMode, Source};

    pub(crate) const SECRET: &str = "s3cr3t-v@lue";

    pub(crate) fn env(name: &str) -> Option<String> {
        match name {
            "GENESYS_CLIENT_ID" => Some("emr-edge-client".to_owned()),
            "GENESYS_CLIENT_SECRET" => Some(SECRET.to_owned()),
            _ => None,
        }
    }

    pub(crate) fn base() -> Value {
        json!({
            "region": "mypurecloud.ie",
            "default_group": "G-DEFAULT",
            "groups_by_incident_type": {"CARRIER_OUTAGE": "G-CARRIER"}
        })
    }

    /// The settings, or the first error (`every_problem_is_reported` checks
    /// that none is lost).
    fn compile(v: Value) -> Result<GenesysSettings, FieldError> {
        GenesysSettings::from_json(&v, &env).map_err(|mut e| e.remove(0))
    }

    fn with(mut v: Value, key: &str, val: Value) -> Value {
        v[key] = val;
        v
    }

    fn event(ty: &str, group: Option<&str>) -> IncidentEvent {
        IncidentEvent {
            source: Source::Canonical,
            correlation_id: CorrelationId::parse("INC-1").unwrap(),
            incident_type: IncidentType::parse(ty).unwrap(),
            routing_mode: RoutingMode::Active,
            target_queue_ids: vec![QueueId::parse("q1").unwrap()],
            timestamp: chrono::DateTime::from_timestamp(1_723_731_721, 0).unwrap(),
            ttl_seconds: 3600,
            priority: 3,
            group: group.map(|g| GroupId::parse(g).unwrap()),
            detail: None,
            about: None,
        }
    }

    #[test]
    fn a_region_gives_both_hosts_and_defaults_fill_the_rest() {
        let s = compile(base()).unwrap();
        assert_eq!(s.login.authority, "login.mypurecloud.ie");
        assert_eq!(s.api.authority, "api.mypurecloud.ie");
        assert_eq!(s.login.cluster, "genesys_login");
        assert_eq!(s.api.cluster, "genesys_api");
        assert_eq!(s.driver, DriverKind::EmergencyGroup);
        assert_eq!(s.limits.max_in_flight, 4);
        assert_eq!(s.client_id, "emr-edge-client");
        let aws = compile(with(base(), "region", json!("eu-west-2"))).unwrap();
        assert_eq!(aws.api.authority, "api.euw2.pure.cloud");
        for (domain, _) in REGIONS {
            assert!(
                compile(with(base(), "region", json!(domain))).is_ok(),
                "{domain}"
            );
        }
    }

    #[test]
    fn explicit_hosts_override_the_region() {
        let mut v = base();
        v["region"] = Value::Null;
        v["login_host"] = json!("127.0.0.1:18080");
        v["api_host"] = json!("127.0.0.1:18080");
        v["driver"] = json!("guide-contract");
        v["groups_by_incident_type"] = json!({});
        let s = compile(v).unwrap();
        assert_eq!(s.api.authority, "127.0.0.1:18080");
        assert_eq!(s.driver, DriverKind::GuideContract);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (with(base(), "region", json!("mars.pure.cloud")), "region"),
            (
                with(base(), "api_host", json!("https://api.x.com")),
                "api_host",
            ),
            (
                with(base(), "login_host", json!("login.x.com:99999")),
                "login_host",
            ),
            (with(base(), "default_group", json!("")), "default_group"),
            (
                with(base(), "groups_by_incident_type", json!({"carrier": "G"})),
                "groups_by_incident_type.carrier",
            ),
            (
                with(base(), "limits", json!({"max_in_flight": 0})),
                "limits.max_in_flight",
            ),
            (
                with(
                    base(),
                    "limits",
                    json!({"backoff_initial_ms": 5000, "backoff_max_ms": 1000}),
                ),
                "limits.backoff_max_ms",
            ),
            (
                with(base(), "datatable", json!({"id": "t", "row_key": ""})),
                "datatable.row_key",
            ),
            (
                with(base(), "client_secret_env", json!("NOPE")),
                "client_secret_env",
            ),
            (
                with(base(), "driver", json!("guide-contract")),
                "groups_by_incident_type.CARRIER_OUTAGE",
            ),
        ];
        for (v, field) in cases {
            let e = compile(v).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        let mut none = base();
        none["region"] = Value::Null;
        assert_eq!(compile(none).unwrap_err().field, "login_host");
    }

    #[test]
    fn every_problem_is_reported() {
        let mut v = base();
        v["region"] = json!("mars.pure.cloud");
        v["client_secret_env"] = json!("NOPE");
        v["default_group"] = json!("Voice Outage");
        v["groups_by_incident_type"] = json!({"carrier": "G", "OTHER": "a b"});
        v["datatable"] = json!({"id": "My Table", "row_key": "", "rows_by_group": {"x y": "k"}});
        v["limits"] = json!({"max_in_flight": 0, "burst": 0});
        v["watchdog"] = json!({"grace_seconds": 3601, "groups": ["ok", ""]});
        let errors = GenesysSettings::from_json(&v, &env).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "region",
                "client_secret_env",
                "default_group",
                "groups_by_incident_type.OTHER",
                "groups_by_incident_type.carrier",
                "datatable.id",
                "datatable.row_key",
                "datatable.rows_by_group.x y",
                "limits.max_in_flight",
                "limits.burst",
                "watchdog.grace_seconds",
                "watchdog.groups[1]",
            ]
        );
        // An unknown region is not also "set region or the hosts".
        assert!(!fields.contains(&"login_host"));
    }

    #[test]
    fn names_where_ids_belong_are_refused_saying_what_counts() {
        let e = compile(with(base(), "default_group", json!("Voice Outage"))).unwrap_err();
        assert_eq!(e.field, "default_group");
        assert!(
            e.message.starts_with(
                "\"Voice Outage\" is not an emergency group id (it holds a space, as a name does)"
            ),
            "{e}"
        );
        assert!(e.message.contains("Genesys ids are UUIDs such as"), "{e}");
        let e = compile(with(
            base(),
            "watchdog",
            json!({"groups": ["<emergency group id>"]}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "watchdog.groups[0]");
        let e = compile(with(
            base(),
            "datatable",
            json!({"id": "EMR queues", "row_key": "{group}"}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "datatable.id");
        assert!(
            e.message
                .starts_with("\"EMR queues\" is not a data table id (it holds a space"),
            "{e}"
        );
        // Ids that are not UUIDs stay accepted (the simulator's, a guide
        // service's): only what cannot be an id is refused.
        compile(with(
            base(),
            "datatable",
            json!({"id": "emr-datatable-0001", "row_key": "{group}"}),
        ))
        .unwrap();
        let named = |name: &str| -> Option<String> {
            match name {
                "GENESYS_CLIENT_ID" => Some("emr edge client".to_owned()),
                other => env(other),
            }
        };
        let e = GenesysSettings::from_json(&base(), &named).unwrap_err();
        assert_eq!(e[0].field, "client_id_env");
        assert!(e[0].message.contains("holds a space"), "{e:?}");
    }

    #[test]
    fn a_credential_still_a_placeholder_is_refused_without_its_value() {
        let todo = |name: &str| -> Option<String> {
            match name {
                "GENESYS_CLIENT_SECRET" => Some("REPLACE-WITH-CLIENT-SECRET".to_owned()),
                other => env(other),
            }
        };
        let e = GenesysSettings::from_json(&base(), &todo).unwrap_err();
        assert_eq!(e[0].field, "client_secret_env");
        assert!(
            e[0].message
                .contains("GENESYS_CLIENT_SECRET still holds a placeholder"),
            "{e:?}"
        );
        assert!(!e[0].message.contains("CLIENT-SECRET"), "{e:?}");
        let e = compile(with(base(), "client_id_env", json!("UNSET"))).unwrap_err();
        assert!(e.message.contains("host_env_keys"), "{e}");
    }

    #[test]
    fn unknown_and_missing_fields_are_refused_by_name() {
        let e = compile(with(base(), "regoin", json!("x"))).unwrap_err();
        assert!(e.message.contains("regoin"), "{e}");
        let e = compile(with(base(), "limits", json!({"max_inflight": 2}))).unwrap_err();
        assert!(e.message.contains("max_inflight"), "{e}");
        let e = compile(json!({"region": "mypurecloud.com"})).unwrap_err();
        assert!(e.message.contains("default_group"), "{e}");
        assert_eq!(e.under("genesys").field, "genesys");
    }

    #[test]
    fn the_secret_never_shows() {
        let s = compile(base()).unwrap();
        assert!(!format!("{s:?}").contains(SECRET));
        assert!(s.basic_authorization().starts_with("Basic "));
        // An error about the secret names the variable, not the value.
        let e = compile(with(base(), "client_secret_env", json!("MISSING"))).unwrap_err();
        assert!(e.to_string().contains("MISSING"));
        assert!(!e.to_string().contains(SECRET));
        let bad_id = |name: &str| -> Option<String> {
            match name {
                "GENESYS_CLIENT_ID" => Some("a:b".to_owned()),
                other => env(other),
            }
        };
        let e = GenesysSettings::from_json(&base(), &bad_id).unwrap_err();
        assert_eq!(e[0].field, "client_id_env");
    }

    #[test]
    fn watchdog_budget_and_persistence_have_safe_defaults_and_bounds() {
        let s = compile(base()).unwrap();
        assert_eq!(s.watchdog.period, chrono::Duration::seconds(30));
        assert_eq!(s.watchdog.converging, chrono::Duration::seconds(5));
        assert_eq!(s.watchdog.grace, chrono::Duration::seconds(10));
        assert_eq!(s.limits.requests_per_minute, 120);
        assert_eq!(s.limits.burst, 20);
        assert!(
            s.limits.requests_per_minute + s.limits.burst < 150,
            "the defaults stay under half of Genesys's 300 a minute"
        );
        assert!(!s.persists_incidents());
        let e = compile(with(base(), "watchdog", json!({"period_seconds": 4}))).unwrap_err();
        assert_eq!(e.field, "watchdog.period_seconds");
        assert!(e.message.contains("between 5 and"), "{e}");
        let e = compile(with(
            base(),
            "watchdog",
            json!({"period_seconds": 10, "converging_seconds": 11}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "watchdog.converging_seconds");
        let e = compile(with(base(), "watchdog", json!({"grace_seconds": 3601}))).unwrap_err();
        assert_eq!(e.field, "watchdog.grace_seconds");
        let e = compile(with(base(), "watchdog", json!({"groups": ["ok", ""]}))).unwrap_err();
        assert_eq!(e.field, "watchdog.groups[1]");
        let e = compile(with(base(), "limits", json!({"requests_per_minute": 301}))).unwrap_err();
        assert_eq!(e.field, "limits.requests_per_minute");
        let e = compile(with(base(), "limits", json!({"burst": 0}))).unwrap_err();
        assert_eq!(e.field, "limits.burst");
        let w = compile(with(
            base(),
            "watchdog",
            json!({"period_seconds": 5, "grace_seconds": 0, "groups": ["G-EXTRA"]}),
        ))
        .unwrap();
        assert_eq!(w.watchdog.grace, chrono::Duration::zero());
        assert_eq!(
            w.configured_groups()
                .iter()
                .map(GroupId::as_str)
                .collect::<Vec<_>>(),
            ["G-CARRIER", "G-DEFAULT", "G-EXTRA"]
        );
        let dt = compile(with(
            base(),
            "datatable",
            json!({"id": "t1", "row_key": "{group}"}),
        ))
        .unwrap();
        assert!(dt.persists_incidents());
        let off = compile(with(
            base(),
            "datatable",
            json!({"id": "t1", "row_key": "{group}", "persist_incidents": false}),
        ))
        .unwrap();
        assert!(!off.persists_incidents());
    }

    #[test]
    fn basic_authorization_is_base64_of_id_and_secret() {
        use base64::Engine as _;
        let s = compile(base()).unwrap();
        let header = s.basic_authorization();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header.trim_start_matches("Basic "))
            .unwrap();
        assert_eq!(decoded, format!("emr-edge-client:{SECRET}").into_bytes());
    }

    #[test]
    fn group_for_prefers_the_event_then_the_type_then_the_default() {
        let s = compile(base()).unwrap();
        assert_eq!(
            s.group_for(&event("CARRIER_OUTAGE", None)).as_str(),
            "G-CARRIER"
        );
        assert_eq!(s.group_for(&event("OTHER", None)).as_str(), "G-DEFAULT");
        assert_eq!(
            s.group_for(&event("CARRIER_OUTAGE", Some("G-RULE")))
                .as_str(),
            "G-RULE"
        );
        let mut v = with(base(), "driver", json!("guide-contract"));
        v["groups_by_incident_type"] = json!({});
        let guide = compile(v).unwrap();
        assert_eq!(
            guide
                .group_for(&event("CARRIER_OUTAGE", Some("G-RULE")))
                .as_str(),
            "G-DEFAULT"
        );
    }

    #[test]
    fn row_keys_per_group() {
        let g = |s: &str| GroupId::parse(s).unwrap();
        let templ = compile(with(
            base(),
            "datatable",
            json!({"id": "t1", "row_key": "emr-{group}", "rows_by_group": {"G-CARRIER": "carrier"}}),
        ))
        .unwrap();
        assert_eq!(templ.row_key_for(&g("G-X")).as_deref(), Some("emr-G-X"));
        assert_eq!(
            templ.row_key_for(&g("G-CARRIER")).as_deref(),
            Some("carrier")
        );
        let fixed = compile(with(
            base(),
            "datatable",
            json!({"id": "t1", "row_key": "emr"}),
        ))
        .unwrap();
        assert_eq!(fixed.row_key_for(&g("G-DEFAULT")).as_deref(), Some("emr"));
        assert_eq!(fixed.row_key_for(&g("G-CARRIER")), None);
        assert_eq!(compile(base()).unwrap().row_key_for(&g("G-DEFAULT")), None);
    }
}
