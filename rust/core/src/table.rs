//! The key table: digest → `KeyRecord`, a per-process cache of the store.
//!
//! Readers never lock: the whole map sits behind an `ArcSwap`; `replace_all`
//! builds a new map and swaps it in, and a reader keeps whatever snapshot it
//! loaded. The map is keyed by the first 16 bytes of the digest only; a candidate
//! is accepted after comparing all 32 bytes in constant time, so no secret-
//! dependent early exit ever runs on a full digest.

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
        Ok(Self { id, slot, tag, requests, interval, expires_at, scope, quota })
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
        self.0 = bytes.iter().fold(self.0, |h, &b| h.rotate_left(8) ^ u64::from(b));
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type Candidates = HashMap<u128, (Digest, Arc<KeyRecord>), BuildHasherDefault<PrefixHasher>>;

#[derive(Default)]
struct Snapshot {
    by_prefix: Candidates,
    generation: u64,
}

fn prefix(digest: &Digest) -> u128 {
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

pub struct KeyTable {
    digester: Digester,
    limiter: Arc<RateLimiter>,
    snapshot: ArcSwap<Snapshot>,
}

impl KeyTable {
    /// An empty table; expiry is judged on the limiter's clock.
    pub fn new(digester: Digester, limiter: Arc<RateLimiter>) -> Self {
        Self { digester, limiter, snapshot: ArcSwap::from_pointee(Snapshot::default()) }
    }

    pub fn len(&self) -> usize {
        self.snapshot.load().by_prefix.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The shared generation the current contents were loaded at.
    pub fn generation(&self) -> u64 {
        self.snapshot.load().generation
    }

    /// Swaps in a new set of keys, loaded from the store at `generation`.
    pub fn replace_all(
        &self,
        entries: impl IntoIterator<Item = (Digest, Arc<KeyRecord>)>,
        generation: u64,
    ) -> Result<()> {
        let mut by_prefix = Candidates::default();
        for (digest, record) in entries {
            self.limiter.check_slot(record.slot)?;
            if by_prefix.insert(prefix(&digest), (digest, record)).is_some() {
                // A repeated digest is a store bug; two digests sharing 128 bits, never.
                return Err(Error::invalid("two entries share a digest"));
            }
        }
        self.snapshot.store(Arc::new(Snapshot { by_prefix, generation }));
        Ok(())
    }

    /// Format, digest, constant-time lookup, revoked flag, expiry — in that order.
    pub fn authenticate(&self, raw: &str) -> (Auth, Option<Arc<KeyRecord>>) {
        if !is_well_formed(raw) {
            return (Auth::Malformed, None);
        }
        let digest = self.digester.digest(raw);
        let snapshot = self.snapshot.load();
        let found = snapshot
            .by_prefix
            .get(&prefix(&digest))
            .filter(|(stored, _)| bool::from(stored.ct_eq(&digest)));
        let Some((_, record)) = found else {
            let stale = self.limiter.generation() != snapshot.generation;
            return (if stale { Auth::Stale } else { Auth::Unknown }, None);
        };
        // The slot was range-checked by `replace_all`, so this cannot fail.
        let live = self.limiter.slot_is_live(record.slot, record.tag).unwrap_or(false);
        let auth = if !live {
            Auth::Revoked
        } else if record.expires_at.is_some_and(|at| at * NS_PER_SEC as f64 <= self.limiter.clock().unix_ns() as f64) {
            Auth::Expired
        } else {
            Auth::Ok
        };
        (auth, Some(Arc::clone(record)))
    }

    /// `authenticate`, then for a valid key, take `cost` from its bucket.
    pub fn check(&self, raw: &str, cost: u64) -> Result<(Auth, Option<Arc<KeyRecord>>, Option<Decision>)> {
        if cost == 0 {
            return Err(Error::invalid("cost must be at least 1"));
        }
        let (auth, record) = self.authenticate(raw);
        let decision = match (&auth, &record) {
            (Auth::Ok, Some(r)) => Some(self.limiter.acquire_quota(r.slot, r.quota(), cost)?),
            _ => None,
        };
        Ok((auth, record, decision))
    }
}
