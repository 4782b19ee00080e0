//! `RateLimiter`: GCRA buckets in a shared region, decided lock-free.
//!
//! Each bucket is one `AtomicU64` TAT; an acquire reads it, decides with the pure
//! math of `gcra::decide`, and publishes the new TAT with `compare_exchange_weak`,
//! deciding again on the fresh value if another thread or process got there first.
//! A refusal never writes. No mutex and no system call (the clock is read
//! through the vDSO).
//!
//! A bucket also stores the fingerprint of the quota its TAT is expressed in. A
//! caller acquiring with a different quota (or the first one on a fresh bucket)
//! resets the bucket to full under its own quota: CAS the fingerprint, then CAS
//! the TAT from the value read before to 0, so an admission made under the new
//! quota in between is never erased. Small race, accepted: an acquire under the
//! old quota that is between its fingerprint check and its CAS may land one TAT
//! in the old units (then the reset is skipped or that TAT stays). `gcra::decide`
//! clamps any TAT to at most `now + tau`, so the worst outcome of the race is one
//! bucket starting empty — never a bucket stuck for longer than one interval —
//! and no admission made under the new quota is ever lost.
//!
//! The acquire path is a few tens of nanoseconds, so its shape matters (measured
//! from Python with `benches/bench_core.py`): it is `#[inline(always)]` down to
//! `gcra::decide`, because a `Decision` (Options, about 70 bytes) moved through
//! call frames as `Result`s stalled on store forwarding at each copy. The atomics'
//! orderings compile to the same instructions on x86-64 whatever they are (plain
//! loads, `lock cmpxchg`), so they stay at Acquire/AcqRel, which is what the
//! reasoning above needs on weaker architectures.

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
        Self::with_clock(None, capacity, Arc::new(MonotonicClock::new()))
    }

    /// Buckets in the region file at `path`, shared with every process that opens it.
    pub fn open(path: &Path, capacity: u32) -> Result<Self> {
        Self::with_clock(Some(path), capacity, Arc::new(MonotonicClock::new()))
    }

    /// Either of the above on a given clock (a `FakeClock` in tests).
    pub fn with_clock(path: Option<&Path>, capacity: u32, clock: Arc<dyn Clock>) -> Result<Self> {
        let region = match path {
            Some(p) => Region::open(p, capacity)?,
            None => Region::anonymous(capacity)?,
        };
        Ok(Self {
            region,
            clock,
            path: path.map(Path::to_path_buf),
        })
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
    #[inline(always)]
    pub fn acquire(
        &self,
        name: &str,
        requests: Option<u64>,
        interval: f64,
        cost: u64,
    ) -> Result<Decision> {
        let quota = Quota::optional(requests, interval)?;
        // Hash collisions between names (64-bit tags) would share a bucket: negligible.
        self.acquire_in(quota.as_ref(), cost, || {
            self.region.named(region::fnv1a(name.as_bytes()) | 1)
        })
    }

    /// Takes `cost` from the bucket of `slot` (the gateway's per-key buckets).
    #[inline(always)]
    pub fn acquire_slot(
        &self,
        slot: u32,
        requests: Option<u64>,
        interval: f64,
        cost: u64,
    ) -> Result<Decision> {
        self.acquire_quota(slot, Quota::optional(requests, interval)?.as_ref(), cost)
    }

    /// `acquire_slot` with a quota validated beforehand (the key table's records).
    #[inline(always)]
    pub fn acquire_quota(&self, slot: u32, quota: Option<&Quota>, cost: u64) -> Result<Decision> {
        self.acquire_in(quota, cost, || self.region.entry(slot))
    }

    #[inline(always)]
    fn acquire_in<'a>(
        &'a self,
        quota: Option<&Quota>,
        cost: u64,
        entry: impl FnOnce() -> Result<&'a Entry>,
    ) -> Result<Decision> {
        if cost == 0 {
            return Err(Error::invalid("cost must be at least 1"));
        }
        let Some(q) = quota else {
            return entry().map(|_| Decision::UNLIMITED);
        };
        self.acquire_entry(entry()?, q, cost)
            .map(|(decision, _retries)| decision)
    }

    /// The CAS loop. Returns the decision and how many times the CAS lost a race
    /// (for the stress test that proves the retry path runs).
    ///
    /// The clock is read *after* the TAT is loaded, and again after each lost CAS.
    /// The TAT we decide on was stored by a caller that read its clock before
    /// storing, so our `now` is never older than the `now` that TAT was computed
    /// at: decisions serialised by the CAS see non-decreasing time, and each
    /// admission's `remaining` is its own place in the count. Read before the load
    /// (as this once did, to keep the bucket's line access back to back), a caller
    /// overtaken between its clock read and its load decided at an older `now`
    /// than the TAT's writer, saw the bucket a fraction of a cell emptier, and
    /// reported one `remaining` too few: `2, 0, 0` for three concurrent
    /// admissions to a bucket of 3 (see the interleaving test below).
    #[inline(always)]
    pub(crate) fn acquire_entry(
        &self,
        entry: &Entry,
        q: &Quota,
        cost: u64,
    ) -> Result<(Decision, u32)> {
        if cost > q.requests() {
            // Refused whatever the state; report the state only if it is in our quota.
            let own = entry.fingerprint.load(Acquire) == q.fingerprint();
            let tat = if own { entry.tat.load(Acquire) } else { 0 };
            let (now_ns, unix_ns) = self.clock.now();
            return gcra::decide(q, tat, now_ns, unix_ns, cost).map(|(decision, _)| (decision, 0));
        }
        Self::adopt_quota(entry, q);
        let mut retries = 0;
        let mut tat = entry.tat.load(Acquire);
        loop {
            let (now_ns, unix_ns) = self.clock.now();
            let (decision, new_tat) = gcra::decide(q, tat, now_ns, unix_ns, cost)?;
            let Some(new_tat) = new_tat else {
                return Ok((decision, retries)); // a refusal writes nothing
            };
            match entry
                .tat
                .compare_exchange_weak(tat, new_tat, AcqRel, Acquire)
            {
                Ok(_) => return Ok((decision, retries)),
                Err(fresh) => {
                    tat = fresh;
                    retries += 1;
                }
            }
        }
    }

    /// Resets the bucket to full under `q` if its state is in another quota.
    #[inline(always)]
    fn adopt_quota(entry: &Entry, q: &Quota) {
        Self::adopt_quota_with(entry, q, || {});
    }

    /// `adopt_quota`, running `between` after the fingerprint is published and
    /// before the reset (the tests put another caller there).
    ///
    /// The TAT to reset is read before the fingerprint is published, and reset by
    /// compare-and-swap from that value: once the fingerprint is out, another
    /// caller may admit under the new quota before the reset lands, and a blind
    /// store would erase that admission (the bucket would admit one more than R,
    /// and two callers would report the same `remaining`). If the TAT moved, the
    /// reset is skipped: whoever moved it wrote under the new quota, or under the
    /// old one a moment before (the accepted race of the module docs, clamped by
    /// `gcra::decide`).
    #[inline(always)]
    fn adopt_quota_with(entry: &Entry, q: &Quota, between: impl FnOnce()) {
        let mut current = entry.fingerprint.load(Acquire);
        if current == q.fingerprint() {
            return;
        }
        let mut between = Some(between);
        loop {
            let stale = entry.tat.load(Acquire);
            match entry
                .fingerprint
                .compare_exchange(current, q.fingerprint(), AcqRel, Acquire)
            {
                Ok(_) => {
                    if let Some(between) = between.take() {
                        between();
                    }
                    // Failing means someone wrote since `stale` was read: keep theirs.
                    let _ = entry.tat.compare_exchange(stale, 0, AcqRel, Acquire);
                    return;
                }
                Err(fresh) if fresh == q.fingerprint() => return,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::gcra::Reason;
    use proptest::prelude::*;
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::Barrier;

    const UNIX0: i64 = 1_700_000_000;

    fn fake() -> (Arc<FakeClock>, RateLimiter) {
        let clock = Arc::new(FakeClock::default());
        let limiter = RateLimiter::with_clock(None, 16, clock.clone()).unwrap();
        (clock, limiter)
    }

    fn tat(l: &RateLimiter, name: &str) -> u64 {
        l.region
            .named(region::fnv1a(name.as_bytes()) | 1)
            .unwrap()
            .tat
            .load(Acquire)
    }

    fn admitted(allowed: bool, remaining: u64, reset: i64) -> Decision {
        Decision {
            allowed,
            limit: Some(5),
            remaining: Some(remaining),
            reset: Some(reset),
            retry_after: None,
            reason: None,
        }
    }

    #[test]
    fn a_full_bucket_admits_exactly_r_then_refuses_without_writing() {
        let (_clock, l) = fake();
        // R = 5 per 10 s: t = 2 s, each admission pushes `reset` 2 s further.
        for k in 1..=5 {
            let d = l.acquire("a", Some(5), 10.0, 1).unwrap();
            assert_eq!(d, admitted(true, 5 - k, UNIX0 + 2 * k as i64));
        }
        let before = tat(&l, "a");
        for _ in 0..3 {
            let d = l.acquire("a", Some(5), 10.0, 1).unwrap();
            assert_eq!(
                d,
                Decision {
                    allowed: false,
                    remaining: Some(0),
                    reset: Some(UNIX0 + 10),
                    retry_after: Some(2.0),
                    reason: Some(Reason::RateLimited),
                    ..admitted(false, 0, 0)
                }
            );
            assert_eq!(tat(&l, "a"), before, "a refusal must not write");
        }
    }

    #[test]
    fn refill_is_continuous_to_the_nanosecond() {
        let (clock, l) = fake();
        (0..5).for_each(|_| assert!(l.acquire("a", Some(5), 10.0, 1).unwrap().allowed));
        clock.advance_ns(2 * 1_000_000_000 - 1).unwrap();
        let d = l.acquire("a", Some(5), 10.0, 1).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(1e-9));
        clock.advance_ns(1).unwrap();
        assert!(l.acquire("a", Some(5), 10.0, 1).unwrap().allowed);
        clock.advance(4.0).unwrap();
        assert!(l.acquire("a", Some(5), 10.0, 1).unwrap().allowed);
        assert!(l.acquire("a", Some(5), 10.0, 1).unwrap().allowed);
        assert!(!l.acquire("a", Some(5), 10.0, 1).unwrap().allowed);
    }

    #[test]
    fn reset_rounds_up_to_the_next_whole_second() {
        let clock = Arc::new(FakeClock::new(1_000_000_000, 1_700_000_000.25).unwrap());
        let l = RateLimiter::with_clock(None, 4, clock.clone()).unwrap();
        // Full after 1 s: at unix …001.25, shown as …002.
        assert_eq!(
            l.acquire("a", Some(1), 1.0, 1).unwrap().reset,
            Some(UNIX0 + 2)
        );
        clock.advance(0.75).unwrap();
        // Exactly at …001.0 + 1 s = …002.0: no rounding.
        assert_eq!(
            l.acquire("b", Some(1), 1.0, 1).unwrap().reset,
            Some(UNIX0 + 2)
        );
    }

    #[test]
    fn cost_takes_several_cells_and_waits_for_all_of_them() {
        let (_clock, l) = fake();
        // R = 10 per 10 s: t = 1 s.
        let d = l.acquire("a", Some(10), 10.0, 4).unwrap();
        assert_eq!(
            (d.allowed, d.remaining, d.reset),
            (true, Some(6), Some(UNIX0 + 4))
        );
        let d = l.acquire("a", Some(10), 10.0, 7).unwrap();
        assert_eq!(
            (d.allowed, d.remaining, d.retry_after),
            (false, Some(6), Some(1.0))
        );
        let d = l.acquire("a", Some(10), 10.0, 6).unwrap();
        assert_eq!(
            (d.allowed, d.remaining, d.reset),
            (true, Some(0), Some(UNIX0 + 10))
        );
    }

    #[test]
    fn cost_above_the_limit_is_refused_and_writes_nothing() {
        let (_clock, l) = fake();
        assert!(l.acquire("a", Some(10), 10.0, 3).unwrap().allowed);
        let before = tat(&l, "a");
        let d = l.acquire("a", Some(10), 10.0, 11).unwrap();
        assert_eq!(
            d,
            Decision {
                allowed: false,
                limit: Some(10),
                remaining: Some(7),
                reset: Some(UNIX0 + 3),
                retry_after: None,
                reason: Some(Reason::CostExceedsLimit),
            }
        );
        assert_eq!(tat(&l, "a"), before);
        assert!(matches!(
            l.acquire("a", Some(10), 10.0, 0),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn unlimited_always_admits_and_reports_nothing() {
        let (_clock, l) = fake();
        for _ in 0..1000 {
            assert_eq!(l.acquire("a", None, 60.0, 5).unwrap(), Decision::UNLIMITED);
        }
        assert_eq!(tat(&l, "a"), 0);
        assert!(l.acquire("a", None, 60.0, 0).is_err());
    }

    #[test]
    fn a_new_quota_starts_from_a_full_bucket() {
        let (_clock, l) = fake();
        (0..2).for_each(|_| assert!(l.acquire("a", Some(2), 1.0, 1).unwrap().allowed));
        assert!(!l.acquire("a", Some(2), 1.0, 1).unwrap().allowed);
        let d = l.acquire("a", Some(3), 1.0, 1).unwrap();
        assert_eq!((d.allowed, d.remaining), (true, Some(2)));
        let d = l.acquire("a", Some(2), 1.0, 1).unwrap();
        assert_eq!((d.allowed, d.remaining), (true, Some(1)));
        let d = l.acquire("a", Some(2), 2.0, 1).unwrap();
        assert_eq!(
            (d.allowed, d.remaining),
            (true, Some(1)),
            "a new interval is a new quota too"
        );
    }

    #[test]
    fn awkward_r_keeps_the_burst_and_never_exceeds_the_rate() {
        let (clock, l) = fake();
        for _ in 0..67 {
            assert!(l.acquire("p", Some(67), 1.0, 1).unwrap().allowed);
        }
        assert!(!l.acquire("p", Some(67), 1.0, 1).unwrap().allowed);
        let mut more = 0;
        for _ in 0..10_000 {
            clock.advance_ns(1_000_000).unwrap(); // 10 s in 1 ms steps
            more += (0..2)
                .filter(|_| l.acquire("p", Some(67), 1.0, 1).unwrap().allowed)
                .count();
        }
        assert!((669..=670).contains(&more), "{more}");
    }

    #[test]
    fn slots_are_range_checked_and_a_claim_refills() {
        let (_clock, l) = fake();
        assert!(matches!(
            l.acquire_slot(16, Some(1), 1.0, 1),
            Err(Error::SlotOutOfRange { .. })
        ));
        l.claim_slot(3, 9).unwrap();
        assert!(l.acquire_slot(3, Some(1), 1.0, 1).unwrap().allowed);
        assert!(!l.acquire_slot(3, Some(1), 1.0, 1).unwrap().allowed);
        l.claim_slot(3, 10).unwrap();
        assert!(l.acquire_slot(3, Some(1), 1.0, 1).unwrap().allowed);
        assert_eq!(l.generation(), 0);
        assert_eq!(l.bump_generation(), 1);
    }

    /// Threads hammering one bucket with negligible refill admit exactly its
    /// capacity — and the CAS retry path demonstrably ran.
    #[test]
    fn stress_collisions_admit_exactly_capacity() {
        const THREADS: usize = 4;
        const CAPACITY: u64 = 2_000;
        let limiter = RateLimiter::in_memory(4).unwrap();
        let quota = Quota::new(CAPACITY, 1e7).unwrap(); // refill: 1 per 5000 s
        let mut total_retries = 0;
        // On a busy machine with few CPUs the threads may not overlap for a while:
        // keep going (each round is well under a millisecond) until a CAS loses.
        for round in 0..2_000u32 {
            limiter.claim_slot(0, u64::from(round) + 1).unwrap();
            let barrier = Barrier::new(THREADS);
            let results: Vec<(u64, u32)> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            let entry = limiter.region.entry(0).unwrap();
                            let (mut admitted, mut retries) = (0, 0);
                            for _ in 0..CAPACITY {
                                let (d, r) = limiter.acquire_entry(entry, &quota, 1).unwrap();
                                admitted += u64::from(d.allowed);
                                retries += r;
                            }
                            (admitted, retries)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(
                results.iter().map(|r| r.0).sum::<u64>(),
                CAPACITY,
                "round {round}"
            );
            total_retries += results.iter().map(|r| r.1).sum::<u32>();
            if total_retries > 0 {
                return;
            }
        }
        panic!("no compare_exchange ever lost a race: the retry path was not exercised");
    }

    type Hook = Box<dyn FnOnce() + Send>;

    /// A clock that advances 1 ns per reading and, at chosen readings, lets
    /// another caller run its whole acquire right after the reading was taken: a
    /// deterministic stand-in for another process overtaking this caller.
    struct Interleaving {
        inner: FakeClock,
        readings: std::sync::atomic::AtomicU32,
        hooks: std::sync::Mutex<Vec<(u32, Hook)>>,
    }

    impl Clock for Interleaving {
        fn monotonic_ns(&self) -> u64 {
            self.now().0
        }
        fn unix_ns(&self) -> i128 {
            self.now().1
        }
        fn now(&self) -> (u64, i128) {
            let reading = self.inner.now();
            self.inner.advance_ns(1).unwrap();
            let n = self.readings.fetch_add(1, SeqCst) + 1;
            let hook = {
                let mut hooks = self.hooks.lock().unwrap();
                let due = hooks.iter().position(|(at, _)| *at == n);
                due.map(|i| hooks.remove(i).1)
            };
            if let Some(hook) = hook {
                hook();
            }
            reading
        }
    }

    /// Callers 1..=n on a full bucket of 3 (a long interval: no refill to speak
    /// of), caller k+1 running inside the clock reading number `at[k]`. Returns
    /// the `remaining` each admitted caller saw, sorted; `None` if the callers
    /// before were done before one of those readings.
    fn interleaved(at: &[u32]) -> Option<Vec<u64>> {
        let clock = Arc::new(Interleaving {
            inner: FakeClock::default(),
            readings: 0.into(),
            hooks: std::sync::Mutex::new(Vec::new()),
        });
        let l = Arc::new(RateLimiter::with_clock(None, 4, clock.clone()).unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let acquire = {
            let (l, seen) = (Arc::clone(&l), Arc::clone(&seen));
            move || {
                let d = l.acquire_slot(0, Some(3), 1e6, 1).unwrap();
                assert!(d.allowed);
                seen.lock().unwrap().push(d.remaining.unwrap());
            }
        };
        for &n in at {
            let acquire = acquire.clone();
            clock.hooks.lock().unwrap().push((n, Box::new(acquire)));
        }
        acquire();
        if !clock.hooks.lock().unwrap().is_empty() {
            return None;
        }
        let mut all = seen.lock().unwrap().clone();
        all.sort_unstable();
        Some(all)
    }

    /// Whatever the interleaving, each admitted request sees its own place in the
    /// count (2, then 1, then 0), never the same number twice.
    #[test]
    fn each_admission_sees_its_own_place_whatever_the_interleaving() {
        // Two callers: the second runs between the first one's clock reading and
        // its compare-and-swap (or, in the old order, before its TAT load).
        assert_eq!(interleaved(&[1]), Some(vec![1, 2]));
        // Three callers, the third at each clock reading the first two make.
        let mut cases = 0;
        for b in 2..=8 {
            if let Some(seen) = interleaved(&[1, b]) {
                assert_eq!(seen, [0, 1, 2], "hooks at readings 1 and {b}");
                cases += 1;
            }
        }
        assert!(cases >= 2, "{cases}");
    }

    /// A caller that sees the new quota's fingerprint admits under it at once; the
    /// caller that published the fingerprint must not then reset the bucket over
    /// that admission (a fresh bucket of 3 would admit 4, and two callers would
    /// both see `remaining` 2).
    #[test]
    fn adopting_a_quota_never_erases_an_admission_made_under_it() {
        let (_clock, l) = fake();
        l.claim_slot(0, 7).unwrap(); // a fresh key: no quota in its bucket yet
        let q = Quota::new(3, 1e6).unwrap();
        let entry = l.region.entry(0).unwrap();
        let mut inside = None;
        RateLimiter::adopt_quota_with(entry, &q, || {
            inside = Some(l.acquire_slot(0, Some(3), 1e6, 1).unwrap());
        });
        let (first, _) = l.acquire_entry(entry, &q, 1).unwrap();
        assert_eq!(inside.unwrap().remaining, Some(2));
        assert_eq!((first.allowed, first.remaining), (true, Some(1)));
        let third = l.acquire_slot(0, Some(3), 1e6, 1).unwrap();
        assert_eq!((third.allowed, third.remaining), (true, Some(0)));
        assert!(
            !l.acquire_slot(0, Some(3), 1e6, 1).unwrap().allowed,
            "3 per interval, not 4"
        );
        // A quota change still starts the bucket full under the new quota.
        let d = l.acquire_slot(0, Some(5), 1e6, 1).unwrap();
        assert_eq!((d.allowed, d.remaining), (true, Some(4)));
    }

    /// An exact token bucket in rationals: tokens are kept multiplied by `I_ns`.
    struct Reference {
        r: u128,
        i: u128,
        scaled_tokens: u128,
        last_ns: u128,
    }

    impl Reference {
        fn new(r: u64, i_ns: u64, now_ns: u64) -> Self {
            let (r, i) = (u128::from(r), u128::from(i_ns));
            Self {
                r,
                i,
                scaled_tokens: r * i,
                last_ns: u128::from(now_ns),
            }
        }

        /// (allowed, remaining, reset, retry_after) for `n` at `now`.
        fn step(&mut self, now_ns: u64, unix_ns: i128, n: u64) -> (bool, u64, i64, Option<f64>) {
            let (now, n) = (u128::from(now_ns), u128::from(n));
            self.scaled_tokens =
                (self.scaled_tokens + (now - self.last_ns) * self.r).min(self.r * self.i);
            self.last_ns = now;
            let allowed = n <= self.r && self.scaled_tokens >= n * self.i;
            let retry_after = (!allowed && n <= self.r)
                .then(|| (n * self.i - self.scaled_tokens) as f64 / (self.r as f64 * 1e9));
            if allowed {
                self.scaled_tokens -= n * self.i;
            }
            // Full again after (R·I − tokens·I) / R ns; reset = ceil(unix + that, in s).
            let num = unix_ns * self.r as i128 + (self.r * self.i - self.scaled_tokens) as i128;
            let den = self.r as i128 * 1_000_000_000;
            let reset = num.div_euclid(den) + i128::from(num.rem_euclid(den) != 0);
            (
                allowed,
                (self.scaled_tokens / self.i) as u64,
                reset as i64,
                retry_after,
            )
        }
    }

    fn ops(max_gap_ns: u64, r: u64) -> impl Strategy<Value = Vec<(u64, u64)>> {
        prop::collection::vec(
            (
                0..=max_gap_ns,
                prop_oneof![8 => 1..=r.min(3), 2 => 1..=r + 1],
            ),
            1..120,
        )
    }

    fn case() -> impl Strategy<Value = (u64, u64, Vec<(u64, u64)>)> {
        (1u64..=200, 1u64..=100_000).prop_flat_map(|(r, interval_ms)| {
            let i_ns = interval_ms * 1_000_000;
            (Just(r), Just(interval_ms), ops(3 * i_ns / r + 1, r))
        })
    }

    proptest! {
        /// Exact quotas agree with the rational token bucket on every decision and field.
        #[test]
        fn gcra_matches_an_exact_token_bucket((r, interval_ms, ops) in case()) {
            let quota = Quota::new(r, interval_ms as f64 / 1e3).unwrap();
            prop_assume!(quota.is_exact());
            let (clock, l) = fake();
            let mut reference = Reference::new(r, quota.interval_ns(), clock.monotonic_ns());
            for (gap, cost) in ops {
                clock.advance_ns(gap).unwrap();
                let d = l.acquire("p", Some(r), interval_ms as f64 / 1e3, cost).unwrap();
                let (allowed, remaining, reset, retry) = reference.step(clock.monotonic_ns(), clock.unix_ns(), cost);
                prop_assert_eq!(d.allowed, allowed);
                prop_assert_eq!(d.remaining, Some(remaining));
                prop_assert_eq!(d.reset, Some(reset));
                match (d.retry_after, retry) {
                    (Some(a), Some(b)) => prop_assert!((a - b).abs() <= 1e-12 * b.max(1.0), "{} vs {}", a, b),
                    (a, b) => prop_assert_eq!(a, b),
                }
            }
        }

        /// Every quota, exact or rounded: in any window [a, b] of admissions, at most
        /// R + R·(b − a)/I cells are admitted.
        #[test]
        fn no_window_admits_more_than_the_quota((r, interval_ms, ops) in case()) {
            let (clock, l) = fake();
            let i_ns = u128::from(interval_ms) * 1_000_000;
            let mut admitted: Vec<(u128, u128)> = Vec::new();
            for (gap, cost) in ops {
                clock.advance_ns(gap).unwrap();
                if l.acquire("p", Some(r), interval_ms as f64 / 1e3, cost).unwrap().allowed {
                    admitted.push((u128::from(clock.monotonic_ns()), u128::from(cost)));
                }
            }
            let r = u128::from(r);
            for a in 0..admitted.len() {
                let mut cells = 0;
                for b in a..admitted.len() {
                    cells += admitted[b].1;
                    let span = admitted[b].0 - admitted[a].0;
                    prop_assert!(cells * i_ns <= r * i_ns + r * span, "window {}..{}", a, b);
                }
            }
        }
    }
}
