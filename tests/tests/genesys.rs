//! Incidents switch the (simulated) Genesys emergency groups through a real
//! Envoy: the driver, the reconciler's answer handling, and the status the
//! sender sees.

use std::time::Duration;

use emr_e2e::{
    at, eventually, incident, json, latest_status, status_becomes, status_until, Stack, Value,
};
use emr_sim::{
    Fault, Revoke, RoutingState, SimConfig, CARRIER_OUTAGE_GROUP_ID as CARRIER,
    DEFAULT_GROUP_ID as DEFAULT,
};

const SOON: Duration = Duration::from_secs(5);

fn event(id: &str, mode: &str, queues: &[&str], ts: i64) -> Value {
    let mut v = incident(id, mode, queues);
    v["timestamp"] = json!(at(ts));
    v
}

fn puts(stack: &Stack, group: &str) -> usize {
    stack
        .calls("PUT", &format!("/api/v2/architect/emergencygroups/{group}"))
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_enables_the_group_writes_the_row_and_resolution_disables() {
    let s = Stack::start(SimConfig::default(), json!({})).await;
    s.send(&event("INC-1", "EMERGENCY_ACTIVE", &["q1", "q2"], -2))
        .await;
    assert!(
        eventually(SOON, || s.enabled(CARRIER)).await,
        "group not enabled"
    );
    assert!(!s.enabled(DEFAULT), "only the mapped group switches");

    let status = status_becomes(&s, "INC-1", &["APPLIED"], SOON).await;
    assert_eq!(latest_status(&status), "APPLIED", "{status}");
    assert_eq!(status["group"], CARRIER);
    assert!(status["genesys"]["correlationId"].is_string(), "{status}");

    let row = s
        .sim
        .datatable_row(emr_sim::DEFAULT_DATATABLE_ID, CARRIER)
        .expect("row written");
    let row = serde_json::to_value(row).unwrap();
    assert!(row.to_string().contains("q1,q2"), "{row}");

    let group = s.sim.emergency_group(CARRIER).unwrap();
    assert_eq!(
        group.modified_by_app.as_deref(),
        Some(emr_sim::EMR_EDGE_CLIENT_NAME)
    );

    s.send(&event("INC-1", "EMERGENCY_RESOLVED", &[], -1)).await;
    assert!(
        eventually(SOON, || !s.enabled(CARRIER)).await,
        "group not disabled"
    );
    let status = status_until(&s, "INC-1", SOON, |v| {
        v["state"] == "RESOLVED" && latest_status(v) == "APPLIED"
    })
    .await;
    assert_eq!(status["state"], "RESOLVED", "{status}");
    assert_eq!(latest_status(&status), "APPLIED", "{status}");
    assert_eq!(puts(&s, CARRIER), 2, "one PUT on, one PUT off");

    let state = s.state().await;
    assert!(state.to_string().contains(CARRIER), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolving_one_of_two_incidents_keeps_routing_on_with_the_others_queues() {
    let s = Stack::start(SimConfig::default(), json!({})).await;
    s.send(&event("INC-A", "EMERGENCY_ACTIVE", &["qa"], -3))
        .await;
    s.send(&event("INC-B", "EMERGENCY_ACTIVE", &["qb"], -2))
        .await;
    assert!(eventually(SOON, || s.enabled(CARRIER)).await);
    s.send(&event("INC-A", "EMERGENCY_RESOLVED", &[], -1)).await;
    let row_has_only_b = || {
        s.sim
            .datatable_row(emr_sim::DEFAULT_DATATABLE_ID, CARRIER)
            .map(|r| {
                let v = serde_json::to_value(r).unwrap().to_string();
                v.contains("qb") && !v.contains("qa")
            })
            .unwrap_or(false)
    };
    assert!(
        eventually(SOON, row_has_only_b).await,
        "row should list only INC-B's queues"
    );
    assert!(s.enabled(CARRIER), "INC-B still holds the group on");
    let a = status_until(&s, "INC-A", SOON, |v| {
        v["state"] == "RESOLVED" && latest_status(v) == "APPLIED"
    })
    .await;
    assert_eq!(latest_status(&a), "APPLIED", "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_that_overtakes_its_activation_wins() {
    let s = Stack::start(SimConfig::default(), json!({})).await;
    s.send(&event("INC-R", "EMERGENCY_RESOLVED", &[], -1)).await;
    s.send(&event("INC-R", "EMERGENCY_ACTIVE", &["q1"], -5))
        .await;
    let status = status_becomes(&s, "INC-R", &["APPLIED"], SOON).await;
    assert_eq!(status["state"], "RESOLVED", "{status}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!s.enabled(CARRIER));
    assert_eq!(puts(&s, CARRIER), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_storm_makes_exactly_one_put() {
    let s = Stack::start(SimConfig::default(), json!({})).await;
    let body = event("INC-STORM", "EMERGENCY_ACTIVE", &["q1"], -1);
    // One after another (faults.rs races 10,000 copies in parallel).
    for _ in 0..100 {
        s.send(&body).await;
    }
    assert!(eventually(SOON, || s.enabled(CARRIER)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(puts(&s, CARRIER), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_permission_and_unknown_group_fail_with_the_reason() {
    // 403: a client without routing:emergencyGroup:* rights.
    let s = Stack::start_as(
        SimConfig::default(),
        json!({}),
        (emr_sim::NO_PERMS_CLIENT_ID, emr_sim::NO_PERMS_CLIENT_SECRET),
    )
    .await;
    s.send(&event("INC-403", "EMERGENCY_ACTIVE", &["q1"], -1))
        .await;
    let status = status_becomes(&s, "INC-403", &["FAILED"], SOON).await;
    assert_eq!(latest_status(&status), "FAILED", "{status}");
    assert!(status.to_string().contains("403"), "{status}");
    drop(s);

    // 404: a group id that does not exist.
    let s = Stack::start(
        SimConfig::default(),
        json!({"genesys": {"groups_by_incident_type": {"CARRIER_OUTAGE": "00000000-0000-0000-0000-00000000dead"}}}),
    )
    .await;
    s.send(&event("INC-404", "EMERGENCY_ACTIVE", &["q1"], -1))
        .await;
    let status = status_becomes(&s, "INC-404", &["FAILED"], SOON).await;
    assert_eq!(latest_status(&status), "FAILED", "{status}");
    assert!(status.to_string().contains("404"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_success() {
    let s = Stack::start(
        SimConfig::default(),
        json!({"genesys": {"limits": {"backoff_initial_ms": 100, "backoff_max_ms": 400}}}),
    )
    .await;
    s.startup_reads_done().await;
    s.sim
        .add_fault(
            Fault::answer(503)
                .on_method("GET")
                .on_path("/api/v2/architect/emergencygroups")
                .times(3),
        )
        .unwrap();
    s.send(&event("INC-503", "EMERGENCY_ACTIVE", &["q1"], -1))
        .await;
    assert!(eventually(Duration::from_secs(10), || s.enabled(CARRIER)).await);
    let gets = s.calls(
        "GET",
        &format!("/api/v2/architect/emergencygroups/{CARRIER}"),
    );
    assert!(
        gets.len() >= 4,
        "three 503s then a good read: {}",
        gets.len()
    );
    assert_eq!(
        latest_status(&status_becomes(&s, "INC-503", &["APPLIED"], SOON).await),
        "APPLIED"
    );
    s.assert_accounted(&["INC-503".to_owned()], SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_every_call_until_retry_after() {
    let s = Stack::start(SimConfig::default(), json!({})).await;
    s.startup_reads_done().await;
    s.sim
        .add_fault(
            Fault::answer(429)
                .on_method("GET")
                .on_path("/api/v2/architect/emergencygroups")
                .with_retry_after(2)
                .times(1),
        )
        .unwrap();
    s.send(&event("INC-429", "EMERGENCY_ACTIVE", &["q1"], -1))
        .await;
    assert!(eventually(Duration::from_secs(10), || s.enabled(CARRIER)).await);
    let api: Vec<_> = s
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/"))
        .collect();
    let limited = api
        .iter()
        .find(|r| r.status == Some(429))
        .expect("a 429 was answered");
    let next = api
        .iter()
        .find(|r| r.seq > limited.seq)
        .expect("a call after the 429");
    assert!(
        next.received_ms >= limited.received_ms + 2000,
        "next call {} ms after the 429, before Retry-After",
        next.received_ms - limited.received_ms
    );
    s.assert_accounted(&["INC-429".to_owned()], SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refreshed_once_and_the_call_retried() {
    let s = Stack::start(SimConfig::default(), json!({})).await;
    s.send(&event("INC-T1", "EMERGENCY_ACTIVE", &["q1"], -3))
        .await;
    assert!(eventually(SOON, || s.enabled(CARRIER)).await);
    let tokens_before = s.calls("POST", "/oauth/token").len();
    s.sim.revoke_tokens(Revoke::All);
    s.send(&event("INC-T1", "EMERGENCY_RESOLVED", &[], -1))
        .await;
    assert!(
        eventually(SOON, || !s.enabled(CARRIER)).await,
        "resolution applied after a refresh"
    );
    assert_eq!(s.calls("POST", "/oauth/token").len(), tokens_before + 1);
    s.assert_accounted(&["INC-T1".to_owned()], SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_conflict_from_a_concurrent_writer_is_read_again() {
    let s = Stack::start(SimConfig::default(), json!({})).await;
    // Another writer bumps the version between our read and our write.
    s.sim
        .add_fault(Fault::answer(409).on_method("PUT").on_path("/api/v2/architect/emergencygroups").times(1).with_body(json!({
            "message": "The version supplied does not match the current version of the object",
            "code": "general.conflict", "status": 409, "contextId": "x", "details": [], "errors": []
        })))
        .unwrap();
    s.send(&event("INC-409", "EMERGENCY_ACTIVE", &["q1"], -1))
        .await;
    assert!(eventually(SOON, || s.enabled(CARRIER)).await);
    assert_eq!(
        puts(&s, CARRIER),
        2,
        "one conflict, then one write after a fresh read"
    );
    s.assert_accounted(&["INC-409".to_owned()], SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried_after_a_fresh_read() {
    let s = Stack::start(
        SimConfig::default(),
        json!({"genesys": {"limits": {"call_timeout_ms": 500, "backoff_initial_ms": 100}}}),
    )
    .await;
    s.sim
        .add_fault(
            Fault::delay(Duration::from_millis(1500))
                .on_method("GET")
                .on_path("/api/v2/architect/emergencygroups")
                .times(1),
        )
        .unwrap();
    s.send(&event("INC-SLOW", "EMERGENCY_ACTIVE", &["q1"], -1))
        .await;
    assert!(eventually(Duration::from_secs(10), || s.enabled(CARRIER)).await);
    assert_eq!(
        latest_status(&status_becomes(&s, "INC-SLOW", &["APPLIED"], SOON).await),
        "APPLIED"
    );
    s.assert_accounted(&["INC-SLOW".to_owned()], SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_contract_driver_works_end_to_end() {
    let s = Stack::start(
        SimConfig {
            propagation_delay_ms: 300,
            ..SimConfig::default()
        },
        json!({"genesys": {"driver": "guide-contract", "groups_by_incident_type": {}, "datatable": null, "guide": {"pending_poll_ms": 100}}}),
    )
    .await;
    s.send(&event("INC-G", "EMERGENCY_ACTIVE", &["q1", "q2"], -2))
        .await;
    assert!(
        eventually(SOON, || matches!(
            s.sim.guide_routing().state,
            RoutingState::Active
        ))
        .await
    );
    let status = status_becomes(&s, "INC-G", &["APPLIED"], SOON).await;
    assert_eq!(latest_status(&status), "APPLIED", "{status}");
    let posted = s.calls("POST", "/api/v2/telephony/emergencyrouting");
    assert_eq!(posted.len(), 1);
    s.send(&event("INC-G", "EMERGENCY_RESOLVED", &[], -1)).await;
    assert!(
        eventually(SOON, || matches!(
            s.sim.guide_routing().state,
            RoutingState::Inactive
        ))
        .await
    );
}
