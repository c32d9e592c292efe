#!/usr/bin/env bash
# Memory given back, per allocator: the agent's resident memory (VmRSS) fresh, after many
# live reloads of a large list, and after a burst of connections, with each allocator the
# binary can be built with (Cargo features: system = --no-default-features, jemalloc = the
# default, mimalloc = --no-default-features --features mimalloc).
#
# Per allocator, in a fresh agent with the rules of benches/scripts/rules.sh
# (BLOCK_ENTRIES generated CIDRs in one file, default 1M; full ASN tables; the bad-bot
# list; three limits that never deny) and AGENT_THREADS serving threads (default 2):
#   fresh     VmRSS after loading and 3 s of traffic (RATE NOTIFY/s over 2 connections),
#             then SETTLE s later (default 15): what a fresh agent holds
#   reloads   RELOADS live reloads (default 100) under that traffic, each replacing the
#             list file by one whose every entry differs (moved by a /24), so every reload
#             builds a new table, and waiting for the agent's "rules reloaded"; VmRSS
#             right after and SETTLE s later (default 15)
#   burst     BURST connections (default 5000) at once, each sending NOTIFYs for 5 s, then
#             closed; VmRSS right after and SETTLE s later
#   peak      VmHWM, the highest VmRSS of the whole run
# Reports one table row per allocator, and the ratio "after reloads, settled / fresh,
# settled" (the target of issue 15: at most 2).
#
# ALLOCATORS="system jemalloc mimalloc" (default all three) builds each variant into
# target/allocators/NAME (cargo build --release --target-dir target/allocators) unless
# BIN_<NAME>=path names a binary already built. Throughput and latency per variant: run
# benches/scripts/agent.sh with BIN=target/allocators/NAME/release/spoa-guard.
#
# Usage: benches/scripts/allocator.sh [--json]
#   RELOADS=100 BURST=5000 SETTLE=15 RATE=4000 BLOCK_ENTRIES=1000000 benches/scripts/allocator.sh
# Needs python3 and curl; raises its open-file limit to BURST + 1000.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

json=0
[ "${1:-}" = "--json" ] && json=1
reloads=${RELOADS:-100}
burst=${BURST:-5000}
settle=${SETTLE:-15}
rate=${RATE:-4000}
export BLOCK_ENTRIES=${BLOCK_ENTRIES:-1000000}
export AGENT_THREADS=${AGENT_THREADS:-2}
read -r -a allocators <<< "${ALLOCATORS:-system jemalloc mimalloc}"
ulimit -n $((burst + 1000))

cargo build --release --quiet --bin spoa-guard-loadgen
loadgen=$root/target/release/spoa-guard-loadgen
declare -A bins
for name in "${allocators[@]}"; do
    var=BIN_${name^^}
    if [ -n "${!var:-}" ]; then
        bins[$name]=${!var}
        continue
    fi
    case $name in
    system) features=(--no-default-features) ;;
    jemalloc) features=() ;;
    mimalloc) features=(--no-default-features --features mimalloc) ;;
    *) echo "unknown allocator $name (system, jemalloc, mimalloc)" >&2; exit 1 ;;
    esac
    cargo build --release --quiet --bin spoa-guard "${features[@]}" --target-dir "target/allocators/$name"
    bins[$name]=$root/target/allocators/$name/release/spoa-guard
done

. benches/scripts/common.sh   # $work, $pids, cleanup on exit, free_port, wait_port
. benches/scripts/rules.sh

port=$(free_port) metrics_port=$(free_port)
write_rules "$work" "127.0.0.1:$port"
printf '[metrics]\nlisten = "127.0.0.1:%s"\n[reload]\nwatch = false\npoll_secs = 0\n' \
    "$metrics_port" >> "$work/agent.toml"
sed -i "s/^\[server\]/[server]\nmax_connections = $((burst + 100))/" "$work/agent.toml"
list=$work/generated.txt

status_kib() {  # $1 = pid, $2 = field of /proc/PID/status (VmRSS, VmHWM), in KiB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# Two shifted copies of the list: every entry's address moved by one /24 and by two, so
# each reload (alternating between them) builds a table that differs in every entry.
python3 - "$list" <<'PY'
import ipaddress, sys
path = sys.argv[1]
base = [line.split("/") for line in open(path).read().split()]
for k in (1, 2):
    with open(f"{path}.{k}", "w") as out:
        for addr, bits in base:
            a = (int(ipaddress.IPv4Address(addr)) + 256 * k) % (1 << 32)
            out.write(f"{ipaddress.IPv4Address(a)}/{bits}\n")
PY

# $1 reloads: puts the next shifted copy in place of the list, sends SIGHUP, waits for the
# reload's log line; in one python process.
reload_n() {
    python3 - "$1" "$agent_pid" "$work/agent.log" "$list" <<'PY'
import os, shutil, signal, sys, time
n, pid, log, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(log, "rb") as f:
    f.seek(0, os.SEEK_END)
    for i in range(n):
        shutil.copyfile(f"{path}.{i % 2 + 1}", path + ".new")
        os.replace(path + ".new", path)
        os.kill(pid, signal.SIGHUP)
        seen = b""
        deadline = time.time() + 60
        while b"rules reloaded" not in seen and b"reload failed" not in seen:
            if time.time() > deadline:
                sys.exit(f"reload {i + 1}: no 'rules reloaded' within 60 s")
            time.sleep(0.005)
            seen = seen[-64:] + f.read()
        if b"reload failed" in seen:
            sys.exit(f"reload {i + 1} failed: see the agent's log")
PY
}

traffic() {  # $1 = seconds, $2 = connections, $3 = rate; in the background
    "$loadgen" --agent "127.0.0.1:$port" --connections "$2" --pipeline 1 --rate "$3" \
        --duration "${1}s" --warmup 0s --timeout 5s --json > "$work/traffic.json" 2> "$work/traffic.err" &
    traffic_pid=$!
}

: > "$work/results"
for name in "${allocators[@]}"; do
    cp "$list.1" "$list"   # every allocator starts from the same list
    "${bins[$name]}" serve --config "$work/agent.toml" > "$work/agent.log" 2>&1 &
    agent_pid=$!
    pids+=("$agent_pid")
    wait_port "$port"
    traffic 3 2 "$rate"; wait "$traffic_pid"
    fresh_now=$(status_kib "$agent_pid" VmRSS)
    sleep "$settle"
    fresh=$(status_kib "$agent_pid" VmRSS)

    secs=$((reloads * 3 + 60))   # traffic for longer than the reloads take; stopped after
    traffic "$secs" 2 "$rate"
    t0=$(date +%s.%N)
    reload_n "$reloads"
    t1=$(date +%s.%N)
    kill "$traffic_pid" 2>/dev/null; wait "$traffic_pid" 2>/dev/null || true
    reload_now=$(status_kib "$agent_pid" VmRSS)
    sleep "$settle"
    reload_settled=$(status_kib "$agent_pid" VmRSS)

    "$loadgen" --agent "127.0.0.1:$port" --connections "$burst" --pipeline 1 \
        --rate $((burst * 2)) --duration 5s --warmup 1s --timeout 5s --json \
        > "$work/burst.json" 2> "$work/burst.err" || { cat "$work/burst.err" >&2; exit 1; }
    burst_now=$(status_kib "$agent_pid" VmRSS)
    sleep "$settle"
    burst_settled=$(status_kib "$agent_pid" VmRSS)
    peak=$(status_kib "$agent_pid" VmHWM)
    acks=$(python3 -c "import json; print(json.load(open('$work/burst.json'))['acks'])")
    echo "$name $fresh_now $fresh $reload_now $reload_settled $burst_now $burst_settled $peak" \
        "$(python3 -c "print(round(($t1 - $t0) / $reloads * 1000))") $acks" >> "$work/results"
    kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.05; done
done

python3 - "$work/results" "$json" "$block_desc" "$reloads" "$burst" "$settle" "$AGENT_THREADS" <<'PY'
import json, sys
path, as_json, block, reloads, burst, settle, threads = sys.argv[1:]
rows = []
for line in open(path):
    name, *nums = line.split()
    fresh_now, fresh, rn, rs, bn, bs, peak, ms, acks = map(int, nums)
    rows.append({"allocator": name, "fresh_kib": fresh_now, "fresh_settled_kib": fresh, "reloads_kib": rn, "reloads_settled_kib": rs,
                 "burst_kib": bn, "burst_settled_kib": bs, "peak_kib": peak,
                 "reload_ms": ms, "burst_acks": acks, "settled_over_fresh": round(rs / fresh, 2)})
if as_json == "1":
    print(json.dumps(rows))
    sys.exit()
mib = lambda k: f"{k / 1024:.0f}"
print(f"block list: {block}; {threads} serving threads; {reloads} reloads, {burst} connections, "
      f"settled = {settle} s later (MiB)\n")
print("| allocator | fresh | settled | after reloads | settled | after burst | settled | peak | settled ÷ fresh (reloads) | ms per reload |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['allocator']} | {mib(r['fresh_kib'])} | {mib(r['fresh_settled_kib'])} | {mib(r['reloads_kib'])} | {mib(r['reloads_settled_kib'])} "
          f"| {mib(r['burst_kib'])} | {mib(r['burst_settled_kib'])} | {mib(r['peak_kib'])} "
          f"| {r['settled_over_fresh']} | {r['reload_ms']} |")
PY
