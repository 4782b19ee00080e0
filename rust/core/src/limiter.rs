//! `RateLimiter`: GCRA buckets in a shared region, decided lock-free.
//!
//! Each bucket is one `AtomicU64` TAT; an acquire reads it, decides with the pure
//! math of `gcra::decide`, and publishes the new TAT with `compare_exchange_weak`,
//! deciding again on the fresh value if another thread or process got there first.
//! A refusal never writes. No mutex, no syscall beyond reading the clock.
//!
//! A bucket also stores the fingerprint of the quota its TAT is expressed in. A
//! caller acquiring with a different quota resets the bucket to full under its
//! own quota (CAS the fingerprint, then store `tat = 0`). Small race, accepted:
//! an acquire under the old quota that is between its fingerprint check and its
//! CAS may land one TAT in the old units, and a concurrent acquire under the new
//! quota may be overwritten by the reset. `gcra::decide` clamps any TAT to at
//! most `now + tau`, so the worst outcome of the race is one bucket starting full
//! or empty — never a bucket stuck for longer than one interval.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::*;
use std::sync::Arc;

use crate::clock::{Clock, MonotonicClock};
use crate::error::{Error, Result};
use crate::gcra::{self, Decision, Quota};
use crate::region::{self, Entry, Region};

pub const DEFAULT_CAPACITY: u32 = 65_536;

pub struct RateLimiter {
    region: Region,
    clock: Arc<dyn Clock>,
    path: Option<PathBuf>,
}

impl RateLimiter {
    /// Buckets private to this process, on the machine's clocks.
    pub fn in_memory(capacity: u32) -> Result<Self> {
        Self::with_clock(None, capacity, Arc::new(MonotonicClock))
    }

    /// Buckets in the region file at `path`, shared with every process that opens it.
    pub fn open(path: &Path, capacity: u32) -> Result<Self> {
        Self::with_clock(Some(path), capacity, Arc::new(MonotonicClock))
    }

    /// Either of the above on a given clock (a `FakeClock` in tests).
    pub fn with_clock(path: Option<&Path>, capacity: u32, clock: Arc<dyn Clock>) -> Result<Self> {
        let region = match path {
            Some(p) => Region::open(p, capacity)?,
            None => Region::anonymous(capacity)?,
        };
        Ok(Self { region, clock, path: path.map(Path::to_path_buf) })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
    pub fn capacity(&self) -> u32 {
        self.region.capacity()
    }
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Takes `cost` from the bucket named `name` (R = `requests` per `interval`
    /// seconds; `None` = no limit).
    pub fn acquire(&self, name: &str, requests: Option<u64>, interval: f64, cost: u64) -> Result<Decision> {
        let quota = Quota::optional(requests, interval)?;
        // Hash collisions between names (64-bit tags) would share a bucket: negligible.
        self.acquire_in(quota.as_ref(), cost, || self.region.named(region::fnv1a(name.as_bytes()) | 1))
    }

    /// Takes `cost` from the bucket of `slot` (the gateway's per-key buckets).
    pub fn acquire_slot(&self, slot: u32, requests: Option<u64>, interval: f64, cost: u64) -> Result<Decision> {
        self.acquire_quota(slot, Quota::optional(requests, interval)?.as_ref(), cost)
    }

    /// `acquire_slot` with a quota validated beforehand (the key table's records).
    pub fn acquire_quota(&self, slot: u32, quota: Option<&Quota>, cost: u64) -> Result<Decision> {
        self.acquire_in(quota, cost, || self.region.entry(slot))
    }

    fn acquire_in<'a>(
        &'a self,
        quota: Option<&Quota>,
        cost: u64,
        entry: impl FnOnce() -> Result<&'a Entry>,
    ) -> Result<Decision> {
        if cost == 0 {
            return Err(Error::invalid("cost must be at least 1"));
        }
        let entry = entry()?;
        match quota {
            None => Ok(Decision::UNLIMITED),
            Some(q) => self.acquire_entry(entry, q, cost).map(|(decision, _retries)| decision),
        }
    }

    /// The CAS loop. Returns the decision and how many times the CAS lost a race
    /// (for the stress test that proves the retry path runs).
    pub(crate) fn acquire_entry(&self, entry: &Entry, q: &Quota, cost: u64) -> Result<(Decision, u32)> {
        let now_ns = self.clock.monotonic_ns();
        let unix_ns = self.clock.unix_ns();
        if cost > q.requests() {
            // Refused whatever the state; report the state only if it is in our quota.
            let own = entry.fingerprint.load(Acquire) == q.fingerprint();
            let tat = if own { entry.tat.load(Acquire) } else { 0 };
            return gcra::decide(q, tat, now_ns, unix_ns, cost).map(|(decision, _)| (decision, 0));
        }
        Self::adopt_quota(entry, q);
        let mut retries = 0;
        let mut tat = entry.tat.load(Acquire);
        loop {
            let (decision, new_tat) = gcra::decide(q, tat, now_ns, unix_ns, cost)?;
            let Some(new_tat) = new_tat else {
                return Ok((decision, retries)); // a refusal writes nothing
            };
            match entry.tat.compare_exchange_weak(tat, new_tat, AcqRel, Acquire) {
                Ok(_) => return Ok((decision, retries)),
                Err(fresh) => {
                    tat = fresh;
                    retries += 1;
                }
            }
        }
    }

    /// Resets the bucket to full under `q` if its state is in another quota.
    fn adopt_quota(entry: &Entry, q: &Quota) {
        let mut current = entry.fingerprint.load(Acquire);
        while current != q.fingerprint() {
            match entry.fingerprint.compare_exchange(current, q.fingerprint(), AcqRel, Acquire) {
                Ok(_) => {
                    entry.tat.store(0, Release);
                    return;
                }
                Err(fresh) => current = fresh,
            }
        }
    }

    /// The shared key-set generation.
    pub fn generation(&self) -> u64 {
        self.region.generation()
    }
    /// Increments the generation; returns the new value.
    pub fn bump_generation(&self) -> u64 {
        self.region.bump_generation()
    }
    /// `Ok` when `slot` exists in the region.
    pub fn check_slot(&self, slot: u32) -> Result<()> {
        self.region.entry(slot).map(drop)
    }
    pub fn claim_slot(&self, slot: u32, tag: u64) -> Result<()> {
        self.region.claim(slot, tag)
    }
    pub fn revoke_slot(&self, slot: u32, tag: u64) -> Result<bool> {
        self.region.revoke(slot, tag)
    }
    pub fn slot_is_live(&self, slot: u32, tag: u64) -> Result<bool> {
        self.region.is_live(slot, tag)
    }
}
