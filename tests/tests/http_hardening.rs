//! What an adversarial review of the HTTP surface broke, and that it stays
//! fixed, through a real Envoy: a flood of unauthenticated deliveries no
//! longer floods Envoy's log, answers never echo unbounded request text and
//! all say `nosniff`, a resume cannot be sent by a page on another site,
//! and obs-folded headers are judged as Envoy unfolds them.
//! (Bodies followed by trailers are in `framing.rs`.)

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use emr_e2e::{incident, json, reqwest, Envoy, EnvoyOptions, Value};
use tokio::net::TcpStream;

const PD_SECRET: &str = "hardening-pagerduty-secret";
const STATUS_USER: &str = "emr-status";
const STATUS_PASSWORD: &str = "hardening-status-password";

fn options(config: Value) -> EnvoyOptions {
    EnvoyOptions {
        config,
        env: vec![
            ("EMR_PAGERDUTY_SECRET".into(), PD_SECRET.into()),
            // Variables the local template passes to the VM, used here
            // for the status endpoints' basic credential.
            ("EMR_SERVICENOW_USER".into(), STATUS_USER.into()),
            ("EMR_SERVICENOW_PASSWORD".into(), STATUS_PASSWORD.into()),
            (
                "EMR_CANONICAL_TOKEN".into(),
                "hardening-canonical-token-0123".into(),
            ),
        ],
        ..EnvoyOptions::default()
    }
}

async fn start(config: Value) -> Envoy {
    tokio::task::spawn_blocking(move || Envoy::start(options(config)))
        .await
        .unwrap()
}

/// Canonical open, PagerDuty signed, `/emr/*` behind basic auth (what a
/// browser caches).
fn config() -> Value {
    json!({
        "sources": {
            "canonical": {"insecure": true},
            "pagerduty": {
                "auth": [{"kind": "pagerduty_signature", "secret_env": "EMR_PAGERDUTY_SECRET"}],
                "rules": [{"match": {}, "group": "eg-voice", "queues": ["queue-1"]}]
            }
        },
        "status": {"auth": {"kind": "basic", "username_env": "EMR_SERVICENOW_USER", "password_env": "EMR_SERVICENOW_PASSWORD"}}
    })
}

/// Waits until Envoy's log stops growing (it is written as lines come).
async fn settled_log_len(envoy: &Envoy) -> usize {
    let mut last = envoy.log().len();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = envoy.log().len();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// 3,000 unauthenticated deliveries: every one refused and counted, and the
/// log grows by a few lines (the first 10 per source per minute per
/// worker), not one line each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_unauthenticated_deliveries_adds_a_bounded_amount_to_the_log() {
    const N: usize = 3000;
    /// Two workers × 10 lines of ~210 bytes, and room for a summary line
    /// each should the flood straddle a minute.
    const LOG_BOUND: usize = 8 * 1024;
    let envoy = Arc::new(start(config()).await);
    let before = settled_log_len(&envoy).await;
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .build()
        .unwrap();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let t = Instant::now();
    let mut tasks = Vec::with_capacity(N);
    for _ in 0..N {
        let (c, envoy, sem) = (c.clone(), Arc::clone(&envoy), Arc::clone(&sem));
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            c.post(envoy.url("/webhooks/pagerduty"))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 401);
    }
    let took = t.elapsed();
    let grown = settled_log_len(&envoy).await - before;
    assert_eq!(envoy.counter("emr.intake.refused.401"), N as u64);
    let log = envoy.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("pagerduty delivery refused (401)"))
        .count();
    eprintln!(
        "MEASURED {N} unauthenticated deliveries in {:.1} s: log +{grown} bytes, {lines} refusal lines, emr.intake.refused.401 = {}",
        took.as_secs_f64(),
        envoy.counter("emr.intake.refused.401")
    );
    assert!(lines >= 1, "no refusal was logged at all");
    assert!(lines <= 2 * 10 * 2, "{lines} refusal lines");
    assert!(grown <= LOG_BOUND, "the log grew by {grown} bytes");
}

/// A 404 for a 20,000-character source name shows a bounded excerpt, and
/// every answer, accepted or refused, says `nosniff`.
#[tokio::test]
async fn echoes_are_bounded_and_every_answer_says_nosniff() {
    let envoy = start(config()).await;
    let c = reqwest::Client::new();
    let long = "x".repeat(20_000);
    let r = c
        .post(envoy.url(&format!("/webhooks/{long}")))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let body = r.bytes().await.unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("\"{}\"...", "x".repeat(64))),
        "{detail}"
    );
    assert!(body.len() < 400, "a 404 of {} bytes", body.len());
    eprintln!(
        "MEASURED 404 for a 20,000-character source name: {} bytes",
        body.len()
    );

    let basic = ("authorization", basic_auth());
    for (what, r) in [
        (
            "202",
            c.post(envoy.url("/webhooks/canonical"))
                .header("content-type", "application/json")
                .body(incident("INC-NOSNIFF", "EMERGENCY_ACTIVE", &["q1"]).to_string()),
        ),
        (
            "415",
            c.post(envoy.url("/webhooks/canonical"))
                .header("content-type", "text/html")
                .body("<script>alert(1)</script>"),
        ),
        ("401", c.get(envoy.url("/emr/state"))),
        (
            "200",
            c.get(envoy.url("/emr/state")).header(basic.0, &basic.1),
        ),
    ] {
        let r = r.send().await.unwrap();
        assert_eq!(r.status().as_str(), what);
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{what}");
    }
}

fn basic_auth() -> String {
    use base64::Engine as _;
    let pair = format!("{STATUS_USER}:{STATUS_PASSWORD}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// A cross-site form or fetch cannot resume a group, even when the browser
/// holds the basic credential; a script (JSON, no `Origin`) and the host's
/// own page can.
#[tokio::test]
async fn a_resume_from_another_site_is_refused_and_one_from_a_script_accepted() {
    let envoy = start(config()).await;
    let c = reqwest::Client::new();
    // The group the config's PagerDuty rule names.
    let path = "/emr/groups/eg-voice/resume";
    let own_origin = format!("http://127.0.0.1:{}", envoy.listen_port);
    let resume = |headers: &[(&str, &str)]| {
        let mut req = c
            .post(envoy.url(path))
            .header("authorization", basic_auth());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (
                status,
                v["errors"][0]["field"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let form = ("content-type", "application/x-www-form-urlencoded");
    let json_ct = ("content-type", "application/json");
    let evil = ("origin", "https://evil.example");
    // What a cross-site HTML form sends, with the cached credential.
    assert_eq!(
        resume(&[form, evil, ("sec-fetch-site", "cross-site")]).await,
        (403, "sec-fetch-site".into())
    );
    assert_eq!(resume(&[form, evil]).await, (403, "origin".into()));
    assert_eq!(resume(&[form]).await, (415, "content-type".into()));
    assert_eq!(resume(&[]).await, (415, "content-type".into()));
    assert_eq!(resume(&[json_ct, evil]).await, (403, "origin".into()));
    assert_eq!(
        resume(&[json_ct, ("origin", "null")]).await,
        (403, "origin".into())
    );
    assert_eq!(envoy.counter("emr.intake.resumes_queued"), 0);
    // A script, and the host's own page.
    assert_eq!(resume(&[json_ct]).await, (202, String::new()));
    assert_eq!(
        resume(&[
            json_ct,
            ("origin", &own_origin),
            ("sec-fetch-site", "same-origin")
        ])
        .await,
        (202, String::new())
    );
    assert_eq!(envoy.counter("emr.intake.resumes_queued"), 2);
    assert_eq!(envoy.counter("emr.intake.refused.403"), 4);
    assert_eq!(envoy.counter("emr.intake.refused.415"), 2);
}

/// `POST /emr/groups/{id}/resume` decodes the id; a group the config does
/// not name is a 404 naming it, a broken encoding a 400; neither is queued.
#[tokio::test]
async fn a_resume_of_an_unknown_group_is_a_404_and_the_id_is_decoded() {
    let envoy = start(config()).await;
    let c = reqwest::Client::new();
    let resume = |group: &str| {
        let req = c
            .post(envoy.url(&format!("/emr/groups/{group}/resume")))
            .header("authorization", basic_auth())
            .header("content-type", "application/json");
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
            (status, ct, r.json::<Value>().await.unwrap())
        }
    };
    let (status, ct, body) = resume("3c3f7a3e-2f5c-4f3a-9b1e-000000000001").await;
    assert_eq!(
        (status, ct.as_str()),
        (404, "application/problem+json"),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("\"3c3f7a3e-2f5c-4f3a-9b1e-000000000001\" is not one emr-edge drives"),
        "{body}"
    );
    assert_eq!(body["errors"][0]["field"], "group");
    assert_eq!(
        body["errors"][0]["message"],
        "is not configured: the config names eg-voice"
    );
    let (status, _, body) = resume("eg%2Dvoice").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["group"], "eg-voice");
    let (status, ct, body) = resume("eg%2voice").await;
    assert_eq!(
        (status, ct.as_str()),
        (400, "application/problem+json"),
        "{body}"
    );
    assert_eq!(body["errors"][0]["field"], "group");
    assert_eq!(envoy.counter("emr.intake.resumes_queued"), 1);
    assert_eq!(envoy.counter("emr.intake.refused.404"), 1);
    assert_eq!(envoy.counter("emr.intake.refused.400"), 1);
}

/// Envoy 1.40's HTTP/1 codec accepts an obs-fold (a header line continued
/// by one starting with SP or HT): it removes the CR LF and keeps the
/// continuation's leading whitespace as it was. The filter judges the value
/// so unfolded, strictly; a continuation line is never a header of its own.
#[tokio::test]
async fn obs_folded_headers_are_judged_as_envoy_unfolds_them() {
    let envoy = start(json!({
        "sources": {"canonical": {"auth": [{"kind": "bearer", "token_env": "EMR_CANONICAL_TOKEN"}]}},
        "status": {"insecure": true}
    }))
    .await;
    let send = |id: &str, headers: &str| {
        let body = incident(id, "EMERGENCY_ACTIVE", &["q1"]).to_string();
        let req = format!(
            "POST /webhooks/canonical HTTP/1.1\r\nhost: x\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let port = envoy.listen_port;
        async move {
            let io = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            h1_exchange(io, req.into_bytes()).await
        }
    };
    const TOKEN: &str = "hardening-canonical-token-0123";
    // A credential folded after its scheme, with SP: "Bearer <token>".
    let a = send(
        "INC-FOLD-SP",
        &format!("content-type: application/json\r\nauthorization: Bearer\r\n {TOKEN}\r\n"),
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
    // The same with HT: "Bearer\t<token>" is not the Bearer scheme.
    let a = send(
        "INC-FOLD-HT",
        &format!("content-type: application/json\r\nauthorization: Bearer\r\n\t{TOKEN}\r\n"),
    )
    .await;
    let v = a.assert_problem(401, "folded with HT");
    assert_eq!(v["errors"][0]["message"], "must use the Bearer scheme");
    // A fold inside the media type: "application/ json" (whitespace kept).
    let a = send(
        "INC-FOLD-CT",
        &format!("content-type: application/\r\n json\r\nauthorization: Bearer {TOKEN}\r\n"),
    )
    .await;
    let v = a.assert_problem(415, "folded content-type");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("\"application/ json\""),
        "{v}"
    );
    // A continuation line that reads like a header is part of the value
    // before it: no credential was sent.
    let a = send(
        "INC-FOLD-SMUGGLED",
        &format!(
            "content-type: application/json\r\nx-note: a\r\n authorization: Bearer {TOKEN}\r\n"
        ),
    )
    .await;
    let v = a.assert_problem(401, "continuation that looks like a header");
    assert_eq!(v["errors"][0]["message"], "is missing");
    // A value that starts on the continuation line is trimmed like any.
    let a = send(
        "INC-FOLD-EMPTY",
        &format!("content-type:\r\n application/json\r\nauthorization: Bearer {TOKEN}\r\n"),
    )
    .await;
    assert_eq!(a.status, 202, "{a:?}");
    assert_eq!(envoy.counter("emr.intake.accepted"), 2);
}
