//! The usual alternative to a filter: a small webhook service behind Envoy.
//!
//! hyper 1 on tokio, HTTP/1.1 keep-alive. For `POST /webhooks/canonical` it
//! does what the emr-edge intake does on that route, as a team would write
//! it: content type (415), size (413), bearer token compared in constant time
//! over SHA-256 digests (401), the canonical contract — **by calling
//! `emr_core::contract::parse_canonical`, the same parser the filter uses,
//! so validation is identical** (400/422) — dedupe of
//! `canonical:{correlationId}:{routingMode}` with a payload fingerprint in an
//! in-memory map behind a mutex (replay → 202 `Idempotent-Replayed`, other
//! payload → 409), and a 202 with the contract's body. It hands events to
//! nothing: a real one would also queue them, so this is a lower bound on its
//! cost.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use bytes::Bytes;
use emr_core::contract::{parse_canonical, ContractRules};
use emr_core::problem::Problem;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The env variable holding the bearer token (the same one Envoy's filter reads).
pub const TOKEN_ENV: &str = "EMR_CANONICAL_TOKEN";
const MAX_BODY: usize = 65_536;
/// The dedupe map is cleared when it reaches this many keys (a real service
/// would expire them; the benchmark never gets there).
const MAX_KEYS: usize = 4_000_000;

struct State {
    token_digest: [u8; 32],
    rules: ContractRules,
    seen: Mutex<HashMap<String, [u8; 16]>>,
}

pub fn serve(port: u16, threads: usize) -> Result<()> {
    let token = std::env::var(TOKEN_ENV).unwrap_or_default();
    let state = Arc::new(State {
        token_digest: Sha256::digest(token.as_bytes()).into(),
        rules: ContractRules::default(),
        seen: Mutex::new(HashMap::new()),
    });
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("upstream listening on 127.0.0.1:{port}");
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(Arc::clone(&state), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert("content-type", v);
    }
    r
}

fn problem(p: &Problem) -> Reply {
    reply(p.status, "application/problem+json", p.to_json())
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    if req.uri().path() != "/webhooks/canonical" {
        return Ok(problem(&Problem::not_found("no such route")));
    }
    if req.method() != hyper::Method::POST {
        return Ok(problem(&Problem::method_not_allowed("POST")));
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let is_json = header("content-type").is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/json")
    });
    if !is_json {
        return Ok(problem(&Problem::new(415, "expected application/json")));
    }
    let presented = header("authorization")
        .and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned))
        .unwrap_or_default();
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    if presented.is_empty() || !bool::from(digest.ct_eq(&state.token_digest)) {
        return Ok(problem(&Problem::new(401, "missing or wrong bearer token")));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(problem(&Problem::new(413, "body too large"))),
    };
    let event = match parse_canonical(&body, chrono::Utc::now(), &state.rules) {
        Ok(e) => e,
        Err(p) => return Ok(problem(&p)),
    };
    let key = format!("canonical:{}:{}", event.correlation_id, event.routing_mode);
    let full: [u8; 32] = Sha256::digest(serde_json::to_vec(&event).unwrap_or_default()).into();
    let mut fingerprint = [0u8; 16];
    fingerprint.copy_from_slice(&full[..16]);
    let previous = {
        let mut seen = match state.seen.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if seen.len() >= MAX_KEYS {
            seen.clear();
        }
        match seen.get(&key) {
            Some(f) => Some(*f),
            None => {
                seen.insert(key, fingerprint);
                None
            }
        }
    };
    if previous.is_some_and(|f| f != fingerprint) {
        return Ok(problem(&Problem::new(
            409,
            "already accepted with a different payload",
        )));
    }
    let body = serde_json::json!({
        "correlationId": event.correlation_id,
        "routingMode": event.routing_mode,
        "status": "PROCESSING",
        "statusUrl": format!("/emr/status/{}", event.correlation_id),
    });
    let mut r = reply(202, "application/json", body.to_string().into_bytes());
    if previous.is_some() {
        r.headers_mut().insert(
            "idempotent-replayed",
            hyper::header::HeaderValue::from_static("true"),
        );
    }
    Ok(r)
}
