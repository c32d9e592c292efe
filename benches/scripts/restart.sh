#!/usr/bin/env bash
# Restarts without a gap, under a saturating flood through HAProxy: how many requests a
# restart fails, with and without the shipped haproxy.cfg's retry of a failed check.
#
# wrk floods HAProxy (the shipped haproxy/ configuration, ports changed) from 127.0.0.1,
# which the agent's block list holds: every answered request is a 403. Every INTERVAL
# seconds a new agent is started on the same configuration; it takes the listeners over
# and the old one drains and exits (src/handover.rs, src/server/conn.rs DRAIN_QUIET).
# Counted from HAProxy's log, per HAProxy version:
#   requests       requests logged
#   first-failed   checks whose first try failed (SPOE error logged for the event)
#   retry-failed   retries that failed too (SPOE error logged for the guard-retry group)
#   through        requests that reached the backend (200): the agent's answer was lost
# and the median takeover time (new agent started → old agent exited).
#
# NO_RETRY=1 removes the retry lines from haproxy.cfg: what the drain alone achieves.
# Usage: [RESTARTS=10] [INTERVAL=2] [CONNECTIONS=16] [NO_RETRY=1] benches/scripts/restart.sh
# Needs wrk, python3, HAProxy 2.6 (/usr/sbin/haproxy) and/or 3.2 (.cache/haproxy-3.2).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
restarts=${RESTARTS:-10}
interval=${INTERVAL:-2}
connections=${CONNECTIONS:-16}

cargo build --release --quiet --bin spoa-guard
bin=$root/target/release/spoa-guard
. benches/scripts/common.sh   # $work, $pids, cleanup on exit, free_port, wait_port

run_version() {  # $1 = label, $2 = haproxy binary
    local label=$1 haproxy=$2 dir agent_port http_port old new
    dir=$work/$label
    mkdir -p "$dir"
    agent_port=$(free_port) http_port=$(free_port)
    printf '127.0.0.1\n' > "$dir/block.txt"
    cat > "$dir/agent.toml" <<EOF
[server]
listen = "127.0.0.1:$agent_port"
[admin]
listen = "unix:admin.sock"
[bans]
state_file = "bans.json"
[lists]
block = ["block.txt"]
[log]
deny_lines_per_second = 0
EOF
    cp haproxy/spoe-guard.conf "$dir/"
    sed -e "s/bind 127.0.0.1:8080/bind 127.0.0.1:$http_port\n    log-format \"REQ st=%ST err=%[var(txn.guard.error)]\"/" \
        -e '/bind \[::1\]:8080/d' \
        -e "s/server guard1 127.0.0.1:12345/server guard1 127.0.0.1:$agent_port/" \
        haproxy/haproxy.cfg > "$dir/haproxy.cfg"
    if [ "${NO_RETRY:-0}" = 1 ]; then
        sed -i -e '/txn.guard_failed/d' "$dir/haproxy.cfg"
    fi
    "$bin" serve --config "$dir/agent.toml" 2> "$dir/agent-0.log" &
    old=$!
    pids+=("$old")
    wait_port "$agent_port"
    "$haproxy" -f "$dir/haproxy.cfg" -db > "$dir/haproxy.log" 2>&1 &
    pids+=($!)
    wait_port "$http_port"
    sleep 1
    wrk -t2 -c"$connections" -d$((restarts * interval + 2))s "http://127.0.0.1:$http_port/" \
        > "$dir/wrk.txt" 2>&1 &
    local wrk=$!
    pids+=("$wrk")
    sleep 1
    : > "$dir/takeovers"
    for n in $(seq "$restarts"); do
        local t0 t1
        t0=$(date +%s.%N)
        "$bin" serve --config "$dir/agent.toml" 2> "$dir/agent-$n.log" &
        new=$!
        pids+=("$new")
        while kill -0 "$old" 2>/dev/null; do sleep 0.01; done
        t1=$(date +%s.%N)
        echo "$t0 $t1" >> "$dir/takeovers"
        old=$new
        sleep "$interval"
    done
    wait "$wrk" || true
    python3 - "$label" "$dir" <<'PY'
import statistics, sys
label, d = sys.argv[1:]
log = open(f"{d}/haproxy.log", errors="replace").read().splitlines()
req = [l for l in log if l.startswith("REQ ")]
first = sum(1 for l in log if "SPOE: [spoa-guard] <EVENT:" in l and " st=0 " not in l)
retry = sum(1 for l in log if "SPOE: [spoa-guard] <GROUP:guard-retry>" in l and " st=0 " not in l)
through = sum(1 for l in req if "st=200" in l)
takeovers = [float(b) - float(a) for a, b in (l.split() for l in open(f"{d}/takeovers"))]
print(f"{label}: requests {len(req)}, first-failed {first}, retry-failed {retry}, "
      f"through {through}; takeover median {statistics.median(takeovers) * 1000:.0f} ms "
      f"over {len(takeovers)} restarts")
PY
}

[ -x /usr/sbin/haproxy ] && run_version "haproxy-2.6" /usr/sbin/haproxy
[ -x .cache/haproxy-3.2/haproxy ] && run_version "haproxy-3.2" "$root/.cache/haproxy-3.2/haproxy"
