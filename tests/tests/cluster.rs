//! Cluster mode through real Envoys: replicas of the built filter, one real
//! etcd (Debian's), the simulator as Genesys. Each test starts what it
//! needs on loopback.

use std::time::Duration;

use emr_e2e::etcd::{Certificates, Etcd};
use emr_e2e::{
    eventually, genesys_config, incident, json, merge, reqwest, root, Envoy, EnvoyOptions, Value,
};

/// The group a canonical `CARRIER_OUTAGE` incident drives.
const GROUP: &str = emr_sim::CARRIER_OUTAGE_GROUP_ID;

fn endpoints(etcd: &[&Etcd]) -> String {
    etcd.iter()
        .map(|e| {
            format!(
                "{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}",
                e.client_port
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One replica named `id` against `sim` and `etcd`.
async fn replica(id: &str, sim: &emr_sim::SimHandle, etcd: &[&Etcd]) -> Envoy {
    replica_with(id, sim, etcd, json!({})).await
}

/// [`replica`] with `patch` merged into its configuration.
async fn replica_with(id: &str, sim: &emr_sim::SimHandle, etcd: &[&Etcd], patch: Value) -> Envoy {
    let template = root().join("envoy/cluster.yaml.tmpl");
    replica_from(template, id, sim, etcd, patch, &[]).await
}

/// [`replica_with`] from another Envoy config template.
async fn replica_from(
    template: std::path::PathBuf,
    id: &str,
    sim: &emr_sim::SimHandle,
    etcd: &[&Etcd],
    patch: Value,
    env: &[(&str, &str)],
) -> Envoy {
    let mut config = genesys_config();
    merge(
        &mut config,
        &json!({"cluster": {"etcd_cluster": "etcd", "replica_id_env": "EMR_REPLICA_ID",
                            "lease_ttl_seconds": 2, "poll_ms": 50}}),
    );
    // (An empty object would replace the whole configuration.)
    if patch.as_object().is_some_and(|p| !p.is_empty()) {
        merge(&mut config, &patch);
    }
    let options = EnvoyOptions {
        template,
        config,
        sim_port: sim.addr().port(),
        vars: vec![("ETCD_ENDPOINTS", endpoints(etcd))],
        env: [
            ("EMR_REPLICA_ID", id),
            ("EMR_GENESYS_CLIENT_ID", emr_sim::EMR_EDGE_CLIENT_ID),
            ("EMR_GENESYS_CLIENT_SECRET", emr_sim::EMR_EDGE_CLIENT_SECRET),
        ]
        .iter()
        .chain(env)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect(),
        ..EnvoyOptions::default()
    };
    tokio::task::spawn_blocking(move || Envoy::start(options))
        .await
        .expect("Envoy start panicked")
}

async fn status(http: &reqwest::Client, envoy: &Envoy, id: &str) -> Value {
    match http
        .get(envoy.url(&format!("/emr/status/{id}")))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn state(http: &reqwest::Client, envoy: &Envoy) -> Value {
    match http.get(envoy.url("/emr/state")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Waits until `envoy` says it takes webhooks (`/emr/ready`): its service
/// has a lease from etcd for their events.
async fn ready(http: &reqwest::Client, envoy: &Envoy, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Ok(r) = http.get(envoy.url("/emr/ready")).send().await {
            if r.status() == 200 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Waits until one of `replicas` leads and every one of them is ready; the
/// leader's index. `what` says, when one never leads, which cluster.
async fn settled(http: &reqwest::Client, replicas: &[&Envoy], what: &str) -> usize {
    let lead = leader(http, replicas, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("one replica leads, {what}"));
    for r in replicas {
        assert!(ready(http, r, Duration::from_secs(10)).await, "never ready");
    }
    lead
}

/// Waits until one of `replicas` acts as the leader; its index.
async fn leader(http: &reqwest::Client, replicas: &[&Envoy], within: Duration) -> Option<usize> {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        for (i, r) in replicas.iter().enumerate() {
            if state(http, r).await["cluster"]["acting"] == true {
                return Some(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn post(http: &reqwest::Client, envoy: &Envoy, body: &Value) -> reqwest::Response {
    http.post(envoy.url("/webhooks/canonical"))
        .json(body)
        .send()
        .await
        .expect("the replica answers")
}

fn group_puts(sim: &emr_sim::SimHandle) -> Vec<emr_sim::RequestRecord> {
    sim.requests()
        .into_iter()
        .filter(|r| {
            r.method == "PUT" && r.path == format!("/api/v2/architect/emergencygroups/{GROUP}")
        })
        .collect()
}

fn enabled(sim: &emr_sim::SimHandle) -> bool {
    sim.emergency_group(GROUP).is_some_and(|g| g.enabled)
}

/// etcd, the simulator and `n` replicas (`replica-a`, `replica-b`, …) on
/// them, once one of the replicas leads.
struct Cluster {
    sim: emr_sim::SimHandle,
    replicas: Vec<Envoy>,
    http: reqwest::Client,
    /// The index of the replica that leads.
    lead: usize,
    // Last: dropped after the replicas.
    _etcd: Etcd,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        Self::start_with(n, json!({})).await
    }

    async fn start_with(n: usize, patch: Value) -> Cluster {
        let etcd = Etcd::start();
        let sim = emr_sim::Sim::start(emr_sim::SimConfig::default())
            .await
            .unwrap();
        let mut replicas = Vec::new();
        for name in ["replica-a", "replica-b", "replica-c"].iter().take(n) {
            replicas.push(replica_with(name, &sim, &[&etcd], patch.clone()).await);
        }
        let http = reqwest::Client::new();
        let all: Vec<&Envoy> = replicas.iter().collect();
        let lead = settled(&http, &all, "at start").await;
        Cluster {
            sim,
            replicas,
            http,
            lead,
            _etcd: etcd,
        }
    }
}

#[tokio::test]
async fn activation_at_one_replica_and_resolution_at_another_switch_once_each_way() {
    let c = Cluster::start(2).await;
    let (sim, http, lead) = (&c.sim, &c.http, c.lead);
    let (a, b) = (&c.replicas[0], &c.replicas[1]);
    // Both say who leads.
    let leader_id = ["replica-a", "replica-b"][lead];
    for r in [&a, &b] {
        let mut same = false;
        for _ in 0..50 {
            if state(http, r).await["cluster"]["leader"] == leader_id {
                same = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(same, "{}", state(http, r).await);
    }

    let on = post(
        http,
        a,
        &incident("INC-CL-1", "EMERGENCY_ACTIVE", &["queue-12345"]),
    )
    .await;
    assert_eq!(on.status(), 202);
    assert!(eventually(Duration::from_secs(5), || enabled(sim)).await);
    // The leader's settlement reaches the follower too: both say APPLIED.
    for r in [&a, &b] {
        let mut applied = false;
        for _ in 0..50 {
            let s: Value = status(http, r, "INC-CL-1").await;
            if emr_e2e::latest_status(&s) == "APPLIED" {
                applied = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(applied, "{}", state(http, r).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut off = incident("INC-CL-1", "EMERGENCY_RESOLVED", &["queue-12345"]);
    off["timestamp"] = json!(emr_e2e::now_rfc3339());
    let r = post(http, b, &off).await;
    assert_eq!(r.status(), 202);
    assert!(eventually(Duration::from_secs(5), || !enabled(sim)).await);
    // Then quiet: no replica corrects the other.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let puts = group_puts(sim);
    assert_eq!(puts.len(), 2, "one PUT on, one off: {puts:?}");
    assert!(!enabled(sim));
    // Either replica answers the incident's status alike.
    for r in [&a, &b] {
        let s: Value = status(http, r, "INC-CL-1").await;
        assert_eq!(s["state"], "RESOLVED", "{s}");
        assert_eq!(emr_e2e::latest_status(&s), "APPLIED", "{s}");
    }
}

#[tokio::test]
async fn a_copy_at_another_replica_is_a_replay_and_another_payload_a_conflict() {
    let c = Cluster::start(2).await;
    let (sim, http) = (&c.sim, &c.http);
    let (a, b) = (&c.replicas[0], &c.replicas[1]);
    let event = incident("INC-CL-2", "EMERGENCY_ACTIVE", &["queue-12345"]);
    let first = post(http, a, &event).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let again = post(http, b, &event).await;
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let mut other = event.clone();
    other["targetQueueIds"] = json!(["queue-67890"]);
    let conflict = post(http, b, &other).await;
    assert_eq!(conflict.status(), 409);
    assert!(eventually(Duration::from_secs(5), || enabled(sim)).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(group_puts(sim).len(), 1, "one switch for one incident");
}

#[tokio::test]
async fn etcd_down_is_503_with_retry_after_and_nothing_is_lost_once_it_is_back() {
    let mut etcd = Etcd::start();
    let sim = emr_sim::Sim::start(emr_sim::SimConfig::default())
        .await
        .unwrap();
    let a = replica("replica-a", &sim, &[&etcd]).await;
    let http = reqwest::Client::new();
    leader(&http, &[&a], Duration::from_secs(10))
        .await
        .expect("it leads");
    etcd.kill();
    let event = incident("INC-CL-3", "EMERGENCY_ACTIVE", &["queue-12345"]);
    let started = std::time::Instant::now();
    let refused = post(&http, &a, &event).await;
    eprintln!("refused after {:?}", started.elapsed());
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("etcd"),
        "{problem}"
    );
    // It says so on its health too, and stops acting.
    let mut said = false;
    for _ in 0..50 {
        let h: Value = http
            .get(a.url("/emr/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        if h["status"] == "degraded" && h.to_string().contains("etcd") {
            said = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(said, "the health names etcd");
    // Alive (the health is 200 for a liveness probe), but not ready: a
    // load balancer sends webhooks elsewhere.
    let r = http.get(a.url("/emr/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("etcd"));
    assert!(!enabled(&sim), "nothing was accepted");
    // Back: the sender's retry is accepted and applied.
    etcd.restart();
    let mut accepted = false;
    for _ in 0..100 {
        if post(&http, &a, &event).await.status() == 202 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted);
    assert!(eventually(Duration::from_secs(10), || enabled(&sim)).await);
    assert!(
        ready(&http, &a, Duration::from_secs(5)).await,
        "ready again"
    );
}

#[tokio::test]
async fn the_leader_killed_another_takes_over_and_applies_what_a_survivor_accepted() {
    let mut c = Cluster::start(2).await;
    let (sim, http) = (&c.sim, &c.http);
    let replicas = &mut c.replicas;
    let dead = replicas.remove(c.lead);
    let survivor = replicas.remove(0);
    let pid = dead.pid();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let killed_at = std::time::Instant::now();
    // Sent to the survivor during the failover.
    let event = incident("INC-CL-4", "EMERGENCY_ACTIVE", &["queue-12345"]);
    assert_eq!(post(http, &survivor, &event).await.status(), 202);
    assert!(
        eventually(Duration::from_secs(10), || enabled(sim)).await,
        "the new leader applied it: {}",
        state(http, &survivor).await
    );
    eprintln!("applied {:?} after the kill", killed_at.elapsed());
    // And says so (its state is published within a tick).
    assert!(
        leader(http, &[&survivor], Duration::from_secs(2))
            .await
            .is_some(),
        "{}",
        state(http, &survivor).await
    );
    drop(dead);
}

#[tokio::test]
async fn a_resume_posted_to_a_follower_is_carried_out_by_the_leader() {
    // A quick watchdog, so that a person's change is seen within seconds.
    let fast = json!({"genesys": {"watchdog": {"period_seconds": 5, "converging_seconds": 1,
                                               "grace_seconds": 1}}});
    let c = Cluster::start_with(2, fast).await;
    let (sim, http) = (&c.sim, &c.http);
    let follower = &c.replicas[1 - c.lead];
    let leading = &c.replicas[c.lead];
    let on = incident("INC-CL-5", "EMERGENCY_ACTIVE", &["queue-12345"]);
    assert_eq!(post(http, follower, &on).await.status(), 202);
    assert!(eventually(Duration::from_secs(5), || enabled(sim)).await);
    // A person switches it off: the leader holds it off (people win).
    sim.flip_emergency_group(GROUP, false, emr_sim::UI_ADMIN_CLIENT_ID)
        .unwrap();
    let mut held = false;
    for _ in 0..100 {
        let st = state(http, leading).await;
        if st["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|g| g["id"] == GROUP && g["overridden"] == true)
        {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held, "the leader saw the person's change");
    assert!(!enabled(sim));
    // The resume goes to the follower; the leader carries it out.
    let r = http
        .post(follower.url(&format!("/emr/groups/{GROUP}/resume")))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(
        eventually(Duration::from_secs(5), || enabled(sim)).await,
        "the leader did not resume the group"
    );
}

/// `make run-cluster` (scripts/run-cluster.sh) as a user meets it: it starts
/// three etcd members and three replicas, says who leads, and an incident
/// sent to one replica switches the group. The simulator runs in the test
/// (the script's own is stood in for by one that only waits).
#[tokio::test]
async fn make_run_cluster_starts_three_replicas_that_switch_the_group() {
    use std::process::{Command, Stdio};
    let dir = root()
        .join("target/e2e")
        .join(format!("run-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let idle = dir.join("idle-sim.sh");
    std::fs::write(&idle, "#!/bin/sh\nexec sleep 120\n").unwrap();
    Command::new("chmod").arg("+x").arg(&idle).status().unwrap();
    let sim = emr_sim::Sim::start(emr_sim::SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..emr_sim::SimConfig::default()
    })
    .await
    .unwrap();
    let ports = |n: usize| {
        (0..n)
            .map(|_| emr_e2e::free_port().to_string())
            .collect::<Vec<_>>()
    };
    let (intake, admin, client, peer) = (ports(3), ports(3), ports(3), ports(3));
    let out = std::fs::File::create(dir.join("out")).unwrap();
    let mut script = Command::new("bash")
        .arg(root().join("scripts/run-cluster.sh"))
        .current_dir(root())
        .env("INTAKE_PORTS", intake.join(" "))
        .env("ADMIN_PORTS", admin.join(" "))
        .env("ETCD_CLIENT_PORTS", client.join(" "))
        .env("ETCD_PEER_PORTS", peer.join(" "))
        .env("SIM_PORT", sim.addr().port().to_string())
        .env("SIM", &idle)
        .env("ENVOY", emr_e2e::envoy_binary())
        .env("WASM", emr_e2e::wasm_path())
        .env("ETCD", emr_e2e::etcd::etcd_binary())
        .env("RUN_DIR", dir.join("run"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("bash scripts/run-cluster.sh");
    let printed = || std::fs::read_to_string(dir.join("out")).unwrap_or_default();
    let started = eventually(Duration::from_secs(60), || {
        printed().contains("Ctrl-C stops everything")
    })
    .await;
    let banner = printed();
    let stop = |script: &mut std::process::Child| {
        let _ = Command::new("kill").arg(script.id().to_string()).status();
        let _ = script.wait();
    };
    if !started {
        stop(&mut script);
        panic!("run-cluster did not start:\n{banner}");
    }
    assert!(
        banner.contains("leader     replica-"),
        "it says who leads:\n{banner}"
    );
    assert!(banner.contains(&format!(
        "http://127.0.0.1:{}/webhooks/canonical",
        intake[1]
    )));
    // The activation the banner prints, sent to the second replica.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://127.0.0.1:{}/webhooks/canonical", intake[1]))
        .json(&incident(
            "INC-RUN-CLUSTER",
            "EMERGENCY_ACTIVE",
            &["queue-12345"],
        ))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let switched = eventually(Duration::from_secs(10), || enabled(&sim)).await;
    stop(&mut script);
    assert_eq!(status, 202);
    assert!(switched, "the group was not switched");
}

#[tokio::test]
async fn a_hundred_copies_spread_over_three_replicas_are_accepted_once_and_switch_once() {
    let c = Cluster::start(3).await;
    let (sim, http, replicas) = (&c.sim, &c.http, &c.replicas);
    let event = incident("INC-CL-100", "EMERGENCY_ACTIVE", &["queue-12345"]);
    let answers = copies(http, replicas, &event, None).await;
    let first = answers.iter().filter(|(_, replayed)| !replayed).count();
    assert_eq!(first, 1, "one first answer, 99 replays");
    assert_eq!(accepted(replicas), 1);
    assert!(eventually(Duration::from_secs(5), || enabled(sim)).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(group_puts(sim).len(), 1, "one switch");
    // The same for one delivery's id: 100 copies of a delivery (its
    // `webhook-id` and body) over the three replicas.
    let resolve = incident("INC-CL-100", "EMERGENCY_RESOLVED", &[]);
    let answers = copies(http, replicas, &resolve, Some("msg_cl_100_resolve")).await;
    let first = answers.iter().filter(|(_, replayed)| !replayed).count();
    assert_eq!(first, 1, "one first answer, 99 replays: {answers:?}");
    assert_eq!(accepted(replicas), 2);
    assert!(eventually(Duration::from_secs(5), || !enabled(sim)).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(group_puts(sim).len(), 2, "one switch off");
}

/// 100 copies of `body` at once, spread over `replicas`, with `delivery`
/// as their `webhook-id`; each answer's status and whether it was a
/// replay. Every one must be a 202.
async fn copies(
    http: &reqwest::Client,
    replicas: &[Envoy],
    body: &Value,
    delivery: Option<&str>,
) -> Vec<(u16, bool)> {
    let urls: Vec<String> = replicas
        .iter()
        .map(|r| r.url("/webhooks/canonical"))
        .collect();
    let sends = (0..100).map(|i| {
        let (http, url, body) = (http.clone(), urls[i % urls.len()].clone(), body.clone());
        let delivery = delivery.map(str::to_owned);
        tokio::spawn(async move {
            let mut request = http.post(url).json(&body);
            if let Some(id) = delivery {
                request = request.header("webhook-id", id);
            }
            let r = request.send().await.unwrap();
            (
                r.status().as_u16(),
                r.headers().contains_key("idempotent-replayed"),
            )
        })
    });
    let mut answers = Vec::new();
    for s in sends.collect::<Vec<_>>() {
        answers.push(s.await.unwrap());
    }
    assert!(
        answers.iter().all(|(status, _)| *status == 202),
        "{answers:?}"
    );
    answers
}

fn accepted(replicas: &[Envoy]) -> u64 {
    replicas
        .iter()
        .map(|r| r.counter("emr.intake.accepted"))
        .sum()
}

/// What the proxy in front of etcd does with connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Passes them on to etcd.
    Pass = 0,
    /// Drops them, and refuses new ones: a replica cut off from etcd.
    Cut = 1,
    /// Drops them, and answers new ones with a 200 that is not etcd's JSON:
    /// etcd "answering garbage".
    Junk = 2,
}

/// A TCP proxy to etcd whose [`Link`] the test sets; a change drops the
/// open connections within 20 ms.
async fn proxy(to: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU8>) {
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let link = Arc::new(AtomicU8::new(Link::Pass as u8));
    let flag = Arc::clone(&link);
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let flag = Arc::clone(&flag);
            tokio::spawn(async move {
                match flag.load(Ordering::SeqCst) {
                    m if m == Link::Cut as u8 => return,
                    m if m == Link::Junk as u8 => {
                        let mut buf = vec![0u8; 65_536];
                        let _ = inbound.read(&mut buf).await;
                        let body = "<html>oops</html>";
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = inbound.write_all(answer.as_bytes()).await;
                        return;
                    }
                    _ => {}
                }
                let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                else {
                    return;
                };
                let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                let watch = async {
                    while flag.load(Ordering::SeqCst) == Link::Pass as u8 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tokio::select! { _ = copy => {}, _ = watch => {} }
            });
        }
    });
    (port, link)
}

#[tokio::test]
async fn a_replica_cut_off_from_etcd_refuses_webhooks_and_never_writes_while_the_others_carry_on() {
    let etcd = Etcd::start();
    let sim = emr_sim::Sim::start(emr_sim::SimConfig::default())
        .await
        .unwrap();
    let (proxy_port, link) = proxy(etcd.client_port).await;
    // Replica A reaches etcd only through the proxy; B directly.
    let through_proxy = Etcd::at_port(proxy_port);
    let a = replica("replica-a", &sim, &[&through_proxy]).await;
    let b = replica("replica-b", &sim, &[&etcd]).await;
    let http = reqwest::Client::new();
    leader(&http, &[&a, &b], Duration::from_secs(10))
        .await
        .expect("one replica leads");
    link.store(Link::Cut as u8, std::sync::atomic::Ordering::SeqCst);
    let writes_before = a.counter("emr.genesys.transitions");
    // A refuses what it cannot record.
    let mut refused = false;
    for _ in 0..50 {
        let r = post(
            &http,
            &a,
            &incident("INC-CL-CUT-A", "EMERGENCY_ACTIVE", &["queue-12345"]),
        )
        .await;
        if r.status() == 503 && r.headers().contains_key("retry-after") {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the cut-off replica answers 503 + Retry-After");
    // B carries on: leads (taking over if A led) and applies its events.
    let mut b_leads = false;
    for _ in 0..100 {
        if state(&http, &b).await["cluster"]["acting"] == true {
            b_leads = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b_leads, "{}", state(&http, &b).await);
    let r = post(
        &http,
        &b,
        &incident("INC-CL-CUT-B", "EMERGENCY_ACTIVE", &["queue-12345"]),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert!(eventually(Duration::from_secs(5), || enabled(&sim)).await);
    // A never wrote to Genesys after the cut, and does not act.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(a.counter("emr.genesys.transitions"), writes_before);
    assert_eq!(state(&http, &a).await["cluster"]["acting"], false);
}

#[tokio::test]
async fn a_rolling_restart_under_a_trickle_of_incidents_loses_none_and_switches_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let mut c = Cluster::start(3).await;
    let (sim, http) = (&c.sim, c.http.clone());
    let replicas = std::mem::take(&mut c.replicas);
    let urls: Vec<String> = replicas
        .iter()
        .map(|r| r.url("/webhooks/canonical"))
        .collect();
    let replicas = Arc::new(Mutex::new(replicas));
    // A trickle: two incidents a second, each sent to the next replica, and
    // to the others in turn when one does not answer 202 (as a load
    // balancer's retry would).
    let done = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let trickle = {
        let (done, accepted, http) = (Arc::clone(&done), Arc::clone(&accepted), http.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !done.load(Ordering::SeqCst) {
                let id = format!("INC-RR-{i}");
                let body = incident(&id, "EMERGENCY_ACTIVE", &["queue-12345"]);
                for attempt in 0..30 {
                    let url = &urls[(i + attempt) % 3];
                    let ok = http
                        .post(url)
                        .json(&body)
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 202);
                    if ok {
                        accepted.lock().unwrap().push(id.clone());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    // Restart each replica in turn, a few seconds apart.
    for k in 0..3 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let replicas = Arc::clone(&replicas);
        tokio::task::spawn_blocking(move || replicas.lock().unwrap()[k].restart())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    done.store(true, Ordering::SeqCst);
    trickle.await.unwrap();
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() >= 10,
        "a trickle was sent: {}",
        accepted.len()
    );
    // Every accepted incident is known to the replica that leads now.
    let replicas = Arc::try_unwrap(replicas)
        .map_err(|_| "still shared")
        .unwrap()
        .into_inner()
        .unwrap();
    let rs: Vec<&Envoy> = replicas.iter().collect();
    let lead = leader(&http, &rs, Duration::from_secs(10))
        .await
        .expect("a replica leads after the restarts");
    for id in &accepted {
        let mut known = false;
        for _ in 0..50 {
            let r = http
                .get(rs[lead].url(&format!("/emr/status/{id}")))
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                known = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(known, "{id} was accepted and is lost");
    }
    // One switch: the group went on once and stayed on.
    assert!(enabled(sim));
    assert_eq!(group_puts(sim).len(), 1, "{:?}", group_puts(sim));
}

#[tokio::test]
async fn an_event_the_leader_accepted_just_before_it_died_is_applied_by_the_next() {
    let mut c = Cluster::start(2).await;
    let dead = c.replicas.remove(c.lead);
    let survivor = c.replicas.remove(0);
    // Accepted by the leader, which is killed at once: within milliseconds
    // of the 202, before its next read of the log (every 50 ms) as a rule.
    // Either way the incident must end applied, and switched once.
    let event = incident("INC-CL-6", "EMERGENCY_ACTIVE", &["queue-12345"]);
    assert_eq!(post(&c.http, &dead, &event).await.status(), 202);
    let _ = std::process::Command::new("kill")
        .args(["-9", &dead.pid().to_string()])
        .status();
    assert!(
        eventually(Duration::from_secs(10), || enabled(&c.sim)).await,
        "the next leader applied it: {}",
        state(&c.http, &survivor).await
    );
    assert_eq!(group_puts(&c.sim).len(), 1, "switched once");
    drop(dead);
}

/// How many keys `etcd` holds under `prefix`.
async fn keys_under(http: &reqwest::Client, etcd: &Etcd, prefix: &[u8]) -> u64 {
    let body = json!({"key": emr_core::etcd::b64(prefix),
                      "range_end": emr_core::etcd::b64(&emr_core::etcd::prefix_end(prefix)),
                      "count_only": true});
    let r = etcd_call(http, etcd, "/v3/kv/range", body).await;
    r["count"].as_str().map_or(0, |c| c.parse().unwrap())
}

#[tokio::test]
async fn events_leave_etcd_after_the_dedupe_window_and_the_snapshot_keeps_their_incident() {
    // The shortest dedupe window: a minute, so entries leave within 80 s.
    let patch = json!({"intake": {"dedupe_window_seconds": 60}});
    let etcd = Etcd::start();
    let sim = emr_sim::Sim::start(emr_sim::SimConfig::default())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let start_all = || async {
        let mut rs = Vec::new();
        for id in ["replica-a", "replica-b"] {
            rs.push(replica_with(id, &sim, &[&etcd], patch.clone()).await);
        }
        let all: Vec<&Envoy> = rs.iter().collect();
        settled(&http, &all, "at start").await;
        rs
    };
    let replicas = start_all().await;
    let event = incident("INC-LONG", "EMERGENCY_ACTIVE", &["queue-12345"]);
    assert_eq!(post(&http, &replicas[0], &event).await.status(), 202);
    assert!(eventually(Duration::from_secs(5), || enabled(&sim)).await);
    assert!(keys_under(&http, &etcd, b"emr/e/").await >= 1);
    // The event's key goes with its lease; the leader's snapshot stays.
    let started = std::time::Instant::now();
    while keys_under(&http, &etcd, b"emr/e/").await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the log's entries never left"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("the log emptied {:?} after the event", started.elapsed());
    assert_eq!(keys_under(&http, &etcd, b"emr/s").await, 1, "a snapshot");
    // Every replica starts afresh: only the snapshot knows the incident.
    drop(replicas);
    let replicas = start_all().await;
    for r in &replicas {
        let s = status(&http, r, "INC-LONG").await;
        assert_eq!(s["state"], "OPEN", "{s}");
    }
    // Held on, not switched off and on again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(enabled(&sim));
    assert_eq!(group_puts(&sim).len(), 1, "one switch on, none since");
    // Its resolution, at either replica, still switches it off.
    let resolve = incident("INC-LONG", "EMERGENCY_RESOLVED", &[]);
    assert_eq!(post(&http, &replicas[1], &resolve).await.status(), 202);
    assert!(eventually(Duration::from_secs(5), || !enabled(&sim)).await);
    assert_eq!(group_puts(&sim).len(), 2);
}

/// The local cluster template with its etcd cluster replaced by the shipped
/// production one (`envoy/etcd.production.example.yaml`): mutual TLS with
/// `certs`' client certificate (or `key`'s pair, when given).
fn mtls_template(
    dir: &std::path::Path,
    certs: &Certificates,
    client: (&std::path::Path, &std::path::Path),
) -> std::path::PathBuf {
    let local = std::fs::read_to_string(root().join("envoy/cluster.yaml.tmpl")).unwrap();
    let start = local
        .find("    - name: etcd\n")
        .expect("the local etcd cluster");
    let end = start
        + local[start + 1..]
            .find("    - name: ")
            .expect("a cluster after etcd")
        + 1;
    let shipped = std::fs::read_to_string(root().join("envoy/etcd.production.example.yaml"))
        .unwrap()
        .replace("{{ETCD_SERVER_NAME}}", "etcd.emr.test")
        .replace("{{ETCD_CA}}", &certs.server.ca.display().to_string())
        .replace("{{ETCD_CLIENT_CERT}}", &client.0.display().to_string())
        .replace("{{ETCD_CLIENT_KEY}}", &client.1.display().to_string());
    let cluster: String = shipped
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("    {l}\n"))
        .collect();
    let text = format!("{}{cluster}{}", &local[..start], &local[end..]);
    let path = dir.join("cluster-mtls.yaml.tmpl");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn replicas_reach_etcd_over_mutual_tls_as_the_production_example_says() {
    let dir = emr_e2e::scratch_dir();
    let certs = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || Certificates::make(&dir, "etcd.emr.test"))
            .await
            .unwrap()
    };
    let etcd = {
        let tls = certs.server.clone();
        tokio::task::spawn_blocking(move || Etcd::start_tls(&tls))
            .await
            .unwrap()
    };
    let sim = emr_sim::Sim::start(emr_sim::SimConfig::default())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let template = mtls_template(&dir, &certs, (&certs.client_cert, &certs.client_key));
    let mut replicas = Vec::new();
    for id in ["replica-a", "replica-b"] {
        replicas.push(replica_from(template.clone(), id, &sim, &[&etcd], json!({}), &[]).await);
    }
    let all: Vec<&Envoy> = replicas.iter().collect();
    settled(&http, &all, "over TLS").await;
    let event = incident("INC-TLS", "EMERGENCY_ACTIVE", &["queue-12345"]);
    assert_eq!(post(&http, &replicas[1], &event).await.status(), 202);
    assert!(eventually(Duration::from_secs(5), || enabled(&sim)).await);
    // A replica whose certificate another CA signed: etcd refuses the
    // handshake, so it never leads nor takes a webhook.
    let stranger = mtls_template(
        &emr_e2e::scratch_dir(),
        &certs,
        (&certs.stranger_cert, &certs.stranger_key),
    );
    let outsider = replica_from(stranger, "replica-x", &sim, &[&etcd], json!({}), &[]).await;
    assert!(!ready(&http, &outsider, Duration::from_secs(3)).await);
    let refused = post(
        &http,
        &outsider,
        &incident("INC-TLS-2", "EMERGENCY_ACTIVE", &["queue-12345"]),
    )
    .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(state(&http, &outsider).await["cluster"]["acting"], false);
}

#[tokio::test]
async fn with_etcds_auth_on_replicas_authenticate_and_a_wrong_password_is_refused() {
    const PASSWORD: &str = "emr-edge-etcd-password-0123";
    let etcd = Etcd::start();
    let http = reqwest::Client::new();
    // etcd's auth, set up over the gateway as an operator would: root, and
    // a user for emr-edge that may touch its prefix only.
    let b64 = |s: &str| emr_core::etcd::b64(s.as_bytes());
    for (path, body) in [
        (
            "/v3/auth/user/add",
            json!({"name": "root", "password": "root-password"}),
        ),
        (
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        ),
        (
            "/v3/auth/user/add",
            json!({"name": "emr", "password": PASSWORD}),
        ),
        ("/v3/auth/role/add", json!({"name": "emr"})),
        (
            "/v3/auth/role/grant",
            json!({"name": "emr", "perm": {"permType": "READWRITE", "key": b64("emr/"),
                                            "range_end": b64("emr0")}}),
        ),
        ("/v3/auth/user/grant", json!({"user": "emr", "role": "emr"})),
        ("/v3/auth/enable", json!({})),
    ] {
        let r = http.post(etcd.url(path)).json(&body).send().await.unwrap();
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
    let sim = emr_sim::Sim::start(emr_sim::SimConfig::default())
        .await
        .unwrap();
    let patch = json!({"cluster": {"auth": {"user_env": "EMR_ETCD_USER",
                                            "password_env": "EMR_ETCD_PASSWORD"}}});
    let template = root().join("envoy/cluster.yaml.tmpl");
    let creds = [("EMR_ETCD_USER", "emr"), ("EMR_ETCD_PASSWORD", PASSWORD)];
    let mut replicas = Vec::new();
    for id in ["replica-a", "replica-b"] {
        replicas
            .push(replica_from(template.clone(), id, &sim, &[&etcd], patch.clone(), &creds).await);
    }
    let all: Vec<&Envoy> = replicas.iter().collect();
    settled(&http, &all, "authenticated").await;
    let event = incident("INC-AUTH", "EMERGENCY_ACTIVE", &["queue-12345"]);
    assert_eq!(post(&http, &replicas[1], &event).await.status(), 202);
    assert!(eventually(Duration::from_secs(5), || enabled(&sim)).await);
    // A replica with a wrong password: refused, says so, never shows it.
    let wrong = [
        ("EMR_ETCD_USER", "emr"),
        ("EMR_ETCD_PASSWORD", "not-the-etcd-password-0123"),
    ];
    let outsider = replica_from(template, "replica-x", &sim, &[&etcd], patch, &wrong).await;
    assert!(!ready(&http, &outsider, Duration::from_secs(3)).await);
    let refused = post(
        &http,
        &outsider,
        &incident("INC-AUTH-2", "EMERGENCY_ACTIVE", &["queue-12345"]),
    )
    .await;
    assert_eq!(refused.status(), 503);
    let log = outsider.log();
    assert!(
        log.contains("cannot authenticate to etcd"),
        "{}",
        outsider.log_tail(20)
    );
    assert!(!log.contains("not-the-etcd-password"));
    assert!(!replicas[0].log().contains(PASSWORD));
}

/// A request to etcd's gateway, as an operator's tool would make it.
async fn etcd_call(http: &reqwest::Client, etcd: &Etcd, path: &str, body: Value) -> Value {
    http.post(etcd.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null)
}

/// Posts `event` to `r` until it is accepted (a sender's retries).
async fn accepted_eventually(http: &reqwest::Client, r: &Envoy, event: &Value) -> bool {
    for _ in 0..100 {
        if post(http, r, event).await.status() == 202 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn etcd_full_or_answering_garbage_is_503_naming_etcd_and_recovers_once_fixed() {
    let etcd = Etcd::start_with(&["--quota-backend-bytes=2097152"]);
    let sim = emr_sim::Sim::start(emr_sim::SimConfig::default())
        .await
        .unwrap();
    let (proxy_port, link) = proxy(etcd.client_port).await;
    let a = replica("replica-a", &sim, &[&Etcd::at_port(proxy_port)]).await;
    let http = reqwest::Client::new();
    settled(&http, &[&a], "alone").await;
    // etcd full: something else filled it until etcd raised NOSPACE.
    let filler = "x".repeat(200_000);
    let mut full = false;
    for i in 0..100 {
        let put = etcd_call(
            &http,
            &etcd,
            "/v3/kv/put",
            json!({"key": emr_core::etcd::b64(format!("filler/{i}").as_bytes()),
                   "value": emr_core::etcd::b64(filler.as_bytes())}),
        )
        .await;
        if put.to_string().contains("space exceeded") {
            full = true;
            break;
        }
    }
    assert!(full, "a 2 MiB quota fills");
    let event = incident("INC-FULL", "EMERGENCY_ACTIVE", &["queue-12345"]);
    let refused = post(&http, &a, &event).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("full"),
        "{problem}"
    );
    assert!(
        a.log().contains("etcd's database is full"),
        "{}",
        a.log_tail(20)
    );
    assert!(!enabled(&sim), "nothing accepted, nothing switched");
    // An operator frees space: delete, compact, defragment, disarm.
    let deleted = etcd_call(
        &http,
        &etcd,
        "/v3/kv/deleterange",
        json!({"key": emr_core::etcd::b64(b"filler/"),
               "range_end": emr_core::etcd::b64(&emr_core::etcd::prefix_end(b"filler/"))}),
    )
    .await;
    let revision = deleted["header"]["revision"].clone();
    etcd_call(
        &http,
        &etcd,
        "/v3/kv/compaction",
        json!({"revision": revision, "physical": true}),
    )
    .await;
    etcd_call(&http, &etcd, "/v3/maintenance/defragment", json!({})).await;
    let alarms = etcd_call(
        &http,
        &etcd,
        "/v3/maintenance/alarm",
        json!({"action": "GET"}),
    )
    .await;
    for alarm in alarms["alarms"].as_array().cloned().unwrap_or_default() {
        etcd_call(
            &http,
            &etcd,
            "/v3/maintenance/alarm",
            json!({"action": "DEACTIVATE", "memberID": alarm["memberID"], "alarm": alarm["alarm"]}),
        )
        .await;
    }
    assert!(
        accepted_eventually(&http, &a, &event).await,
        "the retry is accepted"
    );
    assert!(eventually(Duration::from_secs(5), || enabled(&sim)).await);
    // etcd answering garbage: refused, named, nothing kept.
    link.store(Link::Junk as u8, std::sync::atomic::Ordering::SeqCst);
    // (The proxy drops its open connections within 20 ms.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = incident("INC-JUNK", "EMERGENCY_ACTIVE", &["queue-12345"]);
    let refused = post(&http, &a, &other).await;
    assert_eq!(refused.status(), 503);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("unreadable"),
        "{problem}"
    );
    assert!(
        a.log().contains("etcd's answer is unreadable"),
        "{}",
        a.log_tail(20)
    );
    link.store(Link::Pass as u8, std::sync::atomic::Ordering::SeqCst);
    assert!(accepted_eventually(&http, &a, &other).await, "and recovers");
    let mut open = false;
    for _ in 0..50 {
        if status(&http, &a, "INC-JUNK").await["state"] == "OPEN" {
            open = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(open, "{}", status(&http, &a, "INC-JUNK").await);
}
