//! Genesys converges to the truth even when webhooks, Envoy or people do not
//! cooperate (docs/convergence.md), through a real Envoy and the simulator. Periods are
//! short by config (watchdog every 5 s — its floor —, 1 s after a write,
//! grace 3 s, ITSM polls every 2 s); every wait has a bound.

use std::time::Duration;

use emr_e2e::{
    at, eventually, incident, json, latest_status, now_ms, root, status_becomes, status_until,
    Stack, Value,
};
use emr_sim::{
    ItsmTool, OutageMode, SimConfig, CARRIER_OUTAGE_GROUP_ID as CARRIER, EMR_EDGE_CLIENT_ID,
    UI_ADMIN_CLIENT_ID,
};

const SOON: Duration = Duration::from_secs(5);
/// The watchdog settings of these tests.
const PERIOD_S: u64 = 5;
const GRACE_S: u64 = 3;

fn fast() -> Value {
    json!({"genesys": {
        "watchdog": {"period_seconds": PERIOD_S, "converging_seconds": 1, "grace_seconds": GRACE_S},
        "limits": {"backoff_initial_ms": 200, "backoff_max_ms": 1000}
    }})
}

fn event(id: &str, mode: &str, queues: &[&str], ts: i64) -> Value {
    let mut v = incident(id, mode, queues);
    v["timestamp"] = json!(at(ts));
    v
}

/// PUTs of the group the sim received at or after `since_ms`.
fn puts_since(s: &Stack, group: &str, since_ms: u64) -> Vec<u64> {
    s.calls("PUT", &format!("/api/v2/architect/emergencygroups/{group}"))
        .into_iter()
        .filter(|r| r.received_ms >= since_ms)
        .map(|r| r.received_ms)
        .collect()
}

/// Polls the group's entry of `/emr/state` until `check` holds or `within`
/// passes; returns the last view.
async fn group_until(
    s: &Stack,
    group: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let g = s.group_state(group).await;
        if check(&g) || std::time::Instant::now() >= deadline {
            return g;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn on_and_applied(s: &Stack, id: &str) {
    assert!(
        eventually(SOON, || s.enabled(CARRIER)).await,
        "{id}: group not enabled"
    );
    let st = status_becomes(s, id, &["APPLIED"], SOON).await;
    assert_eq!(latest_status(&st), "APPLIED", "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_by_our_own_client_is_corrected_after_the_grace_not_before() {
    let s = Stack::start(SimConfig::default(), fast()).await;
    s.send(&event("INC-DRIFT", "EMERGENCY_ACTIVE", &["q1"], -1))
        .await;
    on_and_applied(&s, "INC-DRIFT").await;
    // Let the verification read after our write pass.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Another writer with emr-edge's own credentials switches it off.
    let flipped = now_ms();
    s.sim
        .flip_emergency_group(CARRIER, false, EMR_EDGE_CLIENT_ID)
        .unwrap();
    // Seen within a period, corrected a grace later: at most 5 + 3 s (+ slack).
    let bound = Duration::from_secs(PERIOD_S + GRACE_S + 3);
    assert!(
        eventually(bound, || s.enabled(CARRIER)).await,
        "drift not corrected within {bound:?}"
    );
    let corrections = puts_since(&s, CARRIER, flipped);
    assert_eq!(corrections.len(), 1, "{corrections:?}");
    assert!(
        corrections[0] >= flipped + GRACE_S * 1000,
        "corrected {} ms after the change, before the {GRACE_S} s grace",
        corrections[0] - flipped
    );
    let g = group_until(&s, CARRIER, SOON, |g| g["observed"]["enabled"] == true).await;
    assert_eq!(g["overridden"], false, "{g}");
    assert_eq!(s.envoy.counter("emr.watchdog.corrected"), 1);
    assert!(s.envoy.counter("emr.watchdog.drift") >= 1);
    assert!(s.envoy.counter("emr.watchdog.checked") >= 1);
    assert!(s.envoy.log().contains("\"decision\":\"correct-drift\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_wins_until_the_next_incident_event_or_a_resume() {
    let s = Stack::start(SimConfig::default(), fast()).await;
    s.send(&event("INC-PERSON", "EMERGENCY_ACTIVE", &["q1"], -10))
        .await;
    on_and_applied(&s, "INC-PERSON").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A person switches it off in the admin UI, during the incident.
    let flipped = now_ms();
    s.sim
        .flip_emergency_group(CARRIER, false, UI_ADMIN_CLIENT_ID)
        .unwrap();
    let g = group_until(&s, CARRIER, Duration::from_secs(PERIOD_S + 3), |g| {
        g["overridden"] == true
    })
    .await;
    assert_eq!(g["overridden"], true, "not flagged: {g}");
    assert_eq!(
        g["override"]["modifiedByApp"],
        emr_sim::UI_ADMIN_CLIENT_NAME
    );
    assert_eq!(g["desired"]["enabled"], true);
    // Through another check and a grace: still not reverted.
    tokio::time::sleep(Duration::from_secs(PERIOD_S + GRACE_S)).await;
    assert!(!s.enabled(CARRIER), "a person's change was reverted");
    assert!(puts_since(&s, CARRIER, flipped).is_empty());
    assert!(s.envoy.counter("emr.watchdog.skipped_overridden") >= 1);

    // The next incident event for the group (another incident opens):
    // correction resumes.
    s.send(&event("INC-PERSON-2", "EMERGENCY_ACTIVE", &["q2"], -1))
        .await;
    assert!(
        eventually(SOON, || s.enabled(CARRIER)).await,
        "not resumed by the event"
    );
    assert!(
        eventually(SOON, || s.envoy.counter("emr.watchdog.resumed") >= 1).await,
        "resume not metered"
    );

    // Again, and this time an explicit, authenticated resume.
    s.sim
        .flip_emergency_group(CARRIER, false, UI_ADMIN_CLIENT_ID)
        .unwrap();
    assert!(
        eventually(Duration::from_secs(PERIOD_S + 3), || {
            s.envoy.counter("emr.watchdog.overridden") >= 2
        })
        .await
    );
    assert!(!s.enabled(CARRIER));
    let (status, body) = s.resume(CARRIER).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "RESUME_QUEUED");
    assert!(
        eventually(SOON, || s.enabled(CARRIER)).await,
        "not resumed by POST /emr/groups/{{id}}/resume"
    );
    let g = group_until(&s, CARRIER, SOON, |g| g["overridden"] == false).await;
    assert_eq!(g["overridden"], false, "{g}");
    assert_eq!(s.envoy.counter("emr.intake.resumes_queued"), 1);
    let log = s.envoy.log();
    assert!(log.contains("\"decision\":\"overridden\""));
    assert!(log.contains("\"decision\":\"resumed\""));
}

/// A tool's webhook fixture with its event time moved to now.
fn fixture(path: &str) -> Value {
    let file = root().join("tests/fixtures/sources").join(path);
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_resolution_webhook_is_found_by_polling_the_tool() {
    let rule = json!([{"match": {}, "group": CARRIER, "queues": ["q1"]}]);
    let s = Stack::start(
        SimConfig::default(),
        json!({
            "sources": {
                "pagerduty": {"insecure": true, "rules": rule},
                "servicenow": {"insecure": true, "rules": rule},
                "jsm": {"insecure": true, "rules": rule}
            },
            "itsm": {
                "pagerduty": {"authority": "pagerduty.sim.local", "token_env": "EMR_PAGERDUTY_API_TOKEN", "poll_seconds": 2},
                "servicenow": {"authority": "servicenow.sim.local", "username_env": "EMR_SERVICENOW_API_USER",
                               "password_env": "EMR_SERVICENOW_API_PASSWORD", "poll_seconds": 2},
                "jsm": {"authority": "jira.sim.local", "username_env": "EMR_JIRA_API_USER",
                        "password_env": "EMR_JIRA_API_TOKEN", "poll_seconds": 2}
            }
        }),
    )
    .await;
    s.sim
        .set_itsm_status(ItsmTool::PagerDuty, "Q2UEJOMV3XYQ9N", "triggered")
        .unwrap();
    s.sim
        .set_itsm_status(ItsmTool::ServiceNow, "INC0010023", "In Progress")
        .unwrap();
    s.sim
        .set_itsm_status(ItsmTool::Jira, "ITSM-42", "In Progress")
        .unwrap();
    let now = chrono::Utc::now();
    let mut pd = fixture("pagerduty/incident_triggered.json");
    pd["event"]["occurred_at"] = json!(now.to_rfc3339());
    let mut sn = fixture("servicenow/incident_new.json");
    sn["sys_updated_on"] = json!(now.format("%Y-%m-%d %H:%M:%S").to_string());
    let mut jsm = fixture("jsm/issue_created.json");
    jsm["timestamp"] = json!(now.timestamp_millis());
    for (route, body) in [("pagerduty", &pd), ("servicenow", &sn), ("jsm", &jsm)] {
        let r = s.post_json(&format!("/webhooks/{route}"), body).await;
        assert_eq!(r.status().as_u16(), 202, "{route}");
    }
    assert!(eventually(SOON, || s.enabled(CARRIER)).await);

    // PagerDuty resolves it; its webhook never comes. Two others hold on.
    s.sim
        .set_itsm_status(ItsmTool::PagerDuty, "Q2UEJOMV3XYQ9N", "resolved")
        .unwrap();
    let st = status_until(&s, "Q2UEJOMV3XYQ9N", SOON, |v| v["state"] == "RESOLVED").await;
    assert_eq!(st["state"], "RESOLVED", "{st}");
    let newest = st["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(newest["via"], "STATUS_POLL", "{st}");
    assert!(newest["detail"]
        .as_str()
        .unwrap()
        .contains("PagerDuty says resolved"));
    assert!(
        s.enabled(CARRIER),
        "ServiceNow and Jira incidents are still open"
    );

    // Both others resolved there too: routing off within one poll (2 s).
    s.sim
        .set_itsm_status(ItsmTool::ServiceNow, "INC0010023", "Resolved")
        .unwrap();
    s.sim
        .set_itsm_status(ItsmTool::Jira, "ITSM-42", "Done")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(2 + 3), || !s.enabled(CARRIER)).await,
        "routing still on a poll after the tools resolved"
    );
    assert_eq!(s.envoy.counter("emr.itsm.polled_resolved"), 3);
    // Each tool was asked its own way.
    let scheme = |prefix: &str| {
        s.calls("GET", prefix)
            .first()
            .and_then(|r| r.auth_scheme.clone())
    };
    assert_eq!(
        scheme("/incidents/Q2UEJOMV3XYQ9N").as_deref(),
        Some("Token")
    );
    assert_eq!(scheme("/api/now/table/incident").as_deref(), Some("Basic"));
    assert_eq!(
        scheme("/rest/api/3/issue/ITSM-42").as_deref(),
        Some("Basic")
    );
    assert!(!s.envoy.log().contains(emr_e2e::ITSM_FAKE_SECRET));
    let state = s.state().await;
    assert_eq!(state["itsm"]["tracked"], 0, "{}", state["itsm"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_whose_ttl_runs_out_switches_routing_off() {
    let s = Stack::start(SimConfig::default(), fast()).await;
    // ttl 60 s (the contract's minimum), sent 55 s after it happened.
    let mut body = event("INC-TTL", "EMERGENCY_ACTIVE", &["q1"], -55);
    body["ttl"] = json!(60);
    s.send(&body).await;
    on_and_applied(&s, "INC-TTL").await;
    assert!(
        eventually(Duration::from_secs(10), || !s.enabled(CARRIER)).await,
        "still on after its ttl"
    );
    let st = status_until(&s, "INC-TTL", SOON, |v| v["state"] == "EXPIRED").await;
    assert_eq!(st["state"], "EXPIRED", "{st}");
    assert_eq!(latest_status(&st), "EXPIRED", "{st}");
    assert_eq!(s.envoy.counter("emr.service.expired"), 1);
    assert!(s.envoy.log().contains("\"decision\":\"expired\""));
    s.assert_accounted(&["INC-TTL".to_owned()], SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_incident_keeps_routing_on_and_the_resolution_still_works() {
    let mut s = Stack::start(SimConfig::default(), fast()).await;
    s.send(&event("INC-RESTART", "EMERGENCY_ACTIVE", &["q1", "q2"], -5))
        .await;
    on_and_applied(&s, "INC-RESTART").await;
    let row = s
        .sim
        .datatable_row(emr_sim::DEFAULT_DATATABLE_ID, CARRIER)
        .expect("row written");
    assert!(row["openIncidents"]
        .as_str()
        .unwrap()
        .contains("INC-RESTART"));

    s.restart_envoy();
    let restarted = now_ms();
    // Recovered from the row: on, and never switched off.
    let st = status_until(&s, "INC-RESTART", SOON, |v| v["state"] == "OPEN").await;
    assert_eq!(st["state"], "OPEN", "not rebuilt: {st}");
    assert_eq!(st["events"][0]["via"], "RECOVERY", "{st}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(s.enabled(CARRIER), "routing switched off by the restart");
    assert!(puts_since(&s, CARRIER, restarted).is_empty());
    let state = s.state().await;
    assert_eq!(state["recovery"]["phase"], "done", "{state}");
    assert_eq!(state["recovery"]["persistedIncidents"], 1, "{state}");

    // The resolution webhook for the rebuilt incident turns routing off.
    s.send(&event("INC-RESTART", "EMERGENCY_RESOLVED", &[], -1))
        .await;
    assert!(
        eventually(SOON, || !s.enabled(CARRIER)).await,
        "not switched off after the restart"
    );
    let st = status_until(&s, "INC-RESTART", SOON, |v| {
        v["state"] == "RESOLVED" && latest_status(v) == "APPLIED"
    })
    .await;
    assert_eq!(latest_status(&st), "APPLIED", "{st}");
    s.assert_accounted(&["INC-RESTART".to_owned()], SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_data_table_a_restart_adopts_what_our_client_left_on() {
    let mut patch = fast();
    patch["genesys"]["datatable"] = Value::Null;
    let mut s = Stack::start(SimConfig::default(), patch).await;
    s.send(&event("INC-ADOPT", "EMERGENCY_ACTIVE", &["q1"], -5))
        .await;
    on_and_applied(&s, "INC-ADOPT").await;
    s.restart_envoy();
    let restarted = now_ms();
    assert!(
        eventually(SOON, || {
            let v = emr_e2e::blocking_get(&s.envoy.url("/emr/state")).unwrap_or_default();
            v.contains("\"adoptedGroups\":1")
        })
        .await,
        "not adopted"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s.enabled(CARRIER), "switched off blind after a restart");
    assert!(puts_since(&s, CARRIER, restarted).is_empty());
    let g = s.group_state(CARRIER).await;
    let synthetic = g["openIncidents"][0]["correlationId"]
        .as_str()
        .unwrap_or("");
    assert_eq!(synthetic, format!("recovered:{CARRIER}"), "{g}");
    assert_eq!(g["openIncidents"][0]["source"], "emr", "{g}");
    // It expires an hour after the group's last change: not on forever.
    let st = s.status(synthetic).await;
    assert_eq!(st["events"][0]["via"], "ADOPTED", "{st}");
    assert_eq!(st["source"], "emr", "{st}");
    assert!(st["expiresAt"].is_string(), "{st}");

    // Issue 12, finding 4: the synthetic incident lives where no route can
    // reach it. A canonical resolution with its id is another incident (a
    // resolution of an unknown one); the group stays on.
    let forged = json!({
        "correlationId": synthetic,
        "incidentType": "CARRIER_OUTAGE",
        "routingMode": "EMERGENCY_RESOLVED",
        "timestamp": emr_e2e::at(0),
    });
    s.send(&forged).await;
    let canonical = status_until(&s, &format!("{synthetic}?source=canonical"), SOON, |v| {
        latest_status(v) == "APPLIED"
    })
    .await;
    assert_eq!(canonical["source"], "canonical", "{canonical}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        s.enabled(CARRIER),
        "a canonical event ended the adopted group"
    );
    assert!(puts_since(&s, CARRIER, restarted).is_empty());
    let st = s.status(&format!("{synthetic}?source=emr")).await;
    assert_eq!(st["state"], "OPEN", "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_genesys_is_down_routing_converges_once_it_returns() {
    let s = Stack::start(SimConfig::default(), fast()).await;
    s.send(&event("INC-DOWN", "EMERGENCY_ACTIVE", &["q1"], -5))
        .await;
    on_and_applied(&s, "INC-DOWN").await;
    // Down for 10 s (an outage of 30 s or 10 s: 10 s shows the same and keeps the
    // suite fast). The resolution arrives while it is down.
    let outage = Duration::from_secs(10);
    s.sim.go_down(outage, OutageMode::Reset).unwrap();
    let up_at = std::time::Instant::now() + outage;
    s.send(&event("INC-DOWN", "EMERGENCY_RESOLVED", &[], -1))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        s.enabled(CARRIER),
        "nothing can change while Genesys is down"
    );
    let st = s.status("INC-DOWN").await;
    assert_eq!(latest_status(&st), "PROCESSING", "{st}");
    // Back up: converged within the backoff cap (1 s here) plus slack.
    let left = up_at.saturating_duration_since(std::time::Instant::now());
    assert!(
        eventually(left + Duration::from_secs(4), || !s.enabled(CARRIER)).await,
        "not converged after the outage"
    );
    let st = status_becomes(&s, "INC-DOWN", &["APPLIED"], SOON).await;
    assert_eq!(latest_status(&st), "APPLIED", "{st}");
    // Envoy answers a reset connection itself (503) or reports the call failed.
    let failures = s.envoy.counter("emr.genesys.failures.transport")
        + s.envoy.counter("emr.genesys.failures.server_error");
    assert!(failures >= 1, "no failed call counted");
    s.assert_accounted(&["INC-DOWN".to_owned()], SOON).await;
}
