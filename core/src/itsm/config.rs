//! The `itsm` config section: which tools are polled, with which
//! credential, how often; compiled and checked at start.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use chrono::Duration;
use serde::Deserialize;

use crate::envvar::Env;
use crate::event::Source;
use crate::field::{in_range, read_env, Spaces};
use crate::genesys::config::check_authority;
use crate::problem::FieldError;

/// The `itsm` config section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ItsmConfig {
    pub pagerduty: Option<ToolConfig>,
    pub servicenow: Option<ToolConfig>,
    /// Jira Service Management (the `jsm` intake route).
    pub jsm: Option<ToolConfig>,
    /// Polls out at once, all tools together.
    pub max_in_flight: usize,
    /// Polls a minute at most, all tools together.
    pub polls_per_minute: u32,
}

impl Default for ItsmConfig {
    fn default() -> Self {
        Self {
            pagerduty: None,
            servicenow: None,
            jsm: None,
            max_in_flight: 2,
            polls_per_minute: 60,
        }
    }
}

/// One tool's status API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// The Envoy cluster (default `pagerduty_api`, `servicenow_api`, `jira_api`).
    #[serde(default)]
    pub cluster: Option<String>,
    /// `host[:port]` of the API, the calls' `:authority` (PagerDuty defaults
    /// to `api.pagerduty.com`; ServiceNow `<instance>.service-now.com`, Jira
    /// `<site>.atlassian.net`).
    #[serde(default)]
    pub authority: Option<String>,
    /// A token in this environment variable: PagerDuty's REST API key
    /// (`Token token=…`), else a bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Basic credentials (ServiceNow user, Jira e-mail and API token).
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// No credential at all: the local simulator only.
    #[serde(default)]
    pub insecure: bool,
    /// How often an open incident is asked about.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// ServiceNow's table (default `incident`).
    #[serde(default)]
    pub table: Option<String>,
}

fn default_poll_seconds() -> u32 {
    300
}

fn default_timeout_ms() -> u64 {
    5_000
}

/// An `Authorization` value that is never shown.
#[derive(Clone, PartialEq, Eq)]
struct AuthHeader(String);

impl fmt::Debug for AuthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One tool's status API, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub source: Source,
    pub cluster: String,
    pub authority: String,
    auth: Option<AuthHeader>,
    pub poll: Duration,
    pub timeout_ms: u64,
    pub table: String,
}

impl Tool {
    /// The tool's name in audit lines and details.
    pub fn name(&self) -> &'static str {
        self.source.label()
    }

    /// The `Authorization` header value its polls carry; `None` for a tool
    /// polled without a credential (`insecure`).
    pub(super) fn authorization(&self) -> Option<&str> {
        self.auth.as_ref().map(|a| a.0.as_str())
    }
}

/// The compiled `itsm` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItsmSettings {
    pub tools: BTreeMap<Source, Tool>,
    pub max_in_flight: usize,
    pub polls_per_minute: u32,
}

impl ItsmConfig {
    /// Validates every tool and reads its credentials through `env`. Every
    /// problem is returned, not only the first, each naming its field within
    /// the section (`servicenow.authority`).
    pub fn compile(self, env: Env<'_>) -> Result<ItsmSettings, Vec<FieldError>> {
        let mut errors = Vec::new();
        in_range("max_in_flight", self.max_in_flight, 1, 16, &mut errors);
        in_range(
            "polls_per_minute",
            self.polls_per_minute,
            1,
            600,
            &mut errors,
        );
        let mut tools = BTreeMap::new();
        for (name, source, cfg) in [
            ("pagerduty", Source::Pagerduty, self.pagerduty),
            ("servicenow", Source::Servicenow, self.servicenow),
            ("jsm", Source::Jsm, self.jsm),
        ] {
            if let Some(cfg) = cfg {
                match compile_tool(source, cfg, env) {
                    Ok(tool) => {
                        tools.insert(source, tool);
                    }
                    Err(e) => errors.extend(e.into_iter().map(|e| e.under(name))),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ItsmSettings {
            tools,
            max_in_flight: self.max_in_flight,
            polls_per_minute: self.polls_per_minute,
        })
    }
}

fn compile_tool(source: Source, c: ToolConfig, env: Env<'_>) -> Result<Tool, Vec<FieldError>> {
    let mut errors = Vec::new();
    let (default_cluster, default_authority) = match source {
        Source::Pagerduty => ("pagerduty_api", Some("api.pagerduty.com")),
        Source::Servicenow => ("servicenow_api", None),
        _ => ("jira_api", None),
    };
    let cluster = c.cluster.unwrap_or_else(|| default_cluster.to_owned());
    if cluster.trim().is_empty() || cluster.chars().any(char::is_control) {
        errors.push(FieldError::new("cluster", "must name an Envoy cluster"));
    }
    let authority = match c.authority.or(default_authority.map(str::to_owned)) {
        Some(a) => {
            if let Err(m) = check_authority(&a) {
                errors.push(FieldError::new("authority", m));
            }
            a
        }
        None => {
            errors.push(FieldError::new(
                "authority",
                "is required: the API host (`acme.service-now.com`, `acme.atlassian.net`)",
            ));
            String::new()
        }
    };
    let auth = match (
        c.insecure,
        c.token_env.as_deref(),
        c.username_env.as_deref(),
        c.password_env.as_deref(),
    ) {
        (true, None, None, None) => None,
        (true, ..) => {
            errors.push(FieldError::new(
                "insecure",
                "cannot be set together with a credential",
            ));
            None
        }
        (false, Some(t), None, None) => read_env(env, "token_env", t, Spaces::Trim, &mut errors)
            .map(|token| {
                AuthHeader(if source == Source::Pagerduty {
                    format!("Token token={token}")
                } else {
                    format!("Bearer {token}")
                })
            }),
        (false, None, Some(u), Some(p)) if source != Source::Pagerduty => {
            match (
                read_env(env, "username_env", u, Spaces::Trim, &mut errors),
                read_env(env, "password_env", p, Spaces::Trim, &mut errors),
            ) {
                (Some(user), Some(_)) if user.contains(':') => {
                    errors.push(FieldError::new(
                        "username_env",
                        format!("the user in `{u}` must not contain ':' (it is sent as HTTP Basic credentials)"),
                    ));
                    None
                }
                (Some(user), Some(password)) => {
                    let raw = format!("{user}:{password}");
                    Some(AuthHeader(format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(raw)
                    )))
                }
                // read_env has told what is wrong with the variables.
                _ => None,
            }
        }
        (false, None, None, None) => {
            errors.push(FieldError::new(
                "token_env",
                "a credential is required (token_env, or username_env and password_env); `insecure: true` only for a local simulator",
            ));
            None
        }
        _ if source == Source::Pagerduty => {
            errors.push(FieldError::new(
                "token_env",
                "PagerDuty takes a REST API key in token_env only",
            ));
            None
        }
        _ => {
            errors.push(FieldError::new(
                "token_env",
                "give either token_env, or both username_env and password_env",
            ));
            None
        }
    };
    in_range("poll_seconds", c.poll_seconds, 1, 86_400, &mut errors);
    in_range("timeout_ms", c.timeout_ms, 100, 60_000, &mut errors);
    let table = c.table.unwrap_or_else(|| "incident".to_owned());
    if source == Source::Servicenow
        && (table.is_empty()
            || table.len() > 80
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        errors.push(FieldError::new(
            "table",
            "must be a ServiceNow table name ([A-Za-z0-9_])",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Tool {
        source,
        cluster,
        authority,
        auth,
        poll: Duration::seconds(i64::from(c.poll_seconds)),
        timeout_ms: c.timeout_ms,
        table,
    })
}
