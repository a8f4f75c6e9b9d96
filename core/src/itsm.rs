//! Lost resolution webhooks: for open incidents from a tool with a status
//! API configured, ask the tool now and then whether the incident is still
//! open, and resolve it here when the tool says it is resolved there.
//!
//! - PagerDuty `GET /incidents/{id}` (`Authorization: Token token=…`):
//!   `incident.status` `resolved`;
//! - ServiceNow Table API `GET /api/now/table/incident?sysparm_query=number=…`
//!   (or `sys_id=…` for an id that is one; Basic or bearer): `state` 6
//!   Resolved, 7 Closed or 8 Canceled;
//! - Jira `GET /rest/api/3/issue/{key}?fields=status` (Basic `email:api
//!   token` or bearer): `fields.status.statusCategory.key` `done`.
//!
//! Only incidents whose id is the tool's own are polled: an id the intake
//! had to hash (`sha256:…`, see `crate::sources::ids`) cannot be asked for.
//! Every tool's ids in practice (PagerDuty `Q2UEJOMV3XYQ9N`, ServiceNow
//! `INC0010023`, Jira `ITSM-42`) are kept as they are.
//!
//! The [`Poller`] is a by-value state machine like the reconciler, with its
//! own op ids: the service dispatches its [`PollEffect::Call`]s, hands
//! answers to [`Poller::on_result`], and applies its [`PollChange`]s to the
//! ledger (a resolution found is reconciled as an incident event). It
//! never reads a clock. At most `max_in_flight` polls are out, at most
//! `polls_per_minute` go out a minute (a token bucket), and a 429 pauses
//! that tool until its `Retry-After`.

mod config;
mod poller;
mod tools;

pub use config::{ItsmConfig, ItsmSettings, Tool, ToolConfig};
pub use poller::{PollChange, PollChanged, PollEffect, PollMetric, Poller, MAX_TRACKED};
pub use tools::{parse_jira, parse_pagerduty, parse_servicenow, request, ToolStatus};

#[cfg(test)]
mod tests;
