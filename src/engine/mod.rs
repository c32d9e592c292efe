//! The decision: [`Engine::evaluate`] turns one [`Request`] into one [`Verdict`].
//!
//! It is a synchronous function of the request, the compiled rules and the time: no I/O,
//! no locks held, no `.await`. The agent records the verdict and the connection writes it
//! into an ACK; the engine never sees a frame or a socket.
//!
//! # The pipeline
//!
//! Evaluation runs the [`Step`]s in order (design.md "Evaluation order"); each step is
//! one function in `steps.rs` that answers "decide" or "continue", and the first that
//! decides wins:
//!
//! 1. **allowlist** → `allow`, nothing else is evaluated;
//! 2. **ban**: a runtime ban covers the source's address, a network around it or its AS
//!    → `deny` (rule = the ban's origin, `retry_after` = seconds left). Bans are not
//!    rules: they come with the [`Context`] (the agent's ban store), not the engine;
//! 3. **blocklist** → `deny`;
//! 4. **asn**: the source's AS is blocked → `deny` (rule `AS<n>`);
//! 5. **user-agent**: the first matching rule decides the step: `deny` → `deny`;
//!    `allow` → no later user-agent rule applies, but rate limits still do, and the
//!    result is `allow` with reason `user-agent` if nothing later denies;
//! 6. **rate limits**: every limit that applies takes one token from its bucket; an empty
//!    bucket → `deny` with status 429 and a retry-after hint (the first empty limit in
//!    configuration order names the rule; the hint is the longest wait among them);
//! 7. otherwise `allow`, reason `none`.
//!
//! A **dry-run** rule is evaluated and counted like the others but never changes the
//! decision: a dry-run list or user-agent rule does not stop evaluation, a dry-run limit
//! takes tokens but never denies. Every dry-run rule that matches is recorded in the
//! verdict's `dry_run_hits` (each gets its hit counted); the first one (in evaluation
//! order) that would have denied is reported as `dry_run`.
//!
//! The **global dry-run switch** ([`Context::dry_run_all`], the operator's kill switch)
//! makes every rule, and every ban, a dry-run one: a step's deny is recorded as a
//! dry-run hit and evaluation goes on, so the request ends `allow` with `dry_run` naming
//! the first step that would have denied.
//!
//! Every rule has a number ([`RuleTable`]): a verdict names the rule behind it by number,
//! so that counting is an index; the table also tells metrics, `check` and `eval` what the
//! engine holds.
//!
//! # Explaining
//!
//! [`Engine::explain`] runs the same steps with an [`Explanation`] that collects every
//! [`Note`]; and it goes on after the decision, so that `eval` shows what the later
//! steps would have said (marked not reached; they take no token and count nothing). On
//! the request path the sink is [`Silent`] and the notes are never built.

mod notes;
mod settings;
mod step;
mod steps;
mod table;

use std::path::Path;
use std::time::Instant;

pub use notes::{Bucket, Effect, Explanation, Note, Notes, Silent, StepNotes};
pub use settings::RuleSettings;
pub use step::{outcomes, Measure, RuleGauge, Step, StepInfo};
pub(crate) use table::info_with_rule_sizes;
pub use table::{RuleInfo, RuleTable, StepSummary, Summary, ASN_RULE};

use crate::bans::BanStore;
use crate::decision::{Decision, Request, Verdict};
use crate::limits::{FleetLink, Limits};
use crate::rules::{LoadError, LoadErrors, RuleSet};
use steps::{Evaluation, Flow};

/// What a request is decided against besides the rules: the clocks, and the agent's
/// runtime state.
#[derive(Debug, Clone, Copy)]
pub struct Context<'s> {
    /// Monotonic now, for rate-limit buckets.
    pub now: Instant,
    /// Wall-clock now in Unix seconds, for ban expiries.
    pub unix_now: u32,
    /// The bans in force; `None`: not consulted (offline `eval`).
    pub bans: Option<&'s BanStore>,
    /// The global dry-run switch: every deny is reported as a dry-run hit, none is
    /// enforced.
    pub dry_run_all: bool,
}

impl Context<'static> {
    /// Rules only, at `now`: no bans (so no wall clock is read), switch off.
    pub fn rules_only(now: Instant) -> Context<'static> {
        Context {
            now,
            unix_now: 0,
            bans: None,
            dry_run_all: false,
        }
    }
}

/// Compiled rules and rate-limit state, ready to evaluate requests. Shared behind an
/// `Arc` and replaced whole on reload; rate-limit buckets of unchanged limits are carried
/// over into the new engine.
#[derive(Debug)]
pub struct Engine {
    rules: RuleSet,
    limits: Limits,
    table: RuleTable,
}

impl Engine {
    /// An engine over loaded rules and built limits.
    pub fn new(rules: RuleSet, limits: Limits) -> Self {
        let table = RuleTable::build(&rules, &limits);
        Self {
            rules,
            limits,
            table,
        }
    }

    /// Loads every rule input named by `settings` and builds the limits, carrying over
    /// the buckets of unchanged limits from `previous`, fleet limits in `fleet` (or
    /// `previous`'s fleet). `config_path` locates errors in inline settings (user-agent
    /// patterns).
    ///
    /// # Errors
    ///
    /// Every problem in every input, with file and line where there is one.
    pub fn load(
        settings: &RuleSettings,
        config_path: &Path,
        previous: Option<&Engine>,
        fleet: Option<&FleetLink>,
    ) -> Result<Engine, LoadErrors> {
        let rules = RuleSet::load(
            &settings.lists,
            &settings.asn,
            &settings.user_agent,
            config_path,
            previous.map(|e| &e.rules),
        );
        let limits = Limits::build(&settings.limit, previous.map(|e| &e.limits), fleet)
            .map_err(|err| LoadErrors::from(LoadError::file(config_path, err.to_string())));
        match (rules, limits) {
            (Ok(rules), Ok(limits)) => Ok(Engine::new(rules, limits)),
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

    /// Every rule, numbered as verdicts name them.
    pub fn table(&self) -> &RuleTable {
        &self.table
    }

    /// Whether an ASN database is loaded: without one no source has an AS, and an AS
    /// ban or `[asn] block` matches nothing.
    pub fn has_asn_database(&self) -> bool {
        !self.rules.asn_db.is_empty()
    }

    /// What the engine holds, in numbers.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.table, self.rules.asn_db.ranges())
    }

    /// Decides one request at time `now`.
    ///
    /// A request without a usable source address is allowed with reason `none`: it is a
    /// HAProxy configuration error, and failing open keeps the site up while the caller
    /// counts and logs it.
    ///
    /// ```
    /// use std::time::Instant;
    /// use spoa_guard::decision::{Decision, Reason, Request};
    /// use spoa_guard::engine::Engine;
    /// use spoa_guard::limits::Limits;
    /// use spoa_guard::rules::ip::{IpList, IpMatcher};
    /// use spoa_guard::rules::RuleSet;
    ///
    /// let block = IpList::parse("lists/drop.txt".as_ref(), "192.0.2.0/24 ; SBL1\n").unwrap();
    /// let rules = RuleSet { block: IpMatcher::new([block]).into(), ..RuleSet::empty() };
    /// let engine = Engine::new(rules, Limits::default());
    /// let request = Request { src: Some("192.0.2.7".parse().unwrap()), ..Request::default() };
    /// let verdict = engine.evaluate(&request, Instant::now());
    /// assert_eq!((verdict.decision, verdict.reason), (Decision::Deny, Reason::Blocklist));
    /// assert_eq!(&verdict.rule[..], b"drop");
    /// ```
    pub fn evaluate(&self, request: &Request<'_>, now: Instant) -> Verdict {
        self.run(request, &Context::rules_only(now), &mut Silent, false)
    }

    /// Decides one request in `context`: the rules, the bans and the dry-run switch.
    #[inline]
    pub fn evaluate_in(&self, request: &Request<'_>, context: &Context<'_>) -> Verdict {
        self.run(request, context, &mut Silent, false)
    }

    /// Decides one request like [`Engine::evaluate_in`] (rate-limit tokens are taken
    /// too) and collects what every step says, including the steps after the decision
    /// (which take no token and count nothing), for `spoa-guard eval`.
    pub fn explain(&self, request: &Request<'_>, context: &Context<'_>) -> (Verdict, Explanation) {
        let mut explanation = Explanation::default();
        let verdict = self.run(request, context, &mut explanation, true);
        (verdict, explanation)
    }

    /// Runs the steps in order until one decides (`past_decision`: and the rest too,
    /// for their notes).
    #[inline]
    fn run<N: Notes>(
        &self,
        request: &Request<'_>,
        context: &Context<'_>,
        notes: &mut N,
        past_decision: bool,
    ) -> Verdict {
        let Some(src) = request.src else {
            notes.note(|| Note::NoSource);
            return Verdict::allow_none();
        };
        let asn = self.rules.asn_db.lookup(src);
        notes.note(|| Note::Source {
            src,
            asn,
            asn_database: self.has_asn_database(),
        });
        let mut ev = Evaluation {
            engine: self,
            request,
            src,
            asn,
            now: context.now,
            unix_now: context.unix_now,
            bans: context.bans,
            reached: true,
            dry_run: None,
            dry_run_hits: Default::default(),
            allowed_by: None,
        };
        let mut decided: Option<Verdict> = None;
        for step in Step::ALL {
            if decided.is_some() && !past_decision {
                break;
            }
            ev.reached = decided.is_none();
            notes.step(step, ev.reached);
            if let (Flow::Decide(verdict), None) = (steps::run(step, &mut ev, notes), &decided) {
                if context.dry_run_all && verdict.decision == Decision::Deny {
                    notes.note(|| Note::DryRunSwitch);
                    ev.switched_to_dry_run(&verdict);
                    continue;
                }
                decided = Some(verdict);
            }
        }
        let mut verdict = decided.unwrap_or_else(|| match ev.allowed_by {
            Some((id, name)) => {
                let mut v = Verdict::new(
                    Decision::Allow,
                    crate::decision::Reason::UserAgent,
                    name.clone(),
                );
                v.rule_id = Some(id);
                v
            }
            None => Verdict::allow_none(),
        });
        verdict.asn = asn;
        verdict.dry_run = ev.dry_run;
        verdict.dry_run_hits = ev.dry_run_hits;
        verdict
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::decision::{Decision, Reason, RuleId};
    use steps::retry_seconds;

    /// An engine from inline TOML rule sections, with `files` written next to the
    /// configuration first.
    fn engine(toml: &str, files: &[(&str, &str)]) -> (Engine, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let path = dir.path().join("spoa-guard.toml");
        let mut settings: RuleSettings = toml::from_str(toml).unwrap();
        let problems = settings.validate();
        assert!(problems.iter().all(|p| !p.is_error()), "{problems:?}");
        settings.rebase(dir.path());
        (Engine::load(&settings, &path, None, None).unwrap(), dir)
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
        let (v, explanation) = e.explain(
            &request("192.0.2.1", Some("sqlmap/1.7"), "/login"),
            &Context::rules_only(Instant::now()),
        );
        assert_eq!(v.reason, Reason::UserAgent);
        let text = explanation.lines().join("\n");
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
    fn explain_shows_the_steps_after_the_decision_without_taking_tokens() {
        let (e, _dir) = engine(CONFIG, FILES);
        let now = Instant::now();
        // 198.51.100.9 is blocklisted; its user agent is a scanner and /login is limited.
        let blocked = request("198.51.100.9", Some("sqlmap/1.7"), "/login");
        let (v, explanation) = e.explain(&blocked, &Context::rules_only(now));
        assert_eq!(
            outcome(&v),
            (Decision::Deny, Reason::Blocklist, "drop".into())
        );
        let reached: Vec<(Step, bool)> = explanation
            .steps
            .iter()
            .map(|s| (s.step, s.reached))
            .collect();
        assert_eq!(
            reached,
            [
                (Step::Allowlist, true),
                (Step::Ban, true),
                (Step::Blocklist, true),
                (Step::Asn, false),
                (Step::UserAgent, false),
                (Step::RateLimit, false),
            ]
        );
        let text = explanation.lines().join("\n");
        for needle in [
            "ban: not consulted (bans live in the running agent",
            "blocklist: drop matches → deny",
            "(not reached) user-agent: rule scanners matches",
            "(not reached) limit login: a token is there (not taken)",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        // Nothing was taken by the explanation: the login bucket (burst 2) is full.
        let login = e.limits().iter().next().unwrap();
        let from_there = request("198.51.100.9", Some("Firefox"), "/login");
        assert_eq!(
            login.take(&from_there, None, now),
            crate::limits::Take::Allowed
        );
        assert_eq!(
            login.take(&from_there, None, now),
            crate::limits::Take::Allowed
        );
        // The verdict is the hot path's.
        let (e2, _dir2) = engine(CONFIG, FILES);
        assert_eq!(e2.evaluate(&blocked, now), v);
    }

    /// `store` with `target` banned by `origin` from `now` for `seconds`.
    fn banned(store: &mut BanStore, target: &str, origin: &str, now: u32, seconds: u32) {
        store
            .add(crate::bans::Ban {
                target: target.parse().unwrap(),
                origin: origin.into(),
                reason: "INC-42".into(),
                since: now,
                expires_at: now + seconds,
            })
            .unwrap();
    }

    #[test]
    fn a_ban_denies_after_the_allowlist_until_its_second() {
        let (e, _dir) = engine(CONFIG, FILES);
        let unix_now = 1_800_000_000;
        let mut bans = BanStore::new(100);
        banned(&mut bans, "203.0.113.0/24", "manual", unix_now, 60);
        banned(&mut bans, "192.0.2.10", "login-abuse", unix_now, 60);
        banned(&mut bans, "AS64496", "asn-abuse", unix_now, 600);
        let at = |unix_now| Context {
            now: Instant::now(),
            unix_now,
            bans: Some(&bans),
            dry_run_all: false,
        };
        let v = e.evaluate_in(
            &request("203.0.113.9", Some("Firefox"), "/"),
            &at(unix_now + 15),
        );
        assert_eq!(outcome(&v), (Decision::Deny, Reason::Ban, "manual".into()));
        assert_eq!((v.retry_after, v.status()), (Some(45), Some(403)));
        // The allowlist wins over a ban of the same address.
        let v = e.evaluate_in(&request("192.0.2.10", None, "/"), &at(unix_now));
        assert_eq!(v.reason, Reason::Allowlist);
        // An AS ban covers every address of the AS.
        let v = e.evaluate_in(&request("192.0.2.77", Some("Firefox"), "/"), &at(unix_now));
        assert_eq!(
            outcome(&v),
            (Decision::Deny, Reason::Ban, "asn-abuse".into())
        );
        assert_eq!(v.asn, Some(64496));
        // At its expiry second the ban stops denying: the request goes on to the rules.
        let v = e.evaluate_in(
            &request("203.0.113.9", Some("Firefox"), "/"),
            &at(unix_now + 60),
        );
        assert_eq!(outcome(&v), (Decision::Deny, Reason::Asn, "AS64511".into()));
        let v = e.evaluate_in(
            &request("203.0.113.9", Some("Firefox"), "/"),
            &at(unix_now + 59),
        );
        assert_eq!((v.reason, v.retry_after), (Reason::Ban, Some(1)));
        // eval shows the ban.
        let (_, explanation) = e.explain(&request("203.0.113.9", None, "/"), &at(unix_now));
        let text = explanation.lines().join("\n");
        assert!(
            text.contains("ban: 203.0.113.0/24 is banned (manual, 60 s left) → deny"),
            "{text}"
        );
    }

    #[test]
    fn the_dry_run_switch_reports_every_deny_and_enforces_none() {
        let (e, _dir) = engine(CONFIG, FILES);
        let unix_now = 1_800_000_000;
        let mut bans = BanStore::new(100);
        banned(&mut bans, "198.51.100.0/24", "manual", unix_now, 60);
        let context = Context {
            now: Instant::now(),
            unix_now,
            bans: Some(&bans),
            dry_run_all: true,
        };
        // Banned, blocklisted and a scanner: allowed, the ban named, every rule counted.
        let r = request("198.51.100.7", Some("sqlmap/1.7"), "/");
        let v = e.evaluate_in(&r, &context);
        assert_eq!(outcome(&v), (Decision::Allow, Reason::None, String::new()));
        let dry = v.dry_run.as_ref().unwrap();
        assert_eq!((dry.reason, &dry.rule[..]), (Reason::Ban, &b"manual"[..]));
        let hits: Vec<String> = v
            .dry_run_hits
            .iter()
            .map(|&id| String::from_utf8_lossy(&e.table().get(id).unwrap().name).into_owned())
            .collect();
        assert_eq!(hits, ["new-drop", "drop", "scanners"]);
        // The allowlist still allows.
        let v = e.evaluate_in(&request("192.0.2.10", None, "/"), &context);
        assert_eq!(v.reason, Reason::Allowlist);
        let (_, explanation) = e.explain(&r, &context);
        let text = explanation.lines().join("\n");
        assert!(
            text.contains("blocklist: the global dry-run switch is on"),
            "{text}"
        );
    }

    #[test]
    fn every_dry_run_rule_that_matches_is_recorded_and_the_first_deny_is_named() {
        let toml = "[lists]\nblock = [{ path = \"new-drop.txt\", dry_run = true }]\n\
                    [[user_agent]]\nname = \"probe\"\npattern = \"curl\"\naction = \"deny\"\ndry_run = true\n\
                    [[limit]]\nname = \"login\"\nkey = \"src\"\nrate = 1\nburst = 1\ndry_run = true\n";
        let (e, _dir) = engine(toml, FILES);
        let now = Instant::now();
        let r = request("203.0.113.1", Some("curl/8"), "/login");
        let first = e.evaluate(&r, now);
        let ids = |v: &Verdict| -> Vec<String> {
            v.dry_run_hits
                .iter()
                .map(|&id| String::from_utf8_lossy(&e.table().get(id).unwrap().name).into_owned())
                .collect()
        };
        assert_eq!(first.decision, Decision::Allow);
        assert_eq!(
            first.dry_run.as_ref().map(|d| &d.rule[..]),
            Some(&b"new-drop"[..])
        );
        assert_eq!(ids(&first), ["new-drop", "probe"]);
        let second = e.evaluate(&r, now);
        assert_eq!(ids(&second), ["new-drop", "probe", "login"]);
        assert_eq!(
            second.dry_run.as_ref().map(|d| &d.rule[..]),
            Some(&b"new-drop"[..])
        );
    }

    #[test]
    fn the_rule_table_numbers_every_rule_in_evaluation_order() {
        let (e, _dir) = engine(CONFIG, FILES);
        let rules: Vec<(Step, String, bool, usize)> = e
            .table()
            .iter()
            .map(|(_, r)| {
                (
                    r.step,
                    String::from_utf8_lossy(&r.name).into_owned(),
                    r.dry_run,
                    r.size,
                )
            })
            .collect();
        let row = |step, name: &str, dry_run, size| (step, name.to_string(), dry_run, size);
        assert_eq!(
            rules,
            [
                row(Step::Allowlist, "office", false, 1),
                row(Step::Blocklist, "drop", false, 2),
                row(Step::Blocklist, "new-drop", true, 2),
                row(Step::Asn, ASN_RULE, false, 1),
                row(Step::UserAgent, "probe", true, 1),
                row(Step::UserAgent, "partners", false, 1),
                row(Step::UserAgent, "scanners", false, 1),
                row(Step::UserAgent, "empty-ua", false, 0),
                row(Step::RateLimit, "login", false, 1),
                row(Step::RateLimit, "login-shadow", true, 1),
            ]
        );
        // A verdict names its rule by number.
        let v = e.evaluate(&request("192.0.2.1", Some("sqlmap"), "/"), Instant::now());
        assert_eq!(v.rule_id, Some(RuleId(6)));
        let s = e.summary();
        let gauges: Vec<(&str, usize)> = s.gauges().iter().map(|(g, n)| (g.name, *n)).collect();
        assert_eq!(
            gauges,
            [
                ("allowlist_entries", 1),
                ("allowlist_dry_run_entries", 0),
                ("blocklist_entries", 2),
                ("blocklist_dry_run_entries", 2),
                ("asn_blocked_asns", 1),
                ("asn_database_ranges", 2),
                ("user_agent_rules", 4),
                ("user_agent_patterns", 3),
                ("rate_limits", 2),
            ]
        );
        assert_eq!(s.gauge("blocklist_dry_run_entries"), 2);
        assert_eq!(s.gauge("no_such_gauge"), 0);
        assert_eq!(
            s.step(Step::Blocklist).describe(),
            "1 list (2 entries), 1 list (2 entries) in dry run"
        );
    }

    #[test]
    fn a_reload_keeps_the_lists_and_asn_tables_whose_files_did_not_change() {
        let (first, dir) = engine(CONFIG, FILES);
        let mut settings: RuleSettings = toml::from_str(CONFIG).unwrap();
        settings.rebase(dir.path());
        let path = dir.path().join("spoa-guard.toml");
        let reload =
            |previous: &Engine| Engine::load(&settings, &path, Some(previous), None).unwrap();

        let same = reload(&first);
        let (a, b) = (first.rules(), same.rules());
        assert!(a.asn_db.ptr_eq(&b.asn_db));
        assert!(a.allow.ptr_eq(&b.allow) && a.block.ptr_eq(&b.block));
        assert!(a.block_dry_run.ptr_eq(&b.block_dry_run));

        // One line added to the enforcing block list: that matcher alone is rebuilt, and
        // the new entry is in force.
        let drop = dir.path().join("drop.txt");
        std::fs::write(&drop, "192.0.2.10\n198.51.100.0/24\n192.0.2.99\n").unwrap();
        let appended = reload(&same);
        let c = appended.rules();
        assert!(!b.block.ptr_eq(&c.block));
        assert!(b.asn_db.ptr_eq(&c.asn_db) && b.allow.ptr_eq(&c.allow));
        assert!(b.block_dry_run.ptr_eq(&c.block_dry_run));
        let verdict = appended.evaluate(&request("192.0.2.99", None, "/"), Instant::now());
        assert_eq!(
            outcome(&verdict),
            (Decision::Deny, Reason::Blocklist, "drop".into())
        );

        // A changed ASN table is read again.
        std::fs::write(
            dir.path().join("asn.csv"),
            "192.0.2.0,192.0.2.255,64500,Other\n",
        )
        .unwrap();
        let d = reload(&appended);
        assert!(!c.asn_db.ptr_eq(&d.rules().asn_db));
        assert_eq!(
            d.rules().asn_db.lookup("192.0.2.1".parse().unwrap()),
            Some(64500)
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
