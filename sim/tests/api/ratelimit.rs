//! The per-token rate limit.

use std::time::Duration;

use emr_sim::SimConfig;
use reqwest::StatusCode;

use crate::common::Api;

const ME: &str = "/api/v2/tokens/me";

#[tokio::test]
async fn over_the_limit_a_token_gets_429_with_retry_after() {
    let api = Api::start(SimConfig {
        rate_limit_per_minute: 3,
        ..SimConfig::default()
    })
    .await;
    let token = api.emr_token().await;
    for count in 1..=3 {
        let answer = api.get(ME, &token).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("inin-ratelimit-count"), count.to_string());
        assert_eq!(answer.header("inin-ratelimit-allowed"), "3");
        let reset: u64 = answer.header("inin-ratelimit-reset").parse().unwrap();
        assert!((1..=60).contains(&reset));
    }
    let refused = api.get(ME, &token).await;
    refused.assert_genesys_error(429, "too.many.requests.retry.after");
    let retry_after: u64 = refused.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(
        refused.body["message"],
        format!("Rate limit exceeded the maximum. Retry the request in [{retry_after}] seconds")
    );
    assert_eq!(refused.header("inin-ratelimit-count"), "4");

    // The limit is per token.
    let other = api.emr_token().await;
    assert_eq!(api.get(ME, &other).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_window_resets() {
    let api = Api::start(SimConfig {
        rate_limit_per_minute: 1,
        rate_limit_window_secs: 1,
        ..SimConfig::default()
    })
    .await;
    let token = api.emr_token().await;
    assert_eq!(api.get(ME, &token).await.status, StatusCode::OK);
    let refused = api.get(ME, &token).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("retry-after"), "1");
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    assert_eq!(api.get(ME, &token).await.status, StatusCode::OK);
}
