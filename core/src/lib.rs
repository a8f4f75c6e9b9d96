//! emr-core: every decision emr-edge makes, with no proxy-wasm dependency.
//!
//! The filter (`src/` at the workspace root) is a thin adapter: it hands this
//! crate bytes, headers and the time, and carries out what comes back. Nothing
//! here reads a clock or a global, so every rule is testable to the second,
//! natively and compiled to wasm.

pub mod auth;
pub mod config;
pub mod contract;
pub mod dedupe;
pub mod envvar;
pub mod event;
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
pub mod sources;
pub mod status;
pub mod store;
pub mod text;
pub mod watchdog;
