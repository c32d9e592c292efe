//! Rules, files and fixtures shared by the tests of `user_agent`, `patterns` and `dfa`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;
use proptest::prelude::*;

use super::matcher::UaMatcher;
use super::patterns::Pattern;
use super::{Flags, Origin, UaRule, UaRules};
use crate::decision::{RuleAction, RuleName};
use crate::rules::settings::{UaSource, UserAgentSpec};
use crate::rules::FileCaps;

/// The rule settings the tests build.
pub(super) type UserAgentRule = UserAgentSpec;

pub(super) const GPTBOT: &[u8] = b"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0; +https://openai.com/gptbot)";
pub(super) const CHROME: &[u8] = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/137.0.0.0 Safari/537.36";

pub(super) fn rule(name: &str, source: UaSource) -> UserAgentRule {
    let (pattern, file, empty) = match source {
        UaSource::Pattern(p) => (Some(p), None, false),
        UaSource::File(f) => (None, Some(f), false),
        UaSource::Empty => (None, None, true),
    };
    UserAgentRule {
        name: RuleName::new(name).unwrap(),
        pattern,
        file,
        empty,
        action: RuleAction::Deny,
        ignore_case: false,
        literal: false,
        dry_run: false,
    }
}

pub(super) fn pattern(p: &str) -> UserAgentRule {
    rule("p", UaSource::Pattern(p.to_owned()))
}

pub(super) fn load_one(rule: UserAgentRule) -> UaRules {
    UaRules::load(&[rule], Path::new("spoa-guard.toml")).unwrap()
}

impl UaRules {
    /// Whether any rule matches `ua`.
    pub(super) fn matches(&self, ua: Option<&[u8]>) -> bool {
        !self.matching(ua).is_empty()
    }

    /// Whether the rule called `name` matches `ua`.
    pub(super) fn rule_matches(&self, name: &str, ua: Option<&[u8]>) -> bool {
        let index = self
            .rules()
            .iter()
            .position(|r| r.name() == name.as_bytes())
            .unwrap();
        self.matching(ua).contains(index)
    }
}

/// A one-rule set of a file rule over `text`, compiled without touching the disk.
pub(super) fn file_rule(text: &str, ignore_case: bool, literal: bool) -> UaRules {
    let flags = Flags {
        ignore_case,
        literal,
    };
    let mut patterns = Vec::new();
    let count = Pattern::read_file(
        0,
        Path::new("lists/ua.list"),
        text.as_bytes(),
        &FileCaps::USER_AGENT_FILES,
        flags,
        &mut patterns,
    )
    .unwrap();
    let rule = UaRule {
        name: Bytes::from_static(b"f"),
        action: RuleAction::Deny,
        dry_run: false,
        origin: Origin::File {
            file: "ua.list".into(),
            patterns: count,
        },
    };
    UaRules {
        rules: vec![rule],
        matcher: UaMatcher::build(patterns, Vec::new()).unwrap(),
    }
}

/// The `file:line: message` lines `check` would print for a pattern file.
pub(super) fn file_errors(text: &[u8], flags: Flags) -> Vec<String> {
    let caps = FileCaps::USER_AGENT_FILES;
    let err = Pattern::read_file(
        0,
        Path::new("lists/bad.list"),
        text,
        &caps,
        flags,
        &mut Vec::new(),
    )
    .unwrap_err();
    err.0.iter().map(ToString::to_string).collect()
}

pub(super) const REGEX_MODE: Flags = Flags {
    ignore_case: false,
    literal: false,
};

pub(super) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/useragents")
        .join(name)
}

pub(super) fn fixture_lines(name: &str) -> Vec<Vec<u8>> {
    std::fs::read_to_string(fixture(name))
        .unwrap()
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// The two real lists as configured in practice: the bad-bot list as upstream uses it
/// (case-insensitive) and the AI list as literal, case-insensitive substrings.
pub(super) fn real_rules() -> &'static UaRules {
    static RULES: OnceLock<UaRules> = OnceLock::new();
    RULES.get_or_init(|| {
        let mut bad = rule("bad-bots", UaSource::File(fixture("bad-user-agents.list")));
        bad.ignore_case = true;
        let mut ai = rule(
            "ai-crawlers",
            UaSource::File(fixture("ai-robots-haproxy-block-ai-bots.txt")),
        );
        ai.ignore_case = true;
        ai.literal = true;
        let scanners = pattern("(?i)sqlmap|nikto|masscan|zgrab");
        let empty = rule("empty-ua", UaSource::Empty);
        UaRules::load(&[scanners, bad, ai, empty], Path::new("t.toml")).unwrap()
    })
}

/// A small alphabet, so that random patterns and haystacks actually meet.
pub(super) fn small_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"abAB .\\\xff".to_vec()), 0..max)
}
