//! Time sources. The limiter reads a monotonic clock that is system-wide
//! (`CLOCK_MONOTONIC`), so instants taken by different processes sharing one
//! region are comparable; wall-clock time is only used to express `reset`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::error::{Error, Result};

pub const NS_PER_SEC: u64 = 1_000_000_000;

pub trait Clock: Send + Sync {
    /// Nanoseconds of `CLOCK_MONOTONIC` (or the fake equivalent).
    fn monotonic_ns(&self) -> u64;
    /// Nanoseconds since the Unix epoch.
    fn unix_ns(&self) -> i128;
    /// Both at once (the limiter reads this once per decision).
    fn now(&self) -> (u64, i128) {
        (self.monotonic_ns(), self.unix_ns())
    }
}

/// How often `MonotonicClock::now` re-reads the wall clock.
const CALIBRATE_EVERY_NS: u64 = NS_PER_SEC;

/// The real clocks of the machine. `now` derives Unix time from the monotonic
/// reading and an offset re-read from `CLOCK_REALTIME` at most once a second:
/// one clock read per decision instead of two, and `reset` only needs seconds.
#[derive(Debug)]
pub struct MonotonicClock {
    /// Unix ns minus monotonic ns, as of `calibrated_at`.
    offset_ns: AtomicI64,
    calibrated_at: AtomicU64,
}

impl MonotonicClock {
    pub fn new() -> Self {
        let clock = Self {
            offset_ns: AtomicI64::new(0),
            calibrated_at: AtomicU64::new(0),
        };
        clock.calibrate(clock.monotonic_ns());
        clock
    }

    fn calibrate(&self, mono: u64) -> i128 {
        let offset = self.unix_ns() - i128::from(mono);
        // Racing calibrations store offsets microseconds apart: either is fine.
        self.offset_ns.store(offset as i64, Ordering::Relaxed);
        self.calibrated_at.store(mono, Ordering::Relaxed);
        offset
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

fn clock_gettime_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clock ids exist on Linux.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    i128::from(ts.tv_sec) * i128::from(NS_PER_SEC) + i128::from(ts.tv_nsec)
}

impl Clock for MonotonicClock {
    fn monotonic_ns(&self) -> u64 {
        clock_gettime_ns(libc::CLOCK_MONOTONIC) as u64
    }
    fn unix_ns(&self) -> i128 {
        clock_gettime_ns(libc::CLOCK_REALTIME)
    }
    #[inline(always)]
    fn now(&self) -> (u64, i128) {
        let mono = self.monotonic_ns();
        let offset =
            if mono.wrapping_sub(self.calibrated_at.load(Ordering::Relaxed)) < CALIBRATE_EVERY_NS {
                i128::from(self.offset_ns.load(Ordering::Relaxed))
            } else {
                self.calibrate(mono)
            };
        (mono, i128::from(mono) + offset)
    }
}

/// A clock for tests: time moves only through `advance`. The Unix time moves with
/// the monotonic time. Atomics make it `Send + Sync`, so one fake clock can be
/// shared by a limiter, a key table and the test driving them.
#[derive(Debug)]
pub struct FakeClock {
    monotonic_ns: AtomicU64,
    /// Unix ns minus monotonic ns, fixed at construction.
    unix_offset_ns: i128,
}

impl FakeClock {
    pub fn new(monotonic_ns: u64, unix: f64) -> Result<Self> {
        if !unix.is_finite() {
            return Err(Error::invalid("unix must be a finite number of seconds"));
        }
        let unix_ns = (unix * NS_PER_SEC as f64).round() as i128;
        Ok(Self {
            monotonic_ns: AtomicU64::new(monotonic_ns),
            unix_offset_ns: unix_ns - i128::from(monotonic_ns),
        })
    }

    pub fn advance(&self, seconds: f64) -> Result<()> {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return Err(Error::invalid(format!(
                "cannot advance a clock by {seconds} seconds"
            )));
        }
        let ns = (seconds * NS_PER_SEC as f64).round();
        if ns >= u64::MAX as f64 {
            return Err(Error::invalid("advance is too large"));
        }
        self.advance_ns(ns as u64)
    }

    pub fn advance_ns(&self, ns: u64) -> Result<()> {
        self.monotonic_ns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(ns)
            })
            .map(drop)
            .map_err(|_| Error::invalid("the fake monotonic clock would overflow"))
    }

    pub fn unix(&self) -> f64 {
        self.unix_ns() as f64 / NS_PER_SEC as f64
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new(NS_PER_SEC, 1_700_000_000.0).expect("finite")
    }
}

impl Clock for FakeClock {
    fn monotonic_ns(&self) -> u64 {
        self.monotonic_ns.load(Ordering::Acquire)
    }
    fn unix_ns(&self) -> i128 {
        self.now().1
    }
    fn now(&self) -> (u64, i128) {
        let mono = self.monotonic_ns();
        (mono, i128::from(mono) + self.unix_offset_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_told() {
        let c = FakeClock::default();
        assert_eq!(c.monotonic_ns(), 1_000_000_000);
        assert_eq!(c.unix_ns(), 1_700_000_000 * 1_000_000_000);
        c.advance(1.5).unwrap();
        c.advance_ns(7).unwrap();
        assert_eq!(c.monotonic_ns(), 2_500_000_007);
        assert_eq!(c.unix_ns(), 1_700_000_001_500_000_007);
        assert!(c.advance(-1.0).is_err());
        assert!(c.advance(f64::NAN).is_err());
        assert!(c.advance_ns(u64::MAX).is_err());
    }

    #[test]
    fn monotonic_clock_is_monotonic_and_near_wall_time() {
        let c = MonotonicClock::new();
        let a = c.monotonic_ns();
        let (b, unix) = c.now();
        assert!(b >= a);
        assert!(unix > 1_700_000_000 * i128::from(NS_PER_SEC));
        // The derived Unix time stays within a millisecond of a fresh reading.
        assert!(
            (c.unix_ns() - unix).abs() < 1_000_000,
            "{}",
            c.unix_ns() - unix
        );
    }
}
