//! The one conversion from core errors to Python exceptions.
//!
//! `CoreError` is a local newtype because the orphan rule forbids
//! `impl From<agentrouter_core::Error> for PyErr` outside both crates; methods
//! return `CoreResult` and `?` converts core errors into it.

use agentrouter_core::Error;
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::{create_exception, import_exception};

// The root of the project's own errors is a Python class; the native errors
// derive from it so that each edge maps the whole family in one place. Its type
// object is imported from `agentrouter.errors` the first time one is raised.
import_exception!(agentrouter.errors, AgentRouterError);

create_exception!(
    agentrouter._core,
    LimiterError,
    AgentRouterError,
    "The shared region cannot be created, opened or used (bad file, full table)."
);

pub struct CoreError(Error);
pub type CoreResult<T> = Result<T, CoreError>;

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        CoreError(e)
    }
}

impl From<CoreError> for PyErr {
    fn from(CoreError(e): CoreError) -> Self {
        let msg = e.to_string();
        match e {
            Error::InvalidArgument(_) => PyValueError::new_err(msg),
            Error::SlotOutOfRange { .. } => PyIndexError::new_err(msg),
            Error::Region(_) | Error::Io { .. } => LimiterError::new_err(msg),
        }
    }
}

/// A Python int used as a count (cost, requests): negative is a `ValueError`
/// here, zero and too-large values are refused by the core.
pub fn count(name: &str, value: i64) -> CoreResult<u64> {
    u64::try_from(value)
        .map_err(|_| Error::invalid(format!("{name} must be at least 1, got {value}")).into())
}

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("LimiterError", m.py().get_type::<LimiterError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_maps_to_its_exception() {
        Python::initialize();
        Python::attach(|py| {
            // LimiterError's base class lives in the Python package.
            let python_source = concat!(env!("CARGO_MANIFEST_DIR"), "/../../python");
            let path = py
                .import("sys")
                .and_then(|sys| sys.getattr("path"))
                .unwrap();
            path.call_method1("insert", (0, python_source)).unwrap();
            let cases = [
                (Error::invalid("x"), py.get_type::<PyValueError>()),
                (
                    Error::SlotOutOfRange {
                        slot: 9,
                        capacity: 1,
                    },
                    py.get_type::<PyIndexError>(),
                ),
                (Error::Region("x".into()), py.get_type::<LimiterError>()),
                (
                    Error::Io {
                        context: "x".into(),
                        source: std::io::Error::other("y"),
                    },
                    py.get_type::<LimiterError>(),
                ),
            ];
            for (e, expected) in cases {
                let err = PyErr::from(CoreError(e));
                assert!(err.get_type(py).is(&expected));
            }
            let root = py.get_type::<AgentRouterError>();
            assert!(py.get_type::<LimiterError>().is_subclass(&root).unwrap());
        });
    }
}
