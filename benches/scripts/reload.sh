#!/usr/bin/env bash
# Live reloads at full size, from outside: what reloads do to decision latency, how long
# one takes, and how long the agent takes to start. The agent (release build) runs the
# rules of benches/scripts/rules.sh with a BLOCK_ENTRIES-entry generated block list
# (default 1M IPv4 CIDRs /24-/32), the full ASN tables, the bad-bot list and three limits
# that never deny; the load generator sends an open loop of RATE NOTIFY/s (default 4000)
# over CONNECTIONS connections with one NOTIFY in flight each, as HAProxy 2.x does.
# Phases of PHASE seconds alternate ROUNDS times:
#   idle       no reload
#   reloading  SIGHUP, wait until spoa_guard_reloads_total moves, SIGHUP again: reloads
#              back to back for the whole phase (the worst case)
# Before each SIGHUP the reload loop changes files, as an operator would (CHANGE):
#   list   (default) touches the block list: it is parsed and built again, the unchanged
#          ASN tables are kept
#   all    touches the block list and the ASN tables (copied into the work directory):
#          everything is built again
#   none   changes nothing: every structure is kept
# Reports per phase kind: median over rounds of the NOTIFY->ACK p50, p99, p99.9 and max
# (µs, from the intended send time), the ratio reloading / idle, the median reload time
# (from the agent's "rules reloaded" log lines), the reloads done and the agent CPU per
# reload (reloading-phase CPU minus idle-phase CPU, per reload); and the start-up time
# (process start to listening, rules loaded; median of STARTS fresh starts, default 3).
#
# BIN=path runs that agent binary instead of target/release/spoa-guard (an older build).
# HUP=0 runs the reload loop without sending SIGHUP (it still touches the files): what
# the loop itself costs.
#
# Usage: benches/scripts/reload.sh [--json]
#   ROUNDS=3 PHASE=10 RATE=4000 CONNECTIONS=2 BLOCK_ENTRIES=1000000 CHANGE=list benches/scripts/reload.sh
# Needs python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

json=0
[ "${1:-}" = "--json" ] && json=1
rounds=${ROUNDS:-3}
phase=${PHASE:-10}
rate=${RATE:-4000}
connections=${CONNECTIONS:-2}
export BLOCK_ENTRIES=${BLOCK_ENTRIES:-1000000}

cargo build --release --quiet --bins   # spoa-guard and spoa-guard-loadgen
bin=${BIN:-$root/target/release/spoa-guard}
loadgen=$root/target/release/spoa-guard-loadgen

. benches/scripts/common.sh   # $work, $pids, cleanup on exit, free_port, wait_port, cpu_ticks, $hz
. benches/scripts/rules.sh

change=${CHANGE:-list}
port=$(free_port) metrics_port=$(free_port)
write_rules "$work" "127.0.0.1:$port"
printf '[metrics]\nlisten = "127.0.0.1:%s"\n[reload]\nwatch = false\npoll_secs = 0\n' \
    "$metrics_port" >> "$work/agent.toml"
changed=()   # the files the reload loop touches
case $change in
none) ;;
list) changed=("$work"/generated*.txt) ;;
all)
    changed=("$work"/generated*.txt)
    for db in "$root"/benches/data/ip-location-db-asn-ipv*.csv.gz; do
        cp "$db" "$work/"
        sed -i "s|$db|$work/${db##*/}|" "$work/agent.toml"
        changed+=("$work/${db##*/}")
    done ;;
*) echo "CHANGE must be list, all or none" >&2; exit 1 ;;
esac

# Start-up: process start to listening, over STARTS fresh starts; the last one stays.
startups=()
for s in $(seq "${STARTS:-3}"); do
    started=$(date +%s.%N)
    "$bin" serve --config "$work/agent.toml" > "$work/agent.log" 2>&1 &
    agent_pid=$!
    pids+=("$agent_pid")
    wait_port "$port"
    ready=$(date +%s.%N)
    startups+=("$(python3 -c "print(round(($ready - $started) * 1000))")")
    if [ "$s" -lt "${STARTS:-3}" ]; then
        kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
        while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.05; done
    fi
done
startup_ms=$(printf '%s\n' "${startups[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')

reloads_done() {  # spoa_guard_reloads_total{result="success"}
    curl -fsS "http://127.0.0.1:$metrics_port/metrics" |
        awk '/^spoa_guard_reloads_total\{result="success"\}/ { print $2 }'
}

# Reloads back to back until the file $1 exists: touches the changed files, sends SIGHUP,
# waits for the agent's "rules reloaded" log line, again. One python process, so the loop
# forks nothing per reload (a curl and a few shell forks every 20 ms were themselves
# enough to push the p99.9 to 4 ms on a 2-core machine).
reload_loop() {
    python3 - "$1" "$agent_pid" "$work/agent.log" "${HUP:-1}" "${changed[@]}" <<'PY'
import os, signal, sys, time
stop, pid, log, hup, files = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", sys.argv[5:]
with open(log, "rb") as f:
    f.seek(0, os.SEEK_END)
    while not os.path.exists(stop):
        for path in files:
            os.utime(path)
        if not hup:
            time.sleep(0.02)
            continue
        os.kill(pid, signal.SIGHUP)
        seen = b""
        while b"rules reloaded" not in seen and b"reload failed" not in seen and not os.path.exists(stop):
            time.sleep(0.005)
            seen = seen[-64:] + f.read()
PY
}

run_phase() {  # $1 = name (idle|reloading), $2 = round
    local name=$1 round=$2 loop_pid= c0 c1 n0 n1
    c0=$(cpu_ticks "$agent_pid") n0=$(reloads_done)
    if [ "$name" = reloading ]; then
        rm -f "$work/stop"
        reload_loop "$work/stop" &
        loop_pid=$!
    fi
    "$loadgen" --agent "127.0.0.1:$port" --connections "$connections" --pipeline 1 \
        --rate "$rate" --duration "${phase}s" --warmup 1s --json \
        --deny-share 0.05 --deny-sources "$block_haproxy" > "$work/$name-$round.json" \
        2> "$work/$name-$round.err" || { cat "$work/$name-$round.err" >&2; exit 1; }
    if [ -n "$loop_pid" ]; then
        touch "$work/stop"
        wait "$loop_pid"
    fi
    c1=$(cpu_ticks "$agent_pid") n1=$(reloads_done)
    echo "$name $round $((c1 - c0)) $(python3 -c "print(int($n1 - $n0))")" >> "$work/cpu"
    sleep 1   # the last retired engine is freed before the next phase
}

for round in $(seq "$rounds"); do
    run_phase idle "$round"
    run_phase reloading "$round"
done

python3 - "$work" "$rounds" "$json" "$startup_ms" "$block_desc" "$rate" "$connections" "$phase" "$change" "$hz" <<'PY'
import json, re, statistics, sys
work, rounds, as_json, startup_ms, block, rate, conns, phase, change, hz = sys.argv[1:]
rounds = int(rounds)
cpu = {}
for line in open(f"{work}/cpu"):
    name, r, ticks, n = line.split()
    cpu[(name, r)] = (int(ticks) / int(hz) * 1000, int(n))
per_reload = [(cpu[("reloading", r)][0] - cpu[("idle", r)][0]) / cpu[("reloading", r)][1]
              for r in map(str, range(1, rounds + 1)) if cpu[("reloading", r)][1]]
def load(name):
    return [json.load(open(f"{work}/{name}-{r}.json")) for r in range(1, rounds + 1)]
result = {"rounds": rounds, "rate": float(rate), "connections": int(conns), "phase_s": float(phase),
          "block_list": block, "startup_ms": int(startup_ms)}
for name in ("idle", "reloading"):
    runs = load(name)
    lat = {q: statistics.median(r["latency_from_send_us"][q] for r in runs)
           for q in ("p50", "p99", "p99.9", "max")}
    lat["errors"] = sum(r["timeouts"] + r["lost"] for r in runs)
    result[name] = lat
log = open(f"{work}/agent.log").read()
times = [int(m) for m in re.findall(r"ms=(\d+).*rules reloaded|rules reloaded.*ms=(\d+)", log) for m in m if m]
result["reloads"] = len(times)
result["reload_ms_median"] = statistics.median(times) if times else None
result["change"] = change
result["reload_cpu_ms_median"] = round(statistics.median(per_reload)) if per_reload else None
result["ratio"] = {q: round(result["reloading"][q] / max(result["idle"][q], 1), 2)
                   for q in ("p50", "p99", "p99.9")}
if as_json == "1":
    print(json.dumps(result))
    sys.exit()
print(f"block list: {block}; agent started in {result['startup_ms']} ms")
print(f"open loop {float(rate):,.0f} NOTIFY/s over {conns} connection(s), {rounds} x ({phase} s idle + {phase} s reloading)")
print(f"reloads ({change} changed before each): {result['reloads']}, median {result['reload_ms_median']} ms, "
      f"agent CPU {result['reload_cpu_ms_median']} ms per reload\n")
print("| phase | p50 µs | p99 µs | p99.9 µs | max µs | timeouts + lost |")
print("|---|---|---|---|---|---|")
for name in ("idle", "reloading"):
    l = result[name]
    print(f"| {name} | {l['p50']:.0f} | {l['p99']:.0f} | {l['p99.9']:.0f} | {l['max']:.0f} | {l['errors']} |")
r = result["ratio"]
print(f"| ratio | {r['p50']} | {r['p99']} | {r['p99.9']} | | |")
PY
