//! Arbitrary text as a `[[user_agent]]` pattern file through [`UaRules::load`], the
//! public entry point (the pattern reader itself is private to `rules::user_agent`).
//!
//! The first input byte holds the rule's switches (bit 0 `ignore_case`, bit 1 `literal`,
//! bit 2: the text is one inline `pattern` instead of a `file`); the rest is the file,
//! written to a temporary directory. A rule set that compiles is matched against a few
//! user agents and against the text itself.
//!
//! Checks: never panics (loading compiles every pattern into one matcher, so this also
//! reaches the literal automata and the regex set); no pattern rule matches a missing or
//! empty user agent; and a literal, case-sensitive inline pattern matches its own text.
//!
//! Seeds: the pattern files of `tests/fixtures/useragents/` and `examples/lists/` in
//! 20-line pieces (a whole list costs tens of milliseconds per input once instrumented),
//! each behind a switch byte, and the inline patterns of `examples/spoa-guard.toml`.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use spoa_guard::decision::{RuleAction, RuleName};
use spoa_guard::rules::user_agent::UaRules;
use spoa_guard::rules::UserAgentSpec;

const IGNORE_CASE: u8 = 1;
const LITERAL: u8 = 2;
const INLINE: u8 = 4;

/// User agents every compiled rule set is matched against.
const AGENTS: [&[u8]; 4] = [
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/137.0.0.0 Safari/537.36",
    b"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0; +https://openai.com/gptbot)",
    b"curl/8.5.0",
    b"\xff\x00\xfe",
];

/// The pattern file: one per process, rewritten for every input. `scripts/fuzz` points
/// `TMPDIR` into `fuzz/target`, so a run leaves nothing behind elsewhere.
fn pattern_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("spoa-guard-fuzz-ua")
            .tempdir()
            .expect("a temporary directory");
        dir.keep().join("patterns.list")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&switches, text)) = data.split_first() else {
        return;
    };
    let mut spec = UserAgentSpec {
        name: RuleName::new("fuzz").expect("a valid rule name"),
        pattern: None,
        file: None,
        empty: false,
        action: RuleAction::Deny,
        ignore_case: switches & IGNORE_CASE != 0,
        literal: switches & LITERAL != 0,
        dry_run: false,
    };
    if switches & INLINE != 0 {
        let Ok(pattern) = std::str::from_utf8(text) else {
            return;
        };
        spec.pattern = Some(pattern.to_owned());
    } else {
        std::fs::write(pattern_file(), text).expect("the pattern file is written");
        spec.file = Some(pattern_file().to_path_buf());
    }
    let Ok(rules) = UaRules::load(&[spec], Path::new("spoa-guard.toml")) else {
        return;
    };
    for agent in AGENTS {
        let _ = rules.matching(Some(agent));
    }
    let _ = rules.matching(Some(text));
    assert!(
        rules.matching(None).is_empty(),
        "a pattern rule matched no user agent"
    );
    assert!(
        rules.matching(Some(b"")).is_empty(),
        "a pattern rule matched an empty one"
    );

    // A literal, case-sensitive inline pattern is a plain substring: the text itself
    // contains it. Only for an inline pattern; a file's lines have their own syntax.
    if switches & (INLINE | LITERAL | IGNORE_CASE) == INLINE | LITERAL && !text.is_empty() {
        assert!(
            !rules.matching(Some(text)).is_empty(),
            "a literal pattern does not match its own text"
        );
    }
});
