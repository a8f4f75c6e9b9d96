//! `emr-bench`: measures emr-edge against Envoy's own ceiling and against the
//! usual alternative (Envoy forwarding to a small webhook service), then its
//! activation latency, memory and start. `make bench` runs it; see
//! `bench/README.md` for what each figure means and how it is taken.
//!
//! ```text
//! emr-bench run [--quick] [--out DIR]        every measurement; writes DIR/RESULTS.md, DIR/results.json
//! emr-bench upstream --port P --threads N    the alternative's webhook service (started by `run`)
//! emr-bench core [--n N]                      the intake's pure logic alone, natively, ns per request
//! emr-bench core --service | --full-ledger    the service's, natively (see `core.rs`)
//! emr-bench report [--out DIR]                RESULTS.md again from DIR/results.json and DIR/NOTES.md
//! ```

mod activation;
mod cluster;
mod core;
mod envoy;
mod load;
mod report;
mod run;
mod stats;
mod upstream;
mod wrk;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => run::main(run::Options::parse(&args[1..])?),
        Some("report") => report::rewrite(std::path::Path::new(
            &flag(&args, "--out")?.unwrap_or_else(|| "bench".into()),
        )),
        Some("core") if args.iter().any(|a| a == "--full-ledger") => {
            let number = |name: &str, default: usize| -> Result<usize> {
                Ok(flag(&args, name)?
                    .map(|n| n.parse())
                    .transpose()
                    .with_context(|| name.to_owned())?
                    .unwrap_or(default))
            };
            core::full_ledger(core::LedgerShape {
                open: number("--open", 1000)?,
                queues: number("--queues", 50)?,
                queue_len: number("--queue-len", 128)?,
                events: number("--n", 2000)?,
                batch: number("--batch", 10)?,
            })
        }
        Some("core") if args.iter().any(|a| a == "--service") => core::service(
            flag(&args, "--n")?
                .map(|n| n.parse())
                .transpose()
                .context("--n")?
                .unwrap_or(200_000),
            flag(&args, "--publish-every")?
                .map(|n| n.parse())
                .transpose()
                .context("--publish-every")?
                .unwrap_or(100),
        ),
        Some("core") => core::main(
            flag(&args, "--n")?
                .map(|n| n.parse())
                .transpose()
                .context("--n")?
                .unwrap_or(200_000),
        ),
        Some("upstream") => {
            let port = flag(&args, "--port")?
                .context("--port is required")?
                .parse()
                .context("--port")?;
            let threads = flag(&args, "--threads")?
                .map(|t| t.parse())
                .transpose()
                .context("--threads")?
                .unwrap_or(1);
            upstream::serve(port, threads)
        }
        _ => bail!("{USAGE}"),
    }
}

pub const USAGE: &str = "usage:
  emr-bench run [--quick] [--out DIR] [--phases start,service,throughput,activation,memory]
                [--workers 1,2] [--targets ceiling,floor,floor-read,emr-edge,alternative]
                [--envoy PATH] [--wasm PATH] [--floor-wasm PATH] [--unique N] [--merge]
  emr-bench upstream --port P [--threads N]
  emr-bench core [--n N] | emr-bench core --service [--n N] [--publish-every N]
  emr-bench core --full-ledger [--open N] [--queues N] [--queue-len N] [--n N] [--batch N]
  emr-bench report [--out DIR]";

/// The value after `name`, if present.
pub fn flag(args: &[String], name: &str) -> Result<Option<String>> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .cloned()
            .map(Some)
            .with_context(|| format!("{name} needs a value")),
    }
}
