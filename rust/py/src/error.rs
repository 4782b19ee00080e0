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
    use pyo3::exceptions::PyException;
    use pyo3::types::PyType;

    /// LimiterError's base class, `AgentRouterError`, lives in the Python package,
    /// which a test binary does not have installed: put its source on `sys.path`.
    fn on_package_path(py: Python<'_>) {
        let python_source = concat!(env!("CARGO_MANIFEST_DIR"), "/../../python");
        let path = py
            .import("sys")
            .and_then(|sys| sys.getattr("path"))
            .unwrap();
        path.call_method1("insert", (0, python_source)).unwrap();
    }

    /// Converts `e` as a method's `?` would and checks the Python exception that
    /// results: exactly `T` (not merely a subclass of it) with the core's message.
    fn assert_raises<T: pyo3::PyTypeInfo>(e: Error, message: &str) {
        Python::initialize();
        Python::attach(|py| {
            on_package_path(py);
            let err = PyErr::from(CoreError::from(e));
            let (raised, expected) = (err.get_type(py), py.get_type::<T>());
            assert!(raised.is(&expected), "raised {raised}, expected {expected}");
            assert_eq!(err.value(py).to_string(), message);
        });
    }

    #[test]
    fn invalid_argument_is_value_error() {
        assert_raises::<PyValueError>(
            Error::invalid("cost must be at least 1"),
            "cost must be at least 1",
        );
    }

    #[test]
    fn slot_out_of_range_is_index_error() {
        assert_raises::<PyIndexError>(
            Error::SlotOutOfRange {
                slot: 9,
                capacity: 4,
            },
            "slot 9 is out of range (capacity 4)",
        );
    }

    #[test]
    fn region_error_is_limiter_error() {
        assert_raises::<LimiterError>(
            Error::Region("the limiter's bucket table is full (capacity 4)".into()),
            "the limiter's bucket table is full (capacity 4)",
        );
    }

    #[test]
    fn io_error_is_limiter_error_with_its_context() {
        assert_raises::<LimiterError>(
            Error::Io {
                context: "cannot open limiter region /x".into(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            },
            "cannot open limiter region /x: permission denied",
        );
    }

    #[test]
    fn limiter_error_is_an_exception_of_the_module() {
        Python::initialize();
        Python::attach(|py| {
            on_package_path(py);
            let tp: Bound<'_, PyType> = py.get_type::<LimiterError>();
            assert!(tp.is_subclass_of::<PyException>().unwrap());
            assert!(tp.is_subclass(&py.get_type::<AgentRouterError>()).unwrap());
            assert_eq!(
                tp.fully_qualified_name().unwrap().to_string(),
                "agentrouter._core.LimiterError"
            );
        });
    }

    #[test]
    fn a_negative_count_is_value_error_naming_the_argument() {
        assert_eq!(count("cost", 3).ok(), Some(3));
        let Err(CoreError(e)) = count("cost", -1) else {
            panic!("a negative cost was accepted")
        };
        assert_raises::<PyValueError>(e, "cost must be at least 1, got -1");
    }
}
