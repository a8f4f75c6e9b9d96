//! Tripwires for the fault suite, compiled only with the `crash-test`
//! feature and never into a release `.wasm` (`make wasm` builds without it).
//!
//! They panic on demand so an end-to-end test can prove what Envoy's
//! `FAIL_RELOAD` promises: a crashed VM is replaced, the listener keeps
//! answering, and nothing accepted before the crash is lost.
#![allow(clippy::panic)]

/// A request to this path panics the intake VM of the worker that reads it.
pub const INTAKE_PATH: &str = "/webhooks/__crash";

/// A queued incident with this id panics the service VM before it is recorded.
pub const SERVICE_INCIDENT: &str = "__crash_service__";

pub fn intake(path: &str) {
    if path == INTAKE_PATH {
        panic!("crash-test tripwire: {INTAKE_PATH}");
    }
}

pub fn service(incident_id: &str) {
    if incident_id == SERVICE_INCIDENT {
        panic!("crash-test tripwire: incident {SERVICE_INCIDENT}");
    }
}
