//! Small building blocks that several layers use and that belong to none of them: a
//! hasher for keys that are already hashes, a log-line throttle, file stamps, the wall
//! clock in Unix seconds, durations as operators write them, and the problem type that
//! settings validation reports.
//!
//! Nothing here knows about requests, rules or the network; every other module may use it.

pub mod duration;
pub mod log_throttle;
pub mod prehashed;
pub mod settings;
pub mod stamps;

pub use duration::parse_duration;
pub use log_throttle::LogThrottle;
pub use prehashed::PrehashedMap;
pub use settings::{Invalid, KeyPath};
pub use stamps::Stamps;

use std::time::SystemTime;

/// Seconds since the Unix epoch (0 if the clock is before it), for "loaded at" gauges and
/// logs. Decisions never read it: they take an `Instant`.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
