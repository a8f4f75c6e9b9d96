//! Everything emr-edge knows about talking to Genesys Cloud, as pure logic.
//!
//! The singleton's glue owns the host calls; this module only says *which*
//! call to make and what an answer means:
//! - [`config`]: the `genesys` config section, compiled once into
//!   [`GenesysSettings`] (hosts, clusters, credentials, group mapping, limits);
//! - [`models`]: Genesys's JSON models (emergency group, error body, token,
//!   data-table row, the guide's routing contract);
//! - [`answer`]: an HTTP answer sorted into the classes of docs/genesys.md's answer table, with
//!   `Retry-After`, `ININ-Correlation-Id` and rate-limit headers read;
//! - [`token`]: the client-credentials token and when to refresh it;
//! - [`driver`]: how one group is read, compared and written — the real
//!   emergency-group API or the guide's contract, behind one trait;
//! - [`rows`]: the data table's rows, listed a page at a time at start.
//!
//! The reconciler (`crate::reconcile`) strings these together into the
//! per-group state machine the glue drives. What any callout needs (the
//! call, its answer, the request budget) is in `crate::callout`, shared
//! with the ITSM poller.

pub mod answer;
pub mod config;
pub mod driver;
pub mod models;
pub mod rows;
pub mod token;

pub use answer::{Answer, AnswerClass, RateLimit};
pub use config::{DriverKind, GenesysConfig, GenesysSettings};
pub use driver::Driver;
pub use token::TokenManager;

pub use crate::callout::{encode_segment, CallResult, HttpCall, OpId, USER_AGENT};

/// A request a driver wants made, before the reconciler adds the host, the
/// cluster and the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Vec<u8>>,
}
