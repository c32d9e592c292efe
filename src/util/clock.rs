//! [`WallClock`]: Unix time from an `Instant`, without a system call. The request path
//! takes one `Instant` per request already; ban expiries are Unix seconds (absolute, so
//! that the state file and other agents agree). Reading `SystemTime` per request or per
//! batch would cost a clock read each time; instead the offset between the two clocks
//! is taken once and refreshed every second ([`WallClock::refresh`], from a periodic
//! task), which also follows the wall clock when it is stepped or slewed.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Instant, SystemTime};

/// Unix time of an `Instant`; see the module docs.
#[derive(Debug)]
pub struct WallClock {
    /// Origin of the `Instant`s converted.
    origin: Instant,
    /// Unix time of `origin`, in nanoseconds.
    origin_unix_nanos: AtomicI64,
}

impl Default for WallClock {
    fn default() -> Self {
        let clock = WallClock {
            origin: Instant::now(),
            origin_unix_nanos: AtomicI64::new(0),
        };
        clock.refresh();
        clock
    }
}

impl WallClock {
    /// Takes the offset between the two clocks again.
    pub fn refresh(&self) {
        let (instant, wall) = (Instant::now(), SystemTime::now());
        let unix = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let since = i64::try_from(instant.duration_since(self.origin).as_nanos()).unwrap_or(0);
        self.origin_unix_nanos
            .store(unix.saturating_sub(since), Ordering::Relaxed);
    }

    /// The Unix second `at` falls in (0 before 1970, `u32::MAX` after 2106).
    #[inline]
    pub fn unix_secs(&self, at: Instant) -> u32 {
        let since = at.saturating_duration_since(self.origin).as_nanos();
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let unix = self
            .origin_unix_nanos
            .load(Ordering::Relaxed)
            .saturating_add(since);
        u32::try_from(unix.max(0) / 1_000_000_000).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn agrees_with_the_system_clock_to_the_second() {
        let clock = WallClock::default();
        let now = Instant::now();
        let expected = super::super::unix_now_u32();
        let got = clock.unix_secs(now);
        assert!(got.abs_diff(expected) <= 1, "{got} vs {expected}");
        assert_eq!(clock.unix_secs(now + Duration::from_secs(90)), got + 90);
    }
}
