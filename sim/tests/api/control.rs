//! The control API's request log, reset and health, and what every answer carries.

use emr_sim::{DEFAULT_GROUP_ID, EMR_EDGE_CLIENT_ID};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::Api;

#[tokio::test]
async fn the_request_log_records_what_was_asked_and_answered() {
    let api = Api::seeded().await;
    assert_eq!(
        api.control(Method::GET, "/__sim/health", None).await.body,
        json!({"status": "ok"})
    );
    let token = api.emr_token().await;
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    api.get("/api/v2/architect/emergencygroups?pageSize=5", &token)
        .await;
    let log = api.control(Method::GET, "/__sim/requests", None).await;
    let records = log.body.as_array().unwrap();
    // The control calls themselves are not logged.
    assert_eq!(records.len(), 2);
    let listing = &records[1];
    assert_eq!(listing["method"], "GET");
    assert_eq!(listing["path"], "/api/v2/architect/emergencygroups");
    assert_eq!(listing["query"], "pageSize=5");
    assert_eq!(listing["status"], 200);
    assert_eq!(listing["reset"], false);
    assert_eq!(listing["client_id"], EMR_EDGE_CLIENT_ID);
    assert!(listing["received_ms"].as_u64().unwrap() >= before_ms);
    assert!(listing["body"].is_null());
    assert_eq!(listing["correlation_id"].as_str().unwrap().len(), 36);
    assert!(records[0]["seq"].as_u64() < listing["seq"].as_u64());

    let filtered = api
        .control(
            Method::GET,
            "/__sim/requests?method=post&path_prefix=/oauth",
            None,
        )
        .await;
    assert_eq!(filtered.body.as_array().unwrap().len(), 1);
    let since = api
        .control(
            Method::GET,
            &format!("/__sim/requests?since_ms={}", u64::MAX / 2),
            None,
        )
        .await;
    assert_eq!(since.body, json!([]));

    let cleared = api.control(Method::DELETE, "/__sim/requests", None).await;
    assert_eq!(cleared.status, StatusCode::NO_CONTENT);
    assert!(api.sim.requests().is_empty());
}

#[tokio::test]
async fn every_answer_carries_a_correlation_id() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let unknown = api.get("/api/v2/nothing/here", &token).await;
    unknown.assert_genesys_error(404, "not.found");
    let wrong_method = api
        .call(Method::DELETE, "/api/v2/tokens/me", Some(&token), None)
        .await;
    wrong_method.assert_genesys_error(405, "method.not.allowed");
    let oauth = api
        .token_request(None, "grant_type=client_credentials")
        .await;
    assert_eq!(oauth.header("inin-correlation-id").len(), 36);
}

#[tokio::test]
async fn bodies_over_512000_bytes_are_refused() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let huge = json!({"key": "r", "pad": "x".repeat(520_000)});
    let answer = api
        .put(
            "/api/v2/flows/datatables/emr-datatable-0001/rows/r",
            &token,
            huge,
        )
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.body["status"], 413);
}

#[tokio::test]
async fn reset_puts_the_seed_back() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    api.sim
        .patch_emergency_group(DEFAULT_GROUP_ID, json!({"enabled": true}))
        .unwrap();
    let answer = api.control(Method::POST, "/__sim/reset", None).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let group = api.sim.emergency_group(DEFAULT_GROUP_ID).unwrap();
    assert!(!group.enabled);
    assert_eq!(group.version, 1);
    assert!(api.sim.requests().is_empty());
    // Tokens are forgotten too.
    assert_eq!(
        api.get("/api/v2/tokens/me", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
}
