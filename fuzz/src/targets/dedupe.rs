//! `dedupe_buckets`: the dedupe store's bucket encoding, through its public
//! API over a `MemoryStore`.
//!
//! One bucket (so every key shares it) starts as fuzz: raw bytes, or entries
//! built from the input whose key digests may be those of the keys used, so
//! live, expired, torn and duplicated entries for real keys all occur. Then
//! a sequence of `check_and_insert` / `remove` / `contains` runs against it,
//! at times and with CAS conflicts the input picks.
//!
//! Nothing may panic, and:
//! - until the first eviction the outcomes equal a model that reads the
//!   documented format (version byte 1, 41-byte entries: key digest,
//!   fingerprint, expiry i64 LE, answer byte; a torn tail ignored, any other
//!   version read as empty);
//! - after `New`, `contains` is true and a repeat is a replay with the same
//!   answer (a conflict with another fingerprint); after `remove`, `contains`
//!   is false;
//! - a bucket `check_and_insert` wrote holds at most `per_bucket` entries,
//!   in whole entries behind the version byte;
//! - CAS conflicts are retried up to `MAX_CAS_ATTEMPTS` and reported past it.

use emr_core::dedupe::{
    digest, Dedupe, DedupeConfig, Fingerprint, FirstAnswer, Outcome, MAX_CAS_ATTEMPTS,
};
use emr_core::store::{MemoryStore, SharedStore, StoreError};

use super::Input;

const BUCKET: &str = "emr.dedupe.0000";
const KEYS: [&str; 6] = [
    "canonical:INC-1:EMERGENCY_ACTIVE",
    "canonical:INC-1:EMERGENCY_RESOLVED",
    "pagerduty:Q2UEJOMV3XYQ9N:EMERGENCY_ACTIVE:1723731721329",
    "pagerduty#delivery#e3a2a7b0",
    "opsgenie#ignored#x#00ff",
    "",
];
const ENTRY_LEN: usize = 41;
const BASE_TIME: i64 = 1_723_731_900;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    key: [u8; 16],
    fingerprint: [u8; 16],
    expires: i64,
    answer: FirstAnswer,
}

/// The documented format, read independently of the store's decoder.
fn model_decode(bytes: &[u8]) -> Vec<Entry> {
    let Some((&1, rest)) = bytes.split_first() else {
        return Vec::new();
    };
    rest.chunks_exact(ENTRY_LEN)
        .map(|c| Entry {
            key: c[..16].try_into().unwrap(),
            fingerprint: c[16..32].try_into().unwrap(),
            expires: i64::from_le_bytes(c[32..40].try_into().unwrap()),
            answer: if c[40] == 1 {
                FirstAnswer::Ignored
            } else {
                FirstAnswer::Accepted
            },
        })
        .collect()
}

fn fingerprint(n: u8) -> Fingerprint {
    digest(&[n % 4])
}

/// The starting bucket: raw bytes, or entries the input describes.
fn initial_bucket(input: &mut Input<'_>) -> Vec<u8> {
    if input.byte() & 1 == 0 {
        return input.bytes().to_vec();
    }
    let mut out = vec![input.pick(&[1u8, 1, 1, 0, 2])];
    for _ in 0..input.byte() % 12 {
        let k = input.byte();
        let key = match KEYS.get(usize::from(k % 8)) {
            Some(name) => digest(name.as_bytes()),
            None => digest(&[k]),
        };
        out.extend_from_slice(&key);
        out.extend_from_slice(&fingerprint(input.byte()));
        let expires = BASE_TIME + i64::from(input.byte() as i8) * 10;
        out.extend_from_slice(&expires.to_le_bytes());
        out.push(input.byte() % 3);
    }
    let torn = usize::from(input.byte() % 48);
    out.extend(std::iter::repeat_n(0xa5, torn));
    out
}

pub fn dedupe_buckets(data: &[u8]) {
    let mut input = Input::new(data);
    let cfg = DedupeConfig {
        buckets: 1,
        per_bucket: u16::from(input.byte() % 6) + 1,
        window_seconds: u32::from(input.byte()) * 4 + 1,
    };
    let dedupe = Dedupe::new(cfg);
    let store = MemoryStore::new();
    let initial = initial_bucket(&mut input);
    store.set(BUCKET, &initial, None).unwrap();

    let mut model = model_decode(&initial);
    for _ in 0..input.byte() % 16 {
        let op = input.byte();
        let key = KEYS[usize::from(input.byte()) % KEYS.len()];
        let now = BASE_TIME + i64::from(input.byte() as i8) * 10;
        let k = digest(key.as_bytes());
        match op % 4 {
            0 | 1 => {
                let fp = fingerprint(input.byte());
                let answer = if op & 0x10 == 0 {
                    FirstAnswer::Accepted
                } else {
                    FirstAnswer::Ignored
                };
                let conflicts = u32::from(input.byte() % 40);
                *store.injected_conflicts.borrow_mut() = conflicts;
                let result = dedupe.check_and_insert(&store, key, &fp, answer, now);
                *store.injected_conflicts.borrow_mut() = 0;

                let live: Vec<Entry> = model.iter().filter(|e| e.expires > now).cloned().collect();
                let expected = live.iter().find(|e| e.key == k).map(|e| {
                    if e.fingerprint == fp {
                        Outcome::Replay(e.answer)
                    } else {
                        Outcome::Conflict
                    }
                });
                let d = match result {
                    Err(StoreError::CasMismatch) => {
                        // Only a new key writes, and only writes meet conflicts.
                        assert!(conflicts >= MAX_CAS_ATTEMPTS, "gave up after {conflicts}");
                        assert_eq!(expected, None);
                        continue;
                    }
                    Err(e) => panic!("memory store failed: {e:?}"),
                    Ok(d) => d,
                };
                if let Some(o) = expected {
                    assert_eq!(d.outcome, o, "model {model:?}");
                    assert_eq!((d.retries, d.evicted), (0, 0));
                    continue;
                }
                assert_eq!(d.outcome, Outcome::New, "model {model:?}");
                assert!(conflicts < MAX_CAS_ATTEMPTS);
                assert_eq!(d.retries, conflicts, "retries");
                let written = store.get(BUCKET).unwrap().value.unwrap();
                check_written(&written, cfg.per_bucket);
                let after = model_decode(&written);
                check_eviction(&live, &after, d.evicted, cfg.per_bucket);
                let last = after.last().unwrap();
                assert_eq!(last.key, k);
                assert_eq!(last.fingerprint, fp);
                assert_eq!(last.answer, answer);
                assert_eq!(last.expires, now + i64::from(cfg.window_seconds));
                model = after;

                assert!(
                    dedupe.seen_at(&store, key, now).unwrap().is_some(),
                    "forgot a new key"
                );
                let again = dedupe
                    .check_and_insert(&store, key, &fp, answer, now)
                    .unwrap();
                assert_eq!(again.outcome, Outcome::Replay(answer));
                let other = fingerprint(fp[0].wrapping_add(1));
                if other != fp {
                    let d = dedupe
                        .check_and_insert(&store, key, &other, answer, now)
                        .unwrap();
                    assert_eq!(d.outcome, Outcome::Conflict);
                }
            }
            2 => {
                dedupe.remove(&store, key).unwrap();
                assert!(
                    dedupe.seen_at(&store, key, now).unwrap().is_none(),
                    "remove kept it"
                );
                let after = store.get(BUCKET).unwrap().value.unwrap();
                model.retain(|e| e.key != k);
                assert_eq!(model_decode(&after), model, "remove changed other entries");
            }
            _ => {
                let found = dedupe.seen_at(&store, key, now).unwrap().is_some();
                let expected = model.iter().any(|e| e.key == k && e.expires > now);
                assert_eq!(found, expected, "contains");
            }
        }
    }
}

/// A write kept the live entries but the `evicted` soonest to expire, and
/// evicted only to make room for the new one.
fn check_eviction(live: &[Entry], after: &[Entry], evicted: u32, per_bucket: u16) {
    let kept = &after[..after.len() - 1];
    let room = usize::from(per_bucket) - 1;
    assert_eq!(evicted as usize, live.len().saturating_sub(room), "evicted");
    assert_eq!(kept.len() + evicted as usize, live.len());
    let mut rest: Vec<&Entry> = live.iter().collect();
    for e in kept {
        let i = rest
            .iter()
            .position(|r| *r == e)
            .expect("a write invented an entry");
        rest.swap_remove(i);
    }
    let newest_evicted = rest.iter().map(|e| e.expires).max();
    let oldest_kept = kept.iter().map(|e| e.expires).min();
    if let (Some(a), Some(b)) = (newest_evicted, oldest_kept) {
        assert!(a <= b, "evicted an entry expiring at {a} before one at {b}");
    }
}

/// A bucket the store wrote: version 1, whole entries, at most `per_bucket`.
fn check_written(bytes: &[u8], per_bucket: u16) {
    assert_eq!(bytes.first(), Some(&1), "written bucket without version");
    assert_eq!((bytes.len() - 1) % ENTRY_LEN, 0, "torn bucket written");
    let n = (bytes.len() - 1) / ENTRY_LEN;
    assert!(
        n <= usize::from(per_bucket),
        "{n} entries over a bound of {per_bucket}"
    );
}
