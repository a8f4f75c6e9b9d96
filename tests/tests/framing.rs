//! Every framing of a request to `/webhooks/*` is answered by the filter:
//! HTTP/2 over cleartext (h2c) and TLS, with and without a content length,
//! a body followed by trailers, trailers with no body at all, and HTTP/1.1
//! chunked with trailers (dropped by Envoy's HTTP/1 codec by default, kept
//! with `enable_trailers`).
//!
//! Found by an adversarial review: a body followed by trailers never reached
//! end of stream in the filter's body callback, the trailers callback let
//! it through, and the router answered (404 locally; behind a gateway whose
//! catch-all has an upstream, the body would have been forwarded
//! unauthenticated). And the shipped configs stop anything the filter ever
//! lets through at routes of their own for `/webhooks` and `/emr`.

mod common;

use std::time::Duration;

use common::*;
use emr_e2e::{incident, json, root, Envoy, EnvoyOptions, Value};
use tokio::net::TcpStream;

const PD_SECRET: &str = "framing-local-pagerduty-secret";
const TRAILERS: &[(&str, &str)] = &[("x-checksum", "e3b0c442"), ("x-sent-by", "framing")];
const JSON: (&str, &str) = ("content-type", "application/json");

/// The local template with canonical open (as the local default has it)
/// and PagerDuty signed.
fn local_options(template: std::path::PathBuf) -> EnvoyOptions {
    EnvoyOptions {
        template,
        config: json!({
            "sources": {
                "canonical": {"insecure": true},
                "pagerduty": {
                    "auth": [{"kind": "pagerduty_signature", "secret_env": "EMR_PAGERDUTY_SECRET"}],
                    "rules": [{"match": {}, "group": "eg-voice", "queues": ["queue-1"]}]
                }
            },
            "status": {"insecure": true}
        }),
        env: vec![("EMR_PAGERDUTY_SECRET".into(), PD_SECRET.into())],
        ..EnvoyOptions::default()
    }
}

/// The local template, its text changed by `patch`.
async fn local_patched(name: &str, patch: impl Fn(String) -> String + Send + 'static) -> Envoy {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let text = std::fs::read_to_string(root().join("envoy/local.yaml.tmpl")).unwrap();
        let patched = patch(text.clone());
        assert_ne!(patched, text, "the patch changed nothing");
        let dir = root().join("target/e2e/framing");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}-{name}.yaml.tmpl", std::process::id()));
        std::fs::write(&path, patched).unwrap();
        Envoy::start(local_options(path))
    })
    .await
    .unwrap()
}

async fn local() -> Envoy {
    tokio::task::spawn_blocking(|| {
        Envoy::start(local_options(root().join("envoy/local.yaml.tmpl")))
    })
    .await
    .unwrap()
}

async fn tcp(envoy: &Envoy) -> TcpStream {
    TcpStream::connect(("127.0.0.1", envoy.listen_port))
        .await
        .unwrap()
}

fn h2c_uri(envoy: &Envoy, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", envoy.listen_port)
}

fn signed(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        (JSON.0, JSON.1.to_owned()),
        (
            "x-pagerduty-signature",
            pagerduty_signature(PD_SECRET, body),
        ),
    ]
}

fn refs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Polls `GET /emr/status/{id}` over plain HTTP until the incident is open.
async fn open_on_status(envoy: &Envoy, id: &str) -> Value {
    let c = emr_e2e::reqwest::Client::new();
    let mut v = Value::Null;
    for _ in 0..100 {
        v = c
            .get(envoy.url(&format!("/emr/status/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        if v["state"] == "OPEN" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_bodies_followed_by_trailers_are_answered_by_the_filter() {
    let envoy = local().await;
    let envoy = &envoy;
    let post = |path: &str,
                headers: Vec<(&'static str, String)>,
                body: Option<Vec<u8>>,
                trailers: Option<&'static [(&'static str, &'static str)]>| {
        let uri = h2c_uri(envoy, path);
        async move {
            let io = tcp(envoy).await;
            h2_exchange(io, "POST", &uri, &refs(&headers), body.as_deref(), trailers).await
        }
    };
    let json_only = || vec![(JSON.0, JSON.1.to_owned())];

    // The review's reproduction: no credential, DATA, then trailers. Before
    // the fix the router answered 404 "no route".
    let a = post(
        "/webhooks/pagerduty",
        json_only(),
        Some(b"{}".to_vec()),
        Some(TRAILERS),
    )
    .await;
    let v = a.assert_problem(401, "h2c, unsigned, trailers");
    assert_eq!(v["errors"][0]["field"], "x-pagerduty-signature");

    // Trailers with no body at all.
    let a = post("/webhooks/pagerduty", json_only(), None, Some(TRAILERS)).await;
    a.assert_problem(401, "h2c, unsigned, trailers only");
    let a = post("/webhooks/canonical", json_only(), None, Some(TRAILERS)).await;
    a.assert_problem(400, "h2c, canonical, trailers only");

    // A valid canonical delivery with trailers: accepted and recorded.
    let body = incident("INC-H2C-TRAILERS", "EMERGENCY_ACTIVE", &["q1"]).to_string();
    let a = post(
        "/webhooks/canonical",
        json_only(),
        Some(body.into_bytes()),
        Some(TRAILERS),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text());
    assert_eq!(a.json()["correlationId"], "INC-H2C-TRAILERS");
    let status = open_on_status(envoy, "INC-H2C-TRAILERS").await;
    assert_eq!(status["state"], "OPEN", "{status}");

    // A signed PagerDuty delivery with trailers.
    let pd = pagerduty_triggered("PH2CTRAILERS1");
    let a = post("/webhooks/pagerduty", signed(&pd), Some(pd), Some(TRAILERS)).await;
    assert_eq!(a.status, 202, "{}", a.text());
    assert_eq!(a.json()["correlationId"], "PH2CTRAILERS1");

    // HTTP/2 with no content length and no trailers: DATA ends the stream.
    let pd = pagerduty_triggered("PH2CNOLENGTH1");
    let a = post("/webhooks/pagerduty", signed(&pd), Some(pd), None).await;
    assert_eq!(a.status, 202, "{}", a.text());

    // Over the size limit with trailers: refused, never forwarded.
    let big = vec![b' '; 70_000];
    let a = post(
        "/webhooks/canonical",
        json_only(),
        Some(big),
        Some(TRAILERS),
    )
    .await;
    assert_eq!(a.status, 413, "{a:?} {}", a.text());

    assert_eq!(envoy.counter("emr.intake.refused.401"), 2);
    assert_eq!(envoy.counter("emr.intake.accepted"), 3);
    assert!(!envoy.log().contains("no route"));
}

/// HTTP/1.1 chunked bodies with trailers, with Envoy's HTTP/1 codec as
/// shipped (it drops trailers, so the body ends with end of stream) and
/// with `enable_trailers` (a gateway's choice: the filter sees them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_chunked_bodies_with_trailers_are_answered_by_the_filter() {
    let shipped = local().await;
    let with_trailers = local_patched("h1-trailers", |t| {
        t.replace(
            "                request_headers_timeout: 5s\n",
            "                request_headers_timeout: 5s\n                http_protocol_options: { enable_trailers: true }\n",
        )
    })
    .await;
    for (name, envoy) in [("shipped", &shipped), ("enable_trailers", &with_trailers)] {
        let send = |req: Vec<u8>| async move { h1_exchange(tcp(envoy).await, req).await };
        let a = send(chunked_post(
            "/webhooks/pagerduty",
            &[JSON],
            b"{}",
            TRAILERS,
        ))
        .await;
        let v = a.assert_problem(401, &format!("{name}: unsigned"));
        assert_eq!(v["errors"][0]["field"], "x-pagerduty-signature");
        let a = send(chunked_post("/webhooks/pagerduty", &[JSON], b"", TRAILERS)).await;
        a.assert_problem(401, &format!("{name}: unsigned, no body"));

        let id = format!("INC-H1-TRAILERS-{name}");
        let body = incident(&id, "EMERGENCY_ACTIVE", &["q1"]).to_string();
        let a = send(chunked_post(
            "/webhooks/canonical",
            &[JSON],
            body.as_bytes(),
            TRAILERS,
        ))
        .await;
        assert_eq!(a.status, 202, "{name}: {}", a.text());
        assert_eq!(open_on_status(envoy, &id).await["state"], "OPEN", "{name}");

        let pd = pagerduty_triggered(&format!("PH1TRAILERS{}", name.len()));
        let h = signed(&pd);
        let a = send(chunked_post(
            "/webhooks/pagerduty",
            &refs(&h),
            &pd,
            TRAILERS,
        ))
        .await;
        assert_eq!(a.status, 202, "{name}: {}", a.text());

        assert_eq!(envoy.counter("emr.intake.refused.401"), 2, "{name}");
        assert_eq!(envoy.counter("emr.intake.accepted"), 2, "{name}");
    }
}

/// The production example over TLS: HTTP/2 negotiated by ALPN, and by
/// prior knowledge with none, with trailers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_h2_with_trailers_is_answered_by_the_filter_on_the_production_example() {
    let prod = Prod::start().await;
    let bearer = format!("Bearer {PROD_CANONICAL_TOKEN}");
    let status_bearer = format!("Bearer {PROD_STATUS_TOKEN}");
    let h2 = |method: &'static str,
              path: &str,
              headers: Vec<(&'static str, String)>,
              body: Option<Vec<u8>>,
              trailers: Option<&'static [(&'static str, &'static str)]>| {
        let uri = prod.uri(path);
        let prod = &prod;
        async move {
            let (io, alpn) = prod.tls(&[b"h2", b"http/1.1"]).await;
            assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "ALPN did not choose h2");
            h2_exchange(io, method, &uri, &refs(&headers), body.as_deref(), trailers).await
        }
    };

    // No credential, DATA, trailers: the filter's 401, not the router's 404.
    let a = h2(
        "POST",
        "/webhooks/canonical",
        vec![(JSON.0, JSON.1.to_owned())],
        Some(b"{}".to_vec()),
        Some(TRAILERS),
    )
    .await;
    let v = a.assert_problem(401, "TLS h2, no credential, trailers");
    assert_eq!(v["errors"][0]["field"], "authorization");

    // The same by prior knowledge, with no ALPN offered.
    let (io, alpn) = prod.tls(&[]).await;
    assert_eq!(alpn, None);
    let a = h2_exchange(
        io,
        "POST",
        &prod.uri("/webhooks/canonical"),
        &[JSON],
        Some(b"{}"),
        Some(TRAILERS),
    )
    .await;
    a.assert_problem(401, "TLS h2 by prior knowledge, trailers");

    // A valid canonical delivery with its bearer token, and trailers.
    let body = incident("INC-TLS-H2-TRAILERS", "EMERGENCY_ACTIVE", &["q1"]).to_string();
    let a = h2(
        "POST",
        "/webhooks/canonical",
        vec![
            (JSON.0, JSON.1.to_owned()),
            ("authorization", bearer.clone()),
        ],
        Some(body.into_bytes()),
        Some(TRAILERS),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text());
    let mut status = Value::Null;
    for _ in 0..100 {
        let a = h2(
            "GET",
            "/emr/status/INC-TLS-H2-TRAILERS",
            vec![("authorization", status_bearer.clone())],
            None,
            None,
        )
        .await;
        status = a.json();
        if status["state"] == "OPEN" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status["state"], "OPEN", "{status}");

    // A signed PagerDuty delivery with trailers.
    let pd = pagerduty_triggered("PTLSH2TRAILERS");
    let sig = pagerduty_signature(PROD_PAGERDUTY_SECRET, &pd);
    let a = h2(
        "POST",
        "/webhooks/pagerduty",
        vec![(JSON.0, JSON.1.to_owned()), ("x-pagerduty-signature", sig)],
        Some(pd),
        Some(TRAILERS),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text());

    // HTTP/1.1 chunked with trailers over TLS.
    let (io, alpn) = prod.tls(&[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let a = h1_exchange(
        io,
        chunked_post("/webhooks/canonical", &[JSON], b"{}", TRAILERS),
    )
    .await;
    a.assert_problem(401, "TLS HTTP/1.1 chunked, trailers");

    assert_eq!(prod.envoy.counter("emr.intake.refused.401"), 3);
    assert_eq!(prod.envoy.counter("emr.intake.accepted"), 2);
}

/// The shipped configs' own routes for `/webhooks` and `/emr`: a request the
/// filter never answered ends there (503 problem+json, retried by the
/// sender), never at the catch-all or an upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_filter_never_answered_stop_at_the_emr_routes() {
    // The local template without the emr-edge filter: every request reaches
    // the router.
    let envoy = local_patched("no-filter", |t| {
        let start = t
            .find("                  - name: envoy.filters.http.wasm\n")
            .unwrap();
        let end = t[start..].find("vm_config: *emr_vm\n").unwrap() + start;
        let end = end + "vm_config: *emr_vm\n".len();
        format!("{}{}", &t[..start], &t[end..])
    })
    .await;
    let c = emr_e2e::reqwest::Client::new();
    for path in [
        "/webhooks/canonical",
        "/webhooks/anything/deeper",
        "/webhooks",
        "/webhooks?x=1",
        "/emr",
        "/emr/state",
        "/emr/groups/g/resume",
    ] {
        let r = c
            .post(envoy.url(path))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 503, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], 503, "{path}");
        assert!(
            v["detail"].as_str().unwrap().contains("did not answer"),
            "{path}: {v}"
        );
    }
    // Everything else is still the catch-all's.
    for (path, status) in [("/healthz", 200), ("/webhooksx", 404), ("/emrx", 404)] {
        let r = c.get(envoy.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
    }

    // The production example has the same four routes, before its
    // catch-all.
    let prod = std::fs::read_to_string(root().join("envoy/production.example.yaml.tmpl")).unwrap();
    let local = std::fs::read_to_string(root().join("envoy/local.yaml.tmpl")).unwrap();
    for (name, t) in [("production", &prod), ("local", &local)] {
        let catch_all = t.find(r#"- match: { prefix: "/" }"#).unwrap();
        for m in [
            r#"- match: { prefix: "/webhooks/" }"#,
            r#"- match: { path: "/webhooks" }"#,
            r#"- match: { prefix: "/emr/" }"#,
            r#"- match: { path: "/emr" }"#,
        ] {
            let at = t.find(m).unwrap_or_else(|| panic!("{name}: no {m}"));
            assert!(at < catch_all, "{name}: {m} after the catch-all");
        }
        assert_eq!(
            t.matches("direct_response: *emr_not_answered").count(),
            3,
            "{name}"
        );
    }
}
