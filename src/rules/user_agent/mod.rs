//! User-agent rules: compiling `[[user_agent]]` patterns and pattern files, and matching
//! the `User-Agent` of a request against them (evaluation step 4 in `design.md`).
//!
//! [`UaRules`] holds the rules in configuration order and one matcher for all of them:
//! [`UaRules::matching`] finds every rule that matches a user agent in one pass, however
//! many rules there are; the engine then walks those in order and stops at the first of a
//! rule that is not a dry run. It has to be fast above all when nothing matches (the
//! common case: a real browser).
//!
//! # What a rule matches
//!
//! - `pattern = "..."`: one regular expression in Rust [`regex`] syntax, searched anywhere
//!   in the user agent (unanchored; write `^`/`$` to anchor).
//! - `file = "..."`: a file of patterns, one per line; the rule matches when any line
//!   does (the `patterns` module describes the format).
//! - `empty = true`: a missing or empty `User-Agent` header, and nothing else. Pattern and
//!   file rules never match a missing or empty user agent, not even with `^$`.
//!
//! `literal = true` makes every pattern (the inline one, or each line of a file) a plain
//! substring, with no escapes or metacharacters; `ignore_case = true` makes matching
//! case-insensitive.
//!
//! The user agent is matched as **bytes**, as it came off the wire (it need not be UTF-8).
//! Patterns are compiled with `regex::bytes` and Unicode mode **off** (`unicode(false)`),
//! the byte-oriented semantics PCRE has without its UTF flag, which is what lists like
//! these were written for: `.` is any byte but `\n`; `\w`, `\d`, `\s`, `\b` and
//! `ignore_case` are ASCII-only; `\xff` is the byte 0xFF; a non-ASCII character in a
//! pattern matches its UTF-8 bytes exactly. A pattern can turn Unicode back on for a part
//! of it with the `u` flag (`(?u:\w+)`).
//!
//! # Where the rest lives
//!
//! - `patterns`: the pattern-file format and how each pattern is read (literals, wildcard
//!   lines with an anchor, regexes).
//! - `matcher`: how the patterns of all rules compile into one `UaMatcher`,
//!   with the limits [`SMALL_SET`], [`DFA_MAX_BYTES`] and [`DFA_CACHE_BYTES`].
//! - `dfa`: `DfaScan`, the interleaved Aho-Corasick DFA walk literals compile to, and the
//!   measurements that chose it over `RegexSet`, one alternation and aho-corasick's own
//!   searchers.
//!
//! # Costs
//!
//! - Matching is linear in the user agent's length (`regex` and Aho-Corasick never
//!   backtrack) and, when nothing matches, independent of the number of rules: at most
//!   three searches (the literal automata of each case setting and the regexes). A
//!   `DfaScan` costs about 0.7–0.9 ns per byte whatever the number of literals, allocates
//!   nothing, and keeps no per-thread state. The regexes keep a lazy-DFA cache in each
//!   thread that uses them, up to [`DFA_CACHE_BYTES`]. `benches/user_agent.rs` group
//!   `many` measures 1, 50 and 500 separate rules.
//! - Loading is linear in the file size: `bad-user-agents.list` in 6–11 ms and 2.6 MiB,
//!   the ai.robots.txt list in 1.5–1.9 ms and 0.75 MiB.
//! - Up to [`DFA_MAX_BYTES`] of literals (about 3,300 names of the bad-bot list's
//!   average length; a DFA of about 12 MiB) use a `DfaScan`; larger sets use
//!   aho-corasick's contiguous NFA, about a tenth of the memory and several times slower
//!   (≈ 0.6 µs per browser user agent for the bad-bot list's literals in the prototype).

mod dfa;
mod matcher;
mod patterns;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

use bytes::Bytes;

use super::settings::{UaSource, UserAgentSpec};
use super::{FileCaps, LoadError, LoadErrors};
use crate::decision::RuleAction;
use matcher::UaMatcher;
use patterns::{quote, Pattern};

pub use matcher::{UaMatches, DFA_CACHE_BYTES, DFA_MAX_BYTES, SMALL_SET};

/// Every `[[user_agent]]` rule, compiled, in configuration order.
///
/// Built once per rule set (at start-up, by `check`, by a reload) and shared read-only.
#[derive(Debug, Clone, Default)]
pub struct UaRules {
    /// In configuration order: the engine walks the matching ones and the first decisive
    /// match wins.
    rules: Vec<UaRule>,
    /// The patterns of every rule, compiled together.
    matcher: UaMatcher,
}

impl UaRules {
    /// Compiles `rules`, reading the pattern files they name.
    ///
    /// `config_path` locates problems in inline `pattern`s, which have no file of their
    /// own: `spoa-guard.toml: user_agent "scanners": invalid regex: unclosed group`.
    ///
    /// # Errors
    ///
    /// Every problem in every rule, not just the first: an invalid or empty inline
    /// pattern, an unreadable file, and each bad line of a file as
    /// `file:line: invalid pattern "...": reason` (at most [`MAX_ERRORS_PER_FILE`](super::MAX_ERRORS_PER_FILE) per
    /// file).
    pub fn load(rules: &[UserAgentSpec], config_path: &Path) -> Result<UaRules, LoadErrors> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut patterns = Vec::new();
        let mut empty = Vec::new();
        let mut errors = Vec::new();
        for (index, rule) in (0u32..).zip(rules) {
            match UaRule::load(index, rule, config_path, &mut patterns) {
                Ok(rule) => {
                    if rule.origin.is_empty() {
                        empty.push(index);
                    }
                    compiled.push(rule);
                }
                Err(LoadErrors(mut errs)) => errors.append(&mut errs),
            }
        }
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        let matcher = UaMatcher::build(patterns, empty).map_err(|e| {
            LoadError::file(
                config_path,
                format!("user_agent rules: cannot compile: {e}"),
            )
        })?;
        Ok(UaRules {
            rules: compiled,
            matcher,
        })
    }

    /// The rules matching the user agent `ua`, in configuration order.
    ///
    /// `ua` is `None` for a missing or empty `User-Agent` header (design.md: absent and
    /// empty are both "empty user agent"). `empty` rules match exactly that; pattern and
    /// file rules never match it. `Some(b"")` is treated as `None`, so callers need not
    /// normalise.
    ///
    /// Linear in the length of `ua`, and allocation-free and independent of the number of
    /// rules when nothing matches; see the module documentation for measured costs.
    pub fn matching(&self, ua: Option<&[u8]>) -> UaMatches {
        self.matcher.matching(ua)
    }

    /// The rules, in configuration order.
    pub fn rules(&self) -> &[UaRule] {
        &self.rules
    }

    /// Whether there are no user-agent rules (the engine can skip the step).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Patterns over all rules, for logs: 1 per inline pattern, one per file line, 0 for
    /// an `empty` rule.
    pub fn patterns(&self) -> usize {
        self.rules
            .iter()
            .fold(0, |sum, rule| sum.saturating_add(rule.patterns()))
    }
}

/// One compiled `[[user_agent]]` rule.
#[derive(Debug, Clone)]
pub struct UaRule {
    /// Reported as `txn.guard.rule` when the rule decides; `Bytes` so that the verdict
    /// takes a reference-counted copy, not an allocation.
    name: Bytes,
    /// What a match does.
    action: RuleAction,
    /// Counted but never decides.
    dry_run: bool,
    /// Where the patterns came from, for [`UaRule::describe`].
    origin: Origin,
}

impl UaRule {
    /// Reads rule number `index`, appending its patterns to `patterns`; `config_path`
    /// locates errors in an inline pattern.
    fn load(
        index: u32,
        rule: &UserAgentSpec,
        config_path: &Path,
        patterns: &mut Vec<Pattern>,
    ) -> Result<UaRule, LoadErrors> {
        let flags = Flags {
            ignore_case: rule.ignore_case,
            literal: rule.literal,
        };
        let name = rule.name.as_str();
        let Some(source) = rule.source() else {
            let message =
                format!("user_agent {name:?}: give exactly one of pattern, file or empty = true");
            return Err(LoadError::file(config_path, message).into());
        };
        let origin = match source {
            UaSource::Empty => Origin::Empty,
            UaSource::Pattern(pattern) if pattern.is_empty() => {
                let message =
                    format!("user_agent {name:?}: empty pattern (it would match every user agent)");
                return Err(LoadError::file(config_path, message).into());
            }
            UaSource::Pattern(pattern) => {
                let read = Pattern::read(index, &pattern, flags).map_err(|e| {
                    LoadError::file(
                        config_path,
                        format!("user_agent {name:?}: invalid regex: {e}"),
                    )
                })?;
                patterns.push(read);
                Origin::Pattern(pattern)
            }
            UaSource::File(path) => {
                let caps = FileCaps::USER_AGENT_FILES;
                let input = caps.open(&path)?;
                let count = Pattern::read_file(index, &path, input, &caps, flags, patterns)?;
                let file = match path.file_name() {
                    Some(name) => name.to_string_lossy().into_owned(),
                    None => path.display().to_string(),
                };
                Origin::File {
                    file,
                    patterns: count,
                }
            }
        };
        Ok(UaRule {
            name: rule.name.bytes().clone(),
            action: rule.action,
            dry_run: rule.dry_run,
            origin: origin.with_flags(flags),
        })
    }

    /// The rule's name (`txn.guard.rule`).
    pub fn name(&self) -> &Bytes {
        &self.name
    }

    /// What a match does.
    pub fn action(&self) -> RuleAction {
        self.action
    }

    /// Whether the rule only counts its matches and never decides.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// What the rule matches, for the `eval` command and logs: `pattern "(?i)sqlmap"`,
    /// `file bad-user-agents.list (699 patterns)`, `empty user agent`, with
    /// `literal` / `ignore_case` noted when set.
    pub fn describe(&self) -> String {
        self.origin.to_string()
    }

    /// Number of patterns: 1 for an inline pattern, the pattern lines of a file, 0 for an
    /// `empty` rule.
    pub fn patterns(&self) -> usize {
        self.origin.patterns()
    }
}

/// The `literal` and `ignore_case` settings of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flags {
    ignore_case: bool,
    literal: bool,
}

/// Where a rule's patterns come from, as [`UaRule::describe`] shows it.
#[derive(Debug, Clone)]
enum Origin {
    Empty,
    Pattern(String),
    File {
        file: String,
        patterns: usize,
    },
    /// A pattern or file origin with `literal` and/or `ignore_case` set.
    Flagged(Box<Origin>, Flags),
}

impl Origin {
    /// Whether this is an `empty = true` rule.
    fn is_empty(&self) -> bool {
        matches!(self, Origin::Empty)
    }

    /// Number of patterns (see [`UaRule::patterns`]).
    fn patterns(&self) -> usize {
        match self {
            Origin::Empty => 0,
            Origin::Pattern(_) => 1,
            Origin::File { patterns, .. } => *patterns,
            Origin::Flagged(origin, _) => origin.patterns(),
        }
    }

    fn with_flags(self, flags: Flags) -> Origin {
        match self {
            Origin::Empty => Origin::Empty,
            _ if !flags.literal && !flags.ignore_case => self,
            _ => Origin::Flagged(Box::new(self), flags),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Empty => f.write_str("empty user agent"),
            Origin::Pattern(pattern) => write!(f, "pattern {}", quote(pattern)),
            Origin::File { file, patterns } => {
                let s = if *patterns == 1 { "" } else { "s" };
                write!(f, "file {file} ({patterns} pattern{s})")
            }
            Origin::Flagged(origin, flags) => {
                let mut notes = Vec::new();
                if flags.literal {
                    notes.push("literal");
                }
                if flags.ignore_case {
                    notes.push("ignore_case");
                }
                write!(f, "{origin}, {}", notes.join(", "))
            }
        }
    }
}
