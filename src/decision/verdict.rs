//! [`Verdict`]: the outcome of one evaluation, and the one place that knows the names
//! and types of the variables sent back to HAProxy (design.md "Variables returned").

use bytes::Bytes;
use smallvec::SmallVec;
use strum::{EnumCount, EnumIter};

use super::RuleId;
use crate::spop::{Action, Value};

/// What HAProxy should do with the request.
///
/// Counters indexed by decision ([`EnumCount`], [`EnumIter`]) follow a new variant by
/// themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, EnumCount, EnumIter)]
pub enum Decision {
    /// Let it through.
    Allow,
    /// Refuse it (403, or 429 for rate limits).
    Deny,
}

impl Decision {
    /// The value of `txn.guard.action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// Which evaluation step decided (design.md "Evaluation order").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, EnumCount, EnumIter)]
pub enum Reason {
    /// The source is in an allow list.
    Allowlist,
    /// The source (its address, a network around it or its AS) has a runtime ban.
    Ban,
    /// The source is in a block list.
    Blocklist,
    /// The source's autonomous system is blocked.
    Asn,
    /// A user-agent rule decided.
    UserAgent,
    /// A rate limit's bucket is empty.
    RateLimit,
    /// Nothing matched.
    None,
}

impl Reason {
    /// The value of `txn.guard.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowlist => "allowlist",
            Self::Ban => "ban",
            Self::Blocklist => "blocklist",
            Self::Asn => "asn",
            Self::UserAgent => "user-agent",
            Self::RateLimit => "rate-limit",
            Self::None => "none",
        }
    }
}

/// The outcome of evaluating one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allow or deny.
    pub decision: Decision,
    /// The step that decided.
    pub reason: Reason,
    /// The name of what decided (list file stem, `AS<n>`, rule or limit name); empty
    /// when nothing matched.
    pub rule: Bytes,
    /// The rule that decided, numbered by the engine that decided (for its hit counter).
    pub rule_id: Option<RuleId>,
    /// Seconds until the limit's bucket has a token again (rate-limit denies), or until
    /// the ban ends (ban denies).
    pub retry_after: Option<u32>,
    /// The source's autonomous system, when a database is loaded and knows the address.
    pub asn: Option<u32>,
    /// The first dry-run rule that would have denied, if any (`txn.guard.dry_run`).
    pub dry_run: Option<DryRun>,
    /// Every dry-run rule that would have denied, the first included: each one's hit
    /// counter goes up, so a rule behind another dry-run rule is still sized correctly.
    pub dry_run_hits: DryRunHits,
}

/// The rules behind dry-run hits of one request; four fit without allocating.
pub type DryRunHits = SmallVec<[RuleId; 4]>;

/// A dry-run rule that would have denied: reported, counted, never enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRun {
    /// The step it belongs to.
    pub reason: Reason,
    /// Its name, as `txn.guard.dry_run` reports it.
    pub rule: Bytes,
}

impl DryRun {
    /// The dry-run rule `rule` of step `reason`.
    pub fn new(reason: Reason, rule: Bytes) -> Self {
        Self { reason, rule }
    }
}

/// HTTP status suggested for a deny by a list, ASN or user-agent rule.
pub const STATUS_FORBIDDEN: i32 = 403;
/// HTTP status suggested for a rate-limit deny.
pub const STATUS_TOO_MANY_REQUESTS: i32 = 429;

impl Verdict {
    /// Allowed because nothing matched.
    pub fn allow_none() -> Self {
        Self::new(Decision::Allow, Reason::None, Bytes::new())
    }

    /// A verdict with no rule id, ASN, retry hint or dry-run report yet.
    pub fn new(decision: Decision, reason: Reason, rule: Bytes) -> Self {
        Self {
            decision,
            reason,
            rule,
            rule_id: None,
            retry_after: None,
            asn: None,
            dry_run: None,
            dry_run_hits: DryRunHits::new(),
        }
    }

    /// The suggested HTTP status for a deny: 429 for rate limits, 403 otherwise.
    pub fn status(&self) -> Option<i32> {
        match (self.decision, self.reason) {
            (Decision::Allow, _) => None,
            (Decision::Deny, Reason::RateLimit) => Some(STATUS_TOO_MANY_REQUESTS),
            (Decision::Deny, _) => Some(STATUS_FORBIDDEN),
        }
    }

    /// The set-var actions of the ACK, all in scope `txn`:
    ///
    /// | name | type | when |
    /// |---|---|---|
    /// | `action` | string | always |
    /// | `reason` | string | always |
    /// | `rule` | string | always, empty when nothing matched |
    /// | `status` | int | deny only: 403, or 429 for rate limits |
    /// | `retry_after` | int | rate-limit deny only |
    /// | `asn` | int | when the source's ASN is known |
    /// | `dry_run` | string | when a dry-run rule would have denied |
    ///
    /// With the default `option var-prefix guard` HAProxy reads them as
    /// `txn.guard.action` and so on; every full name stays well under HAProxy's 64 bytes.
    pub fn actions(&self) -> Vec<Action> {
        let mut actions = Vec::with_capacity(7);
        self.each_action(|name, value| {
            actions.push(Action::set_txn(name, value.to_typed_data()));
        });
        actions
    }

    /// Calls `f` with the name and value of each action of [`Verdict::actions`], in
    /// order, without building them: the hot path writes them straight into the ACK.
    pub fn each_action(&self, mut f: impl FnMut(&'static str, Value<'_>)) {
        f("action", Value::String(self.decision.as_str().as_bytes()));
        f("reason", Value::String(self.reason.as_str().as_bytes()));
        f("rule", Value::String(&self.rule));
        if let Some(status) = self.status() {
            f("status", Value::Int32(status));
        }
        if let (Decision::Deny, Some(seconds)) = (self.decision, self.retry_after) {
            f("retry_after", Value::Uint32(seconds));
        }
        if let Some(asn) = self.asn {
            f("asn", Value::Uint32(asn));
        }
        if let Some(dry) = &self.dry_run {
            f("dry_run", Value::String(&dry.rule));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spop::{Scope, TypedData};

    fn names(actions: &[Action]) -> Vec<(Scope, String, TypedData)> {
        actions
            .iter()
            .map(|a| match a {
                Action::SetVar { scope, name, value } => (
                    *scope,
                    String::from_utf8_lossy(name).into_owned(),
                    value.clone(),
                ),
                Action::UnsetVar { .. } => panic!("no unset expected"),
            })
            .collect()
    }

    #[test]
    fn allow_sets_action_reason_and_empty_rule() {
        let got = names(&Verdict::allow_none().actions());
        assert_eq!(
            got,
            vec![
                (Scope::Txn, "action".into(), TypedData::str("allow")),
                (Scope::Txn, "reason".into(), TypedData::str("none")),
                (Scope::Txn, "rule".into(), TypedData::str("")),
            ]
        );
    }

    #[test]
    fn deny_adds_status() {
        let v = Verdict::new(
            Decision::Deny,
            Reason::Blocklist,
            Bytes::from_static(b"spamhaus-drop"),
        );
        let got = names(&v.actions());
        assert_eq!(got.len(), 4);
        assert_eq!(got[2].2, TypedData::str("spamhaus-drop"));
        assert_eq!(got[3], (Scope::Txn, "status".into(), TypedData::Int32(403)));
    }

    #[test]
    fn rate_limit_deny_has_429_and_retry_after_and_asn_and_dry_run() {
        let mut v = Verdict::new(
            Decision::Deny,
            Reason::RateLimit,
            Bytes::from_static(b"login"),
        );
        v.retry_after = Some(7);
        v.asn = Some(64496);
        v.dry_run = Some(DryRun::new(
            Reason::UserAgent,
            Bytes::from_static(b"new-bots"),
        ));
        let got = names(&v.actions());
        let by_name = |n: &str| {
            got.iter()
                .find(|(_, name, _)| name == n)
                .map(|(_, _, v)| v.clone())
        };
        assert_eq!(by_name("status"), Some(TypedData::Int32(429)));
        assert_eq!(by_name("retry_after"), Some(TypedData::Uint32(7)));
        assert_eq!(by_name("asn"), Some(TypedData::Uint32(64496)));
        assert_eq!(by_name("dry_run"), Some(TypedData::str("new-bots")));
    }

    #[test]
    fn allow_never_carries_status_or_retry_after() {
        let mut v = Verdict::new(
            Decision::Allow,
            Reason::UserAgent,
            Bytes::from_static(b"good-bots"),
        );
        v.retry_after = Some(3);
        let got = names(&v.actions());
        assert!(
            got.iter()
                .all(|(_, n, _)| n != "status" && n != "retry_after"),
            "{got:?}"
        );
    }
}
