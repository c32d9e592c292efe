//! Whether this agent is in step with its fleet, and when to try the store again: a
//! circuit breaker and the degraded state, driven by an explicit clock (tests move
//! time; nothing here reads one).
//!
//! The breaker opens after [`FAILURES_TO_OPEN`] failed exchanges in a row and lets one
//! attempt through after a back-off that doubles (with jitter) from `min` to `max`; a
//! success closes it. The agent is *degraded* when its last successful exchange is
//! older than `stale_after` (or there was none yet): fleet limits then enforce this
//! agent's share, by the agents seen alive at the last success.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

/// Failed exchanges in a row that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 3;

/// A circuit breaker with exponential back-off.
#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    backoff: Duration,
    min: Duration,
    max: Duration,
    jitter: RandomState,
}

impl Breaker {
    /// A closed breaker backing off from `min` to `max`.
    pub fn new(min: Duration, max: Duration) -> Breaker {
        Breaker {
            failures: 0,
            open_until: None,
            backoff: min,
            min,
            max,
            jitter: RandomState::new(),
        }
    }

    /// Whether an attempt may go out at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        self.open_until.is_none_or(|until| now >= until)
    }

    /// Whether the breaker is open (attempts held back) at `now`.
    pub fn is_open(&self, now: Instant) -> bool {
        !self.allows(now)
    }

    /// An attempt succeeded: closed, back-off reset.
    pub fn success(&mut self) {
        self.failures = 0;
        self.open_until = None;
        self.backoff = self.min;
    }

    /// An attempt failed at `now`; true when this opened the breaker (or kept it open
    /// after a trial attempt), with the time until the next attempt.
    pub fn failure(&mut self, now: Instant) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        if self.failures < FAILURES_TO_OPEN {
            return None;
        }
        // ±25 % so that a fleet of agents does not come back in lockstep.
        let spread = self.jitter.hash_one(self.failures) % 501;
        let wait = self.backoff.mul_f64(0.75 + spread as f64 / 1000.0);
        self.open_until = Some(now + wait);
        self.backoff = (self.backoff * 2).min(self.max);
        Some(wait)
    }
}

/// What changed with an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    None,
    /// The agent lost step with its fleet.
    Degraded,
    /// The agent is in step again after this long degraded.
    Recovered(Duration),
}

/// In step with the fleet or not, since when, and the agents seen alive.
#[derive(Debug)]
pub struct Health {
    stale_after: Duration,
    last_ok: Option<Instant>,
    degraded_since: Option<Instant>,
    agents: u32,
}

impl Health {
    /// Degraded (no exchange yet) since `now`; stale after `stale_after`.
    pub fn new(stale_after: Duration, now: Instant) -> Health {
        Health {
            stale_after,
            last_ok: None,
            degraded_since: Some(now),
            agents: 1,
        }
    }

    /// A successful exchange at `now` that saw `agents` agents alive (this one included).
    pub fn ok(&mut self, now: Instant, agents: u32) -> Change {
        self.last_ok = Some(now);
        self.agents = agents.max(1);
        match self.degraded_since.take() {
            Some(since) => Change::Recovered(now.saturating_duration_since(since)),
            None => Change::None,
        }
    }

    /// Checks at `now` whether the last success is too old.
    pub fn check(&mut self, now: Instant) -> Change {
        if self.degraded_since.is_some() {
            return Change::None;
        }
        let fresh = self
            .last_ok
            .is_some_and(|ok| now.saturating_duration_since(ok) <= self.stale_after);
        if fresh {
            Change::None
        } else {
            self.degraded_since = Some(now);
            Change::Degraded
        }
    }

    /// Whether the agent is degraded.
    pub fn degraded(&self) -> bool {
        self.degraded_since.is_some()
    }

    /// Since when, if degraded.
    pub fn degraded_since(&self) -> Option<Instant> {
        self.degraded_since
    }

    /// Agents seen alive at the last success (at least 1).
    pub fn agents(&self) -> u32 {
        self.agents
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_failures_and_backs_off() {
        let t0 = Instant::now();
        let mut b = Breaker::new(Duration::from_secs(1), Duration::from_secs(8));
        assert_eq!(b.failure(t0), None);
        assert_eq!(b.failure(t0), None);
        let first = b.failure(t0).unwrap();
        assert!(
            first >= Duration::from_millis(750) && first <= Duration::from_millis(1250),
            "{first:?}"
        );
        assert!(b.is_open(t0 + Duration::from_millis(700)));
        assert!(b.allows(t0 + Duration::from_millis(1300)));
        // A failed trial doubles the wait, up to the maximum.
        let waits: Vec<Duration> = (0..5).map(|_| b.failure(t0).unwrap()).collect();
        assert!(waits[0] >= Duration::from_millis(1500), "{waits:?}");
        assert!(waits[4] <= Duration::from_secs(10), "{waits:?}");
        b.success();
        assert!(b.allows(t0));
        assert_eq!(b.failure(t0), None);
    }

    #[test]
    fn degraded_until_the_first_exchange_and_when_the_last_is_stale() {
        let t0 = Instant::now();
        let stale = Duration::from_secs(1);
        let mut h = Health::new(stale, t0);
        assert!(h.degraded());
        assert_eq!(h.agents(), 1);
        assert_eq!(
            h.ok(t0 + Duration::from_millis(200), 3),
            Change::Recovered(Duration::from_millis(200))
        );
        assert_eq!(h.check(t0 + Duration::from_millis(1200)), Change::None);
        assert_eq!(h.check(t0 + Duration::from_millis(1300)), Change::Degraded);
        assert_eq!(
            h.check(t0 + Duration::from_secs(5)),
            Change::None,
            "said once"
        );
        assert_eq!(h.agents(), 3, "the share is by the agents last seen");
        assert_eq!(
            h.ok(t0 + Duration::from_secs(6), 2),
            Change::Recovered(Duration::from_millis(4700))
        );
        assert_eq!(h.agents(), 2);
    }
}
