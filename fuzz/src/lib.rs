//! emr-edge's fuzz targets, as plain functions over bytes.
//!
//! The libFuzzer binaries in `fuzz_targets/` call these; so does the stable
//! corpus replay in `core/tests/fuzz_replay.rs`, which includes the same
//! `targets` module by path. Keep `targets` free of any dependency but
//! emr-core's own (serde_json, chrono, base64, sha2) so both builds see it.

pub mod targets;
