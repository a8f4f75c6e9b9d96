//! The event log in etcd: what an intake commits before it answers `202`,
//! and how the leader finds what was committed since it last looked.
//!
//! Keys under the cluster's prefix ([`Keys`]):
//! - `e/<idempotency key>`: one accepted event, created only if absent.
//!   Its value is a [`Record`]: the event's fingerprint and the message the
//!   service takes, so a second commit of the same key tells a replay
//!   (same fingerprint) from a conflict (another payload) in the same round
//!   trip, on any replica.
//! - `m`: a marker rewritten by every commit. The leader reads this one key
//!   (its cost does not grow with the log) and ranges the log only when the
//!   marker moved.
//! - `leader`: the election's key ([`super::election`]).
//! - `s`: the leader's snapshot ([`super::snapshot`]).
//!
//! Every event and control goes on a lease ([`super::retention`]): the log
//! holds one dedupe window of entries, whatever arrives.
//!
//! A commit is one transaction of nested transactions, one per event: each
//! creates its key if absent or reads what is there. All of a delivery's
//! events are decided together, and a delivery is never half recorded.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::answer::{self, Failure, Kv};
use super::{b64, prefix_end, Fence, Request};
use crate::callout::CallResult;

/// Events one commit may carry: an Alertmanager notification of its
/// default `max_alerts` is one commit. etcd counts the top level's
/// operations against `--max-txn-ops` (128 by default): measured on 3.4,
/// 126 events and the marker pass, 127 are refused. A delivery with more
/// events is committed in several transactions.
pub const MAX_BATCH: usize = 100;

/// The keys of one cluster, under its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: Vec<u8>,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.as_bytes().to_vec(),
        }
    }

    fn under(&self, rest: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(rest);
        k
    }

    pub fn leader(&self) -> Vec<u8> {
        self.under(b"leader")
    }

    pub fn marker(&self) -> Vec<u8> {
        self.under(b"m")
    }

    pub fn snapshot(&self) -> Vec<u8> {
        self.under(b"s")
    }

    /// The log's prefix.
    pub fn events(&self) -> Vec<u8> {
        self.under(b"e/")
    }

    /// The key of the event with `idempotency_key`.
    pub fn event(&self, idempotency_key: &str) -> Vec<u8> {
        self.under(format!("e/{idempotency_key}").as_bytes())
    }
}

/// What is stored for one accepted event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The event's fingerprint: equal for a replay of the same event.
    #[serde(rename = "f")]
    pub fingerprint: String,
    /// The message the service takes (a queued event, as JSON).
    #[serde(rename = "m")]
    pub message: Value,
}

/// One event to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub idempotency_key: String,
    pub record: Record,
}

/// What a commit decided for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Recorded now, at this revision.
    Created { revision: i64 },
    /// The same event was recorded before (by any replica).
    Replay { first: Record },
    /// Another payload was recorded under the same key.
    Conflict,
}

/// The transaction that records `entries` (at most [`MAX_BATCH`]), each
/// only if its key is absent, and moves the marker. The keys go when
/// `lease` does ([`super::retention`]).
pub fn commit(keys: &Keys, entries: &[Entry], lease: i64) -> Request {
    commit_if(keys, entries, lease, Vec::new())
}

/// [`commit`], only while `fence` holds: what the leader writes (its
/// settlements) is refused once another replica leads. A refused commit
/// answers with the transaction not succeeded ([`answer::txn`]).
pub fn commit_fenced(keys: &Keys, entries: &[Entry], lease: i64, fence: &Fence) -> Request {
    commit_if(keys, entries, lease, vec![fence.compare()])
}

fn commit_if(keys: &Keys, entries: &[Entry], lease: i64, compare: Vec<Value>) -> Request {
    let mut ops: Vec<Value> = entries
        .iter()
        .map(|e| {
            let key = keys.event(&e.idempotency_key);
            let value = serde_json::to_vec(&e.record).unwrap_or_default();
            json!({"request_txn": {
                "compare": [super::absent(&key)],
                "success": [super::put(&key, &value, Some(lease))],
                "failure": [{"request_range": {"key": b64(&key)}}],
            }})
        })
        .collect();
    ops.push(super::put(&keys.marker(), b"", None));
    Request {
        path: "/v3/kv/txn",
        body: json!({"compare": compare, "success": ops, "failure": []}),
    }
}

/// Reads a commit's answer: one decision per entry, in order. `entries`
/// are the ones committed, to tell a replay from a conflict.
pub fn committed(entries: &[Entry], result: &CallResult) -> Result<Vec<Committed>, Failure> {
    let v = answer::body(result)?;
    let revision = answer::revision(&v)?;
    let responses = v
        .get("responses")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure::Malformed("a commit without responses".into()))?;
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let inner = responses
                .get(i)
                .and_then(|r| r.get("response_txn"))
                .ok_or_else(|| Failure::Malformed(format!("no answer for event {i}")))?;
            if inner.get("succeeded").and_then(Value::as_bool) == Some(true) {
                return Ok(Committed::Created { revision });
            }
            let stored = inner
                .get("responses")
                .and_then(Value::as_array)
                .and_then(|rs| rs.first())
                .and_then(|r| r.get("response_range"))
                .map(answer::kvs_of)
                .transpose()?
                .and_then(|kvs| kvs.into_iter().next());
            // Not created, and gone by the time it was read (its lease
            // ended in between): nothing to compare with, so not a replay.
            let Some(kv) = stored else {
                return Ok(Committed::Conflict);
            };
            match serde_json::from_slice::<Record>(&kv.value) {
                Ok(first) if first.fingerprint == entry.record.fingerprint => {
                    Ok(Committed::Replay { first })
                }
                _ => Ok(Committed::Conflict),
            }
        })
        .collect()
}

/// Reads the marker: its `mod_revision` is the log's newest commit.
pub fn read_marker(keys: &Keys) -> Request {
    super::get(&keys.marker())
}

/// The marker's revision, 0 when no commit was ever made.
pub fn marker_revision(result: &CallResult) -> Result<i64, Failure> {
    Ok(answer::range(result)?
        .kvs
        .first()
        .map_or(0, |kv| kv.mod_revision))
}

/// Reads up to `limit` events recorded after revision `after`, oldest
/// first.
pub fn read_since(keys: &Keys, after: i64, limit: i64) -> Request {
    let prefix = keys.events();
    Request {
        path: "/v3/kv/range",
        body: json!({
            "key": b64(&prefix),
            "range_end": b64(&prefix_end(&prefix)),
            "min_mod_revision": (after + 1).to_string(),
            "sort_order": "ASCEND",
            "sort_target": "MOD",
            "limit": limit.to_string(),
        }),
    }
}

/// One event read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub key: Vec<u8>,
    pub revision: i64,
    pub record: Record,
}

/// A page of the log: the events in it (unreadable ones left out and
/// counted), whether more follow, and the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    pub events: Vec<Logged>,
    pub unreadable: usize,
    /// Every entry's key and revision, readable or not, in order: where
    /// the page ends.
    pub seen: Vec<(Vec<u8>, i64)>,
    pub more: bool,
    pub revision: i64,
}

pub fn page(result: &CallResult) -> Result<Page, Failure> {
    let range = answer::range(result)?;
    let mut page = Page {
        more: range.more,
        revision: range.revision,
        ..Page::default()
    };
    for Kv {
        key,
        value,
        mod_revision,
        ..
    } in range.kvs
    {
        page.seen.push((key.clone(), mod_revision));
        match serde_json::from_slice::<Record>(&value) {
            Ok(record) => page.events.push(Logged {
                key,
                revision: mod_revision,
                record,
            }),
            Err(_) => page.unreadable += 1,
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn entry(key: &str, fingerprint: &str) -> Entry {
        Entry {
            idempotency_key: key.into(),
            record: Record {
                fingerprint: fingerprint.into(),
                message: json!({"event": key}),
            },
        }
    }

    fn ok(body: Value) -> CallResult {
        CallResult::json(200, &body)
    }

    #[test]
    fn keys_live_under_the_prefix() {
        let k = Keys::new("emr/");
        assert_eq!(k.leader(), b"emr/leader");
        assert_eq!(k.marker(), b"emr/m");
        assert_eq!(k.snapshot(), b"emr/s");
        assert_eq!(
            k.event("canonical:INC-1:ACTIVE"),
            b"emr/e/canonical:INC-1:ACTIVE"
        );
    }

    #[test]
    fn a_commit_creates_each_event_if_absent_and_moves_the_marker() {
        let k = Keys::new("emr/");
        let r = commit(&k, &[entry("a", "f1"), entry("b", "f2")], 9);
        let ops = r.body["success"].as_array().unwrap();
        assert_eq!(ops.len(), 3);
        let first = &ops[0]["request_txn"];
        assert_eq!(first["compare"][0]["key"], b64(b"emr/e/a"));
        assert_eq!(first["compare"][0]["create_revision"], "0");
        assert_eq!(first["success"][0]["request_put"]["lease"], "9");
        assert_eq!(first["failure"][0]["request_range"]["key"], b64(b"emr/e/a"));
        assert_eq!(ops[2]["request_put"]["key"], b64(b"emr/m"));
    }

    #[test]
    fn a_fenced_commit_compares_the_leader_keys_revision() {
        let fence = Fence {
            key: b"emr/leader".to_vec(),
            revision: 42,
        };
        let r = commit_fenced(&Keys::new("emr/"), &[entry("a", "f")], 9, &fence);
        assert_eq!(
            r.body["compare"],
            json!([{"key": b64(b"emr/leader"), "target": "CREATE", "result": "EQUAL",
                    "create_revision": "42"}])
        );
        assert_eq!(
            commit(&Keys::new("emr/"), &[], 9).body["compare"],
            json!([])
        );
    }

    #[test]
    fn a_commits_answer_tells_new_from_replay_from_conflict() {
        let stored = |fp: &str| {
            let v = serde_json::to_vec(&entry("x", fp).record).unwrap();
            json!({"response_txn": {"header": {"revision": "7"}, "responses": [
                {"response_range": {"kvs": [{"key": b64(b"emr/e/x"), "value": b64(&v),
                                             "create_revision": "3", "mod_revision": "3"}],
                                    "count": "1"}}]}})
        };
        let answer = ok(
            json!({"header": {"revision": "7"}, "succeeded": true, "responses": [
                {"response_txn": {"header": {"revision": "7"}, "succeeded": true,
                                  "responses": [{"response_put": {}}]}},
                stored("same"),
                stored("other"),
                {"response_txn": {"responses": [{"response_range": {}}]}},
                {"response_put": {}}
            ]}),
        );
        let entries = [
            entry("n", "new"),
            entry("x", "same"),
            entry("x", "mine"),
            entry("gone", "g"),
        ];
        let got = committed(&entries, &answer).unwrap();
        assert_eq!(got[0], Committed::Created { revision: 7 });
        assert!(matches!(&got[1], Committed::Replay { first } if first.fingerprint == "same"));
        assert_eq!(got[2], Committed::Conflict);
        assert_eq!(got[3], Committed::Conflict);
        // An answer short of an event is unreadable, not a guess.
        assert!(matches!(
            committed(
                &entries,
                &ok(json!({"header": {"revision": "7"}, "responses": []}))
            ),
            Err(Failure::Malformed(_))
        ));
    }

    #[test]
    fn the_log_is_read_oldest_first_from_a_revision() {
        let r = read_since(&Keys::new("emr/"), 41, 100);
        assert_eq!(r.body["key"], b64(b"emr/e/"));
        assert_eq!(r.body["range_end"], b64(b"emr/e0"));
        assert_eq!(r.body["min_mod_revision"], "42");
        assert_eq!(
            (
                r.body["sort_target"].as_str(),
                r.body["sort_order"].as_str()
            ),
            (Some("MOD"), Some("ASCEND"))
        );
        let rec = serde_json::to_vec(&entry("a", "f").record).unwrap();
        let p = page(&ok(
            json!({"header": {"revision": "50"}, "more": true, "kvs": [
                {"key": b64(b"emr/e/a"), "value": b64(&rec), "mod_revision": "42"},
                {"key": b64(b"emr/e/b"), "value": b64(b"junk"), "mod_revision": "43"}
            ]}),
        ))
        .unwrap();
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.events[0].revision, 42);
        assert_eq!((p.unreadable, p.more, p.revision), (1, true, 50));
    }
}
