#!/usr/bin/env bash
# Fleet mode under load: what one agent costs Redis, and itself, at RATE requests/s.
#
# loadgen/ sends an open loop of RATE NOTIFY/s (default 100,000) straight to one agent
# (release build, loopback) whose only rule is one limit on `src` that never denies, its
# sources drawn from a pool of N addresses (POOLS, default "10000 1000000": 10k and 1M
# active keys). Each pool runs with the limit `scope = "local"` (no [fleet]) and then
# `scope = "fleet"` against a Redis of its own (redis-server on a free loopback port, no
# persistence, flushed and its statistics reset before each run), ROUNDS times,
# interleaved. Per run, over the loadgen's whole run (warm-up included):
#   redis cmds/s     commands Redis executed per second (INFO stats: those the scripts
#                    run count too, a GET and a SET per key folded), and of them the
#                    EVALs (INFO commandstats: the fold script, up to 500 keys per call)
#                    with the mean time Redis spent in each
#   redis in/out     network bytes per second into and out of Redis (INFO stats)
#   redis CPU        Redis's user+sys CPU, % of one core (INFO cpu)
#   keys/sync        keys sent per exchange (spoa_guard_fleet_keys_sent_total over the
#                    exchanges counted by spoa_guard_fleet_sync_duration_seconds), and the
#                    keys deferred to a later exchange by max_keys_per_sync
#   sync ms          mean exchange round trip (the histogram's sum / count)
#   agent CPU        the agent's user+sys CPU per request (µs) and in % of one core;
#                    fleet − local is what fleet mode costs the agent: the sync task plus
#                    the request path's extra work
#   fleet thread     the CPU of the agent's `fleet` thread alone (the sync loop, the
#                    events and the writer: /proc/PID/task/*/stat), % of one core
# The summary gives the median of the rounds.
#
# Usage: benches/scripts/fleet.sh [--json]
#   RATE=100000 DURATION=20 ROUNDS=3 POOLS="10000 1000000" INTERVAL=250ms benches/scripts/fleet.sh
# Redis runs in SCHED_IDLE: in production it has a host of its own, and here its bursts
# (a few ms per script call) would otherwise delay the load generator and the agent
# sharing its core, which p99 would blame on the agent (its CPU is counted all the same).
# PIN=1: the agent on CPU 0, the generator and Redis on CPU 1 (REDIS_CPU=0: Redis with the
# agent instead, so that the generator's timing is not disturbed by Redis's bursts).
# BIN=path: run that agent binary instead of target/release/spoa-guard.
# Needs redis-server, redis-cli and python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

json=0
[ "${1:-}" = "--json" ] && json=1
rate=${RATE:-100000}
duration=${DURATION:-20}
rounds=${ROUNDS:-3}
pools=${POOLS:-10000 1000000}
interval=${INTERVAL:-250ms}
pin=${PIN:-0}
for tool in redis-server redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "fleet.sh needs $tool" >&2; exit 1; }
done

cargo build --release --quiet --bins   # spoa-guard and spoa-guard-loadgen
bin=${BIN:-$root/target/release/spoa-guard}
loadgen=$root/target/release/spoa-guard-loadgen

. benches/scripts/common.sh   # $work, $pids, cleanup on exit, free_port, wait_port, cpu_ticks, timed_loadgen

agent_cpu=() gen_cpu=() redis_cpu=()
if [ "$pin" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    agent_cpu=(taskset -c 0) gen_cpu=(taskset -c 1) redis_cpu=(taskset -c "${REDIS_CPU:-1}")
fi

# ---- Redis -------------------------------------------------------------------------------
redis_port=$(free_port)
mkdir -p "$work/redis"
"${redis_cpu[@]}" chrt --idle 0 redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work/redis" --logfile "$work/redis/redis.log" &
pids+=("$!")
wait_port "$redis_port"
rcli() { redis-cli -p "$redis_port" "$@"; }
# INFO as one JSON object: stats, cpu and commandstats fields.
redis_info() {
    rcli info all | python3 -c '
import json, sys
info = {}
for line in sys.stdin:
    line = line.strip()
    if ":" not in line or line.startswith("#"):
        continue
    key, value = line.split(":", 1)
    if key.startswith("cmdstat_"):
        stat = dict(kv.split("=") for kv in value.split(","))
        info[key] = int(stat["calls"])
        info[key + "_usec"] = int(stat["usec"])
    elif key in ("total_commands_processed", "total_net_input_bytes", "total_net_output_bytes",
                 "used_cpu_sys", "used_cpu_user", "used_memory"):
        info[key] = float(value)
print(json.dumps(info))'
}

# utime + stime of the agent's `fleet` thread (clock ticks; 0 without one).
fleet_ticks() {
    local task ticks=0
    for task in /proc/"$1"/task/*; do
        if [ "$(cat "$task/comm" 2>/dev/null)" = fleet ]; then
            ticks=$(sed 's/^.*) //' "$task/stat" | awk '{ print $12 + $13 }')
        fi
    done
    echo "$ticks"
}

# ---- one run -----------------------------------------------------------------------------
echo "fleet-bench-secret" > "$work/secret"
# $1 = run name, $2 = scope (local|fleet), $3 = pool size. Writes $work/$1.json: the
# loadgen's report with the agent's CPU, plus redis_before/after and metrics_before/after.
run() {
    local name=$1 scope=$2 pool=$3 port metrics fleet_section=""
    port=$(free_port) metrics=$(free_port)
    if [ "$scope" = fleet ]; then
        fleet_section="[fleet]
redis = \"redis://127.0.0.1:$redis_port/0\"
name = \"bench\"
secret_file = \"$work/secret\"
sync_interval = \"$interval\""
    fi
    cat > "$work/$name.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
threads = 1
[metrics]
listen = "127.0.0.1:$metrics"
$fleet_section
[[limit]]
name = "per-client"
key = "src"
rate = 10000000
burst = 10000000
max_keys = 2000000
scope = "$scope"
TOML
    rcli flushall > /dev/null
    rcli config resetstat > /dev/null
    "${agent_cpu[@]}" "$bin" serve --config "$work/$name.toml" > "$work/$name.log" 2>&1 &
    local agent=$!
    pids+=("$agent")
    wait_port "$port" || { cat "$work/$name.log" >&2; return 1; }
    wait_port "$metrics"
    fleet_ticks "$agent" > "$work/$name.fleet0"
    redis_info > "$work/$name.redis0"
    curl -fsS "http://127.0.0.1:$metrics/metrics" > "$work/$name.metrics0"
    timed_loadgen "$name" "$agent" "${gen_cpu[@]}" "$loadgen" --agent "127.0.0.1:$port" \
        --connections 4 --pipeline 64 --warmup 1s --duration "${duration}s" --rate "$rate" \
        --source-pool "$pool" --json
    fleet_ticks "$agent" > "$work/$name.fleet1"
    redis_info > "$work/$name.redis1"
    curl -fsS "http://127.0.0.1:$metrics/metrics" > "$work/$name.metrics1"
    kill "$agent"
    wait "$agent" 2>/dev/null || true
    python3 - "$work/$name" "$scope" "$pool" "$hz" <<'PY'
import json, re, sys
base, scope, pool, hz = sys.argv[1:]
r = json.load(open(base + ".json"))
def metrics(path):
    out = {}
    for line in open(path):
        m = re.match(r'^(spoa_guard_fleet_[a-z_]+(?:\{[^}]*\})?) ([0-9.eE+-]+)$', line.strip())
        if m:
            out[m.group(1)] = float(m.group(2))
    return out
r.update(scope=scope, pool=int(pool),
         redis=[json.load(open(base + ".redis0")), json.load(open(base + ".redis1"))],
         metrics=[metrics(base + ".metrics0"), metrics(base + ".metrics1")],
         fleet_thread_s=(int(open(base + ".fleet1").read()) - int(open(base + ".fleet0").read())) / int(hz))
json.dump(r, open(base + ".json", "w"))
PY
}

# ---- the rounds --------------------------------------------------------------------------
[ "$json" = 1 ] || {
    echo "one agent (1 thread) at $rate NOTIFY/s open loop for ${duration}s (+1 s warm-up), $rounds round(s);"
    echo "Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on 127.0.0.1:$redis_port; sync_interval $interval;" \
        "pinned: $([ ${#agent_cpu[@]} -gt 0 ] && echo "agent CPU 0, loadgen CPU 1, Redis CPU ${REDIS_CPU:-1}" || echo no)"
}
files=()
for pool in $pools; do
    for r in $(seq "$rounds"); do
        for scope in local fleet; do
            run "$scope-$pool-$r" "$scope" "$pool"
            files+=("$work/$scope-$pool-$r.json")
            [ "$json" = 1 ] || python3 - "$work/$scope-$pool-$r.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  {r['scope']:<5} pool {r['pool']:>9,}  {r['throughput']:>9,.0f} NOTIFY/s"
      f"  agent {r['agent_cpu_us_per_notify']:.2f} µs/NOTIFY  p99 {r['latency_from_send_us']['p99']} µs"
      + (f"  {r['errors']}" if r["errors"] else ""))
PY
        done
    done
done

python3 - "$json" "$rate" "${files[@]}" <<'PY'
import json, statistics, sys
as_json, rate, paths = sys.argv[1] == "1", float(sys.argv[2]), sys.argv[3:]
runs = [json.load(open(p)) for p in paths]
med = lambda xs: statistics.median(xs) if xs else 0.0

def derived(r):
    (r0, r1), (m0, m1), wall = r["redis"], r["metrics"], r["wall_s"]
    d = lambda k: (r1.get(k, 0) - r0.get(k, 0))
    dm = lambda k: (m1.get(k, 0) - m0.get(k, 0))
    syncs = dm("spoa_guard_fleet_sync_duration_seconds_count")
    # INFO and CONFIG RESETSTAT by the script itself are a handful of commands: left in.
    return {
        "agent_cpu_us_per_request": r["agent_cpu_us_per_notify"],
        "agent_cpu_core_pct": r["agent_cpu_us_per_notify"] * r["sent"] / wall / 1e4,
        "p99_from_send_us": r["latency_from_send_us"]["p99"],
        "fleet_thread_core_pct": r["fleet_thread_s"] / wall * 100,
        "redis_cmds_per_s": d("total_commands_processed") / wall,
        "redis_eval_per_s": d("cmdstat_eval") / wall,
        "redis_eval_ms": d("cmdstat_eval_usec") / max(d("cmdstat_eval"), 1) / 1e3,
        "redis_in_bytes_per_s": d("total_net_input_bytes") / wall,
        "redis_out_bytes_per_s": d("total_net_output_bytes") / wall,
        "redis_cpu_core_pct": (d("used_cpu_sys") + d("used_cpu_user")) / wall * 100,
        "redis_used_memory_mib": r1.get("used_memory", 0) / 2**20,
        "syncs_per_s": syncs / wall,
        "keys_per_sync": dm("spoa_guard_fleet_keys_sent_total") / syncs if syncs else 0.0,
        "keys_deferred_per_sync": dm("spoa_guard_fleet_keys_deferred_total") / syncs if syncs else 0.0,
        "sync_ms_mean": dm("spoa_guard_fleet_sync_duration_seconds_sum") / syncs * 1e3 if syncs else 0.0,
        "agent_sent_bytes_per_s": dm("spoa_guard_fleet_sent_bytes_total") / wall,
        "errors": r["errors"], "timeouts": r["timeouts"],
    }

summary = {}
for pool in sorted({r["pool"] for r in runs}):
    summary[pool] = {}
    for scope in ("local", "fleet"):
        ds = [derived(r) for r in runs if r["pool"] == pool and r["scope"] == scope]
        summary[pool][scope] = {k: med([d[k] for d in ds]) for k in ds[0] if k not in ("errors",)}
        summary[pool][scope]["errors"] = {k: v for d in ds for k, v in d["errors"].items()}
if as_json:
    print(json.dumps({"rate": rate, "pools": summary}, indent=1))
    sys.exit()
print(f"\nmedians at {rate:,.0f} NOTIFY/s:")
for pool, s in summary.items():
    f, l = s["fleet"], s["local"]
    print(f"  {pool:,} active keys:")
    print(f"    Redis  {f['redis_cmds_per_s']:,.0f} cmds/s ({f['redis_eval_per_s']:,.0f} EVAL/s, {f['redis_eval_ms']:.1f} ms each),"
          f" in {f['redis_in_bytes_per_s'] / 1e6:.2f} MB/s, out {f['redis_out_bytes_per_s'] / 1e6:.2f} MB/s,"
          f" CPU {f['redis_cpu_core_pct']:.1f} % of a core, {f['redis_used_memory_mib']:.0f} MiB used")
    print(f"    sync   {f['syncs_per_s']:.1f}/s, {f['keys_per_sync']:,.0f} keys each"
          f" ({f['keys_deferred_per_sync']:,.0f} deferred), {f['sync_ms_mean']:.1f} ms mean round trip;"
          f" the fleet thread {f['fleet_thread_core_pct']:.1f} % of a core")
    print(f"    agent  local {l['agent_cpu_us_per_request']:.2f} µs/req ({l['agent_cpu_core_pct']:.1f} % of a core),"
          f" fleet {f['agent_cpu_us_per_request']:.2f} µs/req ({f['agent_cpu_core_pct']:.1f} %):"
          f" fleet mode costs {f['agent_cpu_core_pct'] - l['agent_cpu_core_pct']:+.1f} % of a core;"
          f" p99 from send {l['p99_from_send_us']} / {f['p99_from_send_us']} µs")
PY
