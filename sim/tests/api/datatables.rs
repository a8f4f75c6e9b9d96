//! Data table rows.

use emr_sim::{DEFAULT_DATATABLE_ID, NO_PERMS_CLIENT_ID, NO_PERMS_CLIENT_SECRET};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::Api;

fn row_path(row: &str) -> String {
    format!("/api/v2/flows/datatables/{DEFAULT_DATATABLE_ID}/rows/{row}")
}

#[tokio::test]
async fn a_row_is_written_and_read_back() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let path = row_path("carrier-outage");
    api.get(&path, &token)
        .await
        .assert_genesys_error(404, "not.found");
    let row = json!({
        "key": "carrier-outage",
        "queueIds": "q-1,q-2",
        "incidents": "INC-1",
        "updated": "2024-08-15T14:22:01.000Z",
        "active": true,
    });
    let answer = api.put(&path, &token, row.clone()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, row);
    let read = api.get(&format!("{path}?showbrief=false"), &token).await;
    assert_eq!(read.body, row);
    assert_eq!(
        serde_json::to_value(
            api.sim
                .datatable_row(DEFAULT_DATATABLE_ID, "carrier-outage")
        )
        .unwrap(),
        row
    );
    let control = api
        .control(
            Method::GET,
            &format!("/__sim/datatables/{DEFAULT_DATATABLE_ID}/rows/carrier-outage"),
            None,
        )
        .await;
    assert_eq!(control.body, row);
}

#[tokio::test]
async fn malformed_rows_and_unknown_tables_are_refused() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    api.put(&row_path("a"), &token, json!({"key": "b"}))
        .await
        .assert_genesys_error(400, "bad.request");
    api.put(&row_path("a"), &token, json!({"queues": "x"}))
        .await
        .assert_genesys_error(400, "bad.request");
    api.put(&row_path("a"), &token, json!({"key": "a", "queues": ["x"]}))
        .await
        .assert_genesys_error(400, "bad.request");
    api.put(&row_path("a"), &token, json!(["a"]))
        .await
        .assert_genesys_error(400, "bad.request");
    api.put(
        "/api/v2/flows/datatables/nope/rows/a",
        &token,
        json!({"key": "a"}),
    )
    .await
    .assert_genesys_error(404, "not.found");
}

#[tokio::test]
async fn rows_can_be_created_once() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let rows = format!("/api/v2/flows/datatables/{DEFAULT_DATATABLE_ID}/rows");
    let created = api.post(&rows, &token, json!({"key": "r1", "v": 1})).await;
    assert_eq!(created.status, StatusCode::OK);
    api.post(&rows, &token, json!({"key": "r1", "v": 2}))
        .await
        .assert_genesys_error(409, "general.conflict");
}

#[tokio::test]
async fn rows_need_permissions() {
    let api = Api::seeded().await;
    let token = api.token(NO_PERMS_CLIENT_ID, NO_PERMS_CLIENT_SECRET).await;
    let write = api.put(&row_path("a"), &token, json!({"key": "a"})).await;
    write.assert_genesys_error(403, "missing.permissions");
    assert!(write.body["message"]
        .as_str()
        .unwrap()
        .contains("architect:datatableRow:edit"));
    let read = api.get(&row_path("a"), &token).await;
    read.assert_genesys_error(403, "missing.any.permissions");
    assert!(read.body["message"]
        .as_str()
        .unwrap()
        .contains("architect:datatable:view"));
}

#[tokio::test]
async fn rows_are_listed_in_pages_in_brief_unless_asked() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    for key in ["a", "b", "c"] {
        api.put(
            &row_path(key),
            &token,
            json!({"key": key, "openIncidents": "{}"}),
        )
        .await;
    }
    let rows = format!("/api/v2/flows/datatables/{DEFAULT_DATATABLE_ID}/rows");
    // Genesys's default: keys only.
    let brief = api.get(&rows, &token).await;
    assert_eq!(brief.status, StatusCode::OK);
    assert_eq!(brief.body["total"], 3);
    assert_eq!(brief.body["entities"][0], json!({"key": "a"}));
    let full = api
        .get(
            &format!("{rows}?pageSize=2&pageNumber=2&showbrief=false"),
            &token,
        )
        .await;
    assert_eq!(full.body["pageCount"], 2);
    assert_eq!(full.body["pageNumber"], 2);
    assert_eq!(
        full.body["entities"],
        json!([{"key": "c", "openIncidents": "{}"}])
    );
    api.get(&format!("{rows}?pageSize=0"), &token)
        .await
        .assert_genesys_error(400, "bad.request");
    api.get("/api/v2/flows/datatables/nope/rows", &token)
        .await
        .assert_genesys_error(404, "not.found");
    let no_perms = api.token(NO_PERMS_CLIENT_ID, NO_PERMS_CLIENT_SECRET).await;
    assert_eq!(
        api.get(&rows, &no_perms).await.status,
        StatusCode::FORBIDDEN
    );
}
