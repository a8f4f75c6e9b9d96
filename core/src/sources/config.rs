//! Per-source configuration, compiled once at start.
//!
//! ```json
//! "sources": {
//!   "pagerduty": {
//!     "auth": [{"kind": "pagerduty_signature", "secret_envs": ["PD_SECRET", "PD_SECRET_NEXT"]}],
//!     "rules": [{"match": {"service_id": "PIJ90N7"}, "group": "eg-voice", "queues": ["q-1"]}],
//!     "modes": {"incident.acknowledged": "active"},
//!     "default_ttl_seconds": 3600
//!   }
//! }
//! ```
//!
//! Every source is optional and defaults to "no credential, no rules": it
//! refuses every delivery (fail closed). Unknown fields are refused.
//! Compiling reads each secret from the environment and checks every rule;
//! errors name the config field (`sources.pagerduty.auth[0].secret_envs[1]`)
//! and never a secret value.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::auth::{AuthMethodConfig, CompiledAuth};
use crate::contract::ContractRules;
use crate::event::Source;
use crate::field::in_range;
use crate::mapping::{self, Mapping, ModeSetting, RuleConfig};
use crate::problem::FieldError;

/// The `sources` block: one entry per intake route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    pub canonical: SourceConfig,
    pub pagerduty: SourceConfig,
    pub servicenow: SourceConfig,
    pub jsm: SourceConfig,
    pub opsgenie: SourceConfig,
    pub alertmanager: SourceConfig,
    pub standard: SourceConfig,
    /// emr-edge's own synthetic incidents have no route: no config is read
    /// for them, and this default (no credential) refuses everything.
    #[serde(skip)]
    pub emr: SourceConfig,
}

/// One route's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// Accept deliveries without any credential when `auth` is empty. For
    /// local demos only; a configured `auth` is always enforced.
    pub insecure: bool,
    /// Accepted methods; any one passing is enough (rotation, migration).
    pub auth: Vec<AuthMethodConfig>,
    /// Mapping rules, first match wins ([`crate::mapping`]).
    pub rules: Vec<RuleConfig>,
    /// Overrides of the source's open/resolve reading, by event key.
    pub modes: BTreeMap<String, ModeSetting>,
    /// `ttl` of events whose rule sets none (tool sources only). Default 3600.
    pub default_ttl_seconds: Option<u32>,
    /// How far ahead of our clock an event time may be. Default 300.
    pub max_future_skew_seconds: Option<u32>,
    /// Forward resolves that match no rule (default `true`).
    pub forward_unmatched_resolves: Option<bool>,
    /// Updates of an incident (a PagerDuty priority change, a Jira or
    /// ServiceNow edit) re-evaluate the rules (default `true`): one that
    /// matches opens, one that no longer matches releases an incident open
    /// here. `false` ignores PagerDuty priority changes and unmatched edits.
    pub reevaluate_updates: Option<bool>,
    /// This source's share of `ledger.max_open_incidents`: at most this
    /// many of its incidents open at once (`crate::quota`). Default: an
    /// equal share of what the sources given none leave.
    pub max_open_incidents: Option<u32>,
    /// Alertmanager only: the most alerts one notification may carry
    /// (default 100); more is refused whole with a 422.
    pub max_alerts: Option<u32>,
}

/// Alerts one Alertmanager notification may carry by default: Alertmanager
/// sends every alert of a group in each notification, and its own
/// `max_alerts` setting truncates them (set it to this or less).
pub const DEFAULT_MAX_ALERTS: u32 = 100;
/// The most `max_alerts` may say: a 64 KiB body holds a few hundred alerts.
const MAX_ALERTS_LIMIT: u32 = 1_000;

impl SourceConfig {
    /// The settings the route's [`Mapping`] is compiled from.
    pub fn mapping(&self) -> mapping::Settings<'_> {
        mapping::Settings {
            rules: &self.rules,
            modes: &self.modes,
            default_ttl_seconds: self.default_ttl_seconds,
            max_future_skew_seconds: self.max_future_skew_seconds,
            forward_unmatched_resolves: self.forward_unmatched_resolves,
            reevaluate_updates: self.reevaluate_updates,
        }
    }
}

impl SourcesConfig {
    pub fn get(&self, s: Source) -> &SourceConfig {
        match s {
            Source::Canonical => &self.canonical,
            Source::Pagerduty => &self.pagerduty,
            Source::Servicenow => &self.servicenow,
            Source::Jsm => &self.jsm,
            Source::Opsgenie => &self.opsgenie,
            Source::Alertmanager => &self.alertmanager,
            Source::Standard => &self.standard,
            Source::Emr => &self.emr,
        }
    }

    pub fn get_mut(&mut self, s: Source) -> &mut SourceConfig {
        match s {
            Source::Canonical => &mut self.canonical,
            Source::Pagerduty => &mut self.pagerduty,
            Source::Servicenow => &mut self.servicenow,
            Source::Jsm => &mut self.jsm,
            Source::Opsgenie => &mut self.opsgenie,
            Source::Alertmanager => &mut self.alertmanager,
            Source::Standard => &mut self.standard,
            Source::Emr => &mut self.emr,
        }
    }

    /// Validates every source and reads its secrets through `env` (in the
    /// VM, `std::env::var`). All errors are returned at once. The canonical
    /// routes use [`ContractRules::default`] until
    /// [`CompiledSources::with_contract`] says otherwise.
    pub fn compile(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<CompiledSources, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut one = |s: Source| compile_one(s, self.get(s), env, &mut errors);
        let compiled = (
            one(Source::Canonical),
            one(Source::Pagerduty),
            one(Source::Servicenow),
            one(Source::Jsm),
            one(Source::Opsgenie),
            one(Source::Alertmanager),
            one(Source::Standard),
            one(Source::Emr),
        );
        match compiled {
            (
                Some(canonical),
                Some(pagerduty),
                Some(servicenow),
                Some(jsm),
                Some(opsgenie),
                Some(alertmanager),
                Some(standard),
                Some(emr),
            ) if errors.is_empty() => Ok(CompiledSources {
                canonical,
                pagerduty,
                servicenow,
                jsm,
                opsgenie,
                alertmanager,
                standard,
                emr,
            }),
            _ => Err(errors),
        }
    }
}

fn compile_one(
    source: Source,
    cfg: &SourceConfig,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<FieldError>,
) -> Option<CompiledSource> {
    let base = format!("sources.{source}");
    let auth = CompiledAuth::compile(&cfg.auth, cfg.insecure, &format!("{base}.auth"), env)
        .map_err(|e| errors.extend(e))
        .ok();
    let mapping = Mapping::compile(
        source,
        cfg.mapping(),
        &super::vocabulary(source),
        &base,
        errors,
    );
    let max_items = match (source, cfg.max_alerts) {
        (Source::Alertmanager, None) => DEFAULT_MAX_ALERTS,
        (Source::Alertmanager, Some(n)) => in_range(
            &format!("{base}.max_alerts"),
            n,
            1,
            MAX_ALERTS_LIMIT,
            errors,
        ),
        (_, Some(_)) => {
            errors.push(FieldError::new(
                format!("{base}.max_alerts"),
                "does not apply: only Alertmanager notifications carry several alerts",
            ));
            1
        }
        // Every other payload is about one incident.
        (_, None) => 1,
    };
    Some(CompiledSource {
        source,
        auth: auth?,
        mapping: mapping?,
        contract: ContractRules::default(),
        max_items: usize::try_from(max_items).unwrap_or(usize::MAX),
        max_open_incidents: cfg.max_open_incidents,
    })
}

/// One route's compiled settings. `Debug` redacts secrets.
#[derive(Debug, Clone)]
pub struct CompiledSource {
    source: Source,
    auth: CompiledAuth,
    mapping: Mapping,
    contract: ContractRules,
    max_items: usize,
    max_open_incidents: Option<u32>,
}

impl CompiledSource {
    pub fn source(&self) -> Source {
        self.source
    }

    pub fn auth(&self) -> &CompiledAuth {
        &self.auth
    }

    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// The contract rules of the canonical and Standard Webhooks routes,
    /// and the replay window of every route.
    pub fn contract(&self) -> &ContractRules {
        &self.contract
    }

    /// Whether this route takes deliveries with no credential (log it loudly).
    pub fn is_insecure(&self) -> bool {
        self.auth.is_insecure()
    }

    /// The most items (alerts) one delivery may carry.
    pub fn max_items(&self) -> usize {
        self.max_items
    }

    /// The share of open incidents the config gives this source, if any.
    pub fn max_open_incidents(&self) -> Option<u32> {
        self.max_open_incidents
    }
}

/// Every route's compiled settings.
#[derive(Debug, Clone)]
pub struct CompiledSources {
    canonical: CompiledSource,
    pagerduty: CompiledSource,
    servicenow: CompiledSource,
    jsm: CompiledSource,
    opsgenie: CompiledSource,
    alertmanager: CompiledSource,
    standard: CompiledSource,
    /// Fails closed: no route leads to it.
    emr: CompiledSource,
}

impl CompiledSources {
    pub fn get(&self, s: Source) -> &CompiledSource {
        match s {
            Source::Canonical => &self.canonical,
            Source::Pagerduty => &self.pagerduty,
            Source::Servicenow => &self.servicenow,
            Source::Jsm => &self.jsm,
            Source::Opsgenie => &self.opsgenie,
            Source::Alertmanager => &self.alertmanager,
            Source::Standard => &self.standard,
            Source::Emr => &self.emr,
        }
    }

    /// Sets the contract rules (replay window, unknown fields) the canonical
    /// and Standard Webhooks routes read their bodies with; the tool routes
    /// take the replay window from them.
    pub fn with_contract(mut self, rules: &ContractRules) -> Self {
        for s in Source::ALL {
            self.get_mut(s).contract = rules.clone();
        }
        self
    }

    fn get_mut(&mut self, s: Source) -> &mut CompiledSource {
        match s {
            Source::Canonical => &mut self.canonical,
            Source::Pagerduty => &mut self.pagerduty,
            Source::Servicenow => &mut self.servicenow,
            Source::Jsm => &mut self.jsm,
            Source::Opsgenie => &mut self.opsgenie,
            Source::Alertmanager => &mut self.alertmanager,
            Source::Standard => &mut self.standard,
            Source::Emr => &mut self.emr,
        }
    }

    /// The routes that accept deliveries without a credential.
    pub fn insecure_sources(&self) -> Vec<Source> {
        Source::ALL
            .into_iter()
            .filter(|s| self.get(*s).is_insecure())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const PD_SECRET: &str = "pd-secret-value-0123456789";

    fn env(k: &str) -> Option<String> {
        match k {
            "PD_SECRET" => Some(PD_SECRET.into()),
            "EMR_TOKEN" => Some("emr-token-0123456789abcdef".into()),
            _ => None,
        }
    }

    #[test]
    fn empty_config_compiles_and_refuses_everything() {
        let c: SourcesConfig = serde_json::from_str("{}").unwrap();
        let compiled = c.compile(&env).unwrap();
        assert!(compiled.insecure_sources().is_empty());
        for s in Source::ALL {
            assert_eq!(compiled.get(s).source(), s);
        }
    }

    #[test]
    fn every_error_is_named_and_no_secret_is_shown() {
        let c: SourcesConfig = serde_json::from_str(
            r#"{
              "pagerduty": {"auth": [{"kind": "pagerduty_signature",
                                      "secret_envs": ["PD_SECRET", "PD_SECRET_2"]}],
                            "rules": [{"match": {"labels": {"a": "b"}}}]},
              "canonical": {"auth": [{"kind": "bearer", "token_env": "NOPE"}]}
            }"#,
        )
        .unwrap();
        let errors = c.compile(&env).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "sources.canonical.auth[0].token_env",
                "sources.pagerduty.auth[0].secret_envs[1]",
                "sources.pagerduty.rules[0].match.labels",
            ]
        );
        assert_eq!(errors[1].message, crate::envvar::not_set("PD_SECRET_2"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<SourcesConfig>(r#"{"nagios": {}}"#).is_err());
        assert!(serde_json::from_str::<SourcesConfig>(r#"{"pagerduty": {"rule": []}}"#).is_err());
        assert!(serde_json::from_str::<SourcesConfig>(
            r#"{"pagerduty": {"rules": [{"mtch": {}}]}}"#
        )
        .is_err());
    }

    #[test]
    fn debug_of_compiled_config_redacts_secrets() {
        let c: SourcesConfig = serde_json::from_str(
            r#"{"pagerduty": {"auth": [{"kind": "pagerduty_signature", "secret_env": "PD_SECRET"}]},
                "canonical": {"auth": [{"kind": "bearer", "token_env": "EMR_TOKEN"}],
                              "insecure": true}}"#,
        )
        .unwrap();
        let compiled = c.compile(&env).unwrap();
        let dump = format!("{compiled:?}");
        assert!(!dump.contains(PD_SECRET));
        assert!(!dump.contains("emr-token-0123456789abcdef"));
        // `insecure` does not bypass a configured credential.
        assert!(compiled.insecure_sources().is_empty());
    }

    #[test]
    fn contract_rules_reach_the_canonical_routes() {
        let compiled = SourcesConfig::default()
            .compile(&env)
            .unwrap()
            .with_contract(&ContractRules {
                replay_window_seconds: 600,
                allow_unknown_fields: true,
            });
        assert_eq!(
            compiled
                .get(Source::Canonical)
                .contract()
                .replay_window_seconds,
            600
        );
        assert!(
            compiled
                .get(Source::Standard)
                .contract()
                .allow_unknown_fields
        );
        // The tool routes take the replay window (PagerDuty and Jira
        // refuse events older than it).
        assert_eq!(
            compiled
                .get(Source::Pagerduty)
                .contract()
                .replay_window_seconds,
            600
        );
    }
}
