//! Injected faults and outages.

use std::time::{Duration, Instant};

use emr_sim::{Fault, OutageMode, DEFAULT_GROUP_ID};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::Api;

const ME: &str = "/api/v2/tokens/me";

fn group_path() -> String {
    format!("/api/v2/architect/emergencygroups/{DEFAULT_GROUP_ID}")
}

#[tokio::test]
async fn a_counted_status_fault_answers_then_disappears() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let added = api
        .control(
            Method::POST,
            "/__sim/faults",
            Some(json!({"method": "GET", "path_prefix": "/api/v2/architect/", "status": 503, "count": 2})),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED);
    assert!(added.body["id"].is_u64());
    let listed = api.control(Method::GET, "/__sim/faults", None).await;
    assert_eq!(listed.body[0]["status"], 503);

    // Other paths are untouched.
    assert_eq!(api.get(ME, &token).await.status, StatusCode::OK);
    for _ in 0..2 {
        api.get(&group_path(), &token)
            .await
            .assert_genesys_error(503, "service.unavailable");
    }
    assert_eq!(api.get(&group_path(), &token).await.status, StatusCode::OK);
    assert!(api.sim.faults().is_empty());

    let injected: Vec<_> = api
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.injected)
        .collect();
    assert_eq!(injected.len(), 2);
    assert!(injected.iter().all(|r| r.status == Some(503)));
}

#[tokio::test]
async fn a_fault_can_carry_retry_after_and_its_own_body() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    api.sim
        .add_fault(Fault::answer(429).on_path(ME).with_retry_after(7).times(1))
        .unwrap();
    let limited = api.get(ME, &token).await;
    limited.assert_genesys_error(429, "too.many.requests.retry.after");
    assert_eq!(limited.header("retry-after"), "7");
    assert!(limited.body["message"].as_str().unwrap().contains("[7]"));

    api.sim
        .add_fault(Fault::answer(502).with_body(json!({"oops": true})).times(1))
        .unwrap();
    let custom = api.get(ME, &token).await;
    assert_eq!(custom.status, StatusCode::BAD_GATEWAY);
    assert_eq!(custom.body, json!({"oops": true}));
    assert_eq!(custom.header("inin-correlation-id").len(), 36);
}

#[tokio::test]
async fn a_reset_fault_closes_the_connection_without_an_answer() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    api.sim
        .add_fault(Fault::reset_connection().on_method("PUT").times(1))
        .unwrap();
    let group = serde_json::to_value(api.sim.emergency_group(DEFAULT_GROUP_ID).unwrap()).unwrap();
    let error = api
        .http
        .put(api.url(&group_path()))
        .bearer_auth(&token)
        .json(&group)
        .send()
        .await
        .expect_err("the connection is reset");
    assert!(!error.is_status(), "{error:?}");
    let logged = api.sim.requests();
    let reset = logged.iter().find(|r| r.method == "PUT").unwrap();
    assert!(reset.reset);
    assert_eq!(reset.status, None);
    // The write never happened, and the next request is answered.
    assert_eq!(
        api.sim.emergency_group(DEFAULT_GROUP_ID).unwrap().version,
        1
    );
    assert_eq!(
        api.put(&group_path(), &token, group).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_delay_fault_delays_then_answers() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    api.sim
        .add_fault(
            Fault::delay(Duration::from_millis(300))
                .on_path(ME)
                .times(1),
        )
        .unwrap();
    let started = Instant::now();
    assert_eq!(api.get(ME, &token).await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    api.sim
        .add_fault(
            Fault::answer(504)
                .after(Duration::from_millis(200))
                .times(1),
        )
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        api.get(ME, &token).await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    let logged = api.sim.requests();
    assert!(logged.last().unwrap().duration_ms >= 200);
}

#[tokio::test]
async fn a_late_answer_makes_the_change_then_holds_the_answer() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let before = api.sim.emergency_group(DEFAULT_GROUP_ID).unwrap();
    api.sim
        .add_fault(
            Fault::answer_late(Duration::from_secs(5))
                .on_method("PUT")
                .times(1),
        )
        .unwrap();
    let mut body = serde_json::to_value(&before).unwrap();
    body["enabled"] = json!(true);
    // The caller gives up long before the answer comes.
    let gave_up = api
        .http
        .put(api.url(&group_path()))
        .bearer_auth(&token)
        .json(&body)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.is_err(), "answered before the hold: {gave_up:?}");
    let after = api.sim.emergency_group(DEFAULT_GROUP_ID).unwrap();
    assert!(after.enabled, "the change was made");
    assert_eq!(after.version, before.version + 1);
    let logged = api.sim.requests();
    let put = logged.iter().find(|r| r.method == "PUT").unwrap();
    assert_eq!(put.status, Some(200));
    assert!(put.injected);
}

#[tokio::test]
async fn faults_can_be_cleared_and_bad_ones_are_refused() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    api.sim.add_fault(Fault::answer(500)).unwrap();
    assert_eq!(
        api.get(ME, &token).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let cleared = api.control(Method::DELETE, "/__sim/faults", None).await;
    assert_eq!(cleared.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get(ME, &token).await.status, StatusCode::OK);

    for bad in [
        json!({}),
        json!({"status": 42}),
        json!({"status": 503, "reset": true}),
        json!({"status": 503, "answer_delay_ms": 100}),
        json!({"reset": true, "answer_delay_ms": 100}),
        json!({"status": 503, "count": 0}),
        json!({"status": 503, "colour": "red"}),
    ] {
        let answer = api
            .control(Method::POST, "/__sim/faults", Some(bad.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(answer.body["error"].is_string());
    }
    // The control API itself is never faulted.
    api.sim.add_fault(Fault::answer(500)).unwrap();
    let health = api.control(Method::GET, "/__sim/health", None).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn an_outage_refuses_everything_until_it_ends() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let down = api
        .control(Method::POST, "/__sim/down", Some(json!({"seconds": 0.3})))
        .await;
    assert_eq!(down.status, StatusCode::NO_CONTENT);
    let error = api
        .http
        .get(api.url(ME))
        .bearer_auth(&token)
        .send()
        .await
        .expect_err("reset while down");
    assert!(!error.is_status());
    assert_eq!(
        api.control(Method::GET, "/__sim/health", None).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(api.get(ME, &token).await.status, StatusCode::OK);

    api.sim
        .go_down(Duration::from_secs(60), OutageMode::Unavailable)
        .unwrap();
    api.get(ME, &token)
        .await
        .assert_genesys_error(503, "service.unavailable");
    let up = api.control(Method::DELETE, "/__sim/down", None).await;
    assert_eq!(up.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get(ME, &token).await.status, StatusCode::OK);
}
