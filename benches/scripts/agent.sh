#!/usr/bin/env bash
# Agent-only SPOP benchmark: loadgen/ -> spoa-guard (release build) over TCP on
# loopback, with the realistic rules of benches/scripts/rules.sh (the ≈190k-entry block list, the
# full ASN tables, the bad-bot list, three limits that never deny). No HAProxy involved.
#   max    closed loop at max speed, CONNECTIONS x PIPELINE, ROUNDS rounds of DURATION s:
#          median throughput, median latency percentiles
#   open   open loop at half the median max rate (or RATE), pipeline PIPELINE, ROUNDS rounds:
#          median p50/p99/p99.9 from the intended send time and from the actual send
# Each run also gives the agent's and the generator's CPU µs per NOTIFY (utime+stime of the
# agent from /proc/PID/stat around the run, the generator's from `time`; warm-up included,
# divided by the NOTIFYs sent), and the agent's RSS (VmRSS) after loading and at the end.
# SOAK=SECONDS replaces the open runs by one soak: the open loop at RATE (default half the
# measured max) for SECONDS, VmRSS sampled every SAMPLE s, and a verdict: flat when the last
# sample is within 5 % (or 2 MiB) of the sample at 1/4 of the run. With RATE set, the max
# runs are skipped.
# Requests: the loadgen's generated mix (browser UAs, paths, sources from its 100k-address
# pool), DENY_SHARE of them from the block list. With SPOA_GUARD_DATA, paths and user agents
# come from its logs/elastic-apache_logs.log (a real combined access log) instead, and the
# block list is the real one.
#
# Usage: benches/scripts/agent.sh [--json]
#   ROUNDS=3 DURATION=10 WARMUP=1 CONNECTIONS=4 PIPELINE=64 benches/scripts/agent.sh
#   RATE=100000 benches/scripts/agent.sh          # open loop at this rate instead of half the max
#   SOAK=600 [RATE=...] [SAMPLE=10] [OUT=rss.csv] benches/scripts/agent.sh   # memory over time
#   DENY_SHARE=0.05 THREADS=1 LOADGEN_ARGS="--source-pool 0" benches/scripts/agent.sh
#   PIN=1 benches/scripts/agent.sh    # agent on CPU 0, generator on CPU 1 (default: unpinned)
# THREADS: the generator's runtime threads. OUT: CSV of the soak samples (t_s,rss_kib).
# AGENT_THREADS=N: the agent's [server] threads (default 1).
# BIN=path: run that agent binary instead of target/release/spoa-guard (e.g. an older build).
# Needs python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

json=0
[ "${1:-}" = "--json" ] && json=1
rounds=${ROUNDS:-3}
duration=${DURATION:-10}
warmup=${WARMUP:-1}
connections=${CONNECTIONS:-4}
pipeline=${PIPELINE:-64}
rate=${RATE:-}
soak=${SOAK:-}
sample=${SAMPLE:-10}
out_csv=${OUT:-}
deny_share=${DENY_SHARE:-0.05}
threads=${THREADS:-1}
pin=${PIN:-0}
read -r -a extra_args <<< "${LOADGEN_ARGS:-}"

cargo build --release --quiet --bins   # spoa-guard and spoa-guard-loadgen
bin=${BIN:-$root/target/release/spoa-guard}
loadgen=$root/target/release/spoa-guard-loadgen

. benches/scripts/common.sh   # $work, $pids, cleanup on exit, free_port, wait_port, cpu_ticks, $hz

agent_cpu=() gen_cpu=()
if [ "$pin" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    agent_cpu=(taskset -c 0) gen_cpu=(taskset -c 1)
fi

rss_kib() {  # VmRSS of process $1, in KiB
    awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"
}
now() { date +%s.%N; }

# ---- the agent on the shared rules -------------------------------------------------------
port=$(free_port)
. benches/scripts/rules.sh
write_rules "$work" "127.0.0.1:$port"
"${agent_cpu[@]}" "$bin" serve --config "$work/agent.toml" > "$work/agent.log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")
wait_port "$port"
rss_start=$(rss_kib "$agent_pid")

paths_args=() mix_desc="generated mix (browser UAs, paths, 100k-address source pool)"
if [ -n "${SPOA_GUARD_DATA:-}" ]; then
    paths_args=(--paths "$SPOA_GUARD_DATA/logs/elastic-apache_logs.log")
    mix_desc="paths and UAs of elastic-apache_logs.log, 100k-address source pool"
fi

# One loadgen run; $1 = name, then loadgen options. Writes $work/$1.json (the report plus
# agent and generator CPU); a failed run or one that saw no block-list denial stops here.
run_loadgen() {
    local name=$1
    shift
    timed_loadgen "$name" "$agent_pid" "${gen_cpu[@]}" "$loadgen" --agent "127.0.0.1:$port" \
        --connections "$connections" --pipeline "$pipeline" --warmup "${warmup}s" \
        --threads "$threads" --json --deny-share "$deny_share" --deny-sources "$block_haproxy" \
        "${paths_args[@]}" "${extra_args[@]}" "$@"
    python3 - "$work/$name.json" "$deny_share" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if float(sys.argv[2]) > 0 and r["decisions"].get("deny/blocklist", 0) == 0:
    sys.exit(f"{sys.argv[1]}: no deny/blocklist decision: {r['decisions']}")
PY
}
# One line per run for the text output; $1 = name.
show_run() {
    python3 - "$work/$1.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l, s = r["latency_us"], r["latency_from_send_us"]
line = (f"  {sys.argv[2]:<8} {r['throughput']:>9,.0f} NOTIFY/s  p50 {l['p50']} p99 {l['p99']} "
        f"p99.9 {l['p99.9']} µs")
if r["rate"] > 0:
    line += f" (from send {s['p50']} / {s['p99']} / {s['p99.9']})"
line += (f"  agent {r['agent_cpu_us_per_notify']:.2f} µs/NOTIFY"
         f"  loadgen {r['loadgen_cpu_us_per_notify']:.2f}")
bad = {k: r[k] for k in ("timeouts", "lost", "late_acks", "unsent") if r[k]}
if bad or r["errors"]:
    line += f"  {bad} {r['errors']}"
print(line)
PY
}

[ "$json" = 1 ] || {
    echo "spoa-guard on 127.0.0.1:$port; block list: $block_desc, $block_entries entries"
    echo "loadgen: $connections connections x pipeline $pipeline, ${warmup}s warm-up, $threads thread(s); $mix_desc; ${deny_share} from the block list${extra_args[*]:+; ${extra_args[*]}}"
    echo "agent RSS after loading the rules: $((rss_start / 1024)) MiB; pinned: $([ ${#agent_cpu[@]} -gt 0 ] && echo 'agent CPU 0, loadgen CPU 1' || echo no)"
}

# ---- closed loop, max speed --------------------------------------------------------------
max_runs=()
if [ -z "$soak" ] || [ -z "$rate" ]; then
    for r in $(seq "$rounds"); do
        run_loadgen "max-$r" --duration "${duration}s"
        max_runs+=("$work/max-$r.json")
        [ "$json" = 1 ] || show_run "max-$r"
    done
fi
median_max() {
    python3 -c 'import json, statistics, sys
print(round(statistics.median(json.load(open(p))["throughput"] for p in sys.argv[1:])))' "${max_runs[@]}"
}
[ -n "$rate" ] || rate=$(($(median_max) / 2))

# ---- open loop, or the soak --------------------------------------------------------------
open_runs=()
if [ -z "$soak" ]; then
    for r in $(seq "$rounds"); do
        run_loadgen "open-$r" --duration "${duration}s" --rate "$rate"
        open_runs+=("$work/open-$r.json")
        [ "$json" = 1 ] || show_run "open-$r"
    done
else
    [ "$json" = 1 ] || echo "soak: open loop at $rate NOTIFY/s for ${soak}s (+${warmup}s warm-up), VmRSS every ${sample}s"
    : > "$work/samples"
    start=$(now)
    run_loadgen soak --duration "${soak}s" --rate "$rate" &
    soak_pid=$!
    pids+=("$soak_pid")
    elapsed() { awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
    next=0
    while :; do
        t=$(elapsed) kib=$(rss_kib "$agent_pid")
        echo "$t $kib" >> "$work/samples"
        [ "$json" = 1 ] || printf '  t %6s s  RSS %8.1f MiB\n' "$t" "$(awk -v k="$kib" 'BEGIN { print k / 1024 }')"
        kill -0 "$soak_pid" 2>/dev/null || break
        # Sleep until the next sample is due (every $sample s from the start, no drift) or
        # the run ends; the last sample is taken right after the end.
        next=$((next + sample))
        while kill -0 "$soak_pid" 2>/dev/null && awk -v t="$(elapsed)" -v n="$next" 'BEGIN { exit !(t < n) }'; do
            sleep 0.1
        done
    done
    wait "$soak_pid"
    [ "$json" = 1 ] || show_run soak
    open_runs+=("$work/soak.json")
    if [ -n "$out_csv" ]; then
        { echo "t_s,rss_kib"; tr ' ' , < "$work/samples"; } > "$out_csv"
    fi
fi
rss_end=$(rss_kib "$agent_pid")

python3 - "$json" "$work/samples" "$rate" "${soak:-0}" "$rss_start" "$rss_end" "$block_entries" \
    "$block_desc" "$connections" "$pipeline" "$duration" "$rounds" "${#max_runs[@]}" \
    "${max_runs[@]}" "${open_runs[@]}" <<'PY'
import json, os, statistics, sys
(as_json, samples_path, rate, soak, rss_start, rss_end, entries, desc, conns, pipeline,
 duration, rounds, n_max), paths = sys.argv[1:14], sys.argv[14:]
n_max, soak = int(n_max), int(soak)
runs = [json.load(open(p)) for p in paths]
max_runs, open_runs = runs[:n_max], runs[n_max:]
med = lambda vals: statistics.median(vals) if vals else None
pct = lambda rs, field: {q: med([r[field][q] for r in rs]) for q in ("p50", "p90", "p99", "p99.9", "max")}
def summary(rs):
    if not rs:
        return None
    return {"throughput_median": med([r["throughput"] for r in rs]),
            "throughput_rounds": [round(r["throughput"]) for r in rs],
            "latency_us": pct(rs, "latency_us"), "latency_from_send_us": pct(rs, "latency_from_send_us"),
            "agent_cpu_us_per_notify": med([r["agent_cpu_us_per_notify"] for r in rs]),
            "loadgen_cpu_us_per_notify": med([r["loadgen_cpu_us_per_notify"] for r in rs]),
            **{k: sum(r[k] for r in rs) for k in ("acks", "timeouts", "lost", "late_acks", "unsent")},
            "errors": {k: v for r in rs for k, v in r["errors"].items()}}
decisions = {}
for r in runs:
    for k, v in r["decisions"].items():
        decisions[k] = decisions.get(k, 0) + v
out = {"block_list": desc, "block_entries": int(entries), "connections": int(conns),
       "pipeline": int(pipeline), "duration_s": float(duration), "rounds": int(rounds),
       "max": summary(max_runs), "open_rate": float(rate),
       "rss_kib": {"start": int(rss_start), "end": int(rss_end)}, "decisions": decisions}
if soak:
    samples = [(float(t), int(k)) for t, k in (l.split() for l in open(samples_path))]
    total = samples[-1][0]
    # The sample nearest to 1/4 of the run, not the one at 0 (before the load).
    ref = min(samples[1:] or samples, key=lambda s: abs(s[0] - total / 4))
    tol = max(0.05 * ref[1], 2048)
    diff = samples[-1][1] - ref[1]
    verdict = "flat" if abs(diff) <= tol else ("growing" if diff > 0 else "shrinking")
    out["soak"] = {"seconds": soak, "rate": float(rate), "samples": samples, "reference": ref,
                   "last": samples[-1], "verdict": verdict, **summary(open_runs)}
else:
    out["open"] = summary(open_runs)
if as_json == "1":
    print(json.dumps(out))
    sys.exit()
acks = sum(decisions.values())
print("\ndecisions: " + ", ".join(f"{k} {100 * v / acks:.1f} %" for k, v in
                                  sorted(decisions.items(), key=lambda kv: -kv[1])))
print(f"agent RSS: {int(rss_start) / 1024:.1f} MiB after loading, {int(rss_end) / 1024:.1f} MiB at the end\n")
print("| run | NOTIFY/s (median) | p50 µs | p99 µs | p99.9 µs | from send p50 / p99 / p99.9 µs | agent CPU µs/NOTIFY | loadgen CPU µs/NOTIFY |")
print("|---|---|---|---|---|---|---|---|")
f = lambda v: "-" if v is None else f"{v:,.0f}"
def row(name, s, open_loop):
    l, fs = s["latency_us"], s["latency_from_send_us"]
    send = f"{f(fs['p50'])} / {f(fs['p99'])} / {f(fs['p99.9'])}" if open_loop else "-"
    print(f"| {name} | {f(s['throughput_median'])} | {f(l['p50'])} | {f(l['p99'])} | {f(l['p99.9'])} | "
          f"{send} | {s['agent_cpu_us_per_notify']:.2f} | {s['loadgen_cpu_us_per_notify']:.2f} |")
    bad = {k: s[k] for k in ("timeouts", "lost", "late_acks", "unsent") if s[k]}
    if bad or s["errors"]:
        print(f"|   {name}: {bad} {s['errors']} | | | | | | | |")
if out["max"]:
    row(f"closed loop {conns} x {pipeline}", out["max"], False)
if not soak:
    row(f"open loop {float(rate):,.0f}/s", out["open"], True)
else:
    s = out["soak"]
    row(f"soak {float(rate):,.0f}/s, {soak} s", s, True)
    print(f"\nsoak RSS: {s['reference'][1] / 1024:.1f} MiB at {s['reference'][0]:.0f} s (1/4 of the run), "
          f"{s['last'][1] / 1024:.1f} MiB at the end ({s['last'][0]:.0f} s): {s['verdict']}")
PY
