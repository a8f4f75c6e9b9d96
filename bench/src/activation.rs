//! Activation latency: from the webhook leaving the client to the simulator
//! receiving the emergency group's `PUT`.
//!
//! Each probe is a new incident: an `EMERGENCY_ACTIVE` (the group goes on:
//! pre-flight GET, data-table row PUT, group PUT `enabled: true`), then its
//! `EMERGENCY_RESOLVED` (GET, group PUT `enabled: false`, row PUT), so every
//! webhook causes a PUT. The send time is the client's wall clock just before
//! the request is written; the receive time is the simulator's request log
//! (`received_ms`, whole milliseconds), so each figure is ±1 ms.
//!
//! - **warm**: the service holds a valid token.
//! - **cold**: every token is revoked at the simulator just before the
//!   webhook, so the first call gets 401 and the service logs in again and
//!   retries: the worst case of a token the service believes valid. (A
//!   service that holds no token at all, right after start, skips that 401.)
//! - **flood**: warm, while wrk saturates the intake with junk and replays.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use emr_sim::{Revoke, SimHandle};
use serde::{Deserialize, Serialize};

use crate::load::{incident, Conn};
use crate::stats::Percentiles;

/// One probe series.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Series {
    /// Webhook sent → group PUT `enabled: true` received, ms.
    pub on_ms: Percentiles,
    /// Webhook sent → group PUT `enabled: false` received, ms.
    pub off_ms: Percentiles,
    /// Probes whose PUT did not arrive within the wait limit.
    pub missed: usize,
    pub incidents: usize,
    /// Fresh Envoys (full request budgets) the series was spread over.
    #[serde(default)]
    pub envoys: usize,
    #[serde(skip)]
    on_raw: Vec<f64>,
    #[serde(skip)]
    off_raw: Vec<f64>,
}

impl Series {
    /// Adds another chunk's probes.
    pub fn merge(&mut self, other: Series) {
        self.on_raw.extend(other.on_raw);
        self.off_raw.extend(other.off_raw);
        self.missed += other.missed;
        self.incidents += other.incidents;
        self.envoys += 1;
        self.on_ms = Percentiles::of(&self.on_raw);
        self.off_ms = Percentiles::of(&self.off_raw);
    }
}

pub fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// The first `PUT` of `path` setting `enabled` to `want`, by its receive time.
async fn wait_put(sim: &SimHandle, path: &str, want: bool, limit: Duration) -> Option<f64> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let hit = sim.requests().into_iter().find(|r| {
            r.method == "PUT"
                && r.path == path
                && r.status.is_some_and(|s| (200..300).contains(&s))
                && r.body
                    .as_ref()
                    .and_then(|b| b.get("enabled"))
                    .and_then(serde_json::Value::as_bool)
                    == Some(want)
        });
        if let Some(r) = hit {
            return Some(r.received_ms as f64);
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    None
}

pub struct Probe<'a> {
    pub sim: &'a SimHandle,
    pub port: u16,
    pub token: &'a str,
    pub group: &'a str,
    pub prefix: String,
}

impl Probe<'_> {
    /// `n` incidents, each activated then resolved; `cold` revokes every
    /// token before each webhook. Stops early at `budget`.
    pub async fn series(&self, n: usize, cold: bool, budget: Duration) -> Result<Series> {
        let path = format!("/api/v2/architect/emergencygroups/{}", self.group);
        let mut conn = Conn::connect(self.port).await?;
        let started = Instant::now();
        let (mut on, mut off, mut missed) = (Vec::new(), Vec::new(), 0);
        let limit = Duration::from_secs(3);
        let mut done = 0;
        for i in 0..n {
            if started.elapsed() > budget {
                break;
            }
            let id = format!("{}-{i}", self.prefix);
            let activated_at = chrono::Utc::now();
            let resolved_at = activated_at + chrono::Duration::seconds(1);
            for (mode, at, want, into) in [
                ("EMERGENCY_ACTIVE", activated_at, true, &mut on),
                ("EMERGENCY_RESOLVED", resolved_at, false, &mut off),
            ] {
                if cold {
                    self.sim.revoke_tokens(Revoke::All);
                }
                self.sim.clear_requests();
                let body = incident(&id, mode, &crate::run::rfc3339(at));
                let sent = wall_ms();
                let (status, answer) = conn
                    .post("/webhooks/canonical", Some(self.token), body)
                    .await?;
                if status != 202 {
                    bail!(
                        "probe {id} {mode} answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                match wait_put(self.sim, &path, want, limit).await {
                    Some(received) => into.push((received - sent).max(0.0)),
                    None => missed += 1,
                }
            }
            done += 1;
        }
        Ok(Series {
            on_ms: Percentiles::of(&on),
            off_ms: Percentiles::of(&off),
            missed,
            incidents: done,
            envoys: 1,
            on_raw: on,
            off_raw: off,
        })
    }
}

/// Waits until the service holds a token (its first login at start).
pub async fn wait_for_token(sim: &SimHandle, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if sim
            .requests()
            .iter()
            .any(|r| r.path == "/oauth/token" && r.status == Some(200))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("the service did not log in to the simulator")
}
