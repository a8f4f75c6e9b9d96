//! Every incident source through a real Envoy: each tool's own payload,
//! signed or authenticated the way that tool does it, accepted and visible on
//! the status endpoint; ignored events answered `IGNORED`; every bad
//! credential refused with a 401 that names the header and nothing else.
//!
//! Fixtures are the tool payloads under `tests/fixtures/sources/`, with their
//! event time moved to now (a 2024 event would be long expired in the ledger)
//! and then signed, exactly as the tool would sign what it sends.

use emr_e2e::{json, reqwest, root, Envoy, EnvoyOptions, Value};
use reqwest::StatusCode;

// Obviously fake secrets, each at least 16 characters.
const PD_SECRET: &str = "e2e-pagerduty-secret-not-real";
const PD_SECRET_NEXT: &str = "e2e-pagerduty-next-secret-not-real";
const SN_USER: &str = "emr-servicenow";
const SN_PASSWORD: &str = "e2e-servicenow-password-not-real";
const JSM_SECRET: &str = "e2e-jsm-secret-not-real";
const OG_TOKEN: &str = "e2e-opsgenie-token-not-real";
const AM_TOKEN: &str = "e2e-alertmanager-token-not-real";
const CANONICAL_TOKEN: &str = "e2e-canonical-token-not-real";
const STATUS_TOKEN: &str = "e2e-status-token-not-real";
/// The Standard Webhooks specification's example secret.
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Every route configured as docs/sources.md describes, the status
/// endpoints behind their own bearer token — the same file the core's
/// intake tests and the intake fuzz target read.
fn config() -> Value {
    serde_json::from_str(include_str!("../fixtures/configs/every-source.json"))
        .expect("tests/fixtures/configs/every-source.json")
}

fn start() -> Envoy {
    let env = [
        ("EMR_PAGERDUTY_SECRET", PD_SECRET),
        ("EMR_PAGERDUTY_SECRET_NEXT", PD_SECRET_NEXT),
        ("EMR_SERVICENOW_USER", SN_USER),
        ("EMR_SERVICENOW_PASSWORD", SN_PASSWORD),
        ("EMR_JSM_SECRET", JSM_SECRET),
        ("EMR_OPSGENIE_TOKEN", OG_TOKEN),
        ("EMR_ALERTMANAGER_TOKEN", AM_TOKEN),
        ("EMR_CANONICAL_TOKEN", CANONICAL_TOKEN),
        ("EMR_STATUS_TOKEN", STATUS_TOKEN),
        ("EMR_STANDARD_WHSEC", WHSEC),
    ];
    Envoy::start(EnvoyOptions {
        config: config(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..EnvoyOptions::default()
    })
}

fn all_secrets() -> [&'static str; 10] {
    [
        PD_SECRET,
        PD_SECRET_NEXT,
        SN_PASSWORD,
        JSM_SECRET,
        OG_TOKEN,
        AM_TOKEN,
        CANONICAL_TOKEN,
        STATUS_TOKEN,
        WHSEC,
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ]
}

// ---- Fixtures, moved to now --------------------------------------------

fn fixture(path: &str) -> Value {
    let file = root().join("tests/fixtures/sources").join(path);
    serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap()
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A PagerDuty v3 webhook payload with its event time set to `t`.
fn pagerduty(path: &str, t: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    let mut v = fixture(path);
    v["event"]["occurred_at"] = json!(rfc3339(t));
    serde_json::to_vec(&v).unwrap()
}

fn servicenow(path: &str) -> Vec<u8> {
    let mut v = fixture(path);
    v["sys_updated_on"] = json!(now().format("%Y-%m-%d %H:%M:%S").to_string());
    serde_json::to_vec(&v).unwrap()
}

fn jsm(path: &str) -> Vec<u8> {
    let mut v = fixture(path);
    v["timestamp"] = json!(now().timestamp_millis());
    serde_json::to_vec(&v).unwrap()
}

fn opsgenie(path: &str) -> Vec<u8> {
    let mut v = fixture(path);
    let t = now();
    v["alert"]["createdAt"] = json!(t.timestamp_millis());
    v["alert"]["updatedAt"] = json!(t.timestamp_nanos_opt().unwrap());
    serde_json::to_vec(&v).unwrap()
}

fn alertmanager(path: &str) -> Vec<u8> {
    let mut v = fixture(path);
    let t = now();
    for a in v["alerts"].as_array_mut().unwrap() {
        if a["status"] == "firing" {
            a["startsAt"] = json!(rfc3339(t - chrono::Duration::seconds(30)));
        } else {
            a["startsAt"] = json!(rfc3339(t - chrono::Duration::seconds(90)));
            a["endsAt"] = json!(rfc3339(t));
        }
    }
    serde_json::to_vec(&v).unwrap()
}

fn canonical(id: &str) -> Vec<u8> {
    let mut v = fixture("standard/incident_active.json");
    v["correlationId"] = json!(id);
    v["timestamp"] = json!(now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    serde_json::to_vec(&v).unwrap()
}

// ---- Signing, as each tool does it ----------------------------------------
// With the RustCrypto and base64 crates rather than emr-core's own auth code,
// so a mistake there cannot cancel itself out here.

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn b64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// `X-PagerDuty-Signature` for `body` signed with `secret`.
fn pd_signature(secret: &str, body: &[u8]) -> String {
    format!("v1={}", hex(&hmac_sha256(secret.as_bytes(), body)))
}

/// Jira's `X-Hub-Signature`.
fn hub_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex(&hmac_sha256(secret.as_bytes(), body)))
}

/// Standard Webhooks' `webhook-signature` over `id.timestamp.body`.
fn whsec_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = b64_decode(secret.trim_start_matches("whsec_"));
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("v1,{}", b64_encode(&hmac_sha256(&key, &signed)))
}

#[test]
fn hmac_matches_the_published_test_vectors() {
    // RFC 4231, test case 2.
    assert_eq!(
        hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // The Standard Webhooks specification's example.
    assert_eq!(
        whsec_signature(
            WHSEC,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

// ---- Requests -------------------------------------------------------------

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(
    c: &reqwest::Client,
    envoy: &Envoy,
    source: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = c
        .post(envoy.url(&format!("/webhooks/{source}")))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.body(body).send().await.unwrap()
}

/// A delivery signed or authenticated the way `source` does it.
fn credentials(source: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    match source {
        "pagerduty" => vec![("x-pagerduty-signature", pd_signature(PD_SECRET, body))],
        "servicenow" => vec![(
            "authorization",
            format!(
                "Basic {}",
                b64_encode(format!("{SN_USER}:{SN_PASSWORD}").as_bytes())
            ),
        )],
        "jsm" => vec![("x-hub-signature", hub_signature(JSM_SECRET, body))],
        "opsgenie" => vec![("x-emr-token", OG_TOKEN.to_owned())],
        "alertmanager" => vec![("authorization", format!("Bearer {AM_TOKEN}"))],
        "canonical" => vec![("authorization", format!("Bearer {CANONICAL_TOKEN}"))],
        "standard" => {
            let (id, t) = ("msg_e2e_0001", now().timestamp());
            vec![
                ("webhook-id", id.to_owned()),
                ("webhook-timestamp", t.to_string()),
                ("webhook-signature", whsec_signature(WHSEC, id, t, body)),
            ]
        }
        other => panic!("no credentials for {other}"),
    }
}

async fn send(
    c: &reqwest::Client,
    envoy: &Envoy,
    source: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    let headers = credentials(source, &body);
    post(c, envoy, source, &headers, body).await
}

async fn accepted(r: reqwest::Response) -> (Option<String>, Value) {
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["content-type"], "application/json");
    (replayed, r.json().await.unwrap())
}

/// Checks a problem answer and that it shows none of the secrets (nor the
/// values in `also`); returns its body.
async fn problem(r: reqwest::Response, status: u16, also: &[&str]) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let headers = format!("{:?}", r.headers());
    let text = r.text().await.unwrap();
    for secret in all_secrets().iter().chain(also) {
        assert!(
            !text.contains(secret) && !headers.contains(secret),
            "{secret} leaked: {text}"
        );
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], status);
    v
}

/// Polls `/emr/status/{id}` (with the status credential) until the service
/// has recorded the incident in `state`.
async fn wait_for_state(c: &reqwest::Client, envoy: &Envoy, id: &str, state: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..150 {
        let r = c
            .get(envoy.url(&format!("/emr/status/{id}")))
            .bearer_auth(STATUS_TOKEN)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            last = r.json().await.unwrap();
            if last["state"] == state {
                return last;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{id} never reached {state}: {last}\n{}", envoy.log_tail(20));
}

// ---- Tests ----------------------------------------------------------------

#[tokio::test]
async fn every_source_is_accepted_and_visible_on_the_status_endpoint() {
    let envoy = start();
    let c = client();
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "pagerduty",
            pagerduty("pagerduty/incident_triggered.json", now()),
            "Q2UEJOMV3XYQ9N",
        ),
        (
            "servicenow",
            servicenow("servicenow/incident_new.json"),
            "INC0010023",
        ),
        ("jsm", jsm("jsm/issue_created.json"), "ITSM-42"),
        (
            "opsgenie",
            opsgenie("opsgenie/alert_create.json"),
            "70ea1b5b-2c5b-4dfe-a7a4-2a1a3ad0a0c5-1723731721329",
        ),
        (
            "canonical",
            canonical("INC-E2E-CANONICAL"),
            "INC-E2E-CANONICAL",
        ),
        (
            "standard",
            canonical("INC-E2E-STANDARD"),
            "INC-E2E-STANDARD",
        ),
    ];
    for (source, body, id) in cases {
        let (replayed, v) = accepted(send(&c, &envoy, source, body).await).await;
        assert_eq!(replayed, None, "{source}");
        assert_eq!(
            v,
            json!({"correlationId": id, "routingMode": "EMERGENCY_ACTIVE",
                   "status": "PROCESSING", "statusUrl": format!("/emr/status/{id}?source={source}")}),
            "{source}"
        );
        let status = wait_for_state(&c, &envoy, id, "OPEN").await;
        assert_eq!(status["source"], source, "{status}");
    }

    // Alertmanager: one incident per alert of the group.
    let r = send(
        &c,
        &envoy,
        "alertmanager",
        alertmanager("alertmanager/firing.json"),
    )
    .await;
    let (_, v) = accepted(r).await;
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{v}");
    for (item, id) in items.iter().zip(["5f3c8e2a9b1d7c40", "a07e61d9c2b84f35"]) {
        assert_eq!(item["correlationId"], id);
        assert_eq!(item["status"], "PROCESSING");
        let status = wait_for_state(&c, &envoy, id, "OPEN").await;
        assert_eq!(
            status["targetQueueIds"],
            json!(["queue-12345", "queue-67890"])
        );
    }

    // The status endpoints need their own credential, not a source's.
    let r = c
        .get(envoy.url("/emr/status/ITSM-42"))
        .send()
        .await
        .unwrap();
    let v = problem(r, 401, &[]).await;
    assert_eq!(v["errors"][0]["field"], "authorization");
    let r = c
        .get(envoy.url("/emr/state"))
        .bearer_auth(AM_TOKEN)
        .send()
        .await
        .unwrap();
    problem(r, 401, &[]).await;

    assert_eq!(envoy.counter("emr.intake.accepted"), 8);
}

#[tokio::test]
async fn ignored_events_are_202_ignored_and_a_replay_answers_the_same() {
    let envoy = start();
    let c = client();
    let cases: [(&str, Vec<u8>); 6] = [
        ("pagerduty", pagerduty("pagerduty/pagey_ping.json", now())),
        (
            "pagerduty",
            pagerduty("pagerduty/incident_acknowledged.json", now()),
        ),
        (
            "servicenow",
            servicenow("servicenow/incident_low_priority.json"),
        ),
        ("jsm", jsm("jsm/comment_created.json")),
        ("opsgenie", opsgenie("opsgenie/alert_acknowledge.json")),
        (
            "alertmanager",
            alertmanager("alertmanager/firing_warning.json"),
        ),
    ];
    for (source, body) in cases {
        let headers = credentials(source, &body);
        let r = post(&c, &envoy, source, &headers, body.clone()).await;
        let (replayed, first) = accepted(r).await;
        assert_eq!(replayed, None, "{source}");
        assert_eq!(first["status"], "IGNORED", "{source}: {first}");
        assert!(first["reason"].is_string(), "{first}");
        let r = post(&c, &envoy, source, &headers, body).await;
        let (replayed, again) = accepted(r).await;
        assert_eq!(replayed.as_deref(), Some("true"), "{source}");
        assert_eq!(again, first);
    }
    assert_eq!(envoy.counter("emr.intake.ignored"), 6);
    assert_eq!(envoy.counter("emr.intake.replayed"), 6);
    assert_eq!(envoy.counter("emr.intake.accepted"), 0);
    assert!(
        envoy.log().contains("ignored"),
        "the ignored events are logged"
    );
}

/// A source, a body, the wrong credential headers and the field the 401 names.
type Refusal = (
    &'static str,
    Vec<u8>,
    Vec<(&'static str, String)>,
    &'static str,
);

#[tokio::test]
async fn bad_credentials_are_401_naming_the_header_only() {
    let envoy = start();
    let c = client();
    let body = pagerduty("pagerduty/incident_triggered.json", now());
    let good = pd_signature(PD_SECRET, &body);

    // A tampered body: the signature was for other bytes.
    let mut tampered: Value = serde_json::from_slice(&body).unwrap();
    tampered["event"]["data"]["urgency"] = json!("low");
    let tampered = serde_json::to_vec(&tampered).unwrap();
    let sig = [("x-pagerduty-signature", good.clone())];
    let r = post(&c, &envoy, "pagerduty", &sig, tampered).await;
    let v = problem(r, 401, &[&good[3..]]).await;
    assert_eq!(v["errors"][0]["field"], "x-pagerduty-signature");

    // A wrong secret.
    let wrong = pd_signature("e2e-some-other-secret-value", &body);
    let r = post(
        &c,
        &envoy,
        "pagerduty",
        &[("x-pagerduty-signature", wrong.clone())],
        body.clone(),
    )
    .await;
    problem(r, 401, &[&wrong[3..]]).await;

    // No signature at all.
    let r = post(&c, &envoy, "pagerduty", &[], body.clone()).await;
    let v = problem(r, 401, &[]).await;
    assert_eq!(v["errors"][0]["message"], "is missing");

    // A rotated secret, alone or beside a retired one, is accepted.
    let both = format!(
        "{},{}",
        pd_signature("e2e-retired-secret-value", &body),
        pd_signature(PD_SECRET_NEXT, &body)
    );
    let r = post(
        &c,
        &envoy,
        "pagerduty",
        &[("x-pagerduty-signature", both)],
        body,
    )
    .await;
    accepted(r).await;

    // Every other source: wrong credential, then none.
    let sn = servicenow("servicenow/incident_new.json");
    let wrong_basic = format!(
        "Basic {}",
        b64_encode(format!("{SN_USER}:e2e-wrong-password").as_bytes())
    );
    let bodies: [Refusal; 6] = [
        (
            "servicenow",
            sn,
            vec![("authorization", wrong_basic)],
            "authorization",
        ),
        (
            "jsm",
            jsm("jsm/issue_created.json"),
            vec![(
                "x-hub-signature",
                hub_signature("e2e-wrong-jsm-secret", b"{}"),
            )],
            "x-hub-signature",
        ),
        (
            "opsgenie",
            opsgenie("opsgenie/alert_create.json"),
            vec![("x-emr-token", "e2e-wrong-token-value".to_owned())],
            "x-emr-token",
        ),
        (
            "alertmanager",
            alertmanager("alertmanager/firing.json"),
            vec![("authorization", "Bearer e2e-wrong-token-value".to_owned())],
            "authorization",
        ),
        (
            "canonical",
            canonical("INC-E2E-401"),
            vec![("authorization", "Bearer e2e-wrong-token-value".to_owned())],
            "authorization",
        ),
        (
            "standard",
            canonical("INC-E2E-401"),
            vec![
                ("webhook-id", "msg_e2e_401".to_owned()),
                ("webhook-timestamp", now().timestamp().to_string()),
                (
                    "webhook-signature",
                    whsec_signature(
                        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX",
                        "msg_e2e_401",
                        now().timestamp(),
                        b"{}",
                    ),
                ),
            ],
            "webhook-signature",
        ),
    ];
    for (source, body, headers, field) in bodies {
        let r = post(&c, &envoy, source, &headers, body.clone()).await;
        let v = problem(r, 401, &["e2e-wrong-password", "e2e-wrong-token-value"]).await;
        assert_eq!(v["errors"][0]["field"], field, "{source}: {v}");
        let r = post(&c, &envoy, source, &[], body).await;
        let v = problem(r, 401, &[]).await;
        assert_eq!(v["errors"][0]["message"], "is missing", "{source}: {v}");
    }

    assert_eq!(envoy.counter("emr.intake.refused.401"), 15);
    assert_eq!(envoy.counter("emr.intake.accepted"), 1);
    let log = envoy.log();
    for secret in all_secrets() {
        assert!(!log.contains(secret), "{secret} is in Envoy's log");
    }
    assert!(log.contains("pagerduty delivery refused (401)"));
}

#[tokio::test]
async fn standard_webhooks_timestamps_must_be_within_five_minutes() {
    let envoy = start();
    let c = client();
    let body = canonical("INC-E2E-SKEW");
    let t = now().timestamp();
    for (n, signed_at) in [t - 600, t + 600].into_iter().enumerate() {
        let id = format!("msg_e2e_skew_{n}");
        let headers = [
            ("webhook-id", id.clone()),
            ("webhook-timestamp", signed_at.to_string()),
            (
                "webhook-signature",
                whsec_signature(WHSEC, &id, signed_at, &body),
            ),
        ];
        let r = post(&c, &envoy, "standard", &headers, body.clone()).await;
        let v = problem(r, 401, &[]).await;
        assert_eq!(v["errors"][0]["field"], "webhook-timestamp", "{v}");
    }
    // A tool's event time far in the future is refused too (422).
    let future = pagerduty(
        "pagerduty/incident_triggered.json",
        now() + chrono::Duration::hours(1),
    );
    let v = problem(send(&c, &envoy, "pagerduty", future).await, 422, &[]).await;
    assert_eq!(v["errors"][0]["field"], "event.occurred_at");
    accepted(send(&c, &envoy, "standard", body).await).await;
}

#[tokio::test]
async fn every_source_refuses_oversized_bodies_and_other_content_types() {
    let envoy = start();
    let c = client();
    for source in [
        "pagerduty",
        "servicenow",
        "jsm",
        "opsgenie",
        "alertmanager",
        "standard",
        "canonical",
    ] {
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100 * 1024)).into_bytes();
        let headers = credentials(source, &big);
        let v = problem(post(&c, &envoy, source, &headers, big).await, 413, &[]).await;
        assert_eq!(v["errors"][0]["field"], "body");

        let body = b"{}".to_vec();
        let mut req = c
            .post(envoy.url(&format!("/webhooks/{source}")))
            .header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in credentials(source, &body) {
            req = req.header(k, v);
        }
        let r = req.body(body).send().await.unwrap();
        let v = problem(r, 415, &[]).await;
        assert_eq!(v["errors"][0]["field"], "content-type", "{source}");
    }
    assert_eq!(envoy.counter("emr.intake.refused.413"), 7);
    assert_eq!(envoy.counter("emr.intake.refused.415"), 7);
}

#[tokio::test]
async fn redeliveries_replay_and_new_events_of_one_incident_are_new() {
    let envoy = start();
    let c = client();
    let t = now() - chrono::Duration::seconds(60);
    let triggered = pagerduty("pagerduty/incident_triggered.json", t);
    let with_id = |body: &[u8], id: &str| {
        vec![
            ("x-pagerduty-signature", pd_signature(PD_SECRET, body)),
            ("x-webhook-id", id.to_owned()),
        ]
    };
    let h = with_id(&triggered, "e2e-delivery-1");
    let (replayed, first) =
        accepted(post(&c, &envoy, "pagerduty", &h, triggered.clone()).await).await;
    assert_eq!(replayed, None);
    // PagerDuty retries the same delivery: the first answer again.
    let (replayed, again) =
        accepted(post(&c, &envoy, "pagerduty", &h, triggered.clone()).await).await;
    assert_eq!((replayed.as_deref(), &again), (Some("true"), &first));
    // The same delivery id with another payload: no signature covers the
    // id, so it only marks a replay of the same body; this event is judged
    // by its own key, and is new (RELIABILITY.md, hostile senders, #7).
    let other = pagerduty(
        "pagerduty/incident_triggered.json",
        t + chrono::Duration::seconds(1),
    );
    let h2 = with_id(&other, "e2e-delivery-1");
    let (replayed, v) = accepted(post(&c, &envoy, "pagerduty", &h2, other).await).await;
    assert_eq!((replayed, &v["status"]), (None, &json!("PROCESSING")));

    // Resolved, then reopened: a new Active event of the same incident.
    let resolved = {
        let mut v = fixture("pagerduty/incident_resolved.json");
        v["event"]["occurred_at"] = json!(rfc3339(t + chrono::Duration::seconds(10)));
        serde_json::to_vec(&v).unwrap()
    };
    let h = with_id(&resolved, "e2e-delivery-2");
    accepted(post(&c, &envoy, "pagerduty", &h, resolved).await).await;
    wait_for_state(&c, &envoy, "Q2UEJOMV3XYQ9N", "RESOLVED").await;
    let reopened = {
        let mut v = fixture("pagerduty/incident_triggered.json");
        v["event"]["event_type"] = json!("incident.reopened");
        v["event"]["occurred_at"] = json!(rfc3339(t + chrono::Duration::seconds(20)));
        serde_json::to_vec(&v).unwrap()
    };
    let h = with_id(&reopened, "e2e-delivery-3");
    let (replayed, v) = accepted(post(&c, &envoy, "pagerduty", &h, reopened).await).await;
    assert_eq!((replayed, &v["status"]), (None, &json!("PROCESSING")));
    wait_for_state(&c, &envoy, "Q2UEJOMV3XYQ9N", "OPEN").await;

    // Alertmanager: one alert resolved and one still firing, in one payload.
    let r = send(
        &c,
        &envoy,
        "alertmanager",
        alertmanager("alertmanager/one_resolved_one_firing.json"),
    )
    .await;
    let (_, v) = accepted(r).await;
    assert_eq!(v["items"][0]["routingMode"], "EMERGENCY_RESOLVED", "{v}");
    assert_eq!(v["items"][1]["routingMode"], "EMERGENCY_ACTIVE", "{v}");

    assert_eq!(envoy.counter("emr.intake.accepted"), 6);
    assert_eq!(envoy.counter("emr.intake.conflicts"), 0);
    assert_eq!(envoy.counter("emr.intake.delivery_id_reused"), 1);
}
