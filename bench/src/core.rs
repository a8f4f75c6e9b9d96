//! `emr-bench core`: the intake's pure logic alone, natively, per workload —
//! what `emr_core::intake` costs per request without Envoy or V8 (in-memory
//! store and queue with Envoy's semantics). Used to find and check the
//! optimisations of the intake path; run it under `perf` to see where the
//! time goes.

use std::time::Instant;

use anyhow::{anyhow, Result};
use chrono::Utc;
use emr_core::dedupe::Dedupe;
use emr_core::intake::{HeadersStep, Intake};
use emr_core::store::{MemoryQueue, MemoryStore};

use crate::load::incident;
use crate::run::TOKEN;

/// Builds the `i`-th body of a workload, with this timestamp.
type BodyFn = fn(usize, &str) -> String;

pub fn main(n: usize) -> Result<()> {
    let raw = br#"{"sources":{"canonical":{"auth":[{"kind":"bearer","token_env":"T"}]}}}"#;
    let env = |k: &str| (k == "T").then(|| TOKEN.to_owned());
    let config = emr_core::config::parse(raw, &env).map_err(|e| anyhow!("{e}"))?;
    let store = MemoryStore::new();
    Dedupe::new(config.intake.dedupe)
        .create_keys(&store)
        .map_err(|e| anyhow!("{e:?}"))?;
    let queue = MemoryQueue::default();
    let intake = Intake {
        config: &config,
        store: &store,
        sink: &queue,
    };
    let now = Utc::now();
    let ts = crate::run::rfc3339(now);
    let headers = |auth: bool, len: usize| {
        let mut h = vec![
            (":method".to_owned(), "POST".to_owned()),
            (":path".to_owned(), "/webhooks/canonical".to_owned()),
            (":authority".to_owned(), "127.0.0.1".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
            ("content-length".to_owned(), len.to_string()),
            ("user-agent".to_owned(), "emr-bench".to_owned()),
        ];
        if auth {
            h.push(("authorization".to_owned(), format!("Bearer {TOKEN}")));
        }
        h
    };
    let workloads: [(&str, BodyFn, bool, u16); 4] = [
        // Resolutions: unique activations would be refused (429) past the
        // canonical route's share of the open incidents (`crate::wrk`).
        (
            "unique",
            |i, ts| incident(&format!("CORE-{i}"), "EMERGENCY_RESOLVED", ts),
            true,
            202,
        ),
        (
            "duplicate",
            |_, ts| incident("CORE-DUP", "EMERGENCY_RESOLVED", ts),
            true,
            202,
        ),
        (
            "invalid",
            |i, ts| incident(&format!("CORE-{i}"), "EMERGENCY_ACTIVE", ts).replace("3600", "5"),
            true,
            422,
        ),
        (
            "unauth",
            |i, ts| incident(&format!("CORE-{i}"), "EMERGENCY_ACTIVE", ts),
            false,
            401,
        ),
    ];
    for (name, body, auth, want) in workloads {
        // Five rounds of n/5 requests; the fastest round is reported, which
        // is the figure least disturbed by whatever else the machine runs.
        let round = (n / 5).max(1);
        let mut best = f64::MAX;
        let mut wrong = 0usize;
        for r in 0..5 {
            let bodies: Vec<String> = (r * round..(r + 1) * round).map(|i| body(i, &ts)).collect();
            let started = Instant::now();
            wrong += requests(&intake, &queue, &bodies, &headers, auth, want, now);
            best = best.min(started.elapsed().as_nanos() as f64 / round as f64);
        }
        println!("{name:<10} {best:>8.0} ns/request  ({wrong} unexpected)");
    }
    Ok(())
}

/// Sends `bodies` through the intake; returns how many got another status.
fn requests(
    intake: &Intake,
    queue: &MemoryQueue,
    bodies: &[String],
    headers: &dyn Fn(bool, usize) -> Vec<(String, String)>,
    auth: bool,
    want: u16,
    now: chrono::DateTime<Utc>,
) -> usize {
    let mut wrong = 0usize;
    for (i, b) in bodies.iter().enumerate() {
        let h = headers(auth, b.len());
        let step = intake.on_headers("POST", "/webhooks/canonical", &h, false, now);
        let status = match step.value {
            HeadersStep::ReadBody(source) => {
                intake
                    .on_body(source, &h, b.as_bytes(), now)
                    .ready()
                    .unwrap()
                    .value
                    .status
            }
            HeadersStep::Respond(r) => r.status,
            HeadersStep::PassThrough => 0,
        };
        if status != want {
            wrong += 1;
        }
        if i % 10_000 == 0 {
            queue.messages.borrow_mut().clear();
        }
    }
    wrong
}

/// `emr-bench core --service`: what the singleton does per queued event,
/// natively and without host calls, stage by stage (each line adds one
/// stage to the one above): decode, ledger and board marks, the audit line,
/// and publishing the dirty status buckets every `publish_every` events.
pub fn service(n: usize, publish_every: usize) -> Result<()> {
    use emr_core::event::{GroupId, QueueMessage};
    use emr_core::ledger::Ledger;
    use emr_core::status::{self, Board};

    let now = Utc::now();
    let ts = crate::run::rfc3339(now);
    let rules = emr_core::contract::ContractRules::default();
    let messages: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            // Resolutions, as the Envoy workloads send (`crate::wrk`): past
            // 1,000 unique activations the ledger would refuse the rest
            // (`REFUSED`), a path the intake's shares now keep it from.
            queued(
                &incident(&format!("SVC-{i}"), "EMERGENCY_RESOLVED", &ts),
                now,
                &rules,
            )
        })
        .collect::<Result<_>>()?;
    let group = GroupId::parse("default").map_err(|e| anyhow!("{}", e.0))?;
    for stage in 0..4 {
        let store = MemoryStore::new();
        status::create_keys(&store).map_err(|e| anyhow!("{e:?}"))?;
        let mut ledger = Ledger::default();
        let mut board = Board::default();
        let mut sink = 0usize;
        let mut written = 0usize;
        let started = Instant::now();
        for (i, m) in messages.iter().enumerate() {
            let Ok(QueueMessage::Event(q)) = QueueMessage::decode(m) else {
                return Err(anyhow!("undecodable"));
            };
            if stage >= 1 {
                let applied = ledger.apply(&q, group.clone(), now);
                board.mark(&q.event.incident_key());
                for key in ledger.take_dropped() {
                    board.forget(&key);
                }
                if stage >= 2 {
                    let line = applied.audit_line(&q, &group, now).to_string();
                    sink += line.len();
                }
                if stage >= 3 && i % publish_every == 0 {
                    // The service sweeps removals once a second: at
                    // ~5,000 events a second, every 50th publish.
                    if i % (publish_every * 50) == 0 {
                        board.start_sweep();
                    }
                    written += board
                        .publish_swept(&ledger, &store, 64)
                        .map_err(|e| anyhow!("{e:?}"))?;
                }
            }
        }
        let ns = started.elapsed().as_nanos() as f64 / n as f64;
        let what = [
            "decode",
            "+ ledger, board marks",
            "+ audit line",
            "+ publish",
        ];
        println!(
            "{:<24} {ns:>8.0} ns/event  ({} incidents, {sink} audit bytes, {written} buckets written, {} bytes published)",
            what.get(stage).unwrap_or(&""),
            ledger.len(),
            store.bytes()
        );
    }
    Ok(())
}

/// The incidents a [`service_time`] measurement starts from, and its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LedgerShape {
    /// Open incidents in the ledger, all in one group, before and during
    /// the timed events.
    pub open: usize,
    /// Queues per incident, each named apart from every other incident's.
    pub queues: usize,
    /// Characters per queue id.
    pub queue_len: usize,
    /// Timed events: half resolve an open incident, half open a new one.
    pub events: usize,
    /// Events per reconcile-like step (publish, desired state, row,
    /// persisted incidents).
    pub batch: usize,
}

/// What one [`service_time`] measurement found.
#[derive(Debug, Clone, Copy)]
pub struct ServiceTime {
    pub us_per_event: f64,
    /// Open incidents after the timed events: `shape.open` when the
    /// ledger stayed as full as it was meant to.
    pub open_after: usize,
    /// The group's distinct queues after them.
    pub queues_total: usize,
    /// Bytes built (audit lines, row columns, persisted incidents): kept so
    /// the optimiser cannot drop the work.
    pub bytes_built: usize,
}

/// `emr-bench core --full-ledger`: [`service_time`] printed, for profiling
/// with `perf`.
pub fn full_ledger(shape: LedgerShape) -> Result<()> {
    let t = service_time(shape)?;
    println!(
        "{} open x {} queues of {} chars: {:.1} us/event \
         ({} open after, {} distinct queues, {} bytes built)",
        shape.open,
        shape.queues,
        shape.queue_len,
        t.us_per_event,
        t.open_after,
        t.queues_total,
        t.bytes_built
    );
    Ok(())
}

/// What the singleton does per queued event when its ledger holds
/// `shape.open` open incidents of `shape.queues` queues of
/// `shape.queue_len` characters each, in one group (RELIABILITY.md's hostile senders, #1:
/// 1,000 × 50 × 128), natively — no V8, no host calls (the status store is
/// in memory): decode, ledger, board mark, audit line, then once per
/// `shape.batch` events the dirty status buckets published and, as a
/// reconcile does, the group's desired state, its data-table row's columns
/// and the persisted-incident document built. Each pair of timed events
/// resolves the oldest open incident and opens a new one, so the ledger
/// stays as full as it started.
pub fn service_time(shape: LedgerShape) -> Result<ServiceTime> {
    use emr_core::event::{GroupId, QueueMessage};
    use emr_core::ledger::{Ledger, Retention};
    use emr_core::status::{self, Board};

    let LedgerShape {
        open,
        queues,
        queue_len,
        events,
        batch,
    } = shape;
    if open == 0 || batch == 0 || events == 0 {
        // With nothing open the first resolution would find no incident and
        // the next activation would tie with it: not the path measured.
        return Err(anyhow!("--open, --batch and --n must be at least 1"));
    }
    let now = Utc::now();
    let ts = crate::run::rfc3339(now);
    let rules = emr_core::contract::ContractRules::default();
    // Incident `k`'s queues are its own: the group's distinct queues grow
    // with the ledger, as an attacker's would.
    let body = |k: usize, mode: &str| {
        let list = if mode == "EMERGENCY_ACTIVE" {
            let qs: Vec<String> = (0..queues)
                .map(|j| {
                    let q = format!("{k:06}-{j:03}-");
                    format!(
                        "\"{q}{}\"",
                        "q".repeat(queue_len.saturating_sub(q.len()).max(1))
                    )
                })
                .collect();
            format!(r#""targetQueueIds":[{}],"#, qs.join(","))
        } else {
            String::new()
        };
        format!(
            r#"{{"correlationId":"FULL-{k}","incidentType":"CARRIER_OUTAGE",{list}"routingMode":"{mode}","timestamp":"{ts}","ttl":86400}}"#
        )
    };
    let message = |k: usize, mode: &str| queued(&body(k, mode), now, &rules);
    let group = GroupId::parse("default").map_err(|e| anyhow!("{}", e.0))?;
    let store = MemoryStore::new();
    status::create_keys(&store).map_err(|e| anyhow!("{e:?}"))?;
    // Room for the ledger's own bound to stay out of the way: the intake's
    // shares keep a real ledger below it.
    let mut ledger = Ledger::new(Retention {
        max_open: open + 64,
        ..Retention::default()
    });
    let mut board = Board::default();
    let apply = |ledger: &mut Ledger, board: &mut Board, m: &[u8]| -> Result<usize> {
        let Ok(QueueMessage::Event(q)) = QueueMessage::decode(m) else {
            return Err(anyhow!("undecodable"));
        };
        let applied = ledger.apply(&q, group.clone(), now);
        board.mark(&q.event.incident_key());
        for key in ledger.take_dropped() {
            board.forget(&key);
        }
        Ok(applied.audit_line(&q, &group, now).to_string().len())
    };
    for k in 0..open {
        apply(&mut ledger, &mut board, &message(k, "EMERGENCY_ACTIVE")?)?;
    }
    board
        .publish(&ledger, &store)
        .map_err(|e| anyhow!("{e:?}"))?;
    // The timed events, built beforehand: pair `j` resolves incident `j`
    // (the oldest still open) and opens incident `open + j`.
    let messages: Vec<Vec<u8>> = (0..events)
        .map(|i| {
            let j = i / 2;
            if i % 2 == 0 {
                message(j, "EMERGENCY_RESOLVED")
            } else {
                message(open + j, "EMERGENCY_ACTIVE")
            }
        })
        .collect::<Result<_>>()?;
    let mut sink = 0usize;
    let started = Instant::now();
    for (i, m) in messages.iter().enumerate() {
        sink += apply(&mut ledger, &mut board, m)?;
        if i % batch == batch - 1 {
            board
                .publish(&ledger, &store)
                .map_err(|e| anyhow!("{e:?}"))?;
            let d = ledger.desired_for(&group);
            let queues: Vec<String> = d.queues.iter().map(|q| q.as_str().to_owned()).collect();
            let ids: Vec<String> = d
                .incidents
                .iter()
                .map(|k| k.id.as_str().to_owned())
                .collect();
            sink += emr_core::genesys::models::join_ids(&queues).0.len();
            sink += emr_core::genesys::models::summarise_ids(&ids).len();
            sink += emr_core::recovery::encode(&group, &ledger.open_incidents_of(&group)).len();
        }
    }
    let us_per_event = started.elapsed().as_nanos() as f64 / events as f64 / 1000.0;
    Ok(ServiceTime {
        us_per_event,
        open_after: ledger.open_len(),
        queues_total: ledger.desired_for(&group).queues_total,
        bytes_built: sink,
    })
}

/// The queue message the intake would enqueue for canonical `body`,
/// received at `now`.
fn queued(
    body: &str,
    now: chrono::DateTime<Utc>,
    rules: &emr_core::contract::ContractRules,
) -> Result<Vec<u8>> {
    let ev = emr_core::contract::parse_canonical(body.as_bytes(), now, rules)
        .map_err(|p| anyhow!("{}", p.detail))?;
    let q = emr_core::event::QueuedEvent {
        event: ev,
        received_ms: now.timestamp_millis(),
        delivery_id: None,
        slot: false,
    };
    Ok(serde_json::to_vec(&q)?)
}
