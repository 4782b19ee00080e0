//! Key format, display prefix and digests.

use agentrouter_core as core;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::CoreResult;

#[pyfunction]
fn generate_key() -> CoreResult<String> {
    Ok(core::generate_key()?)
}

#[pyfunction]
fn is_well_formed(raw: &str) -> bool {
    core::is_well_formed(raw)
}

#[pyfunction]
fn display_prefix(raw: &str) -> String {
    core::display_prefix(raw)
}

/// HMAC-SHA256 under the server secret (at least 32 bytes).
#[pyclass(frozen, module = "agentrouter._core")]
pub struct Digester(pub core::Digester);

#[pymethods]
impl Digester {
    #[new]
    fn new(secret: &[u8]) -> CoreResult<Self> {
        Ok(Self(core::Digester::new(secret)?))
    }

    fn digest<'py>(&self, py: Python<'py>, raw: &str) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.0.digest(raw))
    }
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("KEY_PREFIX", core::KEY_PREFIX)?;
    m.add("KEY_LENGTH", core::KEY_LENGTH)?;
    m.add_function(wrap_pyfunction!(generate_key, m)?)?;
    m.add_function(wrap_pyfunction!(is_well_formed, m)?)?;
    m.add_function(wrap_pyfunction!(display_prefix, m)?)?;
    m.add_class::<Digester>()
}
