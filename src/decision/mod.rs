//! The vocabulary every layer shares about one decision: the [`Request`] HAProxy sent,
//! the [`Verdict`] the agent answers ([`Decision`], [`Reason`], rule name, hints), and the
//! names of rules ([`RuleName`], [`RuleId`], [`RuleAction`]).
//!
//! It sits just above the protocol: the rules, the limits and the engine speak it, the
//! agent records it, the connection writes it into an ACK. Nothing here does I/O or
//! knows how rules are matched.

mod request;
mod rule;
mod verdict;

pub use request::{canonical, ArgValue, Request};
pub use rule::{InvalidRuleName, RuleAction, RuleId, RuleName, RULE_NAME_MAX};
pub use verdict::{
    Decision, DryRun, DryRunHits, Reason, Verdict, STATUS_FORBIDDEN, STATUS_TOO_MANY_REQUESTS,
};
