//! Pattern files of `[[user_agent]]` rules and inline patterns: their format, and how
//! each pattern is read into a [`Pattern`] (a literal, a wildcard with its anchor, or a
//! parsed regex) tagged with its rule, ready for the `matcher` module to compile every
//! rule's patterns into one structure. Also how a pattern is quoted in errors
//! ([`quote`]).
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
//! - A file is read line by line within fixed caps,
//!   [`FileCaps::USER_AGENT_FILES`](crate::rules::FileCaps::USER_AGENT_FILES): a file,
//!   a line or a pattern count over them is an error and the rule is not loaded.
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
//! # How a pattern is read
//!
//! Each line of a file, and each inline `pattern`, is classified by a small,
//! conservative scanner:
//!
//! - **literal**: nothing but plain characters and escaped punctuation (`\ `, `\.`,
//!   `\/`, ...), e.g. `Black\ Hole` → `Black Hole`; with `literal = true` every pattern
//!   is one;
//! - **wildcard**: the same plus bare `.`, e.g. `Mail.RU_Bot`; its longest literal
//!   piece (`RU_Bot`) must occur for the line to match, so it serves as an *anchor*, and
//!   the line's own regex confirms a hit;
//! - **regex**: anything else (`^`, classes, groups, repetition...), parsed on its own,
//!   which both validates it with an exact line number and keeps each pattern's flags
//!   (`(?i)`, `(?x)` comments) inside it when the patterns are compiled together.

use std::io::BufRead;
use std::path::Path;

use regex_syntax::hir::Hir;
use regex_syntax::ParserBuilder;

use super::Flags;
use crate::rules::{FileCaps, FileErrors, LoadErrors, QUOTE_CHARS};

/// One pattern of one rule, read but not yet compiled.
#[derive(Debug, Clone)]
pub(super) struct Pattern {
    /// Index of the rule in configuration order.
    pub(super) rule: u32,
    /// ASCII case-insensitive (`ignore_case`).
    pub(super) ignore_case: bool,
    /// What it matches.
    pub(super) kind: Kind,
}

/// What a [`Pattern`] is, as far as the matcher is concerned.
#[derive(Debug, Clone)]
pub(super) enum Kind {
    /// These bytes, anywhere.
    Literal(Vec<u8>),
    /// A regex that only matches where `anchor` occurs.
    Wildcard {
        /// The longest literal piece of the pattern.
        anchor: Vec<u8>,
        /// The whole pattern.
        hir: Hir,
    },
    /// Any other regex.
    Regex(Hir),
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

impl Pattern {
    /// Reads one pattern (a file line or an inline `pattern`) of rule `rule`.
    ///
    /// # Errors
    ///
    /// The reason a regex does not parse, on one line.
    pub(super) fn read(rule: u32, text: &str, flags: Flags) -> Result<Pattern, CompileError> {
        let kind = if flags.literal {
            Kind::Literal(text.as_bytes().to_vec())
        } else {
            match classify(text) {
                Form::Literal(bytes) => Kind::Literal(bytes),
                Form::Wildcard(anchor) => Kind::Wildcard {
                    anchor,
                    hir: parse_regex(text, flags.ignore_case)?,
                },
                Form::Regex => Kind::Regex(parse_regex(text, flags.ignore_case)?),
            }
        };
        Ok(Pattern {
            rule,
            ignore_case: flags.ignore_case,
            kind,
        })
    }

    /// Reads the lines of `input`, the pattern file at `path` (used in errors), within
    /// `caps` for rule `rule`, appending its patterns to `out`; returns how many there
    /// were.
    ///
    /// # Errors
    ///
    /// Every bad line as `file:line: invalid pattern "...": reason`; a file, a line or a
    /// pattern count over `caps`.
    pub(super) fn read_file(
        rule: u32,
        path: &Path,
        input: impl BufRead,
        caps: &FileCaps,
        flags: Flags,
        out: &mut Vec<Pattern>,
    ) -> Result<usize, LoadErrors> {
        let mut patterns: usize = 0;
        let mut errors = FileErrors::new(path);
        let mut lines = caps.lines(input);
        while let Some((line_no, line)) = lines.next_or_record(&mut errors) {
            let line = trim_line(line, !flags.literal);
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            patterns = patterns.saturating_add(1);
            if caps.too_many(u64::try_from(patterns).unwrap_or(u64::MAX)) {
                errors.too_many(caps);
                break;
            }
            let read = match std::str::from_utf8(line) {
                Err(_) => Err((
                    String::from_utf8_lossy(line).into_owned(),
                    CompileError::NotUtf8,
                )),
                Ok(line) => Pattern::read(rule, line, flags).map_err(|e| (line.to_owned(), e)),
            };
            match read {
                Ok(pattern) => out.push(pattern),
                Err((line, reason)) => errors.line(
                    line_no,
                    format!("invalid pattern {}: {reason}", quote(&line)),
                ),
            }
        }
        errors.finish()?;
        Ok(patterns)
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
    /// A regex that does not parse or compile: the message on one line (syntax errors
    /// span several, with a caret diagram).
    #[error("{0}")]
    Regex(String),
    /// The literal automaton cannot be built.
    #[error(transparent)]
    Automaton(#[from] aho_corasick::BuildError),
    /// The literal automaton has no unanchored start.
    #[error(transparent)]
    Start(#[from] aho_corasick::MatchError),
}

impl From<regex_automata::meta::BuildError> for CompileError {
    fn from(e: regex_automata::meta::BuildError) -> Self {
        CompileError::Regex(one_line(&e.to_string()))
    }
}

/// Parses one regex with the settings every user-agent pattern uses: bytes, not UTF-8
/// (`utf8(false)`), Unicode classes off unless the pattern turns them on.
pub(super) fn parse_regex(pattern: &str, ignore_case: bool) -> Result<Hir, CompileError> {
    ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .case_insensitive(ignore_case)
        .build()
        .parse(pattern)
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
    use crate::rules::MAX_ERRORS_PER_FILE;
    use proptest::prelude::*;
    use regex::bytes::{Regex, RegexBuilder};

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
        assert!(line_regex(r"Black\ Hole", false).is_match(b"Black Hole"));
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

    /// A line compiled on its own by the `regex` crate, with the settings the module
    /// documents: the reference the matcher must agree with.
    fn line_regex(line: &str, ignore_case: bool) -> Regex {
        RegexBuilder::new(line)
            .unicode(false)
            .case_insensitive(ignore_case)
            .build()
            .unwrap()
    }

    #[test]
    fn regex_lines_keep_their_flags_and_comments() {
        // Under the x flag, '#' starts a comment, which would swallow the rest of a
        // combined alternation; each regex line is parsed on its own.
        let f = file_rule("(?x) foo \\d # a comment\n^bar\n[0-9]z\n", false, false);
        assert_eq!(f.matcher.regex_patterns(), 3);
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
        assert!(Pattern::read_file(
            0,
            Path::new("x"),
            &b"a(b\n[z-a]\n"[..],
            &FileCaps::USER_AGENT_FILES,
            literal,
            &mut Vec::new()
        )
        .is_ok());
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
                lines.iter().map(|l| line_regex(l, ignore_case)).collect();
            for hay in &hays {
                let expected = !hay.is_empty() && reference.iter().any(|r| r.is_match(hay));
                prop_assert_eq!(f.matches(Some(hay)), expected, "{:?} in {:?}", lines, hay);
            }
        }
    }
}
