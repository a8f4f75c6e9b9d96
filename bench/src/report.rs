//! The report: the table printed at the end of a run, and `RESULTS.md` (the
//! machine, the versions, the date, every figure with its spread, the goals).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::run::{FixedRate, Results, Throughput};
use crate::stats::Repeated;

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if s.is_empty() {
                s = String::from_utf8_lossy(&o.stderr).trim().to_owned();
            }
            s
        })
        .unwrap_or_default()
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn machine(envoy: &Path, root: &Path) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default();
    let envoy_version = sh(&envoy.display().to_string(), &["--version"]);
    let envoy_version = envoy_version
        .lines()
        .find(|l| l.contains("version"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let root_s = root.display().to_string();
    let rev = sh("git", &["-C", &root_s, "rev-parse", "--short", "HEAD"]);
    let dirty = !sh(
        "git",
        &[
            "-C",
            &root_s,
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "src",
            "core/src",
            "Cargo.toml",
        ],
    )
    .is_empty();
    json!({
        "nproc": sh("nproc", &["--all"]),
        "cpu": cpu,
        "memory": mem,
        "kernel": sh("uname", &["-r"]),
        "envoy": envoy_version,
        "rustc": sh("rustc", &["-V"]),
        "wrk": sh("wrk", &["--version"]).lines().next().unwrap_or_default().to_owned(),
        "git": if dirty { format!("{rev} (+ uncommitted changes in src/, core/src/)") } else { rev },
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "load_before": loadavg(),
    })
}

fn rate(r: &Repeated) -> String {
    format!(
        "{:.0} ({:.0}–{:.0}, ±{:.0}%)",
        r.median,
        r.min,
        r.max,
        r.spread_pct()
    )
}

fn find<'a>(
    res: &'a Results,
    target: &str,
    workload: &str,
    workers: u32,
) -> Option<&'a Throughput> {
    res.throughput
        .iter()
        .find(|t| t.target == target && t.workload == workload && t.workers == workers)
}

fn fixed<'a>(res: &'a Results, target: &str, workers: u32) -> Option<&'a FixedRate> {
    res.fixed_rate
        .iter()
        .find(|t| t.target == target && t.workers == workers)
}

fn ratio(a: Option<&Throughput>, b: Option<&Throughput>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.rps.median > 0.0 => Some(a.rps.median / b.rps.median),
        _ => None,
    }
}

/// How many more requests a CPU-second serves through `b` than through
/// `a`: `a`'s CPU per request ÷ `b`'s.
fn cpu_ratio(a: Option<&Throughput>, b: Option<&Throughput>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.cpu_us.median > 0.0 => Some(a.cpu_us.median / b.cpu_us.median),
        _ => None,
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{r:.2}×"))
}

/// Added p99 of emr-edge over the ceiling at the fixed rate, µs.
fn added_p99(res: &Results, workers: u32) -> Option<f64> {
    Some(
        fixed(res, "emr-edge", workers)?.p99_us.median
            - fixed(res, "ceiling", workers)?.p99_us.median,
    )
}

/// The result tables (printed, and the heart of RESULTS.md).
pub fn table(res: &Results) -> String {
    let mut s = String::new();
    let rows: [(&str, &str, &str); 8] = [
        (
            "ceiling",
            "unique",
            "ceiling: `direct_response` + buffer filter",
        ),
        (
            "floor",
            "unique",
            "floor: do-nothing wasm filter (`bench/floor`) answering 202",
        ),
        (
            "floor-read",
            "unique",
            "floor + reads every header and the body",
        ),
        (
            "emr-edge",
            "unique",
            "emr-edge: unique resolutions → 202, recorded",
        ),
        (
            "emr-edge",
            "duplicate",
            "emr-edge: duplicates → replay (202)",
        ),
        ("emr-edge", "invalid", "emr-edge: contract violation → 422"),
        ("emr-edge", "unauth", "emr-edge: no token → 401"),
        (
            "alternative",
            "unique",
            "alternative: Envoy → webhook service, unique → 202",
        ),
    ];
    let _ = writeln!(
        s,
        "### Throughput (req/s, median (min–max) of {} runs; ratio to the ceiling)\n",
        res.throughput.first().map_or(0, |t| t.rps.runs.len())
    );
    let _ = writeln!(
        s,
        "| workload | 1 worker | ÷ ceiling | 2 workers | ÷ ceiling | answered as expected |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for (target, workload, label) in rows {
        let mut cells = Vec::new();
        let mut shares = Vec::new();
        for w in [1, 2] {
            let t = find(res, target, workload, w);
            cells.push(t.map_or("–".into(), |t| rate(&t.rps)));
            cells.push(fmt_ratio(ratio(t, find(res, "ceiling", "unique", w))));
            if let Some(t) = t {
                shares.push(format!("{:.1}%", t.expected_share.min * 100.0));
            }
        }
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} | {} | ≥ {} |",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            shares.join(" / ")
        );
    }
    let _ = writeln!(
        s,
        "| **emr-edge ÷ alternative** (unique) | {} | | {} | | |",
        fmt_ratio(ratio(
            find(res, "emr-edge", "unique", 1),
            find(res, "alternative", "unique", 1)
        )),
        fmt_ratio(ratio(
            find(res, "emr-edge", "unique", 2),
            find(res, "alternative", "unique", 2)
        )),
    );
    let _ = writeln!(
        s,
        "\n### Server CPU per request (µs, median (min–max) of the same runs)\n"
    );
    let _ = writeln!(s, "Envoy's user + system CPU time (and, for the alternative, its webhook service's) over each run, divided by the requests served. Unlike req/s this barely moves with the machine's load, and its inverse is the capacity of a dedicated core: the `÷` columns are ceiling CPU ÷ this CPU, the throughput ratio a quiet machine would show. `main` is Envoy's main thread, where the emr-edge service consumes the queue.\n");
    let _ = writeln!(
        s,
        "| workload | 1 worker | (main) | ÷ | 2 workers | (main) | ÷ |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (target, workload, label) in rows {
        let mut cells = Vec::new();
        for w in [1, 2] {
            let t = find(res, target, workload, w);
            let c = find(res, "ceiling", "unique", w);
            cells.push(t.map_or("–".into(), |t| rate(&t.cpu_us)));
            cells.push(t.map_or("–".into(), |t| format!("{:.0}", t.main_cpu_us.median)));
            cells.push(fmt_ratio(cpu_ratio(c, t)));
        }
        let _ = writeln!(s, "| {label} | {} |", cells.join(" | "));
    }
    let _ = writeln!(
        s,
        "| **emr-edge ÷ alternative** (CPU, unique) | {} | | | {} | | |",
        fmt_ratio(cpu_ratio(
            find(res, "alternative", "unique", 1),
            find(res, "emr-edge", "unique", 1)
        )),
        fmt_ratio(cpu_ratio(
            find(res, "alternative", "unique", 2),
            find(res, "emr-edge", "unique", 2)
        )),
    );

    let _ = writeln!(
        s,
        "\nwrk's latency at saturation (32 connections), p50 / p99 µs, median of runs:\n"
    );
    let _ = writeln!(s, "| workload | 1 worker | 2 workers |");
    let _ = writeln!(s, "| --- | ---: | ---: |");
    for (target, workload, label) in rows {
        let cell = |w| {
            find(res, target, workload, w).map_or("–".into(), |t| {
                format!("{:.0} / {:.0}", t.p50_us.median, t.p99_us.median)
            })
        };
        let _ = writeln!(s, "| {label} | {} | {} |", cell(1), cell(2));
    }

    let rate_rps = res.fixed_rate.first().map_or(0, |f| f.rate);
    let _ = writeln!(s, "\n### Latency at a fixed {rate_rps} req/s (8 connections, unique resolutions; µs, median (min–max) of runs)\n");
    let _ = writeln!(
        s,
        "| target | 1 worker p50 | 1 worker p99 | 2 workers p50 | 2 workers p99 |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: |");
    for (target, label) in [
        ("ceiling", "ceiling"),
        ("emr-edge", "emr-edge"),
        ("alternative", "alternative"),
    ] {
        let cell = |w, p99: bool| {
            fixed(res, target, w).map_or("–".into(), |f| {
                rate(if p99 { &f.p99_us } else { &f.p50_us })
            })
        };
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} | {} |",
            cell(1, false),
            cell(1, true),
            cell(2, false),
            cell(2, true)
        );
    }
    let _ = writeln!(
        s,
        "| **added by emr-edge (p99 − ceiling p99)** | | {} | | {} |",
        added_p99(res, 1).map_or("–".into(), |v| format!("{v:.0}")),
        added_p99(res, 2).map_or("–".into(), |v| format!("{v:.0}")),
    );

    service(&mut s, res);

    let a = &res.activation;
    let _ = writeln!(s, "\n### Activation latency: webhook sent → simulator receives the group `PUT` (ms, ±1; {} worker; request budget at its maximum, 300/min and burst 300, and a fresh Envoy per series, so every probe fits the burst)\n", a.workers);
    let _ = writeln!(
        s,
        "| series | incidents (Envoys) | on p50 | on p90 | on p99 | on max | off p50 | off p99 | missed |"
    );
    let _ = writeln!(
        s,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (label, series) in [
        ("token warm", &a.warm),
        ("token cold (revoked → 401 → login → retry)", &a.cold),
        (
            &*format!(
                "warm, intake flooded ({:.0} req/s of junk and replays)",
                a.flood_rps
            ),
            &a.flood,
        ),
    ] {
        let _ = writeln!(
            s,
            "| {label} | {} ({}) | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            series.incidents,
            series.envoys,
            series.on_ms.p50,
            series.on_ms.p90,
            series.on_ms.p99,
            series.on_ms.max,
            series.off_ms.p50,
            series.off_ms.p99,
            series.missed
        );
    }

    let m = &res.memory;
    let _ = writeln!(s, "\n### Memory (Envoy RSS, {} workers)\n", m.workers);
    let _ = writeln!(
        s,
        "| idle | after {} unique | after {} unique | growth | rate |",
        m.accepted_half, m.accepted
    );
    let _ = writeln!(s, "| ---: | ---: | ---: | ---: | ---: |");
    let _ = writeln!(
        s,
        "| {:.1} MiB | {:.1} MiB | {:.1} MiB | {:+.1} MiB (second half {:+.1} MiB) | {:.0} req/s over {:.0} s |",
        m.idle_kib as f64 / 1024.0,
        m.half_kib as f64 / 1024.0,
        m.full_kib as f64 / 1024.0,
        (m.full_kib as f64 - m.idle_kib as f64) / 1024.0,
        (m.full_kib as f64 - m.half_kib as f64) / 1024.0,
        m.rate_rps,
        m.seconds
    );
    if m.unexpected > 0 {
        let _ = writeln!(
            s,
            "\n{} answers of the flood were not 2xx (429 or 503): not recorded by the service.",
            m.unexpected
        );
    }
    if m.peak_kib > 0 {
        let _ = writeln!(
            s,
            "\nDuring the flood (sampled every 250 ms): peak RSS {:.1} MiB; peak backlog {} events accepted by the intake and not yet recorded by the service.",
            m.peak_kib as f64 / 1024.0,
            m.peak_backlog
        );
    }

    if let Some(c) = &res.cluster {
        cluster(&mut s, c);
    }

    let st = &res.start;
    let _ = writeln!(s, "\n### Start\n");
    let _ = writeln!(s, "| `.wasm` | spawn → `/ready`, with emr-edge | the same Envoy without it (ceiling config) |");
    let _ = writeln!(s, "| ---: | ---: | ---: |");
    let _ = writeln!(
        s,
        "| {} bytes ({:.0} KiB) | {:.0} ms ({:.0}–{:.0}) | {:.0} ms ({:.0}–{:.0}) |",
        st.wasm_bytes,
        st.wasm_bytes as f64 / 1024.0,
        st.ready_edge_ms.median,
        st.ready_edge_ms.min,
        st.ready_edge_ms.max,
        st.ready_ceiling_ms.median,
        st.ready_ceiling_ms.min,
        st.ready_ceiling_ms.max
    );
    let _ = writeln!(s, "\n### Goals\n\n{}", goals(res));
    s
}

/// The `service` phase's table, if it ran.
fn service(s: &mut String, res: &Results) {
    let Some(first) = res.service.first() else {
        return;
    };
    let small = res
        .service
        .iter()
        .find(|f| f.ledger == "small")
        .map(|f| f.us_per_event.median);
    let _ = writeln!(
        s,
        "\n### The service's time per event, natively (µs per event, median (min–max) of {} runs)\n",
        first.us_per_event.runs.len()
    );
    let _ = writeln!(s, "What the singleton does per queued event, compiled natively and run in `emr-bench` (`core::service_time`): no V8 and no host calls, the status store in memory. Per event: decode, ledger, status-board mark, audit line; per batch of events (a reconcile-like step): the dirty status buckets published, the group's desired state, its data-table row's columns and the persisted-incident document built. Not included: Envoy's host calls (queue, shared data, logs, counters) and the Genesys calls themselves. Each pair of timed events resolves the oldest open incident and opens a new one, all in one group, so the ledger stays as full as it started. In Envoy the same work runs in V8, which ran the service's logic ~1.5× slower than native when last compared (NOTES, part 3).\n");
    let _ = writeln!(
        s,
        "| ledger | open incidents | queues × characters each | events per batch | µs per event | ÷ small |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for f in &res.service {
        let label = match f.ledger.as_str() {
            "small" => "small, the same incident shape",
            "full" => "**full: hostile senders #1**",
            "full-short-queues" => "full, short queues",
            other => other,
        };
        let _ = writeln!(
            s,
            "| {label} | {} | {} × {} | {} | {:.1} ({:.1}–{:.1}, ±{:.0}%) | {} |",
            f.shape.open,
            f.shape.queues,
            f.shape.queue_len,
            f.shape.batch,
            f.us_per_event.median,
            f.us_per_event.min,
            f.us_per_event.max,
            f.us_per_event.spread_pct(),
            small.filter(|v| *v > 0.0).map_or("–".into(), |v| format!(
                "{:.2}×",
                f.us_per_event.median / v
            ))
        );
    }
}

/// The `cluster` phase's table.
fn cluster(s: &mut String, c: &crate::cluster::ClusterFigures) {
    let _ = writeln!(
        s,
        "\n### Cluster mode: {} replicas on a {}-member etcd (fsync on), lease {} s, poll {} ms\n",
        c.replicas, c.members, c.lease_ttl_s, c.poll_ms
    );
    let _ = writeln!(s, "| figure | p50 | p90 | p99 | max | samples |");
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, p) in [
        (
            "activation at a follower → group `PUT` on (ms)",
            &c.follower.on_ms,
        ),
        (
            "resolution at a follower → group `PUT` off (ms)",
            &c.follower.off_ms,
        ),
        (
            "leader `kill -9` → the new leader's first Genesys call (ms)",
            &c.failover_ms,
        ),
    ] {
        let _ = writeln!(
            s,
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            p.p50, p.p90, p.p99, p.max, p.count
        );
    }
    let i = &c.intake;
    let _ = writeln!(
        s,
        "\nIntake at {} unique resolutions a second for one replica (each committed to etcd before its `202`; 16 connections): achieved {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, {} answers other than 202.",
        c.intake_rate,
        i.achieved_rps,
        i.p50_us as f64 / 1000.0,
        i.p99_us as f64 / 1000.0,
        i.p999_us as f64 / 1000.0,
        i.unexpected
    );
    let _ = writeln!(
        s,
        "\netcd at idle (all members, requests a second): {:.1} with the log empty, {:.1} with {} events stored. Probes missed: {}; kills with no call within 15 s: {}.",
        c.idle_etcd_rps_empty,
        c.idle_etcd_rps_stored,
        c.stored_events,
        c.follower.missed,
        c.failover_missed
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**short**"
    }
}

fn goals(res: &Results) -> String {
    let mut s = String::from("| goal | measured | |\n| --- | --- | --- |\n");
    for w in [1, 2] {
        if let Some(r) = ratio(
            find(res, "emr-edge", "unique", w),
            find(res, "ceiling", "unique", w),
        ) {
            let _ = writeln!(
                s,
                "| intake ≥ 0.8 × ceiling, {w} worker(s) | {r:.2}× | {} |",
                verdict(r >= 0.8)
            );
        }
    }
    for w in [1, 2] {
        let r = cpu_ratio(
            find(res, "ceiling", "unique", w),
            find(res, "emr-edge", "unique", w),
        );
        if let Some(r) = r {
            let _ = writeln!(
                s,
                "| the same by server CPU per request, {w} worker(s) | {r:.2}× | {} |",
                verdict(r >= 0.8)
            );
        }
    }
    for w in [1, 2] {
        if let Some(v) = added_p99(res, w) {
            let _ = writeln!(
                s,
                "| added p99 ≤ 1 ms, {w} worker(s) | {:.2} ms | {} |",
                v / 1000.0,
                verdict(v <= 1000.0)
            );
        }
    }
    for w in [1, 2] {
        if let Some(r) = ratio(
            find(res, "emr-edge", "unique", w),
            find(res, "alternative", "unique", w),
        ) {
            let _ = writeln!(
                s,
                "| ≥ 1.5 × the alternative, {w} worker(s) | {r:.2}× | {} |",
                verdict(r >= 1.5)
            );
        }
        let r = cpu_ratio(
            find(res, "alternative", "unique", w),
            find(res, "emr-edge", "unique", w),
        );
        if let Some(r) = r {
            let _ = writeln!(
                s,
                "| the same by server CPU per request, {w} worker(s) | {r:.2}× | {} |",
                verdict(r >= 1.5)
            );
        }
    }
    // A phase left out (`--phases`) has no row, like a target left out.
    let a = &res.activation;
    if a.warm.incidents > 0 {
        let _ = writeln!(
            s,
            "| activation p99 ≤ 10 ms, token warm | {:.0} ms | {} |",
            a.warm.on_ms.p99,
            verdict(a.warm.on_ms.p99 <= 10.0 && a.warm.missed == 0)
        );
    }
    if a.flood.incidents > 0 {
        let _ = writeln!(
            s,
            "| activation p99 ≤ 100 ms under flood | {:.0} ms | {} |",
            a.flood.on_ms.p99,
            verdict(a.flood.on_ms.p99 <= 100.0 && a.flood.missed == 0)
        );
    }
    let m = &res.memory;
    if m.accepted > 0 {
        let growth = m.full_kib.saturating_sub(m.idle_kib);
        let _ = writeln!(
            s,
            "| RSS growth ≤ 8 MB after 1,000,000 unique | {:.1} MB after {} | {} |",
            growth as f64 * 1024.0 / 1e6,
            m.accepted,
            verdict(growth * 1024 <= 8_000_000 && m.accepted >= 1_000_000)
        );
    }
    if let Some(c) = &res.cluster {
        let _ = writeln!(
            s,
            "| cluster: activation p99 ≤ 100 ms from a follower | {:.0} ms | {} |",
            c.follower.on_ms.p99,
            verdict(c.follower.on_ms.p99 <= 100.0 && c.follower.missed == 0)
        );
        let _ = writeln!(
            s,
            "| cluster: failover p99 ≤ 5 s over ≥ 20 kills | {:.1} s over {} | {} |",
            c.failover_ms.p99 / 1000.0,
            c.kills,
            verdict(c.failover_ms.p99 <= 5000.0 && c.kills >= 20 && c.failover_missed == 0)
        );
        let _ = writeln!(
            s,
            "| cluster: intake ≥ 1,000/s on one replica, 202 p99 ≤ 25 ms | {:.0}/s, p99 {:.1} ms | {} |",
            c.intake.achieved_rps,
            c.intake.p99_us as f64 / 1000.0,
            verdict(
                c.intake.achieved_rps >= 0.98 * f64::from(c.intake_rate)
                    && c.intake.p99_us <= 25_000
                    && c.intake.unexpected == 0
            )
        );
        let _ = writeln!(
            s,
            "| cluster: etcd at idle bounded, not growing with stored events | {:.1} → {:.1} rps ({} events) | {} |",
            c.idle_etcd_rps_empty,
            c.idle_etcd_rps_stored,
            c.stored_events,
            verdict(c.idle_etcd_rps_stored <= c.idle_etcd_rps_empty * 1.2 + 1.0)
        );
    }
    let st = &res.start;
    if st.wasm_bytes > 0 {
        let _ = writeln!(
            s,
            "| `.wasm` ≤ 400 KB | {:.0} KB | {} |",
            st.wasm_bytes as f64 / 1000.0,
            verdict(st.wasm_bytes <= 400_000)
        );
        let _ = writeln!(
            s,
            "| `/ready` ≤ 0.5 s | {:.2} s | {} |",
            st.ready_edge_ms.median / 1000.0,
            verdict(st.ready_edge_ms.median <= 500.0)
        );
    }
    s
}

/// Writes `RESULTS.md` for `res` (with the notes in `out/NOTES.md`).
pub fn write(res: &Results, out: &Path) -> anyhow::Result<()> {
    std::fs::write(out.join("RESULTS.md"), markdown(res, out))?;
    Ok(())
}

/// `emr-bench report`: RESULTS.md again from `out/results.json`, after the
/// notes changed.
pub fn rewrite(out: &Path) -> anyhow::Result<()> {
    let res: Results = serde_json::from_str(&std::fs::read_to_string(out.join("results.json"))?)?;
    write(&res, out)?;
    println!("{}", table(&res));
    Ok(())
}

/// `RESULTS.md`: how it was measured, the tables, then the hand-written
/// analysis and optimisation log kept in `bench/NOTES.md`.
pub fn markdown(res: &Results, out: &Path) -> String {
    let m = &res.machine;
    let field = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
    let mut s = String::new();
    let _ = writeln!(s, "# emr-edge benchmark results\n");
    let _ = writeln!(s, "Written by `make bench` (`bench/src/`); raw figures in `bench/results.json`. Do not edit by hand: the analysis is kept in `bench/NOTES.md` and copied below.\n");
    let _ = writeln!(s, "| | |\n| --- | --- |");
    let _ = writeln!(s, "| date | {} |", field("date"));
    let _ = writeln!(
        s,
        "| machine | {} cores (`nproc`), {}, {} RAM, Linux {} |",
        field("nproc"),
        field("cpu"),
        field("memory"),
        field("kernel")
    );
    let _ = writeln!(
        s,
        "| load average (1/5/15 min) | before {}, after {} |",
        field("load_before"),
        field("load_after")
    );
    let _ = writeln!(s, "| Envoy | {} |", field("envoy"));
    let _ = writeln!(s, "| rustc | {} |", field("rustc"));
    let _ = writeln!(s, "| load generator | {}; `emr-bench`'s own (hyper + HdrHistogram) for fixed-rate latency and probes |", field("wrk"));
    let _ = writeln!(s, "| emr-edge | git {} |", field("git"));
    let _ = writeln!(
        s,
        "| run | {}{} |",
        match (m["first_run_s"].as_f64(), m["merged"].as_str()) {
            (Some(first), Some(merged)) => format!(
                "{first:.0} s; then {merged} (`--merge`, {:.0} s)",
                res.elapsed_s
            ),
            _ => format!("{:.0} s", res.elapsed_s),
        },
        if res.quick {
            ", `--quick` (shorter runs: indicative only)"
        } else {
            ""
        }
    );
    let _ = writeln!(s, "| cores | wrk, the probes and the simulator on core 0; 1 worker: Envoy (worker + main thread) and the alternative's service on core 1; 2 workers: the server side on cores 0–1, so it shares core 0 with the load generator |\n");
    for note in &res.skipped {
        let _ = writeln!(s, "> {note}\n");
    }
    s.push_str(&table(res));
    if let Ok(notes) = std::fs::read_to_string(out.join("NOTES.md")) {
        s.push('\n');
        s.push_str(&notes);
    }
    s
}
