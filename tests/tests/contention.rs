//! Two emr-edge instances against one Genesys org (docs/convergence.md,
//! "One instance per Genesys org"): each takes the other's writes for drift by our own client. They
//! must not flip the group for ever: the third drift within the window flags
//! it *contended* on one of them, which stops correcting it, says so in an
//! error line, an audit line, `/emr/state` and its metrics.
//!
//! Two real Envoys with the same config and credentials share one
//! simulator. Periods are short by config (watchdog every 5 s — its floor —,
//! 1 s after a write, grace 3 s). The assertions are on order and counts
//! (PUTs in the sim's log), with generous bounds: the machine may be busy.

use std::time::Duration;

use emr_e2e::{
    at, eventually, genesys_config, incident, json, merge, now_ms, Envoy, EnvoyOptions, Stack,
    Value,
};
use emr_sim::{SimConfig, CARRIER_OUTAGE_GROUP_ID as CARRIER};

const PERIOD_S: u64 = 5;
const GRACE_S: u64 = 3;

/// Both instances' config: fast checks, and no data table, so that each
/// reads every configured group at start (its recovery check) and so knows
/// the group before the other one writes it.
fn patch() -> Value {
    json!({"genesys": {
        "watchdog": {"period_seconds": PERIOD_S, "converging_seconds": 1, "grace_seconds": GRACE_S},
        "limits": {"backoff_initial_ms": 200, "backoff_max_ms": 1000},
        "datatable": null
    }})
}

/// A second Envoy with the same config and OAuth client as `s`'s, against
/// the same sim.
async fn second_instance(s: &Stack) -> Envoy {
    let mut config = genesys_config();
    merge(&mut config, &patch());
    let options = EnvoyOptions {
        config,
        sim_port: s.sim.addr().port(),
        env: vec![
            (
                "EMR_GENESYS_CLIENT_ID".into(),
                emr_sim::EMR_EDGE_CLIENT_ID.into(),
            ),
            (
                "EMR_GENESYS_CLIENT_SECRET".into(),
                emr_sim::EMR_EDGE_CLIENT_SECRET.into(),
            ),
        ],
        ..EnvoyOptions::default()
    };
    tokio::task::spawn_blocking(move || Envoy::start(options))
        .await
        .expect("Envoy start panicked")
}

/// One instance's `GET /emr/state` (`Null` when it does not answer).
async fn state_of(http: &emr_e2e::reqwest::Client, envoy: &Envoy) -> Value {
    let Ok(r) = http.get(envoy.url("/emr/state")).send().await else {
        return Value::Null;
    };
    r.json().await.unwrap_or(Value::Null)
}

/// One group's entry of an instance's `/emr/state` (`Null` when absent).
async fn group_state(http: &emr_e2e::reqwest::Client, envoy: &Envoy, group: &str) -> Value {
    state_of(http, envoy).await["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["id"] == group).cloned())
        .unwrap_or(Value::Null)
}

/// Polls both instances until one of them shows the group contended;
/// returns its index, or `None` after `within`.
async fn contended_on(
    http: &emr_e2e::reqwest::Client,
    instances: [&Envoy; 2],
    skip: Option<usize>,
    within: Duration,
) -> Option<usize> {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        for (i, envoy) in instances.iter().enumerate() {
            if Some(i) != skip && group_state(http, envoy, CARRIER).await["contended"].is_object() {
                return Some(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Asserts that an instance's stat reads `want` (polled a little: a busy
/// admin endpoint may not answer at once).
async fn assert_stat(envoy: &Envoy, name: &str, want: u64) {
    let ok = eventually(Duration::from_secs(5), || envoy.counter(name) == want).await;
    let stats = emr_e2e::blocking_get(&envoy.admin("/stats?filter=^wasmcustom\\.emr\\.watchdog"))
        .unwrap_or_else(|e| e);
    assert!(ok, "{name} is not {want}:\n{stats}");
}

/// Successful PUTs of the group the sim answered, with their arrival times.
fn puts(s: &Stack) -> Vec<u64> {
    s.calls(
        "PUT",
        &format!("/api/v2/architect/emergencygroups/{CARRIER}"),
    )
    .into_iter()
    .filter(|r| r.status.is_some_and(|st| (200..300).contains(&st)))
    .map(|r| r.received_ms)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_stop_fighting_over_a_group_and_say_so() {
    let s = Stack::start(SimConfig::default(), patch()).await;
    let b = second_instance(&s).await;
    let instances = [&s.envoy, &b];
    let http = &s.http;

    // Both have read the group (off, as both want it) before anything
    // writes it: neither adopts the other's write at start.
    for (i, envoy) in instances.iter().enumerate() {
        let mut read = false;
        for _ in 0..200 {
            if group_state(http, envoy, CARRIER).await["observed"]["enabled"] == false {
                read = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(read, "instance {i} never read the group");
    }

    // An incident reaches the first instance only: it wants the group on,
    // the second wants it off, and each takes the other's writes for drift
    // by our own client.
    let mut ev = incident("INC-FIGHT", "EMERGENCY_ACTIVE", &["q1"]);
    ev["timestamp"] = json!(at(-1));
    s.send(&ev).await;
    assert!(
        eventually(Duration::from_secs(10), || s.enabled(CARRIER)).await,
        "the first instance never switched the group on"
    );

    // The third drift of one of them flags the group instead of correcting
    // it: with these periods the two flip it every few seconds until then.
    let x = contended_on(http, instances, None, Duration::from_secs(120))
        .await
        .expect("neither instance flagged the group contended");
    let detected = now_ms();
    let y = 1 - x;
    let fight = puts(&s);
    // The first instance's switch, then two corrections by each.
    assert!(fight.len() >= 5, "no fight before the flag: {fight:?}");

    // From then on nobody writes it: through two checks and graces of both.
    let settled = s.enabled(CARRIER);
    tokio::time::sleep(Duration::from_secs(2 * (PERIOD_S + GRACE_S) + 2)).await;
    let after: Vec<u64> = puts(&s).into_iter().filter(|p| *p >= detected).collect();
    assert!(after.is_empty(), "still flipping after the flag: {after:?}");
    assert_eq!(s.enabled(CARRIER), settled);

    // The flagged instance says so: /emr/state, metrics, error and audit.
    let g = group_state(http, instances[x], CARRIER).await;
    let c = &g["contended"];
    assert!(c["since"].is_string(), "{g}");
    assert!(
        c["detail"]
            .as_str()
            .is_some_and(|d| d.contains("another emr-edge instance")),
        "{g}"
    );
    assert_eq!(c["modifiedByApp"], emr_sim::EMR_EDGE_CLIENT_NAME, "{g}");
    assert_eq!(g["lastReconcile"]["result"], "contended", "{g}");
    let state = state_of(http, instances[x]).await;
    let summary = state["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("another emr-edge instance"), "{summary}");
    assert_stat(instances[x], "emr.watchdog.contended", 1).await;
    assert_stat(instances[x], "emr.watchdog.contended_groups", 1).await;
    assert_stat(instances[x], "emr.watchdog.corrected", 2).await;
    assert_stat(instances[y], "emr.watchdog.corrected", 2).await;
    assert_stat(instances[y], "emr.watchdog.contended", 0).await;
    let log = instances[x].log();
    let error = log
        .lines()
        .find(|l| l.contains("[error]") && l.contains("emr-edge: contended:"))
        .unwrap_or_else(|| panic!("no error line:\n{}", instances[x].log_tail(30)));
    for needle in [
        format!("emergency group {CARRIER}"),
        "exactly one emr-edge instance may run".to_owned(),
        format!("stops correcting {CARRIER}"),
    ] {
        assert!(error.contains(&needle), "{needle}: {error}");
    }
    assert!(instances[x]
        .audit_lines()
        .iter()
        .any(|l| l["decision"] == "contended" && l["group"] == CARRIER));
    assert!(group_state(http, instances[y], CARRIER).await["contended"].is_null());

    // A resume on the flagged instance gives the group back to it: it
    // writes what its incidents want, once. The other one's next drift is
    // within the window of its own two corrections: flagged at once, not
    // corrected.
    let resumed = now_ms();
    let r = http
        .post(instances[x].url(&format!("/emr/groups/{CARRIER}/resume")))
        .header("content-type", "application/json")
        .send()
        .await
        .expect("resume unreachable");
    assert_eq!(r.status().as_u16(), 202);
    assert!(
        eventually(Duration::from_secs(10), || s.enabled(CARRIER) != settled).await,
        "the resume did not write the group"
    );
    let mut cleared = false;
    for _ in 0..50 {
        if group_state(http, instances[x], CARRIER).await["contended"].is_null() {
            cleared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cleared, "the resume did not clear the flag");
    assert_eq!(
        contended_on(http, instances, Some(x), Duration::from_secs(60)).await,
        Some(y),
        "the renewed fight was not flagged on the other instance"
    );
    tokio::time::sleep(Duration::from_secs(PERIOD_S + GRACE_S + 2)).await;
    let since_resume: Vec<u64> = puts(&s).into_iter().filter(|p| *p >= resumed).collect();
    assert_eq!(since_resume.len(), 1, "{since_resume:?}");
    assert_stat(instances[y], "emr.watchdog.contended", 1).await;
    assert_stat(instances[y], "emr.watchdog.corrected", 2).await;
    assert_stat(instances[x], "emr.watchdog.contended_groups", 0).await;
}
