//! AgentRouter's native core, free of Python: the `sk-ar-` key format, key
//! digests, the key table, and exact GCRA rate limiting in a region of shared
//! memory. `rust/py` binds it as `agentrouter._core`.

pub mod clock;
pub mod digest;
pub mod error;
pub mod gcra;
pub mod key;
pub mod limiter;
pub mod region;
pub mod table;

pub use clock::{Clock, FakeClock, MonotonicClock};
pub use digest::{Digest, Digester};
pub use error::{Error, Result};
pub use gcra::{Decision, Quota, Reason};
pub use key::{display_prefix, generate_key, is_well_formed, KEY_LENGTH, KEY_PREFIX};
pub use limiter::{RateLimiter, DEFAULT_CAPACITY};
pub use table::{Auth, HoldsRecord, KeyRecord, KeyTable};
