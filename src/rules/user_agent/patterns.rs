//! Pattern files of `[[user_agent]]` rules: their format, and how one is compiled into a
//! [`PatternSet`] of literals (searched by a [`DfaScan`] or aho-corasick) and regexes.
//! Also the regex settings every user-agent pattern is compiled with ([`build_regex`])
//! and how a pattern is quoted in errors ([`quote`]).
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
//!   `spoa-guard check` reports every bad line (up to
//!   [`MAX_ERRORS_PER_FILE`](crate::rules::MAX_ERRORS_PER_FILE) per file).
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
//! The literals and anchors go into one Aho-Corasick DFA (a [`DfaScan`], in the `dfa`
//! module); the regex lines into one alternation `(?:p1)|(?:p2)|...` (a lazy DFA inside
//! `regex`). A rule matches when the DFA meets an exact literal, or an anchor whose regex
//! confirms, or the alternation matches. Two exceptions: a few (≤ [`SMALL_SET`])
//! case-sensitive literals use aho-corasick's own searcher, whose SIMD prefilter beats
//! any byte-at-a-time walk; and sets too large for a DFA (over [`DFA_MAX_BYTES`] of
//! literals) use its memory-lean NFA, with wildcard lines moved to the alternation.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::{Regex, RegexBuilder};

use super::dfa::DfaScan;
use super::Flags;
use crate::rules::{FileErrors, LoadError, LoadErrors, QUOTE_CHARS};

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
/// bad-bot list (see the measurements in the `dfa` module); 16 MiB was enough there. The
/// cache only grows as states are needed, per thread that uses the regex, so this is an
/// upper bound, not an allocation (3.4 MiB in that measurement).
pub const DFA_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The compiled lines of one pattern file: literals (and wildcard anchors) in an
/// Aho-Corasick automaton, the remaining regex lines in one alternation.
#[derive(Clone)]
pub(super) struct PatternSet {
    /// Literal lines, and anchors of wildcard lines when `literals` is a [`DfaScan`].
    pub(super) literals: Option<Literals>,
    /// Every line the literal automaton does not cover, as one alternation
    /// `(?:p1)|(?:p2)|...` (plus, rarely, lines that cannot join it).
    pub(super) rest: Vec<Regex>,
    /// Pattern lines in the file, for logs and `describe`.
    pub(super) patterns: usize,
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
pub(super) enum Literals {
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
    pub(super) fn parse(path: &Path, text: &[u8], flags: Flags) -> Result<PatternSet, LoadErrors> {
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
                    CompileError::NotUtf8,
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
        let compile_error = |e: CompileError| LoadError::file(path, format!("cannot compile: {e}"));

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
                    .map_err(|e| compile_error(e.into()))?;
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
    pub(super) fn is_match(&self, ua: &[u8]) -> bool {
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

/// Why patterns do not compile.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum CompileError {
    /// A line that is not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// A regex that does not compile: the `regex` crate's message on one line (its
    /// syntax errors span several, with a caret diagram).
    #[error("{0}")]
    Regex(String),
    /// The literal automaton cannot be built.
    #[error(transparent)]
    Automaton(#[from] aho_corasick::BuildError),
    /// The literal automaton has no unanchored start.
    #[error(transparent)]
    Start(#[from] aho_corasick::MatchError),
}

/// Compiles one pattern with the settings every user-agent regex uses.
pub(super) fn build_regex(pattern: &str, ignore_case: bool) -> Result<Regex, CompileError> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .case_insensitive(ignore_case)
        .dfa_size_limit(DFA_CACHE_BYTES)
        .build()
        .map_err(|e| CompileError::Regex(one_line(&e.to_string())))
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
pub(super) fn quote(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::user_agent::test_support::*;
    use crate::rules::user_agent::Matcher;
    use crate::rules::MAX_ERRORS_PER_FILE;
    use proptest::prelude::*;

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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

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
}
