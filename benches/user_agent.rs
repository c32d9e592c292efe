//! User-agent matching benchmarks (`rules::user_agent`).
//!
//! - `choice/{candidate}/{cs,ci}/{browser,bot}`: the matcher for a file of hundreds of
//!   patterns, chosen here. Every candidate holds the 699 lines of the real
//!   `bad-user-agents.list` (case-sensitive, and with `ignore_case`), all compiled the
//!   way the module compiles regexes (`regex::bytes`, Unicode off):
//!   - `a_regex_set`: `RegexSet::is_match`;
//!   - `b_alternation`: one `Regex` `(?:p1)|(?:p2)|...`, `is_match`, default lazy-DFA cache;
//!   - `b_alternation_16m`: the same with `dfa_size_limit(16 MiB)`;
//!   - `c_aho_corasick`: the 690 lines that are plain literals (after reading `\ ` and
//!     `\.`) in aho-corasick's `AhoCorasick` (DFA kind) plus an alternation of the other 9;
//!   - `d_ua_rule`: what `UaRules::load` builds for the file alone (interleaved DFA walk,
//!     anchored wildcard lines), i.e. the choice.
//!
//!   `browser` cycles through the 200 most common real browser user agents
//!   (`tests/fixtures/useragents/browsers-sample.txt`; none matches), `bot` through the
//!   bot user agents of `bots-sample.txt` that the list matches.
//! - `choice_build/{candidate}/{cs,ci}`: compiling each candidate.
//! - `rules/*`: the complete `UaRules` the way the engine walks it (in order, up to the
//!   first match of a rule that is not a dry run) for design.md's example filled out
//!   (`config_7`): 4 inline patterns, the bad-bot list with `ignore_case`, the
//!   ai.robots.txt list as literal `ignore_case` substrings, and an `empty` rule (869
//!   patterns); with browser, bot, short (`curl/8.5.0`) and 2.5 KB user agents. Then each
//!   list alone, and 20 inline rules (`inline_20`, compiled together by `UaRules`) against
//!   one hand-written alternation of the same 20 patterns (`inline_20_combined`).
//! - `many/{separate,combined}_{1,50,500}/{browser,scanner}`: N rules of one scanner word
//!   each, `(?i)(^|[^a-z])WORD` (`benches/data/scanner-words.txt`), against the same words
//!   as one rule; `many_load/*`: compiling them. Issue 12's targets: 50 separate rules
//!   ≥ 0.9 × one combined rule, 500 ≥ 0.8 ×.
//! - `rules_load/*`: reading and compiling those rules.
//! - `crawlers/*` and `choice_full/*`: only when `SPOA_GUARD_DATA` names the shared data
//!   directory. `crawlers`: the 1,498 regexes of `crawler-user-agents.json` as one pattern
//!   file (a regex-heavy file, which goes through the `regex` alternation rather than the
//!   DFA walk), against all 5,854 browser user agents of `browsers.jsonl` and the 2,116
//!   crawler examples. `choice_full`: candidates (b) and (d) with `ignore_case` against
//!   the same 5,854 browsers and every crawler example the list matches, enough variety
//!   to fill the lazy DFA's cache of (b).
//!
//! ```text
//! cargo bench --bench user_agent -- --warm-up-time 1 --measurement-time 3
//! SPOA_GUARD_DATA=../shared/data cargo bench --bench user_agent -- 'crawlers|choice_full'
//! ```

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use common::lines;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use spoa_guard::decision::{RuleAction, RuleName};
use spoa_guard::rules::user_agent::{UaRule, UaRules};
use spoa_guard::rules::{UaSource, UserAgentSpec as UserAgentRule};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/useragents")
        .join(name)
}

fn rule(name: &str, source: UaSource, ignore_case: bool, literal: bool) -> UserAgentRule {
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
        ignore_case,
        literal,
        dry_run: false,
    }
}

/// The bench's own reading of a line as a plain literal (`\ ` and `\.` unescaped), for
/// candidate (c); `None` for anything with a regex metacharacter.
fn as_literal(pattern: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) if e.is_ascii() && !e.is_ascii_alphanumeric() && e != '<' && e != '>' => {
                    out.push(e)
                }
                _ => return None,
            },
            '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                return None
            }
            c => out.push(c),
        }
    }
    Some(out)
}

fn alternation(patterns: &[String]) -> String {
    patterns
        .iter()
        .map(|p| format!("(?:{p})"))
        .collect::<Vec<_>>()
        .join("|")
}

/// One of the compared matchers.
enum Candidate {
    Set(RegexSet),
    Alternation(Regex),
    AhoCorasick(AhoCorasick, Regex),
    UaRules(UaRules),
}

impl Candidate {
    fn is_match(&self, ua: &[u8]) -> bool {
        match self {
            Candidate::Set(set) => set.is_match(ua),
            Candidate::Alternation(regex) => regex.is_match(ua),
            Candidate::AhoCorasick(ac, rest) => ac.is_match(ua) || rest.is_match(ua),
            Candidate::UaRules(rules) => !rules.matching(Some(ua)).is_empty(),
        }
    }
}

const CANDIDATES: [&str; 5] = [
    "a_regex_set",
    "b_alternation",
    "b_alternation_16m",
    "c_aho_corasick",
    "d_ua_rule",
];

fn build(candidate: &str, patterns: &[String], list: &Path, ci: bool) -> Candidate {
    let regex = |p: &str, limit: Option<usize>| {
        let mut b = RegexBuilder::new(p);
        b.unicode(false).case_insensitive(ci);
        if let Some(limit) = limit {
            b.dfa_size_limit(limit);
        }
        b.build().unwrap()
    };
    match candidate {
        "a_regex_set" => Candidate::Set(
            RegexSetBuilder::new(patterns)
                .unicode(false)
                .case_insensitive(ci)
                .build()
                .unwrap(),
        ),
        "b_alternation" => Candidate::Alternation(regex(&alternation(patterns), None)),
        "b_alternation_16m" => {
            Candidate::Alternation(regex(&alternation(patterns), Some(16 << 20)))
        }
        "c_aho_corasick" => {
            let literals: Vec<String> = patterns.iter().filter_map(|p| as_literal(p)).collect();
            let rest: Vec<String> = patterns
                .iter()
                .filter(|p| as_literal(p).is_none())
                .cloned()
                .collect();
            let ac = AhoCorasick::builder()
                .kind(Some(AhoCorasickKind::DFA))
                .ascii_case_insensitive(ci)
                .build(&literals)
                .unwrap();
            Candidate::AhoCorasick(ac, regex(&alternation(&rest), None))
        }
        "d_ua_rule" => {
            let rules = UaRules::load(
                &[rule("bad-bots", UaSource::File(list.to_owned()), ci, false)],
                Path::new("bench.toml"),
            )
            .unwrap();
            Candidate::UaRules(rules)
        }
        other => unreachable!("{other}"),
    }
}

/// Times `f` over `inputs`, one input per iteration, cycling.
fn cycle(b: &mut criterion::Bencher<'_>, inputs: &[Vec<u8>], f: impl Fn(&[u8]) -> bool) {
    let mut i = 0;
    b.iter(|| {
        i = (i + 1) % inputs.len();
        f(black_box(&inputs[i]))
    });
}

fn choice(c: &mut Criterion) {
    let list = fixture("bad-user-agents.list");
    let patterns = lines(&list);
    assert_eq!(patterns.len(), 699);
    let browsers: Vec<Vec<u8>> = lines(&fixture("browsers-sample.txt"))
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let bots_all: Vec<Vec<u8>> = lines(&fixture("bots-sample.txt"))
        .into_iter()
        .map(String::into_bytes)
        .collect();

    let mut group = c.benchmark_group("choice");
    for (case, ci) in [("cs", false), ("ci", true)] {
        let reference = build("b_alternation_16m", &patterns, &list, ci);
        let bots: Vec<Vec<u8>> = bots_all
            .iter()
            .filter(|ua| reference.is_match(ua))
            .cloned()
            .collect();
        eprintln!("choice/{case}: {} bot user agents match", bots.len());
        for name in CANDIDATES {
            let m = build(name, &patterns, &list, ci);
            for ua in &browsers {
                assert!(!m.is_match(ua), "{name} matches a browser");
            }
            for ua in &bots {
                assert!(m.is_match(ua), "{name} misses a bot");
            }
            group.bench_function(BenchmarkId::new(format!("{name}/{case}"), "browser"), |b| {
                cycle(b, &browsers, |ua| m.is_match(ua))
            });
            group.bench_function(BenchmarkId::new(format!("{name}/{case}"), "bot"), |b| {
                cycle(b, &bots, |ua| m.is_match(ua))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("choice_build");
    group.sample_size(10);
    for (case, ci) in [("cs", false), ("ci", true)] {
        for name in CANDIDATES {
            group.bench_function(BenchmarkId::new(name, case), |b| {
                b.iter(|| build(name, black_box(&patterns), &list, ci))
            });
        }
    }
    group.finish();
}

/// Inline rules of the kind an operator writes next to the big lists; the first
/// [`FEW`] go into the realistic configuration, all 20 into the many-rules case.
const INLINE: [&str; 20] = [
    "(?i)sqlmap|nikto|masscan|zgrab",
    "^curl/",
    "(?i)python-requests|go-http-client|okhttp",
    "HeadlessChrome",
    "(?i)acunetix|netsparker|wpscan|dirbuster|gobuster",
    "^Wget/",
    "(?i)aiohttp|python-urllib",
    "^okhttp/",
    "(?i)libwww-perl|lwp-trivial",
    "^Java/",
    "(?i)apache-httpclient",
    "PhantomJS",
    "(?i)scrapy",
    "(?i)httpclient|http_request2",
    "(?i)petalbot|dataforseo",
    "^Mozilla/[0-9.]+$",
    "(?i)nmap|zmap|nuclei",
    "Mozilla/4\\.0 \\(compatible; MSIE [1-6]\\.",
    "(?i)(bot|crawler|spider)[/ ;)]",
    "^-?$",
];

/// Inline rules in the realistic configuration.
const FEW: usize = 4;

fn inline_rules(n: usize) -> Vec<UserAgentRule> {
    INLINE
        .iter()
        .take(n)
        .enumerate()
        .map(|(i, p)| {
            rule(
                &format!("inline-{i}"),
                UaSource::Pattern((*p).into()),
                false,
                false,
            )
        })
        .collect()
}

/// design.md's example, filled out: a few inline rules, the bad-bot list with
/// `ignore_case` (as upstream uses it), the ai.robots.txt list as literal `ignore_case`
/// substrings (as in its HAProxy usage), and an `empty` rule.
fn realistic_rules() -> Vec<UserAgentRule> {
    let mut rules = inline_rules(FEW);
    rules.push(rule(
        "bad-bots",
        UaSource::File(fixture("bad-user-agents.list")),
        true,
        false,
    ));
    rules.push(rule(
        "ai-crawlers",
        UaSource::File(fixture("ai-robots-haproxy-block-ai-bots.txt")),
        true,
        true,
    ));
    rules.push(rule("empty-ua", UaSource::Empty, false, false));
    rules
}

/// What the engine does: the first rule that matches and is not a dry run.
fn decide<'a>(rules: &'a UaRules, ua: &[u8]) -> Option<&'a UaRule> {
    rules
        .matching(Some(ua))
        .iter()
        .filter_map(|i| rules.rules().get(i))
        .find(|r| !r.dry_run())
}

fn rules(c: &mut Criterion) {
    let config = realistic_rules();
    let rules = UaRules::load(&config, Path::new("bench.toml")).unwrap();
    eprintln!(
        "rules: {} rules, {} patterns",
        rules.len(),
        rules.patterns()
    );
    let browsers: Vec<Vec<u8>> = lines(&fixture("browsers-sample.txt"))
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let bots: Vec<Vec<u8>> = lines(&fixture("bots-sample.txt"))
        .into_iter()
        .map(String::into_bytes)
        .collect();
    for ua in &browsers {
        assert!(decide(&rules, ua).is_none());
    }
    for ua in &bots {
        assert!(
            decide(&rules, ua).is_some(),
            "{}",
            String::from_utf8_lossy(ua)
        );
    }
    let short = vec![b"curl/8.5.0".to_vec(), b"Wget/1.21.4".to_vec()];
    // A 2.5 KB user agent like the one in the codec captures: a browser string padded
    // with a long extension list.
    let mut long = browsers[0].clone();
    while long.len() < 2_500 {
        long.extend_from_slice(b" Extension/1.2.3 (like Gecko; KHTML)");
    }
    let long = vec![long];
    assert!(decide(&rules, &long[0]).is_none());

    let mut group = c.benchmark_group("rules");
    for (input, uas) in [
        ("browser", &browsers),
        ("bot", &bots),
        ("short", &short),
        ("long_2500", &long),
    ] {
        group.bench_function(BenchmarkId::new("config_7", input), |b| {
            cycle(b, uas, |ua| decide(&rules, ua).is_some())
        });
    }
    for (name, i) in [("bad-bots", FEW), ("ai-crawlers", FEW + 1)] {
        let alone = UaRules::load(&config[i..=i], Path::new("bench.toml")).unwrap();
        group.bench_function(BenchmarkId::new(name, "browser"), |b| {
            cycle(b, &browsers, |ua| decide(&alone, ua).is_some())
        });
    }
    // 20 inline rules, compiled together by `UaRules`, against one alternation of the
    // same 20 patterns written by hand.
    let inline = UaRules::load(&inline_rules(20), Path::new("bench.toml")).unwrap();
    let combined = RegexBuilder::new(&alternation(
        &INLINE.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>(),
    ))
    .unicode(false)
    .build()
    .unwrap();
    for ua in &browsers {
        assert_eq!(combined.is_match(ua), decide(&inline, ua).is_some());
    }
    group.bench_function(BenchmarkId::new("inline_20", "browser"), |b| {
        cycle(b, &browsers, |ua| decide(&inline, ua).is_some())
    });
    group.bench_function(BenchmarkId::new("inline_20_combined", "browser"), |b| {
        cycle(b, &browsers, |ua| combined.is_match(ua))
    });
    group.finish();

    let mut group = c.benchmark_group("rules_load");
    group.sample_size(10);
    group.bench_function("config_7", |b| {
        b.iter(|| UaRules::load(black_box(&config), Path::new("bench.toml")).unwrap())
    });
    for (name, i) in [("bad-bots", FEW), ("ai-crawlers", FEW + 1)] {
        group.bench_function(name, |b| {
            b.iter(|| UaRules::load(black_box(&config[i..=i]), Path::new("b.toml")).unwrap())
        });
    }
    group.finish();
}

fn crawlers(c: &mut Criterion) {
    let Some(data) = std::env::var_os("SPOA_GUARD_DATA").map(PathBuf::from) else {
        eprintln!(
            "crawlers, choice_full: skipped (set SPOA_GUARD_DATA to the shared data directory)"
        );
        return;
    };
    let dir = data.join("useragents");
    let json = std::fs::read(dir.join("crawler-user-agents.json")).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let crawlers = json.as_array().unwrap();
    let patterns: Vec<&str> = crawlers
        .iter()
        .map(|c| c["pattern"].as_str().unwrap())
        .collect();
    let instances: Vec<Vec<u8>> = crawlers
        .iter()
        .flat_map(|c| c["instances"].as_array().unwrap())
        .map(|i| i.as_str().unwrap().as_bytes().to_vec())
        .collect();
    let mut all_browsers: Vec<Vec<u8>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for line in std::fs::read_to_string(dir.join("browsers.jsonl"))
        .unwrap()
        .lines()
    {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let ua = row["useragent"].as_str().unwrap().as_bytes().to_vec();
        if seen.insert(ua.clone()) {
            all_browsers.push(ua);
        }
    }

    let tmp = std::env::temp_dir().join(format!("spoa-guard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let list = tmp.join("crawlers.list");
    std::fs::write(&list, patterns.join("\n")).unwrap();
    let mut group = c.benchmark_group("crawlers");
    for (case, ci) in [("cs", false), ("ci", true)] {
        let rules = UaRules::load(
            &[rule("crawlers", UaSource::File(list.clone()), ci, false)],
            Path::new("bench.toml"),
        )
        .unwrap();
        group.bench_function(BenchmarkId::new(case, "browser"), |b| {
            cycle(b, &all_browsers, |ua| decide(&rules, ua).is_some())
        });
        group.bench_function(BenchmarkId::new(case, "bot"), |b| {
            cycle(b, &instances, |ua| decide(&rules, ua).is_some())
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&tmp);

    // The bad-bot list with ignore_case over all 5,854 browser user agents and every
    // crawler example it matches: enough variety to fill a lazy DFA's cache, which the
    // 200 + 78 user agents of `choice` do not.
    let bad = fixture("bad-user-agents.list");
    let bad_patterns = lines(&bad);
    let reference = build("b_alternation_16m", &bad_patterns, &bad, true);
    let bots: Vec<Vec<u8>> = instances
        .iter()
        .filter(|ua| reference.is_match(ua))
        .cloned()
        .collect();
    eprintln!(
        "choice_full: {} browsers, {} bots",
        all_browsers.len(),
        bots.len()
    );
    let mut group = c.benchmark_group("choice_full");
    for name in ["b_alternation", "b_alternation_16m", "d_ua_rule"] {
        let m = build(name, &bad_patterns, &bad, true);
        group.bench_function(BenchmarkId::new(format!("{name}/ci"), "browser"), |b| {
            cycle(b, &all_browsers, |ua| m.is_match(ua))
        });
        group.bench_function(BenchmarkId::new(format!("{name}/ci"), "bot"), |b| {
            cycle(b, &bots, |ua| m.is_match(ua))
        });
    }
    group.finish();
}

/// `n` scanner words: the 50 of `benches/data/scanner-words.txt`, then again with a
/// number appended (`sqlmap1`, ...), as many rounds as needed.
fn scanner_words(n: usize) -> Vec<String> {
    let words =
        lines(&Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/scanner-words.txt"));
    (0..n)
        .map(|i| match i / words.len() {
            0 => words[i].clone(),
            round => format!("{}{round}", words[i % words.len()]),
        })
        .collect()
}

/// One deny rule per word, `(?i)(^|[^a-z])WORD`, as operators write them.
fn separate_rules(words: &[String]) -> Vec<UserAgentRule> {
    words
        .iter()
        .map(|w| {
            let pattern = format!("(?i)(^|[^a-z]){w}");
            rule(&format!("ua-{w}"), UaSource::Pattern(pattern), false, false)
        })
        .collect()
}

/// The same words as one rule: `(?i)(^|[^a-z])(w1|w2|...)`.
fn combined_rule(words: &[String]) -> Vec<UserAgentRule> {
    let pattern = format!("(?i)(^|[^a-z])({})", words.join("|"));
    vec![rule("scanners", UaSource::Pattern(pattern), false, false)]
}

/// Issue 12's cliff: 1, 50 and 500 separate inline rules against the same words as one
/// rule, on browsers (nothing matches) and on scanner user agents (one rule matches).
fn many(c: &mut Criterion) {
    let browsers: Vec<Vec<u8>> = lines(&fixture("browsers-sample.txt"))
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let mut group = c.benchmark_group("many");
    for n in [1, 50, 500] {
        let words = scanner_words(n);
        let scanners: Vec<Vec<u8>> = words
            .iter()
            .step_by(n.div_ceil(20))
            .map(|w| {
                format!("Mozilla/5.0 (compatible; {w}/1.2; +https://example.com/{w})").into_bytes()
            })
            .collect();
        for (shape, config) in [
            ("separate", separate_rules(&words)),
            ("combined", combined_rule(&words)),
        ] {
            if n == 1 && shape == "combined" {
                continue; // the same as one separate rule
            }
            let rules = UaRules::load(&config, Path::new("bench.toml")).unwrap();
            for ua in &browsers {
                assert!(
                    decide(&rules, ua).is_none(),
                    "{}",
                    String::from_utf8_lossy(ua)
                );
            }
            for ua in &scanners {
                assert!(
                    decide(&rules, ua).is_some(),
                    "{}",
                    String::from_utf8_lossy(ua)
                );
            }
            let id = format!("{shape}_{n}");
            group.bench_function(BenchmarkId::new(&id, "browser"), |b| {
                cycle(b, &browsers, |ua| decide(&rules, ua).is_some())
            });
            group.bench_function(BenchmarkId::new(&id, "scanner"), |b| {
                cycle(b, &scanners, |ua| decide(&rules, ua).is_some())
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("many_load");
    group.sample_size(10);
    for n in [50, 500] {
        let config = separate_rules(&scanner_words(n));
        group.bench_function(format!("separate_{n}"), |b| {
            b.iter(|| UaRules::load(black_box(&config), Path::new("bench.toml")).unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = choice, rules, crawlers, many
}
criterion_main!(benches);
