//! The decision: [`Engine::evaluate`] turns one [`Request`] into one [`Verdict`].
//!
//! It is a synchronous function of the request, the compiled rules and the time: no I/O,
//! no locks held, no `.await`. The connection layer turns the verdict into ACK actions
//! ([`Verdict::actions`]); the engine never sees a frame or a socket.
//!
//! Evaluation order (design.md), first decisive step wins:
//! 1. **allowlist** → `allow`, nothing else is evaluated;
//! 2. **blocklist** → `deny`;
//! 3. **asn**: the source's AS is blocked → `deny` (rule `AS<n>`);
//! 4. **user-agent**: the first matching rule decides the step: `deny` → `deny`;
//!    `allow` → no later user-agent rule applies, but rate limits still do, and the
//!    result is `allow` with reason `user-agent` if nothing later denies;
//! 5. **rate limits**: every limit that applies takes one token from its bucket; an empty
//!    bucket → `deny` with status 429 and a retry-after hint (the first empty limit in
//!    configuration order names the rule; the hint is the longest wait among them);
//! 6. otherwise `allow`, reason `none`.
//!
//! A **dry-run** rule is evaluated and counted like the others but never changes the
//! decision: a dry-run list or user-agent rule does not stop evaluation, a dry-run limit
//! takes tokens but never denies. The first dry-run rule (in evaluation order) that would
//! have denied is reported as `dry_run`.
//!
//! [`Engine::explain`] runs the same code with an [`Explain`] sink that records every
//! step in words, for `spoa-guard eval`; on the hot path the sink is a no-op that the
//! compiler removes.

mod verdict;

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;

pub use crate::request::{canonical, Request};
pub use verdict::{Decision, DryRun, Reason, Verdict, STATUS_FORBIDDEN, STATUS_TOO_MANY_REQUESTS};

use crate::config::{RuleAction, RulesConfig};
use crate::limits::{Limits, Take};
use crate::rules::{LoadError, LoadErrors, RuleSet};

/// Compiled rules and rate-limit state, ready to evaluate requests. Shared behind an
/// `Arc` and replaced whole on reload; rate-limit buckets of unchanged limits are carried
/// over into the new engine.
#[derive(Debug)]
pub struct Engine {
    rules: RuleSet,
    limits: Limits,
}

/// Receives a description of each evaluation step (see [`Engine::explain`]).
pub trait Explain {
    /// Records one step; `line` is only called when someone listens.
    fn note(&mut self, line: impl FnOnce() -> String);
}

/// The hot path's [`Explain`]: records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Explain for Silent {
    #[inline(always)]
    fn note(&mut self, _line: impl FnOnce() -> String) {}
}

/// An [`Explain`] that keeps every line.
#[derive(Debug, Clone, Default)]
pub struct Explanation(pub Vec<String>);

impl Explain for Explanation {
    fn note(&mut self, line: impl FnOnce() -> String) {
        self.0.push(line());
    }
}

impl Engine {
    /// An engine over loaded rules and built limits.
    pub fn new(rules: RuleSet, limits: Limits) -> Self {
        Self { rules, limits }
    }

    /// Loads every rule input named by `config` and builds the limits, carrying over the
    /// buckets of unchanged limits from `previous`. `config_path` locates errors in inline
    /// settings (patterns, limit keys).
    ///
    /// # Errors
    ///
    /// Every problem in every input, with file and line where there is one.
    pub fn load(
        config: &RulesConfig,
        config_path: &Path,
        previous: Option<&Engine>,
    ) -> Result<Engine, LoadErrors> {
        let rules = RuleSet::load(config, config_path);
        let limits = Limits::build(&config.limits, previous.map(|e| &e.limits))
            .map_err(|message| LoadErrors::from(LoadError::file(config_path, message)));
        match (rules, limits) {
            (Ok(rules), Ok(limits)) => {
                if limits.needs_asn() && rules.asn_db.is_empty() {
                    let message = "a [[limit]] key uses `asn` but [asn] databases is empty";
                    return Err(LoadError::file(config_path, message).into());
                }
                Ok(Engine::new(rules, limits))
            }
            (Err(LoadErrors(mut a)), Err(LoadErrors(b))) => {
                a.extend(b);
                Err(LoadErrors(a))
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The rate limits and their state.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decides one request at time `now`.
    ///
    /// A request without a usable source address is allowed with reason `none`: it is a
    /// HAProxy configuration error, and failing open keeps the site up while the caller
    /// counts and logs it.
    ///
    /// ```
    /// use std::time::Instant;
    /// use spoa_guard::engine::{Decision, Engine, Reason, Request};
    /// use spoa_guard::limits::Limits;
    /// use spoa_guard::rules::ip::{IpList, IpMatcher};
    /// use spoa_guard::rules::RuleSet;
    ///
    /// let block = IpList::parse("lists/drop.txt".as_ref(), "192.0.2.0/24 ; SBL1\n").unwrap();
    /// let rules = RuleSet { block: IpMatcher::new([block]), ..RuleSet::empty() };
    /// let engine = Engine::new(rules, Limits::default());
    /// let request = Request { src: Some("192.0.2.7".parse().unwrap()), ..Request::default() };
    /// let verdict = engine.evaluate(&request, Instant::now());
    /// assert_eq!((verdict.decision, verdict.reason), (Decision::Deny, Reason::Blocklist));
    /// assert_eq!(&verdict.rule[..], b"drop");
    /// ```
    pub fn evaluate(&self, request: &Request<'_>, now: Instant) -> Verdict {
        self.run(request, now, &mut Silent)
    }

    /// Decides one request like [`Engine::evaluate`] (rate-limit tokens are taken too)
    /// and describes every step, for `spoa-guard eval`.
    pub fn explain(&self, request: &Request<'_>, now: Instant) -> (Verdict, Vec<String>) {
        let mut explanation = Explanation::default();
        let verdict = self.run(request, now, &mut explanation);
        (verdict, explanation.0)
    }

    fn run(&self, request: &Request<'_>, now: Instant, out: &mut impl Explain) -> Verdict {
        let rules = &self.rules;
        let Some(src) = request.src else {
            out.note(|| "no usable source address: allowed (a HAProxy configuration error)".into());
            return Verdict::allow_none();
        };
        let asn = rules.asn_db.lookup(src);
        out.note(|| match asn {
            Some(asn) => format!("source {src} is in AS{asn}"),
            None if rules.asn_db.is_empty() => format!("source {src} (no ASN database loaded)"),
            None => format!("source {src} is not in the ASN database"),
        });
        let mut dry_run: Option<DryRun> = None;
        let finish = |mut verdict: Verdict, dry_run: Option<DryRun>| {
            verdict.asn = asn;
            verdict.dry_run = dry_run;
            verdict
        };

        // 1. allowlist
        if let Some(name) = rules.allow_dry_run.lookup_rule(src) {
            out.note(|| {
                format!(
                    "allowlist: dry-run list {} matches (would allow)",
                    text(name)
                )
            });
        }
        if let Some(name) = rules.allow.lookup_rule(src) {
            out.note(|| {
                format!(
                    "allowlist: {} matches → allow, nothing else evaluated",
                    text(name)
                )
            });
            return finish(
                Verdict::new(Decision::Allow, Reason::Allowlist, name.clone()),
                dry_run,
            );
        }
        out.note(|| format!("allowlist: no match ({} entries)", rules.allow.entries()));

        // 2. blocklist
        if let Some(name) = rules.block_dry_run.lookup_rule(src) {
            out.note(|| {
                format!(
                    "blocklist: dry-run list {} matches (would deny)",
                    text(name)
                )
            });
            dry_run.get_or_insert_with(|| DryRun::new(Reason::Blocklist, name.clone()));
        }
        if let Some(name) = rules.block.lookup_rule(src) {
            out.note(|| format!("blocklist: {} matches → deny", text(name)));
            return finish(
                Verdict::new(Decision::Deny, Reason::Blocklist, name.clone()),
                dry_run,
            );
        }
        out.note(|| format!("blocklist: no match ({} entries)", rules.block.entries()));

        // 3. asn
        match asn {
            Some(asn) if rules.asn_block.contains(asn) => {
                let name = rules.asn_block.rule(asn).cloned().unwrap_or_default();
                if rules.asn_dry_run {
                    out.note(|| format!("asn: AS{asn} is blocked, dry run (would deny)"));
                    dry_run.get_or_insert(DryRun::new(Reason::Asn, name));
                } else {
                    out.note(|| format!("asn: AS{asn} is blocked → deny"));
                    return finish(Verdict::new(Decision::Deny, Reason::Asn, name), dry_run);
                }
            }
            Some(asn) => out.note(|| format!("asn: AS{asn} is not blocked")),
            None => out.note(|| "asn: no ASN for the source".into()),
        }

        // 4. user-agent
        let mut allowed_by: Option<&Bytes> = None;
        for rule in rules.user_agents.rules() {
            if !rule.matches(request.ua) {
                continue;
            }
            let name = rule.name();
            match (rule.action(), rule.dry_run()) {
                (RuleAction::Deny, true) => {
                    out.note(|| {
                        format!(
                            "user-agent: dry-run rule {} matches ({}) (would deny)",
                            text(name),
                            rule.describe()
                        )
                    });
                    dry_run.get_or_insert_with(|| DryRun::new(Reason::UserAgent, name.clone()));
                }
                (RuleAction::Allow, true) => {
                    out.note(|| {
                        format!(
                            "user-agent: dry-run rule {} matches ({}) (would allow)",
                            text(name),
                            rule.describe()
                        )
                    });
                }
                (RuleAction::Deny, false) => {
                    out.note(|| {
                        format!(
                            "user-agent: rule {} matches ({}) → deny",
                            text(name),
                            rule.describe()
                        )
                    });
                    return finish(
                        Verdict::new(Decision::Deny, Reason::UserAgent, name.clone()),
                        dry_run,
                    );
                }
                (RuleAction::Allow, false) => {
                    out.note(|| {
                        format!(
                            "user-agent: rule {} matches ({}) → allow; rate limits still apply",
                            text(name),
                            rule.describe()
                        )
                    });
                    allowed_by = Some(name);
                    break;
                }
            }
        }
        if allowed_by.is_none() {
            out.note(|| {
                format!(
                    "user-agent: no rule decides ({} rules)",
                    rules.user_agents.len()
                )
            });
        }

        // 5. rate limits
        let mut limited: Option<(&Bytes, u32)> = None;
        for limit in self.limits.iter() {
            if !limit.applies(request) {
                out.note(|| {
                    format!(
                        "limit {}: does not apply ({})",
                        text(limit.name()),
                        limit.describe()
                    )
                });
                continue;
            }
            let take = limit.take(request, asn, now);
            out.note(|| {
                let outcome = match take {
                    Take::Allowed => "token taken".to_string(),
                    Take::Denied { retry_after } => {
                        format!("bucket empty, retry after {}s", retry_seconds(retry_after))
                    }
                    Take::Untracked => "key cap reached, not limited".to_string(),
                };
                let dry = if limit.dry_run() { ", dry run" } else { "" };
                format!(
                    "limit {}: {} for {} ({}{dry})",
                    text(limit.name()),
                    outcome,
                    limit.describe_key(request, asn),
                    limit.describe()
                )
            });
            let Take::Denied { retry_after } = take else {
                continue;
            };
            let seconds = retry_seconds(retry_after);
            if limit.dry_run() {
                dry_run.get_or_insert_with(|| DryRun::new(Reason::RateLimit, limit.name().clone()));
            } else {
                limited = match limited {
                    None => Some((limit.name(), seconds)),
                    Some((first, longest)) => Some((first, longest.max(seconds))),
                };
            }
        }
        if let Some((name, seconds)) = limited {
            out.note(|| format!("rate limit: {} → deny, retry after {seconds}s", text(name)));
            let mut verdict = Verdict::new(Decision::Deny, Reason::RateLimit, name.clone());
            verdict.retry_after = Some(seconds);
            return finish(verdict, dry_run);
        }

        // 6.
        let verdict = match allowed_by {
            Some(name) => Verdict::new(Decision::Allow, Reason::UserAgent, name.clone()),
            None => Verdict::allow_none(),
        };
        finish(verdict, dry_run)
    }
}

/// What an engine holds, in numbers: for start-up and reload logs and `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Entries in enforcing allow lists.
    pub allow_entries: usize,
    /// Entries in enforcing block lists.
    pub block_entries: usize,
    /// Entries in dry-run allow and block lists.
    pub dry_run_entries: usize,
    /// Merged ranges of the ASN databases.
    pub asn_ranges: usize,
    /// Blocked ASNs.
    pub asn_blocked: usize,
    /// User-agent rules.
    pub ua_rules: usize,
    /// Patterns over all user-agent rules.
    pub ua_patterns: usize,
    /// Rate limits.
    pub limits: usize,
}

impl Summary {
    /// Counts what `engine` holds.
    pub fn of(engine: &Engine) -> Self {
        let r = &engine.rules;
        Self {
            allow_entries: r.allow.entries(),
            block_entries: r.block.entries(),
            dry_run_entries: r.allow_dry_run.entries() + r.block_dry_run.entries(),
            asn_ranges: r.asn_db.ranges(),
            asn_blocked: r.asn_block.len(),
            ua_rules: r.user_agents.len(),
            ua_patterns: r.user_agents.patterns(),
            limits: engine.limits.len(),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "allow {} entries, block {} entries, dry-run lists {} entries, ASN {} ranges with {} blocked, \
             user-agent {} rules ({} patterns), {} limits",
            self.allow_entries,
            self.block_entries,
            self.dry_run_entries,
            self.asn_ranges,
            self.asn_blocked,
            self.ua_rules,
            self.ua_patterns,
            self.limits
        )
    }
}

/// Whole seconds for `txn.guard.retry_after`: rounded up, at least 1.
fn retry_seconds(wait: std::time::Duration) -> u32 {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

fn text(name: &Bytes) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(name)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Settings;

    /// An engine from inline TOML, with `files` written next to the config first.
    fn engine(toml: &str, files: &[(&str, &str)]) -> (Engine, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let path = dir.path().join("spoa-guard.toml");
        let config = Settings::from_toml(toml).unwrap().validate(&path).unwrap();
        (Engine::load(&config.rules, &path, None).unwrap(), dir)
    }

    fn request<'a>(src: &str, ua: Option<&'a str>, path: &'a str) -> Request<'a> {
        Request {
            src: Some(src.parse().unwrap()),
            method: Some(b"GET"),
            path: Some(path.as_bytes()),
            host: Some(b"www.example.com"),
            ua: ua.map(str::as_bytes),
            args: Default::default(),
        }
    }

    fn outcome(v: &Verdict) -> (Decision, Reason, String) {
        (
            v.decision,
            v.reason,
            String::from_utf8_lossy(&v.rule).into_owned(),
        )
    }

    const FILES: &[(&str, &str)] = &[
        ("office.txt", "192.0.2.10\n"),
        ("drop.txt", "192.0.2.10\n198.51.100.0/24\n"),
        ("new-drop.txt", "203.0.113.0/28\n198.51.100.7\n"),
        ("asn.csv", "192.0.2.0,192.0.2.255,64496,Example One\n203.0.113.0,203.0.113.255,64511,\"Example, Two\"\n"),
    ];

    const CONFIG: &str = r#"
[lists]
allow = ["office.txt"]
block = [{ path = "new-drop.txt", dry_run = true }, "drop.txt"]
[asn]
databases = ["asn.csv"]
block = [64511]
[[user_agent]]
name = "probe"
pattern = "(?i)new-scanner"
action = "deny"
dry_run = true
[[user_agent]]
name = "partners"
pattern = "^PartnerBot/"
action = "allow"
[[user_agent]]
name = "scanners"
pattern = "(?i)sqlmap|nikto|scanner"
action = "deny"
[[user_agent]]
name = "empty-ua"
empty = true
action = "deny"
[[limit]]
name = "login"
key = "src+path"
path_prefix = "/login"
rate = 1
burst = 2
[[limit]]
name = "login-shadow"
key = "src"
path_prefix = "/login"
rate = 1
burst = 1
dry_run = true
"#;

    #[test]
    fn evaluation_order_first_decisive_step_wins() {
        let (e, _dir) = engine(CONFIG, FILES);
        let now = Instant::now();
        let cases = [
            // Allow list beats the block list (the address is in both) and an empty UA.
            (
                request("192.0.2.10", None, "/"),
                (Decision::Allow, Reason::Allowlist, "office"),
            ),
            // The enforcing block list decides even though a dry-run list matches first.
            (
                request("198.51.100.7", Some("Firefox"), "/"),
                (Decision::Deny, Reason::Blocklist, "drop"),
            ),
            // ASN 64511 is blocked.
            (
                request("203.0.113.200", Some("Firefox"), "/"),
                (Decision::Deny, Reason::Asn, "AS64511"),
            ),
            // Scanners are denied; an empty user agent too.
            (
                request("192.0.2.1", Some("sqlmap/1.7"), "/"),
                (Decision::Deny, Reason::UserAgent, "scanners"),
            ),
            (
                request("192.0.2.1", None, "/"),
                (Decision::Deny, Reason::UserAgent, "empty-ua"),
            ),
            // An allow rule stops later user-agent rules ("scanner" in its UA).
            (
                request("192.0.2.1", Some("PartnerBot/2 scanner"), "/"),
                (Decision::Allow, Reason::UserAgent, "partners"),
            ),
            (
                request("192.0.2.1", Some("Firefox"), "/"),
                (Decision::Allow, Reason::None, ""),
            ),
        ];
        for (req, expected) in cases {
            let v = e.evaluate(&req, now);
            assert_eq!(
                outcome(&v),
                (expected.0, expected.1, expected.2.to_string()),
                "{req:?}"
            );
            let expected_status = match expected.0 {
                Decision::Allow => None,
                Decision::Deny => Some(403),
            };
            assert_eq!(v.status(), expected_status);
        }
    }

    #[test]
    fn asn_is_reported_whenever_known() {
        let (e, _dir) = engine(CONFIG, FILES);
        let v = e.evaluate(&request("192.0.2.10", None, "/"), Instant::now());
        assert_eq!((v.reason, v.asn), (Reason::Allowlist, Some(64496)));
        let v = e.evaluate(&request("100.64.0.1", Some("Firefox"), "/"), Instant::now());
        assert_eq!(v.asn, None);
    }

    #[test]
    fn dry_run_rules_report_but_never_decide() {
        let (e, _dir) = engine(CONFIG, FILES);
        let now = Instant::now();
        // Dry-run block list: allowed, reported.
        let v = e.evaluate(&request("203.0.113.5", Some("Firefox"), "/"), now);
        // 203.0.113.5 is also in blocked AS64511: the real ASN deny still happens.
        assert_eq!(outcome(&v), (Decision::Deny, Reason::Asn, "AS64511".into()));
        assert_eq!(
            v.dry_run.as_ref().map(|d| &d.rule[..]),
            Some(&b"new-drop"[..])
        );
        // Dry-run UA rule: evaluation continues to the next rules.
        let v = e.evaluate(&request("192.0.2.1", Some("new-scanner/0.1"), "/"), now);
        assert_eq!(
            outcome(&v),
            (Decision::Deny, Reason::UserAgent, "scanners".into())
        );
        assert_eq!(v.dry_run.as_ref().map(|d| &d.rule[..]), Some(&b"probe"[..]));
        let v = e.evaluate(
            &request("192.0.2.2", Some("New-Scanner/0.1 Firefox"), "/x"),
            now,
        );
        assert_eq!(v.dry_run.as_ref().map(|d| &d.rule[..]), Some(&b"probe"[..]));
    }

    #[test]
    fn rate_limits_deny_with_429_and_retry_after() {
        let (e, _dir) = engine(CONFIG, FILES);
        let now = Instant::now();
        let login = request("192.0.2.1", Some("Firefox"), "/login");
        // Burst 2: two pass. The dry-run limit (burst 1) would deny the second.
        let first = e.evaluate(&login, now);
        assert_eq!(
            outcome(&first),
            (Decision::Allow, Reason::None, String::new())
        );
        assert_eq!(first.dry_run, None);
        let second = e.evaluate(&login, now);
        assert_eq!(second.decision, Decision::Allow);
        assert_eq!(
            second.dry_run.as_ref().map(|d| &d.rule[..]),
            Some(&b"login-shadow"[..])
        );
        let third = e.evaluate(&login, now);
        assert_eq!(
            outcome(&third),
            (Decision::Deny, Reason::RateLimit, "login".into())
        );
        assert_eq!((third.status(), third.retry_after), (Some(429), Some(1)));
        // Other paths and other sources have their own buckets.
        assert_eq!(
            e.evaluate(&request("192.0.2.1", Some("Firefox"), "/"), now)
                .decision,
            Decision::Allow
        );
        assert_eq!(
            e.evaluate(&request("192.0.2.2", Some("Firefox"), "/login"), now)
                .decision,
            Decision::Allow
        );
        // One token a second.
        let later = now + Duration::from_millis(1001);
        assert_eq!(e.evaluate(&login, later).decision, Decision::Allow);
        assert_eq!(e.evaluate(&login, later).decision, Decision::Deny);
    }

    #[test]
    fn a_user_agent_allow_does_not_skip_rate_limits() {
        let (e, _dir) = engine(CONFIG, FILES);
        let now = Instant::now();
        let partner = request("192.0.2.3", Some("PartnerBot/2"), "/login");
        for _ in 0..2 {
            let v = e.evaluate(&partner, now);
            assert_eq!(
                outcome(&v),
                (Decision::Allow, Reason::UserAgent, "partners".into())
            );
        }
        let v = e.evaluate(&partner, now);
        assert_eq!(
            outcome(&v),
            (Decision::Deny, Reason::RateLimit, "login".into())
        );
    }

    #[test]
    fn the_longest_wait_of_several_empty_buckets_is_the_hint() {
        let toml = "[[limit]]\nname = \"fast\"\nkey = \"src\"\nrate = 1\nburst = 1\n\
                    [[limit]]\nname = \"slow\"\nkey = \"global\"\nrate = 0.1\nburst = 1\n";
        let (e, _dir) = engine(toml, &[]);
        let now = Instant::now();
        let r = request("192.0.2.1", Some("Firefox"), "/");
        assert_eq!(e.evaluate(&r, now).decision, Decision::Allow);
        let v = e.evaluate(&r, now);
        assert_eq!(
            outcome(&v),
            (Decision::Deny, Reason::RateLimit, "fast".into())
        );
        assert_eq!(v.retry_after, Some(10));
    }

    #[test]
    fn no_source_is_allowed() {
        let (e, _dir) = engine(CONFIG, FILES);
        let v = e.evaluate(&Request::default(), Instant::now());
        assert_eq!(outcome(&v), (Decision::Allow, Reason::None, String::new()));
    }

    #[test]
    fn explain_names_every_step() {
        let (e, _dir) = engine(CONFIG, FILES);
        let (v, steps) = e.explain(
            &request("192.0.2.1", Some("sqlmap/1.7"), "/login"),
            Instant::now(),
        );
        assert_eq!(v.reason, Reason::UserAgent);
        let text = steps.join("\n");
        for needle in [
            "AS64496",
            "allowlist: no match",
            "blocklist: no match",
            "AS64496 is not blocked",
            "scanners",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        // The hot path and the explained path agree.
        let (e2, _dir2) = engine(CONFIG, FILES);
        assert_eq!(
            e2.evaluate(
                &request("192.0.2.1", Some("sqlmap/1.7"), "/login"),
                Instant::now()
            ),
            v
        );
    }

    #[test]
    fn retry_seconds_round_up() {
        assert_eq!(retry_seconds(Duration::ZERO), 1);
        assert_eq!(retry_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_seconds(Duration::from_millis(2001)), 3);
    }
}
