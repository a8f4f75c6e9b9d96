//! `emr-bench run`: every measurement in one run, in a fixed order, within a
//! time budget; then the report.
//!
//! Cores: this process, wrk and the simulator run on core 0 (the Makefile
//! starts it under `taskset -c 0`). With 1 worker, Envoy (worker and main
//! thread) and, for the alternative, the upstream service share core 1: the
//! server side gets one core in every case. With 2 workers the server side
//! may use both cores, so it necessarily shares core 0 with the load
//! generator.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::activation::{self, Probe, Series};
use crate::envoy::{self, Envoy, Kind, Spec};
use crate::load::{self, Latency};
use crate::report;
use crate::stats::Repeated;
use crate::wrk::{self, Workload, WrkResult};

pub const TOKEN: &str = "bench-canonical-token-0123456789";
const LOADGEN_CPUS: &str = "0";
/// The whole run must fit `make bench`'s 10 minutes with its build.
const BUDGET: Duration = Duration::from_secs(500);

pub struct Options {
    pub quick: bool,
    pub out: PathBuf,
    pub envoy: PathBuf,
    pub wasm: PathBuf,
    /// The floor filter (`bench/floor`).
    pub floor_wasm: PathBuf,
    pub root: PathBuf,
    pub unique_target: u64,
    /// Which parts to run (all by default): start, service, throughput,
    /// activation, memory.
    pub phases: Vec<String>,
    /// Worker counts for the throughput part.
    pub workers: Vec<u32>,
    /// Throughput targets to run (all by default).
    pub targets: Option<Vec<String>>,
    /// Replace only the phases run in the existing results.json.
    pub merge: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options> {
        // A mistyped flag must not start a ten-minute run with defaults.
        const FLAGS: [&str; 8] = [
            "--out",
            "--envoy",
            "--wasm",
            "--floor-wasm",
            "--unique",
            "--phases",
            "--workers",
            "--targets",
        ];
        let mut rest = args.iter();
        while let Some(a) = rest.next() {
            match a.as_str() {
                "--quick" | "--merge" => {}
                f if FLAGS.contains(&f) => {
                    rest.next();
                }
                other => bail!(
                    "emr-bench run: unknown argument {other:?}\n{}",
                    crate::USAGE
                ),
            }
        }
        let root = std::env::current_dir()?;
        let quick = args.iter().any(|a| a == "--quick");
        Ok(Options {
            quick,
            out: crate::flag(args, "--out")?
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("bench")),
            envoy: crate::flag(args, "--envoy")?
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join(".venv/bin/envoy-real")),
            wasm: crate::flag(args, "--wasm")?
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/wasm32-wasip1/release/emr_edge.wasm")),
            floor_wasm: crate::flag(args, "--floor-wasm")?
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/wasm32-wasip1/release/emr_bench_floor.wasm")),
            unique_target: crate::flag(args, "--unique")?
                .map(|v| v.parse())
                .transpose()
                .context("--unique")?
                .unwrap_or(if quick { 50_000 } else { 1_000_000 }),
            phases: crate::flag(args, "--phases")?
                .unwrap_or_else(|| "start,service,throughput,activation,memory,cluster".into())
                .split(',')
                .map(str::to_owned)
                .collect(),
            workers: crate::flag(args, "--workers")?
                .unwrap_or_else(|| "1,2".into())
                .split(',')
                .map(|w| w.parse().context("--workers"))
                .collect::<Result<_>>()?,
            merge: args.iter().any(|a| a == "--merge"),
            targets: crate::flag(args, "--targets")?
                .map(|t| t.split(',').map(str::to_owned).collect()),
            root,
        })
    }

    /// Seconds per throughput run. 2 s, quick or not: the server CPU per
    /// request (the figure to judge by) barely moves between 2 s and 3 s
    /// runs, and the 48 s saved keep `make bench` with its builds near its
    /// 10 minutes on a fresh 2-core machine.
    fn seconds(&self) -> u32 {
        2
    }

    fn repeats(&self) -> usize {
        3
    }
}

pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn now_rfc3339() -> String {
    rfc3339(chrono::Utc::now())
}

/// The plugin configuration of the throughput runs: the canonical route
/// behind a bearer token, no Genesys (events are recorded by the service).
fn intake_config() -> Value {
    json!({
        "sources": {"canonical": {"auth": [{"kind": "bearer", "token_env": "EMR_CANONICAL_TOKEN"}]}},
        "status": {"insecure": true}
    })
}

/// The same, driving the simulator's Genesys (as the end-to-end tests do).
fn genesys_config() -> Value {
    let mut c = intake_config();
    c["genesys"] = json!({
        "login_host": "login.sim.local",
        "api_host": "api.sim.local",
        "client_id_env": "EMR_GENESYS_CLIENT_ID",
        "client_secret_env": "EMR_GENESYS_CLIENT_SECRET",
        "default_group": emr_sim::DEFAULT_GROUP_ID,
        "groups_by_incident_type": {"CARRIER_OUTAGE": emr_sim::CARRIER_OUTAGE_GROUP_ID},
        "datatable": {"id": emr_sim::DEFAULT_DATATABLE_ID, "row_key": "{group}"},
        "limits": {"call_timeout_ms": 2000}
    });
    c
}

fn env() -> Vec<(String, String)> {
    vec![
        ("EMR_CANONICAL_TOKEN".into(), TOKEN.into()),
        (
            "EMR_GENESYS_CLIENT_ID".into(),
            emr_sim::EMR_EDGE_CLIENT_ID.into(),
        ),
        (
            "EMR_GENESYS_CLIENT_SECRET".into(),
            emr_sim::EMR_EDGE_CLIENT_SECRET.into(),
        ),
    ]
}

/// One throughput figure: a workload against a target, repeated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throughput {
    pub target: String,
    pub workload: String,
    pub workers: u32,
    pub rps: Repeated,
    /// wrk's latency at saturation (32 connections), µs, per run.
    pub p50_us: Repeated,
    pub p99_us: Repeated,
    /// Share of answers that had the expected status (from Envoy's stats).
    pub expected_share: Repeated,
    pub socket_errors: u64,
    /// Server-side CPU time per request, µs: Envoy (and, for the
    /// alternative, its webhook service). Robust to a busy machine where
    /// req/s is not: it is what a dedicated core would be divided by.
    #[serde(default)]
    pub cpu_us: Repeated,
    /// Of which Envoy's main thread (for emr-edge: the service).
    #[serde(default)]
    pub main_cpu_us: Repeated,
}

/// Latency at a fixed rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FixedRate {
    pub target: String,
    pub workers: u32,
    pub rate: u32,
    pub p50_us: Repeated,
    pub p99_us: Repeated,
    pub p999_us: Repeated,
    pub unexpected: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Memory {
    pub workers: u32,
    pub idle_kib: u64,
    pub half_kib: u64,
    pub full_kib: u64,
    pub accepted_half: u64,
    pub accepted: u64,
    pub rate_rps: f64,
    pub seconds: f64,
    pub note: String,
    /// The most events accepted by the intake but not yet recorded by the
    /// service (`emr.intake.accepted` − `emr.service.events`), sampled
    /// every 250 ms during the flood: the shared queue's backlog.
    #[serde(default)]
    pub peak_backlog: u64,
    /// The highest RSS sampled during the flood.
    #[serde(default)]
    pub peak_kib: u64,
    /// Answers other than 2xx during the flood (wrk's count): 429s if the
    /// workload opened incidents, 503s past the backlog bound.
    #[serde(default)]
    pub unexpected: u64,
}

/// The service's time per event, natively, for one ledger shape
/// (`crate::core::service_time`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceFigure {
    /// Which ledger: `small`, `full` or `full-short-queues`.
    pub ledger: String,
    pub shape: crate::core::LedgerShape,
    pub us_per_event: Repeated,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Start {
    pub wasm_bytes: u64,
    pub ready_edge_ms: Repeated,
    pub ready_ceiling_ms: Repeated,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Activation {
    pub warm: Series,
    pub cold: Series,
    pub flood: Series,
    pub flood_rps: f64,
    pub flood_expected_share: f64,
    pub workers: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Results {
    pub machine: Value,
    pub quick: bool,
    pub throughput: Vec<Throughput>,
    pub fixed_rate: Vec<FixedRate>,
    pub activation: Activation,
    pub memory: Memory,
    pub start: Start,
    /// Absent from results written before it was measured.
    #[serde(default)]
    pub service: Vec<ServiceFigure>,
    /// Cluster mode on etcd (absent from older results).
    #[serde(default)]
    pub cluster: Option<crate::cluster::ClusterFigures>,
    pub elapsed_s: f64,
    pub skipped: Vec<String>,
}

struct Ctx<'a> {
    opts: &'a Options,
    scratch: PathBuf,
    started: Instant,
    runs: u32,
}

impl Ctx<'_> {
    fn spec(&self, kind: Kind, workers: u32, cpus: &'static str, name: &str) -> Spec<'_> {
        Spec {
            kind,
            envoy: &self.opts.envoy,
            wasm: if kind == Kind::Floor {
                &self.opts.floor_wasm
            } else {
                &self.opts.wasm
            },
            root: &self.opts.root,
            config: if kind == Kind::Floor {
                json!("bare")
            } else {
                intake_config()
            },
            concurrency: workers,
            cpus,
            sim_port: 9,
            upstream_port: 9,
            env: env(),
            vars: Vec::new(),
            scratch: self.scratch.join(name),
        }
    }

    fn prefix(&mut self, what: &str) -> String {
        self.runs += 1;
        format!("B{}-{what}-{}", std::process::id(), self.runs)
    }

    fn left(&self) -> Duration {
        BUDGET.saturating_sub(self.started.elapsed())
    }
}

fn server_cpus(workers: u32) -> &'static str {
    if workers == 1 {
        "1"
    } else {
        "0,1"
    }
}

struct Upstream(Child);

impl Upstream {
    fn cpu_ticks(&self) -> u64 {
        envoy::stat_ticks(std::path::Path::new(&format!("/proc/{}/stat", self.0.id())))
    }
}

impl Upstream {
    fn start(cpus: &str, port: u16, threads: u32) -> Result<Upstream> {
        let exe = std::env::current_exe()?;
        let child = Command::new("taskset")
            .args(["-c", cpus])
            .arg(exe)
            .args(["upstream", "--port", &port.to_string()])
            .args(["--threads", &threads.to_string()])
            .env(crate::upstream::TOKEN_ENV, TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Upstream(child));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("the upstream service did not start")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn main(opts: Options) -> Result<()> {
    if !wrk::available() {
        bail!("wrk is not installed: `make bench` installs it (apt-get install -y wrk)");
    }
    for p in [&opts.envoy, &opts.wasm, &opts.floor_wasm] {
        if !p.exists() {
            bail!("{} does not exist: run `make bench`", p.display());
        }
    }
    let raw = opts.out.join("raw");
    std::fs::create_dir_all(&raw)?;
    let mut ctx = Ctx {
        opts: &opts,
        scratch: raw.join(format!("run-{}", std::process::id())),
        started: Instant::now(),
        runs: 0,
    };
    let mut results = Results {
        machine: report::machine(&opts.envoy, &opts.root),
        quick: opts.quick,
        ..Results::default()
    };
    // --merge: keep the figures of the phases not run from the last results.
    if opts.merge {
        let old: Results =
            serde_json::from_str(&std::fs::read_to_string(opts.out.join("results.json"))?)?;
        results = Results {
            skipped: Vec::new(),
            ..old
        };
        results.machine["first_run_s"] = json!(results.elapsed_s.round());
        results.machine["merged"] = json!(format!(
            "{} re-run at {}",
            opts.phases.join(","),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    eprintln!("emr-bench: load before: {}", report::loadavg());

    let phase = |name: &str| opts.phases.iter().any(|p| p == name);
    // A phase that fails is reported in RESULTS.md; the others still run.
    let failed = |what: &str, e: anyhow::Error, skipped: &mut Vec<String>| {
        eprintln!("{what} failed: {e:#}");
        skipped.push(format!("{what} failed: {e:#}"));
    };
    if phase("start") {
        match start(&mut ctx) {
            Ok(s) => {
                eprintln!(
                    "start: wasm {} bytes, /ready {:.0} ms",
                    s.wasm_bytes, s.ready_edge_ms.median
                );
                results.start = s;
            }
            Err(e) => failed("start", e, &mut results.skipped),
        }
    }
    if phase("service") {
        match service() {
            Ok(s) => results.service = s,
            Err(e) => failed("service", e, &mut results.skipped),
        }
    }
    if phase("throughput") {
        for &workers in &opts.workers {
            match throughput(&mut ctx, workers) {
                Ok((t, f)) => {
                    results.throughput.extend(t);
                    results.fixed_rate.extend(f);
                }
                Err(e) => failed(
                    &format!("throughput, {workers} worker(s)"),
                    e,
                    &mut results.skipped,
                ),
            }
        }
    }
    if phase("activation") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        match rt.block_on(activation(&mut ctx)) {
            Ok(a) => results.activation = a,
            Err(e) => failed("activation", e, &mut results.skipped),
        }
    }
    if phase("memory") {
        let unique_2w = results
            .throughput
            .iter()
            .find(|t| t.target == "emr-edge" && t.workload == "unique" && t.workers == 2)
            .map_or(5_000.0, |t| t.rps.median);
        match memory(&mut ctx, unique_2w, &mut results.skipped) {
            Ok(m) => results.memory = m,
            Err(e) => failed("memory", e, &mut results.skipped),
        }
    }
    if phase("cluster") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        match rt.block_on(cluster(&mut ctx)) {
            Ok(c) => results.cluster = Some(c),
            Err(e) => failed("cluster", e, &mut results.skipped),
        }
    }
    results.elapsed_s = ctx.started.elapsed().as_secs_f64();
    results.machine["load_after"] = json!(report::loadavg());

    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(opts.out.join("results.json"), &json)?;
    // A run of phases that start no Envoy has not made its scratch yet.
    std::fs::create_dir_all(&ctx.scratch)?;
    std::fs::write(ctx.scratch.join("results.json"), &json)?;
    report::write(&results, &opts.out)?;
    println!("{}", report::table(&results));
    eprintln!(
        "emr-bench: done in {:.0} s; wrote {}/RESULTS.md and results.json",
        results.elapsed_s,
        opts.out.display()
    );
    Ok(())
}

/// `.wasm` size and spawn → `/ready`, with and without the filter.
fn start(ctx: &mut Ctx) -> Result<Start> {
    let wasm_bytes = std::fs::metadata(&ctx.opts.wasm)?.len();
    let mut edge = Vec::new();
    let mut ceiling = Vec::new();
    for i in 0..5 {
        let e = Envoy::start(&ctx.spec(Kind::Edge, 2, "0,1", &format!("start-edge-{i}")))?;
        edge.push(e.ready_after.as_secs_f64() * 1000.0);
        drop(e);
        if i < 3 {
            let c = Envoy::start(&ctx.spec(Kind::Ceiling, 2, "0,1", &format!("start-ceil-{i}")))?;
            ceiling.push(c.ready_after.as_secs_f64() * 1000.0);
        }
    }
    Ok(Start {
        wasm_bytes,
        ready_edge_ms: Repeated::of(edge),
        ready_ceiling_ms: Repeated::of(ceiling),
    })
}

/// The ledgers of the `service` phase: the hostile-senders attack #1 (RELIABILITY.md) (1,000 open
/// incidents of 50 queues of 128 characters, one group), the same incident
/// shape in a small ledger, and 1,000 open incidents of two short queues.
const LEDGERS: [(&str, crate::core::LedgerShape); 3] = [
    (
        "small",
        crate::core::LedgerShape {
            open: 10,
            queues: 50,
            queue_len: 128,
            events: 2000,
            batch: 10,
        },
    ),
    (
        "full",
        crate::core::LedgerShape {
            open: 1000,
            queues: 50,
            queue_len: 128,
            events: 2000,
            batch: 10,
        },
    ),
    (
        "full-short-queues",
        crate::core::LedgerShape {
            open: 1000,
            queues: 2,
            queue_len: 12,
            events: 2000,
            batch: 10,
        },
    ),
];

/// The service's time per event for each of [`LEDGERS`], natively: a
/// round left out (the allocator's and the caches' first touch), then 7
/// rounds, the ledgers interleaved in each so drift in the machine's load
/// hits every ledger alike. About 5 s in all.
fn service() -> Result<Vec<ServiceFigure>> {
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); LEDGERS.len()];
    for round in 0..8 {
        for ((name, shape), us) in LEDGERS.iter().zip(runs.iter_mut()) {
            let t = crate::core::service_time(*shape)?;
            // A ledger that emptied or grew would be another measurement.
            if t.open_after != shape.open {
                bail!(
                    "service, {name} ledger: {} open after the timed events, not {}",
                    t.open_after,
                    shape.open
                );
            }
            if round > 0 {
                us.push(t.us_per_event);
            }
        }
    }
    let figures: Vec<ServiceFigure> = LEDGERS
        .iter()
        .zip(runs)
        .map(|((name, shape), us)| ServiceFigure {
            ledger: (*name).to_owned(),
            shape: *shape,
            us_per_event: Repeated::of(us),
        })
        .collect();
    for f in &figures {
        eprintln!(
            "service, {} ledger ({} open x {} queues of {} chars): {:.1} µs/event ({:.1}–{:.1})",
            f.ledger,
            f.shape.open,
            f.shape.queues,
            f.shape.queue_len,
            f.us_per_event.median,
            f.us_per_event.min,
            f.us_per_event.max
        );
    }
    Ok(figures)
}

/// The counter that tells a workload's requests were answered as expected.
fn expected(envoy: &Envoy, target: &str, workload: Workload) -> u64 {
    match (target, workload) {
        ("emr-edge", Workload::Unique) => envoy.counter("emr.intake.accepted"),
        ("emr-edge", Workload::Duplicate) => envoy.counter("emr.intake.replayed"),
        ("emr-edge", Workload::Invalid) => envoy.counter("emr.intake.refused.422"),
        ("emr-edge", Workload::Unauthenticated) => envoy.counter("emr.intake.refused.401"),
        _ => envoy.responses("2xx"),
    }
}

fn throughput(ctx: &mut Ctx, workers: u32) -> Result<(Vec<Throughput>, Vec<FixedRate>)> {
    let cpus = server_cpus(workers);
    let upstream_port = envoy::free_port()?;
    let upstream = Upstream::start(cpus, upstream_port, workers)?;
    let hz = envoy::ticks_per_second() as f64;
    let ceiling =
        Envoy::start(&ctx.spec(Kind::Ceiling, workers, cpus, &format!("ceil-{workers}")))?;
    let edge = Envoy::start(&ctx.spec(Kind::Edge, workers, cpus, &format!("edge-{workers}")))?;
    let mut proxy_spec = ctx.spec(Kind::Proxy, workers, cpus, &format!("proxy-{workers}"));
    proxy_spec.upstream_port = upstream_port;
    let proxy = Envoy::start(&proxy_spec)?;
    let floor = Envoy::start(&ctx.spec(Kind::Floor, workers, cpus, &format!("floor-{workers}")))?;
    let mut read_spec = ctx.spec(Kind::Floor, workers, cpus, &format!("floor-read-{workers}"));
    read_spec.config = json!("read");
    let floor_read = Envoy::start(&read_spec)?;
    let targets: [(&'static str, &Envoy, &[Workload]); 5] = [
        ("ceiling", &ceiling, &[Workload::Unique]),
        ("floor", &floor, &[Workload::Unique]),
        ("floor-read", &floor_read, &[Workload::Unique]),
        (
            "emr-edge",
            &edge,
            &[
                Workload::Unique,
                Workload::Duplicate,
                Workload::Invalid,
                Workload::Unauthenticated,
            ],
        ),
        ("alternative", &proxy, &[Workload::Unique]),
    ];
    let secs = ctx.opts.seconds();
    let scratch = ctx.scratch.clone();
    let wrk_run = |prefix: String, port: u16, workload: Workload, seconds: u32| {
        wrk::Run {
            workload,
            port,
            connections: 32,
            seconds,
            cpus: LOADGEN_CPUS,
            prefix,
            token: TOKEN,
            scratch: &scratch,
        }
        .run()
    };
    // Warm every target (JIT, connection pools, first dedupe writes).
    for (name, envoy, _) in &targets {
        let prefix = ctx.prefix(&format!("warm-{name}"));
        wrk_run(prefix, envoy.listen_port, Workload::Unique, 1)?;
    }
    // Per target and workload: wrk's results, the expected share, and CPU
    // µs per request (all, main thread).
    type Runs = Vec<(
        &'static str,
        Workload,
        Vec<WrkResult>,
        Vec<f64>,
        Vec<(f64, f64)>,
    )>;
    let mut runs: Runs = Vec::new();
    let wanted = |name: &str| {
        ctx.opts
            .targets
            .as_ref()
            .is_none_or(|t| t.iter().any(|x| x == name))
    };
    for rep in 0..ctx.opts.repeats() {
        for (name, envoy, workloads) in &targets {
            if !wanted(name) {
                continue;
            }
            for &w in workloads.iter() {
                let before = expected(envoy, name, w);
                let side = |e: &Envoy| {
                    let (all, main) = e.cpu_ticks();
                    let up = if *name == "alternative" {
                        upstream.cpu_ticks()
                    } else {
                        0
                    };
                    (all + up, main)
                };
                let (cpu0, main0) = side(envoy);
                let prefix = ctx.prefix(&format!("{name}-{}-w{workers}-r{rep}", w.name()));
                let r = wrk_run(prefix, envoy.listen_port, w, secs)?;
                let (cpu1, main1) = side(envoy);
                let got = expected(envoy, name, w).saturating_sub(before);
                let share = got as f64 / r.requests.max(1) as f64;
                let per = |ticks: u64| ticks as f64 / hz * 1e6 / r.requests.max(1) as f64;
                let cpu = (
                    per(cpu1.saturating_sub(cpu0)),
                    per(main1.saturating_sub(main0)),
                );
                eprintln!(
                    "{workers}w {name:<11} {:<9} {:>8.0} req/s  p99 {:>6} µs  expected {:.3}  cpu {:>5.0} µs/req (main {:>4.0})",
                    w.name(),
                    r.rps(),
                    r.p99_us,
                    share,
                    cpu.0,
                    cpu.1
                );
                match runs.iter_mut().find(|(n, wl, ..)| n == name && *wl == w) {
                    Some((_, _, rs, shares, cpus)) => {
                        rs.push(r);
                        shares.push(share);
                        cpus.push(cpu);
                    }
                    None => runs.push((name, w, vec![r], vec![share], vec![cpu])),
                }
            }
        }
    }
    let throughput = runs
        .into_iter()
        .map(|(target, w, rs, shares, cpus)| Throughput {
            cpu_us: Repeated::of(cpus.iter().map(|c| c.0).collect()),
            main_cpu_us: Repeated::of(cpus.iter().map(|c| c.1).collect()),
            target: target.to_owned(),
            workload: w.name().to_owned(),
            workers,
            rps: Repeated::of(rs.iter().map(WrkResult::rps).collect()),
            p50_us: Repeated::of(rs.iter().map(|r| r.p50_us as f64).collect()),
            p99_us: Repeated::of(rs.iter().map(|r| r.p99_us as f64).collect()),
            expected_share: Repeated::of(shares),
            socket_errors: rs.iter().map(WrkResult::socket_errors).sum(),
        })
        .collect();

    // Latency at a fixed, moderate rate: what the filter adds per request.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rate = 2_000;
    let mut fixed: Vec<(&'static str, Vec<Latency>)> = Vec::new();
    for rep in 0..ctx.opts.repeats() {
        for (name, envoy, _) in &targets {
            if name.starts_with("floor") || !wanted(name) {
                continue;
            }
            let prefix = ctx.prefix(&format!("rate-{name}-w{workers}-r{rep}"));
            let l = rt.block_on(load::fixed_rate(
                envoy.listen_port,
                rate,
                2.0,
                8,
                &prefix,
                TOKEN,
                202,
            ))?;
            eprintln!(
                "{workers}w {name:<11} at {rate}/s: p50 {} µs p99 {} µs ({} unexpected)",
                l.p50_us, l.p99_us, l.unexpected
            );
            match fixed.iter_mut().find(|(n, _)| n == name) {
                Some((_, ls)) => ls.push(l),
                None => fixed.push((name, vec![l])),
            }
        }
    }
    let fixed = fixed
        .into_iter()
        .map(|(target, ls)| FixedRate {
            target: target.to_owned(),
            workers,
            rate,
            p50_us: Repeated::of(ls.iter().map(|l| l.p50_us as f64).collect()),
            p99_us: Repeated::of(ls.iter().map(|l| l.p99_us as f64).collect()),
            p999_us: Repeated::of(ls.iter().map(|l| l.p999_us as f64).collect()),
            unexpected: ls.iter().map(|l| l.unexpected).sum(),
        })
        .collect();
    Ok((throughput, fixed))
}

/// Probes per series: as many transitions as the request budget lets
/// through at once (see [`activation`]). A warm incident is 6 calls (read,
/// row, group; read, group, row), a cold one 10 (a 401 and a login each way).
const WARM_PROBES: usize = 45;
const COLD_PROBES: usize = 27;

/// Activation latency. emr-edge spends every Genesys call from a token
/// bucket (docs/convergence.md, "The request budget"); the bench sets it to the most the
/// config allows (300 a minute, burst 300) and starts a fresh Envoy — a full
/// bucket — for each series, sized to fit in it. More probes back to back
/// would measure the budget (a call every 0.2 s), not the reaction time.
async fn activation(ctx: &mut Ctx<'_>) -> Result<Activation> {
    let workers = 1;
    let sim = emr_sim::Sim::start(emr_sim::SimConfig {
        rate_limit_per_minute: 1_000_000,
        request_log_capacity: 10_000,
        ..emr_sim::SimConfig::default()
    })
    .await?;
    let prefixes: Vec<String> = ["warm", "cold", "flooded", "flood"]
        .iter()
        .map(|k| ctx.prefix(k))
        .collect();
    let scratch = ctx.scratch.clone();
    let mut spec = ctx.spec(Kind::Edge, workers, server_cpus(workers), "activation");
    spec.config = genesys_config();
    spec.config["genesys"]["limits"]["requests_per_minute"] = json!(300);
    spec.config["genesys"]["limits"]["burst"] = json!(300);
    spec.sim_port = sim.addr().port();
    // At least 200 incidents per series (20 with --quick), over as many
    // fresh Envoys as the budget needs.
    let target: usize = if ctx.opts.quick { 20 } else { 200 };
    let budget = Duration::from_secs(60);
    let mut out = Activation {
        workers,
        ..Activation::default()
    };
    let (mut flood_requests, mut flood_seconds, mut flood_answered) = (0u64, 0f64, 0u64);
    let mut chunk = 0;
    for (i, kind) in ["warm", "cold", "flood"]
        .into_iter()
        .enumerate()
        .flat_map(|(i, kind)| {
            let per = if kind == "cold" {
                COLD_PROBES
            } else {
                WARM_PROBES
            };
            std::iter::repeat_n((i, kind), target.div_ceil(per.min(target)))
        })
    {
        chunk += 1;
        let per = if kind == "cold" {
            COLD_PROBES
        } else {
            WARM_PROBES
        };
        let n = per.min(target);
        let prefix = |k: usize| format!("{}-{chunk}", prefixes.get(k).cloned().unwrap_or_default());
        // Started from this thread, not a blocking-pool one: Envoy asks for
        // SIGTERM when the thread that started it ends (a pool thread ends
        // after 10 s idle). The simulator keeps serving on the runtime's
        // workers.
        spec.scratch = scratch.join(format!("activation-{kind}-{chunk}"));
        let envoy = Envoy::start(&spec)?;
        sim.clear_requests();
        activation::wait_for_token(&sim, Duration::from_secs(10)).await?;
        // Let the start-up reads (recovery, first watchdog check) settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let probe = Probe {
            sim: &sim,
            port: envoy.listen_port,
            token: TOKEN,
            group: emr_sim::CARRIER_OUTAGE_GROUP_ID,
            prefix: prefix(i),
        };
        let series = match kind {
            "warm" => probe.series(n, false, budget).await?,
            "cold" => probe.series(n, true, budget).await?,
            _ => {
                // Junk and replays from wrk while the probes run.
                let before = envoy.responses("4xx") + envoy.counter("emr.intake.replayed");
                let flood = wrk::Run {
                    workload: Workload::Flood,
                    port: envoy.listen_port,
                    connections: 32,
                    seconds: 120,
                    cpus: LOADGEN_CPUS,
                    prefix: prefix(3),
                    token: TOKEN,
                    scratch: &scratch,
                }
                .spawn()?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let series = probe.series(n, false, budget).await;
                let flood_result = flood.stop()?;
                let answered = (envoy.responses("4xx") + envoy.counter("emr.intake.replayed"))
                    .saturating_sub(before);
                // The flood's rate and answers, over all its chunks.
                flood_requests += flood_result.requests;
                flood_seconds += flood_result.duration_us as f64 / 1e6;
                flood_answered += answered;
                series?
            }
        };
        eprintln!(
            "activation {kind}: p50 {} ms p99 {} ms ({} incidents, {} missed, budget waits {})",
            series.on_ms.p50,
            series.on_ms.p99,
            series.incidents,
            series.missed,
            envoy.counter("emr.genesys.budget_waits")
        );
        match kind {
            "warm" => out.warm.merge(series),
            "cold" => out.cold.merge(series),
            _ => out.flood.merge(series),
        }
    }
    out.flood_rps = flood_requests as f64 / flood_seconds.max(0.001);
    out.flood_expected_share = flood_answered as f64 / flood_requests.max(1) as f64;
    sim.shutdown().await;
    Ok(out)
}

/// Cluster mode's figures ([`crate::cluster`]): the shipped cluster
/// defaults, the request budget at its maximum as in `activation`.
async fn cluster(ctx: &mut Ctx<'_>) -> Result<crate::cluster::ClusterFigures> {
    let mut config = genesys_config();
    config["genesys"]["limits"]["requests_per_minute"] = json!(300);
    config["genesys"]["limits"]["burst"] = json!(300);
    config["cluster"] = json!({"etcd_cluster": "etcd", "replica_id_env": "EMR_REPLICA_ID"});
    let setup = crate::cluster::Setup {
        envoy: &ctx.opts.envoy,
        wasm: &ctx.opts.wasm,
        root: &ctx.opts.root,
        config,
        env: env(),
        scratch: ctx.scratch.join("cluster"),
        token: TOKEN,
        quick: ctx.opts.quick,
    };
    let figures = crate::cluster::run(&setup).await?;
    eprintln!(
        "cluster: activation from a follower p50 {:.0} ms p99 {:.0} ms; failover p50 {:.0} ms p99 {:.0} ms over {} kills; intake at {}/s p99 {:.1} ms; etcd idle {:.0} rps empty, {:.0} rps with {} events",
        figures.follower.on_ms.p50,
        figures.follower.on_ms.p99,
        figures.failover_ms.p50,
        figures.failover_ms.p99,
        figures.kills,
        figures.intake_rate,
        figures.intake.p99_us as f64 / 1000.0,
        figures.idle_etcd_rps_empty,
        figures.idle_etcd_rps_stored,
        figures.stored_events
    );
    Ok(figures)
}

/// Envoy's RSS before and after `target` unique webhooks (2 workers).
fn memory(ctx: &mut Ctx, measured_rps: f64, skipped: &mut Vec<String>) -> Result<Memory> {
    let workers = 2;
    let envoy = Envoy::start(&ctx.spec(Kind::Edge, workers, server_cpus(workers), "memory"))?;
    let target = ctx.opts.unique_target;
    // Leave time for the report; say so if the full count cannot fit.
    let left = ctx.left().saturating_sub(Duration::from_secs(10));
    let can = (measured_rps * left.as_secs_f64() * 0.9) as u64;
    let target = if can < target {
        skipped.push(format!(
            "memory: {target} unique webhooks would not fit the time left ({:.0} s at {measured_rps:.0} req/s); sent {can}",
            left.as_secs_f64()
        ));
        can
    } else {
        target
    };
    std::thread::sleep(Duration::from_millis(500));
    let idle = envoy.rss_kib();
    let started = Instant::now();
    let scratch = ctx.scratch.clone();
    let sampling = std::sync::atomic::AtomicBool::new(true);
    let (peaks, halves) = std::thread::scope(|scope| -> Result<((u64, u64), Halves)> {
        let sampler = scope.spawn(|| sample_backlog(&envoy, &sampling));
        let flooded = flood_in_halves(ctx, &envoy, target, measured_rps, &scratch);
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let peaks = sampler.join().unwrap_or_default();
        flooded.map(|h| (peaks, h))
    })?;
    let Halves {
        half_kib,
        accepted_half,
        unexpected,
    } = halves;
    let seconds = started.elapsed().as_secs_f64();
    let accepted = envoy.counter("emr.intake.accepted");
    let full_kib = envoy.rss_kib();
    eprintln!(
        "memory: idle {idle} KiB, {accepted_half} → {half_kib} KiB, {accepted} → {full_kib} KiB in {seconds:.0} s; peak backlog {} events, peak RSS {} KiB",
        peaks.0, peaks.1
    );
    Ok(Memory {
        workers,
        idle_kib: idle,
        half_kib,
        full_kib,
        accepted_half,
        accepted,
        rate_rps: accepted as f64 / seconds.max(0.001),
        seconds,
        note: String::new(),
        peak_backlog: peaks.0,
        peak_kib: peaks.1,
        unexpected,
    })
}

/// Samples the queue's backlog and RSS until `on` goes false; returns the
/// peaks (events, KiB).
fn sample_backlog(envoy: &Envoy, on: &std::sync::atomic::AtomicBool) -> (u64, u64) {
    let (mut backlog, mut rss) = (0, 0);
    while on.load(std::sync::atomic::Ordering::Relaxed) {
        // Processed first: read the other way round a burst between the
        // two reads would show as backlog.
        let processed = envoy.counter("emr.service.events");
        let accepted = envoy.counter("emr.intake.accepted");
        backlog = backlog.max(accepted.saturating_sub(processed));
        rss = rss.max(envoy.rss_kib());
        std::thread::sleep(Duration::from_millis(250));
    }
    (backlog, rss)
}

/// What [`flood_in_halves`] read.
#[derive(Default)]
struct Halves {
    /// RSS after the first half, and the events accepted by then.
    half_kib: u64,
    accepted_half: u64,
    /// Answers other than 2xx over both halves.
    unexpected: u64,
}

/// Sends unique webhooks until `target` are accepted, in two halves (the
/// second shows whether memory still grows).
fn flood_in_halves(
    ctx: &mut Ctx,
    envoy: &Envoy,
    target: u64,
    measured_rps: f64,
    scratch: &std::path::Path,
) -> Result<Halves> {
    let mut out = Halves::default();
    for (i, goal) in [target / 2, target].into_iter().enumerate() {
        for _ in 0..4 {
            let have = envoy.counter("emr.intake.accepted");
            if have >= goal {
                break;
            }
            let secs = (((goal - have) as f64 / measured_rps.max(1.0)) * 1.05).ceil() as u32;
            let prefix = ctx.prefix(&format!("mem-{i}"));
            let r = wrk::Run {
                workload: Workload::Unique,
                port: envoy.listen_port,
                connections: 32,
                seconds: secs.clamp(1, 400),
                cpus: LOADGEN_CPUS,
                prefix,
                token: TOKEN,
                scratch,
            }
            .run()?;
            out.unexpected += r.status;
            // Refusals are not what this phase measures, and would send it
            // on flooding until its time budget ran out.
            if r.status > r.requests / 100 {
                bail!(
                    "{} of {} answers were 4xx/5xx (429: a share of the open incidents used up; \
                     503: the backlog bound), not the recorded events this phase measures",
                    r.status,
                    r.requests
                );
            }
        }
        // Let the service drain its queue before reading memory.
        std::thread::sleep(Duration::from_secs(1));
        if i == 0 {
            out.half_kib = envoy.rss_kib();
            out.accepted_half = envoy.counter("emr.intake.accepted");
        }
    }
    Ok(out)
}
