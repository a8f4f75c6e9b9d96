//! Writes the fuzz targets' built-in seeds to `fuzz/corpus/<target>/seed-<name>`:
//! `cargo run -p emr-core --example write_fuzz_seeds`, by hand, when the seeds
//! change (fuzz/README.md). A tool, not a test: `core/tests/fuzz_replay.rs`
//! already runs every seed through its target.

#[path = "../../fuzz/src/targets/mod.rs"]
#[allow(dead_code)]
mod targets;

use std::path::Path;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut n = 0;
    for (target, name, data) in targets::seeds::seeds() {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), data)?;
        n += 1;
    }
    println!("wrote {n} seeds under {}", corpus.display());
    Ok(())
}
