//! The leader's snapshot: what the log said up to a revision, kept in one
//! key (`s`) so that a replica starting after the log's oldest entries
//! have gone ([`super::retention`]) still knows every incident open.
//!
//! The leader writes it, fenced on its leadership, every little while the
//! log moved. A replica starting reads it first, then the whole log (what
//! is left of it), and takes the snapshot when its reading passes the
//! snapshot's revision ([`super::feed`]): entries up to there come first,
//! so what it learns of incidents still in the log is theirs, and the
//! snapshot adds only what the log lost.
//!
//! What the snapshot holds is the service's business; here it is bytes
//! with a revision.

use serde::Deserialize;
use serde_json::json;

use super::answer::{self, Failure};
use super::log::Keys;
use super::{Fence, Request};
use crate::callout::CallResult;

/// A snapshot as stored: a JSON object whose `p` is the log revision it
/// stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub position: i64,
    pub body: Vec<u8>,
}

#[derive(Deserialize)]
struct Position {
    p: i64,
}

/// Writes `body` (a JSON object with `p`), only while `fence` holds.
pub fn write(keys: &Keys, body: &[u8], fence: &Fence) -> Request {
    Request {
        path: "/v3/kv/txn",
        body: json!({
            "compare": [fence.compare()],
            "success": [super::put(&keys.snapshot(), body, None)],
            "failure": [],
        }),
    }
}

/// Reads the snapshot.
pub fn read(keys: &Keys) -> Request {
    super::get(&keys.snapshot())
}

/// The snapshot read: `None` when there is none yet; an error when it is
/// there but unreadable.
pub fn stored(result: &CallResult) -> Result<Option<Snapshot>, Failure> {
    let Some(kv) = answer::range(result)?.kvs.into_iter().next() else {
        return Ok(None);
    };
    let Position { p } = serde_json::from_slice(&kv.value)
        .map_err(|e| Failure::Malformed(format!("an unreadable snapshot: {e}")))?;
    Ok(Some(Snapshot {
        position: p,
        body: kv.value,
    }))
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::etcd::b64;

    #[test]
    fn the_snapshot_is_written_fenced_and_read_back_with_its_revision() {
        let keys = Keys::new("emr/");
        let fence = Fence {
            key: b"emr/leader".to_vec(),
            revision: 9,
        };
        let r = write(&keys, br#"{"p":41}"#, &fence);
        assert_eq!(r.body["compare"][0]["create_revision"], "9");
        assert_eq!(r.body["success"][0]["request_put"]["key"], b64(b"emr/s"));
        assert!(r.body["success"][0]["request_put"].get("lease").is_none());
        assert_eq!(read(&keys).body["key"], b64(b"emr/s"));

        let answer = |value: &[u8]| {
            CallResult::json(
                200,
                &json!({"header": {"revision": "50"}, "kvs": [
                    {"key": b64(b"emr/s"), "value": b64(value), "mod_revision": "45"}]}),
            )
        };
        assert_eq!(
            stored(&answer(br#"{"p":41,"g":[]}"#)).unwrap(),
            Some(Snapshot {
                position: 41,
                body: br#"{"p":41,"g":[]}"#.to_vec()
            })
        );
        assert!(matches!(
            stored(&answer(b"junk")),
            Err(Failure::Malformed(_))
        ));
        assert_eq!(
            stored(&CallResult::json(
                200,
                &json!({"header": {"revision": "50"}})
            ))
            .unwrap(),
            None
        );
    }
}
