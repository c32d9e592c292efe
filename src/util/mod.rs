//! Small building blocks that several layers use and that belong to none of them: a
//! hasher for keys that are already hashes, a concurrent map with a hard key cap, a log-line throttle, file stamps, the wall
//! clock in Unix seconds, lowering a background thread's CPU priority, connection slots with eviction for every listener, durations as operators write them, the problem type that
//! settings validation reports, Unix time from an `Instant`, listening sockets (TCP or unix) for every listener, and
//! the flat JSON log line of `[log] format = "json"`.
//!
//! Nothing here knows about requests, rules or protocols; every other module may use it.

pub mod background;
pub mod capped;
pub mod clock;
pub mod duration;
pub mod json_log;
pub mod listener;
pub mod log_throttle;
pub mod prehashed;
pub mod settings;
pub mod slots;
pub mod stamps;

pub use background::{idle_thread_priority, lower_thread_priority};
pub use capped::CappedMap;
pub use clock::WallClock;
pub use duration::parse_duration;
pub use listener::{Accepted, InvalidListen, Listen, Listener};
pub use log_throttle::LogThrottle;
pub use prehashed::PrehashedMap;
pub use settings::{Invalid, KeyPath};
pub use stamps::Stamps;

use std::time::SystemTime;

/// Seconds since the Unix epoch (0 if the clock is before it), for "loaded at" gauges and
/// logs. Rules decide with an `Instant`; only ban expiries (absolute times, shared with
/// the state file and other agents) read the wall clock, as [`unix_now_u32`].
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it): when a ban changed,
/// to order changes made on different agents (last writer wins).
pub fn unix_now_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// [`unix_now`] as the `u32` seconds ban times are kept in (saturating in 2106).
pub fn unix_now_u32() -> u32 {
    u32::try_from(unix_now()).unwrap_or(u32::MAX)
}
