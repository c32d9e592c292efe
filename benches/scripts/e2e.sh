#!/usr/bin/env bash
# End-to-end HTTP throughput on loopback: wrk -> HAProxy, in three setups, in alternating rounds:
#   plain   HAProxy answering `http-request return status 200` (nbthread 1)
#   native  the same plus native HAProxy filtering of comparable work: `src` ACL over the
#           block list (-f), the bad-bot list as `-m reg -i -f` on the User-Agent, a
#           stick-table rate limit (track-sc0 src, http_req_rate(10s), never reached), deny 403
#   spoe    the SPOE filter of haproxy/haproxy.cfg + spoe-guard.conf -> spoa-guard (release
#           build) with the rules of benches/scripts/rules.sh: the block list, the full ASN tables
#           of benches/data, the bad-bot list and three limits that never deny; SPOE errors
#           answer 503 here (fail closed), so they show up as non-2xx responses instead of
#           passing silently
# Block list (benches/scripts/rules.sh): with SPOA_GUARD_DATA, the real ≈190k entries (FireHOL
# level 4, X4B, Spamhaus), read in place; otherwise 190k generated IPv4 CIDRs (/24-/32,
# never 127/8).
# Reports per setup: median req/s over the rounds, ratio to plain, median wrk p99, non-2xx
# responses, and CPU µs per request of HAProxy and of the agent (utime+stime from /proc).
#
# Usage: benches/scripts/e2e.sh [--json]
#   HAPROXY=.cache/haproxy-3.2/haproxy benches/scripts/e2e.sh       # default /usr/sbin/haproxy (2.6)
#   ROUNDS=3 DURATION=10 WARMUP=2 CONNECTIONS=50 SETUPS="plain native spoe" benches/scripts/e2e.sh
#   PIN=0 benches/scripts/e2e.sh    # default PIN=1: HAProxy on CPU 0, wrk on CPU 1, agent unpinned
#   TRANSPORT=unix benches/scripts/e2e.sh   # HAProxy -> agent over a unix socket (default tcp)
# AGENT_THREADS=N: the agent's [server] threads (default 1).
# Needs wrk (apt-get install wrk), curl, python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

json=0
[ "${1:-}" = "--json" ] && json=1
haproxy=${HAPROXY:-/usr/sbin/haproxy}
rounds=${ROUNDS:-3}
duration=${DURATION:-10}
warmup=${WARMUP:-2}
connections=${CONNECTIONS:-50}
setups=${SETUPS:-plain native spoe}
pin=${PIN:-1}
ua="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"

command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
[ -x "$haproxy" ] || { echo "no HAProxy at $haproxy" >&2; exit 1; }
hapver=$("$haproxy" -v | sed -n 's/.*version \([^ ]*\).*/\1/p' | sed -n 1p)
cargo build --release --quiet
bin=$root/target/release/spoa-guard

. benches/scripts/common.sh   # $work, $pids, cleanup on exit, free_port, wait_port, cpu_ticks, $hz

# HAProxy on CPU 0, wrk on CPU 1 (the agent's tokio workers go where the scheduler puts them).
hap_cpu=() wrk_cpu=()
if [ "$pin" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    hap_cpu=(taskset -c 0) wrk_cpu=(taskset -c 1)
fi


# ---- rule files (all under $work; the real lists are only read) -------------------------
agent_port=$(free_port)
transport=${TRANSPORT:-tcp}
case $transport in
tcp) agent_listen="127.0.0.1:$agent_port" agent_server="127.0.0.1:$agent_port" ;;
unix) agent_listen="unix:$work/agent.sock" agent_server="unix@$work/agent.sock" ;;
*) echo "TRANSPORT must be tcp or unix" >&2; exit 1 ;;
esac
. benches/scripts/rules.sh
write_rules "$work" "$agent_listen"

# ---- HAProxy configurations -------------------------------------------------------------
http_port=$(free_port)
haproxy_cfg() {  # $1 = setup
    cat <<CFG
global
    nbthread 1
    log stdout format raw local0 err
    stats timeout 1m
defaults
    mode http
    timeout connect 5s
    timeout client  30s
    timeout server  30s
    timeout http-request 10s
frontend www
    bind 127.0.0.1:$http_port
CFG
    case $1 in
    native) cat <<CFG
    stick-table type ip size 100k expire 30s store http_req_rate(10s)
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100000000 }
    http-request deny deny_status 403 if { src -f $block_haproxy }
    http-request deny deny_status 403 if { req.fhdr(user-agent) -m reg -i -f $ua_list }
CFG
    ;;
    spoe) cat <<CFG
    filter spoe engine guard config $work/spoe-guard.conf
    http-request deny deny_status 429 hdr Retry-After "%[var(txn.guard.retry_after)]" if { var(txn.guard.action) -m str deny } { var(txn.guard.status) -m int eq 429 }
    http-request deny deny_status 403 if { var(txn.guard.action) -m str deny }
    http-request deny deny_status 503 if { var(txn.guard.error) -m found }
CFG
    ;;
    esac
    cat <<CFG
    http-request return status 200 content-type text/plain string "ok\n"
CFG
    [ "$1" = spoe ] && cat <<CFG
backend spoa-guard
    mode tcp
    balance roundrobin
    timeout connect 5s
    timeout server  30s
    option spop-check
    server guard1 $agent_server check inter 2s
CFG
    return 0
}
# The repository's SPOE file, unchanged but for per-request logging (kept off).
cp haproxy/spoe-guard.conf "$work/spoe-guard.conf"
for s in $setups; do haproxy_cfg "$s" > "$work/$s.cfg"; "$haproxy" -c -q -f "$work/$s.cfg"; done

# ---- the agent, once for all rounds ------------------------------------------------------
agent_pid=
case " $setups " in *" spoe "*)
    "$bin" serve --config "$work/agent.toml" > "$work/agent.log" 2>&1 &
    agent_pid=$!
    pids+=("$agent_pid")
    if [ "$transport" = unix ]; then
        for _ in $(seq 300); do [ -S "$work/agent.sock" ] && break; sleep 0.1; done
    else
        wait_port "$agent_port"
    fi
esac

haproxy_pid=
start_haproxy() {  # $1 = setup
    "${hap_cpu[@]}" "$haproxy" -db -f "$work/$1.cfg" > "$work/haproxy-$1.log" 2>&1 &
    haproxy_pid=$!
    pids+=("$haproxy_pid")
    wait_port "$http_port"
}
stop_haproxy() {
    kill "$haproxy_pid" 2>/dev/null || true
    wait "$haproxy_pid" 2>/dev/null || true
}
status_of() {  # $1 = user agent -> HTTP status
    curl -s -o /dev/null -w '%{http_code}' -A "$1" "http://127.0.0.1:$http_port/"
}
to_us() {  # wrk latency "1.23ms" -> µs
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        printf "%.0f", n * f }'
}

[ "$json" = 1 ] || {
    echo "HAProxy $hapver ($haproxy); block list: $block_desc, $block_entries entries"
    echo "$rounds rounds x ${duration}s (+${warmup}s warmup), wrk -t1 -c$connections, pinned: $([ ${#hap_cpu[@]} -gt 0 ] && echo 'HAProxy CPU 0, wrk CPU 1' || echo no)"
}
echo "setup round rps p99_us non2xx hap_us agent_us" > "$work/results"
for r in $(seq "$rounds"); do
    for s in $setups; do
        start_haproxy "$s"
        # The agent must be consulted: the spoe setup fails closed (503) when it is not.
        for _ in $(seq 50); do [ "$(status_of "$ua")" = 200 ] && break; sleep 0.1; done
        ok=$(status_of "$ua") bot=$(status_of "Mozilla/5.0 (compatible; MJ12bot/v1.4.8)")
        want_bot=403; [ "$s" = plain ] && want_bot=200
        if [ "$ok" != 200 ] || [ "$bot" != "$want_bot" ]; then
            echo "$s: sanity check failed: browser -> $ok, bad bot -> $bot (want 200, $want_bot)" >&2
            exit 1
        fi
        "${wrk_cpu[@]}" wrk -t1 -c"$connections" -d"${warmup}s" -H "User-Agent: $ua" \
            "http://127.0.0.1:$http_port/" > /dev/null
        h0=$(cpu_ticks "$haproxy_pid") a0=0
        [ -n "$agent_pid" ] && a0=$(cpu_ticks "$agent_pid")
        "${wrk_cpu[@]}" wrk -t1 -c"$connections" -d"${duration}s" --latency -H "User-Agent: $ua" \
            "http://127.0.0.1:$http_port/" > "$work/wrk-$s-$r.txt"
        h1=$(cpu_ticks "$haproxy_pid") a1=0
        [ -n "$agent_pid" ] && a1=$(cpu_ticks "$agent_pid")
        stop_haproxy
        out=$work/wrk-$s-$r.txt
        reqs=$(awk '/requests in/ { print $1 }' "$out")
        rps=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$out")
        p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")
        non2xx=$(awk '/Non-2xx/ { print $NF }' "$out"); non2xx=${non2xx:-0}
        hap_us=$(awk -v d=$((h1 - h0)) -v n="$reqs" -v hz="$hz" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
        agent_us=-
        [ "$s" = spoe ] && agent_us=$(awk -v d=$((a1 - a0)) -v n="$reqs" -v hz="$hz" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
        echo "$s $r $rps $p99 $non2xx $hap_us $agent_us" >> "$work/results"
        [ "$json" = 1 ] || printf '  round %s %-6s %8s req/s  p99 %6s µs  non-2xx %s  HAProxy %s µs/req  agent %s µs/req\n' \
            "$r" "$s" "$rps" "$p99" "$non2xx" "$hap_us" "$agent_us"
    done
done

python3 - "$work/results" "$json" "$hapver" "$block_entries" "$rounds" "$duration" "$connections" <<'PY'
import json, statistics, sys
path, as_json, hapver, entries, rounds, duration, conns = sys.argv[1:]
rows = [l.split() for l in open(path).read().splitlines()[1:]]
order = []
for r in rows:
    if r[0] not in order:
        order.append(r[0])
def med(setup, col, conv=float):
    vals = [conv(r[col]) for r in rows if r[0] == setup and r[col] != "-"]
    return statistics.median(vals) if vals else None
base = med("plain", 2)
out = []
for s in order:
    rps = med(s, 2)
    out.append({"setup": s, "rps_median": rps, "ratio_to_plain": rps / base if base else None,
                "rps_rounds": [int(r[2]) for r in rows if r[0] == s],
                "p99_us_median": med(s, 3), "non_2xx": sum(int(r[4]) for r in rows if r[0] == s),
                "haproxy_cpu_us_per_req": med(s, 5), "agent_cpu_us_per_req": med(s, 6)})
if as_json == "1":
    print(json.dumps({"haproxy": hapver, "block_entries": int(entries), "rounds": int(rounds),
                      "duration_s": int(duration), "connections": int(conns), "setups": out}))
else:
    f = lambda v, fmt: "-" if v is None else fmt.format(v)
    print(f"\n| setup | req/s (median) | × plain | p99 µs | non-2xx | HAProxy CPU µs/req | agent CPU µs/req |")
    print("|---|---|---|---|---|---|---|")
    for o in out:
        print(f"| {o['setup']} | {o['rps_median']:,.0f} | {f(o['ratio_to_plain'], '{:.2f}')} | "
              f"{f(o['p99_us_median'], '{:,.0f}')} | {o['non_2xx']} | {f(o['haproxy_cpu_us_per_req'], '{:.2f}')} | "
              f"{f(o['agent_cpu_us_per_req'], '{:.2f}')} |")
PY
