//! The pure decision math of the Generic Cell Rate Algorithm, as in governor
//! (`boinkor-net/governor`, `gcra.rs`): a bucket is one number, its theoretical
//! arrival time `tat`; with emission interval `t` and burst tolerance `tau`,
//! `n` cells are admitted at `now` iff `max(tat, now) + n·t − now ≤ tau`, and
//! then `tat` becomes `max(tat, now) + n·t`.
//!
//! Product semantics: R requests per I seconds, capacity R, refilled
//! continuously at R/I per second. So `t = I/R` and `tau = R·t` (= I), and a full
//! bucket admits exactly R at once.
//!
//! # Exact integer time
//!
//! Time is counted in units of `1/s` ns, with `s = R / gcd(R, I_ns)`; then
//! `t = I_ns / gcd(R, I_ns)` units exactly and `tau = I_ns·s` units, so every
//! decision is exact against nanosecond time (a reference token bucket in exact
//! rationals agrees decision for decision; see the tests).
//!
//! When `s` would exceed 64 (an awkward R, e.g. a prime above 64 with I in whole
//! seconds), or would not leave room in a `u64` for long intervals, `s` is capped
//! and `t = ceil(I_ns·s / R)`: the rate is rounded *down* by less than one unit
//! per request, so the limiter may refuse a hair early but never over-admits,
//! and `tau = R·t` still admits exactly R from a full bucket.

use std::cell::Cell;

use crate::clock::NS_PER_SEC;
use crate::error::{Error, Result};

/// Ten years, the longest interval accepted.
pub const MAX_INTERVAL_SECS: f64 = 10.0 * 365.25 * 86_400.0;
/// Above this R the fallback's `tau = R·t` could outgrow the room kept below.
pub const MAX_REQUESTS: u64 = u32::MAX as u64;
const MAX_SCALE: u64 = 64;
/// Monotonic time (ns since boot) the scale leaves room for: `tat ≤ now + tau`
/// must fit a `u64` in units, i.e. `(HORIZON + 2·I)·s < 2^64`. 2^57 ns is 4.5
/// years of uptime at s = 64; longer intervals get a smaller s (a larger horizon).
const HORIZON_NS: u64 = 1 << 57;

/// A validated limit: R per I, with its unit scale, `t`, `tau` and fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    requests: u64,
    interval_ns: u64,
    /// Time units per nanosecond.
    scale: u64,
    /// Emission interval, in units.
    t: u64,
    /// Burst tolerance (`R·t`), in units.
    tau: u64,
    fingerprint: u64,
}

impl Quota {
    pub fn new(requests: u64, interval_secs: f64) -> Result<Self> {
        let interval_ns = interval_to_ns(interval_secs)?;
        if !(1..=MAX_REQUESTS).contains(&requests) {
            return Err(Error::invalid(format!(
                "requests must be between 1 and {MAX_REQUESTS}, got {requests}"
            )));
        }
        // u64 throughout (u128 division is slow and this runs per call): every
        // value here is bounded by the room kept in a u64 (see HORIZON_NS).
        let (r, i) = (requests, interval_ns);
        let room = u64::MAX - (MAX_REQUESTS << 1);
        let max_scale = (room / (HORIZON_NS + 2 * i)).min(MAX_SCALE);
        let g = gcd(r, i);
        let (scale, t) = if r / g <= max_scale {
            (r / g, i / g)
        } else {
            (max_scale, (i * max_scale).div_ceil(r))
        };
        let tau = r.checked_mul(t).expect("bounded by the choice of scale");
        Ok(Self {
            requests,
            interval_ns,
            scale,
            t,
            tau,
            fingerprint: fingerprint(requests, interval_ns),
        })
    }

    /// `None` when `requests` is `None`: no limit, and the interval is ignored.
    /// Callers pass the same limit call after call, so the last quota built on
    /// each thread is kept: building one costs several 64-bit divisions.
    #[inline(always)]
    pub fn optional(requests: Option<u64>, interval_secs: f64) -> Result<Option<Self>> {
        thread_local! {
            static LAST: Cell<Option<(u64, u64, Quota)>> = const { Cell::new(None) };
        }
        let Some(requests) = requests else {
            return Ok(None);
        };
        let key = (requests, interval_secs.to_bits());
        LAST.with(|last| match last.get() {
            Some((r, i, q)) if (r, i) == key => Ok(Some(q)),
            _ => {
                let q = Self::new(requests, interval_secs)?;
                last.set(Some((key.0, key.1, q)));
                Ok(Some(q))
            }
        })
    }

    pub fn requests(&self) -> u64 {
        self.requests
    }
    pub fn interval_ns(&self) -> u64 {
        self.interval_ns
    }
    /// True when `t` is exactly `I/R` (no rounding fallback).
    pub fn is_exact(&self) -> bool {
        u128::from(self.t) * u128::from(self.requests)
            == u128::from(self.interval_ns) * u128::from(self.scale)
    }
    /// Identifies R and I in the shared region; never 0 (0 marks "no quota yet").
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

fn interval_to_ns(interval_secs: f64) -> Result<u64> {
    let ns = (interval_secs * NS_PER_SEC as f64).round();
    if !(interval_secs > 0.0 && interval_secs <= MAX_INTERVAL_SECS && ns >= 1.0) {
        return Err(Error::invalid(format!(
            "interval must be more than 0 and at most 10 years (in seconds), got {interval_secs}"
        )));
    }
    Ok(ns as u64)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The 64-bit finaliser of MurmurHash3: spreads every input bit over the output.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn fingerprint(requests: u64, interval_ns: u64) -> u64 {
    mix64(mix64(requests) ^ interval_ns) | 1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    RateLimited,
    CostExceedsLimit,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RateLimited => "rate_limited",
            Reason::CostExceedsLimit => "cost_exceeds_limit",
        }
    }
}

/// The limiter's answer; a refusal is a value, not an error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// R; `None` when unlimited.
    pub limit: Option<u64>,
    /// Whole requests that could be admitted right now, after this decision.
    pub remaining: Option<u64>,
    /// Unix seconds, rounded up, when the bucket is full again.
    pub reset: Option<i64>,
    /// Seconds until this request would be admitted (refusals only; `None` when
    /// it never would, i.e. cost above the limit). With the rounding fallback
    /// (see the module doc) it can exceed the exact value by a few nanoseconds.
    pub retry_after: Option<f64>,
    pub reason: Option<Reason>,
}

impl Decision {
    pub const UNLIMITED: Decision = Decision {
        allowed: true,
        limit: None,
        remaining: None,
        reset: None,
        retry_after: None,
        reason: None,
    };
}

/// Decides `cost` cells at `now_ns` against a bucket whose stored TAT is `tat`.
/// Returns the decision and, when admitted, the TAT to store (a refusal writes nothing).
///
/// Only `now` in units needs 128 bits; everything relative to `now` is at most
/// `2·tau` and stays in `u64` (divisions of `u128` would double the cost).
#[inline(always)]
pub fn decide(
    q: &Quota,
    tat: u64,
    now_ns: u64,
    unix_ns: i128,
    cost: u64,
) -> Result<(Decision, Option<u64>)> {
    let (s, t, tau) = (q.scale, q.t, q.tau);
    let now = u128::from(now_ns) * u128::from(s);
    // A TAT is never legitimately beyond `now + tau` (the limiter reads `now`
    // after loading the TAT, so never before the TAT's writer read its own);
    // clamping bounds the damage of a TAT written under another quota during a
    // quota change (see `limiter`) to "bucket empty".
    // `backlog` = max(tat, now) − now, in units: how far the bucket is from full.
    let backlog = (u128::from(tat).clamp(now, now + u128::from(tau)) - now) as u64;
    let unix_ns = i64::try_from(unix_ns).unwrap_or(i64::MAX);
    if cost > q.requests {
        return Ok((
            refused(q, backlog, unix_ns, Reason::CostExceedsLimit, None),
            None,
        ));
    }
    let after = backlog + cost * t; // cost·t ≤ tau
    if after > tau {
        let retry_after = (after - tau) as f64 / (s as f64 * NS_PER_SEC as f64);
        let decision = refused(q, backlog, unix_ns, Reason::RateLimited, Some(retry_after));
        return Ok((decision, None));
    }
    let stored = u64::try_from(now + u128::from(after)).map_err(|_| {
        Error::Region("the monotonic clock is beyond the range this quota can represent".into())
    })?;
    let decision = Decision {
        allowed: true,
        limit: Some(q.requests),
        remaining: Some((tau - after) / t),
        reset: Some(reset(q, unix_ns, after)),
        retry_after: None,
        reason: None,
    };
    Ok((decision, Some(stored)))
}

/// Kept out of line: the admitting path is the one to keep short.
#[inline(never)]
fn refused(
    q: &Quota,
    backlog: u64,
    unix_ns: i64,
    reason: Reason,
    retry_after: Option<f64>,
) -> Decision {
    Decision {
        allowed: false,
        limit: Some(q.requests),
        remaining: Some((q.tau - backlog) / q.t),
        reset: Some(reset(q, unix_ns, backlog)),
        retry_after,
        reason: Some(reason),
    }
}

/// Unix seconds, rounded up, when a bucket `backlog` units from full is full.
#[inline(always)]
fn reset(q: &Quota, unix_ns: i64, backlog: u64) -> i64 {
    // s = 1 for every R that divides I in ns (most limits): skip the division.
    let backlog_ns = if q.scale == 1 {
        backlog
    } else {
        backlog.div_ceil(q.scale)
    };
    let full_at = unix_ns.saturating_add(backlog_ns as i64);
    full_at.div_euclid(NS_PER_SEC as i64) + i64::from(full_at.rem_euclid(NS_PER_SEC as i64) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_scale_for_common_quotas() {
        let q = Quota::new(100, 60.0).unwrap();
        assert_eq!((q.scale, q.t, q.tau), (1, 600_000_000, 60_000_000_000));
        let q = Quota::new(3, 1.0).unwrap();
        assert_eq!((q.scale, q.t, q.tau), (3, 1_000_000_000, 3_000_000_000));
        assert!(q.is_exact());
    }

    #[test]
    fn awkward_r_falls_back_conservatively_but_keeps_the_burst() {
        let q = Quota::new(67, 1.0).unwrap();
        assert_eq!(q.scale, 64);
        assert!(!q.is_exact());
        assert_eq!(q.t, (64_000_000_000u64).div_ceil(67));
        assert_eq!(q.tau, 67 * q.t);
        // Rate never above R/I: R·t ≥ I_ns·s.
        assert!(u128::from(q.t) * 67 >= 1_000_000_000 * 64);
    }

    #[test]
    fn ten_year_intervals_fit_with_a_smaller_scale() {
        let q = Quota::new(MAX_REQUESTS, MAX_INTERVAL_SECS).unwrap();
        assert!(q.scale >= 1);
        let q = Quota::new(7, MAX_INTERVAL_SECS).unwrap();
        assert!(q.is_exact());
    }

    #[test]
    fn invalid_quotas_are_refused() {
        assert!(Quota::new(0, 1.0).is_err());
        assert!(Quota::new(MAX_REQUESTS + 1, 1.0).is_err());
        for bad in [
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            MAX_INTERVAL_SECS * 1.01,
            1e-10,
        ] {
            assert!(Quota::new(1, bad).is_err(), "{bad}");
            assert_eq!(
                Quota::optional(None, bad).unwrap(),
                None,
                "unlimited ignores the interval"
            );
        }
    }

    #[test]
    fn fingerprints_differ_by_quota_and_are_never_zero() {
        let a = Quota::new(10, 1.0).unwrap().fingerprint();
        let b = Quota::new(10, 2.0).unwrap().fingerprint();
        let c = Quota::new(11, 1.0).unwrap().fingerprint();
        assert!(a != b && b != c && a != c);
        assert!(a & b & c & 1 == 1);
    }
}
