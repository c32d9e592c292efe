//! Naming rules: the name an operator gives a rule ([`RuleName`]), the number the
//! engine gives it ([`RuleId`]), and what a matching rule does ([`RuleAction`]).

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Longest rule name accepted, in bytes.
pub const RULE_NAME_MAX: usize = 64;

/// A rule's position in the rule set in force, in evaluation order. The engine numbers
/// every configured rule when it is built; a verdict names the rules behind it by
/// number so that counting a hit is an index, not a map lookup. Only meaningful with
/// the engine that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId(pub u32);

impl RuleId {
    /// The id as an index into the engine's rule table.
    pub fn index(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// A rule name as written in the configuration (`name = "login"`): 1 to
/// [`RULE_NAME_MAX`] letters, digits and `- _ . :`. It becomes a `txn.guard.rule` value
/// and a metric label, so it stays short and plain. Held as [`Bytes`] so that a verdict
/// takes a reference-counted copy, not an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct RuleName(Bytes);

/// Why a rule name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRuleName {
    /// Empty or longer than [`RULE_NAME_MAX`].
    #[error("must be 1 to {RULE_NAME_MAX} characters")]
    Length,
    /// A character outside letters, digits and `- _ . :`.
    #[error("may only use letters, digits and - _ . :")]
    Character,
}

impl RuleName {
    /// Checks `name`.
    ///
    /// # Errors
    ///
    /// An empty or overlong name, or a character outside the allowed set.
    pub fn new(name: &str) -> Result<RuleName, InvalidRuleName> {
        if name.is_empty() || name.len() > RULE_NAME_MAX {
            return Err(InvalidRuleName::Length);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(InvalidRuleName::Character);
        }
        Ok(RuleName(Bytes::copy_from_slice(name.as_bytes())))
    }

    /// A name made by the agent itself (a list's file stem, `AS64496`), not checked.
    pub fn made(name: impl Into<Bytes>) -> RuleName {
        RuleName(name.into())
    }

    /// The name as bytes, for a verdict.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The name as text (names from the configuration are ASCII).
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

impl TryFrom<String> for RuleName {
    type Error = InvalidRuleName;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        RuleName::new(&name)
    }
}

impl From<RuleName> for String {
    fn from(name: RuleName) -> String {
        name.as_str().into_owned()
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// What a rule does when it matches (`action = "allow"` or `"deny"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// For user-agent rules: no later user-agent rule applies (rate limits still do).
    Allow,
    /// Deny with the rule's reason.
    Deny,
}

impl RuleAction {
    /// `allow` or `deny`, as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_are_short_and_plain() {
        assert!(RuleName::new("login-abuse_v2.0:eu").is_ok());
        assert_eq!(RuleName::new(""), Err(InvalidRuleName::Length));
        assert_eq!(RuleName::new(&"x".repeat(65)), Err(InvalidRuleName::Length));
        assert_eq!(RuleName::new("a b"), Err(InvalidRuleName::Character));
        assert_eq!(RuleName::new("é"), Err(InvalidRuleName::Character));
    }
}
