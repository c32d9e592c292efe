//! [`LogThrottle`]: lets one log line through per interval and counts the rest, so a
//! flood of identical problems (a misconfigured HAProxy, an attack) cannot flood the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one "go ahead" per interval, shared by every task; lock-free.
#[derive(Debug)]
pub struct LogThrottle {
    start: Instant,
    interval_ms: u64,
    /// Milliseconds since `start` when the next line may be logged.
    next_ms: AtomicU64,
    /// Lines held back since the last one logged.
    suppressed: AtomicU64,
}

impl LogThrottle {
    /// A throttle letting one line through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            start: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether to log now; `Some(n)` says yes and how many lines were held back since
    /// the last one, `None` says hold this one back.
    pub fn check(&self, now: Instant) -> Option<u64> {
        let now_ms = u64::try_from(now.saturating_duration_since(self.start).as_millis())
            .unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_a_count_of_the_rest() {
        let t = LogThrottle::new(Duration::from_secs(10));
        let t0 = t.start;
        assert_eq!(t.check(t0), Some(0));
        assert_eq!(t.check(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.check(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.check(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(t.check(t0 + Duration::from_secs(11)), None);
    }
}
