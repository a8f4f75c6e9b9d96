//! The login host's client-credentials grant, `/api/v2/tokens/me`, revocation and expiry.

use std::time::Duration;

use emr_sim::{
    Revoke, SimConfig, EMR_EDGE_CLIENT_ID, EMR_EDGE_CLIENT_SECRET, NO_PERMS_CLIENT_ID,
    NO_PERMS_CLIENT_SECRET, UI_ADMIN_CLIENT_ID, UI_ADMIN_CLIENT_NAME, UI_ADMIN_CLIENT_SECRET,
};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::Api;

#[tokio::test]
async fn client_credentials_get_a_bearer_token() {
    let api = Api::seeded().await;
    let answer = api
        .token_request(
            Some((EMR_EDGE_CLIENT_ID, EMR_EDGE_CLIENT_SECRET)),
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["token_type"], "bearer");
    assert_eq!(answer.body["expires_in"], 86_400);
    assert!(answer.body["access_token"].as_str().unwrap().len() >= 32);
    let logged = api.sim.requests();
    assert_eq!(logged[0].path, "/oauth/token");
    assert_eq!(logged[0].client_id.as_deref(), Some(EMR_EDGE_CLIENT_ID));
    assert_eq!(logged[0].body, Some(json!("grant_type=client_credentials")));
}

#[tokio::test]
async fn bad_clients_get_oauth_errors() {
    let api = Api::seeded().await;
    let grant = "grant_type=client_credentials";
    for basic in [
        None,
        Some((EMR_EDGE_CLIENT_ID, "wrong")),
        Some(("nobody", "secret")),
    ] {
        let answer = api.token_request(basic, grant).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{basic:?}");
        assert_eq!(answer.body["error"], "invalid_client");
        assert!(answer.body["description"].is_string());
    }
    let good = Some((EMR_EDGE_CLIENT_ID, EMR_EDGE_CLIENT_SECRET));
    let answer = api.token_request(good, "grant_type=password").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["error"], "unsupported_grant_type");
    let answer = api.token_request(good, "scope=x").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["error"], "invalid_request");
}

#[tokio::test]
async fn tokens_me_says_who_the_token_is() {
    let api = Api::seeded().await;
    let token = api.token(UI_ADMIN_CLIENT_ID, UI_ADMIN_CLIENT_SECRET).await;
    let answer = api.get("/api/v2/tokens/me", &token).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["OAuthClient"]["id"], UI_ADMIN_CLIENT_ID);
    assert_eq!(answer.body["OAuthClient"]["name"], UI_ADMIN_CLIENT_NAME);
    assert_eq!(
        answer.body["organization"]["id"],
        api.sim.config().organization.id
    );
    assert_eq!(answer.body["homeOrganization"], answer.body["organization"]);
    assert_eq!(answer.header("inin-ratelimit-allowed"), "300");
    assert_eq!(answer.header("inin-ratelimit-count"), "1");
    assert_eq!(answer.header("inin-correlation-id").len(), 36);

    let head = api
        .call(Method::HEAD, "/api/v2/tokens/me", Some(&token), None)
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_null());
}

#[tokio::test]
async fn missing_and_unknown_tokens_are_bad_credentials() {
    let api = Api::seeded().await;
    let answer = api.call(Method::GET, "/api/v2/tokens/me", None, None).await;
    answer.assert_genesys_error(401, "bad.credentials");
    let answer = api.get("/api/v2/tokens/me", "made-up").await;
    answer.assert_genesys_error(401, "bad.credentials");
    let head = api
        .call(Method::HEAD, "/api/v2/tokens/me", Some("made-up"), None)
        .await;
    assert_eq!(head.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoked_tokens_stop_working() {
    let api = Api::seeded().await;
    let emr = api.emr_token().await;
    let other = api.token(NO_PERMS_CLIENT_ID, NO_PERMS_CLIENT_SECRET).await;

    // By client id, through the control API.
    let answer = api
        .control(
            Method::POST,
            "/__sim/tokens/revoke",
            Some(json!({"client_id": EMR_EDGE_CLIENT_ID})),
        )
        .await;
    assert_eq!(answer.body["revoked"], 1);
    api.get("/api/v2/tokens/me", &emr)
        .await
        .assert_genesys_error(401, "bad.credentials");
    assert_eq!(
        api.get("/api/v2/tokens/me", &other).await.status,
        StatusCode::OK
    );

    // One token, through the Rust API.
    assert_eq!(api.sim.revoke_tokens(Revoke::AccessToken(other.clone())), 1);
    assert_eq!(
        api.get("/api/v2/tokens/me", &other).await.status,
        StatusCode::UNAUTHORIZED
    );

    // All of them.
    let fresh = api.emr_token().await;
    let answer = api
        .control(Method::POST, "/__sim/tokens/revoke", None)
        .await;
    assert_eq!(answer.body["revoked"], 1);
    assert_eq!(
        api.get("/api/v2/tokens/me", &fresh).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn tokens_expire_after_their_lifetime() {
    let api = Api::start(SimConfig {
        token_lifetime_secs: 1,
        ..SimConfig::default()
    })
    .await;
    let answer = api
        .token_request(
            Some((EMR_EDGE_CLIENT_ID, EMR_EDGE_CLIENT_SECRET)),
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(answer.body["expires_in"], 1);
    let token = answer.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        api.get("/api/v2/tokens/me", &token).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    api.get("/api/v2/tokens/me", &token)
        .await
        .assert_genesys_error(401, "bad.credentials");
}
