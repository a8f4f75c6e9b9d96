//! Replays the fuzz corpora on stable, in `cargo test` (so in `make test`).
//!
//! The fuzz targets' bodies live in `fuzz/src/targets/` and are included here
//! by path: the libFuzzer binaries (`cargo +nightly fuzz run <target>`, see
//! fuzz/README.md) and this test run the very same functions and assertions.
//! Each target runs over its built-in seeds, every file of
//! `fuzz/corpus/<target>/` and every crash kept in
//! `fuzz/regressions/<target>/`.
//!
//! `cargo run -p emr-core --example write_fuzz_seeds` writes the built-in
//! seeds into the corpus folders.

// Reads files: native only (the wasm test run has no filesystem).
#![cfg(not(target_arch = "wasm32"))]

#[path = "../../fuzz/src/targets/mod.rs"]
#[allow(dead_code)]
mod targets;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    out.sort();
    out
}

/// Runs `target` on `data`; a panic becomes a failure naming the input.
fn run(name: &str, target: targets::Target, label: &str, data: &[u8], failures: &mut Vec<String>) {
    if let Err(e) = catch_unwind(AssertUnwindSafe(|| target(data))) {
        let why = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        failures.push(format!("{name} on {label}: {why}"));
    }
}

#[test]
fn every_target_passes_its_seeds_corpus_and_regressions() {
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    let seeds = targets::seeds::seeds();
    for (name, target) in targets::TARGETS {
        let started = Instant::now();
        let mut n = 0;
        for (_, seed, data) in seeds.iter().filter(|(t, _, _)| t == name) {
            run(name, *target, &format!("seed {seed}"), data, &mut failures);
            n += 1;
        }
        for sub in ["corpus", "regressions"] {
            for path in files(&fuzz_dir().join(sub).join(name)) {
                let data = fs::read(&path).unwrap();
                run(
                    name,
                    *target,
                    &path.display().to_string(),
                    &data,
                    &mut failures,
                );
                n += 1;
            }
        }
        assert!(n > 0, "no input at all for {name}");
        counts.push(format!("{name}: {n} in {:.2?}", started.elapsed()));
    }
    println!("replayed {}", counts.join(", "));
    assert!(
        failures.is_empty(),
        "{} failing input(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_target_has_a_corpus() {
    for (name, _) in targets::TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        assert!(
            !files(&dir).is_empty(),
            "fuzz/corpus/{name} is empty or missing"
        );
    }
}
