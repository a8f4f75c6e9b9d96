//! The guide's `/api/v2/telephony/emergencyrouting` contract.

use std::time::Duration;

use emr_sim::{RoutingState, SimConfig};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::Api;

const PATH: &str = "/api/v2/telephony/emergencyrouting";

fn activate() -> serde_json::Value {
    json!({
        "reason": "INC-2024-08-15-7742",
        "state": "ACTIVE",
        "routingConfiguration": {"queueIds": ["queue-12345", "queue-67890"], "priority": 1},
    })
}

#[tokio::test]
async fn without_a_delay_the_change_applies_at_once() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let before = api.get(PATH, &token).await;
    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(before.body["state"], "INACTIVE");
    assert!(before.body["lastUpdated"].is_string());

    let answer = api.post(PATH, &token, activate()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["state"], "ACTIVE");
    let after = api.get(PATH, &token).await;
    assert_eq!(after.body["reason"], "INC-2024-08-15-7742");
    assert_eq!(
        after.body["routingConfiguration"]["queueIds"],
        json!(["queue-12345", "queue-67890"])
    );
}

#[tokio::test]
async fn with_a_delay_the_change_is_pending_first() {
    let api = Api::start(SimConfig {
        propagation_delay_ms: 300,
        ..SimConfig::default()
    })
    .await;
    let token = api.emr_token().await;
    let answer = api.post(PATH, &token, activate()).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.body["state"], "PENDING");
    assert_eq!(api.get(PATH, &token).await.body["state"], "PENDING");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(api.get(PATH, &token).await.body["state"], "ACTIVE");
    assert_eq!(api.sim.guide_routing().state, RoutingState::Active);
}

#[tokio::test]
async fn bad_requests_and_missing_tokens_are_refused() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    api.post(PATH, &token, json!({"state": "PENDING"}))
        .await
        .assert_genesys_error(400, "bad.request");
    api.post(PATH, &token, json!({"state": "ON"}))
        .await
        .assert_genesys_error(400, "bad.request");
    api.get(PATH, "nope")
        .await
        .assert_genesys_error(401, "bad.credentials");
}
