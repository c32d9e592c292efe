//! User-agent rules: compiling `[[user_agent]]` patterns and pattern files, and matching
//! the `User-Agent` of a request against them (evaluation step 4 in `design.md`).
//!
//! [`UaRules`] holds the rules in configuration order. The engine walks
//! [`UaRules::rules`] and stops at the first match of a rule that is not a dry run, so
//! each [`UaRule::matches`] call has to be fast on its own, and above all when nothing
//! matches (the common case: a real browser).
//!
//! # What a rule matches
//!
//! - `pattern = "..."`: one regular expression in Rust [`regex`] syntax, searched anywhere
//!   in the user agent (unanchored; write `^`/`$` to anchor).
//! - `file = "..."`: a file of patterns, one per line; the rule matches when any line
//!   does (see *Pattern files* below).
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
//! # Pattern files
//!
//! ```text
//! # comment: lines whose first non-blank character is '#' are ignored, as are blank lines
//! AhrefsBot
//! Black\ Hole          '\ ' is an escaped space: the same as "Black Hole"
//! crawl\.sogou\.com    '\.' is a literal dot; a bare '.' is any byte
//! ^curl/               any other regex syntax works too
//! ```
//!
//! - One pattern per line; spaces, tabs and a trailing CR (CRLF files) around it are
//!   trimmed, a leading UTF-8 byte-order mark is skipped, and the last line needs no
//!   newline. A pattern that has to start with `#` is written `\#`; one that has to end
//!   with a space, `Foo\ ` (an escaped space at the end of a line is kept).
//! - Lines must be UTF-8. A bad line (invalid regex, invalid UTF-8) is a
//!   `file:line: invalid pattern "...": <reason>` error; loading carries on so that
//!   `spoa-guard check` reports every bad line (up to [`MAX_ERRORS_PER_FILE`](super::MAX_ERRORS_PER_FILE) per file).
//!
//! The real lists load unchanged. Mitchell Krog's `bad-user-agents.list` (699 PCRE
//! fragments) writes spaces as `\ ` and dots as `\.`. Rust's `regex` accepts both (it
//! allows escaping any ASCII character but letters, digits, `<` and `>`, and `\ ` is a
//! literal space), so the lines compile as they are; no unescaping is needed for
//! correctness. The classification below reads `\ ` and `\.` as the space and the dot
//! they stand for, which is what makes 690 of the 699 lines plain literals. The
//! ai.robots.txt HAProxy list (166 substrings) is meant for `literal = true,
//! ignore_case = true`, as in its `hdr_sub(user-agent) -i -f` usage.
//!
//! # How a file is compiled
//!
//! Each line is classified by a small, conservative scanner:
//!
//! - **literal**: nothing but plain characters and escaped punctuation (`\ `, `\.`,
//!   `\/`, ...), e.g. `Black\ Hole` → `Black Hole`; with `literal = true` every line is
//!   one;
//! - **wildcard**: the same plus bare `.`, e.g. `Mail.RU_Bot`; its longest literal
//!   piece (`RU_Bot`) must occur for the line to match, so it serves as an *anchor*, and
//!   the line's own regex confirms a hit;
//! - **regex**: anything else (`^`, classes, groups, repetition...). Every regex and
//!   wildcard line is compiled on its own, which both validates it with an exact
//!   line number and keeps a line such as `a)|(b` from escaping a combined expression.
//!
//! The literals and anchors go into one Aho-Corasick DFA (a `DfaScan`); the regex lines
//! into one alternation `(?:p1)|(?:p2)|...` (a lazy DFA inside `regex`). A rule matches
//! when the DFA meets an exact literal, or an anchor whose regex confirms, or the
//! alternation matches. Two exceptions: a few (≤ [`SMALL_SET`]) case-sensitive literals
//! use aho-corasick's own searcher, whose SIMD prefilter beats any byte-at-a-time walk;
//! and sets too large for a DFA (over [`DFA_MAX_BYTES`] of literals) use its
//! memory-lean NFA, with wildcard lines moved to the alternation.
//!
//! ## Why this matcher: measurements
//!
//! `benches/user_agent.rs`, group `choice`: the 699 lines of `bad-user-agents.list`
//! matched against the 200 most common real browser user agents of `browsers.jsonl`
//! (134 bytes on average; none of them matches) and the 78 (case-sensitive) or 82
//! (`ignore_case`) bot user agents of the fixtures that do match. Every candidate
//! compiles its regexes like this module (`regex::bytes`, Unicode off). Median time per
//! user agent from `target/criterion/choice*/*/new/estimates.json`; 2 vCPU AMD EPYC VM
//! shared with other builds (load average ≈ 2.5, so expect ±30 % between runs), rustc
//! 1.95, bench profile:
//!
//! | candidate | browser | browser, `ignore_case` | bot | bot, `ignore_case` | build (cs / ci) |
//! |---|---|---|---|---|---|
//! | (a) `RegexSet::is_match` | 449 ns | 604 ns | 231 ns | 299 ns | 2.6 / 129 ms |
//! | (b) one alternation `(?:p1)\|(?:p2)\|…`, `is_match` | 280 ns | 282 ns | 142 ns | 123 ns | 2.0 / 4.5 ms |
//! | (b) with `dfa_size_limit(16 MiB)` | 253 ns | 269 ns | 132 ns | 123 ns | 1.8 / 5.0 ms |
//! | (c) `AhoCorasick` (DFA) on the 690 literals + alternation of the other 9 | 438 ns | 910 ns | 122 ns | 125 ns | 4.6 / 4.7 ms |
//! | (d) this module: interleaved DFA walk, 9 anchored wildcard lines | **114 ns** | **119 ns** | **81 ns** | **87 ns** | 6.4 / 10.3 ms |
//!
//! Group `choice_full` repeats (b) and (d) with `ignore_case` over all 5,854 distinct
//! browser user agents and the 506 crawler examples of `crawler-user-agents.json` that
//! the list matches, enough variety to fill a lazy DFA's cache:
//!
//! | candidate | browser | bot |
//! |---|---|---|
//! | (b), default 2 MiB cache | 306 ns | **27.8 µs** |
//! | (b) with `dfa_size_limit(16 MiB)` | 296 ns | 152 ns |
//! | (d) this module | 177 ns | 118 ns |
//!
//! Memory, counted with a counting allocator in a scratch program after matching 7,970
//! user agents: (d) keeps 2.6 MiB (the DFA: about 5,000 states of 128 byte classes × 4
//! bytes; 3.5 MiB at the peak of loading) and nothing per thread; (b) keeps 0.55 MiB,
//! plus a lazy-DFA cache of 2.2–2.9 MiB in every thread that uses it (11.6 MiB after five
//! threads; 14.6 MiB with the 16 MiB limit).
//!
//! A second run ranked the candidates the same way, with (d) at 122–151 ns for browsers
//! and (b) at 253–285 ns. What the numbers say:
//!
//! - Without a usable prefilter every candidate is a DFA walk, one table lookup per byte,
//!   each depending on the previous one: about 1.6 ns per byte here, whatever the number
//!   of patterns. 699 distinct literals defeat the prefilters of both `regex` and
//!   `aho-corasick` (Teddy handles up to 64; beyond a few dozen it is dropped), and
//!   case-insensitive literals defeat them even for 9 (c).
//! - `RegexSet` pays for tracking which patterns matched although we only ask whether
//!   one did; with `ignore_case` its build takes 130 ms.
//! - With `ignore_case` and real traffic, the 699 case-folded alternatives overflow the
//!   lazy DFA's default 2 MiB cache: `regex` clears it again and again and falls back to
//!   its NFA simulation, 28 µs per bot. A larger `dfa_size_limit` cures that (every
//!   regex here is built with [`DFA_CACHE_BYTES`]) but cannot make the walk faster.
//! - Walking four parts of the user agent through the same DFA *at once* keeps four
//!   independent lookups in flight, so the walk runs at the CPU's load throughput rather
//!   than its latency: 2.6× faster than one walk over the same DFA (88 ns against 232 ns,
//!   best-of-200 in a prototype), and the Aho-Corasick DFA is built in full at load time,
//!   so there is no cache to thrash and nothing per thread. Stopping each part at the
//!   right point needs the trie depth of each DFA state; see `DfaScan`.
//!
//! Tried in a prototype and dropped: hashing 4-byte windows into a bitmap filter with
//! exact verification (≈ 160 ns), a bigram pre-filter in front of it (≈ 190 ns),
//! aho-corasick's SIMD Teddy over a 175-trigram cover of the list in three searchers
//! (≈ 600 ns: far too many false candidates), many small prefiltered searchers of 16–127
//! literals each (1.5–7 µs), and eight interleaved streams (no faster than four).
//!
//! # Costs
//!
//! - Matching is linear in the user agent's length for every rule kind (`regex` and
//!   Aho-Corasick never backtrack). A `DfaScan` costs about 0.7–0.9 ns per byte whatever
//!   the number of literals, allocates nothing, and keeps no per-thread state. A `regex`
//!   (inline patterns, regex lines of a file) keeps a lazy-DFA cache in each thread that
//!   uses it, up to [`DFA_CACHE_BYTES`]; a typical inline pattern costs 10–60 ns on a
//!   browser user agent, and every rule is a separate search: 20 inline rules cost
//!   0.8–1.2 µs walked one by one, about 220 ns as one alternation (`rules/inline_*` in
//!   the bench).
//! - Loading is linear in the file size: `bad-user-agents.list` in 6–11 ms and 2.6 MiB,
//!   the ai.robots.txt list in 1.5–1.9 ms and 0.75 MiB.
//! - Up to [`DFA_MAX_BYTES`] of literals (about 3,300 names of the bad-bot list's
//!   average length; a DFA of about 12 MiB) use a `DfaScan`; larger sets use
//!   aho-corasick's contiguous NFA, about a tenth of the memory and several times slower
//!   (≈ 0.6 µs per browser user agent for the bad-bot list's literals in the prototype).

use std::fmt;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::{dfa::DFA, AhoCorasick, Anchored, MatchKind, StartKind};
use bytes::Bytes;
use regex::bytes::{Regex, RegexBuilder};

use super::{FileErrors, QUOTE_CHARS};
use super::{LoadError, LoadErrors};
use crate::config::{RuleAction, UaSource, UserAgentRule};

/// Up to this many case-sensitive literals (and no wildcard lines), a file uses
/// aho-corasick's own searcher: its SIMD prefilter (Teddy) finds 4 to 32 literals in a
/// browser user agent in 20–50 ns, against about 85 ns for `DfaScan`, which has a
/// fixed cost per byte. Beyond about 32 literals the prefilter stops paying off (105 ns
/// at 64). Case-insensitive sets never use it: aho-corasick has no prefilter for them.
pub const SMALL_SET: usize = 32;

/// Most bytes of literals (sum of their lengths) compiled into a `DfaScan`; larger sets
/// use aho-corasick's contiguous NFA.
///
/// The DFA has about one state per literal byte (fewer where literals share prefixes), of
/// one 4-byte transition per byte class: the bad-bot list's 6.8 KiB of literals make
/// about 5,000 states of 128 classes, 2.6 MiB. At this limit that is about 12 MiB.
pub const DFA_MAX_BYTES: usize = 32 * 1024;

/// Lazy-DFA cache capacity per thread for compiled regexes (`RegexBuilder::dfa_size_limit`).
///
/// The default (2 MiB) is too small for an alternation of hundreds of case-insensitive
/// patterns under varied traffic: `regex` keeps clearing the cache and falls back to its
/// NFA simulation, 28–33 µs instead of about 150 ns per matching user agent with the
/// bad-bot list (see the module documentation); 16 MiB was enough there. The cache only
/// grows as states are needed, per thread that uses the regex, so this is an upper bound,
/// not an allocation (3.4 MiB in that measurement).
pub const DFA_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// User agents shorter than this many bytes per stream are scanned as one stream: the
/// interleaved walk has a fixed set-up cost that short strings (`curl/8.5.0`) do not repay.
const MIN_STREAM_BYTES: usize = 16;

/// Every `[[user_agent]]` rule, compiled, in configuration order.
///
/// Built once per rule set (at start-up, by `check`, by a reload) and shared read-only.
#[derive(Debug, Clone, Default)]
pub struct UaRules {
    /// In configuration order: the engine walks them and the first decisive match wins.
    rules: Vec<UaRule>,
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
    pub fn load(rules: &[UserAgentRule], config_path: &Path) -> Result<UaRules, LoadErrors> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut errors = Vec::new();
        for rule in rules {
            match UaRule::load(rule, config_path) {
                Ok(rule) => compiled.push(rule),
                Err(LoadErrors(mut errs)) => errors.append(&mut errs),
            }
        }
        if errors.is_empty() {
            Ok(UaRules { rules: compiled })
        } else {
            Err(LoadErrors(errors))
        }
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
    /// The compiled patterns.
    matcher: Matcher,
    /// Where the patterns came from, for [`UaRule::describe`].
    origin: Origin,
}

impl UaRule {
    /// Compiles one rule; `config_path` locates errors in an inline pattern.
    fn load(rule: &UserAgentRule, config_path: &Path) -> Result<UaRule, LoadErrors> {
        let flags = Flags {
            ignore_case: rule.ignore_case,
            literal: rule.literal,
        };
        let (matcher, origin) = match &rule.source {
            UaSource::Empty => (Matcher::Empty, Origin::Empty),
            UaSource::Pattern(pattern) if pattern.is_empty() => {
                return Err(LoadError::file(
                    config_path,
                    format!(
                        "user_agent {:?}: empty pattern (it would match every user agent)",
                        rule.name
                    ),
                )
                .into());
            }
            UaSource::Pattern(pattern) => {
                let source = if flags.literal {
                    regex::escape(pattern)
                } else {
                    pattern.clone()
                };
                let regex = build_regex(&source, flags.ignore_case).map_err(|e| {
                    LoadError::file(
                        config_path,
                        format!("user_agent {:?}: invalid regex: {e}", rule.name),
                    )
                })?;
                (Matcher::Regex(regex), Origin::Pattern(pattern.clone()))
            }
            UaSource::File(path) => {
                let text = std::fs::read(path)
                    .map_err(|e| LoadError::file(path, format!("cannot read: {e}")))?;
                let set = PatternSet::parse(path, &text, flags)?;
                let file = match path.file_name() {
                    Some(name) => name.to_string_lossy().into_owned(),
                    None => path.display().to_string(),
                };
                let patterns = set.patterns;
                (Matcher::Set(set), Origin::File { file, patterns })
            }
        };
        Ok(UaRule {
            name: Bytes::from(rule.name.clone()),
            action: rule.action,
            dry_run: rule.dry_run,
            matcher,
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

    /// Whether the rule matches the user agent `ua`.
    ///
    /// `ua` is `None` for a missing or empty `User-Agent` header (design.md: absent and
    /// empty are both "empty user agent"). `empty` rules match exactly that; pattern and
    /// file rules never match it. `Some(b"")` is treated as `None`, so callers need not
    /// normalise.
    ///
    /// Linear in the length of `ua`, allocation-free on the common path; see the module
    /// documentation for measured costs.
    pub fn matches(&self, ua: Option<&[u8]>) -> bool {
        let ua = ua.filter(|ua| !ua.is_empty());
        match (&self.matcher, ua) {
            (Matcher::Empty, ua) => ua.is_none(),
            (_, None) => false,
            (Matcher::Regex(regex), Some(ua)) => regex.is_match(ua),
            (Matcher::Set(set), Some(ua)) => set.is_match(ua),
        }
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
        match &self.matcher {
            Matcher::Empty => 0,
            Matcher::Regex(_) => 1,
            Matcher::Set(set) => set.patterns,
        }
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

/// A compiled rule.
#[derive(Debug, Clone)]
enum Matcher {
    /// `empty = true`.
    Empty,
    /// An inline `pattern` (escaped first when `literal`).
    Regex(Regex),
    /// A pattern file.
    Set(PatternSet),
}

/// The compiled lines of one pattern file: literals (and wildcard anchors) in an
/// Aho-Corasick automaton, the remaining regex lines in one alternation.
#[derive(Clone)]
struct PatternSet {
    /// Literal lines, and anchors of wildcard lines when `literals` is a [`DfaScan`].
    literals: Option<Literals>,
    /// Every line the literal automaton does not cover, as one alternation
    /// `(?:p1)|(?:p2)|...` (plus, rarely, lines that cannot join it).
    rest: Vec<Regex>,
    /// Pattern lines in the file, for logs and `describe`.
    patterns: usize,
}

impl fmt::Debug for PatternSet {
    // The automata and the alternation can be megabytes of text; show their sizes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("PatternSet");
        d.field("patterns", &self.patterns);
        match &self.literals {
            Some(Literals::Scan(scan)) => d.field("literals", scan),
            Some(Literals::Searcher(searcher)) => d.field(
                "literals",
                &format_args!("Searcher({} literals)", searcher.patterns_len()),
            ),
            None => d.field("literals", &None::<()>),
        };
        d.field("regexes", &self.rest.len()).finish()
    }
}

/// How a file's literals are searched; see [`SMALL_SET`] and [`DFA_MAX_BYTES`].
#[derive(Clone)]
enum Literals {
    /// aho-corasick's searcher: a prefiltered search for a few case-sensitive literals, or
    /// its NFA for very large sets.
    Searcher(AhoCorasick),
    /// The interleaved DFA walk, for everything else. Shared: the DFA can be megabytes.
    Scan(Arc<DfaScan>),
}

/// The form of one regex-mode line, as far as the matcher is concerned.
#[derive(Debug, PartialEq, Eq)]
enum Form {
    /// Matches exactly these bytes, anywhere.
    Literal(Vec<u8>),
    /// Literal pieces joined by `.`; holds the longest piece, which any match contains.
    Wildcard(Vec<u8>),
    /// Anything else.
    Regex,
}

/// Classifies a regex-mode line. Conservative: whatever it does not fully understand is
/// [`Form::Regex`], left to the `regex` crate.
///
/// In Rust's regex syntax a backslash before an ASCII character that is not a letter, a
/// digit, `<` or `>` always stands for that character (`\ `, `\.`, `\/`, `\-`...), and
/// outside a class only `\ . + * ? ( ) | [ ] { } ^ $` are special (`#` only under the `x`
/// flag, which needs a group to set).
fn classify(line: &str) -> Form {
    let mut pieces: Vec<Vec<u8>> = vec![Vec::new()];
    let mut chars = line.chars();
    let mut utf8 = [0u8; 4];
    while let Some(c) = chars.next() {
        let c = match c {
            '\\' => match chars.next() {
                Some(e) if e.is_ascii() && !e.is_ascii_alphanumeric() && e != '<' && e != '>' => e,
                _ => return Form::Regex,
            },
            '.' => {
                pieces.push(Vec::new());
                continue;
            }
            '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                return Form::Regex
            }
            c => c,
        };
        if let Some(piece) = pieces.last_mut() {
            piece.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
    let wildcard = pieces.len() > 1;
    // The first longest piece: which one does not matter for correctness, only for how
    // often the confirming regex runs.
    let longest = pieces
        .into_iter()
        .reduce(|best, p| if p.len() > best.len() { p } else { best })
        .unwrap_or_default();
    match (wildcard, longest.is_empty()) {
        (false, _) => Form::Literal(longest),
        (true, false) => Form::Wildcard(longest),
        (true, true) => Form::Regex,
    }
}

impl PatternSet {
    /// Parses and compiles the text of the pattern file at `path` (used in errors).
    fn parse(path: &Path, text: &[u8], flags: Flags) -> Result<PatternSet, LoadErrors> {
        let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        let mut exact: Vec<Vec<u8>> = Vec::new();
        // (anchor, the line's own regex, the line)
        let mut wildcards: Vec<(Vec<u8>, Regex, String)> = Vec::new();
        let mut regexes: Vec<(Regex, String)> = Vec::new();
        let mut patterns: usize = 0;
        let mut errors = FileErrors::new(path);

        for (line_no, line) in (1usize..).zip(text.split(|&b| b == b'\n')) {
            let line = trim_line(line, !flags.literal);
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            patterns = patterns.saturating_add(1);
            let checked = match std::str::from_utf8(line) {
                Err(_) => Err((
                    String::from_utf8_lossy(line).into_owned(),
                    "not valid UTF-8".to_owned(),
                )),
                Ok(line) if flags.literal => {
                    exact.push(line.as_bytes().to_vec());
                    Ok(())
                }
                Ok(line) => match classify(line) {
                    Form::Literal(bytes) => {
                        exact.push(bytes);
                        Ok(())
                    }
                    form => match build_regex(line, flags.ignore_case) {
                        Ok(regex) => {
                            match form {
                                Form::Wildcard(anchor) => {
                                    wildcards.push((anchor, regex, line.to_owned()))
                                }
                                _ => regexes.push((regex, line.to_owned())),
                            }
                            Ok(())
                        }
                        Err(reason) => Err((line.to_owned(), reason)),
                    },
                },
            };
            if let Err((line, reason)) = checked {
                errors.line(
                    line_no,
                    format!("invalid pattern {}: {reason}", quote(&line)),
                );
            }
        }
        errors.finish()?;
        let compile_error = |e: String| LoadError::file(path, format!("cannot compile: {e}"));

        let literal_bytes = exact
            .iter()
            .map(Vec::len)
            .chain(wildcards.iter().map(|(anchor, ..)| anchor.len()))
            .fold(0usize, usize::saturating_add);
        let small = !flags.ignore_case && wildcards.is_empty() && exact.len() <= SMALL_SET;
        let literals = if exact.is_empty() && wildcards.is_empty() {
            None
        } else if small || literal_bytes > DFA_MAX_BYTES {
            // Wildcard lines join the regex alternation.
            regexes.extend(wildcards.drain(..).map(|(_, regex, line)| (regex, line)));
            if exact.is_empty() {
                None
            } else {
                let searcher = AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostFirst)
                    .ascii_case_insensitive(flags.ignore_case)
                    .build(&exact)
                    .map_err(|e| compile_error(e.to_string()))?;
                Some(Literals::Searcher(searcher))
            }
        } else {
            let mut keys = exact;
            let mut confirm = vec![None; keys.len()];
            let mut confirms = Vec::with_capacity(wildcards.len());
            for (anchor, regex, _) in wildcards {
                keys.push(anchor);
                confirm.push(Some(confirms.len()));
                confirms.push(regex);
            }
            let scan =
                DfaScan::new(&keys, confirm, confirms, flags.ignore_case).map_err(compile_error)?;
            Some(Literals::Scan(Arc::new(scan)))
        };

        // A valid regex wrapped in `(?:...)` is a balanced group whose flags stay inside
        // it, so the alternation is exactly the union of the lines, except for a `#`
        // comment under the `x` flag, which would swallow the rest of the alternation:
        // such lines (conservatively, any line with both `(?` and `#`) stay on their own.
        let (alone, joined): (Vec<_>, Vec<_>) = regexes
            .into_iter()
            .partition(|(_, line)| line.contains("(?") && line.contains('#'));
        let mut rest: Vec<Regex> = alone.into_iter().map(|(regex, _)| regex).collect();
        match joined.len() {
            0 => {}
            1 => rest.extend(joined.into_iter().map(|(regex, _)| regex)),
            _ => {
                let alternation = joined
                    .iter()
                    .map(|(_, line)| format!("(?:{line})"))
                    .collect::<Vec<_>>()
                    .join("|");
                rest.push(build_regex(&alternation, flags.ignore_case).map_err(compile_error)?);
            }
        }
        Ok(PatternSet {
            literals,
            rest,
            patterns,
        })
    }

    /// Whether any pattern of the file matches `ua`.
    fn is_match(&self, ua: &[u8]) -> bool {
        let literal = match &self.literals {
            Some(Literals::Scan(scan)) => scan.is_match(ua),
            Some(Literals::Searcher(searcher)) => searcher.is_match(ua),
            None => false,
        };
        literal || self.rest.iter().any(|rest| rest.is_match(ua))
    }
}

/// `line` without the ASCII whitespace around it, except that with `escapes` a space or
/// tab escaped by the last backslash (`Foo\ `) is kept: it is part of the pattern.
fn trim_line(line: &[u8], escapes: bool) -> &[u8] {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let rest = line.get(start..).unwrap_or_default();
    let trimmed = rest.trim_ascii_end();
    let backslashes = trimmed.iter().rev().take_while(|&&b| b == b'\\').count();
    let escaped = matches!(rest.get(trimmed.len()), Some(b' ' | b'\t'));
    if escapes && backslashes % 2 == 1 && escaped {
        rest.get(..=trimmed.len()).unwrap_or(trimmed)
    } else {
        trimmed
    }
}

/// Compiles one pattern with the settings every user-agent regex uses; the error is one
/// line (the `regex` crate's syntax errors span several, with a caret diagram).
fn build_regex(pattern: &str, ignore_case: bool) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .case_insensitive(ignore_case)
        .dfa_size_limit(DFA_CACHE_BYTES)
        .build()
        .map_err(|e| one_line(&e.to_string()))
}

/// The `error: ...` line of a multi-line `regex` error, or the whole text on one line.
fn one_line(error: &str) -> String {
    error
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| error.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `text` in double quotes, control characters escaped (backslashes are left alone: they
/// are regex syntax), cut to [`QUOTE_CHARS`].
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len().saturating_add(2));
    out.push('"');
    for (i, c) in text.chars().enumerate() {
        if i == QUOTE_CHARS {
            out.push('…');
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A set of literals compiled into one Aho-Corasick DFA and searched by walking four
/// parts of the haystack through it in lock step.
///
/// # Why four streams
///
/// A DFA walk is a chain of dependent table loads: the next state's address is known
/// only once the current load completes, so one walk costs a load latency per byte. Four
/// walks over four different parts of the haystack are independent, so the CPU overlaps
/// their loads: 91 ns instead of 230 ns for a 134-byte user agent against the 690
/// literals of the bad-bot list (eight streams are no faster).
///
/// # Where a stream stops
///
/// Stream `k` starts in the start state at the beginning of part `k` and so finds every
/// occurrence that *starts* in part `k`, provided it keeps walking until that occurrence
/// ends. An occurrence can run into the next part, so after reaching the end of its part
/// at offset `e` the stream continues while its state's trie depth `d` (the length of
/// the longest suffix of what it has read that is a prefix of some literal) exceeds the
/// bytes `j` it has read past `e`. Once `d <= j`, every partial match still alive started
/// at or after `e`, where stream `k + 1` finds it. On a browser user agent this costs a
/// few bytes per stream. The depth of a state is its distance from the start state in
/// the DFA, computed once by a breadth-first walk.
///
/// # Matches
///
/// The DFA is built with standard (overlapping) semantics, so a state is a match state
/// exactly when some literal ends at the current byte. When every literal is an exact
/// pattern, the first match state answers `true`. Otherwise some literals are anchors of
/// wildcard lines, and a hit rescans in one stream, running each anchor's confirming
/// regex at most once, so the slow path stays linear.
struct DfaScan {
    /// Standard-semantics, unanchored Aho-Corasick DFA over all literals.
    dfa: DFA,
    /// The unanchored start state.
    start: StateID,
    /// Trie depth of each state, indexed by `state id >> shift`. `u32::MAX` (never
    /// stops a stream) for a state the breadth-first walk did not reach.
    depth: Box<[u32]>,
    /// State ids are multiples of `1 << shift` (the DFA premultiplies them by its stride).
    shift: u32,
    /// Per literal (by aho-corasick pattern id): `None` for an exact pattern, or the index
    /// in `confirms` of the wildcard regex it anchors.
    confirm: Box<[Option<usize>]>,
    /// The regexes of wildcard lines.
    confirms: Box<[Regex]>,
    /// No anchors: a match state means a match.
    exact: bool,
}

impl DfaScan {
    /// Compiles `literals`; `confirm` has one entry per literal (see the field).
    fn new(
        literals: &[Vec<u8>],
        confirm: Vec<Option<usize>>,
        confirms: Vec<Regex>,
        ignore_case: bool,
    ) -> Result<DfaScan, String> {
        let dfa = DFA::builder()
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Unanchored)
            .ascii_case_insensitive(ignore_case)
            .prefilter(false)
            .build(literals)
            .map_err(|e| e.to_string())?;
        let start = dfa.start_state(Anchored::No).map_err(|e| e.to_string())?;

        // Breadth-first from the start state. Only bytes that occur in some literal (in
        // either case with ignore_case) can lead anywhere but the start state.
        let mut alphabet = [false; 256];
        for &b in literals.iter().flatten() {
            for b in [b, b.to_ascii_lowercase(), b.to_ascii_uppercase()] {
                if let Some(slot) = alphabet.get_mut(usize::from(b)) {
                    *slot = true;
                }
            }
        }
        let alphabet: Vec<u8> = (0..=255u8)
            .filter(|&b| alphabet.get(usize::from(b)) == Some(&true))
            .collect();
        // Visited states are marked in a table indexed by the raw state id (ids are
        // premultiplied, so this is as large as the DFA's transition table, briefly):
        // hashing 350,000 transitions of the bad-bot list cost 15 ms.
        let mut seen: Vec<bool> = Vec::new();
        let mut visit = |sid: StateID| {
            let at = sid.as_usize();
            if seen.len() <= at {
                seen.resize(
                    at.saturating_add(1).max(seen.len().saturating_mul(2)),
                    false,
                );
            }
            match seen.get_mut(at) {
                Some(slot) if !*slot => {
                    *slot = true;
                    true
                }
                _ => false,
            }
        };
        visit(start);
        let mut found: Vec<(StateID, u32)> = vec![(start, 0)];
        let mut next = 0;
        while let Some(&(sid, depth)) = found.get(next) {
            next += 1;
            for &b in &alphabet {
                let to = dfa.next_state(Anchored::No, sid, b);
                if visit(to) {
                    found.push((to, depth.saturating_add(1)));
                }
            }
        }
        let shift = found
            .iter()
            .map(|(sid, _)| sid.as_usize())
            .filter(|&sid| sid != 0)
            .map(usize::trailing_zeros)
            .min()
            .unwrap_or(0);
        let max = found
            .iter()
            .map(|(sid, _)| sid.as_usize() >> shift)
            .max()
            .unwrap_or(0);
        let mut depth = vec![u32::MAX; max.saturating_add(1)];
        for (sid, d) in found {
            if let Some(slot) = depth.get_mut(sid.as_usize() >> shift) {
                *slot = d;
            }
        }
        let exact = confirm.iter().all(Option::is_none);
        Ok(DfaScan {
            dfa,
            start,
            depth: depth.into_boxed_slice(),
            shift,
            confirm: confirm.into_boxed_slice(),
            confirms: confirms.into_boxed_slice(),
            exact,
        })
    }

    /// Whether some literal occurs in `hay` (and, for an anchor, its regex confirms).
    fn is_match(&self, hay: &[u8]) -> bool {
        match self.first_match_state(hay) {
            None => false,
            Some(sid) if self.exact || self.ends_exact(sid) => true,
            Some(_) => self.confirmed(hay),
        }
    }

    #[inline(always)]
    fn step(&self, sid: StateID, byte: u8) -> StateID {
        self.dfa.next_state(Anchored::No, sid, byte)
    }

    #[inline(always)]
    fn is_match_state(&self, sid: StateID) -> bool {
        self.dfa.is_match(sid)
    }

    /// Whether an exact literal (not only anchors) ends in match state `sid`.
    fn ends_exact(&self, sid: StateID) -> bool {
        (0..self.dfa.match_len(sid)).any(|i| {
            let pid = self.dfa.match_pattern(sid, i);
            matches!(self.confirm.get(pid.as_usize()), Some(None))
        })
    }

    /// Trie depth of `sid` (`u32::MAX` if unknown, which keeps a stream going).
    fn depth(&self, sid: StateID) -> u32 {
        self.depth
            .get(sid.as_usize() >> self.shift)
            .copied()
            .unwrap_or(u32::MAX)
    }

    /// The first match state the walk over `hay` enters, if any: four interleaved
    /// streams, or one for short haystacks. See the type's documentation.
    fn first_match_state(&self, hay: &[u8]) -> Option<StateID> {
        let part = hay.len() / 4;
        let split = |at: usize| hay.split_at_checked(at).map(|(_, tail)| tail);
        let (Some(p1), Some(p2), Some(p3)) = (split(part), split(2 * part), split(3 * part)) else {
            return hit(self.walk(self.start, hay));
        };
        if part < MIN_STREAM_BYTES {
            return hit(self.walk(self.start, hay));
        }
        let mut s = [self.start; 4];
        for (((&b0, &b1), &b2), &b3) in hay.iter().zip(p1).zip(p2).zip(p3).take(part) {
            s[0] = self.step(s[0], b0);
            s[1] = self.step(s[1], b1);
            s[2] = self.step(s[2], b2);
            s[3] = self.step(s[3], b3);
            if self.is_match_state(s[0])
                | self.is_match_state(s[1])
                | self.is_match_state(s[2])
                | self.is_match_state(s[3])
            {
                return s.into_iter().find(|&sid| self.is_match_state(sid));
            }
        }
        // The last stream owns the remainder of the haystack.
        let rest = p3.get(part..).unwrap_or_default();
        if let ControlFlow::Break(sid) = self.walk(s[3], rest) {
            return Some(sid);
        }
        // The others run on into the next part while a partial match is alive from theirs.
        [(s[0], p1), (s[1], p2), (s[2], p3)]
            .into_iter()
            .find_map(|(sid, after)| self.run_on(sid, after))
    }

    /// Walks `bytes` from `sid`: `Break` with the first match state entered, else
    /// `Continue` with the final state.
    fn walk(&self, mut sid: StateID, bytes: &[u8]) -> ControlFlow<StateID, StateID> {
        for &b in bytes {
            sid = self.step(sid, b);
            if self.is_match_state(sid) {
                return ControlFlow::Break(sid);
            }
        }
        ControlFlow::Continue(sid)
    }

    /// Continues a stream past the end of its part into `after`, while the partial match
    /// it holds started inside its part; the match state it enters, if any.
    fn run_on(&self, mut sid: StateID, after: &[u8]) -> Option<StateID> {
        let mut past: u32 = 0;
        for &b in after {
            if self.depth(sid) <= past {
                return None;
            }
            sid = self.step(sid, b);
            if self.is_match_state(sid) {
                return Some(sid);
            }
            past = past.saturating_add(1);
        }
        None
    }

    /// The slow path when anchors exist: one stream over `hay`, checking every literal
    /// that ends at each match state; each confirming regex runs at most once.
    fn confirmed(&self, hay: &[u8]) -> bool {
        let mut tried = vec![false; self.confirms.len()];
        let mut sid = self.start;
        for &b in hay {
            sid = self.step(sid, b);
            if !self.is_match_state(sid) {
                continue;
            }
            for i in 0..self.dfa.match_len(sid) {
                let pid = self.dfa.match_pattern(sid, i);
                match self.confirm.get(pid.as_usize()) {
                    Some(None) => return true,
                    Some(&Some(c)) => {
                        if let (Some(done), Some(regex)) = (tried.get_mut(c), self.confirms.get(c))
                        {
                            if !*done {
                                *done = true;
                                if regex.is_match(hay) {
                                    return true;
                                }
                            }
                        }
                    }
                    None => {}
                }
            }
        }
        false
    }
}

/// The match state a [`DfaScan::walk`] stopped at, if it stopped at one.
fn hit(flow: ControlFlow<StateID, StateID>) -> Option<StateID> {
    match flow {
        ControlFlow::Break(sid) => Some(sid),
        ControlFlow::Continue(_) => None,
    }
}

impl fmt::Debug for DfaScan {
    // The DFA's own Debug prints every transition; show its size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DfaScan")
            .field("literals", &self.dfa.patterns_len())
            .field("anchored_regexes", &self.confirms.len())
            .field(
                "states",
                &self.depth.iter().filter(|&&d| d != u32::MAX).count(),
            )
            .field("memory_bytes", &self.dfa.memory_usage())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::MAX_ERRORS_PER_FILE;
    use proptest::prelude::*;
    use std::path::PathBuf;
    use std::sync::OnceLock;

    const GPTBOT: &[u8] = b"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0; +https://openai.com/gptbot)";
    const CHROME: &[u8] = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/137.0.0.0 Safari/537.36";

    fn rule(name: &str, source: UaSource) -> UserAgentRule {
        UserAgentRule {
            name: name.to_owned(),
            source,
            action: RuleAction::Deny,
            ignore_case: false,
            literal: false,
            dry_run: false,
        }
    }

    fn pattern(p: &str) -> UserAgentRule {
        rule("p", UaSource::Pattern(p.to_owned()))
    }

    fn load_one(rule: UserAgentRule) -> UaRule {
        let rules = UaRules::load(&[rule], Path::new("spoa-guard.toml")).unwrap();
        rules.rules()[0].clone()
    }

    /// A file rule over `text`, compiled without touching the disk.
    fn file_rule(text: &str, ignore_case: bool, literal: bool) -> UaRule {
        let flags = Flags {
            ignore_case,
            literal,
        };
        let set = PatternSet::parse(Path::new("lists/ua.list"), text.as_bytes(), flags).unwrap();
        UaRule {
            name: Bytes::from_static(b"f"),
            action: RuleAction::Deny,
            dry_run: false,
            origin: Origin::File {
                file: "ua.list".into(),
                patterns: set.patterns,
            },
            matcher: Matcher::Set(set),
        }
    }

    /// The `file:line: message` lines `check` would print for a pattern file.
    fn file_errors(text: &[u8], flags: Flags) -> Vec<String> {
        let err = PatternSet::parse(Path::new("lists/bad.list"), text, flags).unwrap_err();
        err.0.iter().map(ToString::to_string).collect()
    }

    const REGEX_MODE: Flags = Flags {
        ignore_case: false,
        literal: false,
    };

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/useragents")
            .join(name)
    }

    fn fixture_lines(name: &str) -> Vec<Vec<u8>> {
        std::fs::read_to_string(fixture(name))
            .unwrap()
            .lines()
            .map(|l| l.as_bytes().to_vec())
            .collect()
    }

    /// The two real lists as configured in practice: the bad-bot list as upstream uses it
    /// (case-insensitive) and the AI list as literal, case-insensitive substrings.
    fn real_rules() -> &'static UaRules {
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

    #[test]
    fn debug_output_stays_short() {
        let text = format!("{:?}", real_rules());
        assert!(text.len() < 2_000, "{text}");
        assert!(
            text.contains("DfaScan { literals: 699, anchored_regexes: 9"),
            "{text}"
        );
    }

    #[test]
    fn rules_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<UaRules>();
    }

    #[test]
    fn inline_pattern_is_searched_unanchored() {
        let r = load_one(pattern("sqlmap|nikto"));
        assert!(r.matches(Some(b"sqlmap/1.7")));
        assert!(r.matches(Some(b"Mozilla/5.0 (Nikto) nikto/2.5")));
        assert!(!r.matches(Some(b"SQLMAP/1.7")));
        assert!(!r.matches(Some(CHROME)));
        let anchored = load_one(pattern("^curl/"));
        assert!(anchored.matches(Some(b"curl/8.5.0")));
        assert!(!anchored.matches(Some(b"libcurl/8.5.0")));
    }

    #[test]
    fn ignore_case_for_patterns_and_files() {
        let mut r = pattern("sqlmap");
        r.ignore_case = true;
        assert!(load_one(r).matches(Some(b"SQLMap/1.7")));
        // Both the interleaved DFA (ignore_case never uses the small searcher) and the
        // regex alternation honour it.
        let f = file_rule("AhrefsBot\n^curl/\n", true, false);
        assert!(f.matches(Some(b"mozilla/5.0 (compatible; ahrefsbot/7.0)")));
        assert!(f.matches(Some(b"CURL/8")));
        let f = file_rule("AhrefsBot\n^curl/\n", false, false);
        assert!(!f.matches(Some(b"mozilla/5.0 (compatible; ahrefsbot/7.0)")));
        assert!(!f.matches(Some(b"CURL/8")));
    }

    #[test]
    fn ignore_case_is_ascii_only() {
        // Unicode mode is off: no Kelvin sign for k, no long s for s, no É for é.
        let f = file_rule("kiss\né\n", true, false);
        assert!(f.matches(Some(b"KISS")));
        assert!(!f.matches(Some("\u{212a}i\u{17f}\u{17f}".as_bytes())));
        assert!(f.matches(Some("café".as_bytes())));
        assert!(!f.matches(Some("CAFÉ".as_bytes())));
        let mut r = pattern("(?u:k)");
        r.ignore_case = true;
        assert!(load_one(r).matches(Some("\u{212a}".as_bytes())));
    }

    #[test]
    fn literal_patterns_have_no_metacharacters() {
        let mut r = pattern("a.b (x)");
        r.literal = true;
        let r = load_one(r);
        assert!(r.matches(Some(b"--a.b (x)--")));
        assert!(!r.matches(Some(b"axb x")));
        let f = file_rule("Black\\ Hole\n.*\n", false, true);
        assert!(f.matches(Some(b"a Black\\ Hole b")));
        assert!(!f.matches(Some(b"a Black Hole b")));
        assert!(f.matches(Some(b"x.*y")));
        assert!(!f.matches(Some(b"anything")));
    }

    #[test]
    fn empty_rule_matches_missing_or_empty_user_agent_only() {
        let empty = load_one(rule("empty-ua", UaSource::Empty));
        assert!(empty.matches(None));
        assert!(empty.matches(Some(b"")));
        assert!(!empty.matches(Some(b" ")));
        assert!(!empty.matches(Some(CHROME)));
        for p in ["^$", ".*", "x?"] {
            let r = load_one(pattern(p));
            assert!(!r.matches(None), "{p:?}");
            assert!(!r.matches(Some(b"")), "{p:?}");
        }
        let f = file_rule("^\n", false, false);
        assert!(!f.matches(None));
        assert!(f.matches(Some(b"x")));
    }

    #[test]
    fn file_comments_blank_lines_crlf_and_bom() {
        let text = "\u{feff}# header\r\n\r\n  AhrefsBot  \r\n\t# indented comment\r\n\tBlack\\ Hole\t\r\nSemrushBot";
        let f = file_rule(text, false, false);
        assert_eq!(f.patterns(), 3);
        assert!(f.matches(Some(b"AhrefsBot/7.0")));
        assert!(f.matches(Some(b"Black Hole")));
        assert!(f.matches(Some(b"SemrushBot/7~bl")));
        assert!(!f.matches(Some(b"# header")));
        assert!(!f.matches(Some(b"indented comment")));
        // A pattern may contain '#' past its start, or start with an escaped one.
        let f = file_rule("a#b\n\\#tag\n", false, false);
        assert!(f.matches(Some(b"xa#by")));
        assert!(f.matches(Some(b"#tag")));
        // A file with no patterns is valid and matches nothing.
        let f = file_rule("# nothing yet\n\n", false, false);
        assert_eq!(f.patterns(), 0);
        assert!(!f.matches(Some(CHROME)));
    }

    #[test]
    fn escaped_space_and_dot() {
        // Rust's regex accepts `\ ` (a literal space) and `\.` as they are; the
        // classifier reads them the same way, which is what lets them go to the DFA.
        assert_eq!(
            classify(r"Black\ Hole"),
            Form::Literal(b"Black Hole".to_vec())
        );
        assert_eq!(classify(r"1h4x\.com"), Form::Literal(b"1h4x.com".to_vec()));
        assert_eq!(classify("Mail.RU_Bot"), Form::Wildcard(b"RU_Bot".to_vec()));
        assert!(build_regex(r"Black\ Hole", false)
            .unwrap()
            .is_match(b"Black Hole"));
        let f = file_rule("Black\\ Hole\n1h4x\\.com\nMail.RU_Bot\n", false, false);
        assert!(f.matches(Some(b"Black Hole")));
        assert!(!f.matches(Some(b"Black\\ Hole")));
        assert!(f.matches(Some(b"1h4x.com")));
        assert!(!f.matches(Some(b"1h4xAcom")));
        assert!(f.matches(Some(b"Mail.RU_Bot/2.0")));
        assert!(f.matches(Some(b"Mail_RU_Bot/2.0")));
        assert!(!f.matches(Some(b"MailRU_Bot/2.0")));
        // An escaped space at the end of a line survives trimming; an escaped backslash
        // before a trailing space does not keep it.
        let f = file_rule("Foo\\ \t \r\nBar\\\\ \r\n", false, false);
        assert!(f.matches(Some(b"Foo Bar")));
        assert!(!f.matches(Some(b"Foo")));
        assert!(f.matches(Some(b"Bar\\")));
        assert_eq!(trim_line(b" a\\ ", true), b"a\\ ");
        assert_eq!(trim_line(b" a\\ ", false), b"a\\");
        assert_eq!(trim_line(b"a\\\\ ", true), b"a\\\\");
        assert_eq!(trim_line(b"\\\r", true), b"\\");
    }

    #[test]
    fn regex_lines_are_joined_safely() {
        // Under the x flag, '#' starts a comment that would swallow the rest of a
        // combined alternation; such a line is kept apart.
        let f = file_rule("(?x) foo \\d # a comment\n^bar\n[0-9]z\n", false, false);
        let Matcher::Set(set) = &f.matcher else {
            panic!("not a set")
        };
        assert_eq!(set.rest.len(), 2);
        assert!(f.matches(Some(b"foo1")));
        assert!(!f.matches(Some(b"foo # a comment")));
        assert!(f.matches(Some(b"bar")));
        assert!(f.matches(Some(b"x7z")));
        assert!(!f.matches(Some(b"x bar")));
        // Flags set inside a line stay inside it.
        let f = file_rule("(?i)abc\n^XyZ\n", false, false);
        assert!(f.matches(Some(b"ABC")));
        assert!(f.matches(Some(b"XyZ")));
        assert!(!f.matches(Some(b"xyz")));
    }

    #[test]
    fn classify_is_conservative() {
        assert_eq!(classify("GT::WWW"), Form::Literal(b"GT::WWW".to_vec()));
        assert_eq!(classify("Go!Zilla"), Form::Literal(b"Go!Zilla".to_vec()));
        assert_eq!(classify(r"a\/b\-c"), Form::Literal(b"a/b-c".to_vec()));
        assert_eq!(classify("é"), Form::Literal("é".as_bytes().to_vec()));
        for p in [
            "^curl", "a$", "a+", "a*", "a?", "(a)", "a|b", "[ab]", "a{2}", r"\d", r"\<a", r"a\>",
            r"a\", r"\é", "...", ".",
        ] {
            assert_eq!(classify(p), Form::Regex, "{p:?}");
        }
        assert_eq!(classify("a..bc."), Form::Wildcard(b"bc".to_vec()));
    }

    #[test]
    fn non_utf8_user_agents() {
        // `\xff` is the byte 0xFF (`\x{ff}` would be U+00FF in UTF-8, even without Unicode).
        let f = file_rule("AhrefsBot\nMail.RU_Bot\n^\\xff\n", false, false);
        assert!(f.matches(Some(b"\xff\xfe AhrefsBot \xc3")));
        assert!(f.matches(Some(b"Mail\xffRU_Bot")), "'.' is any byte");
        assert!(f.matches(Some(b"\xff")));
        assert!(!f.matches(Some(b"\xfe\xff")));
        let r = load_one(pattern("caf."));
        assert!(r.matches(Some(b"caf\xe9")));
        // Arbitrary bytes through every kind of matcher.
        let junk: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for rule in real_rules().rules() {
            let _ = rule.matches(Some(&junk));
        }
    }

    #[test]
    fn bad_regex_lines_are_reported_with_file_and_line() {
        let text = b"AhrefsBot\n# ok\na(b\nMail.RU_Bot\n[z-a]\nx{2,1}\nfine\\ line\n\\\xff\xfe\n";
        assert_eq!(
            file_errors(text, REGEX_MODE),
            [
                r#"lists/bad.list:3: invalid pattern "a(b": unclosed group"#,
                r#"lists/bad.list:5: invalid pattern "[z-a]": invalid character class range, the start must be <= the end"#,
                r#"lists/bad.list:6: invalid pattern "x{2,1}": invalid repetition count range, the start must be <= the end"#,
                r#"lists/bad.list:8: invalid pattern "\��": not valid UTF-8"#,
            ]
        );
        // A line that would break out of a combined alternation is caught on its own.
        assert_eq!(
            file_errors(b"a)|(b\n", REGEX_MODE),
            [r#"lists/bad.list:1: invalid pattern "a)|(b": unopened group"#]
        );
        // Literal mode accepts any UTF-8 text.
        let literal = Flags {
            ignore_case: false,
            literal: true,
        };
        assert!(PatternSet::parse(Path::new("x"), b"a(b\n[z-a]\n", literal).is_ok());
    }

    #[test]
    fn an_empty_inline_pattern_is_an_error() {
        for literal in [false, true] {
            let mut r = rule("oops", UaSource::Pattern(String::new()));
            r.literal = literal;
            let err = UaRules::load(&[r], Path::new("spoa-guard.toml")).unwrap_err();
            assert_eq!(
                err.to_string(),
                r#"spoa-guard.toml: user_agent "oops": empty pattern (it would match every user agent)"#
            );
        }
    }

    #[test]
    fn errors_are_capped_per_file() {
        let text = "(\n".repeat(MAX_ERRORS_PER_FILE + 5);
        let errors = file_errors(text.as_bytes(), REGEX_MODE);
        assert_eq!(errors.len(), MAX_ERRORS_PER_FILE + 1);
        assert_eq!(
            errors.last().unwrap(),
            "lists/bad.list: 5 more invalid lines not shown (only the first 100 are reported)"
        );
    }

    #[test]
    fn long_patterns_are_quoted_shortened() {
        let long = format!("({}", "a".repeat(100));
        let errors = file_errors(long.as_bytes(), REGEX_MODE);
        let expected = format!(
            "lists/bad.list:1: invalid pattern \"({}…\": unclosed group",
            "a".repeat(59)
        );
        assert_eq!(errors, [expected]);
    }

    #[test]
    fn every_error_of_every_rule_is_collected() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.list");
        std::fs::write(&bad, "ok\n(\nok\n[\n").unwrap();
        let missing = dir.path().join("missing.list");
        let rules = [
            rule("scanners", UaSource::Pattern("sqlmap(".into())),
            rule("bad-file", UaSource::File(bad.clone())),
            rule("fine", UaSource::Pattern("ok".into())),
            rule("missing", UaSource::File(missing.clone())),
        ];
        let err = UaRules::load(&rules, Path::new("/etc/spoa-guard.toml")).unwrap_err();
        let lines: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert_eq!(
            lines[0],
            r#"/etc/spoa-guard.toml: user_agent "scanners": invalid regex: unclosed group"#
        );
        assert_eq!(
            lines[1],
            format!(
                r#"{}:2: invalid pattern "(": unclosed group"#,
                bad.display()
            )
        );
        assert_eq!(
            lines[2],
            format!(
                r#"{}:4: invalid pattern "[": unclosed character class"#,
                bad.display()
            )
        );
        assert!(
            lines[3].starts_with(&format!("{}: cannot read: ", missing.display())),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn order_names_actions_and_flags_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("bots.list");
        std::fs::write(&list, "AhrefsBot\nSemrushBot\n").unwrap();
        let mut allow = rule("good-monitor", UaSource::Pattern("^UptimeRobot/".into()));
        allow.action = RuleAction::Allow;
        let mut bots = rule("bots", UaSource::File(list));
        bots.dry_run = true;
        bots.ignore_case = true;
        let mut lit = rule("lit", UaSource::Pattern("a.b".into()));
        lit.literal = true;
        let rules = UaRules::load(
            &[allow, bots, lit, rule("empty-ua", UaSource::Empty)],
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(rules.len(), 4);
        assert!(!rules.is_empty());
        assert_eq!(rules.patterns(), 1 + 2 + 1);
        let summary: Vec<_> = rules
            .rules()
            .iter()
            .map(|r| (r.name().clone(), r.action(), r.dry_run(), r.describe()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    Bytes::from("good-monitor"),
                    RuleAction::Allow,
                    false,
                    r#"pattern "^UptimeRobot/""#.to_owned()
                ),
                (
                    Bytes::from("bots"),
                    RuleAction::Deny,
                    true,
                    "file bots.list (2 patterns), ignore_case".to_owned()
                ),
                (
                    Bytes::from("lit"),
                    RuleAction::Deny,
                    false,
                    r#"pattern "a.b", literal"#.to_owned()
                ),
                (
                    Bytes::from("empty-ua"),
                    RuleAction::Deny,
                    false,
                    "empty user agent".to_owned()
                ),
            ]
        );
        let none = UaRules::load(&[], Path::new("c.toml")).unwrap();
        assert!(none.is_empty());
        assert_eq!(none.patterns(), 0);
    }

    #[test]
    fn real_lists_load_and_match_known_bots() {
        let rules = real_rules();
        let by_name = |name: &str| {
            rules
                .rules()
                .iter()
                .find(|r| r.name() == name.as_bytes())
                .unwrap()
        };
        let (bad, ai) = (by_name("bad-bots"), by_name("ai-crawlers"));
        assert_eq!(bad.patterns(), 699);
        assert_eq!(ai.patterns(), 166);
        assert_eq!(
            bad.describe(),
            "file bad-user-agents.list (699 patterns), ignore_case"
        );
        assert_eq!(
            ai.describe(),
            "file ai-robots-haproxy-block-ai-bots.txt (166 patterns), literal, ignore_case"
        );
        // 690 of the 699 lines are literals, 9 are wildcards: no regex is left over.
        let Matcher::Set(set) = &bad.matcher else {
            panic!("not a set")
        };
        assert!(set.rest.is_empty());
        let Some(Literals::Scan(scan)) = &set.literals else {
            panic!("not a DFA scan")
        };
        assert_eq!((scan.dfa.patterns_len(), scan.confirms.len()), (699, 9));

        assert!(ai.matches(Some(GPTBOT)));
        assert!(ai.matches(Some(
            b"Mozilla/5.0 (compatible; ClaudeBot/1.0; +claudebot@anthropic.com)"
        )));
        assert!(ai.matches(Some(b"zanistabot"))); // the last line, which has no newline
        assert!(!bad.matches(Some(GPTBOT)) || bad.matches(Some(b"openai.com")));
        assert!(bad.matches(Some(
            b"Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"
        )));
        assert!(bad.matches(Some(b"Mozilla/5.0 (compatible; Black Hole)")));
        assert!(bad.matches(Some(b"Mozilla/5.0 (compatible; Mail.RU_Bot/2.0)")));

        let browsers = fixture_lines("browsers-sample.txt");
        assert_eq!(browsers.len(), 200);
        assert!(browsers.iter().any(|ua| ua.as_slice() == CHROME));
        for ua in &browsers {
            assert!(
                rules.rules().iter().all(|r| !r.matches(Some(ua))),
                "{}",
                String::from_utf8_lossy(ua)
            );
        }
        let bots = fixture_lines("bots-sample.txt");
        assert_eq!(bots.len(), 100);
        for ua in &bots {
            assert!(
                bad.matches(Some(ua)) || ai.matches(Some(ua)),
                "{}",
                String::from_utf8_lossy(ua)
            );
        }
    }

    #[test]
    fn the_bad_bot_list_case_sensitive_matches_like_pcre() {
        let f = load_one(rule(
            "bad-bots",
            UaSource::File(fixture("bad-user-agents.list")),
        ));
        assert!(f.matches(Some(b"Mozilla/5.0 (compatible; AhrefsBot/7.0)")));
        assert!(!f.matches(Some(b"Mozilla/5.0 (compatible; ahrefsbot/7.0)")));
        assert!(f.matches(Some(b"Mozilla/5.0 Firefox/7.0")));
        assert!(!f.matches(Some(b"Mozilla/5.0 Firefox/70.0")));
    }

    /// Literals placed at every offset of a 300-byte haystack, so that some straddle the
    /// boundaries between the four interleaved streams.
    #[test]
    fn interleaved_scan_finds_literals_across_stream_boundaries() {
        let words: Vec<String> = (0..60).map(|i| format!("w{i:02}xyzzy{i:02}")).collect();
        let f = file_rule(&words.join("\n"), false, true);
        let Matcher::Set(PatternSet {
            literals: Some(Literals::Scan(_)),
            ..
        }) = &f.matcher
        else {
            panic!("expected a DFA scan");
        };
        for word in [&words[0], &words[59]] {
            for at in 0..=(300 - word.len()) {
                let mut hay = vec![b'.'; 300];
                hay[at..at + word.len()].copy_from_slice(word.as_bytes());
                assert!(f.matches(Some(&hay)), "{word} at {at}");
                // One byte short never matches.
                hay[at + word.len() - 1] = b'.';
                assert!(!f.matches(Some(&hay)), "{word} cut at {at}");
            }
        }
    }

    #[test]
    fn anchors_confirm_each_regex_once() {
        // Many anchor hits, none confirmed: still linear (and correct).
        let mut lines: Vec<String> = (0..40).map(|i| format!("lit{i:02}")).collect();
        lines.push("Mail.RU_Bot".into());
        let f = file_rule(&lines.join("\n"), false, false);
        let hay = "RU_Bot ".repeat(2000);
        assert!(!f.matches(Some(hay.as_bytes())));
        assert!(f.matches(Some(format!("{hay}Mail RU_Bot").as_bytes())));
        assert!(f.matches(Some(format!("{hay}lit39").as_bytes())));
    }

    /// A small alphabet, so that random patterns and haystacks actually meet.
    fn small_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(b"abAB .\\\xff".to_vec()), 0..max)
    }

    fn naive_contains(hay: &[u8], needle: &[u8], ignore_case: bool) -> bool {
        hay.windows(needle.len())
            .any(|w| w == needle || (ignore_case && w.eq_ignore_ascii_case(needle)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_user_agents_never_panic(ua in prop::collection::vec(any::<u8>(), 0..600)) {
            for rule in real_rules().rules() {
                let _ = rule.matches(Some(&ua));
            }
        }

        /// Literal mode is exactly a substring scan, for the small searcher (few
        /// case-sensitive literals) as well as the interleaved DFA.
        #[test]
        fn literal_mode_is_a_substring_scan(
            needles in prop::collection::vec(
                prop::collection::vec(prop::sample::select(b"abAB .\\".to_vec()), 1..6), 1..80),
            hays in prop::collection::vec(small_bytes(300), 1..8),
            ignore_case in any::<bool>(),
        ) {
            let needles: Vec<String> = needles
                .into_iter()
                .map(|n| String::from_utf8(n).unwrap().trim().to_owned())
                .filter(|n| !n.is_empty() && !n.starts_with('#'))
                .collect();
            prop_assume!(!needles.is_empty());
            let f = file_rule(&needles.join("\n"), ignore_case, true);
            for hay in &hays {
                let expected = !hay.is_empty()
                    && needles.iter().any(|n| naive_contains(hay, n.as_bytes(), ignore_case));
                prop_assert_eq!(f.matches(Some(hay)), expected, "{:?} in {:?}", needles, hay);
            }
        }

        /// Regex mode over lines of literals, escapes and wildcards (the shapes the
        /// classifier handles) agrees with compiling every line on its own.
        #[test]
        fn regex_mode_agrees_with_line_by_line_regexes(
            lines in prop::collection::vec(
                prop::collection::vec(
                    prop::sample::select(vec!["a", "b", "A", ".", "\\.", "\\ ", "ab", "^", "b+"]),
                    1..5),
                1..70),
            hays in prop::collection::vec(small_bytes(300), 1..8),
            ignore_case in any::<bool>(),
        ) {
            let lines: Vec<String> = lines.into_iter().map(|l| l.concat()).collect();
            let f = file_rule(&lines.join("\n"), ignore_case, false);
            let reference: Vec<Regex> =
                lines.iter().map(|l| build_regex(l, ignore_case).unwrap()).collect();
            for hay in &hays {
                let expected = !hay.is_empty() && reference.iter().any(|r| r.is_match(hay));
                prop_assert_eq!(f.matches(Some(hay)), expected, "{:?} in {:?}", lines, hay);
            }
        }
    }

    fn shared_data() -> Option<PathBuf> {
        crate::rules::shared_data("useragents")
    }

    /// crawler-user-agents.json: all 1,498 regexes load as one pattern file, every example
    /// instance matches it, and none of the 5,854 real browser user agents matches it or
    /// either of the real lists.
    #[test]
    fn real_crawler_patterns_compile_and_browsers_pass() {
        let Some(data) = shared_data() else {
            eprintln!(
                "skipped: no shared data (set SPOA_GUARD_DATA to a directory with useragents/)"
            );
            return;
        };
        let dir = data.join("useragents");
        let crawlers: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("crawler-user-agents.json")).unwrap())
                .unwrap();
        let crawlers = crawlers.as_array().unwrap();
        let patterns: Vec<&str> = crawlers
            .iter()
            .map(|c| c["pattern"].as_str().unwrap())
            .collect();
        assert_eq!(patterns.len(), 1_498);
        let tmp = tempfile::tempdir().unwrap();
        let list = tmp.path().join("crawlers.list");
        std::fs::write(&list, patterns.join("\n")).unwrap();
        let loaded = UaRules::load(
            &[rule("crawlers", UaSource::File(list))],
            Path::new("c.toml"),
        );
        let crawler_rules = match loaded {
            Ok(rules) => rules,
            Err(err) => panic!("crawler patterns failed to load:\n{err}"),
        };
        let crawler = &crawler_rules.rules()[0];
        assert_eq!(crawler.patterns(), 1_498);
        for instance in crawlers
            .iter()
            .flat_map(|c| c["instances"].as_array().unwrap())
        {
            let ua = instance.as_str().unwrap();
            assert!(crawler.matches(Some(ua.as_bytes())), "{ua}");
        }

        let mut seen = std::collections::HashSet::new();
        let text = std::fs::read_to_string(dir.join("browsers.jsonl")).unwrap();
        for line in text.lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let ua = row["useragent"].as_str().unwrap().to_owned();
            if !seen.insert(ua.clone()) {
                continue;
            }
            assert!(!crawler.matches(Some(ua.as_bytes())), "crawler list: {ua}");
            for rule in real_rules().rules() {
                assert!(
                    !rule.matches(Some(ua.as_bytes())),
                    "{}: {ua}",
                    rule.describe()
                );
            }
        }
        assert_eq!(seen.len(), 5_854);
    }
}
