//! Mapping rules: which source events count, and what each one brings.
//!
//! Every source parser turns a payload into [`Candidate`]s: an incident id,
//! the source's own verdict (opens, resolves, or does not concern us), a
//! timestamp, and [`Facts`] — the attributes a rule can match (PagerDuty
//! `service_id`, ServiceNow `priority`, Alertmanager `labels.severity`…).
//! This module then decides, the same way for every source:
//!
//! 1. **Mode.** The source's `modes` table may override the verdict by key
//!    (PagerDuty `event_type`, Opsgenie `action`, ServiceNow `state`, Jira
//!    `webhookEvent` / status name / status category, Alertmanager alert
//!    `status`): `active`, `resolved` or `ignore`. The first key of the
//!    candidate found in the table wins; otherwise the source's default.
//! 2. **Rule.** Rules are tried in config order and the **first** whose every
//!    condition holds wins. A condition `"fact": ["a", "b"]` holds when the
//!    fact has any of the listed values (ASCII case ignored); `labels` holds a
//!    map of such conditions on Alertmanager labels. An empty `match` matches
//!    everything, so a catch-all rule goes last.
//! 3. **No rule matched.** The event is [`Item::Ignored`] — except a resolve,
//!    which is forwarded with defaults while `forward_unmatched_resolves` is
//!    on (the default): an incident whose attributes changed while it was open
//!    (a priority lowered, a label edited) must still be closed; and an
//!    **update** (a PagerDuty `incident.priority_updated`, a Jira
//!    `jira:issue_updated`, a ServiceNow record changed after its creation)
//!    while `reevaluate_updates` is on (the default), which becomes a
//!    resolution that *releases* the incident if it is open here (
//!    a P1 lowered to P3 no longer holds the emergency group). A matching
//!    update opens the incident, or updates it: a P3 raised to P1 switches.
//!
//! What a matched rule brings: `incident_type` (default: derived from the
//! payload, see each source, else `<SOURCE>_INCIDENT`), `group`, the ordered
//! `queues`, `priority` (default: the source's own priority scale mapped to
//! 1–5, else [`DEFAULT_PRIORITY`]) and `ttl_seconds` (default: the source's
//! `default_ttl_seconds`).
//!
//! The canonical and Standard Webhooks routes carry their own type, queues and
//! ttl; their rules may only match `incident_type` and set `group`/`priority`
//! (and `queues` when the event has none). With no rules they pass unchanged.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::contract::{MAX_QUEUES, TTL_MAX, TTL_MIN};
use crate::event::{
    About, CorrelationId, GroupId, IncidentEvent, IncidentType, Priority, QueueId, RoutingMode,
    Source, DEFAULT_PRIORITY, DEFAULT_TTL_SECONDS, INCIDENT_TYPE_MAX,
};
use crate::problem::FieldError;
use crate::text::printable;

/// What one incident in a payload became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(IncidentEvent),
    /// Understood but not ours to act on (answered 202 `IGNORED`, counted,
    /// logged). `id` is the correlation id (or the tool's event id), `reason`
    /// is printable ASCII.
    Ignored {
        id: String,
        reason: String,
    },
}

/// Most urgent and least urgent priority a rule may set.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<Priority> = 1..=5;

/// How far ahead of our clock a tool's event time may be, unless configured.
pub const DEFAULT_MAX_FUTURE_SKEW_SECONDS: u32 = 300;

/// What a `modes` entry turns a source event into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeSetting {
    Active,
    Resolved,
    Ignore,
}

/// One value or a list of values a fact may take.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Values {
    One(String),
    Many(Vec<String>),
}

impl Values {
    fn as_slice(&self) -> &[String] {
        match self {
            Values::One(v) => std::slice::from_ref(v),
            Values::Many(v) => v,
        }
    }
}

/// The mapping part of a route's settings, borrowed from its config (the
/// route's `sources.<name>` section also holds its credentials and quota,
/// which are not the mapping's to read).
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    pub rules: &'a [RuleConfig],
    pub modes: &'a BTreeMap<String, ModeSetting>,
    pub default_ttl_seconds: Option<u32>,
    pub max_future_skew_seconds: Option<u32>,
    pub forward_unmatched_resolves: Option<bool>,
    pub reevaluate_updates: Option<bool>,
}

/// The right-hand side of a `match` entry: values, or (for `labels`) a map
/// of label name to values.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ConditionConfig {
    Values(Values),
    Labels(BTreeMap<String, Values>),
}

/// A mapping rule as written in config.
///
/// ```json
/// {"name": "voice P1", "match": {"service_id": "PIJ90N7", "priority": ["P1", "P2"]},
///  "incident_type": "CARRIER_OUTAGE", "group": "eg-voice", "queues": ["q-1", "q-2"],
///  "priority": 1, "ttl_seconds": 7200}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Shown in logs and ignored-event reasons.
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub conditions: BTreeMap<String, ConditionConfig>,
    pub incident_type: Option<String>,
    pub group: Option<String>,
    pub queues: Vec<String>,
    pub priority: Option<Priority>,
    pub ttl_seconds: Option<u32>,
}

/// What a source offers rules: the fact names it fills, whether it has
/// labels, whether `modes` applies, and whether it is a canonical route.
#[derive(Debug, Clone, Copy)]
pub struct Vocabulary {
    pub facts: &'static [&'static str],
    pub labels: bool,
    pub modes: bool,
    pub canonical: bool,
}

/// Characters of [`Facts::summary`] at most.
pub const SUMMARY_MAX: usize = 240;

/// A source event's attributes, by fact name; a name may repeat (tags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts(Vec<(String, String)>);

impl Facts {
    /// Records `value` under `name`, skipping blank values.
    pub fn add(&mut self, name: &str, value: &str) {
        let value = value.trim();
        if !value.is_empty() {
            self.0.push((name.to_owned(), value.to_owned()));
        }
    }

    pub fn add_opt(&mut self, name: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.add(name, v);
        }
    }

    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The facts as the rules saw them, for a reason a person reads:
    /// `service_id=PXXXX, priority=P3`, at most [`SUMMARY_MAX`] characters
    /// of printable text (they are the sender's words).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (name, value) in &self.0 {
            let item = format!("{}={}", printable(name), printable(value));
            let sep = if out.is_empty() { "" } else { ", " };
            if out.len() + sep.len() + item.len() > SUMMARY_MAX {
                out.push_str(if out.is_empty() { "..." } else { ", ..." });
                break;
            }
            out.push_str(sep);
            out.push_str(&item);
        }
        if out.is_empty() {
            out.push_str("no facts");
        }
        out
    }

    fn any_of(&self, name: &str, allowed: &[String]) -> bool {
        self.values(name)
            .any(|v| allowed.iter().any(|a| a.eq_ignore_ascii_case(v)))
    }
}

/// The source's own reading of an event, before `modes` and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Mode(RoutingMode),
    /// Not an open/resolve event (an acknowledgement, a comment…): why.
    Ignore(String),
}

/// One incident event as a source parser reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: CorrelationId,
    /// Keys looked up in the source's `modes` table, most specific first.
    pub mode_keys: Vec<String>,
    pub verdict: Verdict,
    pub timestamp: DateTime<Utc>,
    /// The payload field the timestamp came from, for error messages.
    pub timestamp_field: String,
    pub facts: Facts,
    /// Text an incident type is derived from when no rule sets one.
    pub type_hint: Option<String>,
    /// The source's own priority mapped to 1–5.
    pub natural_priority: Option<Priority>,
    /// It reports a change to an incident that may be open here already (an
    /// update, not its creation): when it opens and no rule matches, an
    /// incident open here is released instead of left as it was.
    pub update: Update,
    /// Its title and link, when the tool sent them.
    pub about: Option<About>,
}

/// Whether a [`Candidate`] is an update of an incident (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Update {
    /// The incident's creation, a resolution, or a source without updates.
    #[default]
    No,
    /// An edit that opens when a rule matches and releases when none does.
    Reevaluate,
    /// An event the source reads as neither opening nor resolving *unless*
    /// updates are re-evaluated (PagerDuty `incident.priority_updated`):
    /// ignored with this reason when they are not.
    ReevaluateOrIgnore(&'static str),
}

#[derive(Debug, Clone)]
struct Condition {
    fact: String,
    any_of: Vec<String>,
}

/// A compiled rule.
#[derive(Debug, Clone)]
struct Rule {
    name: Option<String>,
    conditions: Vec<Condition>,
    incident_type: Option<IncidentType>,
    group: Option<GroupId>,
    queues: Vec<QueueId>,
    priority: Option<Priority>,
    ttl_seconds: Option<u32>,
}

impl Rule {
    fn matches(&self, facts: &Facts) -> bool {
        self.conditions
            .iter()
            .all(|c| facts.any_of(&c.fact, &c.any_of))
    }
}

/// A source's compiled mapping: rules, mode overrides and defaults.
#[derive(Debug, Clone)]
pub struct Mapping {
    source: Source,
    rules: Vec<Rule>,
    /// `modes`, keys lowercased.
    modes: Vec<(String, ModeSetting)>,
    default_ttl_seconds: u32,
    default_type: IncidentType,
    forward_unmatched_resolves: bool,
    reevaluate_updates: bool,
    max_future_skew_seconds: u32,
}

impl Mapping {
    /// Validates `cfg`'s mapping part for `source`; errors name fields under
    /// `base`. The result is only meaningful when no error was pushed.
    pub fn compile(
        source: Source,
        cfg: Settings<'_>,
        vocab: &Vocabulary,
        base: &str,
        errors: &mut Vec<FieldError>,
    ) -> Option<Mapping> {
        let rules = cfg
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| compile_rule(r, vocab, &format!("{base}.rules[{i}]"), errors))
            .collect();
        if !vocab.modes && !cfg.modes.is_empty() {
            errors.push(FieldError::new(
                format!("{base}.modes"),
                "does not apply: this route's payload names its routingMode",
            ));
        }
        let default_ttl_seconds = match cfg.default_ttl_seconds {
            Some(_) if vocab.canonical => {
                errors.push(FieldError::new(
                    format!("{base}.default_ttl_seconds"),
                    "does not apply: this route's payload carries its own ttl",
                ));
                DEFAULT_TTL_SECONDS
            }
            Some(t) => check_ttl(t, &format!("{base}.default_ttl_seconds"), errors),
            None => DEFAULT_TTL_SECONDS,
        };
        let max_future_skew_seconds = match cfg.max_future_skew_seconds {
            // The contract bounds its own timestamps (a fixed skew and the
            // replay window): a setting here would be silently ignored.
            Some(_) if vocab.canonical => {
                errors.push(FieldError::new(
                    format!("{base}.max_future_skew_seconds"),
                    "does not apply: this route's timestamps are bounded by the canonical contract",
                ));
                DEFAULT_MAX_FUTURE_SKEW_SECONDS
            }
            Some(s) if s > 3600 => {
                errors.push(FieldError::new(
                    format!("{base}.max_future_skew_seconds"),
                    "must be at most 3600",
                ));
                s
            }
            Some(s) => s,
            None => DEFAULT_MAX_FUTURE_SKEW_SECONDS,
        };
        let default_type = IncidentType::parse(&format!(
            "{}_INCIDENT",
            source.as_str().to_ascii_uppercase()
        ))
        .map_err(|e| errors.push(FieldError::new(base, e.0)))
        .ok()?;
        Some(Mapping {
            source,
            rules,
            modes: cfg
                .modes
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), *v))
                .collect(),
            default_ttl_seconds,
            default_type,
            forward_unmatched_resolves: cfg.forward_unmatched_resolves.unwrap_or(true),
            reevaluate_updates: cfg.reevaluate_updates.unwrap_or(true),
            max_future_skew_seconds,
        })
    }

    /// How far ahead of our clock a source timestamp may be. A timestamp far
    /// in the future would make its event win over every later one.
    pub fn max_future_skew_seconds(&self) -> u32 {
        self.max_future_skew_seconds
    }

    /// Applies `modes` and the rules to one candidate.
    pub fn map(&self, c: Candidate) -> Item {
        let mode = match self.override_for(&c.mode_keys) {
            Some((_, ModeSetting::Active)) => RoutingMode::Active,
            Some((_, ModeSetting::Resolved)) => RoutingMode::Resolved,
            Some((key, ModeSetting::Ignore)) => {
                return ignored(
                    &c.id,
                    format!(
                        "{} is mapped to ignore by sources.{}.modes",
                        printable(key),
                        self.source
                    ),
                )
            }
            None => match (&c.verdict, c.update) {
                (_, Update::ReevaluateOrIgnore(why)) if !self.reevaluate_updates => {
                    return ignored(&c.id, why.to_owned())
                }
                (Verdict::Mode(m), _) => *m,
                (Verdict::Ignore(reason), _) => return ignored(&c.id, reason.clone()),
            },
        };
        let releases =
            mode == RoutingMode::Active && self.reevaluate_updates && c.update != Update::No;
        match self.rules.iter().find(|r| r.matches(&c.facts)) {
            Some(rule) => Item::Event(self.event(c, mode, Some(rule))),
            None if mode == RoutingMode::Resolved && self.forward_unmatched_resolves => {
                Item::Event(self.event(c, mode, None))
            }
            None if releases => {
                let detail = format!(
                    "released: {} matches no mapping rule any more ({})",
                    printable(c.mode_keys.first().map_or("the update", String::as_str)),
                    c.facts.summary()
                );
                let mut event = self.event(c, RoutingMode::Resolved, None);
                event.detail = Some(detail);
                Item::Event(event)
            }
            None => ignored(
                &c.id,
                format!("no mapping rule matches ({})", c.facts.summary()),
            ),
        }
    }

    /// Applies the rules to an event of a canonical route (see module doc).
    pub fn refine_canonical(&self, mut event: IncidentEvent) -> Item {
        if self.rules.is_empty() {
            return Item::Event(event);
        }
        let mut facts = Facts::default();
        facts.add("incident_type", event.incident_type.as_str());
        match self.rules.iter().find(|r| r.matches(&facts)) {
            Some(rule) => {
                if let Some(g) = &rule.group {
                    event.group = Some(g.clone());
                }
                if let Some(p) = rule.priority {
                    event.priority = p;
                }
                if event.target_queue_ids.is_empty() && event.routing_mode == RoutingMode::Active {
                    event.target_queue_ids = rule.queues.clone();
                }
                Item::Event(event)
            }
            None if event.routing_mode == RoutingMode::Resolved
                && self.forward_unmatched_resolves =>
            {
                Item::Event(event)
            }
            None => ignored(
                &event.correlation_id,
                format!(
                    "no mapping rule matches (incident_type={})",
                    event.incident_type.as_str()
                ),
            ),
        }
    }

    fn override_for<'k>(&self, keys: &'k [String]) -> Option<(&'k str, ModeSetting)> {
        keys.iter().find_map(|k| {
            self.modes
                .iter()
                .find(|(m, _)| m.eq_ignore_ascii_case(k))
                .map(|(_, s)| (k.as_str(), *s))
        })
    }

    fn event(&self, c: Candidate, mode: RoutingMode, rule: Option<&Rule>) -> IncidentEvent {
        let incident_type = rule
            .and_then(|r| r.incident_type.clone())
            .or_else(|| c.type_hint.as_deref().and_then(derive_incident_type))
            .unwrap_or_else(|| self.default_type.clone());
        IncidentEvent {
            source: self.source,
            correlation_id: c.id,
            incident_type,
            routing_mode: mode,
            target_queue_ids: rule.map(|r| r.queues.clone()).unwrap_or_default(),
            timestamp: c.timestamp,
            ttl_seconds: rule
                .and_then(|r| r.ttl_seconds)
                .unwrap_or(self.default_ttl_seconds),
            priority: rule
                .and_then(|r| r.priority)
                .or(c.natural_priority)
                .unwrap_or(DEFAULT_PRIORITY),
            group: rule.and_then(|r| r.group.clone()),
            detail: None,
            about: c.about,
        }
    }

    /// The emergency groups the rules name.
    pub fn groups(&self) -> impl Iterator<Item = &GroupId> + '_ {
        self.rules.iter().filter_map(|r| r.group.as_ref())
    }

    /// The name of the rule `facts` would match, for logs and tests.
    pub fn matching_rule(&self, facts: &Facts) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| r.matches(facts))
            .map(|r| r.name.as_deref().unwrap_or("(unnamed)"))
    }
}

fn ignored(id: &CorrelationId, reason: String) -> Item {
    Item::Ignored {
        id: id.to_string(),
        reason,
    }
}

fn check_ttl(t: u32, field: &str, errors: &mut Vec<FieldError>) -> u32 {
    if !(TTL_MIN..=TTL_MAX).contains(&u64::from(t)) {
        errors.push(FieldError::new(
            field,
            format!("must be between {TTL_MIN} and {TTL_MAX} seconds"),
        ));
    }
    t
}

fn compile_rule(
    r: &RuleConfig,
    vocab: &Vocabulary,
    base: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Rule> {
    let before = errors.len();
    let conditions = compile_conditions(&r.conditions, vocab, base, errors);
    let incident_type = r.incident_type.as_deref().and_then(|t| {
        let field = format!("{base}.incident_type");
        if vocab.canonical {
            errors.push(FieldError::new(
                field,
                "does not apply: this route's payload carries its own incidentType",
            ));
            return None;
        }
        IncidentType::parse(t)
            .map_err(|e| errors.push(FieldError::new(field, e.0)))
            .ok()
    });
    let group = r.group.as_deref().and_then(|g| {
        GroupId::from_config(g)
            .map_err(|m| errors.push(FieldError::new(format!("{base}.group"), m)))
            .ok()
    });
    let queues = compile_queues(&r.queues, &format!("{base}.queues"), errors);
    if let Some(p) = r.priority {
        if !PRIORITY_RANGE.contains(&p) {
            errors.push(FieldError::new(
                format!("{base}.priority"),
                "must be between 1 (most urgent) and 5",
            ));
        }
    }
    let ttl_seconds = r.ttl_seconds.map(|t| {
        let field = format!("{base}.ttl_seconds");
        if vocab.canonical {
            errors.push(FieldError::new(
                field,
                "does not apply: this route's payload carries its own ttl",
            ));
            t
        } else {
            check_ttl(t, &field, errors)
        }
    });
    (errors.len() == before).then(|| Rule {
        name: r.name.clone(),
        conditions,
        incident_type,
        group,
        queues,
        priority: r.priority,
        ttl_seconds,
    })
}

fn compile_queues(queues: &[String], base: &str, errors: &mut Vec<FieldError>) -> Vec<QueueId> {
    if queues.len() > MAX_QUEUES {
        errors.push(FieldError::new(
            base,
            format!("must hold at most {MAX_QUEUES} queue ids"),
        ));
    }
    let mut out: Vec<QueueId> = Vec::with_capacity(queues.len());
    for (i, q) in queues.iter().enumerate() {
        let field = format!("{base}[{i}]");
        match QueueId::parse(q) {
            Ok(id) if out.contains(&id) => {
                errors.push(FieldError::new(field, format!("repeats queue id {q:?}")));
            }
            Ok(id) => out.push(id),
            Err(e) => errors.push(FieldError::new(field, e.0)),
        }
    }
    out
}

fn compile_conditions(
    conditions: &BTreeMap<String, ConditionConfig>,
    vocab: &Vocabulary,
    base: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<Condition> {
    let mut out = Vec::new();
    for (fact, cond) in conditions {
        let field = format!("{base}.match.{fact}");
        match cond {
            ConditionConfig::Labels(labels) if vocab.labels && fact == "labels" => {
                for (label, values) in labels {
                    let name = format!("labels.{label}");
                    if let Some(c) =
                        condition(&name, values, &format!("{base}.match.{name}"), errors)
                    {
                        out.push(c);
                    }
                }
            }
            ConditionConfig::Values(values) if vocab.facts.contains(&fact.as_str()) => {
                if let Some(c) = condition(fact, values, &field, errors) {
                    out.push(c);
                }
            }
            ConditionConfig::Values(_) if vocab.labels && fact == "labels" => {
                errors.push(FieldError::new(
                    field,
                    "must map label names to values, e.g. {\"severity\": \"critical\"}",
                ));
            }
            _ => {
                let mut known: Vec<&str> = vocab.facts.to_vec();
                if vocab.labels {
                    known.push("labels");
                }
                errors.push(FieldError::new(
                    field,
                    format!(
                        "is not a condition of this source; use one of: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    out
}

fn condition(
    fact: &str,
    values: &Values,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Condition> {
    let any_of: Vec<String> = values
        .as_slice()
        .iter()
        .map(|v| v.trim().to_owned())
        .collect();
    if any_of.is_empty() || any_of.iter().any(String::is_empty) {
        errors.push(FieldError::new(
            field,
            "must list at least one non-empty value",
        ));
        return None;
    }
    Some(Condition {
        fact: fact.to_owned(),
        any_of,
    })
}

/// Turns free text into an `UPPER_SNAKE` incident type: `HighErrorRate` →
/// `HIGH_ERROR_RATE`, `My Mail Service` → `MY_MAIL_SERVICE`. `None` when
/// nothing usable remains (the caller then uses `<SOURCE>_INCIDENT`).
pub fn derive_incident_type(hint: &str) -> Option<IncidentType> {
    let chars: Vec<char> = hint.chars().collect();
    let mut out = String::with_capacity(hint.len() + 8);
    let mut prev: Option<char> = None;
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_alphanumeric() {
            let next_lower = chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            let boundary = match prev {
                Some(p) if c.is_ascii_uppercase() => {
                    p.is_ascii_lowercase()
                        || p.is_ascii_digit()
                        || (p.is_ascii_uppercase() && next_lower)
                }
                _ => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
            prev = Some(c);
        } else {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            prev = None;
        }
    }
    let start = out.find(|c: char| c.is_ascii_uppercase())?;
    let mut t: String = out.get(start..)?.chars().take(INCIDENT_TYPE_MAX).collect();
    while t.ends_with('_') {
        t.pop();
    }
    IncidentType::parse(&t).ok()
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::sources::SourceConfig;

    const VOCAB: Vocabulary = Vocabulary {
        facts: &["service_id", "priority", "tags"],
        labels: false,
        modes: true,
        canonical: false,
    };

    fn compile(json: &str) -> Result<Mapping, Vec<FieldError>> {
        let cfg: SourceConfig = serde_json::from_str(json).unwrap();
        let mut errors = Vec::new();
        let m = Mapping::compile(
            Source::Pagerduty,
            cfg.mapping(),
            &VOCAB,
            "sources.pagerduty",
            &mut errors,
        );
        if errors.is_empty() {
            Ok(m.unwrap())
        } else {
            Err(errors)
        }
    }

    fn candidate(verdict: Verdict, facts: &[(&str, &str)]) -> Candidate {
        let mut f = Facts::default();
        for (k, v) in facts {
            f.add(k, v);
        }
        Candidate {
            id: CorrelationId::parse("PT4KHLK").unwrap(),
            mode_keys: vec!["incident.acknowledged".into()],
            verdict,
            timestamp: DateTime::from_timestamp(1_723_731_721, 0).unwrap(),
            timestamp_field: "event.occurred_at".into(),
            facts: f,
            type_hint: Some("My Mail Service".into()),
            natural_priority: Some(2),
            update: Update::No,
            about: None,
        }
    }

    fn event(item: Item) -> IncidentEvent {
        match item {
            Item::Event(e) => e,
            Item::Ignored { reason, .. } => panic!("ignored: {reason}"),
        }
    }

    const RULES: &str = r#"{"rules": [
        {"name": "voice", "match": {"service_id": "PIJ90N7", "priority": ["P1", "P2"]},
         "incident_type": "CARRIER_OUTAGE", "group": "eg-voice", "queues": ["q-1", "q-2"],
         "priority": 1, "ttl_seconds": 7200},
        {"name": "tagged", "match": {"tags": "voice"}, "group": "eg-tagged"},
        {"name": "catch-all", "queues": ["q-9"]}
    ], "default_ttl_seconds": 1800}"#;

    #[test]
    fn first_matching_rule_wins_and_brings_its_outputs() {
        let m = compile(RULES).unwrap();
        let active = Verdict::Mode(RoutingMode::Active);
        let e = event(m.map(candidate(
            active.clone(),
            &[
                ("service_id", "PIJ90N7"),
                ("priority", "p2"),
                ("tags", "voice"),
            ],
        )));
        assert_eq!(e.incident_type.as_str(), "CARRIER_OUTAGE");
        assert_eq!(e.group.as_ref().map(GroupId::as_str), Some("eg-voice"));
        assert_eq!(e.target_queue_ids.len(), 2);
        assert_eq!((e.priority, e.ttl_seconds), (1, 7200));
        assert_eq!(e.routing_mode, RoutingMode::Active);

        // Second rule: no type, priority or ttl of its own → derived/defaults.
        let e = event(m.map(candidate(
            active.clone(),
            &[("tags", "ops"), ("tags", "VOICE")],
        )));
        assert_eq!(e.group.as_ref().map(GroupId::as_str), Some("eg-tagged"));
        assert_eq!(e.incident_type.as_str(), "MY_MAIL_SERVICE");
        assert_eq!((e.priority, e.ttl_seconds), (2, 1800));
        assert!(e.target_queue_ids.is_empty());

        let e = event(m.map(candidate(active, &[])));
        assert_eq!(e.target_queue_ids[0].as_str(), "q-9");
        assert_eq!(m.matching_rule(&Facts::default()), Some("catch-all"));
    }

    #[test]
    fn unmatched_events_are_ignored_but_resolves_are_forwarded() {
        let m = compile(r#"{"rules": [{"match": {"service_id": "PIJ90N7"}}]}"#).unwrap();
        let item = m.map(candidate(Verdict::Mode(RoutingMode::Active), &[]));
        assert_eq!(
            item,
            Item::Ignored {
                id: "PT4KHLK".into(),
                reason: "no mapping rule matches (no facts)".into()
            }
        );
        let e = event(m.map(candidate(Verdict::Mode(RoutingMode::Resolved), &[])));
        assert_eq!(e.routing_mode, RoutingMode::Resolved);
        assert_eq!(e.group, None);

        let strict = compile(
            r#"{"rules": [{"match": {"service_id": "X"}}], "forward_unmatched_resolves": false}"#,
        )
        .unwrap();
        assert!(matches!(
            strict.map(candidate(Verdict::Mode(RoutingMode::Resolved), &[])),
            Item::Ignored { .. }
        ));
    }

    #[test]
    fn no_rules_means_nothing_counts() {
        let m = compile("{}").unwrap();
        assert!(matches!(
            m.map(candidate(Verdict::Mode(RoutingMode::Active), &[])),
            Item::Ignored { .. }
        ));
    }

    #[test]
    fn an_update_opens_when_a_rule_matches_and_releases_when_none_does() {
        let m = compile(r#"{"rules": [{"match": {"priority": "P1"}, "group": "eg-1"}]}"#).unwrap();
        let update = |p: &str| Candidate {
            update: Update::Reevaluate,
            ..candidate(Verdict::Mode(RoutingMode::Active), &[("priority", p)])
        };
        let e = event(m.map(update("P1")));
        assert_eq!((e.routing_mode, e.detail), (RoutingMode::Active, None));
        let e = event(m.map(update("P3")));
        assert_eq!(e.routing_mode, RoutingMode::Resolved);
        assert_eq!(
            e.detail.as_deref(),
            Some("released: incident.acknowledged matches no mapping rule any more (priority=P3)")
        );
        // Not an update (a creation): nothing to release, ignored.
        let created = candidate(Verdict::Mode(RoutingMode::Active), &[("priority", "P3")]);
        assert!(matches!(m.map(created), Item::Ignored { .. }));
        // Turned off: an unmatched update is ignored too.
        let off =
            compile(r#"{"reevaluate_updates": false, "rules": [{"match": {"priority": "P1"}}]}"#)
                .unwrap();
        assert!(matches!(off.map(update("P3")), Item::Ignored { .. }));
        assert_eq!(
            event(off.map(update("P1"))).routing_mode,
            RoutingMode::Active
        );
    }

    #[test]
    fn modes_override_the_source_verdict() {
        let m =
            compile(r#"{"rules": [{}], "modes": {"Incident.Acknowledged": "active"}}"#).unwrap();
        let e = event(m.map(candidate(Verdict::Ignore("ack".into()), &[])));
        assert_eq!(e.routing_mode, RoutingMode::Active);

        let m =
            compile(r#"{"rules": [{}], "modes": {"incident.acknowledged": "ignore"}}"#).unwrap();
        match m.map(candidate(Verdict::Mode(RoutingMode::Active), &[])) {
            Item::Ignored { reason, .. } => assert_eq!(
                reason,
                "incident.acknowledged is mapped to ignore by sources.pagerduty.modes"
            ),
            other => panic!("{other:?}"),
        }
        let m = compile(r#"{"rules": [{}]}"#).unwrap();
        assert_eq!(
            m.map(candidate(
                Verdict::Ignore("not an open or resolve".into()),
                &[]
            )),
            Item::Ignored {
                id: "PT4KHLK".into(),
                reason: "not an open or resolve".into()
            }
        );
    }

    #[test]
    fn config_errors_name_every_broken_field() {
        let e = compile(
            r#"{"rules": [
                {"match": {"servce_id": "X", "priority": []}, "incident_type": "carrier",
                 "group": "", "queues": ["q", "q", ""], "priority": 0, "ttl_seconds": 5}
            ], "default_ttl_seconds": 999999, "max_future_skew_seconds": 7200}"#,
        )
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "sources.pagerduty.rules[0].match.priority",
                "sources.pagerduty.rules[0].match.servce_id",
                "sources.pagerduty.rules[0].incident_type",
                "sources.pagerduty.rules[0].group",
                "sources.pagerduty.rules[0].queues[1]",
                "sources.pagerduty.rules[0].queues[2]",
                "sources.pagerduty.rules[0].priority",
                "sources.pagerduty.rules[0].ttl_seconds",
                "sources.pagerduty.default_ttl_seconds",
                "sources.pagerduty.max_future_skew_seconds",
            ]
        );
        assert!(
            e[1].message.contains("service_id, priority, tags"),
            "{}",
            e[1].message
        );
    }

    #[test]
    fn canonical_rules_set_group_and_priority_only() {
        let vocab = Vocabulary {
            facts: &["incident_type"],
            labels: false,
            modes: false,
            canonical: true,
        };
        let cfg: SourceConfig = serde_json::from_str(
            r#"{"rules": [{"match": {"incident_type": "CARRIER_OUTAGE"}, "group": "eg-1",
                          "priority": 1, "queues": ["q-fallback"]}]}"#,
        )
        .unwrap();
        let mut errors = Vec::new();
        let m = Mapping::compile(
            Source::Canonical,
            cfg.mapping(),
            &vocab,
            "sources.canonical",
            &mut errors,
        )
        .unwrap();
        assert!(errors.is_empty());
        let ev = IncidentEvent {
            source: Source::Canonical,
            correlation_id: CorrelationId::parse("INC-1").unwrap(),
            incident_type: IncidentType::parse("CARRIER_OUTAGE").unwrap(),
            routing_mode: RoutingMode::Active,
            target_queue_ids: vec![QueueId::parse("q-1").unwrap()],
            timestamp: DateTime::from_timestamp(1_723_731_721, 0).unwrap(),
            ttl_seconds: 600,
            priority: DEFAULT_PRIORITY,
            group: None,
            detail: None,
            about: None,
        };
        let e = event(m.refine_canonical(ev.clone()));
        assert_eq!(e.group.as_ref().map(GroupId::as_str), Some("eg-1"));
        assert_eq!((e.priority, e.ttl_seconds), (1, 600));
        assert_eq!(e.target_queue_ids, ev.target_queue_ids);

        let other = IncidentEvent {
            incident_type: IncidentType::parse("OTHER").unwrap(),
            ..ev
        };
        assert!(matches!(m.refine_canonical(other), Item::Ignored { .. }));

        let bad: SourceConfig = serde_json::from_str(
            r#"{"rules": [{"incident_type": "X", "ttl_seconds": 60}], "modes": {"a": "active"},
                "default_ttl_seconds": 60}"#,
        )
        .unwrap();
        let mut errors = Vec::new();
        Mapping::compile(
            Source::Canonical,
            bad.mapping(),
            &vocab,
            "sources.canonical",
            &mut errors,
        );
        assert_eq!(errors.len(), 4, "{errors:?}");
    }

    #[test]
    fn future_skew_is_refused_where_the_contract_bounds_timestamps() {
        let canonical = Vocabulary {
            facts: &["incident_type"],
            labels: false,
            modes: false,
            canonical: true,
        };
        let cfg: SourceConfig = serde_json::from_str(r#"{"max_future_skew_seconds": 60}"#).unwrap();
        for (source, base) in [
            (Source::Canonical, "sources.canonical"),
            (Source::Standard, "sources.standard"),
        ] {
            let mut errors = Vec::new();
            Mapping::compile(source, cfg.mapping(), &canonical, base, &mut errors);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].field, format!("{base}.max_future_skew_seconds"));
            assert!(errors[0].message.contains("does not apply"), "{errors:?}");
        }
        // Tool routes keep it.
        let m = compile(r#"{"max_future_skew_seconds": 60}"#).unwrap();
        assert_eq!(m.max_future_skew_seconds(), 60);
    }

    #[test]
    fn labels_conditions_only_where_the_source_has_labels() {
        let vocab = Vocabulary {
            facts: &["receiver"],
            labels: true,
            modes: true,
            canonical: false,
        };
        let cfg: SourceConfig = serde_json::from_str(
            r#"{"rules": [{"match": {"labels": {"severity": ["critical", "page"], "team": "voice"}}}]}"#,
        )
        .unwrap();
        let mut errors = Vec::new();
        let m = Mapping::compile(
            Source::Alertmanager,
            cfg.mapping(),
            &vocab,
            "s",
            &mut errors,
        )
        .unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        let mut f = Facts::default();
        f.add("labels.severity", "page");
        assert_eq!(m.matching_rule(&f), None);
        f.add("labels.team", "Voice");
        assert!(m.matching_rule(&f).is_some());

        let cfg: SourceConfig =
            serde_json::from_str(r#"{"rules": [{"match": {"labels": "critical"}}]}"#).unwrap();
        let mut errors = Vec::new();
        Mapping::compile(
            Source::Alertmanager,
            cfg.mapping(),
            &vocab,
            "s",
            &mut errors,
        );
        assert_eq!(errors[0].field, "s.rules[0].match.labels");
        let mut errors = Vec::new();
        let cfg: SourceConfig =
            serde_json::from_str(r#"{"rules": [{"match": {"labels": {"a": "b"}}}]}"#).unwrap();
        Mapping::compile(Source::Pagerduty, cfg.mapping(), &VOCAB, "s", &mut errors);
        assert_eq!(errors[0].field, "s.rules[0].match.labels");
    }

    #[test]
    fn incident_types_derive_from_free_text() {
        let d = |s: &str| derive_incident_type(s).map(|t| t.as_str().to_owned());
        assert_eq!(d("HighErrorRate").as_deref(), Some("HIGH_ERROR_RATE"));
        assert_eq!(d("SIPTrunkDown").as_deref(), Some("SIP_TRUNK_DOWN"));
        assert_eq!(d("My Mail Service").as_deref(), Some("MY_MAIL_SERVICE"));
        assert_eq!(
            d("voice-gw_5xx errors").as_deref(),
            Some("VOICE_GW_5XX_ERRORS")
        );
        assert_eq!(d("  network  ").as_deref(), Some("NETWORK"));
        assert_eq!(d("5xx").as_deref(), Some("XX"));
        assert_eq!(d("Kubernetes/API"), Some("KUBERNETES_API".into()));
        assert_eq!(d("日本"), None);
        assert_eq!(d(""), None);
        assert_eq!(d(&"a".repeat(100)).map(|s| s.len()), Some(64));
    }
}
