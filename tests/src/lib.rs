//! End-to-end harness: a real Envoy running the built `emr_edge.wasm`.
//!
//! Each test starts its own Envoy on free loopback ports with a unique base
//! id, waits for `/ready`, and stops it by pid when dropped. The harness needs
//! `EMR_ENVOY` (the Envoy binary) and `EMR_WASM` (the filter); `make e2e` sets
//! both after building.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use reqwest;
pub use serde_json::{json, Value};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn required_path(var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(default));
    assert!(
        p.exists(),
        "{var}={} does not exist: run the end-to-end tests through `make e2e`",
        p.display()
    );
    p
}

pub fn envoy_binary() -> PathBuf {
    required_path("EMR_ENVOY", ".venv/bin/envoy-real")
}

pub fn wasm_path() -> PathBuf {
    required_path("EMR_WASM", "target/wasm32-wasip1/release/emr_edge.wasm")
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// Fills `{{KEY}}` placeholders of an Envoy config template.
pub fn render(template: &str, config: &Value, vars: &[(&str, String)]) -> String {
    let mut text = template.replace("{{EMR_CONFIG}}", &config.to_string());
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!text.contains("{{"), "unrendered placeholder in template");
    text
}

/// How to start one Envoy.
pub struct EnvoyOptions {
    pub template: PathBuf,
    pub config: Value,
    pub concurrency: u32,
    /// The upstream port the Genesys clusters point at.
    pub sim_port: u16,
    pub env: Vec<(String, String)>,
    /// Envoy's log level; `warn` hides the per-event audit lines.
    pub log_level: &'static str,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        Self {
            template: root().join("envoy/local.yaml.tmpl"),
            config: json!({}),
            concurrency: 2,
            sim_port: 9,
            env: Vec::new(),
            log_level: "info",
        }
    }
}

/// A running Envoy.
pub struct Envoy {
    child: Child,
    pub listen_port: u16,
    pub admin_port: u16,
    pub dir: PathBuf,
    options: EnvoyOptions,
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn scratch_dir() -> PathBuf {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = root()
        .join("target/e2e")
        .join(format!("{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("cannot create scratch dir");
    dir
}

impl Envoy {
    pub fn start(options: EnvoyOptions) -> Envoy {
        let dir = scratch_dir();
        let (listen_port, admin_port) = (free_port(), free_port());
        let child = spawn(&options, &dir, listen_port, admin_port);
        let mut envoy = Envoy {
            child,
            listen_port,
            admin_port,
            dir,
            options,
        };
        envoy.wait_ready();
        envoy
    }

    /// Kills Envoy (all shared data is lost) and starts it again on the
    /// same ports.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(&self.options, &self.dir, self.listen_port, self.admin_port);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://127.0.0.1:{}/ready", self.admin_port);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Envoy exited with {status}:\n{}", self.log_tail(40));
            }
            if let Ok(body) = blocking_get(&url) {
                if body.trim() == "LIVE" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("Envoy not ready after 30 s:\n{}", self.log_tail(40));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen_port)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Envoy's resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// A filter counter summed over every VM, from admin `/stats`.
    pub fn counter(&self, name: &str) -> u64 {
        let stats = blocking_get(&self.admin(&format!("/stats?filter=^wasmcustom\\.{name}$")))
            .unwrap_or_default();
        stats
            .lines()
            .find_map(|l| l.split_once(": "))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn stop(&mut self) {
        // SIGTERM first so Envoy cleans up its shared memory, then make sure.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
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

fn spawn(options: &EnvoyOptions, dir: &Path, listen_port: u16, admin_port: u16) -> Child {
    let template = std::fs::read_to_string(&options.template).expect("cannot read template");
    let yaml = render(
        &template,
        &options.config,
        &[
            ("WASM", wasm_path().display().to_string()),
            ("LISTEN_PORT", listen_port.to_string()),
            ("ADMIN_PORT", admin_port.to_string()),
            ("SIM_PORT", options.sim_port.to_string()),
        ],
    );
    let config_path = dir.join("envoy.yaml");
    std::fs::write(&config_path, yaml).expect("cannot write config");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("envoy.log"))
        .expect("cannot open log");
    let mut cmd = Command::new(envoy_binary());
    cmd.arg("-c")
        .arg(&config_path)
        .args(["--concurrency", &options.concurrency.to_string()])
        .arg("--use-dynamic-base-id")
        .args(["--log-level", options.log_level])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    for (k, v) in &options.env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("cannot start Envoy")
}

/// Runs `envoy --mode validate` on a rendered config; returns its output on failure.
pub fn validate(yaml_path: &Path) -> Result<(), String> {
    let out = Command::new(envoy_binary())
        .args(["--mode", "validate", "-c"])
        .arg(yaml_path)
        .args(["--log-level", "warn"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A plain HTTP/1.1 GET over a std socket, for polling from sync code.
pub fn blocking_get(url: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("not http")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
    let (head, body) = buf.split_once("\r\n\r\n").ok_or("no body")?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Now as RFC 3339, for incident timestamps.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A canonical incident body.
pub fn incident(id: &str, mode: &str, queues: &[&str]) -> Value {
    let mut v = json!({
        "correlationId": id,
        "incidentType": "CARRIER_OUTAGE",
        "routingMode": mode,
        "timestamp": now_rfc3339(),
        "ttl": 3600,
    });
    if !queues.is_empty() {
        v["targetQueueIds"] = json!(queues);
    }
    v
}
