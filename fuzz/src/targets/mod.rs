//! The fuzz targets' bodies: each takes raw bytes, drives one part of
//! emr-core through its public API, and asserts what must hold for any
//! input. A panic (an assertion, an overflow, an out-of-bounds index) is a
//! finding.
//!
//! Compiled twice: into the `emr-fuzz` crate for libFuzzer, and by path into
//! `core/tests/fuzz_replay.rs`, which replays `fuzz/corpus/<target>/*` and
//! `fuzz/regressions/<target>/*` on stable in `make test`. So this module
//! uses only emr-core and emr-core's own dependencies.
//!
//! Inputs that need structure (a source, headers, a status code, then a body)
//! are read with [`Input`]: a byte to pick from a list, a length byte then
//! that many bytes for a short string, and the rest as the body. [`Seed`]
//! writes the same layout, so the seed corpora are built from the fixtures
//! by code ([`seeds`]) rather than by hand.

// Test code: a panic is how a target reports a finding.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use chrono::{DateTime, Utc};
use emr_core::event::QueuedEvent;
use emr_core::problem::Problem;
use serde_json::Value;

mod canonical;
mod config;
mod dedupe;
mod genesys;
mod intake;
mod itsm;
mod json;
pub mod seeds;
mod signature;
mod sources;

pub use canonical::canonical_contract;
pub use config::plugin_config;
pub use dedupe::dedupe_buckets;
pub use genesys::genesys_answers;
pub use intake::intake;
pub use itsm::itsm_answers;
pub use json::json_strict;
pub use signature::signature_headers;
pub use sources::sources;

/// A target: bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target, by the name of its libFuzzer binary and corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("json_strict", json_strict),
    ("canonical_contract", canonical_contract),
    ("sources", sources),
    ("signature_headers", signature_headers),
    ("genesys_answers", genesys_answers),
    ("itsm_answers", itsm_answers),
    ("dedupe_buckets", dedupe_buckets),
    ("plugin_config", plugin_config),
    ("intake", intake),
];

/// The clock every target runs at: the fixtures' day.
pub fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-08-15T14:25:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Reads a fuzz input as a few small choices followed by a body. Running
/// out of bytes reads as zeros and empty strings, so every input is valid.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    pub fn i64(&mut self) -> i64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        i64::from_be_bytes(b)
    }

    /// One of `options`, by the next byte.
    pub fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[usize::from(self.byte()) % options.len()]
    }

    /// A length byte, then that many bytes (fewer at the end of the input).
    pub fn bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte()).min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// [`Input::bytes`] as text; invalid UTF-8 becomes U+FFFD.
    pub fn string(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// Writes bytes in [`Input`]'s layout, for seeds.
#[derive(Default)]
pub struct Seed(Vec<u8>);

impl Seed {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn byte(mut self, b: u8) -> Self {
        self.0.push(b);
        self
    }

    pub fn u16(self, v: u16) -> Self {
        let [a, b] = v.to_be_bytes();
        self.byte(a).byte(b)
    }

    pub fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A length byte and `s` (at most 255 bytes).
    pub fn bytes(mut self, s: impl AsRef<[u8]>) -> Self {
        let s = s.as_ref();
        let s = &s[..s.len().min(255)];
        self.0.push(u8::try_from(s.len()).unwrap());
        self.0.extend_from_slice(s);
        self
    }

    pub fn rest(mut self, s: impl AsRef<[u8]>) -> Vec<u8> {
        self.0.extend_from_slice(s.as_ref());
        self.0
    }

    pub fn done(self) -> Vec<u8> {
        self.0
    }
}

/// Whether the input itself holds one of `secrets`. libFuzzer learns the
/// strings a target compares with, so it ends up sending the secrets the
/// harness checks answers for; such inputs prove nothing and are skipped.
pub fn holds_secret(data: &[u8], secrets: &[&str]) -> bool {
    secrets.iter().any(|s| {
        let s = s.as_bytes();
        data.windows(s.len()).any(|w| w == s)
    })
}

/// A problem is well formed: an allowed status, and a problem+json body
/// that parses with the same `status`, a `type`, a `title` and a `detail`.
pub fn check_problem(p: &Problem, allowed: &[u16]) {
    assert!(allowed.contains(&p.status), "unexpected status {p:?}");
    check_problem_body(&p.to_json(), p.status);
    if p.status == 422 {
        assert!(!p.errors.is_empty(), "a 422 names no field: {p:?}");
    }
    for e in &p.errors {
        // An unknown key `""` is named `$[""]` (fuzz/regressions/
        // canonical_contract/empty-key).
        assert!(!e.field.is_empty(), "an error names an empty field: {p:?}");
        assert!(!e.message.is_empty(), "an error has no message: {p:?}");
    }
}

/// `body` is an RFC 9457 problem object for `status`.
pub fn check_problem_body(body: &[u8], status: u16) {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("problem body is not JSON ({e}): {body:?}"));
    assert_eq!(v["status"], u64::from(status), "problem body {v}");
    assert!(v["type"].is_string(), "problem body without type: {v}");
    assert!(v["title"].is_string(), "problem body without title: {v}");
    assert!(v["detail"].is_string(), "problem body without detail: {v}");
}

/// What the intake queues is what the service reads back: a queued event
/// survives its JSON round trip unchanged.
pub fn check_queued_round_trip(q: &QueuedEvent) {
    let bytes = serde_json::to_vec(q).unwrap();
    let back: QueuedEvent = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "a queued event does not read back ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(&back, q, "a queued event changed in its round trip");
}

/// JSON equality, floats to the last bit.
///
/// serde_json was once built without its `float_roundtrip` feature, and its
/// float parser was then one ULP off: `5.555555555555557e121`, its own
/// output, read back as `5.555555555555556e121` (fuzz/regressions/
/// json_strict/float-ulp). The workspace now enables the feature, so round
/// trips must be exact.
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x.to_bits() == y.to_bits() || x == y,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}
