//! `agentrouter._core`: thin PyO3 bindings over `agentrouter-core`. Each module
//! registers its own classes; the contract is `python/agentrouter/_core.pyi`.

use pyo3::prelude::*;

mod decision;
mod error;
mod keys;
mod limiter;
mod table;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // setattr, not add: `add` would also list it in `__all__`.
    m.setattr("__version__", env!("CARGO_PKG_VERSION"))?;
    error::init(m)?;
    keys::init(m)?;
    limiter::init(m)?;
    table::init(m)
}
