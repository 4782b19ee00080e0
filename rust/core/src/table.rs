//! The key table: digest → `KeyRecord`, a per-process cache of the store.
//!
//! Readers never lock: the whole map sits behind an `ArcSwap`; `replace_all`
//! builds a new map and swaps it in, and a reader keeps whatever snapshot it
//! loaded. The map is keyed by the first 16 bytes of the digest only; a candidate
//! is accepted after comparing all 32 bytes in constant time, so no secret-
//! dependent early exit ever runs on a full digest.
//!
//! Beside the live keys the table keeps the digests of deleted keys (the store
//! keeps deleted rows with their digests): a deleted key is refused as
//! `Revoked` ("has been deleted") after any reload, not as `Unknown`. Before a
//! reload the shared revoked flag already says so; the tombstone keeps saying it
//! once the key has left the live set.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use arc_swap::ArcSwap;
use subtle::ConstantTimeEq;

use crate::clock::NS_PER_SEC;
use crate::digest::{Digest, Digester};
use crate::error::{Error, Result};
use crate::gcra::{Decision, Quota};
use crate::key::is_well_formed;
use crate::limiter::RateLimiter;

/// Authentication outcomes (their values are part of the Python API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Auth {
    Ok = 0,
    Malformed = 1,
    Unknown = 2,
    Revoked = 3,
    Expired = 4,
    /// Not in this table, but the shared generation moved since it was loaded.
    Stale = 5,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub slot: u32,
    pub tag: u64,
    pub requests: Option<u64>,
    pub interval: f64,
    /// Unix seconds; the key is refused from this instant on.
    pub expires_at: Option<f64>,
    pub scope: String,
    quota: Option<Quota>,
    /// `expires_at` in Unix ns, compared in integers against the clock.
    expires_at_ns: Option<i128>,
}

impl KeyRecord {
    /// Validates the limit once here, so `check` does no per-request validation.
    pub fn new(
        id: String,
        slot: u32,
        tag: u64,
        requests: Option<u64>,
        interval: f64,
        expires_at: Option<f64>,
        scope: String,
    ) -> Result<Self> {
        if tag == 0 {
            return Err(Error::invalid("tag must be non-zero"));
        }
        let quota = Quota::optional(requests, interval)?;
        if expires_at.is_some_and(|at| !at.is_finite()) {
            return Err(Error::invalid("expires_at must be a finite Unix time"));
        }
        let expires_at_ns = expires_at.map(|at| (at * NS_PER_SEC as f64).round() as i128);
        Ok(Self {
            id,
            slot,
            tag,
            requests,
            interval,
            expires_at,
            scope,
            quota,
            expires_at_ns,
        })
    }

    pub fn quota(&self) -> Option<&Quota> {
        self.quota.as_ref()
    }
}

/// The digest prefix is an HMAC output under the server secret: already uniform
/// and unpredictable to callers, so it is its own hash.
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = bytes
            .iter()
            .fold(self.0, |h, &b| h.rotate_left(8) ^ u64::from(b));
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// What the table keeps for each key: the record itself, or something that owns
/// one. The Python binding keeps the Python object wrapping the record, so that
/// `authenticate` can hand back that very object instead of making a new one.
pub trait HoldsRecord: Send + Sync + 'static {
    fn record(&self) -> &KeyRecord;
}

impl HoldsRecord for Arc<KeyRecord> {
    fn record(&self) -> &KeyRecord {
        self
    }
}

type Candidates<R> = HashMap<u128, (Digest, R), BuildHasherDefault<PrefixHasher>>;

struct Snapshot<R> {
    by_prefix: Candidates<R>,
    /// Digests of deleted keys, keyed the same way.
    tombstones: Candidates<()>,
    generation: u64,
}

fn prefix(digest: &Digest) -> u128 {
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

/// Compares two digests in constant time: the differences of all 32 bytes are
/// folded into one word before the single comparison (`subtle` keeps the compiler
/// from turning that into an early exit).
fn same_digest(a: &Digest, b: &Digest) -> bool {
    let diff = a
        .chunks_exact(8)
        .zip(b.chunks_exact(8))
        .fold(0u64, |diff, (a, b)| {
            let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().expect("8 bytes"));
            diff | (word(a) ^ word(b))
        });
    bool::from(diff.ct_eq(&0))
}

pub struct KeyTable<R: HoldsRecord = Arc<KeyRecord>> {
    digester: Digester,
    limiter: Arc<RateLimiter>,
    snapshot: ArcSwap<Snapshot<R>>,
}

impl<R: HoldsRecord> KeyTable<R> {
    /// An empty table; expiry is judged on the limiter's clock.
    pub fn new(digester: Digester, limiter: Arc<RateLimiter>) -> Self {
        Self {
            digester,
            limiter,
            snapshot: ArcSwap::from_pointee(Snapshot {
                by_prefix: Candidates::default(),
                tombstones: Candidates::default(),
                generation: 0,
            }),
        }
    }

    /// Live keys (tombstones not included).
    pub fn len(&self) -> usize {
        self.snapshot.load().by_prefix.len()
    }
    /// Deleted keys' digests kept to answer `Revoked`.
    pub fn tombstones(&self) -> usize {
        self.snapshot.load().tombstones.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The shared generation the current contents were loaded at.
    pub fn generation(&self) -> u64 {
        self.snapshot.load().generation
    }

    /// Swaps in a new set of keys and deleted keys' digests, loaded from the
    /// store at `generation`. On error the table is left as it was.
    pub fn replace_all(
        &self,
        entries: impl IntoIterator<Item = (Digest, R)>,
        deleted: impl IntoIterator<Item = Digest>,
        generation: u64,
    ) -> Result<()> {
        let mut by_prefix = Candidates::default();
        for (digest, record) in entries {
            self.limiter.check_slot(record.record().slot)?;
            if by_prefix
                .insert(prefix(&digest), (digest, record))
                .is_some()
            {
                // A repeated digest is a store bug; two digests sharing 128 bits, never.
                return Err(Error::invalid("two entries share a digest"));
            }
        }
        let mut tombstones = Candidates::default();
        for digest in deleted {
            if by_prefix.contains_key(&prefix(&digest)) {
                return Err(Error::invalid("a digest is both live and deleted"));
            }
            tombstones.insert(prefix(&digest), (digest, ()));
        }
        self.snapshot.store(Arc::new(Snapshot {
            by_prefix,
            tombstones,
            generation,
        }));
        Ok(())
    }

    /// Format, digest, constant-time lookup, revoked flag, expiry — in that order.
    /// `found` receives the outcome and the key's entry, borrowed from the table.
    pub fn authenticate_with<T>(&self, raw: &str, found: impl FnOnce(Auth, Option<&R>) -> T) -> T {
        if !is_well_formed(raw) {
            return found(Auth::Malformed, None);
        }
        let digest = self.digester.digest(raw);
        let snapshot = self.snapshot.load();
        let entry = snapshot
            .by_prefix
            .get(&prefix(&digest))
            .filter(|(stored, _)| same_digest(stored, &digest));
        let Some((_, entry)) = entry else {
            let deleted = snapshot
                .tombstones
                .get(&prefix(&digest))
                .is_some_and(|(stored, ())| same_digest(stored, &digest));
            let auth = if deleted {
                Auth::Revoked
            } else if self.limiter.generation() != snapshot.generation {
                Auth::Stale
            } else {
                Auth::Unknown
            };
            return found(auth, None);
        };
        let record = entry.record();
        // The slot was range-checked by `replace_all`, so this cannot fail.
        let live = self
            .limiter
            .slot_is_live(record.slot, record.tag)
            .unwrap_or(false);
        let auth = if !live {
            Auth::Revoked
        } else if record
            .expires_at_ns
            .is_some_and(|at| at <= self.limiter.clock().unix_ns())
        {
            Auth::Expired
        } else {
            Auth::Ok
        };
        found(auth, Some(entry))
    }

    /// `authenticate_with`, then for a valid key, take `cost` from its bucket.
    pub fn check_with<T>(
        &self,
        raw: &str,
        cost: u64,
        checked: impl FnOnce(Auth, Option<&R>, Option<Decision>) -> T,
    ) -> Result<T> {
        if cost == 0 {
            return Err(Error::invalid("cost must be at least 1"));
        }
        self.authenticate_with(raw, |auth, entry| {
            let decision = match (auth, entry) {
                (Auth::Ok, Some(e)) => {
                    let r = e.record();
                    Some(self.limiter.acquire_quota(r.slot, r.quota(), cost)?)
                }
                _ => None,
            };
            Ok(checked(auth, entry, decision))
        })
    }
}

impl<R: HoldsRecord + Clone> KeyTable<R> {
    /// `authenticate_with`, returning a clone of the key's entry.
    pub fn authenticate(&self, raw: &str) -> (Auth, Option<R>) {
        self.authenticate_with(raw, |auth, entry| (auth, entry.cloned()))
    }

    /// `check_with`, returning a clone of the key's entry.
    pub fn check(&self, raw: &str, cost: u64) -> Result<(Auth, Option<R>, Option<Decision>)> {
        self.check_with(raw, cost, |auth, entry, decision| {
            (auth, entry.cloned(), decision)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::key::generate_key;

    struct Fixture {
        clock: Arc<FakeClock>,
        limiter: Arc<RateLimiter>,
        digester: Digester,
        table: KeyTable,
        key: String,
    }

    fn record(
        slot: u32,
        tag: u64,
        requests: Option<u64>,
        expires_at: Option<f64>,
    ) -> Arc<KeyRecord> {
        Arc::new(
            KeyRecord::new(
                "k1".into(),
                slot,
                tag,
                requests,
                60.0,
                expires_at,
                "all".into(),
            )
            .unwrap(),
        )
    }

    /// A table with one key in slot 1 (tag 11), 2 requests per minute, expiring in 10 s.
    fn fixture() -> Fixture {
        let clock = Arc::new(FakeClock::default());
        let limiter = Arc::new(RateLimiter::with_clock(None, 4, clock.clone()).unwrap());
        let digester = Digester::new(&[7; 32]).unwrap();
        let table = KeyTable::new(digester.clone(), Arc::clone(&limiter));
        let key = generate_key().unwrap();
        limiter.claim_slot(1, 11).unwrap();
        let expires = clock.unix() + 10.0;
        table
            .replace_all(
                [(digester.digest(&key), record(1, 11, Some(2), Some(expires)))],
                [],
                limiter.generation(),
            )
            .unwrap();
        Fixture {
            clock,
            limiter,
            digester,
            table,
            key,
        }
    }

    #[test]
    fn a_valid_key_authenticates_and_malformed_ones_are_refused_early() {
        let f = fixture();
        let (auth, rec) = f.table.authenticate(&f.key);
        assert_eq!((auth, rec.unwrap().id.as_str()), (Auth::Ok, "k1"));
        let mut typo = f.key.clone();
        typo.replace_range(20..21, if &f.key[20..21] == "a" { "b" } else { "a" });
        assert_eq!(f.table.authenticate(&typo), (Auth::Malformed, None));
        assert_eq!(f.table.len(), 1);
    }

    #[test]
    fn unknown_vs_stale_follows_the_shared_generation() {
        let f = fixture();
        let other = generate_key().unwrap();
        assert_eq!(f.table.authenticate(&other).0, Auth::Unknown);
        f.limiter.bump_generation();
        assert_eq!(f.table.authenticate(&other).0, Auth::Stale);
        f.table.replace_all([], [], f.limiter.generation()).unwrap();
        assert_eq!(f.table.authenticate(&other).0, Auth::Unknown);
        assert_eq!(f.table.generation(), 1);
    }

    /// A stored digest equal to the presented one in the 16 bytes the map is keyed
    /// on but not in the last byte must be refused by the full comparison.
    #[test]
    fn the_full_digest_is_compared_not_just_the_map_key() {
        let f = fixture();
        let other = generate_key().unwrap();
        let mut near = f.digester.digest(&other);
        near[31] ^= 1;
        f.table
            .replace_all([(near, record(1, 11, None, None))], [], 0)
            .unwrap();
        assert_eq!(f.table.authenticate(&other), (Auth::Unknown, None));
        near[31] ^= 1;
        f.table
            .replace_all([(near, record(1, 11, None, None))], [], 0)
            .unwrap();
        assert_eq!(f.table.authenticate(&other).0, Auth::Ok);
    }

    #[test]
    fn same_digest_sees_a_difference_in_any_byte() {
        let a: Digest = std::array::from_fn(|i| i as u8);
        assert!(same_digest(&a, &a));
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 0x80;
            assert!(!same_digest(&a, &b), "byte {i}");
        }
    }

    #[test]
    fn revocation_and_slot_reuse_both_refuse_the_old_key() {
        let f = fixture();
        assert!(f.limiter.revoke_slot(1, 11).unwrap());
        assert_eq!(f.table.authenticate(&f.key).0, Auth::Revoked);
        f.limiter.claim_slot(1, 11).unwrap();
        assert_eq!(f.table.authenticate(&f.key).0, Auth::Ok);
        f.limiter.claim_slot(1, 12).unwrap(); // the slot went to another key
        assert_eq!(f.table.authenticate(&f.key).0, Auth::Revoked);
    }

    /// After a reload the deleted key is no longer live, but its tombstone still
    /// refuses it as deleted: before the reload by the revoked flag, after it by
    /// the tombstone, never as "no such key" — even once the generation moved.
    #[test]
    fn a_deleted_key_stays_revoked_after_the_table_reloads() {
        let f = fixture();
        let digest = f.digester.digest(&f.key);
        assert!(f.limiter.revoke_slot(1, 11).unwrap());
        f.limiter.bump_generation();
        assert_eq!(f.table.authenticate(&f.key).0, Auth::Revoked);
        f.table
            .replace_all([], [digest], f.limiter.generation())
            .unwrap();
        assert_eq!((f.table.len(), f.table.tombstones()), (0, 1));
        assert_eq!(f.table.authenticate(&f.key), (Auth::Revoked, None));
        f.limiter.bump_generation();
        assert_eq!(f.table.authenticate(&f.key), (Auth::Revoked, None));
        let (auth, rec, decision) = f.table.check(&f.key, 1).unwrap();
        assert_eq!((auth, rec, decision), (Auth::Revoked, None, None));
        // Another unknown key is still unknown (or stale), not revoked.
        let other = generate_key().unwrap();
        assert_eq!(f.table.authenticate(&other).0, Auth::Stale);
    }

    /// A tombstone matches on the full digest, as live entries do.
    #[test]
    fn a_tombstone_needs_the_full_digest() {
        let f = fixture();
        let other = generate_key().unwrap();
        let mut near = f.digester.digest(&other);
        near[31] ^= 1;
        f.table.replace_all([], [near], 0).unwrap();
        assert_eq!(f.table.authenticate(&other).0, Auth::Unknown);
        near[31] ^= 1;
        f.table.replace_all([], [near], 0).unwrap();
        assert_eq!(f.table.authenticate(&other).0, Auth::Revoked);
    }

    #[test]
    fn a_digest_cannot_be_live_and_deleted() {
        let f = fixture();
        let d = f.digester.digest(&f.key);
        let out = f
            .table
            .replace_all([(d, record(1, 11, None, None))], [d], 9);
        assert!(matches!(out, Err(Error::InvalidArgument(_))));
        assert_eq!((f.table.len(), f.table.generation()), (1, 0), "unchanged");
    }

    #[test]
    fn keys_expire_on_the_limiter_clock() {
        let f = fixture();
        f.clock.advance_ns(10 * NS_PER_SEC - 1).unwrap();
        assert_eq!(f.table.authenticate(&f.key).0, Auth::Ok);
        f.clock.advance_ns(1).unwrap();
        assert_eq!(f.table.authenticate(&f.key).0, Auth::Expired);
    }

    #[test]
    fn check_limits_valid_keys_only() {
        let f = fixture();
        let allowed = |f: &Fixture| f.table.check(&f.key, 1).unwrap().2.map(|d| d.allowed);
        assert_eq!(allowed(&f), Some(true));
        assert_eq!(allowed(&f), Some(true));
        assert_eq!(allowed(&f), Some(false));
        assert!(f.table.check("sk-ar-nope", 1).unwrap().2.is_none());
        assert!(f.table.check(&f.key, 0).is_err());
    }

    #[test]
    fn replace_all_rejects_bad_slots_and_duplicates() {
        let f = fixture();
        let d = f.digester.digest(&f.key);
        let out = f.table.replace_all([(d, record(4, 1, None, None))], [], 0);
        assert!(matches!(
            out,
            Err(Error::SlotOutOfRange {
                slot: 4,
                capacity: 4
            })
        ));
        let twice = [
            (d, record(1, 11, None, None)),
            (d, record(2, 12, None, None)),
        ];
        assert!(matches!(
            f.table.replace_all(twice, [], 0),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(
            f.table.len(),
            1,
            "a failed replace leaves the table as it was"
        );
        assert!(KeyRecord::new("x".into(), 0, 0, None, 1.0, None, String::new()).is_err());
        assert!(
            KeyRecord::new("x".into(), 0, 1, None, 1.0, Some(f64::NAN), String::new()).is_err()
        );
    }
}
