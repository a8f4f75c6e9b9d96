//! Starting and observing Envoy for a benchmark: a template rendered with
//! free loopback ports, the process pinned with `taskset`, `/ready` timed,
//! admin stats and RSS read, stopped by pid.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The Envoy configurations compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `envoy/local.yaml.tmpl`: the shipped config with the emr-edge filter.
    Edge,
    /// `envoy/bench-ceiling.yaml.tmpl`: same listener, buffer filter, `direct_response`.
    Ceiling,
    /// `envoy/bench-proxy.yaml.tmpl`: same listener, buffer filter, router to the upstream service.
    Proxy,
    /// `envoy/bench-floor.yaml.tmpl`: same listener, a do-nothing wasm filter (`bench/floor`).
    Floor,
    /// `envoy/cluster.yaml.tmpl`: one replica of cluster mode on etcd.
    Cluster,
}

impl Kind {
    fn template(self) -> &'static str {
        match self {
            Kind::Edge => "envoy/local.yaml.tmpl",
            Kind::Ceiling => "envoy/bench-ceiling.yaml.tmpl",
            Kind::Proxy => "envoy/bench-proxy.yaml.tmpl",
            Kind::Floor => "envoy/bench-floor.yaml.tmpl",
            Kind::Cluster => "envoy/cluster.yaml.tmpl",
        }
    }
}

pub struct Spec<'a> {
    pub kind: Kind,
    pub envoy: &'a Path,
    pub wasm: &'a Path,
    pub root: &'a Path,
    /// The plugin configuration (emr-edge only).
    pub config: Value,
    pub concurrency: u32,
    /// `taskset -c` list for the whole Envoy process.
    pub cpus: &'a str,
    pub sim_port: u16,
    pub upstream_port: u16,
    pub env: Vec<(String, String)>,
    /// More placeholders (`ETCD_ENDPOINTS`).
    pub vars: Vec<(&'static str, String)>,
    pub scratch: PathBuf,
}

pub struct Envoy {
    child: Child,
    pub listen_port: u16,
    pub admin_port: u16,
    /// Spawn to `/ready` answering `LIVE`.
    pub ready_after: Duration,
    log: PathBuf,
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Envoy {
    pub fn start(spec: &Spec) -> Result<Envoy> {
        std::fs::create_dir_all(&spec.scratch)?;
        let (listen_port, admin_port) = (free_port()?, free_port()?);
        let template = std::fs::read_to_string(spec.root.join(spec.kind.template()))
            .with_context(|| format!("reading {}", spec.kind.template()))?;
        let mut yaml = template.replace("{{EMR_CONFIG}}", &spec.config.to_string());
        for (k, v) in [
            ("WASM", spec.wasm.display().to_string()),
            ("LISTEN_PORT", listen_port.to_string()),
            ("ADMIN_PORT", admin_port.to_string()),
            ("SIM_PORT", spec.sim_port.to_string()),
            ("UPSTREAM_PORT", spec.upstream_port.to_string()),
            // As scripts/render.py fills it: the buffer filter's limit is
            // the intake's.
            (
                "MAX_BODY_BYTES",
                emr_core::config::declared_max_body_bytes(&spec.config).to_string(),
            ),
        ]
        .into_iter()
        .chain(spec.vars.iter().cloned())
        {
            yaml = yaml.replace(&format!("{{{{{k}}}}}"), &v);
        }
        if yaml.contains("{{") {
            bail!("unrendered placeholder in {}", spec.kind.template());
        }
        let config_path = spec.scratch.join("envoy.yaml");
        std::fs::write(&config_path, yaml)?;
        let log = spec.scratch.join("envoy.log");
        let log_file = std::fs::File::create(&log)?;
        let started = Instant::now();
        // taskset execs Envoy: the child's pid is Envoy's.
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", spec.cpus])
            .arg(spec.envoy)
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", &spec.concurrency.to_string()])
            .arg("--use-dynamic-base-id")
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("starting Envoy under taskset")?;
        let mut envoy = Envoy {
            child,
            listen_port,
            admin_port,
            ready_after: Duration::ZERO,
            log,
        };
        envoy.wait_ready(started)?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, started: Instant) -> Result<()> {
        let deadline = started + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("Envoy exited with {status}:\n{}", self.log_tail());
            }
            if get(self.admin_port, "/ready").is_ok_and(|b| b.trim() == "LIVE") {
                self.ready_after = started.elapsed();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        bail!("Envoy not ready after 30 s:\n{}", self.log_tail())
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// CPU time used so far (user + system), in clock ticks: the whole
    /// process, and its main thread alone (where the emr-edge service runs).
    pub fn cpu_ticks(&self) -> (u64, u64) {
        let pid = self.pid();
        let mut total = 0;
        let mut main = 0;
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let ticks = stat_ticks(&t.path().join("stat"));
                total += ticks;
                if t.file_name().to_string_lossy() == pid.to_string() {
                    main = ticks;
                }
            }
        }
        (total, main)
    }

    /// Every stat whose name matches `regex`, summed.
    pub fn stat(&self, regex: &str) -> u64 {
        get(self.admin_port, &format!("/stats?filter={regex}"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }

    /// A wasm filter counter (`emr.intake.accepted`).
    pub fn counter(&self, name: &str) -> u64 {
        self.stat(&format!("^wasmcustom\\.{}$", name.replace('.', "\\.")))
    }

    /// Responses by class from the listener's connection manager.
    pub fn responses(&self, class: &str) -> u64 {
        self.stat(&format!("^http\\.emr_intake\\.downstream_rq_{class}$"))
    }

    /// `kill -9`, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plain HTTP/1.1 GET on loopback, closing the connection.
pub fn get(port: u16, path: &str) -> Result<String> {
    emr_sim::loopback::get(&format!("http://127.0.0.1:{port}{path}")).map_err(anyhow::Error::msg)
}

/// utime + stime of a `/proc/.../stat` file, in clock ticks.
pub fn stat_ticks(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // The command name may hold spaces: count fields after its ')'.
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After ')': state is field 0, utime field 11, stime field 12.
    field(11) + field(12)
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 when unknown.
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}
