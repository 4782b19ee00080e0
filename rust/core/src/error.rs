//! The one error type of the core. The binding maps each variant to a Python
//! exception in exactly one place (`rust/py/src/error.rs`).

use std::fmt;
use std::io;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug)]
pub enum Error {
    /// A caller passed a value outside its domain (cost 0, short secret, …): `ValueError`.
    InvalidArgument(String),
    /// A slot index at or beyond the region's capacity: `IndexError`.
    SlotOutOfRange { slot: i64, capacity: u32 },
    /// The shared region is unusable: wrong magic/version/capacity, or full: `LimiterError`.
    Region(String),
    /// The region file could not be created, opened, locked or mapped: `LimiterError`.
    Io { context: String, source: io::Error },
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(msg) | Error::Region(msg) => f.write_str(msg),
            Error::SlotOutOfRange { slot, capacity } => {
                write!(f, "slot {slot} is out of range (capacity {capacity})")
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
