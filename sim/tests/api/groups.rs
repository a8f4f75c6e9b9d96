//! Architect emergency groups: listing, reading, optimistic writes, permissions.

use emr_sim::{
    CARRIER_OUTAGE_GROUP_ID, DEFAULT_GROUP_ID, EMR_EDGE_CLIENT_ID, EMR_EDGE_CLIENT_NAME,
    NO_PERMS_CLIENT_ID, NO_PERMS_CLIENT_SECRET, UI_ADMIN_CLIENT_ID, UI_ADMIN_CLIENT_NAME,
    UI_ADMIN_CLIENT_SECRET, UI_ADMIN_USER_ID,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::Api;

const LIST: &str = "/api/v2/architect/emergencygroups";

fn group_path(id: &str) -> String {
    format!("{LIST}/{id}")
}

fn is_iso_millis(value: &Value) -> bool {
    let text = value.as_str().unwrap_or_default();
    text.len() == 24 && text.ends_with('Z') && text.as_bytes().get(19) == Some(&b'.')
}

#[tokio::test]
async fn the_listing_pages_and_filters_by_name() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let answer = api.get(LIST, &token).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["total"], 2);
    assert_eq!(answer.body["pageSize"], 25);
    assert_eq!(answer.body["pageNumber"], 1);
    assert_eq!(answer.body["pageCount"], 1);
    assert_eq!(
        answer.body["firstUri"],
        "/api/v2/architect/emergencygroups?pageSize=25&pageNumber=1"
    );
    assert_eq!(answer.body["selfUri"], answer.body["firstUri"]);
    assert_eq!(answer.body["lastUri"], answer.body["firstUri"]);
    let names: Vec<&str> = answer.body["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Carrier Outage", "Default Emergency"]);

    let page = api
        .get(&format!("{LIST}?pageSize=1&pageNumber=2"), &token)
        .await;
    assert_eq!(page.body["pageCount"], 2);
    assert_eq!(page.body["entities"][0]["id"], DEFAULT_GROUP_ID);
    assert_eq!(
        page.body["previousUri"],
        "/api/v2/architect/emergencygroups?pageSize=1&pageNumber=1"
    );
    assert!(page.body.get("nextUri").is_none());

    let named = api
        .get(&format!("{LIST}?name=Carrier%20Outage"), &token)
        .await;
    assert_eq!(named.body["total"], 1);
    assert_eq!(named.body["entities"][0]["id"], CARRIER_OUTAGE_GROUP_ID);
    assert_eq!(
        named.body["selfUri"],
        "/api/v2/architect/emergencygroups?pageSize=25&pageNumber=1&name=Carrier+Outage"
    );
    let none = api.get(&format!("{LIST}?name=nothing*"), &token).await;
    assert_eq!(none.body["total"], 0);
    assert_eq!(none.body["entities"], json!([]));

    api.get(&format!("{LIST}?pageSize=zero"), &token)
        .await
        .assert_genesys_error(400, "bad.request");
}

#[tokio::test]
async fn a_group_has_the_genesys_model() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let answer = api.get(&group_path(CARRIER_OUTAGE_GROUP_ID), &token).await;
    assert_eq!(answer.status, StatusCode::OK);
    let group = &answer.body;
    assert_eq!(group["id"], CARRIER_OUTAGE_GROUP_ID);
    assert_eq!(group["name"], "Carrier Outage");
    assert_eq!(group["enabled"], false);
    assert_eq!(group["version"], 1);
    assert_eq!(group["state"], "active");
    assert!(group["description"].is_string());
    assert!(group["division"]["id"].is_string());
    assert!(group["division"]["selfUri"].is_string());
    assert!(group["emergencyCallFlows"][0]["emergencyFlow"]["id"].is_string());
    assert!(group["emergencyCallFlows"][0]["ivrs"][0]["name"].is_string());
    assert!(
        is_iso_millis(&group["dateModified"]),
        "{}",
        group["dateModified"]
    );
    assert_eq!(
        group["selfUri"],
        format!("/api/v2/architect/emergencygroups/{CARRIER_OUTAGE_GROUP_ID}")
    );

    api.get(&group_path("3c3f7a3e-0000-0000-0000-000000000099"), &token)
        .await
        .assert_genesys_error(404, "not.found");
}

#[tokio::test]
async fn a_put_with_the_current_version_switches_the_group() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let path = group_path(DEFAULT_GROUP_ID);
    let mut group = api.get(&path, &token).await.body;
    group["enabled"] = json!(true);
    let answer = api.put(&path, &token, group.clone()).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["enabled"], true);
    assert_eq!(answer.body["version"], 2);
    assert_eq!(answer.body["modifiedByApp"], EMR_EDGE_CLIENT_NAME);
    assert!(answer.body.get("modifiedBy").is_none());
    assert!(is_iso_millis(&answer.body["dateModified"]));
    assert_ne!(answer.body["dateModified"], group["dateModified"]);
    assert_eq!(
        answer.body["emergencyCallFlows"],
        group["emergencyCallFlows"]
    );
    assert_eq!(api.get(&path, &token).await.body, answer.body);

    // The same (now stale) version again is a conflict.
    let stale = api.put(&path, &token, group.clone()).await;
    stale.assert_genesys_error(409, "general.conflict");
    assert!(stale.body["message"]
        .as_str()
        .unwrap()
        .contains("does not match the current version"));

    // No version at all is a bad request.
    let mut unversioned = group.clone();
    unversioned.as_object_mut().unwrap().remove("version");
    api.put(&path, &token, unversioned)
        .await
        .assert_genesys_error(400, "bad.request");

    // Unknown id.
    let mut elsewhere = group.clone();
    elsewhere.as_object_mut().unwrap().remove("id");
    api.put(&group_path("nope"), &token, elsewhere)
        .await
        .assert_genesys_error(404, "not.found");

    let logged = api.sim.requests();
    let put = logged.iter().find(|r| r.method == "PUT").unwrap();
    assert_eq!(put.status, Some(200));
    assert_eq!(put.client_id.as_deref(), Some(EMR_EDGE_CLIENT_ID));
    assert_eq!(put.body.as_ref().unwrap()["enabled"], true);
}

#[tokio::test]
async fn a_person_in_the_admin_ui_leaves_their_mark() {
    let api = Api::seeded().await;
    let token = api.token(UI_ADMIN_CLIENT_ID, UI_ADMIN_CLIENT_SECRET).await;
    let path = group_path(DEFAULT_GROUP_ID);
    let mut group = api.get(&path, &token).await.body;
    group["enabled"] = json!(true);
    let answer = api.put(&path, &token, group).await;
    assert_eq!(answer.body["modifiedByApp"], UI_ADMIN_CLIENT_NAME);
    assert_eq!(answer.body["modifiedBy"], UI_ADMIN_USER_ID);

    // The same, behind the API's back, through the Rust handle…
    let flipped = api
        .sim
        .flip_emergency_group(DEFAULT_GROUP_ID, false, EMR_EDGE_CLIENT_ID)
        .unwrap();
    assert_eq!(flipped.version, 3);
    assert!(!flipped.enabled);
    assert_eq!(
        flipped.modified_by_app.as_deref(),
        Some(EMR_EDGE_CLIENT_NAME)
    );
    assert_eq!(flipped.modified_by, None);

    // …and through the control API.
    let answer = api
        .control(
            Method::PUT,
            &format!("/__sim/groups/{DEFAULT_GROUP_ID}"),
            Some(json!({"enabled": true, "modifiedByApp": "someone"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["version"], 4);
    let read = api
        .control(
            Method::GET,
            &format!("/__sim/groups/{DEFAULT_GROUP_ID}"),
            None,
        )
        .await;
    assert_eq!(read.body["enabled"], true);
    assert_eq!(read.body["modifiedByApp"], "someone");
    let unknown = api.control(Method::GET, "/__sim/groups/nope", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_client_without_the_permission_is_forbidden() {
    let api = Api::seeded().await;
    let token = api.token(NO_PERMS_CLIENT_ID, NO_PERMS_CLIENT_SECRET).await;
    let path = group_path(DEFAULT_GROUP_ID);
    let read = api.get(&path, &token).await;
    read.assert_genesys_error(403, "missing.permissions");
    assert!(read.body["message"]
        .as_str()
        .unwrap()
        .contains("routing:emergencyGroup:view"));
    api.get(LIST, &token)
        .await
        .assert_genesys_error(403, "missing.permissions");
    let group = serde_json::to_value(api.sim.emergency_group(DEFAULT_GROUP_ID).unwrap()).unwrap();
    let write = api.put(&path, &token, group).await;
    write.assert_genesys_error(403, "missing.permissions");
    assert!(write.body["message"]
        .as_str()
        .unwrap()
        .contains("routing:emergencyGroup:edit"));
    assert_eq!(
        api.sim.emergency_group(DEFAULT_GROUP_ID).unwrap().version,
        1
    );
}
