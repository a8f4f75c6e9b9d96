//! The `emr-sim` binary: the simulator as a process, for `make run` and end-to-end tests.
//!
//! ```text
//! emr-sim [--listen ADDR] [--config FILE]
//! ```
//!
//! Prints `emr-sim listening on http://ADDR` on stdout once it accepts connections (so a
//! harness can wait for that line, and learn the port when ADDR ends in `:0`), and exits 0 on
//! SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use emr_sim::{Sim, SimConfig, SimError};

const USAGE: &str = "usage: emr-sim [--listen ADDR] [--config FILE]

  --listen ADDR   address to listen on (default: the config's `listen`, 127.0.0.1:0)
  --config FILE   JSON config; absent fields keep the default seed (see sim/README.md)";

/// What the command line asks for.
#[derive(Debug, Default)]
struct Args {
    listen: Option<SocketAddr>,
    config: Option<PathBuf>,
}

enum Parsed {
    Run(Args),
    Help,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut parsed = Args::default();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--listen" => {
                let raw = value()?;
                let addr = raw.parse().map_err(|_| {
                    format!("--listen: '{raw}' is not an address like 127.0.0.1:8089")
                })?;
                parsed.listen = Some(addr);
            }
            "--config" => parsed.config = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(Parsed::Run(parsed))
}

fn load_config(args: &Args) -> Result<SimConfig, SimError> {
    let mut config = match &args.config {
        Some(path) => SimConfig::from_file(path)?,
        None => SimConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    Ok(config)
}

/// SIGINT and SIGTERM, caught from before the ready line is printed, so a harness that signals
/// right after reading it never kills the process uncleanly.
#[cfg(unix)]
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl StopSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct StopSignals;

#[cfg(not(unix))]
impl StopSignals {
    fn install() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn wait(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(config: SimConfig) -> Result<(), String> {
    let stop = StopSignals::install().map_err(|error| format!("cannot catch signals: {error}"))?;
    let sim = Sim::start(config)
        .await
        .map_err(|error| error.to_string())?;
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "emr-sim listening on {}", sim.base_url());
        let _ = stdout.flush();
    }
    stop.wait().await;
    sim.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "emr-sim: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "emr-sim: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = writeln!(
                std::io::stderr(),
                "emr-sim: cannot start the runtime: {error}"
            );
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "emr-sim: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_args(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn flags_take_values_inline_or_next() {
        let Ok(Parsed::Run(args)) = parse(&["--listen", "127.0.0.1:9", "--config=x.json"]) else {
            panic!("should parse");
        };
        assert_eq!(args.listen, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(args.config, Some(PathBuf::from("x.json")));
        assert!(parse(&["--listen"]).is_err());
        assert!(parse(&["--listen", "nope"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(matches!(parse(&["-h"]), Ok(Parsed::Help)));
    }
}
