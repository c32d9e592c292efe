//! Tests of the rule model: loading rules, what each kind matches, errors, the real lists.

use std::path::{Path, PathBuf};

use aho_corasick::automaton::Automaton;
use bytes::Bytes;
use proptest::prelude::*;

use super::matcher::Literals;
use super::test_support::*;
use super::*;

#[test]
fn debug_output_stays_short() {
    let text = format!("{:?}", real_rules());
    assert!(text.len() < 2_000, "{text}");
    // The bad-bot list (699 lines, 9 of them wildcards) and the AI list (166 literals)
    // are both case-insensitive: one DFA.
    assert!(
        text.contains("DfaScan { literals: 865, anchored_regexes: 9"),
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
    let _ = real_rules().matching(Some(&junk));
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
    // 690 of the bad-bot list's 699 lines are literals, 9 are wildcards: with the AI
    // list's literals they make one case-insensitive DFA; the only regex left over is
    // the scanners rule's inline pattern.
    let [group] = rules.matcher.literal_groups() else {
        panic!("not one literal group")
    };
    let Literals::Scan(scan) = &group.search else {
        panic!("not a DFA scan")
    };
    assert_eq!((scan.dfa.patterns_len(), scan.confirms.len()), (865, 9));
    assert_eq!(rules.matcher.regex_patterns(), 1);

    let ai = |ua: &[u8]| rules.rule_matches("ai-crawlers", Some(ua));
    let bad = |ua: &[u8]| rules.rule_matches("bad-bots", Some(ua));
    assert!(ai(GPTBOT));
    assert!(ai(
        b"Mozilla/5.0 (compatible; ClaudeBot/1.0; +claudebot@anthropic.com)"
    ));
    assert!(ai(b"zanistabot")); // the last line, which has no newline
    assert!(!bad(GPTBOT) || bad(b"openai.com"));
    assert!(bad(
        b"Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"
    ));
    assert!(bad(b"Mozilla/5.0 (compatible; Black Hole)"));
    assert!(bad(b"Mozilla/5.0 (compatible; Mail.RU_Bot/2.0)"));

    let browsers = fixture_lines("browsers-sample.txt");
    assert_eq!(browsers.len(), 200);
    assert!(browsers.iter().any(|ua| ua.as_slice() == CHROME));
    for ua in &browsers {
        assert!(!rules.matches(Some(ua)), "{}", String::from_utf8_lossy(ua));
    }
    let bots = fixture_lines("bots-sample.txt");
    assert_eq!(bots.len(), 100);
    for ua in &bots {
        assert!(bad(ua) || ai(ua), "{}", String::from_utf8_lossy(ua));
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

/// A random inline rule: a pattern over a small alphabet (literals, wildcards, regexes),
/// with random flags; every twentieth an `empty` rule.
fn random_rule() -> impl Strategy<Value = UserAgentRule> {
    (
        prop::collection::vec(
            prop::sample::select(vec![
                "a", "b", "A", ".", "\\.", "\\ ", "ab", "^", "b+", "(?i)B", "$",
            ]),
            1..4,
        ),
        any::<bool>(),
        any::<bool>(),
        0..20u8,
    )
        .prop_map(|(parts, ignore_case, literal, kind)| {
            let mut r = if kind == 0 {
                rule("e", UaSource::Empty)
            } else {
                rule("p", UaSource::Pattern(parts.concat()))
            };
            r.ignore_case = ignore_case;
            r.literal = literal;
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The one matcher over all rules finds exactly the rules that match when each is
    /// compiled alone, whatever the mix of literals, wildcards, regexes, flags and
    /// numbers of rules (enough literals to switch between aho-corasick's searcher and
    /// the DFA).
    #[test]
    fn one_matcher_agrees_with_each_rule_alone(
        rules in prop::collection::vec(random_rule(), 1..60),
        hays in prop::collection::vec(small_bytes(120), 1..8),
    ) {
        let all = UaRules::load(&rules, Path::new("t.toml")).unwrap();
        let alone: Vec<UaRules> = rules.iter().cloned().map(load_one).collect();
        for hay in hays.iter().map(|h| Some(h.as_slice())).chain([None]) {
            let expected: Vec<usize> = (0..rules.len())
                .filter(|&i| alone[i].matches(hay))
                .collect();
            let found: Vec<usize> = all.matching(hay).iter().collect();
            prop_assert_eq!(found, expected, "{:?} in {:?}", rules, hay);
        }
    }

    #[test]
    fn arbitrary_user_agents_never_panic(ua in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = real_rules().matching(Some(&ua));
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
        eprintln!("skipped: no shared data (set SPOA_GUARD_DATA to a directory with useragents/)");
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
    let crawler = &crawler_rules;
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
        let matching = real_rules().matching(Some(ua.as_bytes()));
        assert!(matching.is_empty(), "{matching:?}: {ua}");
    }
    assert_eq!(seen.len(), 5_854);
}
