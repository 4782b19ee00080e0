//! `RateLimiter` and `FakeClock` (`Decision` is in `decision`).

use std::path::PathBuf;
use std::sync::Arc;

use agentrouter_core::{self as core, Clock, Error};
use pyo3::prelude::*;

use crate::decision::Decision;
use crate::error::{count, CoreError, CoreResult};

/// A clock for tests: time moves only when told to.
#[pyclass(frozen, module = "agentrouter._core")]
pub struct FakeClock(Arc<core::FakeClock>);

#[pymethods]
impl FakeClock {
    #[new]
    #[pyo3(signature = (monotonic_ns = 1_000_000_000, unix = 1_700_000_000.0))]
    fn new(monotonic_ns: u64, unix: f64) -> CoreResult<Self> {
        Ok(Self(Arc::new(core::FakeClock::new(monotonic_ns, unix)?)))
    }

    fn advance(&self, seconds: f64) -> CoreResult<()> {
        Ok(self.0.advance(seconds)?)
    }

    fn advance_ns(&self, ns: i64) -> CoreResult<()> {
        let ns = u64::try_from(ns)
            .map_err(|_| Error::invalid(format!("cannot advance a clock by {ns} ns")))?;
        Ok(self.0.advance_ns(ns)?)
    }

    #[getter]
    fn monotonic_ns(&self) -> u64 {
        self.0.monotonic_ns()
    }

    #[getter]
    fn unix(&self) -> f64 {
        self.0.unix()
    }

    fn __repr__(&self) -> String {
        format!(
            "FakeClock(monotonic_ns={}, unix={})",
            self.0.monotonic_ns(),
            self.0.unix()
        )
    }
}

/// GCRA buckets, one `AtomicU64` each, in a memory map.
#[pyclass(frozen, module = "agentrouter._core")]
pub struct RateLimiter(pub Arc<core::RateLimiter>);

impl RateLimiter {
    /// A Python slot index: negative or too large is an `IndexError`.
    fn slot(&self, slot: i64) -> CoreResult<u32> {
        let capacity = self.0.capacity();
        Ok(u32::try_from(slot).map_err(|_| Error::SlotOutOfRange { slot, capacity })?)
    }
}

fn requests(requests: Option<i64>) -> CoreResult<Option<u64>> {
    requests.map(|r| count("requests", r)).transpose()
}

#[pymethods]
impl RateLimiter {
    #[new]
    // PyO3 cannot render a `const` or `Some(..)` default: spell the signatures out.
    #[pyo3(
        signature = (path = None, *, capacity = core::DEFAULT_CAPACITY, clock = None),
        text_signature = "(path=None, *, capacity=65536, clock=None)"
    )]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        capacity: u32,
        clock: Option<&Bound<'_, FakeClock>>,
    ) -> CoreResult<Self> {
        let clock: Arc<dyn Clock> = match clock {
            Some(c) => c.get().0.clone(),
            None => Arc::new(core::MonotonicClock::new()),
        };
        // Opening a file may wait on another process's init lock: let Python run meanwhile.
        let limiter =
            py.detach(|| core::RateLimiter::with_clock(path.as_deref(), capacity, clock))?;
        Ok(Self(Arc::new(limiter)))
    }

    #[getter]
    fn path(&self) -> Option<String> {
        self.0.path().map(|p| p.to_string_lossy().into_owned())
    }

    #[getter]
    fn capacity(&self) -> u32 {
        self.0.capacity()
    }

    // The acquires build their `Decision` object themselves instead of returning
    // `CoreResult<Decision>`: PyO3 would move the decision through its generic
    // return path, and that copy stalled on store forwarding (seen with `perf`).
    #[pyo3(
        signature = (key, requests = Some(100), interval = 60.0, cost = 1),
        text_signature = "($self, key, requests=100, interval=60.0, cost=1)"
    )]
    fn acquire<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        requests: Option<i64>,
        interval: f64,
        cost: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limit = self::requests(requests)?;
        let cost = count("cost", cost)?;
        let decision = self
            .0
            .acquire(key, limit, interval, cost)
            .map_err(CoreError::from)?;
        Decision(decision).into_pyobject(py)
    }

    fn generation(&self) -> u64 {
        self.0.generation()
    }

    fn bump_generation(&self) -> u64 {
        self.0.bump_generation()
    }

    fn claim_slot(&self, slot: i64, tag: u64) -> CoreResult<()> {
        Ok(self.0.claim_slot(self.slot(slot)?, tag)?)
    }

    fn revoke_slot(&self, slot: i64, tag: u64) -> CoreResult<bool> {
        Ok(self.0.revoke_slot(self.slot(slot)?, tag)?)
    }

    fn slot_is_live(&self, slot: i64, tag: u64) -> CoreResult<bool> {
        Ok(self.0.slot_is_live(self.slot(slot)?, tag)?)
    }

    #[pyo3(signature = (slot, requests, interval, cost = 1))]
    fn acquire_slot<'py>(
        &self,
        py: Python<'py>,
        slot: i64,
        requests: Option<i64>,
        interval: f64,
        cost: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limit = self::requests(requests)?;
        let (slot, cost) = (self.slot(slot)?, count("cost", cost)?);
        let decision = self
            .0
            .acquire_slot(slot, limit, interval, cost)
            .map_err(CoreError::from)?;
        Decision(decision).into_pyobject(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "RateLimiter(path={:?}, capacity={})",
            self.path(),
            self.0.capacity()
        )
    }
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FakeClock>()?;
    crate::decision::init(m)?;
    m.add_class::<RateLimiter>()
}
