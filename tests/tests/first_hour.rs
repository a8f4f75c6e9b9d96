//! A new user's first hour: what is wrong with the Genesys side
//! shows at start — logged at error, on `/emr/state`, and as a `degraded`
//! `/emr/health` — not during the first incident.

use std::time::Duration;

use emr_e2e::{json, Stack, Value};
use emr_sim::{SimConfig, EMR_EDGE_CLIENT_ID};

const SOON: Duration = Duration::from_secs(10);

async fn health(s: &Stack) -> (u16, Value) {
    let r = s
        .http
        .get(s.envoy.url("/emr/health"))
        .send()
        .await
        .expect("health unreachable");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until `/emr/health` says `degraded`, and asserts it is a 200
/// (up, not dead: a probe must not restart it); returns its reasons.
async fn degraded(s: &Stack) -> String {
    let deadline = std::time::Instant::now() + SOON;
    loop {
        let (status, body) = health(s).await;
        if body["status"] == "degraded" || std::time::Instant::now() >= deadline {
            assert_eq!(
                (status, &body["status"]),
                (200, &json!("degraded")),
                "{body}"
            );
            return body["reasons"].to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Envoy log line that holds `needle`.
fn log_line(s: &Stack, needle: &str) -> String {
    s.envoy
        .log()
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_is_degraded_health_at_start() {
    let s = Stack::start_as(
        SimConfig::default(),
        json!({}),
        (EMR_EDGE_CLIENT_ID, "not-the-right-secret-at-all"),
    )
    .await;
    let reasons = degraded(&s).await;
    assert!(reasons.contains("credentials"), "{reasons}");
    assert!(!reasons.contains("not-the-right-secret"), "{reasons}");
    let line = log_line(
        &s,
        "emr-edge cannot switch: Genesys refused the OAuth client credentials",
    );
    assert!(line.contains("[error]"), "not logged at error: {line:?}");
    assert!(!s.envoy.log().contains("not-the-right-secret"));
    let state = s.state().await;
    assert_eq!(state["health"]["status"], "degraded", "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_does_not_exist_is_degraded_health_at_start() {
    const MISSING: &str = "3c3f7a3e-2f5c-4f3a-9b1e-00000000dead";
    let s = Stack::start(
        SimConfig::default(),
        json!({"genesys": {"groups_by_incident_type": {"SIP_TRUNK_DOWN": MISSING}}}),
    )
    .await;
    let reasons = degraded(&s).await;
    assert!(reasons.contains(MISSING), "{reasons}");
    assert!(reasons.contains("not its name"), "{reasons}");
    let line = log_line(&s, &format!("emergency group {MISSING}"));
    assert!(line.contains("[error]"), "not logged at error: {line:?}");
    // Every configured group is on the state from the start; the missing one
    // says why.
    let missing = s.group_state(MISSING).await;
    assert!(
        missing["problem"]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("404"),
        "{missing}"
    );
    let fine = s.group_state(emr_sim::DEFAULT_GROUP_ID).await;
    assert!(fine.is_object() && fine.get("problem").is_none(), "{fine}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_setup_is_ok_health() {
    let s = Stack::start(SimConfig::default(), json!({})).await;
    // Give the start-up reads time to land.
    let deadline = std::time::Instant::now() + SOON;
    while s.calls("GET", "/api/v2/architect/emergencygroups/").len() < 2
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(s.calls("GET", "/api/v2/architect/emergencygroups/").len() >= 2);
    let (status, body) = health(&s).await;
    assert_eq!((status, &body["status"]), (200, &json!("ok")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_a_permission_is_degraded_health_at_start() {
    // The OAuth client's role cannot read emergency groups.
    let mut sim = SimConfig::default();
    for c in &mut sim.clients {
        if c.id == EMR_EDGE_CLIENT_ID {
            c.permissions.retain(|p| p != "routing:emergencyGroup:view");
        }
    }
    let s = Stack::start(sim, json!({})).await;
    let reasons = degraded(&s).await;
    assert!(reasons.contains("lacks a permission"), "{reasons}");
    assert!(reasons.contains("routing:emergencyGroup:view"), "{reasons}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_table_that_does_not_exist_is_degraded_health_at_start() {
    let s = Stack::start(
        SimConfig::default(),
        json!({"genesys": {"datatable": {"id": "0d1e2f3a-4b5c-4d6e-8f70-00000000beef"}}}),
    )
    .await;
    let reasons = degraded(&s).await;
    assert!(
        reasons.contains("datatable: no such data table"),
        "{reasons}"
    );
    let line = log_line(&s, "emr-edge cannot switch: the data table cannot be read");
    assert!(line.contains("[error]"), "not logged at error: {line:?}");
}
