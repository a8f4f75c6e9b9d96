//! Clients the HTTP libraries will not be: HTTP/2 with request trailers
//! (over cleartext or TLS), HTTP/1.1 as raw bytes (chunked with trailers,
//! obs-folded headers), and the production example running over TLS.
//!
//! A module of the test files that use it (`mod common;`), not of the
//! harness crate: `h2` and `tokio-rustls` are dev-dependencies.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use emr_e2e::{root, Envoy, EnvoyOptions, Value};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

// ---------------------------------------------------------------------------
// Answers.

/// An answer, whichever protocol carried it.
#[derive(Default)]
pub struct Answer {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, self.text())
    }
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A problem+json answer from the filter, with this status: its body's
    /// `status` member says so too (Envoy's own answers are plain text).
    pub fn assert_problem(&self, status: u16, context: &str) -> Value {
        assert_eq!(self.status, status, "{context}: {self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{context}: {self:?}"
        );
        let v = self.json();
        assert_eq!(v["status"], u64::from(status), "{context}: {v}");
        v
    }
}

// ---------------------------------------------------------------------------
// HTTP/2.

/// One HTTP/2 request on a new connection over `io`: `HEADERS` (never with
/// end of stream), then `body` as `DATA` if any, then `trailers` as a final
/// `HEADERS` if any (otherwise the last `DATA`, or an empty one, ends the
/// stream). No `content-length` is sent unless `headers` has one.
pub async fn h2_exchange<T>(
    io: T,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    trailers: Option<&[(&str, &str)]>,
) -> Answer
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = h2::client::handshake(io).await.expect("h2 handshake");
    let conn = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("h2 connection ready");
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(()).expect("request");
    let (response, mut stream) = client.send_request(req, false).expect("send HEADERS");
    if let Some(body) = body {
        stream
            .send_data(Bytes::copy_from_slice(body), trailers.is_none())
            .expect("send DATA");
    }
    match trailers {
        Some(t) => {
            let mut map = http::HeaderMap::new();
            for (k, v) in t {
                map.append(
                    http::HeaderName::from_bytes(k.as_bytes()).expect("trailer name"),
                    http::HeaderValue::from_str(v).expect("trailer value"),
                );
            }
            stream.send_trailers(map).expect("send trailers");
        }
        None if body.is_none() => stream
            .send_data(Bytes::new(), true)
            .expect("send end of stream"),
        None => {}
    }
    let response = tokio::time::timeout(Duration::from_secs(20), response)
        .await
        .expect("no h2 answer within 20 s")
        .expect("h2 answer");
    let (parts, mut recv) = response.into_parts();
    let mut body = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("h2 body");
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    conn.abort();
    Answer {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    }
}

// ---------------------------------------------------------------------------
// HTTP/1.1 as bytes.

/// Sends `request` and reads the answer until it is whole or the
/// connection closes; writing and reading run together, so an answer sent
/// before the request is all written is still read.
pub async fn h1_exchange<T>(io: T, request: Vec<u8>) -> Answer
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        let _ = wr.flush().await;
        wr
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let read = async {
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if h1_complete(&buf) {
                break;
            }
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .is_ok(),
        "no HTTP/1.1 answer within 20 s"
    );
    drop(writer.await);
    h1_parse(&buf)
}

fn h1_split(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((&raw[..i], &raw[i + 4..]))
}

fn h1_parse(raw: &[u8]) -> Answer {
    let (head, rest) = h1_split(raw).unwrap_or((raw, b""));
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut a = Answer {
        status,
        headers,
        body: rest.to_vec(),
    };
    if a.header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        a.body = dechunk(rest);
    } else if let Some(n) = a.header("content-length").and_then(|v| v.parse().ok()) {
        a.body.truncate(n);
    }
    a
}

/// Whether `raw` holds a whole HTTP/1.1 answer: its head, and its body by
/// length or final chunk.
pub fn h1_complete(raw: &[u8]) -> bool {
    let Some((_, rest)) = h1_split(raw) else {
        return false;
    };
    let a = h1_parse(raw);
    if a.header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        return rest.ends_with(b"0\r\n\r\n");
    }
    a.header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| rest.len() >= n)
}

/// A chunked body's data, its chunks joined.
pub fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..i]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let rest = &body[i + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// A chunked `POST` whose body is followed by `trailers` (none: an empty
/// trailer section), closing the connection after.
pub fn chunked_post(
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    trailers: &[(&str, &str)],
) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: emr-edge.test\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if !body.is_empty() {
        bytes.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n");
    for (k, v) in trailers {
        bytes.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    bytes
}

// ---------------------------------------------------------------------------
// Signing, as the tools do.

/// PagerDuty's `X-PagerDuty-Signature` over exactly `body`.
pub fn pagerduty_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v1={hex}")
}

/// PagerDuty's `incident.triggered` fixture, its event time moved to now and
/// its id to `id` (a 2024 event would be long expired).
pub fn pagerduty_triggered(id: &str) -> Vec<u8> {
    let file = root().join("tests/fixtures/sources/pagerduty/incident_triggered.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(file).expect("fixture"))
        .expect("fixture JSON");
    v["event"]["occurred_at"] =
        Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    v["event"]["data"]["id"] = Value::String(id.to_owned());
    serde_json::to_vec(&v).expect("JSON")
}

// ---------------------------------------------------------------------------
// The production example over TLS.

pub const PROD_CANONICAL_TOKEN: &str = "framing-canonical-token-0123456789";
pub const PROD_PAGERDUTY_SECRET: &str = "framing-pagerduty-secret-0123456789";
pub const PROD_STATUS_TOKEN: &str = "framing-status-token-0123456789";

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn scratch() -> PathBuf {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = root()
        .join("target/e2e")
        .join(format!("common-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A throwaway self-signed certificate in `dir`: (certificate, key).
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=emr-edge.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// The shipped production example running with a throwaway certificate,
/// the secrets above and `patch` applied to the template's text (a test may
/// tighten a limit); the harness fills in the ports and the wasm.
pub async fn production_envoy(patch: impl Fn(String) -> String + Send + 'static) -> Envoy {
    let options = tokio::task::spawn_blocking(move || {
        let dir = scratch();
        let (cert, key) = self_signed(&dir);
        let text = std::fs::read_to_string(root().join("envoy/production.example.yaml.tmpl"))
            .expect("template")
            .replace("{{TLS_CERT}}", &cert.display().to_string())
            .replace("{{TLS_KEY}}", &key.display().to_string())
            // Genesys is never reached: the intake answers without it.
            .replace("{{GENESYS_REGION}}", "mypurecloud.ie");
        let template = dir.join("production.yaml.tmpl");
        std::fs::write(&template, patch(text)).expect("template");
        EnvoyOptions {
            template,
            config: emr_e2e::production_config(),
            env: [
                ("EMR_GENESYS_CLIENT_ID", "framing-client-id"),
                (
                    "EMR_GENESYS_CLIENT_SECRET",
                    "framing-client-secret-0123456789",
                ),
                ("EMR_CANONICAL_TOKEN", PROD_CANONICAL_TOKEN),
                ("EMR_PAGERDUTY_SECRET", PROD_PAGERDUTY_SECRET),
                ("EMR_STATUS_TOKEN", PROD_STATUS_TOKEN),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
            log_level: "warn",
            ..EnvoyOptions::default()
        }
    })
    .await
    .expect("options");
    tokio::task::spawn_blocking(move || Envoy::start(options))
        .await
        .expect("Envoy start panicked")
}

/// The shipped production example, as shipped.
pub struct Prod {
    pub envoy: Envoy,
}

impl Prod {
    pub async fn start() -> Prod {
        Prod {
            envoy: production_envoy(|t| t).await,
        }
    }

    /// A TLS connection offering these ALPN protocols; returns the stream
    /// and the protocol the server chose.
    pub async fn tls(&self, alpn: &[&[u8]]) -> (TlsStream<TcpStream>, Option<Vec<u8>>) {
        let tcp = TcpStream::connect(("127.0.0.1", self.envoy.listen_port))
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("emr-edge.test").expect("name");
        let stream = connector(alpn)
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let chosen = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        (stream, chosen)
    }

    pub fn uri(&self, path: &str) -> String {
        format!("https://emr-edge.test:{}{path}", self.envoy.listen_port)
    }
}

/// A TLS client that accepts the test's self-signed certificate.
pub fn connector(alpn: &[&[u8]]) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
