//! The admin API's JSON, as the agent writes it and the CLI reads it: one set of types
//! for both sides, so their field names cannot drift apart. Times are RFC 3339 in UTC,
//! durations as operators write them (`10m`, `1h`).

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::agent::{Agent, ReloadReport};
use crate::bans::Ban;
use crate::decision::{Decision, Reason, Request};
use crate::engine::{Engine, Step};

/// `POST /bans`: ban a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanRequest {
    /// An address, a CIDR or an AS number (`AS64496`).
    pub target: String,
    /// How long: `30m`, `1h`, `7d`.
    pub duration: String,
    /// Why (an incident number, a ticket); shown by `spoa-guard bans` and in the logs.
    #[serde(default)]
    pub reason: String,
    /// Allows a network wider than `[bans] max_prefix_v4`/`max_prefix_v6`.
    #[serde(default)]
    pub force: bool,
}

/// One ban, as `GET /bans` lists it and `POST`/`DELETE /bans` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanView {
    /// `203.0.113.0/24`, `2001:db8::/48`, `AS64496`; an address without `/len`.
    pub target: String,
    /// `manual` or the `[[auto_ban]]` rule's name.
    pub origin: String,
    /// Why.
    pub reason: String,
    /// When it was set (RFC 3339, UTC).
    pub since: String,
    /// When it ends (RFC 3339, UTC).
    pub expires_at: String,
    /// Seconds left.
    pub expires_in: u64,
}

impl BanView {
    /// `ban` as seen at `now` (Unix seconds).
    pub fn of(ban: &Ban, now: u32) -> BanView {
        BanView {
            target: ban.target.to_string(),
            origin: ban.origin.to_string(),
            reason: ban.reason.to_string(),
            since: rfc3339(ban.since),
            expires_at: rfc3339(ban.expires_at),
            expires_in: u64::from(ban.expires_at.saturating_sub(now)),
        }
    }
}

/// `POST /dry-run`: turn the global dry-run switch on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    /// For how long (`30m`); the switch turns itself off then.
    #[serde(rename = "for")]
    pub duration: String,
}

/// The global dry-run switch (`GET /dry-run`, and the answer to changing it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunState {
    /// Whether it is on: no rule and no ban denies.
    pub on: bool,
    /// When it turns itself off (RFC 3339), if on.
    pub until: Option<String>,
    /// Seconds until then, if on.
    pub expires_in: Option<u64>,
}

impl DryRunState {
    /// The switch turning off at `until`, seen at `now`.
    pub fn of(until: Option<u32>, now: u32) -> DryRunState {
        DryRunState {
            on: until.is_some(),
            until: until.map(rfc3339),
            expires_in: until.map(|u| u64::from(u.saturating_sub(now))),
        }
    }
}

/// One rule in force (`GET /rules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleView {
    /// Its step: `allowlist`, `ban` (every ban, one row), `blocklist`, `asn`,
    /// `user-agent`, `rate-limit`; or `auto-ban` for an `[[auto_ban]]` rule.
    pub kind: String,
    /// Its name (list file stem, rule or limit name).
    pub name: String,
    /// `enforce` or `dry-run` (as configured; the global switch is reported apart).
    pub mode: String,
    /// `allow` or `deny`.
    pub action: String,
    /// Entries, ASNs or patterns; 1 for a limit; keys being counted for an auto-ban.
    pub size: u64,
    /// Requests it decided (or, in dry run, would have denied) since it was loaded
    /// under this name; bans set (or that it would have set) for an auto-ban.
    pub hits: u64,
    /// A rate limit's scope: `local` or `fleet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// A fleet limit's heaviest keys as this agent sees the fleet, heaviest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hottest: Vec<HotKey>,
}

/// One of a fleet limit's heaviest keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotKey {
    /// The source address when the key is one the traffic insight knows, else the
    /// hashed key (16 hex digits).
    pub key: String,
    /// Tokens the fleet took from its bucket beyond what refilled (0 to burst, more when
    /// denied for a while).
    pub tokens: f64,
    /// Seconds it stays denied fleet-wide (0: it has tokens).
    pub denied_for: f64,
}

/// What the running agent has in force (`GET /rules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulesView {
    /// When the rules in force were loaded (RFC 3339).
    pub loaded_at: String,
    /// The last reload attempt, if there was one since start.
    pub last_reload: Option<ReloadReport>,
    /// The global dry-run switch.
    pub dry_run: DryRunState,
    /// Bans held.
    pub bans: u64,
    /// Every rule, in evaluation order.
    pub rules: Vec<RuleView>,
}

impl RulesView {
    /// What `agent` has in force at `now`: every rule of the engine in evaluation order
    /// with the bans (all origins, one row) after the allow lists, then the
    /// `[[auto_ban]]` rules.
    pub fn of(agent: &Agent, now: u32) -> RulesView {
        let in_force = agent.in_force();
        let bans = u64::try_from(agent.controls.read().len()).unwrap_or(u64::MAX);
        let table: Vec<RuleView> = in_force
            .engine
            .table()
            .iter()
            .map(|(id, rule)| RuleView {
                kind: rule.step.as_str().to_string(),
                name: String::from_utf8_lossy(&rule.name).into_owned(),
                mode: mode(rule.dry_run),
                action: rule.action.as_str().to_string(),
                size: u64::try_from(rule.size).unwrap_or(u64::MAX),
                hits: in_force.hits.get(id),
                scope: None,
                hottest: Vec::new(),
            })
            .collect();
        let mut table = table;
        limits_view(agent, &in_force.engine, &mut table);
        let ban = RuleView {
            kind: Step::Ban.as_str().to_string(),
            name: "bans".to_string(),
            mode: mode(false),
            action: "deny".to_string(),
            size: bans,
            hits: agent
                .metrics
                .decisions
                .of(Decision::Deny, Reason::Ban)
                .get(),
            scope: None,
            hottest: Vec::new(),
        };
        let allow = table.iter().take_while(|r| r.kind == "allowlist").count();
        let auto_bans = agent.auto_bans.rules();
        let auto_bans = auto_bans.iter().map(|rule| RuleView {
            kind: "auto-ban".to_string(),
            name: rule.name().to_string(),
            mode: mode(rule.dry_run()),
            action: "ban".to_string(),
            size: u64::try_from(rule.keys().0).unwrap_or(u64::MAX),
            hits: rule.triggers(),
            scope: None,
            hottest: Vec::new(),
        });
        let mut rules = table;
        rules.insert(allow.min(rules.len()), ban);
        rules.extend(auto_bans);
        let loaded = agent.metrics.rules_loaded_unix_seconds.get();
        RulesView {
            loaded_at: rfc3339(u32::try_from(loaded).unwrap_or(0)),
            last_reload: agent.last_reload(),
            dry_run: DryRunState::of(agent.controls.dry_run_until(now), now),
            bans,
            rules,
        }
    }
}

impl RulesView {
    /// The width of the NAME column of a table of the rules: the longest name, at least
    /// the heading's 4.
    pub fn name_width(&self) -> usize {
        self.rules
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0)
            .max(4)
    }
}

/// Hot keys shown per fleet limit.
const HOTTEST: usize = 5;

/// Adds each rate limit's scope, and each fleet limit's heaviest keys, to its row of
/// `table`. A key is named by its source address when it is the hash of one of the
/// heavy sources of the traffic insight (limits keyed on `src`, `src/N`), by its hash
/// otherwise.
fn limits_view(agent: &Agent, engine: &Engine, table: &mut [RuleView]) {
    let now = std::time::Instant::now();
    let sources: Vec<std::net::IpAddr> = agent
        .insight()
        .map(|insight| insight.top(Duration::from_secs(60), 200, now).all.src)
        .unwrap_or_default()
        .iter()
        .filter_map(|entry| entry.key.parse().ok())
        .collect();
    for limit in engine.limits().iter() {
        let name = String::from_utf8_lossy(limit.name());
        let Some(row) = table
            .iter_mut()
            .find(|r| r.kind == Step::RateLimit.as_str() && r.name == name)
        else {
            continue;
        };
        row.scope = Some(limit.scope().to_string());
        let Some(fleet) = limit.fleet() else { continue };
        let hot = fleet.hottest(HOTTEST, now);
        if hot.is_empty() {
            continue;
        }
        let names: std::collections::HashMap<u64, String> = sources
            .iter()
            .map(|&src| {
                let request = Request {
                    src: Some(src),
                    ..Request::default()
                };
                (limit.key_of(&request, None), src.to_string())
            })
            .collect();
        row.hottest = hot
            .into_iter()
            .map(|(key, ahead)| {
                let (denied, tokens) = fleet.describe_ahead(ahead);
                HotKey {
                    key: names
                        .get(&key)
                        .cloned()
                        .unwrap_or_else(|| format!("{key:016x}")),
                    tokens: (tokens * 10.0).round() / 10.0,
                    denied_for: (denied.as_secs_f64() * 10.0).round() / 10.0,
                }
            })
            .collect();
    }
}

/// `dry-run` or `enforce`.
fn mode(dry_run: bool) -> String {
    if dry_run { "dry-run" } else { "enforce" }.to_string()
}

/// `POST /reload`'s answer.
pub type ReloadView = ReloadReport;

/// Unix seconds as RFC 3339 in UTC, to the second: `2026-12-06T03:48:57Z`.
pub fn rfc3339(unix: u32) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(u64::from(unix))).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_528_937), "2026-12-06T03:48:57Z");
    }

    #[test]
    fn requests_refuse_unknown_fields() {
        let e = serde_json::from_str::<BanRequest>(
            r#"{"target":"192.0.2.1","duration":"1h","reson":"typo"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `reson`"), "{e}");
        let ok: BanRequest =
            serde_json::from_str(r#"{"target":"192.0.2.1","duration":"1h"}"#).unwrap();
        assert_eq!((ok.reason.as_str(), ok.force), ("", false));
    }
}
