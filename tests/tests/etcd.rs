//! Cluster mode's etcd parts against a real etcd: the requests the core
//! builds and the answers it reads are etcd 3.4's own.
//!
//! - Leader election (`emr_core::etcd::election`): each replica is driven
//!   as the service's glue will drive it, its calls out over HTTP and their
//!   answers back, on real time.
//! - The event log (`emr_core::etcd::log`): commits from several replicas
//!   at once, replays, conflicts, and the leader's reads.

use std::time::Duration;

use chrono::Utc;
use emr_core::callout::{CallResult, HttpCall};
use emr_core::etcd::answer;
use emr_core::etcd::election::{Effect, Election, Metric, Role, Settings};
use emr_core::etcd::log::{self, Committed, Entry, Keys, Record};
use emr_core::etcd::{Fence, Gateway};
use emr_e2e::etcd::Etcd;
use emr_e2e::reqwest;

const TTL_S: i64 = 2;

fn replica(etcd: &Etcd, name: &str) -> Election {
    Election::new(
        Settings {
            key: b"emr-test/leader".to_vec(),
            replica: name.into(),
            ttl_s: TTL_S,
        },
        Gateway {
            cluster: "etcd".into(),
            authority: format!("127.0.0.1:{}", etcd.client_port),
            timeout_ms: 500,
        },
        Utc::now(),
    )
}

/// Sends one call as the glue would, and reads the answer.
async fn dispatch(http: &reqwest::Client, etcd_port: u16, call: &HttpCall) -> CallResult {
    let mut request = http
        .post(format!("http://127.0.0.1:{etcd_port}{}", call.path))
        .timeout(Duration::from_millis(call.timeout_ms));
    for (k, v) in &call.headers {
        request = request.header(k, v);
    }
    if let Some(body) = &call.body {
        request = request.body(body.clone());
    }
    match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            CallResult::Response {
                status,
                headers: vec![],
                body,
            }
        }
        Err(_) => CallResult::Failed,
    }
}

/// What a replica did while driven: its effects other than calls.
#[derive(Default)]
struct Seen {
    audits: Vec<emr_e2e::Value>,
    metrics: Vec<Metric>,
}

/// Drives `e` for `d`: polls every 50 ms, dispatching its calls in turn.
async fn drive(e: &mut Election, port: u16, d: Duration, seen: &mut Seen) {
    let http = reqwest::Client::new();
    let until = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < until {
        let mut fx = e.poll(Utc::now());
        while !fx.is_empty() {
            let mut next = Vec::new();
            for effect in fx {
                match effect {
                    Effect::Call(call) => {
                        let result = dispatch(&http, port, &call).await;
                        next.extend(e.on_result(call.op, result, Utc::now()));
                    }
                    Effect::Audit(a) => seen.audits.push(a),
                    Effect::Metric(m) => seen.metrics.push(m),
                }
            }
            fx = next;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Drives every replica together for `d`.
async fn drive_all(replicas: &mut [Election], port: u16, d: Duration) -> Vec<Seen> {
    let mut seen: Vec<Seen> = replicas.iter().map(|_| Seen::default()).collect();
    let runs = replicas
        .iter_mut()
        .zip(seen.iter_mut())
        .map(|(e, s)| drive(e, port, d, s));
    futures_join_all(runs).await;
    seen
}

/// `join_all` without another dependency: each future on the same task.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(move |cx| {
        pinned.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pinned.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

fn leaders(replicas: &[Election]) -> Vec<usize> {
    let now = Utc::now();
    (0..replicas.len())
        .filter(|i| replicas[*i].may_act(now))
        .collect()
}

async fn fenced_write(etcd: &Etcd, fence: &Fence, value: &[u8]) -> bool {
    let gw = Gateway {
        cluster: "etcd".into(),
        authority: "etcd".into(),
        timeout_ms: 500,
    };
    let entry = Entry {
        idempotency_key: format!("data-{}", String::from_utf8_lossy(value)),
        record: Record {
            fingerprint: String::new(),
            message: emr_e2e::json!(null),
        },
    };
    let keys = Keys::new("emr-test/");
    let lease = lease(etcd.client_port, 600).await;
    let call = gw.call(1, log::commit_fenced(&keys, &[entry], lease, fence));
    let result = dispatch(&reqwest::Client::new(), etcd.client_port, &call).await;
    answer::txn(&result).expect("a txn answer").succeeded
}

#[tokio::test]
async fn three_replicas_elect_exactly_one_and_the_others_know_which() {
    let etcd = Etcd::start();
    let mut replicas: Vec<Election> = ["r1", "r2", "r3"]
        .iter()
        .map(|n| replica(&etcd, n))
        .collect();
    let seen = drive_all(&mut replicas, etcd.client_port, Duration::from_secs(3)).await;
    let leading = leaders(&replicas);
    assert_eq!(leading.len(), 1, "exactly one leads");
    let leader = ["r1", "r2", "r3"][leading[0]];
    for (i, r) in replicas.iter().enumerate() {
        match r.role(Utc::now()) {
            Role::Leader { fence } => {
                assert_eq!(i, leading[0]);
                assert!(fence.revision > 0);
            }
            Role::Follower { leader: seen } => assert_eq!(seen.as_deref(), Some(leader)),
        }
    }
    // One election won in all, and no etcd call failed.
    let won: usize = seen
        .iter()
        .map(|s| s.metrics.iter().filter(|m| **m == Metric::Won).count())
        .sum();
    assert_eq!(won, 1);
    assert!(
        seen.iter()
            .all(|s| !s.metrics.iter().any(|m| matches!(m, Metric::Failure(_)))),
        "{:?}",
        seen.iter().map(|s| &s.audits).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_cut_off_leader_stops_acting_before_another_leads_and_its_writes_are_fenced() {
    let etcd = Etcd::start();
    let mut old = replica(&etcd, "old");
    let mut seen = Seen::default();
    drive(
        &mut old,
        etcd.client_port,
        Duration::from_millis(600),
        &mut seen,
    )
    .await;
    let Role::Leader { fence: old_fence } = old.role(Utc::now()) else {
        panic!("alone, it leads: {:?}", seen.audits)
    };
    assert!(fenced_write(&etcd, &old_fence, b"from old").await);
    // Cut off: it is no longer driven, so its lease is not renewed. On its
    // own clock it stops acting while its lease may still be alive.
    let cut_at = Utc::now();
    let mut new = replica(&etcd, "new");
    let mut new_seen = Seen::default();
    let mut old_stopped = None;
    let mut new_started = None;
    for _ in 0..80 {
        drive(
            &mut new,
            etcd.client_port,
            Duration::from_millis(100),
            &mut new_seen,
        )
        .await;
        let now = Utc::now();
        if old_stopped.is_none() && !old.may_act(now) {
            old_stopped = Some(now);
        }
        if new_started.is_none() && new.may_act(now) {
            new_started = Some(now);
            break;
        }
    }
    let (old_stopped, new_started) = (
        old_stopped.expect("the old leader stops acting"),
        new_started.expect("another replica leads within 8 s"),
    );
    assert!(
        old_stopped < new_started,
        "never two acting: old stopped {old_stopped}, new started {new_started}"
    );
    // The new leader took over once the lease ran out (TTL 2 s, plus
    // etcd's expiry tick), not before.
    let took = (new_started - cut_at).num_milliseconds();
    let gap = (new_started - old_stopped).num_milliseconds();
    eprintln!("took over {took} ms after the cut; {gap} ms with nobody acting");
    assert!((1_500..6_000).contains(&took), "took over after {took} ms");
    let Role::Leader { fence: new_fence } = new.role(Utc::now()) else {
        panic!()
    };
    assert!(new_fence.revision > old_fence.revision);
    // The old leader's fenced write is refused; the new one's goes in.
    assert!(!fenced_write(&etcd, &old_fence, b"from old, late").await);
    assert!(fenced_write(&etcd, &new_fence, b"from new").await);
}

#[tokio::test]
async fn a_leader_that_resigns_hands_over_at_once() {
    let etcd = Etcd::start();
    let mut replicas = vec![replica(&etcd, "a"), replica(&etcd, "b")];
    drive_all(
        &mut replicas,
        etcd.client_port,
        Duration::from_millis(1_500),
    )
    .await;
    let leading = leaders(&replicas);
    assert_eq!(leading.len(), 1);
    let (l, f) = (leading[0], 1 - leading[0]);
    let http = reqwest::Client::new();
    for effect in replicas[l].resign(Utc::now()) {
        if let Effect::Call(call) = effect {
            let result = dispatch(&http, etcd.client_port, &call).await;
            replicas[l].on_result(call.op, result, Utc::now());
        }
    }
    assert!(!replicas[l].may_act(Utc::now()));
    let resigned_at = Utc::now();
    let mut seen = Seen::default();
    let mut follower = replicas.remove(f);
    for _ in 0..30 {
        drive(
            &mut follower,
            etcd.client_port,
            Duration::from_millis(100),
            &mut seen,
        )
        .await;
        if follower.may_act(Utc::now()) {
            break;
        }
    }
    assert!(follower.may_act(Utc::now()), "{:?}", seen.audits);
    // At its next campaign (a period: a third of the TTL), not after the TTL.
    let took = (Utc::now() - resigned_at).num_milliseconds();
    eprintln!("took over {took} ms after the leader resigned");
    assert!(
        took < TTL_S * 1_000,
        "took over after {took} ms, not before the resigned lease would have lapsed"
    );
}

#[tokio::test]
async fn etcd_gone_stops_the_leader_acting_and_it_leads_again_once_etcd_is_back() {
    let mut etcd = Etcd::start();
    let mut leader = replica(&etcd, "solo");
    let mut seen = Seen::default();
    drive(
        &mut leader,
        etcd.client_port,
        Duration::from_millis(600),
        &mut seen,
    )
    .await;
    assert!(leader.may_act(Utc::now()));
    etcd.kill();
    drive(
        &mut leader,
        etcd.client_port,
        Duration::from_secs(2),
        &mut seen,
    )
    .await;
    assert!(
        !leader.may_act(Utc::now()),
        "no renewal for a TTL: not acting"
    );
    assert!(seen
        .metrics
        .contains(&Metric::Failure(answer::Failure::Transport.class())));
    assert!(seen.audits.iter().any(|a| a["decision"] == "stepped-down"));
    etcd.restart();
    drive(
        &mut leader,
        etcd.client_port,
        Duration::from_secs(5),
        &mut seen,
    )
    .await;
    assert!(leader.may_act(Utc::now()), "{:?}", seen.audits);
}

// ---- the event log ----------------------------------------------------------

fn gateway(port: u16) -> Gateway {
    Gateway {
        cluster: "etcd".into(),
        authority: format!("127.0.0.1:{port}"),
        timeout_ms: 2_000,
    }
}

fn entry(key: &str, fingerprint: &str) -> Entry {
    Entry {
        idempotency_key: key.into(),
        record: Record {
            fingerprint: fingerprint.into(),
            message: emr_e2e::json!({"event": key, "fingerprint": fingerprint}),
        },
    }
}

/// A lease of `ttl_s` for the log's entries, as a service keeps one.
async fn lease(port: u16, ttl_s: i64) -> i64 {
    let call = gateway(port).call(1, emr_core::etcd::lease_grant(ttl_s));
    let result = dispatch(&reqwest::Client::new(), port, &call).await;
    answer::lease_grant(&result).expect("a lease").id
}

async fn commit_to(port: u16, entries: Vec<Entry>) -> Vec<Committed> {
    let keys = Keys::new("emr-test/");
    let lease = lease(port, 600).await;
    let call = gateway(port).call(1, log::commit(&keys, &entries, lease));
    let result = dispatch(&reqwest::Client::new(), port, &call).await;
    log::committed(&entries, &result).expect("a commit answer")
}

async fn commit(etcd: &Etcd, entries: &[Entry]) -> Vec<Committed> {
    commit_to(etcd.client_port, entries.to_vec()).await
}

async fn read(etcd: &Etcd, request: emr_core::etcd::Request) -> CallResult {
    let call = gateway(etcd.client_port).call(1, request);
    dispatch(&reqwest::Client::new(), etcd.client_port, &call).await
}

#[tokio::test]
async fn one_event_committed_by_many_replicas_at_once_is_created_once() {
    let etcd = Etcd::start();
    // 100 copies of one event, sent concurrently as three replicas would.
    let port = etcd.client_port;
    let outcomes: Vec<_> = (0..100)
        .map(|_| tokio::spawn(commit_to(port, vec![entry("pd:Q1:ACTIVE", "f1")])))
        .collect();
    let mut created = 0;
    let mut replays = 0;
    for o in outcomes {
        match o.await.unwrap().as_slice() {
            [Committed::Created { .. }] => created += 1,
            [Committed::Replay { first }] => {
                assert_eq!(first.fingerprint, "f1");
                replays += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((created, replays), (1, 99));
    // Another payload under the same key is a conflict.
    assert_eq!(
        commit(&etcd, &[entry("pd:Q1:ACTIVE", "f2")]).await,
        vec![Committed::Conflict]
    );
}

#[tokio::test]
async fn a_delivery_is_decided_whole_and_the_leader_reads_what_is_new() {
    let etcd = Etcd::start();
    let keys = Keys::new("emr-test/");
    assert_eq!(
        log::marker_revision(&read(&etcd, log::read_marker(&keys)).await).unwrap(),
        0
    );
    let first = commit(&etcd, &[entry("a", "fa")]).await;
    let Committed::Created { revision: ra } = first[0] else {
        panic!("{first:?}")
    };
    let marker = log::marker_revision(&read(&etcd, log::read_marker(&keys)).await).unwrap();
    assert!(marker >= ra, "the marker moved with the commit");
    // One delivery of three events, one of them seen before.
    let batch = commit(
        &etcd,
        &[entry("b", "fb"), entry("a", "fa"), entry("c", "fc")],
    )
    .await;
    assert!(matches!(batch[0], Committed::Created { .. }));
    assert!(matches!(batch[1], Committed::Replay { .. }));
    assert!(matches!(batch[2], Committed::Created { .. }));
    // The leader read up to `a`: only b and c are new, oldest first.
    let page = log::page(&read(&etcd, log::read_since(&keys, ra, 100)).await).unwrap();
    let got: Vec<&str> = page
        .events
        .iter()
        .map(|e| e.record.message["event"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["b", "c"]);
    assert!(!page.more);
    // Paged: one at a time, in revision order.
    let one = log::page(&read(&etcd, log::read_since(&keys, 0, 1)).await).unwrap();
    assert_eq!(one.events[0].record.message["event"], "a");
    assert!(one.more);
    // Nothing newer than the last read.
    let last = page.events.last().unwrap().revision;
    let none = log::page(&read(&etcd, log::read_since(&keys, last, 100)).await).unwrap();
    assert!(none.events.is_empty());
}

#[tokio::test]
async fn the_largest_delivery_fits_etcds_transaction_limits() {
    let etcd = Etcd::start();
    let entries: Vec<Entry> = (0..log::MAX_BATCH)
        .map(|i| entry(&format!("am:{i}"), "f"))
        .collect();
    let outcomes = commit(&etcd, &entries).await;
    assert_eq!(outcomes.len(), log::MAX_BATCH);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Committed::Created { .. })));
    // etcd's limit (128 operations at the top level by default) is why
    // MAX_BATCH exists: 127 events and the marker are refused.
    let too_many: Vec<Entry> = (0..127).map(|i| entry(&format!("big:{i}"), "f")).collect();
    let keys = Keys::new("emr-test/");
    let lease = lease(etcd.client_port, 600).await;
    let call = gateway(etcd.client_port).call(1, log::commit(&keys, &too_many, lease));
    let result = dispatch(&reqwest::Client::new(), etcd.client_port, &call).await;
    assert_eq!(
        log::committed(&too_many, &result),
        Err(answer::Failure::TooLarge)
    );
}

/// Drives a feed until it handed on `n` events and is caught up with the
/// marker (and a little longer, to see it hand on nothing more); returns
/// the events, in order.
async fn read_all(feed: &mut emr_core::etcd::feed::Feed, port: u16, n: usize) -> Vec<String> {
    use emr_core::etcd::feed::Effect as FeedEffect;
    let http = reqwest::Client::new();
    let mut got = Vec::new();
    let start = std::time::Instant::now();
    loop {
        let mut fx = feed.poll(Utc::now());
        while !fx.is_empty() {
            let mut next = Vec::new();
            for e in fx {
                match e {
                    FeedEffect::Call(call) => {
                        let result = dispatch(&http, port, &call).await;
                        next.extend(feed.on_result(call.op, result, Utc::now()));
                    }
                    FeedEffect::Events(events) => got.extend(
                        events
                            .iter()
                            .map(|e| e.record.message["event"].as_str().unwrap().to_owned()),
                    ),
                    FeedEffect::Snapshot(s) => got.push(format!("snapshot@{}", s.position)),
                    other => panic!("{other:?}"),
                }
            }
            fx = next;
        }
        let settled = start.elapsed() > Duration::from_millis(300);
        if got.len() >= n && feed.caught_up() && feed.lag() == 0 && settled {
            return got;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "not caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_feed_reads_every_commit_once_in_order_across_pages_and_commits() {
    let etcd = Etcd::start();
    let port = etcd.client_port;
    // 30 single commits, then one of 100 events (one revision), then 5
    // more: the first page (101) ends inside the big commit.
    for i in 0..30 {
        commit(&etcd, &[entry(&format!("one{i:03}"), "f")]).await;
    }
    let big: Vec<Entry> = (0..100)
        .map(|i| entry(&format!("big{i:03}"), "f"))
        .collect();
    commit(&etcd, &big).await;
    for i in 30..35 {
        commit(&etcd, &[entry(&format!("one{i:03}"), "f")]).await;
    }
    let mut feed = emr_core::etcd::feed::Feed::new(
        Keys::new("emr-test/"),
        gateway(port),
        chrono::Duration::milliseconds(50),
        1, // raised to more than a commit: pages of 101
        1,
        Utc::now(),
    );
    let first = read_all(&mut feed, port, 135).await;
    assert_eq!(first.len(), 135, "every event once");
    let mut unique = first.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 135, "none repeated");
    // In commit order; the big commit's events together.
    let name = |p: &str, i: usize| format!("{p}{i:03}");
    assert_eq!(
        first[..30],
        (0..30).map(|i| name("one", i)).collect::<Vec<_>>()[..]
    );
    assert!(first[30..130].iter().all(|k| k.starts_with("big")));
    assert_eq!(
        first[130..],
        (30..35).map(|i| name("one", i)).collect::<Vec<_>>()[..]
    );
    // Commits while it reads: only they come next.
    let writers: Vec<_> = (0..20)
        .map(|i| tokio::spawn(commit_to(port, vec![entry(&format!("late{i:02}"), "f")])))
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let mut later = read_all(&mut feed, port, 20).await;
    later.sort();
    let expected: Vec<String> = (0..20).map(|i| format!("late{i:02}")).collect();
    assert_eq!(later, expected);
}

#[tokio::test]
async fn entries_leave_with_their_lease_and_the_snapshot_keeps_what_they_said() {
    let etcd = Etcd::start();
    let port = etcd.client_port;
    let keys = Keys::new("emr-test/");
    let http = reqwest::Client::new();
    // Two events on a lease of 2 s (a dedupe window, shortened).
    let short = lease(port, 2).await;
    let call = gateway(port).call(
        1,
        log::commit(&keys, &[entry("a", "f"), entry("b", "f")], short),
    );
    let committed = log::committed(
        &[entry("a", "f"), entry("b", "f")],
        &dispatch(&http, port, &call).await,
    )
    .expect("committed");
    let Committed::Created { revision } = committed[0] else {
        panic!("{committed:?}")
    };
    // The leader's snapshot of what they said, at their revision, fenced
    // on a leader key.
    let leader = dispatch(
        &http,
        port,
        &gateway(port).call(
            1,
            emr_core::etcd::create_if_absent(&keys.leader(), b"r1", None),
        ),
    )
    .await;
    let fence = Fence {
        key: keys.leader(),
        revision: answer::txn(&leader).expect("the leader key").revision,
    };
    let body = format!(r#"{{"p":{revision},"g":["what a and b said"]}}"#);
    let wrote = dispatch(
        &http,
        port,
        &gateway(port).call(
            1,
            emr_core::etcd::snapshot::write(&keys, body.as_bytes(), &fence),
        ),
    )
    .await;
    assert!(answer::txn(&wrote).unwrap().succeeded);
    // The lease ends: etcd deletes the events by itself.
    let events_left = || async {
        let prefix = keys.events();
        let r = read(
            &etcd,
            emr_core::etcd::Request {
                path: "/v3/kv/range",
                body: emr_e2e::json!({"key": emr_core::etcd::b64(&prefix),
                    "range_end": emr_core::etcd::b64(&emr_core::etcd::prefix_end(&prefix)),
                    "count_only": true}),
            },
        )
        .await;
        answer::body(&r).unwrap()["count"]
            .as_str()
            .map_or(0, |c| c.parse::<u64>().unwrap())
    };
    assert_eq!(events_left().await, 2);
    let started = std::time::Instant::now();
    while events_left().await > 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "never left");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its key gone, the same event is new again: the dedupe window ended.
    assert!(matches!(
        commit(&etcd, &[entry("a", "f")]).await[0],
        Committed::Created { .. }
    ));
    // A replica starting now reads the snapshot in the place of what left,
    // then what came after it.
    let mut feed = emr_core::etcd::feed::Feed::new(
        keys.clone(),
        gateway(port),
        chrono::Duration::milliseconds(50),
        1,
        1,
        Utc::now(),
    );
    let got = read_all(&mut feed, port, 2).await;
    assert_eq!(got, [format!("snapshot@{revision}"), "a".to_owned()]);
}

// ---- etcd failing --------------------------------------------------------------

/// Commits one event through `port`; the outcome and how long it took.
async fn try_commit(
    port: u16,
    key: &str,
    lease: i64,
) -> (Result<Vec<Committed>, answer::Failure>, Duration) {
    let keys = Keys::new("emr-test/");
    let entries = vec![entry(key, "f")];
    let call = Gateway {
        timeout_ms: 500,
        ..gateway(port)
    }
    .call(1, log::commit(&keys, &entries, lease));
    let started = std::time::Instant::now();
    let result = dispatch(&reqwest::Client::new(), port, &call).await;
    (log::committed(&entries, &result), started.elapsed())
}

#[tokio::test]
async fn one_member_down_changes_nothing_and_a_lost_quorum_refuses_in_milliseconds() {
    let mut members = Etcd::cluster(3);
    let port = members[0].client_port;
    let lease = lease(port, 600).await;
    assert!(try_commit(port, "before", lease).await.0.is_ok());
    // One of three down: commits go on (after an election, if it led).
    members[2].kill();
    let mut ok_after_one = false;
    for i in 0..50 {
        if let (Ok(c), _) = try_commit(port, &format!("one-down-{i}"), lease).await {
            assert!(matches!(c[0], Committed::Created { .. }));
            ok_after_one = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok_after_one, "a majority is still there");
    // Two of three down: nothing is committed. Once the survivor knows it
    // has no leader (an election timeout), etcd refuses at once, because
    // every call says Grpc-Metadata-hasleader: a refusal (`unavailable`),
    // not the call's deadline running out, nor etcd's own 7 s.
    members[1].kill();
    let started = std::time::Instant::now();
    let mut refusals = Vec::new();
    while refusals.len() < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no quick refusal: {refusals:?}"
        );
        let (outcome, took) = try_commit(port, "no-quorum", lease).await;
        let failure = outcome.expect_err("no quorum, no commit");
        assert!(failure.is_transient(), "{failure}");
        assert!(
            took < Duration::from_secs(2),
            "bounded by the deadline: {took:?}"
        );
        match failure {
            answer::Failure::Unavailable(_) => refusals.push(took),
            // Before the survivor noticed: the deadline ends the call.
            _ => assert!(refusals.is_empty(), "refused, then not: {failure}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The figure itself belongs in `make bench`; here it is shown.
    eprintln!(
        "with the quorum lost, refused within {:?}",
        refusals.iter().max()
    );
    // Back: commits go on.
    members[1].restart();
    let mut back = false;
    for i in 0..100 {
        if try_commit(port, &format!("back-{i}"), lease)
            .await
            .0
            .is_ok()
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "commits resume once a majority is back");
}

async fn post(port: u16, path: &'static str, body: emr_e2e::Value) -> CallResult {
    let call = gateway(port).call(1, emr_core::etcd::Request { path, body });
    dispatch(&reqwest::Client::new(), port, &call).await
}

#[tokio::test]
async fn a_full_etcd_says_so_and_commits_again_once_an_operator_frees_space() {
    let etcd = Etcd::start_with(&["--quota-backend-bytes=2097152"]);
    let port = etcd.client_port;
    let lease = lease(port, 600).await;
    let filler = "x".repeat(200_000);
    let mut full = None;
    for i in 0..100 {
        let entries = vec![Entry {
            idempotency_key: format!("filler-{i}"),
            record: Record {
                fingerprint: "f".into(),
                message: emr_e2e::json!({ "pad": filler }),
            },
        }];
        let call = gateway(port).call(1, log::commit(&Keys::new("emr-test/"), &entries, lease));
        let result = dispatch(&reqwest::Client::new(), port, &call).await;
        if let Err(f) = log::committed(&entries, &result) {
            full = Some(f);
            break;
        }
    }
    let failure = full.expect("a 2 MiB quota fills");
    assert_eq!(failure, answer::Failure::QuotaFull);
    assert!(!failure.is_transient());
    assert!(failure.to_string().contains("compact"), "says what to do");
    // Small commits are refused too while the alarm is raised.
    assert_eq!(
        try_commit(port, "while-full", lease).await.0,
        Err(answer::Failure::QuotaFull)
    );
    // What an operator does, over the same gateway: delete, compact,
    // defragment, disarm.
    let prefix = b"emr-test/e/filler";
    let deleted = post(
        port,
        "/v3/kv/deleterange",
        emr_e2e::json!({"key": emr_core::etcd::b64(prefix),
                        "range_end": emr_core::etcd::b64(&emr_core::etcd::prefix_end(prefix))}),
    )
    .await;
    let revision = answer::body(&deleted).unwrap()["header"]["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    answer::body(
        &post(
            port,
            "/v3/kv/compaction",
            emr_e2e::json!({"revision": revision, "physical": true}),
        )
        .await,
    )
    .unwrap();
    answer::body(&post(port, "/v3/maintenance/defragment", emr_e2e::json!({})).await).unwrap();
    let alarms = answer::body(
        &post(
            port,
            "/v3/maintenance/alarm",
            emr_e2e::json!({"action": "GET"}),
        )
        .await,
    )
    .unwrap();
    let alarms = alarms["alarms"].as_array().cloned().unwrap_or_default();
    assert!(!alarms.is_empty(), "etcd raised its NOSPACE alarm");
    for alarm in alarms {
        answer::body(
            &post(
                port,
                "/v3/maintenance/alarm",
                emr_e2e::json!({"action": "DEACTIVATE", "memberID": alarm["memberID"],
                                "alarm": alarm["alarm"]}),
            )
            .await,
        )
        .unwrap();
    }
    let (after, _) = try_commit(port, "after-fix", lease).await;
    assert!(matches!(after.unwrap()[0], Committed::Created { .. }));
}
