//! emr-core: every decision emr-edge makes, with no proxy-wasm dependency.
//!
//! The filter (`src/` at the workspace root) is a thin adapter: it hands this
//! crate bytes, headers and the time, and carries out what comes back. Nothing
//! here reads a clock or a global, so every rule is testable to the second,
//! natively and compiled to wasm.
//!
//! # Module map
//!
//! A webhook, in the order it is handled:
//!
//! - [`intake`]: the filter's decisions for one request ([`delivery`]):
//!   route, body limit, authentication ([`auth`]), parsing ([`sources`], the canonical
//!   [`contract`]), the mapping rules ([`mapping`]), dedupe ([`dedupe`]), the
//!   source's share ([`quota`]), the queue; `/emr/*` answers ([`status`],
//!   [`liveness`], [`ignored`], and the flat ones data actions read,
//!   [`data_actions`]).
//! - [`event`]: the validated values every module shares ([`event::IncidentEvent`],
//!   ids, the queue messages).
//!
//! The singleton service, from the queue to Genesys:
//!
//! - [`service`]: the singleton itself: owns the ledger, the status board,
//!   the reconciler, the poller and their cadences; says what the glue must
//!   do.
//! - [`ledger`]: open and closed incidents, what each group wants, expiry,
//!   retention.
//! - [`reconcile`]: the state machine that drives each emergency group to
//!   what the ledger wants, through the Genesys API ([`genesys`]: config,
//!   token, answers, drivers, models), with its watchdog rules
//!   ([`watchdog`]), restart recovery ([`recovery`]) and health.
//! - [`itsm`]: the status polls that find lost resolutions and keep open
//!   incidents open.
//! - [`callout`]: what both state machines share about asking another
//!   service over HTTP: the call, its answer, the request budget.
//! - [`etcd`]: etcd's JSON gateway and leader election on a lease, for
//!   cluster mode (docs/cluster.md; not wired into the service yet).
//!
//! Around them: [`config`] (the plugin configuration, every problem at
//! once), [`store`] (the shared-data trait and its in-memory twin),
//! [`problem`] (problem+json, and the field errors a refused config lists
//! too), [`field`] (the checks of one config field), [`text`], [`json`],
//! [`rfc3339`], [`log_budget`], [`placeholder`], [`envvar`].

pub mod auth;
pub mod callout;
pub mod config;
pub mod contract;
pub mod data_actions;
pub mod dedupe;
pub mod delivery;
pub mod envvar;
pub mod etcd;
pub mod event;
pub mod field;
pub mod genesys;
pub mod ignored;
pub mod intake;
pub mod itsm;
pub mod json;
pub mod ledger;
pub mod liveness;
pub mod log_budget;
pub mod mapping;
pub mod placeholder;
pub mod problem;
pub mod quota;
pub mod reconcile;
pub mod recovery;
pub mod rfc3339;
pub mod service;
pub mod sources;
pub mod status;
pub mod store;
pub mod text;
pub mod watchdog;
