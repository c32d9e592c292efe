//! What happens after a decision: counting it (by action and reason, per rule, dry-run
//! rules included), timing it, feeding traffic insight, counting denies for the
//! `[[auto_ban]]` rules, and logging denies at a bounded rate. Runs on the request path: atomics, one sampled copy into insight's
//! thread-local buffer, and a log line only when the throttle allows.

use std::time::Instant;

use tracing::{info, warn};

use super::{Agent, InForce};
use crate::decision::{Decision, Request, Verdict};
use crate::insight::Observation;

/// Longest request field written in a deny log line, in bytes.
const LOGGED_FIELD_MAX: usize = 256;

/// Records `verdict`, decided for `request` at `now` by `rules`.
#[inline]
pub(super) fn decision(
    agent: &Agent,
    rules: &InForce,
    request: &Request<'_>,
    verdict: &Verdict,
    now: Instant,
) {
    let metrics = &agent.metrics;
    metrics.evaluation.observe(now.elapsed());
    if request.src.is_none() {
        invalid_src(agent, now);
    }
    metrics.decided(verdict);
    if let Some(id) = verdict.rule_id {
        rules.hits.record(id);
    }
    for &id in &verdict.dry_run_hits {
        rules.hits.record(id);
    }
    if let Some(insight) = &agent.insight {
        insight.record(&Observation::of(request, verdict, now));
    }
    agent.auto_bans.count(verdict, request.src, now);
    if let (Decision::Deny, Some(log)) = (verdict.decision, &agent.deny_log) {
        match log.check(now) {
            Some(suppressed) => log_deny(request, verdict, suppressed),
            None => metrics.deny_logs_suppressed.inc(),
        }
    }
}

/// Counts, and now and then logs, a message without a usable `src` (a HAProxy
/// configuration error: the request was allowed).
#[cold]
fn invalid_src(agent: &Agent, now: Instant) {
    agent.metrics.invalid_src.inc();
    if let Some(suppressed) = agent.invalid_src_log.check(now) {
        warn!(
            suppressed,
            "guard-check message without a usable `src` argument (IPv4/IPv6 sample expected, \
             e.g. `args src=src ...`); request allowed"
        );
    }
}

/// One log line for a denied request: who, what and why. `suppressed` denies were not
/// logged since the previous line (`[log] deny_lines_per_second`).
fn log_deny(request: &Request<'_>, verdict: &Verdict, suppressed: u64) {
    let field = |value: Option<&[u8]>| -> String {
        value.map_or_else(String::new, |v| {
            let cut = v.get(..LOGGED_FIELD_MAX).unwrap_or(v);
            String::from_utf8_lossy(cut).into_owned()
        })
    };
    info!(
        target: "spoa_guard::deny",
        src = %request.src.map_or_else(String::new, |s| s.to_string()),
        asn = verdict.asn.unwrap_or(0),
        reason = verdict.reason.as_str(),
        rule = %String::from_utf8_lossy(&verdict.rule),
        status = verdict.status().unwrap_or(0),
        method = %field(request.method),
        host = %field(request.host),
        path = %field(request.path),
        ua = %field(request.ua),
        suppressed,
        "denied"
    );
}
