//! Cluster mode's figures (issue 15; docs/cluster.md): three replicas of
//! `envoy/cluster.yaml.tmpl` with the shipped defaults, on a three-member
//! etcd (Debian's, fsync on, loopback), driving the simulator.
//!
//! - **activation from a follower**: webhook sent to a replica that does
//!   not lead → the simulator receives the group `PUT` (the leader's), the
//!   same probe as the single-process activation figure;
//! - **failover**: `kill -9` of the leader → the simulator's first request
//!   after it (followers never call Genesys, so it is the new leader's
//!   first call: it reads every group before acting). The killed replica is
//!   started again before the next round, and each round also probes
//!   activations through the new leader, so no leader's request budget runs
//!   out;
//! - **intake**: unique resolutions at a fixed rate to one replica: each is
//!   committed to etcd before its `202`;
//! - **etcd at idle**: requests a second the members handled
//!   (`grpc_server_handled_total`, which counts what the JSON gateway
//!   serves), with the log empty and again with the intake's events stored.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::activation::{self, wall_ms, Probe, Series};
use crate::envoy::{self, free_port, Envoy, Kind, Spec};
use crate::load;
use crate::stats::Percentiles;

/// What the phase measured.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ClusterFigures {
    pub replicas: usize,
    pub members: usize,
    pub lease_ttl_s: u32,
    pub poll_ms: u32,
    /// Webhook at a follower → group `PUT`.
    pub follower: Series,
    /// Leader killed → the new leader's first Genesys call, ms.
    pub failover_ms: Percentiles,
    pub kills: usize,
    /// Kills after which no call came within 15 s.
    pub failover_missed: usize,
    pub intake_rate: u32,
    pub intake: load::Latency,
    /// Keys in etcd's event log after the intake run.
    pub stored_events: u64,
    pub idle_etcd_rps_empty: f64,
    pub idle_etcd_rps_stored: f64,
}

/// etcd members on loopback, killed when dropped.
struct Members {
    children: Vec<Child>,
    pub client_ports: Vec<u16>,
}

impl Members {
    fn start(n: usize, scratch: &Path) -> Result<Members> {
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("b{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let dir = scratch.join(format!("etcd-{i}"));
            std::fs::create_dir_all(&dir)?;
            let log = std::fs::File::create(dir.join("etcd.log"))?;
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            // Not on the load generator's core alone, which this process
            // (and so its children) is pinned to: the server side's cores.
            let child = Command::new("taskset")
                .args(["-c", "0,1", "etcd"])
                .args(["--name", &format!("b{i}")])
                .arg("--data-dir")
                .arg(dir.join("data"))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-token", "emr-bench"])
                .args(["--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting etcd (Debian's etcd-server; `make setup` installs it)")?;
            children.push(child);
        }
        let members = Members {
            children,
            client_ports: ports.iter().map(|(c, _)| *c).collect(),
        };
        for port in &members.client_ports {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !envoy::get(*port, "/health").is_ok_and(|b| b.contains("true")) {
                if Instant::now() > deadline {
                    bail!("etcd on {port} never healthy");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(members)
    }

    /// The requests every member has handled so far.
    fn handled(&self) -> Result<f64> {
        let mut total = 0.0;
        for port in &self.client_ports {
            let metrics = envoy::get(*port, "/metrics")?;
            total += metrics
                .lines()
                .filter(|l| l.starts_with("grpc_server_handled_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
        }
        Ok(total)
    }

    /// Requests a second over `window`, with nothing sent to the replicas.
    fn idle_rps(&self, window: Duration) -> Result<f64> {
        let before = self.handled()?;
        std::thread::sleep(window);
        Ok((self.handled()? - before) / window.as_secs_f64())
    }

    /// Keys under `prefix`, by the first member.
    async fn count(&self, prefix: &[u8]) -> Result<u64> {
        let end = emr_core::etcd::prefix_end(prefix);
        let body = json!({"key": emr_core::etcd::b64(prefix),
                          "range_end": emr_core::etcd::b64(&end), "count_only": true});
        let mut conn = load::Conn::connect(self.client_ports[0]).await?;
        let (_, answer) = conn.post("/v3/kv/range", None, body.to_string()).await?;
        let v: Value = serde_json::from_slice(&answer)?;
        Ok(v["count"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0))
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct Setup<'a> {
    pub envoy: &'a Path,
    pub wasm: &'a Path,
    pub root: &'a Path,
    pub config: Value,
    pub env: Vec<(String, String)>,
    pub scratch: PathBuf,
    pub token: &'a str,
    pub quick: bool,
}

impl Setup<'_> {
    fn replica(&self, id: &str, sim_port: u16, endpoints: &str, round: usize) -> Result<Envoy> {
        let mut env = self.env.clone();
        env.push(("EMR_REPLICA_ID".into(), id.into()));
        Envoy::start(&Spec {
            kind: Kind::Cluster,
            envoy: self.envoy,
            wasm: self.wasm,
            root: self.root,
            config: self.config.clone(),
            concurrency: 1,
            cpus: "0,1",
            sim_port,
            upstream_port: 9,
            env,
            vars: vec![("ETCD_ENDPOINTS", endpoints.to_owned())],
            scratch: self.scratch.join(format!("{id}-{round}")),
        })
    }
}

fn state(envoy: &Envoy) -> Value {
    envoy::get(envoy.listen_port, "/emr/state")
        .ok()
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or(Value::Null)
}

/// The index of the replica that acts, once one does and every replica is
/// ready.
async fn settled(replicas: &[Envoy]) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lead = replicas
            .iter()
            .position(|r| state(r)["cluster"]["acting"] == true);
        let ready = replicas
            .iter()
            .all(|r| envoy::get(r.listen_port, "/emr/ready").is_ok_and(|b| b.contains("ready")));
        if let (Some(lead), true) = (lead, ready) {
            return Ok(lead);
        }
        if Instant::now() > deadline {
            bail!("the cluster never settled (a leader, every replica ready)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(setup: &Setup<'_>) -> Result<ClusterFigures> {
    let sim = emr_sim::Sim::start(emr_sim::SimConfig {
        rate_limit_per_minute: 1_000_000,
        request_log_capacity: 10_000,
        ..emr_sim::SimConfig::default()
    })
    .await?;
    let members = Members::start(3, &setup.scratch)?;
    let endpoints = members
        .client_ports
        .iter()
        .map(|p| {
            format!("{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }} }} }}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let ids = ["replica-1", "replica-2", "replica-3"];
    let mut replicas = Vec::new();
    for id in ids {
        replicas.push(setup.replica(id, sim.addr().port(), &endpoints, 0)?);
    }
    let mut lead = settled(&replicas).await?;
    activation::wait_for_token(&sim, Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_etcd_rps_empty =
        members.idle_rps(Duration::from_secs(if setup.quick { 3 } else { 10 }))?;
    let rounds = if setup.quick { 6 } else { 20 };
    let mut out = ClusterFigures {
        replicas: ids.len(),
        members: 3,
        lease_ttl_s: setup.config["cluster"]["lease_ttl_seconds"]
            .as_u64()
            .unwrap_or(3) as u32,
        poll_ms: setup.config["cluster"]["poll_ms"].as_u64().unwrap_or(50) as u32,
        idle_etcd_rps_empty,
        ..ClusterFigures::default()
    };
    let mut failovers = Vec::new();
    for round in 1..=rounds {
        // Probes at a follower, through the current leader.
        let follower = (lead + 1) % replicas.len();
        let probe = Probe {
            sim: &sim,
            port: replicas[follower].listen_port,
            token: setup.token,
            group: emr_sim::CARRIER_OUTAGE_GROUP_ID,
            prefix: format!("C{}-{round}", std::process::id()),
        };
        out.follower
            .merge(probe.series(5, false, Duration::from_secs(20)).await?);
        // The leader killed: the first call after it is the next leader's.
        // A request the dead one had in flight arrives within milliseconds
        // of the kill, while no other replica can lead before the dead
        // one's lease (seconds) has run out: requests within the first
        // 100 ms are not counted.
        sim.clear_requests();
        let killed_at = wall_ms();
        replicas[lead].kill();
        let counted_from = killed_at + 100.0;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut first = None;
        while first.is_none() && Instant::now() < deadline {
            first = sim
                .requests()
                .iter()
                .map(|r| r.received_ms as f64)
                .filter(|at| *at >= counted_from)
                .reduce(f64::min);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match first {
            Some(at) => failovers.push(at - killed_at),
            None => out.failover_missed += 1,
        }
        out.kills += 1;
        let id = ids[lead];
        replicas[lead] = setup.replica(id, sim.addr().port(), &endpoints, round)?;
        lead = settled(&replicas).await?;
        eprintln!(
            "cluster: round {round}: failover {:.0} ms",
            failovers.last().copied().unwrap_or(f64::NAN)
        );
    }
    out.failover_ms = Percentiles::of(&failovers);
    // The intake, committing each event to etcd before its 202.
    let follower = (lead + 1) % replicas.len();
    out.intake_rate = 1_000;
    out.intake = load::fixed_rate(
        replicas[follower].listen_port,
        out.intake_rate,
        if setup.quick { 4.0 } else { 10.0 },
        16,
        &format!("CI{}", std::process::id()),
        setup.token,
        202,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    out.stored_events = members.count(b"emr/e/").await?;
    out.idle_etcd_rps_stored =
        members.idle_rps(Duration::from_secs(if setup.quick { 3 } else { 10 }))?;
    drop(replicas);
    sim.shutdown().await;
    Ok(out)
}
