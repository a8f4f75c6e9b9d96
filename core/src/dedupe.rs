//! Idempotency across all worker threads, in a bounded amount of shared data.
//!
//! Each idempotency key is hashed (SHA-256, first 16 bytes) into one of a
//! fixed number of buckets. A bucket is one shared-data key holding a small
//! list of `(key digest, payload fingerprint, expiry, first answer)` entries,
//! updated with compare-and-swap and retried on mismatch, so two workers that
//! receive the same delivery at the same instant agree on which one is new.
//! Expired entries are pruned on every write, and a full bucket drops its
//! soonest-to-expire entry: memory is `buckets × per_bucket × 41` bytes
//! whatever arrives. Forgetting an entry early is safe because the ledger
//! applies events idempotently — a forgotten duplicate costs a reconcile that
//! finds nothing to change, never a second state change.

use sha2::{Digest, Sha256};

use crate::store::{ensure_key, SharedStore, StoreError};

const DIGEST_LEN: usize = 16;
const ENTRY_LEN: usize = DIGEST_LEN * 2 + 8 + 1;
const FORMAT_VERSION: u8 = 1;
/// CAS attempts before giving up on a contended bucket (answered 503).
pub const MAX_CAS_ATTEMPTS: u32 = 32;

pub type KeyDigest = [u8; DIGEST_LEN];
pub type Fingerprint = [u8; DIGEST_LEN];

/// The first 16 bytes of SHA-256: collisions are out of reach at any volume a
/// webhook endpoint sees, and the entry stays small.
pub fn digest(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    let full = Sha256::digest(bytes);
    let mut out = [0u8; DIGEST_LEN];
    for (o, b) in out.iter_mut().zip(full.iter()) {
        *o = *b;
    }
    out
}

/// A [`Fingerprint`] of several fields, each length-prefixed so that no two
/// different lists of fields feed the hash the same bytes.
pub struct FingerprintBuilder(Sha256);

impl Default for FingerprintBuilder {
    fn default() -> Self {
        Self(Sha256::new())
    }
}

impl FingerprintBuilder {
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.0.update(len.to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn finish(self) -> Fingerprint {
        let full = self.0.finalize();
        let mut out = [0u8; DIGEST_LEN];
        for (o, b) in out.iter_mut().zip(full.iter()) {
            *o = *b;
        }
        out
    }
}

/// What the first delivery of a key was answered; a replay gets the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstAnswer {
    Accepted,
    Ignored,
}

impl FirstAnswer {
    fn to_byte(self) -> u8 {
        match self {
            FirstAnswer::Accepted => 0,
            FirstAnswer::Ignored => 1,
        }
    }

    fn from_byte(b: u8) -> FirstAnswer {
        if b == 1 {
            FirstAnswer::Ignored
        } else {
            FirstAnswer::Accepted
        }
    }
}

/// The verdict on one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// First time seen (within the window): process it.
    New,
    /// Seen with the same payload: answer as the first time, change nothing.
    Replay(FirstAnswer),
    /// Seen with a different payload: refuse (409).
    Conflict,
}

/// An outcome and what it cost, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Live entries dropped because the bucket was full.
    pub evicted: u32,
    /// CAS mismatches retried.
    pub retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: KeyDigest,
    fingerprint: Fingerprint,
    expires: i64,
    answer: FirstAnswer,
}

/// Sizes of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupeConfig {
    pub buckets: u16,
    pub per_bucket: u16,
    pub window_seconds: u32,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        Self {
            buckets: 1024,
            per_bucket: 32,
            window_seconds: 86_400,
        }
    }
}

impl DedupeConfig {
    /// Upper bound of the bytes all buckets can hold.
    pub fn max_bytes(&self) -> usize {
        usize::from(self.buckets) * (1 + usize::from(self.per_bucket) * ENTRY_LEN)
    }
}

/// The dedupe index over a [`SharedStore`].
#[derive(Debug, Clone)]
pub struct Dedupe {
    cfg: DedupeConfig,
}

impl Dedupe {
    pub fn new(cfg: DedupeConfig) -> Self {
        Self { cfg }
    }

    pub fn config(&self) -> &DedupeConfig {
        &self.cfg
    }

    fn bucket_key(&self, key: &KeyDigest) -> BucketKey {
        let n = u16::from_be_bytes([key[0], key[1]]) % self.cfg.buckets.max(1);
        BucketKey::new(n)
    }

    /// Creates every bucket key so later writes are real CAS writes. Safe to
    /// repeat (Envoy creates main-thread root contexts more than once).
    pub fn create_keys(&self, store: &dyn SharedStore) -> Result<(), StoreError> {
        for n in 0..self.cfg.buckets.max(1) {
            ensure_key(store, &format!("emr.dedupe.{n:04x}"))?;
        }
        Ok(())
    }

    /// Records `key` as seen with `fingerprint`, or reports it as a replay or
    /// a conflict. `now` is seconds since the UNIX epoch.
    pub fn check_and_insert(
        &self,
        store: &dyn SharedStore,
        key: &str,
        fingerprint: &Fingerprint,
        answer: FirstAnswer,
        now: i64,
    ) -> Result<Decision, StoreError> {
        let k = digest(key.as_bytes());
        let bucket = self.bucket_key(&k);
        let mut retries = 0;
        loop {
            let current = store.get(bucket.as_str())?;
            let bytes = current.value.as_deref().unwrap_or_default();
            // Read the entries where they lie: a replay allocates nothing.
            if let Some(e) = live(bytes, now).find(|c| key_of(c) == k) {
                let outcome = if fingerprint_of(e) == fingerprint {
                    Outcome::Replay(answer_of(e))
                } else {
                    Outcome::Conflict
                };
                return Ok(Decision {
                    outcome,
                    evicted: 0,
                    retries,
                });
            }
            let mut kept: Vec<&[u8]> = live(bytes, now).collect();
            let mut evicted = 0;
            while kept.len() >= usize::from(self.cfg.per_bucket.max(1)) {
                if let Some((i, _)) = kept.iter().enumerate().min_by_key(|(_, c)| expires_of(c)) {
                    kept.swap_remove(i);
                    evicted += 1;
                } else {
                    break;
                }
            }
            let mut out = Vec::with_capacity(1 + (kept.len() + 1) * ENTRY_LEN);
            out.push(FORMAT_VERSION);
            for c in kept {
                out.extend_from_slice(c);
            }
            write_entry(
                &mut out,
                &Entry {
                    key: k,
                    fingerprint: *fingerprint,
                    expires: now.saturating_add(i64::from(self.cfg.window_seconds)),
                    answer,
                },
            );
            match store.set(bucket.as_str(), &out, current.cas) {
                Ok(()) => {
                    return Ok(Decision {
                        outcome: Outcome::New,
                        evicted,
                        retries,
                    })
                }
                Err(StoreError::CasMismatch) if retries + 1 < MAX_CAS_ATTEMPTS => retries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Forgets `key`: used when an accepted event could not be queued, so the
    /// sender's retry is processed instead of answered as a replay.
    pub fn remove(&self, store: &dyn SharedStore, key: &str) -> Result<(), StoreError> {
        let k = digest(key.as_bytes());
        let bucket = self.bucket_key(&k);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = store.get(bucket.as_str())?;
            let mut entries = decode(current.value.as_deref().unwrap_or_default());
            let before = entries.len();
            entries.retain(|e| e.key != k);
            if entries.len() == before {
                return Ok(());
            }
            match store.set(bucket.as_str(), &encode(&entries), current.cas) {
                Err(StoreError::CasMismatch) => continue,
                other => return other,
            }
        }
        Err(StoreError::CasMismatch)
    }

    /// Whether `key` was accepted and has not expired.
    /// When `key` was first recorded (seconds since the UNIX epoch), if it
    /// is still held.
    pub fn seen_at(
        &self,
        store: &dyn SharedStore,
        key: &str,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let k = digest(key.as_bytes());
        let current = store.get(self.bucket_key(&k).as_str())?;
        let found = live(current.value.as_deref().unwrap_or_default(), now)
            .find(|c| key_of(c) == k)
            .map(|c| expires_of(c).saturating_sub(i64::from(self.cfg.window_seconds)));
        Ok(found)
    }
}

/// A bucket's shared-data key, `emr.dedupe.XXXX` (hex), built without
/// formatting or allocating.
struct BucketKey([u8; 15]);

impl BucketKey {
    fn new(n: u16) -> BucketKey {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut k = *b"emr.dedupe.0000";
        for (i, slot) in k.iter_mut().skip(11).enumerate() {
            let nibble = (n >> (12 - 4 * i)) & 0xf;
            *slot = HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
        }
        BucketKey(k)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("emr.dedupe.0000")
    }
}

fn write_entry(out: &mut Vec<u8>, e: &Entry) {
    out.extend_from_slice(&e.key);
    out.extend_from_slice(&e.fingerprint);
    out.extend_from_slice(&e.expires.to_le_bytes());
    out.push(e.answer.to_byte());
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entries.len() * ENTRY_LEN);
    out.push(FORMAT_VERSION);
    for e in entries {
        write_entry(&mut out, e);
    }
    out
}

/// A bucket's well-formed entries that expire after `now`, as raw
/// `ENTRY_LEN`-byte chunks; an unreadable bucket has none (as [`decode`]).
fn live(bytes: &[u8], now: i64) -> impl Iterator<Item = &[u8]> {
    let rest = match bytes.split_first() {
        Some((&FORMAT_VERSION, rest)) => rest,
        _ => &[],
    };
    rest.chunks_exact(ENTRY_LEN)
        .filter(move |c| expires_of(c) > now)
}

fn key_of(c: &[u8]) -> &[u8] {
    c.get(..DIGEST_LEN).unwrap_or_default()
}

fn fingerprint_of(c: &[u8]) -> &[u8] {
    c.get(DIGEST_LEN..DIGEST_LEN * 2).unwrap_or_default()
}

fn expires_of(c: &[u8]) -> i64 {
    c.get(DIGEST_LEN * 2..DIGEST_LEN * 2 + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(i64::MIN, i64::from_le_bytes)
}

fn answer_of(c: &[u8]) -> FirstAnswer {
    FirstAnswer::from_byte(c.get(DIGEST_LEN * 2 + 8).copied().unwrap_or(0))
}

/// Reads a bucket. Anything unreadable (an empty key, a future format, a torn
/// value) reads as empty: dedupe degrades to "new", which the ledger absorbs.
fn decode(bytes: &[u8]) -> Vec<Entry> {
    let Some((&FORMAT_VERSION, rest)) = bytes.split_first() else {
        return Vec::new();
    };
    rest.chunks_exact(ENTRY_LEN)
        .filter_map(|c| {
            let key: KeyDigest = c.get(..DIGEST_LEN)?.try_into().ok()?;
            let fingerprint: Fingerprint = c.get(DIGEST_LEN..DIGEST_LEN * 2)?.try_into().ok()?;
            let expires =
                i64::from_le_bytes(c.get(DIGEST_LEN * 2..DIGEST_LEN * 2 + 8)?.try_into().ok()?);
            let answer = FirstAnswer::from_byte(*c.get(DIGEST_LEN * 2 + 8)?);
            Some(Entry {
                key,
                fingerprint,
                expires,
                answer,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::store::MemoryStore;

    fn small() -> Dedupe {
        Dedupe::new(DedupeConfig {
            buckets: 4,
            per_bucket: 3,
            window_seconds: 100,
        })
    }

    fn fp(s: &str) -> Fingerprint {
        digest(s.as_bytes())
    }

    fn outcome(d: &Dedupe, s: &MemoryStore, key: &str, payload: &str, now: i64) -> Outcome {
        d.check_and_insert(s, key, &fp(payload), FirstAnswer::Accepted, now)
            .unwrap()
            .outcome
    }

    #[test]
    fn new_then_replay_then_conflict() {
        let (d, s) = (small(), MemoryStore::new());
        d.create_keys(&s).unwrap();
        assert_eq!(outcome(&d, &s, "k", "p", 0), Outcome::New);
        assert_eq!(
            outcome(&d, &s, "k", "p", 1),
            Outcome::Replay(FirstAnswer::Accepted)
        );
        assert_eq!(outcome(&d, &s, "k", "other", 2), Outcome::Conflict);
        assert_eq!(outcome(&d, &s, "k2", "p", 2), Outcome::New);
    }

    #[test]
    fn replays_repeat_the_first_answer() {
        let (d, s) = (small(), MemoryStore::new());
        d.check_and_insert(&s, "k", &fp("p"), FirstAnswer::Ignored, 0)
            .unwrap();
        assert_eq!(
            outcome(&d, &s, "k", "p", 1),
            Outcome::Replay(FirstAnswer::Ignored)
        );
    }

    #[test]
    fn entries_expire_after_the_window() {
        let (d, s) = (small(), MemoryStore::new());
        assert_eq!(outcome(&d, &s, "k", "p", 0), Outcome::New);
        assert_eq!(
            outcome(&d, &s, "k", "p", 99),
            Outcome::Replay(FirstAnswer::Accepted)
        );
        assert_eq!(outcome(&d, &s, "k", "p", 100), Outcome::New);
        // Recorded anew at 100, when the first entry had lapsed.
        assert_eq!(d.seen_at(&s, "k", 150).unwrap(), Some(100));
        assert!(d.seen_at(&s, "k", 200).unwrap().is_none());
    }

    #[test]
    fn memory_is_bounded_whatever_arrives() {
        let (d, s) = (small(), MemoryStore::new());
        d.create_keys(&s).unwrap();
        let mut evicted = 0;
        for i in 0..10_000 {
            let dec = d
                .check_and_insert(&s, &format!("key-{i}"), &fp("p"), FirstAnswer::Accepted, 0)
                .unwrap();
            assert_eq!(dec.outcome, Outcome::New);
            evicted += dec.evicted;
        }
        assert_eq!(s.len(), 4);
        assert!(
            s.bytes() <= d.config().max_bytes(),
            "{} > {}",
            s.bytes(),
            d.config().max_bytes()
        );
        assert_eq!(evicted, 10_000 - 4 * 3);
    }

    #[test]
    fn a_full_bucket_drops_the_soonest_to_expire() {
        let d = Dedupe::new(DedupeConfig {
            buckets: 1,
            per_bucket: 2,
            window_seconds: 100,
        });
        let s = MemoryStore::new();
        assert_eq!(outcome(&d, &s, "a", "p", 0), Outcome::New);
        assert_eq!(outcome(&d, &s, "b", "p", 10), Outcome::New);
        assert_eq!(outcome(&d, &s, "c", "p", 20), Outcome::New);
        assert!(d.seen_at(&s, "a", 20).unwrap().is_none());
        assert!(d.seen_at(&s, "b", 20).unwrap().is_some());
        assert!(d.seen_at(&s, "c", 20).unwrap().is_some());
    }

    #[test]
    fn cas_mismatches_are_retried() {
        let (d, s) = (small(), MemoryStore::new());
        d.create_keys(&s).unwrap();
        *s.injected_conflicts.borrow_mut() = 5;
        let dec = d
            .check_and_insert(&s, "k", &fp("p"), FirstAnswer::Accepted, 0)
            .unwrap();
        assert_eq!(dec.outcome, Outcome::New);
        assert_eq!(dec.retries, 5);
        assert_eq!(
            outcome(&d, &s, "k", "p", 1),
            Outcome::Replay(FirstAnswer::Accepted)
        );
    }

    #[test]
    fn endless_contention_is_an_error_not_a_hang() {
        let (d, s) = (small(), MemoryStore::new());
        d.create_keys(&s).unwrap();
        *s.injected_conflicts.borrow_mut() = u32::MAX;
        let err = d.check_and_insert(&s, "k", &fp("p"), FirstAnswer::Accepted, 0);
        assert_eq!(err, Err(StoreError::CasMismatch));
    }

    #[test]
    fn remove_lets_a_key_be_new_again() {
        let (d, s) = (small(), MemoryStore::new());
        d.create_keys(&s).unwrap();
        assert_eq!(outcome(&d, &s, "k", "p", 0), Outcome::New);
        d.remove(&s, "k").unwrap();
        assert_eq!(outcome(&d, &s, "k", "p", 1), Outcome::New);
        d.remove(&s, "absent").unwrap();
    }

    #[test]
    fn bucket_keys_are_the_keys_created_at_start() {
        for n in [0u16, 1, 0xa, 0xff, 0x3ff, 0x1234, 0xffff] {
            assert_eq!(BucketKey::new(n).as_str(), format!("emr.dedupe.{n:04x}"));
        }
    }

    #[test]
    fn garbage_in_a_bucket_reads_as_empty() {
        let (d, s) = (small(), MemoryStore::new());
        d.create_keys(&s).unwrap();
        let key = d.bucket_key(&digest(b"k"));
        s.set(key.as_str(), b"\x07garbage", None).unwrap();
        assert_eq!(outcome(&d, &s, "k", "p", 0), Outcome::New);
        s.set(key.as_str(), &[FORMAT_VERSION, 1, 2, 3], None)
            .unwrap();
        assert_eq!(outcome(&d, &s, "k", "p", 0), Outcome::New);
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::store::MemoryStore;

    proptest! {
        /// Under capacity, nothing unexpired is forgotten, and the store
        /// never exceeds its bound.
        #[test]
        fn never_forgets_under_capacity(keys in proptest::collection::hash_set("[a-z0-9]{1,12}", 1..40)) {
            let d = Dedupe::new(DedupeConfig { buckets: 1, per_bucket: 64, window_seconds: 1000 });
            let s = MemoryStore::new();
            for k in &keys {
                let dec = d.check_and_insert(&s, k, &digest(b"p"), FirstAnswer::Accepted, 0).unwrap();
                prop_assert_eq!(dec.outcome, Outcome::New);
            }
            for k in &keys {
                let dec = d.check_and_insert(&s, k, &digest(b"p"), FirstAnswer::Accepted, 1).unwrap();
                prop_assert_eq!(dec.outcome, Outcome::Replay(FirstAnswer::Accepted));
            }
            prop_assert!(s.bytes() <= d.config().max_bytes());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }
    }
}
