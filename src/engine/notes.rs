//! What the steps say about one request, as data: [`Note`]s, collected by a [`Notes`]
//! sink. On the request path the sink is [`Silent`], whose methods are empty and whose
//! notes are never even built (each is a closure); `spoa-guard eval` collects them in an
//! [`Explanation`], which renders them as text or serialises them as JSON.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use super::step::Step;

/// Receives the notes of an evaluation.
pub trait Notes {
    /// Whether notes are kept. A step may take a shortcut that skips parts of the rule
    /// set when nobody listens, and walk all of it to explain when someone does.
    const LISTENS: bool = true;
    /// The notes that follow belong to `step`; `reached` is false for the steps `eval`
    /// runs after the decision, to show what they would have said.
    fn step(&mut self, step: Step, reached: bool);
    /// One note; `note` is only called when someone listens.
    fn note(&mut self, note: impl FnOnce() -> Note);
}

/// The request path's [`Notes`]: keeps nothing; the compiler removes the calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Notes for Silent {
    const LISTENS: bool = false;
    #[inline(always)]
    fn step(&mut self, _step: Step, _reached: bool) {}
    #[inline(always)]
    fn note(&mut self, _note: impl FnOnce() -> Note) {}
}

/// What a matching rule does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// Allowed; nothing else is evaluated (allow lists).
    Allow,
    /// Denied.
    Deny,
    /// Allowed by a user-agent rule: later user-agent rules are skipped, rate limits
    /// still apply.
    AllowUserAgent,
    /// A dry-run rule that would have allowed.
    WouldAllow,
    /// A dry-run rule that would have denied.
    WouldDeny,
}

/// What a limit's bucket for the request's key said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum Bucket {
    /// A token was taken.
    Taken,
    /// A token is there (looked at, not taken: a step after the decision).
    Available,
    /// Empty: the request is over the limit.
    Empty {
        /// Seconds until a token is back.
        retry_after: u32,
    },
}

/// One fact about the evaluation of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "note")]
pub enum Note {
    /// The request has no usable source address: allowed, nothing evaluated.
    NoSource,
    /// The source address and what the ASN database says about it.
    Source {
        /// The address.
        src: IpAddr,
        /// Its AS, if the database knows it.
        asn: Option<u32>,
        /// Whether an ASN database is loaded.
        asn_database: bool,
    },
    /// A runtime ban covers the source.
    Banned {
        /// What is banned: the address, the network around it, or its AS.
        target: String,
        /// Who set it: `manual` or the `[[auto_ban]]` rule.
        origin: String,
        /// Seconds until it ends.
        expires_in: u32,
        /// What it does.
        effect: Effect,
    },
    /// No ban covers the source.
    NotBanned {
        /// Bans in force.
        bans: usize,
    },
    /// Bans were not consulted: they are the running agent's state (offline `eval`).
    BansNotConsulted,
    /// The global dry-run switch is on: the deny above is reported, not enforced.
    DryRunSwitch,
    /// A list holds the source.
    ListMatch {
        /// The list's name.
        list: String,
        /// What it does.
        effect: Effect,
    },
    /// No list of the step holds the source.
    ListMiss {
        /// Entries searched (enforcing lists).
        entries: usize,
    },
    /// The source's AS is in the blocked set.
    AsnBlocked {
        /// The AS.
        asn: u32,
        /// What it does.
        effect: Effect,
    },
    /// The source's AS is not blocked.
    AsnNotBlocked {
        /// The AS.
        asn: u32,
    },
    /// The source's AS is unknown.
    AsnUnknown,
    /// A user-agent rule matches.
    UserAgentMatch {
        /// The rule's name.
        rule: String,
        /// What it matches, in words.
        matches: String,
        /// What it does.
        effect: Effect,
    },
    /// No user-agent rule decides.
    UserAgentMiss {
        /// Rules configured.
        rules: usize,
    },
    /// A limit's conditions do not hold for the request.
    LimitSkipped {
        /// The limit's name.
        limit: String,
        /// The limit in words.
        limit_is: String,
    },
    /// A limit applies: what its bucket for the request's key said.
    LimitBucket {
        /// The limit's name.
        limit: String,
        /// The request's key in words.
        key: String,
        /// The limit in words.
        limit_is: String,
        /// What the bucket said.
        bucket: Bucket,
        /// Whether the limit is in dry run.
        dry_run: bool,
    },
    /// An empty bucket denies the request.
    RateLimited {
        /// The limit that names the deny.
        limit: String,
        /// The longest wait among the empty buckets, in seconds.
        retry_after: u32,
    },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::NoSource => {
                f.write_str("no usable source address: allowed (a HAProxy configuration error)")
            }
            Note::Source {
                src,
                asn: Some(asn),
                ..
            } => write!(f, "source {src} is in AS{asn}"),
            Note::Source {
                src,
                asn: None,
                asn_database: false,
            } => write!(f, "source {src} (no ASN database loaded)"),
            Note::Source { src, .. } => write!(f, "source {src} is not in the ASN database"),
            Note::Banned {
                target,
                origin,
                expires_in,
                effect,
            } => write!(
                f,
                "{target} is banned ({origin}, {expires_in} s left) → {}",
                effect.words()
            ),
            Note::NotBanned { bans } => write!(f, "not banned ({bans} bans in force)"),
            Note::BansNotConsulted => {
                f.write_str("not consulted (bans live in the running agent: `spoa-guard bans`)")
            }
            Note::DryRunSwitch => {
                f.write_str("the global dry-run switch is on: reported, not enforced")
            }
            Note::ListMatch { list, effect } => match effect {
                Effect::WouldAllow | Effect::WouldDeny => {
                    write!(f, "dry-run list {list} matches ({})", effect.words())
                }
                Effect::Allow => write!(f, "{list} matches → allow, nothing else evaluated"),
                _ => write!(f, "{list} matches → {}", effect.words()),
            },
            Note::ListMiss { entries } => write!(f, "no match ({entries} entries)"),
            Note::AsnBlocked { asn, effect } => match effect {
                Effect::WouldDeny | Effect::WouldAllow => {
                    write!(f, "AS{asn} is blocked, dry run ({})", effect.words())
                }
                _ => write!(f, "AS{asn} is blocked → {}", effect.words()),
            },
            Note::AsnNotBlocked { asn } => write!(f, "AS{asn} is not blocked"),
            Note::AsnUnknown => f.write_str("no ASN for the source"),
            Note::UserAgentMatch {
                rule,
                matches,
                effect,
            } => match effect {
                Effect::WouldAllow | Effect::WouldDeny => write!(
                    f,
                    "dry-run rule {rule} matches ({matches}) ({})",
                    effect.words()
                ),
                _ => write!(f, "rule {rule} matches ({matches}) → {}", effect.words()),
            },
            Note::UserAgentMiss { rules } => write!(f, "no rule decides ({rules} rules)"),
            Note::LimitSkipped { limit, limit_is } => {
                write!(f, "limit {limit}: does not apply ({limit_is})")
            }
            Note::LimitBucket {
                limit,
                key,
                limit_is,
                bucket,
                dry_run,
            } => {
                let outcome = match bucket {
                    Bucket::Taken => "token taken".to_string(),
                    Bucket::Available => "a token is there (not taken)".to_string(),
                    Bucket::Empty { retry_after } => {
                        format!("bucket empty, retry after {retry_after}s")
                    }
                };
                let dry = if *dry_run { ", dry run" } else { "" };
                write!(f, "limit {limit}: {outcome} for {key} ({limit_is}{dry})")
            }
            Note::RateLimited { limit, retry_after } => {
                write!(f, "{limit} → deny, retry after {retry_after}s")
            }
        }
    }
}

impl Effect {
    fn words(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::AllowUserAgent => "allow; rate limits still apply",
            Effect::WouldAllow => "would allow",
            Effect::WouldDeny => "would deny",
        }
    }
}

/// Every note of one evaluation, grouped by step: what `spoa-guard eval` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Notes before the first step (the source and its AS).
    pub source: Vec<Note>,
    /// Each step evaluated, in order.
    pub steps: Vec<StepNotes>,
}

/// The notes of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepNotes {
    /// The step.
    pub step: Step,
    /// False for steps after the decision: shown for what they would have said, with no
    /// effect (no token taken, nothing counted).
    pub reached: bool,
    /// What it said.
    pub notes: Vec<Note>,
}

impl Notes for Explanation {
    fn step(&mut self, step: Step, reached: bool) {
        self.steps.push(StepNotes {
            step,
            reached,
            notes: Vec::new(),
        });
    }

    fn note(&mut self, note: impl FnOnce() -> Note) {
        match self.steps.last_mut() {
            Some(step) => step.notes.push(note()),
            None => self.source.push(note()),
        }
    }
}

impl Explanation {
    /// One line per note: `blocklist: drop matches → deny`, prefixed `(not reached)` for
    /// the steps after the decision. Limit notes name their limit instead of the step.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.source.iter().map(ToString::to_string).collect();
        for step in &self.steps {
            let marker = if step.reached { "" } else { "(not reached) " };
            for note in &step.notes {
                let line = match note {
                    Note::LimitSkipped { .. } | Note::LimitBucket { .. } => note.to_string(),
                    Note::RateLimited { .. } => format!("rate limit: {note}"),
                    _ => format!("{}: {note}", step.step.as_str()),
                };
                lines.push(format!("{marker}{line}"));
            }
        }
        lines
    }
}
