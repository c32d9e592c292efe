//! [`Step`]: the stages of the pipeline, in evaluation order, and [`StepInfo`], the one
//! descriptor per step from which `check` output, the [`Summary`](super::Summary), the
//! `spoa_guard_rules` gauges and the per-rule metric labels are derived.

use serde::Serialize;
use strum::{EnumCount, EnumIter};

use crate::decision::Reason;

/// One stage of the decision pipeline (design.md "Evaluation order"), in order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, EnumCount, EnumIter, Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Address allow lists: a match allows and nothing else is evaluated.
    Allowlist,
    /// Runtime bans (not rules: the agent's ban store, outside the reloadable rule set).
    Ban,
    /// Address block lists.
    Blocklist,
    /// The source's autonomous system in the blocked set.
    Asn,
    /// Ordered user-agent rules.
    UserAgent,
    /// Token-bucket rate limits.
    RateLimit,
}

/// How a step's rules are shown and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepInfo {
    /// Heading in `check` output: `block lists`.
    pub title: &'static str,
    /// One rule of the step, and several: `list`, `lists`.
    pub noun: (&'static str, &'static str),
    /// What a rule's size counts (`entries`, `ASNs`, `patterns`); empty when a rule has
    /// no size worth showing.
    pub unit: &'static str,
    /// The `spoa_guard_rules{kind}` gauges the step feeds, and what each one measures;
    /// gauges of the same kind from several steps add up.
    pub gauges: &'static [(&'static str, Measure)],
}

/// What a `spoa_guard_rules` gauge adds up over a step's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Sizes of the enforcing rules.
    EnforcedSize,
    /// Sizes of the dry-run rules.
    DryRunSize,
    /// Sizes of all rules.
    Size,
    /// The number of rules.
    Rules,
}

impl Step {
    /// Every step, in evaluation order (what the pipeline runs; a constant, so the
    /// compiler unrolls it).
    pub const ALL: [Step; 6] = [
        Step::Allowlist,
        Step::Ban,
        Step::Blocklist,
        Step::Asn,
        Step::UserAgent,
        Step::RateLimit,
    ];

    /// The reason a verdict of this step carries (`txn.guard.reason`).
    pub fn reason(self) -> Reason {
        match self {
            Step::Allowlist => Reason::Allowlist,
            Step::Ban => Reason::Ban,
            Step::Blocklist => Reason::Blocklist,
            Step::Asn => Reason::Asn,
            Step::UserAgent => Reason::UserAgent,
            Step::RateLimit => Reason::RateLimit,
        }
    }

    /// The step's name, the same word as its reason: `user-agent`.
    pub fn as_str(self) -> &'static str {
        self.reason().as_str()
    }

    /// Whether the step evaluates configured rules (all but [`Step::Ban`], whose bans
    /// are runtime state): the steps `check`, the rule table and the summary show.
    pub fn has_rules(self) -> bool {
        self != Step::Ban
    }

    /// How the step's rules are shown and counted.
    pub fn info(self) -> StepInfo {
        use Measure::{DryRunSize, EnforcedSize, Rules, Size};
        match self {
            Step::Allowlist => StepInfo {
                title: "allow lists",
                noun: ("list", "lists"),
                unit: "entries",
                gauges: &[
                    ("allow_entries", EnforcedSize),
                    ("dry_run_entries", DryRunSize),
                ],
            },
            Step::Ban => StepInfo {
                title: "bans",
                noun: ("ban", "bans"),
                unit: "",
                gauges: &[],
            },
            Step::Blocklist => StepInfo {
                title: "block lists",
                noun: ("list", "lists"),
                unit: "entries",
                gauges: &[
                    ("block_entries", EnforcedSize),
                    ("dry_run_entries", DryRunSize),
                ],
            },
            Step::Asn => StepInfo {
                title: "blocked ASNs",
                noun: ("set", "sets"),
                unit: "ASNs",
                gauges: &[("asn_blocked", Size)],
            },
            Step::UserAgent => StepInfo {
                title: "user agents",
                noun: ("rule", "rules"),
                unit: "patterns",
                gauges: &[("user_agent_rules", Rules), ("user_agent_patterns", Size)],
            },
            Step::RateLimit => StepInfo {
                title: "limits",
                noun: ("limit", "limits"),
                unit: "",
                gauges: &[("limits", Rules)],
            },
        }
    }
}
