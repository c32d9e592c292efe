//! `spoa-guard top --by rule`: which rules decide, and how often, right now. Reads `GET
//! /rules` from the agent's operations listener every refresh and shows each rule's hits
//! per second since the previous refresh, beside its total since it was loaded; dry-run
//! rules show what they would have denied, so an operator can size a rule before
//! enforcing it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::FetchError;
use crate::ops::admin::RulesView;

/// Fetches `GET /rules` from the agent at `addr`.
///
/// # Errors
///
/// Connection refused, timeout, a non-200 answer or a body that is not a rules view.
pub async fn fetch(addr: SocketAddr) -> Result<RulesView, FetchError> {
    super::fetch_json(addr, "/rules").await
}

/// Hit counts of one snapshot, by (kind, name).
#[derive(Debug, Default)]
pub struct Previous {
    hits: HashMap<(String, String), u64>,
    at: Option<Instant>,
}

impl Previous {
    /// Whether nothing was remembered yet.
    pub fn is_empty(&self) -> bool {
        self.at.is_none()
    }

    /// Remembers `view`, taken at `at`.
    pub fn remember(&mut self, view: &RulesView, at: Instant) {
        self.hits = view
            .rules
            .iter()
            .map(|r| ((r.kind.clone(), r.name.clone()), r.hits))
            .collect();
        self.at = Some(at);
    }
}

/// Renders `view` taken at `at`, with rates against `previous` when there is one.
pub fn render(view: &RulesView, previous: &Previous, at: Instant) -> String {
    let elapsed = previous
        .at
        .map(|then| at.saturating_duration_since(then))
        .filter(|d| *d >= Duration::from_millis(100));
    let mut out = String::new();
    let over = elapsed.map_or_else(
        || "rates from the next refresh".to_string(),
        |d| format!("per second over the last {:.1} s", d.as_secs_f64()),
    );
    let _ = writeln!(
        out,
        "spoa-guard top — by rule ({over}; totals since loaded)"
    );
    if view.dry_run.on {
        let until = view.dry_run.until.as_deref().unwrap_or("?");
        let _ = writeln!(out, "DRY-RUN SWITCH ON until {until}: nothing denies");
    }
    let name = view.name_width();
    let _ = writeln!(
        out,
        "\n{:<10}  {:<name$}  {:<7}  {:>10}  {:>12}  EFFECT",
        "KIND", "RULE", "MODE", "HITS/S", "TOTAL"
    );
    for rule in &view.rules {
        let rate = elapsed.map_or_else(
            || "-".to_string(),
            |d| {
                let before = previous
                    .hits
                    .get(&(rule.kind.clone(), rule.name.clone()))
                    .copied()
                    .unwrap_or(0);
                let delta = rule.hits.saturating_sub(before);
                format!("{:.1}", delta as f64 / d.as_secs_f64())
            },
        );
        let effect = match (rule.kind.as_str(), rule.mode.as_str(), rule.action.as_str()) {
            ("auto-ban", "dry-run", _) => "bans it would set",
            ("auto-ban", _, _) => "bans set",
            (_, "dry-run", "deny") => "would deny",
            (_, "dry-run", _) => "would allow",
            (_, _, "deny") => "denied",
            _ => "allowed",
        };
        let _ = writeln!(
            out,
            "{:<10}  {:<name$}  {:<7}  {rate:>10}  {:>12}  {effect}",
            rule.kind, rule.name, rule.mode, rule.hits
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(hits: u64) -> RulesView {
        serde_json::from_value(serde_json::json!({
            "loaded_at": "2026-12-06T00:00:00Z", "last_reload": null,
            "dry_run": { "on": false, "until": null, "expires_in": null }, "bans": 1,
            "rules": [
                { "kind": "ban", "name": "bans", "mode": "enforce", "action": "deny", "size": 1, "hits": hits },
                { "kind": "user-agent", "name": "ai-crawlers", "mode": "dry-run", "action": "deny", "size": 166, "hits": 2 * hits }
            ]
        }))
        .unwrap()
    }

    #[test]
    fn rates_come_from_the_previous_refresh_and_dry_runs_say_would() {
        let t0 = Instant::now();
        let mut previous = Previous::default();
        let first = render(&view(10), &previous, t0);
        assert!(first.contains("rates from the next refresh"), "{first}");
        previous.remember(&view(10), t0);
        let text = render(&view(30), &previous, t0 + Duration::from_secs(2));
        assert!(text.contains("per second over the last 2.0 s"), "{text}");
        assert!(
            text.contains("ban         bans         enforce        10.0            30  denied"),
            "{text}"
        );
        assert!(text.contains("20.0            60  would deny"), "{text}");
    }
}
