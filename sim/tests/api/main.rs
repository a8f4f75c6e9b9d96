//! End-to-end tests of the simulator over HTTP, started in-process. They read like the
//! protocol each endpoint follows; one binary keeps the build and the run fast.

// Test helpers fail the test by panicking, like the tests themselves (which clippy.toml
// already exempts); the lints only matter for code that runs inside the simulator.
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

mod binary;
mod control;
mod datatables;
mod faults;
mod groups;
mod guide;
mod itsm;
mod oauth;
mod ratelimit;
