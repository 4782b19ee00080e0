//! `KeyRecord` and `KeyTable`, with the `AUTH_*` constants.

use std::sync::Arc;

use agentrouter_core::{self as core, Auth, Error};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::decision::Decision;
use crate::error::{count, CoreResult};
use crate::keys::Digester;
use crate::limiter::RateLimiter;

#[pyclass(frozen, module = "agentrouter._core")]
pub struct KeyRecord(core::KeyRecord);

#[pymethods]
impl KeyRecord {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: String,
        slot: u32,
        tag: u64,
        requests: Option<i64>,
        interval: f64,
        expires_at: Option<f64>,
        scope: String,
    ) -> CoreResult<Self> {
        let requests = requests.map(|r| count("requests", r)).transpose()?;
        let record = core::KeyRecord::new(id, slot, tag, requests, interval, expires_at, scope)?;
        Ok(Self(record))
    }

    #[getter]
    fn id(&self) -> &str {
        &self.0.id
    }
    #[getter]
    fn slot(&self) -> u32 {
        self.0.slot
    }
    #[getter]
    fn tag(&self) -> u64 {
        self.0.tag
    }
    #[getter]
    fn requests(&self) -> Option<u64> {
        self.0.requests
    }
    #[getter]
    fn interval(&self) -> f64 {
        self.0.interval
    }
    #[getter]
    fn expires_at(&self) -> Option<f64> {
        self.0.expires_at
    }
    #[getter]
    fn scope(&self) -> &str {
        &self.0.scope
    }

    fn __repr__(&self) -> String {
        let r = &self.0;
        format!(
            "KeyRecord(id={:?}, slot={}, scope={:?})",
            r.id, r.slot, r.scope
        )
    }
}

/// The table keeps the Python `KeyRecord` objects it was given, so `authenticate`
/// and `check` return those objects (a reference count, no allocation).
struct PyRecord(Py<KeyRecord>);

impl core::HoldsRecord for PyRecord {
    fn record(&self) -> &core::KeyRecord {
        &self.0.get().0
    }
}

fn record(py: Python<'_>, entry: Option<&PyRecord>) -> Option<Py<KeyRecord>> {
    entry.map(|e| e.0.clone_ref(py))
}

fn digest_of(digest: &Bound<'_, PyBytes>) -> core::Result<core::Digest> {
    digest.as_bytes().try_into().map_err(|_| {
        Error::invalid(format!(
            "a digest is 32 bytes, got {}",
            digest.as_bytes().len()
        ))
    })
}

/// digest → KeyRecord for this process, and deleted keys' digests; lock-free
/// reads, atomic swaps.
#[pyclass(frozen, module = "agentrouter._core")]
pub struct KeyTable(core::KeyTable<PyRecord>);

#[pymethods]
impl KeyTable {
    #[new]
    fn new(digester: &Bound<'_, Digester>, limiter: &Bound<'_, RateLimiter>) -> Self {
        Self(core::KeyTable::new(
            digester.get().0.clone(),
            Arc::clone(&limiter.get().0),
        ))
    }

    fn __len__(&self) -> usize {
        self.0.len()
    }

    #[getter]
    fn generation(&self) -> u64 {
        self.0.generation()
    }

    #[getter]
    fn tombstones(&self) -> usize {
        self.0.tombstones()
    }

    #[pyo3(signature = (entries, generation, deleted = Vec::new()))]
    fn replace_all(
        &self,
        entries: Vec<(Bound<'_, PyBytes>, Bound<'_, KeyRecord>)>,
        generation: u64,
        deleted: Vec<Bound<'_, PyBytes>>,
    ) -> CoreResult<()> {
        let entries = entries
            .into_iter()
            .map(|(digest, record)| Ok((digest_of(&digest)?, PyRecord(record.unbind()))))
            .collect::<core::Result<Vec<_>>>()?;
        let deleted = deleted
            .iter()
            .map(digest_of)
            .collect::<core::Result<Vec<_>>>()?;
        Ok(self.0.replace_all(entries, deleted, generation)?)
    }

    fn authenticate(&self, py: Python<'_>, raw: &str) -> (u8, Option<Py<KeyRecord>>) {
        self.0
            .authenticate_with(raw, |auth, entry| (auth as u8, record(py, entry)))
    }

    #[pyo3(signature = (raw, cost = 1))]
    fn check(
        &self,
        py: Python<'_>,
        raw: &str,
        cost: i64,
    ) -> CoreResult<(u8, Option<Py<KeyRecord>>, Option<Decision>)> {
        Ok(self
            .0
            .check_with(raw, count("cost", cost)?, |auth, entry, decision| {
                (auth as u8, record(py, entry), decision.map(Decision))
            })?)
    }
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    for (name, auth) in [
        ("AUTH_OK", Auth::Ok),
        ("AUTH_MALFORMED", Auth::Malformed),
        ("AUTH_UNKNOWN", Auth::Unknown),
        ("AUTH_REVOKED", Auth::Revoked),
        ("AUTH_EXPIRED", Auth::Expired),
        ("AUTH_STALE", Auth::Stale),
    ] {
        m.add(name, auth as u8)?;
    }
    m.add_class::<KeyRecord>()?;
    m.add_class::<KeyTable>()
}
