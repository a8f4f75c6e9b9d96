//! `make run` (scripts/run.sh) as a new user meets it: it says which demo
//! secrets it used, its banner points at what shows the switch on the ports
//! it was given, and a refused configuration is printed first, not buried
//! in Envoy's output.
//!
//! The simulator is stood in for by a script that only waits: the banner
//! and the start are Envoy's and the script's business.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use emr_e2e::{envoy_binary, free_port, root, wasm_path};

/// A scratch directory of this test.
fn scratch(name: &str) -> PathBuf {
    let d = root()
        .join("target/e2e")
        .join(format!("make-run-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A stand-in simulator: waits, whatever its arguments.
fn idle_sim(dir: &Path) -> PathBuf {
    let path = dir.join("idle-sim.sh");
    std::fs::write(&path, "#!/bin/sh\nexec sleep 120\n").unwrap();
    Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    path
}

struct Ports {
    listen: u16,
    admin: u16,
    sim: u16,
}

/// scripts/run.sh, its output into `dir/out`.
fn run_sh(dir: &Path, ports: &Ports, env: &[(&str, &str)]) -> Child {
    let out = std::fs::File::create(dir.join("out")).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("scripts/run.sh"))
        .current_dir(root())
        .env("LISTEN_PORT", ports.listen.to_string())
        .env("ADMIN_PORT", ports.admin.to_string())
        .env("SIM_PORT", ports.sim.to_string())
        .env("ENVOY", envoy_binary())
        .env("WASM", wasm_path())
        .env("SIM", idle_sim(dir))
        .env("RUN_DIR", dir)
        .env_remove("EMR_GENESYS_CLIENT_ID")
        .env_remove("EMR_GENESYS_CLIENT_SECRET")
        .env_remove("EMR_PAGERDUTY_SECRET")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    cmd.spawn().expect("bash scripts/run.sh")
}

fn output(dir: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(dir.join("out")) {
        f.read_to_string(&mut s).unwrap();
    }
    s
}

/// Stops the script and waits: SIGTERM to its own pid (never a negative
/// one: procps `kill -TERM -<pgid>` was seen to signal every process), and
/// its trap stops Envoy and the stand-in.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

#[test]
fn the_banner_shows_the_switch_on_the_given_ports_and_says_which_secrets_are_demo_ones() {
    let dir = scratch("banner");
    let ports = Ports {
        listen: free_port(),
        admin: free_port(),
        sim: free_port(),
    };
    let child = run_sh(
        &dir,
        &ports,
        &[("EMR_PAGERDUTY_SECRET", "my-own-pagerduty-secret-0123")],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !output(&dir).contains("Ctrl-C stops everything") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = output(&dir);
    stop(child);
    assert!(out.contains("Ctrl-C stops everything"), "{out}");
    for line in [
        "EMR_GENESYS_CLIENT_ID is not set: using the simulator's demo client id",
        "EMR_GENESYS_CLIENT_SECRET is not set: using the simulator's demo client secret",
        "EMR_PAGERDUTY_SECRET is set: using yours",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    // What shows the switch, on the simulator's port.
    assert!(
        out.contains(&format!(
            "curl -s http://127.0.0.1:{}/__sim/groups",
            ports.sim
        )),
        "{out}"
    );
    // No link that answers 401 to a newcomer, no port but the given ones.
    assert!(!out.contains("/api/v2/architect/emergencygroups"), "{out}");
    for port in ["10000", "9901", "9902"] {
        assert!(!out.contains(&format!(":{port}")), "{port} in:\n{out}");
    }
    assert!(
        out.contains(&format!(
            "http://127.0.0.1:{}/webhooks/canonical",
            ports.listen
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("http://127.0.0.1:{}", ports.admin)),
        "{out}"
    );
}

#[test]
fn a_refused_configuration_is_printed_first_with_where_the_log_is() {
    let dir = scratch("refused");
    let ports = Ports {
        listen: free_port(),
        admin: free_port(),
        sim: free_port(),
    };
    let mut child = run_sh(
        &dir,
        &ports,
        &[("EMR_GENESYS_CLIENT_SECRET", "REPLACE-WITH-GENESYS-SECRET")],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = output(&dir);
    if status.is_none() {
        stop(child);
        panic!("run.sh did not give up on a refused configuration:\n{out}");
    }
    assert!(!status.unwrap().success(), "{out}");
    // The refusal comes first: before it, only what the script said about
    // the secrets; no Envoy log line.
    let first = out
        .lines()
        .position(|l| l.contains("invalid emr-edge configuration"))
        .unwrap_or_else(|| panic!("no refusal in:\n{out}"));
    assert!(
        out.lines().take(first).all(|l| !l.starts_with('[')),
        "Envoy's log before the refusal:\n{out}"
    );
    assert!(
        out.contains(
            "  invalid emr-edge configuration: `genesys.client_secret_env` environment variable \
             EMR_GENESYS_CLIENT_SECRET still holds a placeholder (REPLACE-WITH…): set it to the \
             real value"
        ),
        "{out}"
    );
    // Told once, though the service and the filter both refuse it.
    assert_eq!(
        out.matches("invalid emr-edge configuration").count(),
        1,
        "{out}"
    );
    assert!(
        out.contains(&format!("The whole log: {}/envoy.log", dir.display())),
        "{out}"
    );
    assert!(!out.contains("GENESYS-SECRET"), "{out}");
}
