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

pub mod etcd;

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

/// A request to this path crashes the intake VM that reads it (crash-test build).
pub const CRASH_INTAKE_PATH: &str = "/webhooks/__crash";
/// A canonical incident with this id crashes the service (crash-test build).
pub const CRASH_SERVICE_INCIDENT: &str = "__crash_service__";

/// The filter built with the `crash-test` tripwires (`make e2e` builds it).
pub fn crash_wasm_path() -> PathBuf {
    required_path(
        "EMR_CRASH_WASM",
        "target/crash-test/wasm32-wasip1/release/emr_edge.wasm",
    )
}

/// A loopback port nobody listens on right now, and not one this process
/// handed out before: the kernel may give the port it just released to the
/// next `bind(0)`, and two picks in a row (an Envoy's listener and its
/// admin) must differ, or the second bind fails at Envoy's start.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Fills `{{KEY}}` placeholders of an Envoy config template, as
/// `scripts/render.py` does: `{{MAX_BODY_BYTES}}` from the config's
/// `intake.max_body_bytes`.
pub fn render(template: &str, config: &Value, vars: &[(&str, String)]) -> String {
    let mut text = template.replace("{{EMR_CONFIG}}", &config.to_string());
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    text = text.replace(
        "{{MAX_BODY_BYTES}}",
        &emr_core::config::declared_max_body_bytes(config).to_string(),
    );
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
    /// The filter to load.
    pub wasm: PathBuf,
    /// More `{{KEY}}` values for the template (`ETCD_ENDPOINTS`).
    pub vars: Vec<(&'static str, String)>,
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
            wasm: wasm_path(),
            vars: Vec::new(),
        }
    }
}

/// A running Envoy.
pub struct Envoy {
    child: Child,
    /// The thread that started it, alive as long as Envoy runs (see [`Keeper`]).
    keeper: Keeper,
    pub listen_port: u16,
    pub admin_port: u16,
    pub dir: PathBuf,
    options: EnvoyOptions,
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A fresh directory under target/e2e for one test's files.
pub fn scratch_dir() -> PathBuf {
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
        let (child, keeper) = spawn(&options, &dir, listen_port, admin_port);
        let mut envoy = Envoy {
            child,
            keeper,
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
        let (child, keeper) = spawn(&self.options, &self.dir, self.listen_port, self.admin_port);
        self.child = child;
        self.keeper = keeper;
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

    /// The service's JSON audit lines, in the order Envoy logged them.
    pub fn audit_lines(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("wasm log emr_service emr-edge: "))
            .filter_map(|(_, json)| serde_json::from_str::<Value>(json).ok())
            .filter(|v| v.get("audit").is_some() || v.get("kind").is_some())
            .collect()
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

/// Keeps alive the thread that started Envoy. Envoy was seen to get SIGTERM
/// when that thread ends (a parent-death signal is tied to the forking
/// thread): a tokio blocking-pool thread ends after 10 s idle, which killed
/// Envoy in the middle of longer tests. Dropping the keeper lets it end.
pub struct Keeper(Option<std::sync::mpsc::Sender<()>>);

impl Drop for Keeper {
    fn drop(&mut self) {
        // Closing the channel wakes the thread, which then returns.
        self.0.take();
    }
}

fn spawn(options: &EnvoyOptions, dir: &Path, listen_port: u16, admin_port: u16) -> (Child, Keeper) {
    let mut cmd = command(options, dir, listen_port, admin_port);
    let (child_tx, child_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _ = child_tx.send(cmd.spawn());
        // Parked until the keeper is dropped.
        let _ = stop_rx.recv();
    });
    let child = child_rx
        .recv()
        .expect("the Envoy starter thread died")
        .expect("cannot start Envoy");
    (child, Keeper(Some(stop_tx)))
}

fn command(options: &EnvoyOptions, dir: &Path, listen_port: u16, admin_port: u16) -> Command {
    let template = std::fs::read_to_string(&options.template).expect("cannot read template");
    let mut vars = vec![
        ("WASM", options.wasm.display().to_string()),
        ("LISTEN_PORT", listen_port.to_string()),
        ("ADMIN_PORT", admin_port.to_string()),
        ("SIM_PORT", options.sim_port.to_string()),
    ];
    vars.extend(options.vars.iter().cloned());
    let yaml = render(&template, &options.config, &vars);
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
    cmd
}

/// Runs `envoy --mode validate` on a rendered config; returns its output on failure.
pub fn validate(yaml_path: &Path) -> Result<(), String> {
    validate_with_env(yaml_path, &[])
}

/// [`validate`] with extra environment variables (the VM's secrets).
pub fn validate_with_env(yaml_path: &Path, env: &[(&str, &str)]) -> Result<(), String> {
    let out = Command::new(envoy_binary())
        .args(["--mode", "validate", "-c"])
        .arg(yaml_path)
        .args(["--log-level", "warn"])
        .envs(env.iter().copied())
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
    emr_sim::loopback::get(url)
}

/// Now as RFC 3339, for incident timestamps.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Now plus `secs` (may be negative) as RFC 3339: orders events in tests.
pub fn at(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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

/// The plugin configuration the Genesys tests start from: the sim's seeded
/// groups, client and data table, canonical intake and status open.
pub fn genesys_config() -> Value {
    json!({
        "sources": {"canonical": {"insecure": true}},
        "status": {"insecure": true},
        "genesys": {
            "login_host": "login.sim.local",
            "api_host": "api.sim.local",
            "client_id_env": "EMR_GENESYS_CLIENT_ID",
            "client_secret_env": "EMR_GENESYS_CLIENT_SECRET",
            "default_group": emr_sim::DEFAULT_GROUP_ID,
            "groups_by_incident_type": {"CARRIER_OUTAGE": emr_sim::CARRIER_OUTAGE_GROUP_ID},
            "datatable": {"id": emr_sim::DEFAULT_DATATABLE_ID, "row_key": "{group}"},
            "limits": {"call_timeout_ms": 2000}
        }
    })
}

/// What the tests put where the production example says `REPLACE-WITH-…`:
/// the simulator's seeded ids (the example is refused at start until each
/// one is replaced).
pub const PRODUCTION_PLACEHOLDERS: [(&str, &str); 3] = [
    ("REPLACE-WITH-EMERGENCY-GROUP-ID", emr_sim::DEFAULT_GROUP_ID),
    ("REPLACE-WITH-DATATABLE-ID", emr_sim::DEFAULT_DATATABLE_ID),
    ("REPLACE-WITH-QUEUE-ID", "queue-12345"),
];

/// `envoy/production.config.json` as shipped, placeholders included.
pub fn production_config_as_shipped() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("envoy/production.config.json"))
            .expect("envoy/production.config.json"),
    )
    .expect("production config JSON")
}

/// The production example with its placeholders filled in as a deployment
/// would ([`PRODUCTION_PLACEHOLDERS`]); panics on a placeholder it does not
/// know, so a new one in the example is noticed here.
pub fn production_config() -> Value {
    fn fill(v: &mut Value) {
        match v {
            Value::String(s) if s.contains("REPLACE-WITH") => {
                let (_, real) = PRODUCTION_PLACEHOLDERS
                    .iter()
                    .find(|(p, _)| p == s)
                    .unwrap_or_else(|| panic!("a placeholder the tests do not fill: {s}"));
                *s = (*real).to_owned();
            }
            Value::Array(items) => items.iter_mut().for_each(fill),
            Value::Object(map) => map.values_mut().for_each(fill),
            _ => {}
        }
    }
    let mut config = production_config_as_shipped();
    fill(&mut config);
    config
}

/// Merges `patch` into `base`: objects recursively, except that an empty
/// object replaces (so a patch can clear a map); anything else replaces.
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) if !p.is_empty() => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// The basic credential of `/emr/*` the harness gives Envoy
/// (`EMR_STATUS_USER`, `EMR_STATUS_PASSWORD`), for tests that call it as a
/// Genesys data action does.
pub const STATUS_BASIC_USER: &str = "genesys-data-actions";
pub const STATUS_BASIC_PASSWORD: &str = "e2e-status-password-not-real";

/// The value of every fake ITSM credential the harness passes to Envoy.
pub const ITSM_FAKE_SECRET: &str = "e2e-itsm-secret-not-real";

/// The simulator and an Envoy whose Genesys clusters point at it.
pub struct Stack {
    pub sim: emr_sim::SimHandle,
    pub envoy: Envoy,
    pub http: reqwest::Client,
}

impl Stack {
    /// Starts the sim with `sim_config` and Envoy with [`genesys_config`]
    /// patched by `patch`, using the sim's emr-edge client unless
    /// `credentials` says otherwise. Call from a multi-threaded runtime: the
    /// in-process sim must keep serving while Envoy starts.
    pub async fn start(sim_config: emr_sim::SimConfig, patch: Value) -> Stack {
        Self::start_as(
            sim_config,
            patch,
            (emr_sim::EMR_EDGE_CLIENT_ID, emr_sim::EMR_EDGE_CLIENT_SECRET),
        )
        .await
    }

    pub async fn start_as(
        sim_config: emr_sim::SimConfig,
        patch: Value,
        credentials: (&str, &str),
    ) -> Stack {
        Self::start_with(sim_config, patch, credentials, wasm_path()).await
    }

    /// [`Stack::start_as`] loading `wasm` (e.g. [`crash_wasm_path`]).
    pub async fn start_with(
        sim_config: emr_sim::SimConfig,
        patch: Value,
        credentials: (&str, &str),
        wasm: PathBuf,
    ) -> Stack {
        let sim = emr_sim::Sim::start(sim_config)
            .await
            .expect("sim did not start");
        let mut config = genesys_config();
        if patch.as_object().is_none_or(|p| !p.is_empty()) {
            merge(&mut config, &patch);
        }
        let options = EnvoyOptions {
            config,
            sim_port: sim.addr().port(),
            env: vec![
                ("EMR_GENESYS_CLIENT_ID".into(), credentials.0.into()),
                ("EMR_GENESYS_CLIENT_SECRET".into(), credentials.1.into()),
                // The ITSM status APIs' credentials: fake, for an `itsm`
                // section a test may add (the sim does not check them).
                ("EMR_PAGERDUTY_API_TOKEN".into(), ITSM_FAKE_SECRET.into()),
                ("EMR_SERVICENOW_API_USER".into(), "emr-edge".into()),
                (
                    "EMR_SERVICENOW_API_PASSWORD".into(),
                    ITSM_FAKE_SECRET.into(),
                ),
                ("EMR_JIRA_API_USER".into(), "emr-edge@example.com".into()),
                ("EMR_JIRA_API_TOKEN".into(), ITSM_FAKE_SECRET.into()),
                // `/emr/*` as Genesys data actions call it, for a `status`
                // section a test may switch to basic.
                ("EMR_STATUS_USER".into(), STATUS_BASIC_USER.into()),
                ("EMR_STATUS_PASSWORD".into(), STATUS_BASIC_PASSWORD.into()),
            ],
            wasm,
            ..EnvoyOptions::default()
        };
        let envoy = tokio::task::spawn_blocking(move || Envoy::start(options))
            .await
            .expect("Envoy start panicked");
        Stack {
            sim,
            envoy,
            http: reqwest::Client::new(),
        }
    }

    /// Waits until the service's start-up reads of the configured groups
    /// ([`genesys_config`]'s two) have been answered, so that a fault a
    /// test adds next meets the calls the test makes, not those.
    pub async fn startup_reads_done(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let read = |g: &str| {
                !self
                    .calls("GET", &format!("/api/v2/architect/emergencygroups/{g}"))
                    .is_empty()
            };
            if read(emr_sim::DEFAULT_GROUP_ID) && read(emr_sim::CARRIER_OUTAGE_GROUP_ID) {
                // Their answers reach the service a moment after the sim
                // logs them.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the service did not read its configured groups at start");
    }

    /// Posts a canonical incident and asserts the 202.
    pub async fn send(&self, body: &Value) -> reqwest::Response {
        let r = self
            .http
            .post(self.envoy.url("/webhooks/canonical"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("intake unreachable");
        assert_eq!(r.status().as_u16(), 202, "intake refused {body}");
        r
    }

    pub async fn status(&self, id: &str) -> Value {
        let r = self
            .http
            .get(self.envoy.url(&format!("/emr/status/{id}")))
            .send()
            .await
            .expect("status unreachable");
        r.json().await.unwrap_or(Value::Null)
    }

    /// Posts `body` to `path` (any intake route) and returns the answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.envoy.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("intake unreachable")
    }

    /// `POST /emr/groups/{group}/resume` as a script sends it (JSON, no
    /// `Origin`); returns the status and the body.
    pub async fn resume(&self, group: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.envoy.url(&format!("/emr/groups/{group}/resume")))
            .header("content-type", "application/json")
            .send()
            .await
            .expect("resume unreachable");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// One group's entry of `GET /emr/state` (`Null` when absent).
    pub async fn group_state(&self, group: &str) -> Value {
        self.state().await["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["id"] == group).cloned())
            .unwrap_or(Value::Null)
    }

    /// Kills Envoy (every bit of shared data and VM memory is gone) and
    /// starts it again on the same ports; the sim keeps running.
    pub fn restart_envoy(&mut self) {
        let envoy = &mut self.envoy;
        tokio::task::block_in_place(|| envoy.restart());
    }

    pub async fn state(&self) -> Value {
        let r = self
            .http
            .get(self.envoy.url("/emr/state"))
            .send()
            .await
            .expect("state unreachable");
        r.json().await.unwrap_or(Value::Null)
    }

    /// Whether the sim's group is enabled.
    pub fn enabled(&self, group: &str) -> bool {
        self.sim
            .emergency_group(group)
            .map(|g| g.enabled)
            .unwrap_or(false)
    }

    /// The sim's requests with `method` whose path starts with `prefix`.
    pub fn calls(&self, method: &str, prefix: &str) -> Vec<emr_sim::RequestRecord> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.starts_with(prefix))
            .collect()
    }
}

/// Milliseconds since the UNIX epoch, as the sim's request log stamps them.
pub fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// Polls `check` every 20 ms until it holds or `within` passes; returns
/// whether it held.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an incident's status until its newest event's status is one of
/// `wanted`; returns the last view either way.
pub async fn status_becomes(stack: &Stack, id: &str, wanted: &[&str], within: Duration) -> Value {
    status_until(stack, id, within, |v| {
        wanted.contains(&latest_status(v).as_str())
    })
    .await
}

/// Polls an incident's status until `check` holds; returns the last view.
pub async fn status_until(
    stack: &Stack,
    id: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = stack.status(id).await;
        if check(&v) {
            return v;
        }
        if Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status of an incident's newest event.
pub fn latest_status(v: &Value) -> String {
    v["events"]
        .as_array()
        .and_then(|events| {
            events.iter().max_by_key(|e| {
                (
                    e["timestamp"].as_str().unwrap_or_default().to_owned(),
                    e["receivedAt"].as_str().unwrap_or_default().to_owned(),
                )
            })
        })
        .and_then(|e| e["status"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Where the fault suite's closing check found things (see [`Stack::account`]).
#[derive(Debug, Default)]
pub struct Accounting {
    /// Events on the status endpoint, over every incident checked.
    pub events: usize,
    /// Successful `PUT`s of emergency groups the sim answered.
    pub transitions: usize,
    /// Everything found wrong; empty when the books balance.
    pub problems: Vec<String>,
}

impl Stack {
    /// The fault suite's closing check, after a scenario: every incident in
    /// `ids` (canonical correlation ids whose events were answered 202) has
    /// only terminal events on the status endpoint, each of them has its
    /// audit line, every successful emergency-group `PUT` the sim answered
    /// has exactly one `written` audit line with its correlation id (and no
    /// `written` line lacks its `PUT`), and each group the incidents map to
    /// is enabled exactly when one of them is open. Polls until the books
    /// balance or `within` passes.
    pub async fn account(&self, ids: &[String], within: Duration) -> Accounting {
        let deadline = Instant::now() + within;
        loop {
            let a = self.account_once(ids).await;
            if a.problems.is_empty() || Instant::now() >= deadline {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Stack::account`], asserting that the books balance.
    pub async fn assert_accounted(&self, ids: &[String], within: Duration) -> Accounting {
        let a = self.account(ids, within).await;
        assert!(
            a.problems.is_empty(),
            "not accounted for after {within:?}:\n{}\n--- log tail ---\n{}",
            a.problems.join("\n"),
            self.envoy.log_tail(30)
        );
        a
    }

    async fn account_once(&self, ids: &[String]) -> Accounting {
        let mut a = Accounting::default();
        let audit = self.envoy.audit_lines();
        let ts = |v: &Value| {
            v.as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis())
        };
        // group -> whether some incident holds it on
        let mut wanted: std::collections::BTreeMap<String, bool> = Default::default();
        for id in ids {
            let status = self.status(id).await;
            let Some(events) = status["events"].as_array() else {
                a.problems.push(format!("{id}: no status ({status})"));
                continue;
            };
            let key = format!("canonical:{id}");
            for e in events {
                a.events += 1;
                if e["status"] == "PROCESSING" {
                    a.problems.push(format!("{id}: event not terminal: {e}"));
                }
                let audited = match e["via"].as_str() {
                    None => audit.iter().any(|l| {
                        l["audit"] == "event"
                            && l["incident"] == key.as_str()
                            && ts(&l["timestamp"]) == ts(&e["timestamp"])
                    }),
                    // Events no webhook delivered: the line that made them.
                    Some(via) => audit.iter().any(|l| {
                        l["incident"] == key.as_str()
                            || l.to_string().contains(&format!("\"{id}\""))
                            || (via == "RECOVERY" && l["kind"] == "emr.recovery")
                            || (via == "ADOPTED" && l["decision"] == "adopted")
                    }),
                };
                if !audited {
                    a.problems
                        .push(format!("{id}: no audit line for event {e}"));
                }
            }
            if let Some(group) = status["group"].as_str() {
                *wanted.entry(group.to_owned()).or_default() |= status["state"] == "OPEN";
            }
        }
        for (group, on) in &wanted {
            if self.enabled(group) != *on {
                a.problems
                    .push(format!("group {group}: enabled should be {on}"));
            }
        }
        let puts: Vec<emr_sim::RequestRecord> = self
            .calls("PUT", "/api/v2/architect/emergencygroups/")
            .into_iter()
            .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
            .collect();
        let put_ids: Vec<String> = puts
            .iter()
            .filter_map(|r| r.correlation_id.clone())
            .collect();
        a.transitions = put_ids.len();
        let written: Vec<&str> = audit
            .iter()
            .filter(|l| l["decision"] == "written")
            .filter_map(|l| l["genesys"]["correlationId"].as_str())
            .collect();
        // A write Genesys made but whose answer never reached us (the sim
        // held it past our timeout) cannot have its `written` line; its
        // attempt must be audited as failed instead (Envoy's 504 or a
        // transport failure), and the next read then finds it done.
        let group_of = |path: &str| path.rsplit('/').next().unwrap_or_default().to_owned();
        let mut lost: std::collections::BTreeMap<String, usize> = Default::default();
        for r in &puts {
            let id = r.correlation_id.as_deref().unwrap_or_default();
            let n = written.iter().filter(|w| **w == id).count();
            if n == 0 && r.injected {
                *lost.entry(group_of(&r.path)).or_default() += 1;
            } else if n != 1 {
                a.problems.push(format!(
                    "PUT answered with correlation id {id}: {n} `written` audit lines"
                ));
            }
        }
        for (group, n) in lost {
            let failed_attempts = audit
                .iter()
                .filter(|l| l["group"] == group.as_str())
                .filter(|l| l["decision"] == "retry-after-backoff" || l["decision"] == "failed")
                .filter(|l| l["genesys"]["status"] == 504 || l["genesys"]["class"] == "transport")
                .count();
            if failed_attempts < n {
                a.problems.push(format!(
                    "group {group}: {n} writes whose answer was lost, {failed_attempts} failed attempts audited"
                ));
            }
        }
        for w in &written {
            if !put_ids.iter().any(|p| p == w) {
                a.problems
                    .push(format!("`written` audit line {w} without a successful PUT"));
            }
        }
        a
    }
}

/// Every time in `v` is in the one format emr-edge writes
/// (`emr_core::rfc3339::times_out_of_format`).
pub fn assert_one_time_format(v: &Value, what: &str) {
    let bad = emr_core::rfc3339::times_out_of_format(v);
    assert!(bad.is_empty(), "{what}: {bad:?}");
}

/// [`assert_one_time_format`] on every JSON audit line of Envoy's log;
/// returns how many it read.
pub fn assert_audit_times_in_one_format(log: &str) -> usize {
    log.lines()
        .filter_map(|l| l.find("{\"").map(|i| &l[i..]))
        .filter_map(|j| serde_json::from_str::<Value>(j).ok())
        .inspect(|v| assert_one_time_format(v, "audit line"))
        .count()
}
