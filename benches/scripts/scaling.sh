#!/usr/bin/env bash
# What the number of rules costs, measured from outside: one agent (release build) per
# variant of the realistic rules of benches/scripts/rules.sh, all loaded side by side, the
# bundled load generator run against each in turn, round after round, so that every ratio
# compares runs of the same sitting.
#
# Variants (name:KNOB=VALUE,KNOB=VALUE; the knobs are rules.sh's), by default:
#   combined   the 50 scanner words as ONE user-agent rule     (reference of the ua rows)
#   ua50       the same 50 words as 50 separate rules          target ≥ 0.9 × combined
#   ua500      500 separate rules                              target ≥ 0.8 × combined
#   noua       no user-agent rule
#   limits1    one limit                                       (reference)
#   limits200  200 limits on distinct path prefixes            target ≥ 0.9 × limits1
#   files1     the block list in one file                      (reference)
#   files20    the same entries over 20 files                  target ≥ 0.9 × files1
# Every variant has the rest of the realistic rules (100k-entry generated block list, the
# full ASN tables, three limits that never deny, the bad-bot list where the variant does not
# replace it).
#
# Per variant: the median over ROUNDS of the closed-loop throughput (CONNECTIONS x
# PIPELINE, DURATION s after WARMUP s) and of the agent's CPU per NOTIFY, and the ratio of
# each to its reference (throughput ratio; CPU ratio = reference CPU / variant CPU, so
# higher is better for both), each ratio the median of the per-round ratios.
# BEFORE_BIN=path also runs every variant on that binary (an older build: before/after in
# one sitting); its rows are named before/NAME.
#
# Usage: benches/scripts/scaling.sh [--json]
#   ROUNDS=3 DURATION=5 WARMUP=1 CONNECTIONS=4 PIPELINE=16 benches/scripts/scaling.sh
#   VARIANTS="combined:UA_COMBINED=1 ua50:UA_RULES=50" RATIOS="ua50/combined" benches/scripts/scaling.sh
#   BEFORE_BIN=/tmp/old/target/release/spoa-guard benches/scripts/scaling.sh
# Needs python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

json=0
[ "${1:-}" = "--json" ] && json=1
rounds=${ROUNDS:-3}
duration=${DURATION:-5}
warmup=${WARMUP:-1}
connections=${CONNECTIONS:-4}
pipeline=${PIPELINE:-16}
read -r -a variants <<< "${VARIANTS:-combined:UA_COMBINED=1 ua50:UA_RULES=50 ua500:UA_RULES=500 noua:UA_RULES=0 limits1:LIMITS=1 limits200:LIMITS=200 files1:LIST_FILES=1 files20:LIST_FILES=20}"
read -r -a ratios <<< "${RATIOS:-ua50/combined ua500/combined noua/combined limits200/limits1 files20/files1}"
export BLOCK_ENTRIES=${BLOCK_ENTRIES:-100000}

cargo build --release --quiet --bins   # spoa-guard and spoa-guard-loadgen
loadgen=$root/target/release/spoa-guard-loadgen
binaries=("after=$root/target/release/spoa-guard")
[ -n "${BEFORE_BIN:-}" ] && binaries=("before=$BEFORE_BIN" "${binaries[@]}")

. benches/scripts/common.sh   # $work, $pids, cleanup on exit, free_port, wait_port, timed_loadgen
. benches/scripts/rules.sh

# ---- one agent per variant and binary ------------------------------------------------------
names=() ports=() agents=()
for b in "${binaries[@]}"; do
    label=${b%%=*} bin=${b#*=}
    for v in "${variants[@]}"; do
        name=${v%%:*} knobs=${v#*:}
        [ ${#binaries[@]} -gt 1 ] && name="$label/$name"
        dir=$work/${name//\//-}
        mkdir -p "$dir"
        port=$(free_port)
        (
            IFS=, read -r -a assignments <<< "$knobs"
            for a in "${assignments[@]}"; do [ -n "$a" ] && export "${a?}"; done
            write_rules "$dir" "127.0.0.1:$port"
        )
        "$bin" serve --config "$dir/agent.toml" > "$dir/agent.log" 2>&1 &
        pids+=("$!")
        agents+=("$!") ports+=("$port") names+=("$name")
        wait_port "$port"
        [ "$json" = 1 ] || echo "$name: $knobs ($bin) on 127.0.0.1:$port"
    done
done

# ---- rounds: every variant once per round ---------------------------------------------------
for r in $(seq "$rounds"); do
    for i in "${!names[@]}"; do
        run=${names[$i]//\//-}-$r
        dir=$work/${names[$i]//\//-}
        timed_loadgen "$run" "${agents[$i]}" "$loadgen" --agent "127.0.0.1:${ports[$i]}" \
            --connections "$connections" --pipeline "$pipeline" --warmup "${warmup}s" \
            --duration "${duration}s" --json --deny-share 0.05 --deny-sources "$dir/block-haproxy.txt"
        [ "$json" = 1 ] || python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
t, cpu = r["throughput"], r["agent_cpu_us_per_notify"]
print(f"  round {sys.argv[3]} {sys.argv[2]:<18} {t:>9,.0f} NOTIFY/s  agent {cpu:.2f} µs/NOTIFY")' \
            "$work/$run.json" "${names[$i]}" "$r"
    done
done

python3 - "$json" "$work" "$rounds" "${#names[@]}" "${names[@]}" "${ratios[@]}" <<'PY'
import json, statistics, sys
as_json, work, rounds, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
names, ratios = sys.argv[5:5 + n], sys.argv[5 + n:]
med = statistics.median
rows, runs_of = {}, {}
for name in names:
    runs = [json.load(open(f"{work}/{name.replace('/', '-')}-{r}.json")) for r in range(1, rounds + 1)]
    runs_of[name] = runs
    rows[name] = {"throughput": med(r["throughput"] for r in runs),
                  "rounds": [round(r["throughput"]) for r in runs],
                  "agent_cpu_us_per_notify": med(r["agent_cpu_us_per_notify"] for r in runs),
                  "decisions": {k: sum(r["decisions"].get(k, 0) for r in runs)
                                for k in {k for r in runs for k in r["decisions"]}},
                  "errors": {k: v for r in runs for k, v in r["errors"].items()}}
prefixes = sorted({n.split("/")[0] + "/" for n in names if "/" in n}) or [""]
out = {"rows": rows, "ratios": {}}
for prefix in prefixes:
    for ratio in ratios:
        a, b = (prefix + x for x in ratio.split("/"))
        if a in rows and b in rows:
            # Medians of the per-round ratios: the two runs of a round are close in time,
            # so a machine whose speed drifts between rounds moves both.
            pairs = list(zip(runs_of[a], runs_of[b]))
            out["ratios"][f"{a} / {b}"] = {
                "throughput": med(x["throughput"] / y["throughput"] for x, y in pairs),
                "cpu": med(y["agent_cpu_us_per_notify"] / x["agent_cpu_us_per_notify"] for x, y in pairs)}
if as_json == "1":
    print(json.dumps(out))
    sys.exit()
print("\n| variant | NOTIFY/s (median) | rounds | agent CPU µs/NOTIFY (median) |")
print("|---|---|---|---|")
for name, r in rows.items():
    print(f"| {name} | {r['throughput']:,.0f} | {', '.join(f'{t:,}' for t in r['rounds'])} | "
          f"{r['agent_cpu_us_per_notify']:.2f} |" + (f" errors {r['errors']}" if r["errors"] else ""))
print("\n| ratio | throughput | agent CPU (reference / variant) |")
print("|---|---|---|")
for k, v in out["ratios"].items():
    print(f"| {k} | {v['throughput']:.2f} × | {v['cpu']:.2f} × |")
PY
