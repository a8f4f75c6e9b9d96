//! A small load generator for what wrk lacks: requests at a fixed rate with
//! every latency recorded (HdrHistogram), and single requests on a kept-alive
//! connection for the activation probes.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

/// One HTTP/1.1 keep-alive connection to 127.0.0.1.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn connect(port: u16) -> Result<Conn> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender })
    }

    /// POSTs `body` to `path`; returns the status and the body.
    pub async fn post(
        &mut self,
        path: &str,
        token: Option<&str>,
        body: String,
    ) -> Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let mut req = Request::post(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self
            .sender
            .send_request(req.body(Full::new(Bytes::from(body)))?)
            .await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// A canonical incident body.
pub fn incident(id: &str, mode: &str, timestamp: &str) -> String {
    format!(
        r#"{{"correlationId":"{id}","incidentType":"CARRIER_OUTAGE","targetQueueIds":["queue-12345","queue-67890"],"routingMode":"{mode}","timestamp":"{timestamp}","ttl":3600}}"#
    )
}

/// Latency figures in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Answers other than the expected status.
    pub unexpected: u64,
    pub achieved_rps: f64,
}

/// Sends unique valid resolutions (see [`crate::wrk::Workload::Unique`] for
/// why not activations) to `port` at `rate` a second for `secs` over
/// `conns` connections, each connection on its own schedule; latency is
/// recorded from the moment the request is written. (tokio's timer has 1 ms
/// granularity, so timing from the due instant would add up to 1 ms of timer
/// slack; at this rate the server is far from saturated, so no request waits
/// behind another on its connection.)
pub async fn fixed_rate(
    port: u16,
    rate: u32,
    secs: f64,
    conns: usize,
    prefix: &str,
    token: &str,
    expect: u16,
) -> Result<Latency> {
    let timestamp = crate::run::now_rfc3339();
    let interval = Duration::from_secs_f64(conns as f64 / f64::from(rate.max(1)));
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (prefix, token, timestamp) = (prefix.to_owned(), token.to_owned(), timestamp.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(port).await?;
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut unexpected = 0u64;
            let offset = Duration::from_secs_f64(c as f64 / f64::from(rate.max(1)));
            let mut due = start + offset;
            let mut n = 0u64;
            while due < end {
                tokio::time::sleep_until(due).await;
                n += 1;
                let body = incident(
                    &format!("{prefix}-{c}-{n}"),
                    "EMERGENCY_RESOLVED",
                    &timestamp,
                );
                let sent = Instant::now();
                let (status, _) = conn.post("/webhooks/canonical", Some(&token), body).await?;
                let took = sent.elapsed().as_micros();
                hist.saturating_record(u64::try_from(took).unwrap_or(u64::MAX).max(1));
                if status != expect {
                    unexpected += 1;
                }
                due += interval;
            }
            anyhow::Ok((hist, unexpected))
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut unexpected = 0;
    let wall = Instant::now();
    for t in tasks {
        let (h, u) = t.await.context("load task")??;
        all.add(h)?;
        unexpected += u;
    }
    let elapsed = wall.elapsed().as_secs_f64().max(secs);
    if all.is_empty() {
        bail!("no request completed");
    }
    Ok(Latency {
        count: all.len(),
        p50_us: all.value_at_quantile(0.50),
        p90_us: all.value_at_quantile(0.90),
        p99_us: all.value_at_quantile(0.99),
        p999_us: all.value_at_quantile(0.999),
        max_us: all.max(),
        unexpected,
        achieved_rps: all.len() as f64 / elapsed,
    })
}
