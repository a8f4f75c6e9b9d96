//! The fault suite: a real Envoy and the simulator, one fault per scenario,
//! each with a time bound. After every scenario the books must balance
//! ([`Stack::assert_accounted`]): every incident answered 202 ends in a
//! terminal status with its audit line, every transition Genesys saw is
//! audited, and each group is on exactly when an open incident wants it.
//!
//! RELIABILITY.md lists every scenario, this file's and the ones in
//! genesys.rs and watchdog.rs, with what each promises.

use std::sync::Arc;
use std::time::{Duration, Instant};

use emr_e2e::{at, crash_wasm_path, eventually, incident, json, Stack, Value};
use emr_sim::{Fault, SimConfig, CARRIER_OUTAGE_GROUP_ID as CARRIER};
use tokio::task::JoinSet;

/// How long a scenario may take to settle once its fault is over.
const SETTLE: Duration = Duration::from_secs(15);

fn event(id: &str, mode: &str, queues: &[&str], ts: i64) -> Value {
    let mut v = incident(id, mode, queues);
    v["timestamp"] = json!(at(ts));
    v
}

fn group_puts(s: &Stack) -> Vec<emr_sim::RequestRecord> {
    s.calls(
        "PUT",
        &format!("/api/v2/architect/emergencygroups/{CARRIER}"),
    )
}

/// Posts every body at once (`parallel` in flight) and returns the answers'
/// statuses in the bodies' order.
async fn post_all(s: &Stack, bodies: Vec<String>, parallel: usize) -> Vec<u16> {
    let url = Arc::new(s.envoy.url("/webhooks/canonical"));
    let http = s.http.clone();
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut set = JoinSet::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let (url, http, sem) = (Arc::clone(&url), http.clone(), Arc::clone(&sem));
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = http
                .post(url.as_str())
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            (i, r.map(|r| r.status().as_u16()).unwrap_or(0))
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("sender task"));
    }
    out.sort_unstable();
    out.into_iter().map(|(_, s)| s).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_are_retried_until_the_switch_lands() {
    let s = Stack::start(SimConfig::default(), json!({})).await;
    // Every kind of Genesys call is reset a few times: the pre-flight read,
    // the write, and the data-table row.
    for path in [
        "/api/v2/architect/emergencygroups",
        "/api/v2/flows/datatables",
    ] {
        s.sim
            .add_fault(Fault::reset_connection().on_path(path).times(3))
            .unwrap();
    }
    let started = Instant::now();
    s.send(&event("INC-RST", "EMERGENCY_ACTIVE", &["q1"], -2))
        .await;
    assert!(
        eventually(Duration::from_secs(30), || s.enabled(CARRIER)).await,
        "not enabled through the resets"
    );
    let took = started.elapsed();
    let resets = s.sim.requests().iter().filter(|r| r.reset).count();
    assert!(resets >= 3, "only {resets} resets happened");
    eprintln!("enabled after {took:?} through {resets} connection resets");
    let a = s.assert_accounted(&["INC-RST".to_owned()], SETTLE).await;
    assert_eq!(a.transitions, 1, "one transition, however many attempts");
    let status = s.status("INC-RST").await;
    assert_eq!(emr_e2e::latest_status(&status), "APPLIED", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_waited_out_without_hammering_genesys() {
    let s = Stack::start(SimConfig::default(), json!({})).await;
    // Ten 429s in a row, each asking for a second's pause.
    s.sim
        .add_fault(
            Fault::answer(429)
                .on_path("/api/v2/")
                .with_retry_after(1)
                .times(10),
        )
        .unwrap();
    let started = Instant::now();
    s.send(&event("INC-429S", "EMERGENCY_ACTIVE", &["q1"], -2))
        .await;
    assert!(
        eventually(Duration::from_secs(30), || s.enabled(CARRIER)).await,
        "not enabled after the storm"
    );
    let took = started.elapsed();
    let api: Vec<_> = s
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/"))
        .collect();
    let limited: Vec<_> = api.iter().filter(|r| r.status == Some(429)).collect();
    assert_eq!(limited.len(), 10, "every 429 was met");
    // After each 429, nothing is sent to the API before its Retry-After.
    for l in &limited {
        if let Some(next) = api.iter().find(|r| r.seq > l.seq) {
            assert!(
                next.received_ms + 50 >= l.received_ms + 1000,
                "a call {} ms after a 429 asking for 1 s",
                next.received_ms - l.received_ms
            );
        }
    }
    eprintln!("enabled after {took:?} through {} 429s", limited.len());
    assert!(took >= Duration::from_secs(9), "Retry-After not honoured");
    s.assert_accounted(&["INC-429S".to_owned()], SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_duplicate_deliveries_make_one_transition() {
    let s = Stack::start(SimConfig::default(), json!({})).await;
    let body = event("INC-DUP", "EMERGENCY_ACTIVE", &["q1"], -2).to_string();
    let started = Instant::now();
    let answers = post_all(&s, vec![body; 10_000], 64).await;
    let took = started.elapsed();
    let accepted = answers.iter().filter(|&&a| a == 202).count();
    assert_eq!(
        accepted,
        10_000,
        "every copy is answered 202: {:?}",
        answers.iter().find(|&&a| a != 202)
    );
    eprintln!(
        "10,000 copies answered in {took:?} ({:.0}/s)",
        10_000.0 / took.as_secs_f64()
    );
    assert_eq!(s.envoy.counter("emr.intake.accepted"), 1, "one acceptance");
    assert_eq!(
        s.envoy.counter("emr.intake.replayed"),
        9_999,
        "the rest replays"
    );
    assert!(eventually(SETTLE, || s.enabled(CARRIER)).await);
    let a = s.assert_accounted(&["INC-DUP".to_owned()], SETTLE).await;
    assert_eq!(a.events, 1, "one event on the status endpoint");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(group_puts(&s).len(), 1, "exactly one PUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_conflicting_events_for_one_group_converge_without_flapping() {
    let s = Stack::start(SimConfig::default(), json!({})).await;
    // 50 incidents on one group; each is opened, and every other one is
    // resolved by a later event. All 75 events race in, in an order that
    // puts many resolutions before their activations.
    let mut bodies = Vec::new();
    for i in 0..50 {
        let id = format!("RACE-{i:02}");
        let q = format!("q{i:02}");
        bodies.push(event(&id, "EMERGENCY_ACTIVE", &[&q], -30 + i % 7).to_string());
        if i % 2 == 0 {
            bodies.push(event(&id, "EMERGENCY_RESOLVED", &[], -10 + i % 5).to_string());
        }
    }
    // A fixed shuffle (no randomness in tests): stride through the list.
    let n = bodies.len();
    let order: Vec<usize> = (0..n).map(|k| (k * 37) % n).collect();
    let shuffled: Vec<String> = order.iter().map(|&k| bodies[k].clone()).collect();
    let started = Instant::now();
    let answers = post_all(&s, shuffled, 50).await;
    assert!(answers.iter().all(|&a| a == 202), "{answers:?}");
    let ids: Vec<String> = (0..50).map(|i| format!("RACE-{i:02}")).collect();
    let a = s.assert_accounted(&ids, SETTLE).await;
    let settled = started.elapsed();
    assert_eq!(a.events, 75);
    assert!(s.enabled(CARRIER), "25 incidents are open");
    // The row lists exactly the open incidents' queues.
    let row = serde_json::to_value(
        s.sim
            .datatable_row(emr_sim::DEFAULT_DATATABLE_ID, CARRIER)
            .expect("row written"),
    )
    .unwrap()
    .to_string();
    for i in 0..50 {
        let q = format!("q{i:02}");
        assert_eq!(row.contains(&q), i % 2 == 1, "{q} in {row}");
    }
    // Never split or flapped: while incidents stay open, no PUT turns the
    // group off, and the writes coalesced.
    let puts = group_puts(&s);
    assert!(
        puts.iter()
            .all(|p| p.body.as_ref().is_some_and(|b| b["enabled"] == true)),
        "a PUT turned the group off while incidents were open"
    );
    assert!(puts.len() <= 3, "{} PUTs for one switch", puts.len());

    // Then the other 25 resolve, all at once: off, once.
    let resolutions: Vec<String> = (0..50)
        .filter(|i| i % 2 == 1)
        .map(|i| event(&format!("RACE-{i:02}"), "EMERGENCY_RESOLVED", &[], -1).to_string())
        .collect();
    let answers = post_all(&s, resolutions, 25).await;
    assert!(answers.iter().all(|&a| a == 202), "{answers:?}");
    let a = s.assert_accounted(&ids, SETTLE).await;
    assert_eq!(a.events, 100);
    assert!(!s.enabled(CARRIER));
    let offs = group_puts(&s)
        .iter()
        .filter(|p| p.body.as_ref().is_some_and(|b| b["enabled"] == false))
        .count();
    assert_eq!(offs, 1, "turned off exactly once");
    eprintln!(
        "75 racing events settled in {settled:?}; {} PUTs in all",
        group_puts(&s).len()
    );
}

/// Posts `body` to the canonical route as an incident tool would: a 503 is
/// retried (every tool does) until `within` passes. Returns the final
/// status and how many 503s came first.
async fn deliver(s: &Stack, body: &Value, within: Duration) -> (u16, u32) {
    let (r, refused) = deliver_answer(s, body, within).await;
    (r.status().as_u16(), refused)
}

/// [`deliver`], returning the final answer itself.
async fn deliver_answer(
    s: &Stack,
    body: &Value,
    within: Duration,
) -> (emr_e2e::reqwest::Response, u32) {
    let deadline = Instant::now() + within;
    let mut refused = 0;
    loop {
        let r = s.post_json("/webhooks/canonical", body).await;
        if r.status().as_u16() != 503 || Instant::now() >= deadline {
            return (r, refused);
        }
        refused += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn crash_stack() -> Stack {
    Stack::start_with(
        SimConfig::default(),
        json!({}),
        (emr_sim::EMR_EDGE_CLIENT_ID, emr_sim::EMR_EDGE_CLIENT_SECRET),
        crash_wasm_path(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_intake_vm_is_reloaded_and_nothing_accepted_is_lost() {
    let s = crash_stack().await;
    s.send(&event("INC-BEFORE", "EMERGENCY_ACTIVE", &["q1"], -5))
        .await;
    assert!(eventually(SETTLE, || s.enabled(CARRIER)).await);

    // Crash every worker's VM (2 workers; the connections are spread).
    let mut crashed = 0;
    for _ in 0..6 {
        let r = s
            .http
            .post(s.envoy.url(emr_e2e::CRASH_INTAKE_PATH))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("Envoy answers even as the VM dies");
        assert_eq!(r.status().as_u16(), 503, "a crashing VM's stream is a 503");
        crashed += 1;
    }
    let after_crash = Instant::now();
    let panics = s.envoy.log().matches("crash-test tripwire").count();
    assert!(panics >= 1, "no VM crashed ({crashed} tripwire requests)");

    // Senders retry the 503s; FAIL_RELOAD brings a fresh VM within its
    // backoff (1 s by default), and from then on everything is accepted.
    let mut ids = vec!["INC-BEFORE".to_owned()];
    let first_after = event("INC-AFTER-0", "EMERGENCY_ACTIVE", &["q2"], -4);
    let (status, refused) = deliver(&s, &first_after, Duration::from_secs(10)).await;
    let reloaded_in = after_crash.elapsed();
    assert_eq!(status, 202, "no fresh VM after {reloaded_in:?}");
    assert!(
        reloaded_in < Duration::from_secs(5),
        "VM reload took {reloaded_in:?}"
    );
    eprintln!("{panics} VM crash(es); accepted again after {reloaded_in:?} ({refused} 503s)");
    ids.push("INC-AFTER-0".into());
    for i in 1..20 {
        let id = format!("INC-AFTER-{i}");
        let (status, _) = deliver(
            &s,
            &event(&id, "EMERGENCY_ACTIVE", &["q2"], -4),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(status, 202, "{id}");
        ids.push(id);
    }
    // What was accepted is still known (shared data lives in Envoy, not in
    // the VM): a replay is answered as such. It may land on the other
    // worker, whose VM is reloaded only once a request reaches it after the
    // backoff: a 503 first is retried, as a sender would.
    let (replay, _) = deliver_answer(&s, &first_after, Duration::from_secs(10)).await;
    assert_eq!(replay.status().as_u16(), 202);
    assert_eq!(
        replay
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    s.assert_accounted(&ids, SETTLE).await;
    assert!(s.enabled(CARRIER));
}

/// Envoy never reloads a crashed bootstrap service, whatever its failure
/// policy: emr-edge notices (no heartbeat), refuses new events with 503 so
/// senders keep them, and `/emr/health` fails so the orchestrator restarts
/// Envoy — after which the open incidents are recovered from the data table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_service_is_detected_refused_and_recovered_by_a_restart() {
    let mut s = crash_stack().await;
    let health = |s: &Stack| {
        let (http, url) = (s.http.clone(), s.envoy.url("/emr/health"));
        async move {
            http.get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert!(
        eventually_async(SETTLE, || health(&s), |st| st == 200).await,
        "healthy at start"
    );
    s.send(&event("INC-OPEN", "EMERGENCY_ACTIVE", &["q1"], -5))
        .await;
    assert!(eventually(SETTLE, || s.enabled(CARRIER)).await);
    s.assert_accounted(&["INC-OPEN".to_owned()], SETTLE).await;

    // The poison event is accepted (the intake cannot know), then kills the
    // service as it is recorded.
    s.send(&event(
        emr_e2e::CRASH_SERVICE_INCIDENT,
        "EMERGENCY_ACTIVE",
        &["q1"],
        -4,
    ))
    .await;
    let crashed_at = Instant::now();
    assert!(
        eventually(SETTLE, || s.envoy.log().contains("crash-test tripwire")).await,
        "the service did not crash"
    );
    // Within the heartbeat's bound, new events are refused, not swallowed.
    // (The ones accepted before that are the window RELIABILITY.md states:
    // they die with the queue when Envoy restarts.)
    let mut in_window = 0;
    let refused_body = loop {
        let body = event(
            &format!("INC-DURING-{in_window}"),
            "EMERGENCY_ACTIVE",
            &["q3"],
            -3,
        );
        let r = s.post_json("/webhooks/canonical", &body).await;
        match r.status().as_u16() {
            503 => {
                assert_eq!(
                    r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
                    Some("1")
                );
                let problem: Value = r.json().await.unwrap_or(Value::Null);
                assert!(
                    problem["detail"]
                        .as_str()
                        .unwrap_or("")
                        .contains("service has stopped"),
                    "{problem}"
                );
                break body;
            }
            202 => in_window += 1,
            other => panic!("unexpected {other}"),
        }
        assert!(
            crashed_at.elapsed() < Duration::from_secs(15),
            "events still accepted {:?} after the crash",
            crashed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let detected_in = crashed_at.elapsed();
    assert!(
        detected_in < Duration::from_secs(10),
        "detected after {detected_in:?}"
    );
    assert_eq!(health(&s).await, 503, "liveness probe must fail");
    eprintln!("service crash detected after {detected_in:?}; {in_window} accepted before");

    // The orchestrator restarts Envoy; the sender's retry is then accepted;
    // the open incident was recovered and its resolution turns routing off.
    s.restart_envoy();
    assert!(
        eventually_async(SETTLE, || health(&s), |st| st == 200).await,
        "healthy after the restart"
    );
    let retried = refused_body["correlationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, _) = deliver(&s, &refused_body, SETTLE).await;
    assert_eq!(status, 202, "the sender's retry after the restart");
    assert!(s.enabled(CARRIER), "the open incident kept routing on");
    s.send(&event("INC-OPEN", "EMERGENCY_RESOLVED", &[], -2))
        .await;
    s.send(&event(&retried, "EMERGENCY_RESOLVED", &[], -1))
        .await;
    assert!(
        eventually(SETTLE, || !s.enabled(CARRIER)).await,
        "resolutions after the restart not applied"
    );
    // The restart's accounting starts afresh (a new log section is fine:
    // the log file is appended to).
    s.assert_accounted(&["INC-OPEN".to_owned(), retried], SETTLE)
        .await;
}

/// Polls an async probe every 100 ms until `ok` holds on its value or
/// `within` passes; returns whether it held.
async fn eventually_async<F, Fut, T>(within: Duration, mut probe: F, ok: impl Fn(T) -> bool) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + within;
    loop {
        if ok(probe().await) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_is_lost_to_a_timeout_is_found_done_by_the_next_read() {
    let s = Stack::start(
        SimConfig::default(),
        json!({"genesys": {"limits": {"call_timeout_ms": 500, "backoff_initial_ms": 100}}}),
    )
    .await;
    // Genesys applies the write but answers after our timeout.
    s.sim
        .add_fault(
            Fault::answer_late(Duration::from_millis(1500))
                .on_method("PUT")
                .on_path("/api/v2/architect/emergencygroups")
                .times(1),
        )
        .unwrap();
    s.send(&event("INC-LOST", "EMERGENCY_ACTIVE", &["q1"], -2))
        .await;
    assert!(eventually(Duration::from_secs(10), || s.enabled(CARRIER)).await);
    let a = s.assert_accounted(&["INC-LOST".to_owned()], SETTLE).await;
    assert_eq!(a.transitions, 1);
    // The next read found the write done: no second PUT, and it says so.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(group_puts(&s).len(), 1, "written twice");
    let audit = s.envoy.audit_lines();
    assert!(
        audit.iter().any(|l| l["decision"] == "in-sync"
            && l["before"]["enabled"] == true
            && l["before"]["modifiedByApp"] == emr_sim::EMR_EDGE_CLIENT_NAME),
        "no in-sync line after the lost answer"
    );
    let status = s.status("INC-LOST").await;
    assert_eq!(emr_e2e::latest_status(&status), "APPLIED", "{status}");
}
