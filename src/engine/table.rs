//! The rules of an engine as one numbered table ([`RuleTable`]): every list, the
//! blocked-ASN set, every user-agent rule and every limit, with its step, name, mode and
//! size. A verdict names rules by their [`RuleId`] here; metrics, `check`, `eval` and the
//! rule gauges read the table instead of knowing each kind. [`Summary`] adds it up per
//! step.

use std::fmt;

use bytes::Bytes;
use strum::IntoEnumIterator;

use super::step::{Measure, RuleGauge, Step};
use crate::decision::{RuleAction, RuleId};
use crate::limits::Limits;
use crate::rules::RuleSet;

/// The rule label of the blocked-ASN set in metrics (`txn.guard.rule` names the AS).
pub const ASN_RULE: &str = "blocked-asns";

/// One configured rule as the engine holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// The step that evaluates it.
    pub step: Step,
    /// Its name: the list's file stem, the rule's or limit's name, [`ASN_RULE`].
    pub name: Bytes,
    /// Evaluated and counted, never decisive.
    pub dry_run: bool,
    /// What a match does.
    pub action: RuleAction,
    /// Its size in the step's unit (entries, ASNs, patterns); 1 for a limit.
    pub size: usize,
}

/// Where each kind of rule starts in the table.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Offsets {
    pub allow: u32,
    pub allow_dry_run: u32,
    pub block: u32,
    pub block_dry_run: u32,
    pub asn: u32,
    pub user_agent: u32,
    pub limit: u32,
}

/// Every rule of an engine, numbered in evaluation order.
#[derive(Debug, Clone, Default)]
pub struct RuleTable {
    rules: Vec<RuleInfo>,
    pub(crate) offsets: Offsets,
}

impl RuleTable {
    /// Numbers the rules of `rules` and `limits`.
    pub(crate) fn build(rules: &RuleSet, limits: &Limits) -> RuleTable {
        let mut table = RuleTable::default();
        let lists = [
            (Step::Allowlist, &rules.allow, false, RuleAction::Allow),
            (
                Step::Allowlist,
                &rules.allow_dry_run,
                true,
                RuleAction::Allow,
            ),
            (Step::Blocklist, &rules.block, false, RuleAction::Deny),
            (
                Step::Blocklist,
                &rules.block_dry_run,
                true,
                RuleAction::Deny,
            ),
        ];
        for (i, (step, matcher, dry_run, action)) in lists.into_iter().enumerate() {
            let at = table.next();
            match i {
                0 => table.offsets.allow = at,
                1 => table.offsets.allow_dry_run = at,
                2 => table.offsets.block = at,
                _ => table.offsets.block_dry_run = at,
            }
            for (name, size) in matcher.lists() {
                table.push(step, name.clone(), dry_run, action, size);
            }
        }
        table.offsets.asn = table.next();
        if !rules.asn_block.is_empty() {
            let name = Bytes::from_static(ASN_RULE.as_bytes());
            let size = rules.asn_block.len();
            table.push(Step::Asn, name, rules.asn_dry_run, RuleAction::Deny, size);
        }
        table.offsets.user_agent = table.next();
        for rule in rules.user_agents.rules() {
            let (name, dry_run) = (rule.name().clone(), rule.dry_run());
            table.push(
                Step::UserAgent,
                name,
                dry_run,
                rule.action(),
                rule.patterns(),
            );
        }
        table.offsets.limit = table.next();
        for limit in limits.iter() {
            let (name, dry_run) = (limit.name().clone(), limit.dry_run());
            table.push(Step::RateLimit, name, dry_run, RuleAction::Deny, 1);
        }
        table
    }

    fn next(&self) -> u32 {
        u32::try_from(self.rules.len()).unwrap_or(u32::MAX)
    }

    fn push(&mut self, step: Step, name: Bytes, dry_run: bool, action: RuleAction, size: usize) {
        self.rules.push(RuleInfo {
            step,
            name,
            dry_run,
            action,
            size,
        });
    }

    /// Every rule with its id, in evaluation order.
    pub fn iter(&self) -> impl Iterator<Item = (RuleId, &RuleInfo)> + '_ {
        (0..).map(RuleId).zip(&self.rules)
    }

    /// The rule numbered `id`.
    pub fn get(&self, id: RuleId) -> Option<&RuleInfo> {
        self.rules.get(id.index())
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The id of the `index`-th rule from `offset`.
pub(crate) fn id(offset: u32, index: usize) -> RuleId {
    RuleId(offset.saturating_add(u32::try_from(index).unwrap_or(u32::MAX)))
}

/// What an engine holds, in numbers: for start-up and reload logs, `check` and the
/// rule-set size gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Per step, in evaluation order.
    pub steps: Vec<StepSummary>,
    /// Merged ranges of the ASN databases (data the `asn` step and `asn` keys use).
    pub asn_ranges: usize,
}

/// One step's rules, added up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepSummary {
    /// The step.
    pub step: Step,
    /// Enforcing rules.
    pub rules: usize,
    /// Their sizes, added.
    pub size: usize,
    /// Dry-run rules.
    pub dry_run_rules: usize,
    /// Their sizes, added.
    pub dry_run_size: usize,
}

impl Summary {
    /// Adds up `table`; `asn_ranges` from the ASN database.
    pub fn of(table: &RuleTable, asn_ranges: usize) -> Summary {
        let steps = Step::iter()
            .filter(|step| step.has_rules())
            .map(|step| {
                let mut s = StepSummary {
                    step,
                    rules: 0,
                    size: 0,
                    dry_run_rules: 0,
                    dry_run_size: 0,
                };
                for (_, rule) in table.iter().filter(|(_, r)| r.step == step) {
                    if rule.dry_run {
                        s.dry_run_rules += 1;
                        s.dry_run_size = s.dry_run_size.saturating_add(rule.size);
                    } else {
                        s.rules += 1;
                        s.size = s.size.saturating_add(rule.size);
                    }
                }
                s
            })
            .collect();
        Summary { steps, asn_ranges }
    }

    /// The summary of `step`.
    pub fn step(&self, step: Step) -> StepSummary {
        self.steps
            .iter()
            .copied()
            .find(|s| s.step == step)
            .unwrap_or(StepSummary {
                step,
                rules: 0,
                size: 0,
                dry_run_rules: 0,
                dry_run_size: 0,
            })
    }

    /// The rule-set size gauges ([`RuleGauge`]), from each step's descriptor, in step
    /// order, each with its value.
    pub fn gauges(&self) -> Vec<(&'static RuleGauge, usize)> {
        let mut gauges = Vec::new();
        for s in &self.steps {
            for gauge in s.step.info().gauges {
                let value = match gauge.measure {
                    Measure::EnforcedSize => s.size,
                    Measure::DryRunSize => s.dry_run_size,
                    Measure::Size => s.size.saturating_add(s.dry_run_size),
                    Measure::Rules => s.rules + s.dry_run_rules,
                    Measure::AsnDatabaseRanges => self.asn_ranges,
                };
                gauges.push((gauge, value));
            }
        }
        gauges
    }

    /// The value of the gauge named `name` (0 for a name no step has).
    pub fn gauge(&self, name: &str) -> usize {
        self.gauges()
            .into_iter()
            .find(|(gauge, _)| gauge.name == name)
            .map_or(0, |(_, value)| value)
    }
}

/// Logs an info event with one field per rule-set size gauge (the names of
/// [`Summary::gauges`], which are the metrics' without `spoa_guard_`), then the fields and
/// message given after the summary: `info_with_rule_sizes!(summary, ms = 3, "rules
/// reloaded")`. Numbers as fields of their own, not a list in a string, for JSON logs.
/// A macro, so that the event keeps the caller's target; a test checks the field names
/// against the gauges, so a new gauge needs its line here.
macro_rules! info_with_rule_sizes {
    ($summary:expr, $($rest:tt)+) => {{
        let summary: &$crate::engine::Summary = &$summary;
        tracing::info!(
            allowlist_entries = summary.gauge("allowlist_entries"),
            allowlist_dry_run_entries = summary.gauge("allowlist_dry_run_entries"),
            blocklist_entries = summary.gauge("blocklist_entries"),
            blocklist_dry_run_entries = summary.gauge("blocklist_dry_run_entries"),
            asn_blocked_asns = summary.gauge("asn_blocked_asns"),
            asn_database_ranges = summary.gauge("asn_database_ranges"),
            user_agent_rules = summary.gauge("user_agent_rules"),
            user_agent_patterns = summary.gauge("user_agent_patterns"),
            rate_limits = summary.gauge("rate_limits"),
            $($rest)+
        )
    }};
}
pub(crate) use info_with_rule_sizes;

impl StepSummary {
    /// `2 lists (190000 entries), 1 in dry run (12 entries)`, or `none`.
    pub fn describe(&self) -> String {
        let info = self.step.info();
        let count = |n: usize, size: usize| {
            let noun = if n == 1 { info.noun.0 } else { info.noun.1 };
            if info.unit.is_empty() {
                format!("{n} {noun}")
            } else {
                format!("{n} {noun} ({size} {})", info.unit)
            }
        };
        let mut text = count(self.rules, self.size);
        if self.dry_run_rules > 0 {
            let dry = count(self.dry_run_rules, self.dry_run_size);
            text.push_str(&format!(", {dry} in dry run"));
        }
        text
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} {}", s.step.as_str(), s.describe())?;
        }
        write!(f, "; ASN database {} ranges", self.asn_ranges)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_rules_loaded_log_line_has_one_number_field_per_gauge() {
        let summary = Summary::of(&RuleTable::default(), 7);
        let text = crate::util::json_log::capture(|| {
            info_with_rule_sizes!(summary, cause = "test", "rules loaded");
        });
        let line: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text.trim_end()).unwrap();
        let fields: BTreeSet<&str> = line
            .keys()
            .map(String::as_str)
            .filter(|k| !["timestamp", "level", "target", "message", "cause"].contains(k))
            .collect();
        let gauges: BTreeSet<&str> = summary.gauges().iter().map(|(g, _)| g.name).collect();
        assert_eq!(
            fields, gauges,
            "a new gauge needs its field in info_with_rule_sizes!"
        );
        assert_eq!(line["asn_database_ranges"], 7);
        assert_eq!(line["blocklist_entries"], 0);
        assert_eq!(line["target"], "spoa_guard::engine::table::tests");
    }
}
