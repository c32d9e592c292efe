//! The decision: [`Engine::evaluate`] turns one [`Request`] into one [`Verdict`].
//!
//! It is a synchronous function of the request, the compiled rules and the current time:
//! no I/O, no locks, no `.await`. The connection layer turns the verdict into ACK actions
//! ([`Verdict::actions`]); the engine never sees a frame or a socket.
//!
//! Evaluation order (design.md), first decisive step wins:
//! 1. allow lists → `allow`, reason `allowlist`, nothing else is evaluated;
//! 2. block lists → `deny`, reason `blocklist`;
//! 3. otherwise `allow`, reason `none`.
//!
//! ASN, user-agent and rate-limit steps slot in between 2 and 3.

mod verdict;

use std::time::Instant;

use bytes::Bytes;

pub use crate::request::{canonical, Request};
pub use verdict::{Decision, Reason, Verdict, STATUS_FORBIDDEN};

use crate::rules::RuleSet;

/// Compiled rules ready to evaluate requests; immutable, shared behind an `Arc` and
/// replaced whole on reload.
#[derive(Debug)]
pub struct Engine {
    rules: RuleSet,
}

impl Engine {
    /// An engine over a loaded rule set.
    pub fn new(rules: RuleSet) -> Self {
        Self { rules }
    }

    /// The rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Decides one request.
    ///
    /// ```
    /// use std::time::Instant;
    /// use spoa_guard::engine::{Decision, Engine, Reason, Request};
    /// use spoa_guard::rules::ip::{IpList, IpMatcher};
    /// use spoa_guard::rules::RuleSet;
    ///
    /// let block = IpList::parse("lists/drop.txt".as_ref(), "192.0.2.0/24 ; SBL1\n").unwrap();
    /// let rules = RuleSet { allow: IpMatcher::default(), block: IpMatcher::new([block]) };
    /// let engine = Engine::new(rules);
    /// let request = Request { src: Some("192.0.2.7".parse().unwrap()), ..Request::default() };
    /// let verdict = engine.evaluate(&request, Instant::now());
    /// assert_eq!((verdict.decision, verdict.reason), (Decision::Deny, Reason::Blocklist));
    /// assert_eq!(&verdict.rule[..], b"drop");
    /// ```
    ///
    /// A request without a usable source address is allowed with reason `none`: it is a
    /// HAProxy configuration error, and failing open keeps the site up while the caller
    /// counts and logs it. `now` is the time the decision is made at (for rate limits).
    pub fn evaluate(&self, request: &Request<'_>, now: Instant) -> Verdict {
        let _ = now;
        let Some(src) = request.src else {
            return Verdict::allow_none();
        };
        if let Some(name) = self.rules.allow.lookup(src) {
            return Verdict {
                decision: Decision::Allow,
                reason: Reason::Allowlist,
                rule: rule_name(name),
            };
        }
        if let Some(name) = self.rules.block.lookup(src) {
            return Verdict {
                decision: Decision::Deny,
                reason: Reason::Blocklist,
                rule: rule_name(name),
            };
        }
        Verdict::allow_none()
    }
}

fn rule_name(name: &str) -> Bytes {
    Bytes::copy_from_slice(name.as_bytes())
}
