//! A fixed-bucket latency histogram of plain atomics: an observation is a few compares
//! and two relaxed adds, with no lock (prometheus-client's histogram takes a write lock
//! per observation, too much for a per-request path shared by every worker thread).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in nanoseconds: 1 µs to 1 ms, about three per decade,
/// then +Inf. A decision takes about 1 µs; anything over 100 µs is an outlier to see.
pub const BOUNDS_NANOS: [u64; 10] = [
    1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000,
];

/// Upper bounds of [`Histogram::round_trips`], in nanoseconds: 100 µs to 2.5 s, for
/// network round trips (the fleet's exchanges with Redis).
pub const ROUND_TRIP_BOUNDS_NANOS: [u64; 14] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

/// Counts of observations per bucket (not cumulative), plus their sum.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds of all buckets but the last (+Inf), nanoseconds.
    bounds: &'static [u64],
    /// One per bound, and the last for +Inf.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    /// Bounds for request evaluation ([`BOUNDS_NANOS`]).
    fn default() -> Self {
        Histogram::with_bounds(&BOUNDS_NANOS)
    }
}

/// A copy for exposition, bounds in seconds. The counts are per bucket, not cumulative:
/// prometheus-client's encoder accumulates them.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Sum of observations, seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
    /// `(upper bound in seconds, count in this bucket)`, ending with `f64::MAX`, which
    /// the encoder writes as `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// An empty histogram with these upper bounds (nanoseconds, increasing) and +Inf.
    pub fn with_bounds(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// An empty histogram for network round trips ([`ROUND_TRIP_BOUNDS_NANOS`]).
    pub fn round_trips() -> Histogram {
        Histogram::with_bounds(&ROUND_TRIP_BOUNDS_NANOS)
    }

    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let index = self
            .bounds
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(self.bounds.len());
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The histogram now.
    pub fn snapshot(&self) -> Snapshot {
        let mut count = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, bucket) in self.buckets.iter().enumerate() {
            let in_bucket = bucket.load(Ordering::Relaxed);
            count += in_bucket;
            let bound = self
                .bounds
                .get(i)
                .map_or(f64::MAX, |&nanos| nanos as f64 / 1e9);
            buckets.push((bound, in_bucket));
        }
        Snapshot {
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.observe(Duration::from_nanos(800));
        h.observe(Duration::from_micros(1));
        h.observe(Duration::from_micros(3));
        h.observe(Duration::from_secs(2));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets[0], (1e-6, 2), "≤ 1 µs, bounds inclusive");
        assert_eq!(s.buckets[1].1, 0);
        assert_eq!(s.buckets[2], (5e-6, 1));
        assert_eq!(s.buckets[9].1, 0);
        assert_eq!(s.buckets[10], (f64::MAX, 1));
        assert!((s.sum - 2.0000048).abs() < 1e-9, "{}", s.sum);
    }
}
