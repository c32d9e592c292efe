//! [`RuleSettings`]: every reloadable section of the configuration (`[lists]`, `[asn]`,
//! `[[user_agent]]`, `[[limit]]`, `[[auto_ban]]`), each owned and checked by the layer
//! that compiles it, assembled here with the checks that span sections. The engine
//! compiles all but `[[auto_ban]]`, which the agent applies after each decision.
//!
//! Reloadable is a property of this type: a reload re-reads the file and builds a new
//! engine from a new `RuleSettings`; everything outside it needs a restart.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bans::AutoBanSettings;
use crate::decision::RuleName;
use crate::limits::LimitSpec;
use crate::rules::{AsnSettings, ListsSettings, UserAgentSpec};
use crate::util::{Invalid, KeyPath};

/// The rule sections: what a reload rebuilds.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleSettings {
    /// `[lists]`: IP/CIDR allow and block list files.
    pub lists: ListsSettings,
    /// `[asn]`: IP-to-ASN databases and blocked autonomous systems.
    pub asn: AsnSettings,
    /// `[[user_agent]]`: ordered user-agent rules.
    pub user_agent: Vec<UserAgentSpec>,
    /// `[[limit]]`: token-bucket rate limits.
    pub limit: Vec<LimitSpec>,
    /// `[[auto_ban]]`: bans for repeat offenders (applied by the agent, not the engine).
    pub auto_ban: Vec<AutoBanSettings>,
}

impl RuleSettings {
    /// The top-level keys this type reads, in file order: `config` routes them here.
    pub const SECTIONS: [&'static str; 5] = ["lists", "asn", "user_agent", "limit", "auto_ban"];

    /// Every problem in every section (keys from the top of the file), plus the checks
    /// across sections: unique names per kind, an ASN database when a limit keys on `asn`.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut problems = Vec::new();
        let section = KeyPath::of;
        problems.extend(
            self.asn
                .validate()
                .into_iter()
                .map(|p| p.within(&section("asn"))),
        );
        for (i, rule) in self.user_agent.iter().enumerate() {
            let at = section("user_agent").index(i);
            problems.extend(rule.validate().into_iter().map(|p| p.within(&at)));
        }
        unique_names(
            "user_agent",
            self.user_agent.iter().map(|r| &r.name),
            &mut problems,
        );
        for (i, limit) in self.limit.iter().enumerate() {
            let at = section("limit").index(i);
            problems.extend(limit.validate().into_iter().map(|p| p.within(&at)));
            if limit.key.uses_asn() && self.asn.databases.is_empty() {
                problems.push(Invalid::error(
                    at.key("key"),
                    "uses `asn` but [asn] databases is empty",
                ));
            }
        }
        unique_names("limit", self.limit.iter().map(|l| &l.name), &mut problems);
        self.validate_auto_bans(&mut problems);
        problems
    }

    /// The `[[auto_ban]]` checks: each entry's own, unique names, an ASN database for an
    /// `asn` key, and a warning for a `rules` name no rule has (a typo counts nothing).
    fn validate_auto_bans(&self, problems: &mut Vec<Invalid>) {
        let mut names: HashSet<String> = self.lists.files().filter_map(file_stem).collect();
        names.extend(self.user_agent.iter().map(|r| r.name.as_str().to_string()));
        names.extend(self.limit.iter().map(|l| l.name.as_str().to_string()));
        let mut seen = HashSet::new();
        for (i, rule) in self.auto_ban.iter().enumerate() {
            let at = KeyPath::of("auto_ban").index(i);
            problems.extend(rule.validate().into_iter().map(|p| p.within(&at)));
            if !seen.insert(rule.name.trim()) {
                problems.push(Invalid::error(
                    at.clone().key("name"),
                    format!("another auto_ban has the name {:?}", rule.name),
                ));
            }
            if rule.key.trim() == "asn" && self.asn.databases.is_empty() {
                problems.push(Invalid::error(
                    at.clone().key("key"),
                    "uses `asn` but [asn] databases is empty",
                ));
            }
            for (j, name) in rule.rules.iter().enumerate() {
                if !names.contains(name) && !name.starts_with("AS") {
                    problems.push(Invalid::warning(
                        at.clone().key("rules").index(j),
                        format!(
                            "no list, user_agent or limit is named {name:?}: nothing will count"
                        ),
                    ));
                }
            }
        }
    }

    /// Makes every path absolute against `base` (the configuration file's directory).
    pub fn rebase(&mut self, base: &Path) {
        self.lists.rebase(base);
        self.asn.rebase(base);
        for rule in &mut self.user_agent {
            rule.rebase(base);
        }
    }

    /// Every file the rules are read from, in section order: what `check` lists and a
    /// reload watches.
    pub fn files(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> = self.lists.files().collect();
        files.extend(self.asn.files());
        files.extend(self.user_agent.iter().filter_map(|r| r.file.as_deref()));
        files
    }
}

/// A list file's rule name: its stem.
fn file_stem(path: &Path) -> Option<String> {
    Some(path.file_stem()?.to_str()?.to_string())
}

/// Adds an error for every name of `kind` already used by an earlier entry.
fn unique_names<'a>(
    kind: &str,
    names: impl Iterator<Item = &'a RuleName>,
    problems: &mut Vec<Invalid>,
) {
    let mut seen = HashSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            problems.push(Invalid::error(
                KeyPath::of(kind).index(i).key("name"),
                format!("another {kind} has the name {:?}", name.as_str()),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml: &str) -> Vec<String> {
        let settings: RuleSettings = toml::from_str(toml).unwrap();
        settings
            .validate()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn names_are_unique_per_kind() {
        let found = problems(
            "[[limit]]\nname = \"l\"\nrate = 1\n[[limit]]\nname = \"l\"\nrate = 2\n\
             [[user_agent]]\nname = \"l\"\npattern = \"x\"\naction = \"deny\"\n",
        );
        assert_eq!(
            found,
            vec!["limit[1].name: another limit has the name \"l\""]
        );
    }

    #[test]
    fn auto_bans_are_checked_across_sections() {
        let found = problems(
            "[[limit]]\nname = \"login\"\nrate = 1\n\
             [[auto_ban]]\nname = \"a\"\nreasons = [\"rate-limit\"]\nrules = [\"login\", \"logn\"]\n\
             hits = 5\nwindow = \"1m\"\nduration = \"10m\"\n\
             [[auto_ban]]\nname = \"a\"\nreasons = [\"asn\"]\nkey = \"asn\"\nhits = 5\n\
             window = \"1m\"\nduration = \"10m\"\n",
        );
        assert_eq!(
            found,
            vec![
                "auto_ban[0].rules[1]: no list, user_agent or limit is named \"logn\": nothing will count",
                "auto_ban[1].name: another auto_ban has the name \"a\"",
                "auto_ban[1].key: uses `asn` but [asn] databases is empty",
            ]
        );
    }

    #[test]
    fn an_asn_key_needs_a_database() {
        let found = problems("[[limit]]\nname = \"per-as\"\nkey = \"asn\"\nrate = 1\n");
        assert_eq!(
            found,
            vec!["limit[0].key: uses `asn` but [asn] databases is empty"]
        );
    }

    #[test]
    fn paths_are_rebased_and_listed_in_section_order() {
        let mut settings: RuleSettings = toml::from_str(
            "[lists]\nallow = [\"lists/allow.txt\"]\nblock = [\"/abs/block.txt\"]\n\
             [asn]\ndatabases = [\"data/asn.csv.gz\"]\nblock_file = \"asn.txt\"\n\
             [[user_agent]]\nname = \"bots\"\nfile = \"bots.list\"\naction = \"deny\"\n",
        )
        .unwrap();
        settings.rebase(Path::new("/etc/spoa-guard"));
        let files: Vec<String> = settings
            .files()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            files,
            [
                "/etc/spoa-guard/lists/allow.txt",
                "/abs/block.txt",
                "/etc/spoa-guard/data/asn.csv.gz",
                "/etc/spoa-guard/asn.txt",
                "/etc/spoa-guard/bots.list",
            ]
        );
    }
}
