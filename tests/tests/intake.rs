//! The intake through a real Envoy: the contract's answers, idempotency
//! across worker threads, pass-through, and bounded memory.

use std::sync::Arc;

use emr_e2e::{incident, json, reqwest, Envoy, EnvoyOptions, Value};
use reqwest::StatusCode;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(32)
        .build()
        .unwrap()
}

async fn post(
    c: &reqwest::Client,
    envoy: &Envoy,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    c.post(envoy.url("/webhooks/canonical"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn problem(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], status);
    v
}

#[tokio::test]
async fn a_valid_incident_is_accepted_and_its_status_is_visible() {
    let envoy = Envoy::start(EnvoyOptions {
        config: json!({"sources": {"canonical": {"insecure": true}}, "status": {"insecure": true}}),
        ..EnvoyOptions::default()
    });
    let c = client();
    let r = post(
        &c,
        &envoy,
        incident("INC-E2E-1", "EMERGENCY_ACTIVE", &["q1", "q2"]).to_string(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"correlationId": "INC-E2E-1", "routingMode": "EMERGENCY_ACTIVE", "status": "PROCESSING", "statusUrl": "/emr/status/INC-E2E-1?source=canonical"})
    );
    // The service records it within moments.
    let mut status = Value::Null;
    for _ in 0..100 {
        let r = c
            .get(envoy.url("/emr/status/INC-E2E-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        status = r.json().await.unwrap();
        if status["state"] == "OPEN" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status["state"], "OPEN", "{status}");
    assert_eq!(status["targetQueueIds"], json!(["q1", "q2"]));
    assert_eq!(status["events"][0]["routingMode"], "EMERGENCY_ACTIVE");

    let unknown = c
        .get(envoy.url("/emr/status/INC-NOPE"))
        .send()
        .await
        .unwrap();
    let v = problem(unknown, 404).await;
    assert_eq!(v["errors"][0]["field"], "correlationId");

    let state: Value = c
        .get(envoy.url("/emr/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        state["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["desired"]["enabled"] == true),
        "{state}"
    );
    assert_eq!(envoy.counter("emr.intake.accepted"), 1);
}

#[tokio::test]
async fn each_bad_input_class_gets_its_status_and_field() {
    let envoy = Envoy::start(EnvoyOptions {
        config: json!({"sources": {"canonical": {"insecure": true}}, "status": {"insecure": true}}),
        ..EnvoyOptions::default()
    });
    let c = client();

    // 400: not JSON, duplicate keys, too deep, not UTF-8.
    for body in [
        b"{not json".to_vec(),
        br#"{"correlationId":"A","correlationId":"B"}"#.to_vec(),
        format!("{}{}", "[".repeat(64), "]".repeat(64)).into_bytes(),
        b"{\"correlationId\":\"\xff\"}".to_vec(),
    ] {
        problem(post(&c, &envoy, body).await, 400).await;
    }

    // 422: each contract rule names its field.
    let cases = [
        ("correlationId", json!("has space")),
        ("incidentType", json!("lower_case")),
        ("routingMode", json!("ON")),
        ("targetQueueIds", json!([])),
        ("timestamp", json!("2020-01-01T00:00:00Z")),
        ("ttl", json!(30)),
        ("unexpected", json!(1)),
    ];
    for (field, value) in cases {
        let mut body = incident("INC-BAD", "EMERGENCY_ACTIVE", &["q1"]);
        body[field] = value;
        let v = problem(post(&c, &envoy, body.to_string()).await, 422).await;
        assert_eq!(v["errors"][0]["field"], field, "{v}");
    }

    // 415: wrong content type.
    let r = c
        .post(envoy.url("/webhooks/canonical"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let v = problem(r, 415).await;
    assert_eq!(v["errors"][0]["field"], "content-type");

    // 413: a 100 KiB body.
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100 * 1024));
    let v = problem(post(&c, &envoy, big).await, 413).await;
    assert_eq!(v["errors"][0]["field"], "body");

    // 405 with Allow.
    let r = c
        .get(envoy.url("/webhooks/canonical"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    problem(r, 405).await;
    let r = c
        .delete(envoy.url("/emr/status/INC-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    problem(r, 405).await;

    // 404 for an unknown source.
    problem(post_to(&c, &envoy, "/webhooks/nagios").await, 404).await;

    assert_eq!(envoy.counter("emr.intake.refused.422"), 7);
    assert_eq!(envoy.counter("emr.intake.accepted"), 0);
}

async fn post_to(c: &reqwest::Client, envoy: &Envoy, path: &str) -> reqwest::Response {
    c.post(envoy.url(path))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn other_paths_pass_through_the_filter_untouched() {
    let envoy = Envoy::start(EnvoyOptions {
        config: json!({"sources": {"canonical": {"insecure": true}}, "status": {"insecure": true}}),
        ..EnvoyOptions::default()
    });
    let c = client();
    let r = c.get(envoy.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    // Even a POST of JSON elsewhere is not ours: the route's own answer.
    let r = post_to(&c, &envoy, "/api/other").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().await.unwrap(), "no route\n");
}

#[tokio::test]
async fn duplicates_across_workers_are_accepted_exactly_once() {
    let envoy = Arc::new(Envoy::start(EnvoyOptions {
        config: json!({"sources": {"canonical": {"insecure": true}}, "status": {"insecure": true}}),
        ..EnvoyOptions::default()
    }));
    let c = client();
    // 40 ids × 5 copies, shuffled, sent 16 at a time through 2 workers.
    let bodies: Vec<String> = (0..40)
        .map(|i| incident(&format!("INC-DUP-{i}"), "EMERGENCY_ACTIVE", &["q1"]).to_string())
        .collect();
    // Copies of one id back to back, so they are in flight together.
    let sends: Vec<String> = bodies
        .iter()
        .flat_map(|b| std::iter::repeat_n(b.clone(), 5))
        .collect();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for body in sends {
        let (c, envoy, sem) = (c.clone(), Arc::clone(&envoy), Arc::clone(&sem));
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let r = post(&c, &envoy, body).await;
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            r.headers().get("idempotent-replayed").is_some()
        }));
    }
    let mut replays = 0;
    for t in tasks {
        if t.await.unwrap() {
            replays += 1;
        }
    }
    assert_eq!(replays, 160);
    assert_eq!(envoy.counter("emr.intake.accepted"), 40);
    assert_eq!(envoy.counter("emr.intake.replayed"), 160);
    // And the service recorded exactly 40 events.
    for _ in 0..100 {
        if envoy.counter("emr.service.events") == 40 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(envoy.counter("emr.service.events"), 40);
}

#[tokio::test]
async fn a_key_reused_with_a_different_payload_is_409() {
    let envoy = Envoy::start(EnvoyOptions {
        config: json!({"sources": {"canonical": {"insecure": true}}, "status": {"insecure": true}}),
        ..EnvoyOptions::default()
    });
    let c = client();
    let first = incident("INC-409", "EMERGENCY_ACTIVE", &["q1"]);
    assert_eq!(
        post(&c, &envoy, first.to_string()).await.status(),
        StatusCode::ACCEPTED
    );
    let mut other = first.clone();
    other["targetQueueIds"] = json!(["q2"]);
    let v = problem(post(&c, &envoy, other.to_string()).await, 409).await;
    assert_eq!(v["errors"][0]["field"], "correlationId");
    // The resolution shares the id but is another event.
    let resolved = incident("INC-409", "EMERGENCY_RESOLVED", &[]);
    assert_eq!(
        post(&c, &envoy, resolved.to_string()).await.status(),
        StatusCode::ACCEPTED
    );
}
