//! The alerting kit in `deploy/`: the Prometheus rules pass `promtool check rules` and
//! their unit tests (`promtool test rules`), every alert has a firing and a quiet unit
//! test and a runbook section, the Grafana dashboard is well formed and follows its
//! variables, and every metric the rules and the dashboard use is one a real agent
//! exposes on `/metrics`, with label values it really produces.
//!
//! promtool comes from Debian's `prometheus` package (`apt-get install -y
//! --no-install-recommends prometheus`), or `SPOA_GUARD_PROMTOOL=/path/to/promtool`.
//! Without it the promtool tests print `SKIPPED:` and pass, except under `CI=true`, where
//! they fail.

mod common;

use common::agent;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agent::AgentProcess;
use serde_json::Value;

const RULES: &str = "deploy/prometheus/spoa-guard-alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/spoa-guard-alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/spoa-guard-dashboard.json";
const README: &str = "deploy/README.md";

/// The data source variable every panel, target and query variable must use.
const DATASOURCE: &str = "${datasource}";

fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

// ---------------------------------------------------------------------------------------
// promtool

/// Whether this run must not skip: the environment variable `CI` is `true`.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// `SPOA_GUARD_PROMTOOL`, else `promtool` on `PATH`; `None` after printing `SKIPPED:`.
/// Under `CI=true` a missing promtool fails the test instead.
fn promtool() -> Option<PathBuf> {
    let found = match std::env::var_os("SPOA_GUARD_PROMTOOL") {
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("promtool"))
                .find(|p| p.is_file())
        }),
    };
    if found.is_none() {
        let hint =
            "apt-get install -y --no-install-recommends prometheus, or set SPOA_GUARD_PROMTOOL";
        assert!(
            !in_ci(),
            "promtool is required in CI (CI=true) but was not found: {hint}"
        );
        eprintln!("SKIPPED: promtool not found ({hint})");
    }
    found
}

/// Runs promtool in `dir`; fails the test with its output unless it succeeds.
fn run_promtool(promtool: &Path, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", promtool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

#[test]
fn promtool_check_rules_accepts_the_rules() {
    let Some(promtool) = promtool() else { return };
    let out = run_promtool(
        &promtool,
        &path("."),
        &["check", "rules", "--lint=all", "--lint-fatal", RULES],
    );
    let rules = rules(&read(RULES));
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "promtool and this test disagree on the rules ({} here):\n{out}",
        rules.len()
    );
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let Some(promtool) = promtool() else { return };
    // Relative to the test file's directory, as its `rule_files` are.
    let dir = path(RULE_TESTS);
    let file = dir.file_name().unwrap().to_str().unwrap();
    let out = run_promtool(&promtool, dir.parent().unwrap(), &["test", "rules", file]);
    assert!(out.contains("SUCCESS"), "{out}");
}

// ---------------------------------------------------------------------------------------
// The rule file, read line by line (the crate has no YAML parser; promtool validates
// the YAML itself). It is written in a fixed style: each rule starts with `- alert:` or
// `- record:`, and `expr:` is either one line or a `|` / `>` block.

#[derive(Debug)]
struct Rule {
    /// `alert` or `record`.
    kind: &'static str,
    name: String,
    expr: String,
    /// Every line of the rule, for its labels and annotations.
    lines: Vec<String>,
}

impl Rule {
    /// The value of `key:` within the rule (labels and annotations are unique keys here).
    fn value(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}:");
        self.lines.iter().find_map(|l| {
            l.trim_start()
                .strip_prefix(&prefix)
                .map(|v| v.trim().trim_matches('"').to_string())
        })
    }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Every alerting and recording rule of a rule file, in order.
fn rules(text: &str) -> Vec<Rule> {
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        let kind = if line.starts_with("- alert:") {
            "alert"
        } else if line.starts_with("- record:") {
            "record"
        } else {
            i += 1;
            continue;
        };
        let dash = indent(lines[i]);
        let name = line.split_once(':').unwrap().1.trim().to_string();
        let mut body = vec![lines[i].to_string()];
        i += 1;
        // The rule ends at the next line indented no deeper than its `-`.
        while i < lines.len() {
            let l = lines[i];
            if !l.trim().is_empty() && indent(l) <= dash {
                break;
            }
            body.push(l.to_string());
            i += 1;
        }
        let expr = expression(&body).unwrap_or_else(|| panic!("rule {name}: no expr"));
        rules.push(Rule {
            kind,
            name,
            expr,
            lines: body,
        });
    }
    rules
}

/// The `expr:` of a rule's lines: the rest of its line, or the block below it.
fn expression(body: &[String]) -> Option<String> {
    let at = body
        .iter()
        .position(|l| l.trim_start().starts_with("expr:"))?;
    let key_indent = indent(&body[at]);
    let inline = body[at].trim_start()["expr:".len()..].trim();
    if !inline.starts_with('|') && !inline.starts_with('>') {
        return Some(inline.trim_matches('"').trim_matches('\'').to_string());
    }
    let block: Vec<&str> = body[at + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > key_indent)
        .map(|l| l.trim())
        .collect();
    Some(block.join("\n").trim().to_string())
}

/// For each alert name in the unit-test file: (has a firing case, has a quiet case).
fn alert_cases(text: &str) -> BTreeMap<String, (bool, bool)> {
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let name = current.take().expect("exp_alerts without alertname");
            let entry = cases.entry(name).or_default();
            if rest.trim() == "[]" {
                entry.1 = true;
            } else {
                entry.0 = true;
            }
        }
    }
    cases
}

#[test]
fn every_alert_is_unit_tested_firing_and_quiet() {
    let alerts: BTreeSet<String> = rules(&read(RULES))
        .into_iter()
        .filter(|r| r.kind == "alert")
        .map(|r| r.name)
        .collect();
    let cases = alert_cases(&read(RULE_TESTS));
    // promtool passes a quiet case of an alert that does not exist.
    let unknown: Vec<&String> = cases.keys().filter(|n| !alerts.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "{RULE_TESTS} tests {unknown:?}, which {RULES} does not define"
    );
    for name in &alerts {
        let (fires, quiet) = cases.get(name).copied().unwrap_or_default();
        assert!(fires, "{name}: no unit test where it fires");
        assert!(quiet, "{name}: no unit test where it stays quiet");
    }
}

#[test]
fn every_alert_says_how_bad_and_what_to_do() {
    let readme = read(README);
    let rules = rules(&read(RULES));
    assert!(rules.iter().filter(|r| r.kind == "alert").count() >= 10);
    for rule in rules.iter().filter(|r| r.kind == "alert") {
        let name = &rule.name;
        assert!(
            name.starts_with("SpoaGuard"),
            "{name}: not a SpoaGuard* alert"
        );
        let severity = rule.value("severity").unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity.as_str()),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description"] {
            assert!(
                rule.value(key).is_some_and(|v| !v.is_empty()),
                "{name}: no {key} annotation"
            );
        }
        assert!(
            rule.lines.iter().any(|l| l.contains("First:")),
            "{name}: the description does not say what to do first"
        );
        assert!(
            readme.contains(&format!("### {name}")),
            "{README} has no section for {name}"
        );
    }
    for rule in rules.iter().filter(|r| r.kind == "record") {
        // level:metric:operations, https://prometheus.io/docs/practices/rules/
        assert_eq!(
            rule.name.matches(':').count(),
            2,
            "recording rule {} is not named level:metric:operations",
            rule.name
        );
    }
}

// ---------------------------------------------------------------------------------------
// Metric names in PromQL: a small lexer, enough for the expressions in deploy/ (strings,
// label matchers, ranges, grouping clauses, functions and aggregations, keywords,
// numbers, durations and Grafana `$variables`).

/// A vector selector: metric name (empty for `{__name__=...}`) and its label matchers.
#[derive(Debug, PartialEq)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
}

const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: [&str; 8] = [
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Index after the string literal starting at `i` (quote `"`, `'` or backtick).
fn skip_string(b: &[u8], i: usize) -> usize {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() && b[j] != quote {
        j += if b[j] == b'\\' && quote != b'`' { 2 } else { 1 };
    }
    j + 1
}

/// Index after the `close` matching the opener at `i`, skipping strings.
fn skip_to(b: &[u8], i: usize, close: u8) -> usize {
    let mut j = i + 1;
    while j < b.len() && b[j] != close {
        j = if matches!(b[j], b'"' | b'\'' | b'`') {
            skip_string(b, j)
        } else {
            j + 1
        };
    }
    j + 1
}

/// The label matchers of the `{` at `i`, and the index after the `}`.
fn matchers(expr: &str, i: usize) -> (Vec<(String, String, String)>, usize) {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut j = skip_space(b, i + 1);
    while j < b.len() && b[j] != b'}' {
        let start = j;
        while j < b.len() && is_word(b[j]) {
            j += 1;
        }
        let label = expr[start..j].to_string();
        j = skip_space(b, j);
        let op_start = j;
        while j < b.len() && matches!(b[j], b'=' | b'!' | b'~') {
            j += 1;
        }
        let op = expr[op_start..j].to_string();
        j = skip_space(b, j);
        assert!(
            !label.is_empty() && ["=", "!=", "=~", "!~"].contains(&op.as_str()),
            "cannot read the label matchers in {expr:?}"
        );
        let end = skip_string(b, j);
        let value = expr[j + 1..end - 1].to_string();
        out.push((label, op, value));
        j = skip_space(b, end);
        if j < b.len() && b[j] == b',' {
            j = skip_space(b, j + 1);
        }
    }
    (out, j + 1)
}

/// Every vector selector in a PromQL expression.
fn selectors(expr: &str) -> Vec<Selector> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => i = skip_string(b, i),
            // Ranges and subqueries hold durations only.
            b'[' => i = skip_to(b, i, b']'),
            b'$' => {
                i += 1;
                if i < b.len() && b[i] == b'{' {
                    i = skip_to(b, i, b'}');
                } else {
                    while i < b.len() && is_word(b[i]) {
                        i += 1;
                    }
                }
            }
            b'{' => {
                let (matchers, next) = matchers(expr, i);
                out.push(Selector {
                    name: String::new(),
                    matchers,
                });
                i = next;
            }
            c if c.is_ascii_digit() || c == b'.' => {
                // Numbers, 1e-3's mantissa, durations (`offset 1h`).
                while i < b.len() && (is_word(b[i]) || b[i] == b'.') {
                    i += 1;
                }
            }
            c if is_word(c) => {
                let start = i;
                while i < b.len() && is_word(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = skip_space(b, i);
                let following = &expr[next..];
                if GROUPING.contains(&word) {
                    if following.starts_with('(') {
                        i = skip_to(b, next, b')');
                    }
                } else if KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
                    || following.starts_with('(')
                    || following.starts_with("by ")
                    || following.starts_with("by(")
                    || following.starts_with("without")
                {
                    // A keyword, a function, or an aggregation with its clause first.
                } else if following.starts_with('{') {
                    let (matchers, after) = matchers(expr, next);
                    out.push(Selector {
                        name: word.to_string(),
                        matchers,
                    });
                    i = after;
                } else {
                    out.push(Selector {
                        name: word.to_string(),
                        matchers: Vec::new(),
                    });
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The metric names of [`selectors`], in order.
fn names(expr: &str) -> Vec<String> {
    selectors(expr).into_iter().map(|s| s.name).collect()
}

#[test]
fn the_promql_lexer_finds_metric_names() {
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{x="}by(", y=~"$v"}[5m])))
               > 1e-4 and on (instance) b:c:d offset 1h
               or absent(up{job="j"}) unless sum without (k) (c) * 2"#
        ),
        ["a_bucket", "b:c:d", "up", "c"]
    );
    assert_eq!(
        selectors(r#"max by (dimension) (m{job=~"$job", class="all"})"#),
        [Selector {
            name: "m".into(),
            matchers: vec![
                ("job".into(), "=~".into(), "$job".into()),
                ("class".into(), "=".into(), "all".into()),
            ],
        }]
    );
    assert_eq!(
        names("topk(10, sum by(rule) (increase(h_total[$__range]))) / ${x} + time()"),
        ["h_total"]
    );
}

/// Where each expression comes from, and the expression: alert and recording rules, the
/// unit tests' input series, dashboard targets, annotations and query variables.
fn expressions() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = rules(&read(RULES))
        .into_iter()
        .map(|r| (format!("{RULES}: {} {}", r.kind, r.name), r.expr))
        .collect();
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    for panel in all_panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((format!("{DASHBOARD}: {}", panel["title"]), expr.into()));
            }
        }
    }
    // The synthetic series of the unit tests must look like the agent's.
    for line in read(RULE_TESTS).lines() {
        if let Some(series) = line.trim().strip_prefix("- series:") {
            let series = series.trim().trim_matches('\'').to_string();
            out.push((format!("{RULE_TESTS}: input series"), series));
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
        if let Some(expr) = annotation["expr"].as_str() {
            let at = format!("{DASHBOARD}: annotation {}", annotation["name"]);
            out.push((at, expr.into()));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            // label_values(selector, label): the label is not a metric.
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .map_or(query, |(selector, _label)| selector);
            let at = format!("{DASHBOARD}: variable {}", variable["name"]);
            out.push((at, inner.into()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The Grafana dashboard

/// Every panel, rows' nested panels included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = stack.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            stack.extend(nested);
        }
        out.push(panel);
    }
    out
}

/// Every `datasource` value anywhere in the document, with its JSON path.
fn datasources<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "datasource" {
                    out.push((at.clone(), v));
                }
                datasources(v, format!("{at}.{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                datasources(v, format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_dashboard_is_well_formed() {
    let text = read(DASHBOARD);
    let dashboard: Value = serde_json::from_str(&text).unwrap();

    let uid = dashboard["uid"].as_str().unwrap_or_default();
    assert!(
        !uid.is_empty()
            && uid.len() <= 40
            && uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "uid {uid:?}"
    );
    assert!(!dashboard["title"].as_str().unwrap_or_default().is_empty());
    // Grafana 10.0 writes schema version 38.
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 38);
    assert!(
        dashboard["id"].is_null(),
        "an id ties the file to one Grafana"
    );

    // The data source is a variable; nothing names a particular one.
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    for name in ["job", "instance"] {
        assert_eq!(variable(name)["type"], "query", "{name}");
        assert_eq!(variable(name)["datasource"]["uid"], DATASOURCE, "{name}");
    }
    assert!(!text.contains("${DS_"), "an import-time data source input");
    let mut found = Vec::new();
    datasources(&dashboard, String::new(), &mut found);
    for (at, ds) in found {
        let builtin = ds["type"] == "grafana" && ds["uid"] == "-- Grafana --";
        assert!(
            builtin || (ds["type"] == "prometheus" && ds["uid"] == DATASOURCE),
            "{at}: data source {ds} is not {DATASOURCE}"
        );
    }

    // Panels: unique ids, on the 24-column grid, not overlapping, each querying
    // through the variable.
    let panels = all_panels(&dashboard);
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        assert!(!title.is_empty(), "panel without title: {panel}");
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{title}: id");
        let g = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap());
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {g}");
        for (other, [ox, oy, ow, oh]) in &boxes {
            let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((title.clone(), [x, y, w, h]));
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], DATASOURCE, "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert!(refs.insert(target["refId"].as_str().unwrap()), "{title}");
            assert!(!target["expr"].as_str().unwrap().trim().is_empty());
        }
    }

    // Every panel query and annotation follows the job and instance variables.
    for (at, expr) in expressions()
        .into_iter()
        .filter(|(at, _)| at.starts_with(DASHBOARD) && !at.contains(": variable "))
    {
        for selector in selectors(&expr) {
            for (label, variable) in [("job", "$job"), ("instance", "$instance")] {
                let follows = selector.matchers.iter().any(|(l, op, v)| {
                    l.as_str() == label && op.as_str() == "=~" && v.as_str() == variable
                });
                assert!(
                    follows,
                    "{at}: {} without {label}=~\"{variable}\"",
                    selector.name
                );
            }
        }
    }

    // The panels asked for: one metric each at least.
    let used: BTreeSet<String> = expressions()
        .iter()
        .filter(|(at, _)| at.starts_with(DASHBOARD))
        .flat_map(|(_, expr)| names(expr))
        .collect();
    for metric in [
        "spoa_guard_decisions_total",
        "spoa_guard_rule_hits_total",
        "spoa_guard_evaluation_duration_seconds_bucket",
        "spoa_guard_frames_total",
        "spoa_guard_protocol_errors_total",
        "spoa_guard_connections_active",
        "spoa_guard_reloads_total",
        "spoa_guard_reload_failing",
        "spoa_guard_ratelimit_keys",
        "spoa_guard_ratelimit_approximate_total",
        "process_resident_memory_bytes",
        "spoa_guard_top_share",
    ] {
        assert!(used.contains(metric), "no panel shows {metric}");
    }
    // "Rules in force": every rule-set size gauge, from the steps' descriptors (a new
    // step's gauges need a query there).
    let rules_in_force: BTreeSet<String> = all_panels(&dashboard)
        .into_iter()
        .filter(|p| p["title"] == "Rules in force")
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .flat_map(|t| names(t["expr"].as_str().unwrap()))
        .collect();
    for step in spoa_guard::engine::Step::ALL {
        for gauge in step.info().gauges {
            let metric = format!("spoa_guard_{}", gauge.name);
            assert!(
                rules_in_force.contains(&metric),
                "\"Rules in force\" does not show {metric}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Against a real agent

/// What a scrape says: every metric name a query may use (counters as `_total`,
/// histograms as `_bucket`/`_sum`/`_count`, also for families without samples yet), and
/// the label values of each name that has samples.
#[derive(Debug, Default)]
struct Exposition {
    names: BTreeSet<String>,
    labels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut exposition = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (family, kind) = rest.split_once(' ').unwrap();
                let suffixes: &[&str] = match kind {
                    "counter" => &["_total"],
                    "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
                    "summary" => &["", "_sum", "_count"],
                    "info" => &["_info"],
                    _ => &[""],
                };
                for suffix in suffixes {
                    exposition.names.insert(format!("{family}{suffix}"));
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                // `name{labels} value` or `name value` (no timestamps here).
                let series = match line.find('}') {
                    Some(end) => &line[..=end],
                    None => line.split_once(' ').unwrap().0,
                };
                let selector = selectors(series).pop().unwrap();
                exposition.names.insert(selector.name.clone());
                let labels = exposition.labels.entry(selector.name).or_default();
                for (label, _, value) in selector.matchers {
                    labels.entry(label).or_default().insert(value);
                }
            }
        }
        exposition
    }
}

/// Starts the agent binary with `[metrics] listen` on a free port, one rate limit and a
/// user-agent rule (so their families have samples), and scrapes `/metrics`.
async fn scrape_real_agent() -> String {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = format!(
        "[metrics]\nlisten = \"{metrics}\"\n\
         [lists]\nblock = [\"block.txt\"]\n\
         [[user_agent]]\nname = \"scanners\"\naction = \"deny\"\npattern = \"sqlmap\"\n\
         [[limit]]\nname = \"per-ip\"\nrate = 100\n"
    );
    let agent = AgentProcess::with_rules(&config, &[("block.txt", "203.0.113.7\n")]);
    let url = format!("http://{metrics}/metrics");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(response) = reqwest::get(&url).await {
            if response.status().is_success() {
                let text = response.text().await.unwrap();
                assert!(text.ends_with("# EOF\n"), "not OpenMetrics:\n{text}");
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no /metrics on {metrics}:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rules_and_dashboard_use_only_metrics_the_agent_exposes() {
    let exposition = Exposition::parse(&scrape_real_agent().await);
    assert!(
        exposition.names.contains("spoa_guard_decisions_total")
            && exposition
                .names
                .contains("spoa_guard_evaluation_duration_seconds_bucket"),
        "the scrape was not read: {:?}",
        exposition.names
    );
    let recorded: BTreeSet<String> = rules(&read(RULES))
        .into_iter()
        .filter(|r| r.kind == "record")
        .map(|r| r.name)
        .collect();

    let mut problems = Vec::new();
    for (at, expr) in expressions() {
        for selector in selectors(&expr) {
            let name = selector.name.as_str();
            if name.contains(':') {
                if !recorded.contains(name) {
                    problems.push(format!("{at}: {name} is not a recording rule of {RULES}"));
                }
                continue;
            }
            // `up` is Prometheus's own per-target series, not the agent's.
            if name == "up" {
                continue;
            }
            if !exposition.names.contains(name) {
                problems.push(format!("{at}: the agent does not expose {name}"));
                continue;
            }
            // Exact label values must be ones the agent produces, except Prometheus's
            // target labels and names taken from the configuration.
            let Some(labels) = exposition.labels.get(name) else {
                continue;
            };
            for (label, op, value) in &selector.matchers {
                let free = ["job", "instance", "limit", "rule"].contains(&label.as_str());
                if op != "=" || value.contains('$') || free {
                    continue;
                }
                let known = labels.get(label);
                if !known.is_some_and(|values| values.contains(value)) {
                    problems.push(format!(
                        "{at}: {name}{{{label}=\"{value}\"}} never appears; {label} takes {known:?}"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
