# Helpers shared by the benchmark scripts (benches/scripts/*.sh). Meant to be
# sourced (bash), not run. Sourcing it creates $work, a temporary directory, and $pids;
# on exit every process in $pids is killed and waited for, and $work is removed.

work=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {  # $1 = port; up to 30 s
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}
cpu_ticks() {  # utime + stime of process $1, in clock ticks
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
hz=$(getconf CLK_TCK)

# One timed load-generator run: $1 = name, $2 = the agent's pid, then the command (the
# loadgen with --json and its options, possibly behind taskset). Writes $work/$1.json: the
# loadgen's report plus agent_cpu_us_per_notify (the agent's utime+stime from /proc around
# the run, warm-up included, per NOTIFY sent), loadgen_cpu_us_per_notify (from `time`) and
# wall_s. Fails, printing the loadgen's errors, when the loadgen fails or no ACK came back.
timed_loadgen() {
    local name=$1 agent=$2 a0 a1 t0 t1
    shift 2
    a0=$(cpu_ticks "$agent") t0=$(date +%s.%N)
    (
        TIMEFORMAT='%3U %3S'
        time "$@" > "$work/$name.raw" 2> "$work/$name.err"
    ) 2> "$work/$name.time" || { cat "$work/$name.err" >&2; return 1; }
    a1=$(cpu_ticks "$agent") t1=$(date +%s.%N)
    python3 - "$work/$name" "$((a1 - a0))" "$hz" "$t0" "$t1" <<'PY'
import json, sys
base, ticks, hz, t0, t1 = sys.argv[1:]
r = json.load(open(base + ".raw"))
user, system = map(float, open(base + ".time").read().split()[-2:])
sent = max(r["sent"], 1)
r["agent_cpu_us_per_notify"] = int(ticks) / int(hz) * 1e6 / sent
r["loadgen_cpu_us_per_notify"] = (user + system) * 1e6 / sent
r["wall_s"] = float(t1) - float(t0)
json.dump(r, open(base + ".json", "w"))
if r["acks"] == 0:
    sys.exit(f"{base}: no ACK: {r['errors']}")
PY
}
