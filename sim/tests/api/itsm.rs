//! ITSM status endpoints for the lost-resolution poll.

use emr_sim::ItsmTool;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::Api;

async fn get(api: &Api, path: &str) -> crate::common::Answer {
    api.call(Method::GET, path, None, None).await
}

#[tokio::test]
async fn pagerduty_incidents() {
    let api = Api::seeded().await;
    let unknown = get(&api, "/incidents/PABC123").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error"]["code"], 2100);
    let set = api
        .control(
            Method::PUT,
            "/__sim/itsm/pagerduty/PABC123",
            Some(json!({"status": "triggered"})),
        )
        .await;
    assert_eq!(set.status, StatusCode::NO_CONTENT);
    let answer = get(&api, "/incidents/PABC123").await;
    assert_eq!(answer.body["incident"]["id"], "PABC123");
    assert_eq!(answer.body["incident"]["status"], "triggered");
    api.sim
        .set_itsm_status(ItsmTool::PagerDuty, "PABC123", "resolved")
        .unwrap();
    let answer = get(&api, "/incidents/PABC123").await;
    assert_eq!(answer.body["incident"]["status"], "resolved");
}

#[tokio::test]
async fn servicenow_incidents() {
    let api = Api::seeded().await;
    let path = "/api/now/table/incident?sysparm_query=number=INC0010001";
    assert_eq!(get(&api, path).await.body, json!({"result": []}));
    api.sim
        .set_itsm_status(ItsmTool::ServiceNow, "INC0010001", "In Progress")
        .unwrap();
    api.sim
        .set_itsm_status(ItsmTool::ServiceNow, "INC0010002", "1")
        .unwrap();
    let answer = get(&api, path).await;
    let result = answer.body["result"].as_array().unwrap();
    assert_eq!(result.len(), 1);
    assert_eq!(result[0]["number"], "INC0010001");
    assert_eq!(result[0]["state"], "2");
    assert_eq!(result[0]["sys_id"].as_str().unwrap().len(), 32);
    api.control(
        Method::PUT,
        "/__sim/itsm/servicenow/INC0010001",
        Some(json!({"status": "6"})),
    )
    .await;
    assert_eq!(get(&api, path).await.body["result"][0]["state"], "6");
}

#[tokio::test]
async fn jira_issues() {
    let api = Api::seeded().await;
    let path = "/rest/api/3/issue/OPS-42?fields=status";
    let unknown = get(&api, path).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body["errorMessages"].is_array());
    api.sim
        .set_itsm_status(ItsmTool::Jira, "OPS-42", "In Progress")
        .unwrap();
    let answer = get(&api, path).await;
    assert_eq!(answer.body["key"], "OPS-42");
    assert_eq!(answer.body["fields"]["status"]["name"], "In Progress");
    assert_eq!(
        answer.body["fields"]["status"]["statusCategory"]["key"],
        "indeterminate"
    );
    api.control(
        Method::PUT,
        "/__sim/itsm/jira/OPS-42",
        Some(json!({"status": "Fixed", "category": "done"})),
    )
    .await;
    let answer = get(&api, path).await;
    assert_eq!(
        answer.body["fields"]["status"]["statusCategory"]["key"],
        "done"
    );
}

#[tokio::test]
async fn bad_itsm_controls_are_refused() {
    let api = Api::seeded().await;
    let unknown_tool = api
        .control(
            Method::PUT,
            "/__sim/itsm/zendesk/1",
            Some(json!({"status": "open"})),
        )
        .await;
    assert_eq!(unknown_tool.status, StatusCode::NOT_FOUND);
    let bad_status = api
        .control(
            Method::PUT,
            "/__sim/itsm/pagerduty/P1",
            Some(json!({"status": "closed"})),
        )
        .await;
    assert_eq!(bad_status.status, StatusCode::BAD_REQUEST);
}
