//! What came back: the counters and latency histograms of each connection ([`Stats`]),
//! merged into a [`Report`] printed as text or as one JSON object (whose field names
//! `benches/scripts/agent.sh` reads), and whether the run failed as a whole
//! ([`Report::failure`]: no connection, or no ACK at all).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::Opts;

/// The values of the `action` and `reason` variables set by one ACK, when set.
pub(crate) type Decision = (Option<Bytes>, Option<Bytes>);

/// What one ACK said.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Verdict {
    /// Its `action` and `reason`.
    pub(crate) decision: Decision,
    /// Its `dry_run` variable: the name of the first dry-run rule that would have denied
    /// (spoa-guard's `txn.guard.dry_run`), when one would have.
    pub(crate) dry_run: Option<Bytes>,
}

/// Counters of one connection, or of all after merging.
pub(crate) struct Stats {
    /// Latency of measured ACKs from their intended send time, in microseconds.
    pub(crate) latency: Histogram<u64>,
    /// The same from the actual send time: the agent's (and network's) share alone.
    pub(crate) service: Histogram<u64>,
    pub(crate) sent: u64,
    /// ACKs of requests intended in the measured window.
    pub(crate) acks: u64,
    /// Connections that got through the HELLO exchange.
    pub(crate) connects: u64,
    /// ACKs received in all: measured, warm-up and late ones.
    pub(crate) replies: u64,
    pub(crate) timeouts: u64,
    /// NOTIFYs in flight when their connection died.
    pub(crate) lost: u64,
    /// ACKs for unknown ids (after their timeout, or never sent).
    pub(crate) late_acks: u64,
    /// Open loop: scheduled in the measured window but never sent.
    pub(crate) unsent: u64,
    /// Connection errors and disconnects, by description.
    pub(crate) errors: BTreeMap<String, u64>,
    /// `action/reason` values of measured ACKs.
    pub(crate) decisions: HashMap<Decision, u64>,
    /// Measured ACKs that reported a dry-run hit.
    pub(crate) dry_run_hits: u64,
    /// The same by the rule the ACK named.
    pub(crate) dry_run_rules: HashMap<Bytes, u64>,
    /// `--check-verdicts`: ACKs checked (warm-up included), and those whose action was
    /// not the one expected, with the first few described.
    pub(crate) checked: u64,
    pub(crate) wrong_verdicts: u64,
    pub(crate) wrong_examples: Vec<String>,
}

/// How many wrong verdicts a report describes.
const WRONG_EXAMPLES: usize = 5;

impl Stats {
    /// Nothing counted yet.
    pub(crate) fn new() -> Self {
        Self {
            // 1 µs .. 1 h, 3 significant digits.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant, valid histogram bounds"),
            service: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant, valid histogram bounds"),
            sent: 0,
            acks: 0,
            connects: 0,
            replies: 0,
            timeouts: 0,
            lost: 0,
            late_acks: 0,
            unsent: 0,
            errors: BTreeMap::new(),
            decisions: HashMap::new(),
            dry_run_hits: 0,
            dry_run_rules: HashMap::new(),
            checked: 0,
            wrong_verdicts: 0,
            wrong_examples: Vec::new(),
        }
    }

    /// Checks one ACK's action against the expected one (`--check-verdicts`).
    pub(crate) fn check(&mut self, expect_deny: bool, verdict: &Verdict) {
        self.checked += 1;
        let action = verdict.decision.0.as_deref();
        let expected: &[u8] = if expect_deny { b"deny" } else { b"allow" };
        if action != Some(expected) {
            self.wrong_verdicts += 1;
            if self.wrong_examples.len() < WRONG_EXAMPLES {
                let shown = |v: &Option<Bytes>| {
                    v.as_ref()
                        .map_or("-".to_owned(), |b| String::from_utf8_lossy(b).into_owned())
                };
                self.wrong_examples.push(format!(
                    "expected {}, got {}/{}",
                    String::from_utf8_lossy(expected),
                    shown(&verdict.decision.0),
                    shown(&verdict.decision.1)
                ));
            }
        }
    }

    /// Counts one error of kind `what`.
    pub(crate) fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }

    /// Counts `n` NOTIFYs lost with their connection, and why it ended.
    pub(crate) fn lost(&mut self, n: u64, what: String) {
        self.lost += n;
        self.error(what);
    }

    /// Counts one measured ACK.
    pub(crate) fn ack(&mut self, latency: Duration, service: Duration, verdict: Verdict) {
        self.acks += 1;
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(micros(latency));
        self.service.saturating_record(micros(service));
        *self.decisions.entry(verdict.decision).or_default() += 1;
        if let Some(rule) = verdict.dry_run {
            self.dry_run_hits += 1;
            *self.dry_run_rules.entry(rule).or_default() += 1;
        }
    }

    /// Adds the counts of `other`.
    pub(crate) fn merge(&mut self, other: Stats) {
        // Both histograms have the same bounds; add() only fails on a range mismatch.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        self.sent += other.sent;
        self.acks += other.acks;
        self.connects += other.connects;
        self.replies += other.replies;
        self.timeouts += other.timeouts;
        self.lost += other.lost;
        self.late_acks += other.late_acks;
        self.unsent += other.unsent;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.decisions {
            *self.decisions.entry(k).or_default() += v;
        }
        self.dry_run_hits += other.dry_run_hits;
        for (k, v) in other.dry_run_rules {
            *self.dry_run_rules.entry(k).or_default() += v;
        }
        self.checked += other.checked;
        self.wrong_verdicts += other.wrong_verdicts;
        let room = WRONG_EXAMPLES.saturating_sub(self.wrong_examples.len());
        self.wrong_examples
            .extend(other.wrong_examples.into_iter().take(room));
    }

    /// The most frequent error whose description starts with `prefix`, without it.
    fn most_frequent_error(&self, prefix: &str) -> Option<&str> {
        self.errors
            .iter()
            .filter_map(|(what, n)| Some((what.strip_prefix(prefix)?, *n)))
            // On a tie, the first in order.
            .fold(None, |best: Option<(&str, u64)>, (what, n)| match best {
                Some((_, m)) if m >= n => best,
                _ => Some((what, n)),
            })
            .map(|(what, _)| what)
    }
}

/// The merged statistics of a run.
pub(crate) struct Report {
    pub(crate) stats: Stats,
    /// The measured time (without the warm-up).
    pub(crate) measured: Duration,
}

impl Report {
    /// Measured ACKs per second.
    fn throughput(&self) -> f64 {
        self.stats.acks as f64 / self.measured.as_secs_f64().max(1e-9)
    }

    /// The reported percentiles of `h`, with their names in the text and JSON output.
    fn percentiles(h: &Histogram<u64>) -> Vec<(&'static str, u64)> {
        vec![
            ("p50", h.value_at_quantile(0.50)),
            ("p90", h.value_at_quantile(0.90)),
            ("p99", h.value_at_quantile(0.99)),
            ("p99.9", h.value_at_quantile(0.999)),
            ("max", h.max()),
        ]
    }

    /// Decisions as `action/reason` labels, most frequent first.
    pub(crate) fn decisions(&self) -> Vec<(String, u64)> {
        let label = |v: &Option<Bytes>| {
            v.as_ref()
                .map_or("-".to_owned(), |b| String::from_utf8_lossy(b).into_owned())
        };
        let mut out: Vec<(String, u64)> = self
            .stats
            .decisions
            .iter()
            .map(|((a, r), n)| (format!("{}/{}", label(a), label(r)), *n))
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    /// Dry-run hits by the rule the ACKs named, most frequent first.
    pub(crate) fn dry_run_rules(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .stats
            .dry_run_rules
            .iter()
            .map(|(rule, n)| (String::from_utf8_lossy(rule).into_owned(), *n))
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    /// Why the run failed as a whole, if it did: no connection got through the HELLO
    /// exchange, or not one ACK came back (warm-up and late ACKs included).
    pub(crate) fn failure(&self, opts: &Opts) -> Option<String> {
        let s = &self.stats;
        if s.connects == 0 {
            let why = s
                .most_frequent_error("connect: ")
                .map(|why| format!(" ({why})"))
                .unwrap_or_default();
            return Some(format!(
                "no connection to {} could be made{why}",
                opts.agent
            ));
        }
        if s.replies == 0 {
            let notifys = if s.sent == 1 { "NOTIFY" } else { "NOTIFYs" };
            let why = s
                .most_frequent_error("")
                .map(|why| format!("; most frequent error: {why}"))
                .unwrap_or_default();
            return Some(format!(
                "no ACK came back in {:?} (sent {} {notifys}, {} timed out{why})",
                opts.warmup + opts.duration,
                s.sent,
                s.timeouts
            ));
        }
        if s.wrong_verdicts > 0 {
            return Some(format!(
                "{} of {} ACKs had the wrong verdict (first: {})",
                s.wrong_verdicts,
                s.checked,
                s.wrong_examples.first().map_or("-", String::as_str)
            ));
        }
        None
    }

    /// The human-readable report.
    pub(crate) fn text(&self, opts: &Opts) -> String {
        use std::fmt::Write;
        let s = &self.stats;
        let mode = if opts.rate > 0.0 {
            format!("open loop, target {} NOTIFY/s", opts.rate)
        } else {
            "closed loop".to_owned()
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} connections x pipeline {}, {mode}, {:?} measured after {:?} warm-up",
            opts.agent, opts.connections, opts.pipeline, opts.duration, opts.warmup
        );
        let _ = writeln!(
            out,
            "throughput  {:.0} NOTIFY/s ({} ACKs measured, {} NOTIFYs sent in all)",
            self.throughput(),
            s.acks,
            s.sent
        );
        let line = |h: &Histogram<u64>| {
            Self::percentiles(h)
                .iter()
                .map(|(name, v)| format!("{name} {v}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let _ = writeln!(out, "latency µs  {}", line(&s.latency));
        if opts.rate > 0.0 {
            let _ = writeln!(
                out,
                "  from send {}  (without schedule lag)",
                line(&s.service)
            );
        }
        let _ = writeln!(
            out,
            "errors      timeouts {}  lost in flight {}  late ACKs {}  unsent (behind schedule) {}",
            s.timeouts, s.lost, s.late_acks, s.unsent
        );
        for (what, n) in &s.errors {
            let _ = writeln!(out, "            {n:>8}  {what}");
        }
        let _ = writeln!(out, "decisions");
        let share = |n: u64| 100.0 * n as f64 / s.acks.max(1) as f64;
        for (label, n) in self.decisions() {
            let _ = writeln!(out, "            {n:>8}  {:5.1} %  {label}", share(n));
        }
        let _ = writeln!(
            out,
            "dry run     {} hits ({:.1} % of the measured ACKs)",
            s.dry_run_hits,
            share(s.dry_run_hits)
        );
        for (rule, n) in self.dry_run_rules() {
            let _ = writeln!(out, "            {n:>8}  {:5.1} %  {rule}", share(n));
        }
        if opts.check_verdicts {
            let _ = writeln!(
                out,
                "verdicts    {} checked, {} wrong",
                s.checked, s.wrong_verdicts
            );
            for example in &s.wrong_examples {
                let _ = writeln!(out, "            {example}");
            }
        }
        out
    }

    /// The report as one JSON object (`--json`).
    pub(crate) fn json(&self, opts: &Opts) -> serde_json::Value {
        let s = &self.stats;
        let percentiles = |h: &Histogram<u64>| {
            Self::percentiles(h)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
                .collect::<serde_json::Map<_, _>>()
        };
        let decisions: serde_json::Map<String, serde_json::Value> = self
            .decisions()
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        let dry_run_rules: serde_json::Map<String, serde_json::Value> = self
            .dry_run_rules()
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        serde_json::json!({
            "agent": opts.agent,
            "connections": opts.connections,
            "pipeline": opts.pipeline,
            "rate": opts.rate,
            "source_pool": opts.sources.is_none().then_some(opts.source_pool),
            "duration_s": opts.duration.as_secs_f64(),
            "warmup_s": opts.warmup.as_secs_f64(),
            "throughput": self.throughput(),
            "acks": s.acks,
            "sent": s.sent,
            "latency_us": percentiles(&s.latency),
            "latency_from_send_us": percentiles(&s.service),
            "timeouts": s.timeouts,
            "lost": s.lost,
            "late_acks": s.late_acks,
            "unsent": s.unsent,
            "errors": s.errors,
            "decisions": decisions,
            "dry_run_hits": s.dry_run_hits,
            "dry_run_rules": dry_run_rules,
            "checked": opts.check_verdicts.then_some(s.checked),
            "wrong_verdicts": opts.check_verdicts.then_some(s.wrong_verdicts),
            "wrong_examples": s.wrong_examples,
        })
    }
}
