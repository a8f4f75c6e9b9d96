//! Data table rows.

use emr_sim::{DEFAULT_DATATABLE_ID, NO_PERMS_CLIENT_ID, NO_PERMS_CLIENT_SECRET};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::Api;

fn row_path(row: &str) -> String {
    format!("/api/v2/flows/datatables/{DEFAULT_DATATABLE_ID}/rows/{row}")
}

#[tokio::test]
async fn a_row_is_created_then_written_and_read_back() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let path = row_path("carrier-outage");
    api.get(&path, &token)
        .await
        .assert_genesys_error(404, "not.found");
    let row = json!({
        "key": "carrier-outage",
        "queueIds": "q-1,q-2",
        "queue1": "q-1",
        "queue2": "q-2",
        "incidentIds": "INC-1",
        "updatedAt": "2024-08-15T14:22:01.000Z",
        "enabled": true,
    });
    // As in Genesys, a PUT does not create: the row is created with a POST.
    api.put(&path, &token, row.clone())
        .await
        .assert_genesys_error(404, "not.found");
    let rows = format!("/api/v2/flows/datatables/{DEFAULT_DATATABLE_ID}/rows");
    let created = api.post(&rows, &token, row.clone()).await;
    assert_eq!(created.status, StatusCode::OK);
    let mut changed = row.clone();
    changed["enabled"] = json!(false);
    let answer = api.put(&path, &token, changed.clone()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, changed);
    let read = api.get(&format!("{path}?showbrief=false"), &token).await;
    assert_eq!(read.body, changed);
    assert_eq!(
        serde_json::to_value(
            api.sim
                .datatable_row(DEFAULT_DATATABLE_ID, "carrier-outage")
        )
        .unwrap(),
        changed
    );
    let control = api
        .control(
            Method::GET,
            &format!("/__sim/datatables/{DEFAULT_DATATABLE_ID}/rows/carrier-outage"),
            None,
        )
        .await;
    assert_eq!(control.body, changed);
}

#[tokio::test]
async fn malformed_rows_and_unknown_tables_are_refused() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let rows = format!("/api/v2/flows/datatables/{DEFAULT_DATATABLE_ID}/rows");
    api.post(&rows, &token, json!({"key": "a"})).await;
    api.put(&row_path("a"), &token, json!({"key": "b"}))
        .await
        .assert_genesys_error(400, "bad.request");
    api.put(&row_path("a"), &token, json!({"queueIds": "x"}))
        .await
        .assert_genesys_error(400, "bad.request");
    api.put(
        &row_path("a"),
        &token,
        json!({"key": "a", "queueIds": ["x"]}),
    )
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
async fn rows_are_held_to_the_table_schema() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let rows = format!("/api/v2/flows/datatables/{DEFAULT_DATATABLE_ID}/rows");
    for (body, column) in [
        (json!({"key": "a", "queues": "q1"}), "'queues'"),
        (json!({"key": "a", "enabled": "true"}), "'enabled'"),
        (json!({"key": "a", "queue1": 7}), "'queue1'"),
        (json!({"key": "a", "queueIds": null}), "'queueIds'"),
        (
            json!({"key": "a", "openIncidents": "x".repeat(4_001)}),
            "'openIncidents'",
        ),
        (json!({"key": "k".repeat(257)}), "'key'"),
    ] {
        let refused = api.post(&rows, &token, body.clone()).await;
        refused.assert_genesys_error(400, "bad.request");
        let message = refused.body["message"].as_str().unwrap();
        assert!(message.contains(column), "{body}: {message}");
    }
    assert!(api
        .sim
        .datatable_rows(DEFAULT_DATATABLE_ID)
        .unwrap()
        .is_empty());
    // At the limit is fine; so is a row of the key alone.
    let full = json!({"key": "a", "openIncidents": "x".repeat(4_000)});
    assert_eq!(api.post(&rows, &token, full).await.status, StatusCode::OK);
    let bad = json!({"key": "a", "colour": "blue"});
    api.put(&row_path("a"), &token, bad.clone())
        .await
        .assert_genesys_error(400, "bad.request");
    // Behind the API's back too: the table has no such column.
    assert!(api
        .sim
        .set_datatable_row(
            DEFAULT_DATATABLE_ID,
            "a",
            serde_json::from_value(bad).unwrap()
        )
        .is_err());
}

#[tokio::test]
async fn rows_can_be_created_once() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let rows = format!("/api/v2/flows/datatables/{DEFAULT_DATATABLE_ID}/rows");
    let created = api
        .post(&rows, &token, json!({"key": "r1", "enabled": true}))
        .await;
    assert_eq!(created.status, StatusCode::OK);
    api.post(&rows, &token, json!({"key": "r1", "enabled": false}))
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
    read.assert_genesys_error(403, "missing.permissions");
    assert!(read.body["message"]
        .as_str()
        .unwrap()
        .contains("architect:datatable:view"));
}

#[tokio::test]
async fn rows_are_listed_in_pages_in_brief_unless_asked() {
    let api = Api::seeded().await;
    let token = api.emr_token().await;
    let rows = format!("/api/v2/flows/datatables/{DEFAULT_DATATABLE_ID}/rows");
    for key in ["a", "b", "c"] {
        api.post(&rows, &token, json!({"key": key, "openIncidents": "{}"}))
            .await;
    }
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
