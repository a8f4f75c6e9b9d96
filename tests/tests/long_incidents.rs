//! Long incidents and changing priorities, through a real Envoy
//! and the simulator's PagerDuty:
//!
//! - while PagerDuty's status API says an incident is open, it outlives its
//!   ttl (the ttl is a backstop for when polling fails, not a deadline);
//! - when the API stops answering, the incident expires at its ttl;
//! - a priority raised to match a rule switches the group on, and lowered
//!   below every rule releases it;
//! - a resolution of an incident never open here says so.

use std::time::Duration;

use emr_e2e::{eventually, json, latest_status, root, status_until, Stack, Value};
use emr_sim::{Fault, ItsmTool, SimConfig, CARRIER_OUTAGE_GROUP_ID as CARRIER};

const SOON: Duration = Duration::from_secs(5);
const POLL_S: u64 = 2;

fn fixture(name: &str) -> Value {
    let file = root().join("tests/fixtures/sources/pagerduty").join(name);
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

/// PagerDuty with a 60 s ttl (the least a rule may set), polled every 2 s,
/// and a rule for P1 only.
async fn stack() -> Stack {
    Stack::start(
        SimConfig::default(),
        json!({
            "genesys": {"watchdog": {"period_seconds": 5, "converging_seconds": 1, "grace_seconds": 3}},
            "sources": {"pagerduty": {"insecure": true, "rules": [
                {"match": {"priority": "P1"}, "group": CARRIER, "queues": ["q1"], "ttl_seconds": 60}
            ]}},
            "itsm": {"pagerduty": {"authority": "pagerduty.sim.local",
                                   "token_env": "EMR_PAGERDUTY_API_TOKEN", "poll_seconds": POLL_S}}
        }),
    )
    .await
}

/// A PagerDuty event for incident `id`, `ago` seconds old, with `priority`.
fn pd(name: &str, id: &str, ago: i64, priority: &str) -> Value {
    let mut v = fixture(name);
    let at = chrono::Utc::now() - chrono::Duration::seconds(ago);
    v["event"]["occurred_at"] = json!(at.to_rfc3339());
    v["event"]["data"]["id"] = json!(id);
    v["event"]["data"]["priority"]["summary"] = json!(priority);
    v
}

async fn post(s: &Stack, body: &Value) -> Value {
    let r = s.post_json("/webhooks/pagerduty", body).await;
    assert_eq!(r.status().as_u16(), 202, "{body}");
    r.json().await.unwrap()
}

fn expires_at(st: &Value) -> chrono::DateTime<chrono::Utc> {
    st["expiresAt"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|| panic!("no expiresAt in {st}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_the_tool_reports_open_outlives_its_ttl() {
    let s = stack().await;
    s.sim
        .set_itsm_status(ItsmTool::PagerDuty, "PLONG1", "triggered")
        .unwrap();
    // Its ttl runs out 6 s from now, unless a poll renews it.
    post(&s, &pd("incident_triggered.json", "PLONG1", 54, "P1")).await;
    assert!(eventually(SOON, || s.enabled(CARRIER)).await);
    let first = expires_at(&s.status("PLONG1").await);

    // Well past the original deadline: still open, still switched on.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let st = s.status("PLONG1").await;
    assert_eq!(st["state"], "OPEN", "{st}");
    assert!(s.enabled(CARRIER), "switched off while PagerDuty says open");
    assert!(
        expires_at(&st) >= first + chrono::Duration::seconds(40),
        "expiry not renewed: {} then {}",
        first,
        expires_at(&st)
    );
    assert!(chrono::Utc::now() > first, "the test outlived nothing");
    assert!(s.envoy.counter("emr.itsm.polled") >= 3);
    assert_eq!(s.envoy.counter("emr.service.expired"), 0);
    // The renewed expiry is persisted for a restart.
    let row = s
        .sim
        .datatable_row(emr_sim::DEFAULT_DATATABLE_ID, CARRIER)
        .expect("no row");
    let persisted = row["openIncidents"].as_str().unwrap_or_default();
    let doc: Value = serde_json::from_str(persisted).unwrap();
    let kept = doc["o"][0][6].as_i64().unwrap();
    assert!(
        kept >= (first + chrono::Duration::seconds(40)).timestamp_millis(),
        "row keeps the old expiry: {persisted}"
    );

    // PagerDuty resolves it; no webhook comes: the poll ends it.
    s.sim
        .set_itsm_status(ItsmTool::PagerDuty, "PLONG1", "resolved")
        .unwrap();
    assert!(eventually(Duration::from_secs(POLL_S + 5), || !s.enabled(CARRIER)).await);
    let st = status_until(&s, "PLONG1", SOON, |v| v["state"] == "RESOLVED").await;
    assert_eq!(st["state"], "RESOLVED", "{st}");
    // Closing it did not move its expiry.
    assert!(expires_at(&st) >= first + chrono::Duration::seconds(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_whose_tool_stops_answering_expires_at_its_ttl() {
    let s = stack().await;
    s.sim
        .set_itsm_status(ItsmTool::PagerDuty, "PLONG2", "triggered")
        .unwrap();
    s.sim
        .add_fault(Fault::answer(503).on_path("/incidents/"))
        .unwrap();
    post(&s, &pd("incident_triggered.json", "PLONG2", 54, "P1")).await;
    assert!(eventually(SOON, || s.enabled(CARRIER)).await);
    let deadline = expires_at(&s.status("PLONG2").await);
    let st = status_until(&s, "PLONG2", Duration::from_secs(15), |v| {
        v["state"] == "EXPIRED"
    })
    .await;
    assert_eq!(st["state"], "EXPIRED", "{st}");
    assert_eq!(expires_at(&st), deadline, "failed polls moved the expiry");
    assert!(eventually(SOON, || !s.enabled(CARRIER)).await);
    assert!(s.envoy.counter("emr.itsm.poll_failed") >= 1);
    assert!(s.envoy.log().contains("\"decision\":\"poll-failed\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_change_switches_the_group_on_and_releases_it() {
    let s = stack().await;
    // Triggered at P3: no rule matches, the answer says why.
    let answer = post(&s, &pd("incident_triggered.json", "PPRIO1", 30, "P3")).await;
    let text = answer.to_string();
    assert!(text.contains("IGNORED"), "{text}");
    assert!(text.contains("priority=P3"), "{text}");
    assert!(!s.enabled(CARRIER));
    // …and so does the status endpoint, afterwards.
    let st = s.status("PPRIO1").await;
    assert_eq!(st["state"], "IGNORED", "{st}");
    assert!(
        st["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("priority=P3"),
        "{st}"
    );

    // Raised to P1: it opens, the group switches.
    post(
        &s,
        &pd("incident_priority_updated.json", "PPRIO1", 20, "P1"),
    )
    .await;
    assert!(eventually(SOON, || s.enabled(CARRIER)).await);
    let st = status_until(&s, "PPRIO1", SOON, |v| latest_status(v) == "APPLIED").await;
    assert_eq!(st["state"], "OPEN", "{st}");
    // Readable at 3 a.m.: the group's name, who holds it, what it is about.
    // (The state is republished within a tick of the write's answer.)
    let name = s.sim.emergency_group(CARRIER).unwrap().name;
    let deadline = std::time::Instant::now() + SOON;
    while s.group_state(CARRIER).await["name"] != json!(name)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = s.state().await;
    let summary = state["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with("1 group in emergency: ")
            && summary.contains("held by PagerDuty PPRIO1"),
        "{summary}"
    );
    let group = s.group_state(CARRIER).await;
    assert_eq!(group["name"], json!(name), "{group}");
    assert!(summary.contains(&format!("{name} since ")), "{summary}");
    let held = &group["openIncidents"][0];
    assert_eq!(
        held["title"], "SIP trunk carrier-a: 100% call setup failures",
        "{held}"
    );
    assert!(
        held["link"]
            .as_str()
            .unwrap_or_default()
            .starts_with("https://"),
        "{held}"
    );
    assert!(held["expiresAt"].is_string(), "{held}");
    // Every time emr-edge writes is in one format: the views and the log.
    emr_e2e::assert_one_time_format(&state, "/emr/state");
    emr_e2e::assert_one_time_format(&s.status("PPRIO1").await, "/emr/status");
    assert!(emr_e2e::assert_audit_times_in_one_format(&s.envoy.log()) > 3);

    // Lowered to P3 again: released, the group switches back off.
    post(
        &s,
        &pd("incident_priority_updated.json", "PPRIO1", 10, "P3"),
    )
    .await;
    assert!(eventually(SOON, || !s.enabled(CARRIER)).await);
    let st = status_until(&s, "PPRIO1", SOON, |v| v["state"] == "RESOLVED").await;
    let newest = st["events"].as_array().unwrap().last().unwrap().clone();
    let detail = newest["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("incident.priority_updated matches no mapping rule any more"),
        "{st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_of_an_incident_never_open_here_says_so() {
    let s = stack().await;
    let mut body = pd("incident_resolved.json", "PNEVER", 5, "P1");
    body["event"]["data"]["status"] = json!("resolved");
    post(&s, &body).await;
    let st = status_until(&s, "PNEVER", SOON, |v| latest_status(v) == "IGNORED").await;
    assert_eq!(latest_status(&st), "IGNORED", "{st}");
    assert!(st["events"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("never open here"));
    assert!(st.get("expiresAt").is_none(), "{st}");
    assert!(s
        .calls("PUT", "/api/v2/architect/emergencygroups/")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_repeating_a_firing_alert_keeps_it_open() {
    let s = Stack::start(
        SimConfig::default(),
        json!({"sources": {"alertmanager": {"insecure": true, "rules": [
            {"match": {}, "group": CARRIER, "queues": ["q1"], "ttl_seconds": 60}
        ]}}}),
    )
    .await;
    let file = root().join("tests/fixtures/sources/alertmanager/firing.json");
    let mut body: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    // One alert, firing for 55 s already: its ttl runs out 5 s from now.
    body["alerts"].as_array_mut().unwrap().truncate(1);
    let started = chrono::Utc::now() - chrono::Duration::seconds(55);
    body["alerts"][0]["startsAt"] = json!(started.to_rfc3339());
    let id = body["alerts"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s.post_json("/webhooks/alertmanager", &body).await;
    assert_eq!(r.status().as_u16(), 202);
    assert!(eventually(SOON, || s.enabled(CARRIER)).await);
    let first = expires_at(&s.status(&id).await);

    // Alertmanager's `repeat_interval`: the same notification again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = s.post_json("/webhooks/alertmanager", &body).await;
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(
        r.headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    // Past the first deadline: still open, its ttl running from the repeat.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let st = s.status(&id).await;
    assert_eq!(st["state"], "OPEN", "{st}");
    assert!(
        expires_at(&st) >= first + chrono::Duration::seconds(50),
        "{st}"
    );
    assert!(s.enabled(CARRIER));
}
