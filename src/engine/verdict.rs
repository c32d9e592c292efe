//! [`Verdict`]: the outcome of one evaluation, and the one place that knows the names
//! and types of the variables sent back to HAProxy (design.md "Variables returned").

use bytes::Bytes;

use crate::spop::{Action, TypedData};

/// What HAProxy should do with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The source is in an allow list.
    Allowlist,
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
    /// The name of what decided (list file stem, rule or limit name); empty when none.
    pub rule: Bytes,
}

/// HTTP status suggested for a deny by a list, ASN or user-agent rule.
pub const STATUS_FORBIDDEN: i32 = 403;

impl Verdict {
    /// Allowed because nothing matched.
    pub fn allow_none() -> Self {
        Self {
            decision: Decision::Allow,
            reason: Reason::None,
            rule: Bytes::new(),
        }
    }

    /// The suggested HTTP status for a deny.
    pub fn status(&self) -> Option<i32> {
        match self.decision {
            Decision::Deny => Some(STATUS_FORBIDDEN),
            Decision::Allow => None,
        }
    }

    /// The set-var actions of the ACK, all in scope `txn`:
    ///
    /// | name | type | when |
    /// |---|---|---|
    /// | `action` | string | always |
    /// | `reason` | string | always |
    /// | `rule` | string | always, empty when nothing matched |
    /// | `status` | int | deny only |
    ///
    /// With the default `option var-prefix guard` HAProxy reads them as
    /// `txn.guard.action` and so on; every full name stays well under HAProxy's 64 bytes.
    pub fn actions(&self) -> Vec<Action> {
        let mut actions = Vec::with_capacity(4);
        actions.push(Action::set_txn(
            "action",
            TypedData::str(self.decision.as_str()),
        ));
        actions.push(Action::set_txn(
            "reason",
            TypedData::str(self.reason.as_str()),
        ));
        actions.push(Action::set_txn(
            "rule",
            TypedData::String(self.rule.clone()),
        ));
        if let Some(status) = self.status() {
            actions.push(Action::set_txn("status", TypedData::Int32(status)));
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spop::Scope;

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
        let v = Verdict {
            decision: Decision::Deny,
            reason: Reason::Blocklist,
            rule: Bytes::from_static(b"spamhaus-drop"),
        };
        let got = names(&v.actions());
        assert_eq!(got.len(), 4);
        assert_eq!(got[2].2, TypedData::str("spamhaus-drop"));
        assert_eq!(got[3], (Scope::Txn, "status".into(), TypedData::Int32(403)));
    }
}
