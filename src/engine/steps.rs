//! The steps of the pipeline, one function each. A step reads the request, the rules and
//! what earlier steps recorded in the [`Evaluation`], says what it saw through the
//! [`Notes`] sink, and answers [`Flow::Decide`] or [`Flow::Continue`].
//!
//! A step is free to compile all its rules into one matcher: it gets the whole rule set
//! and reports the matching rule by its [`RuleId`](crate::decision::RuleId).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::notes::{Bucket, Effect, Note, Notes};
use super::step::Step;
use super::table::id;
use super::Engine;
use crate::bans::BanStore;
use crate::decision::{Decision, DryRun, DryRunHits, Reason, Request, RuleAction, RuleId, Verdict};
use crate::limits::{Limit, Take};
use crate::rules::ip::IpMatcher;

/// What a step concluded.
pub(crate) enum Flow {
    /// The request goes on to the next step.
    Continue,
    /// The step decided.
    Decide(Verdict),
}

/// The state of one evaluation, shared by its steps.
pub(crate) struct Evaluation<'e, 'r, 'a> {
    pub engine: &'e Engine,
    pub request: &'r Request<'a>,
    pub src: IpAddr,
    pub asn: Option<u32>,
    pub now: Instant,
    /// Wall-clock now, Unix seconds (ban expiries).
    pub unix_now: u32,
    /// The bans in force, when consulted.
    pub bans: Option<&'e BanStore>,
    /// False while `eval` runs the steps after the decision: they record nothing and
    /// take no tokens.
    pub reached: bool,
    /// The first dry-run rule that would have denied.
    pub dry_run: Option<DryRun>,
    /// Every dry-run rule that matched.
    pub dry_run_hits: DryRunHits,
    /// A user-agent `allow` rule that matched: the result if nothing later denies.
    pub allowed_by: Option<(RuleId, &'e Bytes)>,
}

impl Evaluation<'_, '_, '_> {
    /// Records a dry-run match of rule `id`; `denies`: it would have denied, so it may be
    /// the one `txn.guard.dry_run` names.
    fn dry_run(&mut self, id: RuleId, reason: Reason, name: &Bytes, denies: bool) {
        if !self.reached {
            return;
        }
        self.dry_run_hits.push(id);
        if denies && self.dry_run.is_none() {
            self.dry_run = Some(DryRun::new(reason, name.clone()));
        }
    }
}

impl Evaluation<'_, '_, '_> {
    /// Records `verdict`, a deny the global dry-run switch keeps from being enforced, as
    /// a dry-run hit.
    pub(crate) fn switched_to_dry_run(&mut self, verdict: &Verdict) {
        if let Some(id) = verdict.rule_id {
            self.dry_run_hits.push(id);
        }
        if self.dry_run.is_none() {
            self.dry_run = Some(DryRun::new(verdict.reason, verdict.rule.clone()));
        }
    }
}

/// Runs `step`.
#[inline(always)]
pub(crate) fn run(step: Step, ev: &mut Evaluation<'_, '_, '_>, notes: &mut impl Notes) -> Flow {
    match step {
        Step::Allowlist => allowlist(ev, notes),
        Step::Ban => ban(ev, notes),
        Step::Blocklist => blocklist(ev, notes),
        Step::Asn => asn(ev, notes),
        Step::UserAgent => user_agent(ev, notes),
        Step::RateLimit => rate_limit(ev, notes),
    }
}

/// A decisive verdict of rule `id`.
fn decide(decision: Decision, reason: Reason, id: RuleId, name: &Bytes) -> Flow {
    let mut verdict = Verdict::new(decision, reason, name.clone());
    verdict.rule_id = Some(id);
    Flow::Decide(verdict)
}

/// Text of a rule name for notes.
fn text(name: &Bytes) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// A list match in `matcher`, whose lists are numbered from `offset`.
#[inline]
fn list_match(matcher: &IpMatcher, offset: u32, src: IpAddr) -> Option<(RuleId, &Bytes)> {
    let index = matcher.lookup_index(src)?;
    Some((id(offset, index), matcher.rule_name(index)?))
}

/// Step 1: an allow list holds the source → allow, nothing else evaluated.
#[inline]
pub(crate) fn allowlist(ev: &mut Evaluation<'_, '_, '_>, notes: &mut impl Notes) -> Flow {
    let (rules, offsets) = (&ev.engine.rules, ev.engine.table.offsets);
    if let Some((id, name)) = list_match(&rules.allow_dry_run, offsets.allow_dry_run, ev.src) {
        notes.note(|| Note::ListMatch {
            list: text(name),
            effect: Effect::WouldAllow,
        });
        ev.dry_run(id, Reason::Allowlist, name, false);
    }
    if let Some((id, name)) = list_match(&rules.allow, offsets.allow, ev.src) {
        notes.note(|| Note::ListMatch {
            list: text(name),
            effect: Effect::Allow,
        });
        return decide(Decision::Allow, Reason::Allowlist, id, name);
    }
    notes.note(|| Note::ListMiss {
        entries: rules.allow.entries(),
    });
    Flow::Continue
}

/// Step 2: a runtime ban covers the source (its address, a network around it, its AS)
/// → deny, rule = the ban's origin, `retry_after` = the seconds left.
#[inline]
pub(crate) fn ban(ev: &mut Evaluation<'_, '_, '_>, notes: &mut impl Notes) -> Flow {
    let Some(bans) = ev.bans else {
        notes.note(|| Note::BansNotConsulted);
        return Flow::Continue;
    };
    let Some(hit) = bans.lookup(ev.src, ev.asn, ev.unix_now) else {
        notes.note(|| Note::NotBanned { bans: bans.len() });
        return Flow::Continue;
    };
    let seconds = hit.expires_at.saturating_sub(ev.unix_now).max(1);
    notes.note(|| Note::Banned {
        target: hit.target.to_string(),
        origin: text(&hit.origin),
        expires_in: seconds,
        effect: Effect::Deny,
    });
    let mut verdict = Verdict::new(Decision::Deny, Reason::Ban, hit.origin);
    verdict.retry_after = Some(seconds);
    Flow::Decide(verdict)
}

/// Step 3: a block list holds the source → deny.
#[inline]
pub(crate) fn blocklist(ev: &mut Evaluation<'_, '_, '_>, notes: &mut impl Notes) -> Flow {
    let (rules, offsets) = (&ev.engine.rules, ev.engine.table.offsets);
    if let Some((id, name)) = list_match(&rules.block_dry_run, offsets.block_dry_run, ev.src) {
        notes.note(|| Note::ListMatch {
            list: text(name),
            effect: Effect::WouldDeny,
        });
        ev.dry_run(id, Reason::Blocklist, name, true);
    }
    if let Some((id, name)) = list_match(&rules.block, offsets.block, ev.src) {
        notes.note(|| Note::ListMatch {
            list: text(name),
            effect: Effect::Deny,
        });
        return decide(Decision::Deny, Reason::Blocklist, id, name);
    }
    notes.note(|| Note::ListMiss {
        entries: rules.block.entries(),
    });
    Flow::Continue
}

/// Step 4: the source's AS is blocked → deny, rule `AS<n>`.
#[inline]
pub(crate) fn asn(ev: &mut Evaluation<'_, '_, '_>, notes: &mut impl Notes) -> Flow {
    let rules = &ev.engine.rules;
    let Some(asn) = ev.asn else {
        notes.note(|| Note::AsnUnknown);
        return Flow::Continue;
    };
    if !rules.asn_block.contains(asn) {
        notes.note(|| Note::AsnNotBlocked { asn });
        return Flow::Continue;
    }
    let id = RuleId(ev.engine.table.offsets.asn);
    let name = rules.asn_block.rule(asn).cloned().unwrap_or_default();
    if rules.asn_dry_run {
        notes.note(|| Note::AsnBlocked {
            asn,
            effect: Effect::WouldDeny,
        });
        ev.dry_run(id, Reason::Asn, &name, true);
        return Flow::Continue;
    }
    notes.note(|| Note::AsnBlocked {
        asn,
        effect: Effect::Deny,
    });
    decide(Decision::Deny, Reason::Asn, id, &name)
}

/// Step 5: the first matching user-agent rule decides the step: `deny` → deny; `allow`
/// → later user-agent rules are skipped (rate limits still apply). Dry-run rules are
/// counted and evaluation goes on.
#[inline]
pub(crate) fn user_agent(ev: &mut Evaluation<'_, '_, '_>, notes: &mut impl Notes) -> Flow {
    let engine = ev.engine;
    let offset = engine.table.offsets.user_agent;
    let rules = &engine.rules.user_agents;
    for index in rules.matching(ev.request.ua).iter() {
        let Some(rule) = rules.rules().get(index) else {
            continue;
        };
        let (id, name) = (id(offset, index), rule.name());
        let effect = match (rule.action(), rule.dry_run()) {
            (RuleAction::Deny, true) => Effect::WouldDeny,
            (RuleAction::Allow, true) => Effect::WouldAllow,
            (RuleAction::Deny, false) => Effect::Deny,
            (RuleAction::Allow, false) => Effect::AllowUserAgent,
        };
        notes.note(|| Note::UserAgentMatch {
            rule: text(name),
            matches: rule.describe(),
            effect,
        });
        match effect {
            Effect::WouldDeny | Effect::WouldAllow => {
                ev.dry_run(id, Reason::UserAgent, name, effect == Effect::WouldDeny);
            }
            Effect::Deny => return decide(Decision::Deny, Reason::UserAgent, id, name),
            Effect::AllowUserAgent | Effect::Allow => {
                if ev.reached {
                    ev.allowed_by = Some((id, name));
                }
                return Flow::Continue;
            }
        }
    }
    notes.note(|| Note::UserAgentMiss {
        rules: engine.rules.user_agents.len(),
    });
    Flow::Continue
}

/// Step 6: every limit that applies takes a token from the request's bucket; an empty
/// bucket of an enforcing limit denies with 429. The first empty limit in configuration
/// order names the rule; the hint is the longest wait among them. Only the limits the
/// index finds for the request are asked; when someone listens, the others are noted as
/// skipped, in configuration order.
#[inline]
pub(crate) fn rate_limit<N: Notes>(ev: &mut Evaluation<'_, '_, '_>, notes: &mut N) -> Flow {
    let limits = &ev.engine.limits;
    let candidates = limits.candidates(ev.request);
    let mut limited = None;
    if N::LISTENS {
        let mut next = candidates.iter().copied().peekable();
        for (position, limit) in (0u32..).zip(limits.iter()) {
            let candidate = next.next_if_eq(&position).is_some();
            if candidate && limit.applies(ev.request) {
                take_token(ev, notes, position, limit, &mut limited);
            } else {
                notes.note(|| Note::LimitSkipped {
                    limit: text(limit.name()),
                    limit_is: limit.describe(),
                });
            }
        }
    } else {
        for &position in &candidates {
            let Some(limit) = limits.get(position) else {
                continue;
            };
            if limit.applies(ev.request) {
                take_token(ev, notes, position, limit, &mut limited);
            }
        }
    }
    let Some((id, name, seconds)) = limited else {
        return Flow::Continue;
    };
    notes.note(|| Note::RateLimited {
        limit: text(name),
        retry_after: seconds,
    });
    let mut verdict = Verdict::new(Decision::Deny, Reason::RateLimit, name.clone());
    verdict.rule_id = Some(id);
    verdict.retry_after = Some(seconds);
    Flow::Decide(verdict)
}

/// The first enforcing limit with an empty bucket (its rule id and name) and the longest
/// wait among them, as [`rate_limit`] collects them.
type Limited<'e> = Option<(RuleId, &'e Bytes, u32)>;

/// One applying limit of [`rate_limit`]: takes a token (or, past the decision, looks at
/// the bucket), notes it, counts a dry-run hit or records the denial in `limited`.
#[inline]
fn take_token<'e>(
    ev: &mut Evaluation<'e, '_, '_>,
    notes: &mut impl Notes,
    position: u32,
    limit: &'e Limit,
    limited: &mut Limited<'e>,
) {
    let take = if ev.reached {
        limit.take(ev.request, ev.asn, ev.now)
    } else {
        limit.peek(ev.request, ev.asn, ev.now)
    };
    notes.note(|| Note::LimitBucket {
        limit: text(limit.name()),
        key: limit.describe_key(ev.request, ev.asn),
        limit_is: limit.describe(),
        bucket: match take {
            Take::Allowed if ev.reached => Bucket::Taken,
            Take::Allowed => Bucket::Available,
            Take::Denied { retry_after } => Bucket::Empty {
                retry_after: retry_seconds(retry_after),
            },
        },
        dry_run: limit.dry_run(),
    });
    let Take::Denied { retry_after } = take else {
        return;
    };
    let (id, seconds) = (
        id(ev.engine.table.offsets.limit, position as usize),
        retry_seconds(retry_after),
    );
    if limit.dry_run() {
        ev.dry_run(id, Reason::RateLimit, limit.name(), true);
    } else {
        *limited = match *limited {
            None => Some((id, limit.name(), seconds)),
            Some((first, name, longest)) => Some((first, name, longest.max(seconds))),
        };
    }
}

/// Whole seconds for `txn.guard.retry_after`: rounded up, at least 1.
pub(crate) fn retry_seconds(wait: Duration) -> u32 {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}
