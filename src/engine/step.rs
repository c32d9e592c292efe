//! [`Step`]: the stages of the pipeline, in evaluation order, and [`StepInfo`], the one
//! descriptor per step from which `check` output, the [`Summary`](super::Summary), the
//! rule-set size gauges (`spoa_guard_allowlist_entries`, …, [`RuleGauge`]), the fields of
//! the "rules loaded" log lines and the per-rule metric labels are derived.

use serde::Serialize;
use strum::{EnumCount, EnumIter};

use crate::decision::{Decision, Reason};

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
    /// The step's size gauges: one metric each, named after what it counts.
    pub gauges: &'static [RuleGauge],
    /// The actions a verdict of this step can have (`spoa_guard_decisions_total` shows
    /// these pairs, and no other, from the start: see [`outcomes`]).
    pub decisions: &'static [Decision],
}

/// Every (action, reason) a verdict can have: each step's reason with its
/// [`StepInfo::decisions`], and `allow` with reason `none` (nothing matched, or no
/// usable `src`). Dry run never changes an action: a dry-run rule or the global switch
/// lets evaluation go on to a later step, whose outcome is one of these.
pub fn outcomes() -> Vec<(Decision, Reason)> {
    let mut pairs: Vec<(Decision, Reason)> = Step::ALL
        .iter()
        .flat_map(|step| step.info().decisions.iter().map(|d| (*d, step.reason())))
        .collect();
    pairs.push((Decision::Allow, Reason::None));
    pairs
}

/// One gauge of the size of the rule set in force: the metric `spoa_guard_<name>`, and
/// the field `<name>` of the "rules loaded" and "rules reloaded" log lines. Names end
/// with what they count (`_entries`, `_asns`, `_patterns`, `_rules`, `_ranges`); every
/// name is unique, over all steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleGauge {
    /// The name without the `spoa_guard_` prefix: `blocklist_entries`.
    pub name: &'static str,
    /// The metric's help text.
    pub help: &'static str,
    /// What it adds up.
    pub measure: Measure,
}

/// What a [`RuleGauge`] adds up over a step's rules.
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
    /// The merged ranges of the ASN databases (data of the `asn` step and of `asn`
    /// rate-limit keys).
    AsnDatabaseRanges,
}

impl RuleGauge {
    const fn new(name: &'static str, measure: Measure, help: &'static str) -> RuleGauge {
        RuleGauge {
            name,
            help,
            measure,
        }
    }
}

/// The gauges of each step (see [`StepInfo::gauges`]).
const ALLOWLIST_GAUGES: &[RuleGauge] = &[
    RuleGauge::new(
        "allowlist_entries",
        Measure::EnforcedSize,
        "Entries (addresses, networks) of the allow lists in force.",
    ),
    RuleGauge::new(
        "allowlist_dry_run_entries",
        Measure::DryRunSize,
        "Entries of the dry-run allow lists in force.",
    ),
];
const BLOCKLIST_GAUGES: &[RuleGauge] = &[
    RuleGauge::new(
        "blocklist_entries",
        Measure::EnforcedSize,
        "Entries (addresses, networks) of the block lists in force.",
    ),
    RuleGauge::new(
        "blocklist_dry_run_entries",
        Measure::DryRunSize,
        "Entries of the dry-run block lists in force.",
    ),
];
const ASN_GAUGES: &[RuleGauge] = &[
    RuleGauge::new(
        "asn_blocked_asns",
        Measure::Size,
        "Autonomous systems blocked ([asn] block, dry run included).",
    ),
    RuleGauge::new(
        "asn_database_ranges",
        Measure::AsnDatabaseRanges,
        "Address ranges of the ASN databases loaded (merged).",
    ),
];
const USER_AGENT_GAUGES: &[RuleGauge] = &[
    RuleGauge::new(
        "user_agent_rules",
        Measure::Rules,
        "User-agent rules in force (dry run included).",
    ),
    RuleGauge::new(
        "user_agent_patterns",
        Measure::Size,
        "Patterns of the user-agent rules in force (dry run included).",
    ),
];
const RATE_LIMIT_GAUGES: &[RuleGauge] = &[RuleGauge::new(
    "rate_limits",
    Measure::Rules,
    "Rate limits in force (dry run included).",
)];

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
        match self {
            Step::Allowlist => StepInfo {
                title: "allow lists",
                noun: ("list", "lists"),
                unit: "entries",
                gauges: ALLOWLIST_GAUGES,
                decisions: &[Decision::Allow],
            },
            Step::Ban => StepInfo {
                title: "bans",
                noun: ("ban", "bans"),
                unit: "",
                gauges: &[],
                decisions: &[Decision::Deny],
            },
            Step::Blocklist => StepInfo {
                title: "block lists",
                noun: ("list", "lists"),
                unit: "entries",
                gauges: BLOCKLIST_GAUGES,
                decisions: &[Decision::Deny],
            },
            Step::Asn => StepInfo {
                title: "blocked ASNs",
                noun: ("set", "sets"),
                unit: "ASNs",
                gauges: ASN_GAUGES,
                decisions: &[Decision::Deny],
            },
            Step::UserAgent => StepInfo {
                title: "user agents",
                noun: ("rule", "rules"),
                unit: "patterns",
                gauges: USER_AGENT_GAUGES,
                decisions: &[Decision::Allow, Decision::Deny],
            },
            Step::RateLimit => StepInfo {
                title: "limits",
                noun: ("limit", "limits"),
                unit: "",
                gauges: RATE_LIMIT_GAUGES,
                decisions: &[Decision::Deny],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_gauge_name_is_unique_and_ends_with_what_it_counts() {
        let names: Vec<&str> = Step::ALL
            .iter()
            .flat_map(|s| s.info().gauges.iter().map(|g| g.name))
            .collect();
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for name in names {
            let noun = [
                "_entries",
                "_asns",
                "_ranges",
                "_rules",
                "_patterns",
                "_limits",
            ];
            assert!(noun.iter().any(|n| name.ends_with(n)), "{name}");
        }
    }

    #[test]
    fn the_possible_outcomes_are_each_steps_actions_and_allow_none() {
        let pairs: BTreeSet<(Decision, Reason)> = outcomes().into_iter().collect();
        let expected: BTreeSet<(Decision, Reason)> = [
            (Decision::Allow, Reason::Allowlist),
            (Decision::Allow, Reason::UserAgent),
            (Decision::Allow, Reason::None),
            (Decision::Deny, Reason::Ban),
            (Decision::Deny, Reason::Blocklist),
            (Decision::Deny, Reason::Asn),
            (Decision::Deny, Reason::UserAgent),
            (Decision::Deny, Reason::RateLimit),
        ]
        .into_iter()
        .collect();
        assert_eq!(pairs, expected);
    }
}
