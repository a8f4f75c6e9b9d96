mod common;

use common::*;
use emr_e2e::{incident, json, Envoy, EnvoyOptions};
use tokio::net::TcpStream;

const PD_SECRET: &str = "framing-local-pagerduty-secret";

fn local() -> Envoy {
    Envoy::start(EnvoyOptions {
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
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore() {
    let envoy = tokio::task::spawn_blocking(local).await.unwrap();
    let uri = |p: &str| format!("http://127.0.0.1:{}{p}", envoy.listen_port);
    let tcp = || TcpStream::connect(("127.0.0.1", envoy.listen_port));
    let ct = [("content-type", "application/json")];
    let tr = [("x-trailer", "1")];
    let a = h2_exchange(
        tcp().await.unwrap(),
        "POST",
        &uri("/webhooks/pagerduty"),
        &ct,
        Some(b"{}"),
        Some(&tr),
    )
    .await;
    eprintln!(
        "h2c unsigned pd + trailers: {} {:?} {}",
        a.status,
        a.headers,
        a.text()
    );
    let body = incident("INC-X", "EMERGENCY_ACTIVE", &["q"]).to_string();
    let a = h2_exchange(
        tcp().await.unwrap(),
        "POST",
        &uri("/webhooks/canonical"),
        &ct,
        Some(body.as_bytes()),
        Some(&tr),
    )
    .await;
    eprintln!("h2c canonical + trailers: {} {}", a.status, a.text());
    let a = h2_exchange(
        tcp().await.unwrap(),
        "POST",
        &uri("/webhooks/canonical"),
        &ct,
        None,
        Some(&tr),
    )
    .await;
    eprintln!("h2c trailers only: {} {}", a.status, a.text());
    let a = h1_exchange(
        tcp().await.unwrap(),
        chunked_post("/webhooks/pagerduty", &ct, b"{}", &tr),
    )
    .await;
    eprintln!("h1 chunked unsigned + trailers: {} {}", a.status, a.text());
    let a = h1_exchange(
        tcp().await.unwrap(),
        chunked_post("/webhooks/pagerduty", &ct, b"{}", &[]),
    )
    .await;
    eprintln!("h1 chunked unsigned no trailers: {} {}", a.status, a.text());
    let fold = b"POST /webhooks/canonical HTTP/1.1\r\nhost: x\r\ncontent-type: application/\r\n json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".to_vec();
    let a = h1_exchange(tcp().await.unwrap(), fold).await;
    eprintln!(
        "h1 folded content-type: {} {:?} {}",
        a.status,
        a.headers,
        a.text()
    );
    let prod = Prod::start().await;
    let (s, alpn) = prod.tls(&[b"h2", b"http/1.1"]).await;
    eprintln!("prod ALPN chosen: {alpn:?}");
    drop(s);
    let (s, _) = prod.tls(&[]).await;
    let a = h2_exchange(
        s,
        "POST",
        &prod.uri("/webhooks/canonical"),
        &ct,
        Some(b"{}"),
        Some(&tr),
    )
    .await;
    eprintln!(
        "tls h2 prior knowledge canonical no cred + trailers: {} {}",
        a.status,
        a.text()
    );
    eprintln!("{}", envoy.log_tail(20));
}
