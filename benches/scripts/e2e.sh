#!/usr/bin/env bash
# End-to-end HTTP throughput on loopback: wrk -> HAProxy, in up to five setups, each in two
# modes, in alternating rounds (every ratio comes from the same run):
#   plain    HAProxy answering `http-request return status 200`
#   native   the same plus native HAProxy filtering of comparable work: `src` ACL over the
#            block list (-f), the bad-bot list as `-m reg -i -f` on the User-Agent, a
#            stick-table rate limit (track-sc0 src, http_req_rate(10s), never reached), deny 403
#   spoe     the SPOE filter of haproxy/haproxy.cfg + spoe-guard.conf -> spoa-guard (release
#            build) with the rules of benches/scripts/rules.sh: the block list, the full ASN
#            tables of benches/data, the bad-bot list, 50 separate scanner-word user-agent
#            rules (SCANNER_RULES) and three limits that never deny
#   norules  the same SPOE filter -> a second spoa-guard with no rules at all: what the
#            protocol alone costs
#   example  the same SPOE filter -> haproxy/spoa-example, the C reference agent (it ACKs
#            the guard-check message without doing anything); only with SPOA_EXAMPLE_BIN
# SPOE errors answer 503 in every SPOE setup (fail closed), so they show up as non-2xx
# responses instead of passing silently.
# Modes (MODES, default both):
#   pinned   `nbthread 1`, HAProxy on CPU 0 and wrk on CPU 1 (the agents go where the
#            scheduler puts them): the tuned set-up
#   default  HAProxy with its default threads (one per CPU), nothing pinned: the set-up an
#            operator gets without tuning
# Block list (benches/scripts/rules.sh): with SPOA_GUARD_DATA, the real ≈190k entries (FireHOL
# level 4, X4B, Spamhaus), read in place; otherwise 190k generated IPv4 CIDRs (/24-/32,
# never 127/8).
# Reports per mode and setup: median req/s over the rounds, ratio to plain (the median of
# the per-round ratios, as every ratio below: robust to the machine's speed drifting
# between rounds), median wrk p99,
# non-2xx responses, CPU µs per request of HAProxy and of the agent (utime+stime from /proc),
# and the connections HAProxy holds open to the agent halfway through the run (TCP only);
# then spoe ÷ norules and spoe ÷ example per mode.
#
# Usage: benches/scripts/e2e.sh [--json]
#   HAPROXY=.cache/haproxy-3.2/haproxy benches/scripts/e2e.sh       # default /usr/sbin/haproxy (2.6)
#   ROUNDS=3 DURATION=10 WARMUP=2 CONNECTIONS=50 SETUPS="plain native spoe norules example" \
#       MODES="pinned default" benches/scripts/e2e.sh
#   SPOA_EXAMPLE_BIN=/path/to/spoa SPOA_EXAMPLE_ARGS="-c pipelining" benches/scripts/e2e.sh
#                        # build it from github.com/haproxy/spoa-example: benches/README.md
#   TRANSPORT=unix benches/scripts/e2e.sh   # HAProxy -> spoa-guard over a unix socket (default tcp)
# AGENT_THREADS=N: the agents' [server] threads (default 1, the agent's default).
# SCANNER_RULES=N: separate scanner-word user-agent rules of the spoe setup (default 50).
# SPOP_SERVER_OPTS="...": more options on the agent's `server` line in every SPOE setup,
#   e.g. "pool-max-conn 1" to see what connection reuse changes on HAProxy 3.x.
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
example_bin=${SPOA_EXAMPLE_BIN:-}
default_setups="plain native spoe norules"
[ -n "$example_bin" ] && default_setups="$default_setups example"
setups=${SETUPS:-$default_setups}
modes=${MODES:-pinned default}
export SCANNER_RULES=${SCANNER_RULES:-50}
ua="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
bad_bot="Mozilla/5.0 (compatible; MJ12bot/v1.4.8)"
scanner="gobuster/3.6"   # a scanner word not in the bad-bot list

command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
[ -x "$haproxy" ] || { echo "no HAProxy at $haproxy" >&2; exit 1; }
case " $setups " in *" example "*)
    [ -x "$example_bin" ] || { echo "the example setup needs SPOA_EXAMPLE_BIN, the spoa binary of haproxy/spoa-example (benches/README.md)" >&2; exit 1; }
esac
for m in $modes; do
    case $m in pinned | default) ;; *) echo "MODES: unknown mode $m (pinned, default)" >&2; exit 1 ;; esac
done
hapver=$("$haproxy" -v | sed -n 's/.*version \([^ ]*\).*/\1/p' | sed -n 1p)
cargo build --release --quiet --bin spoa-guard
bin=${BIN:-$root/target/release/spoa-guard}

. benches/scripts/common.sh   # $work, $pids, cleanup on exit, free_port, wait_port, cpu_ticks, $hz

# Pinned mode: HAProxy on CPU 0, wrk on CPU 1.
can_pin=0
[ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null && can_pin=1
pinned_to() {  # $1 = mode, $2 = CPU -> the taskset prefix, or nothing
    [ "$1" = pinned ] && [ "$can_pin" = 1 ] && echo "taskset -c $2"
    return 0
}

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
norules_port=$(free_port)
case $transport in
tcp) norules_listen="127.0.0.1:$norules_port" norules_server="127.0.0.1:$norules_port" ;;
unix) norules_listen="unix:$work/norules.sock" norules_server="unix@$work/norules.sock" ;;
esac
cat > "$work/norules.toml" <<TOML
[server]
listen = "$norules_listen"
threads = ${AGENT_THREADS:-1}
TOML
example_port=$(free_port)   # spoa-example listens on TCP only

# ---- HAProxy configurations -------------------------------------------------------------
http_port=$(free_port)
haproxy_cfg() {  # $1 = setup, $2 = mode
    echo "global"
    [ "$2" = pinned ] && echo "    nbthread 1"
    cat <<CFG
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
    local server=
    case $1 in
    native) cat <<CFG
    stick-table type ip size 100k expire 30s store http_req_rate(10s)
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100000000 }
    http-request deny deny_status 403 if { src -f $block_haproxy }
    http-request deny deny_status 403 if { req.fhdr(user-agent) -m reg -i -f $ua_list }
CFG
    ;;
    spoe | norules | example) cat <<CFG
    filter spoe engine guard config $work/spoe-guard.conf
    http-request deny deny_status 429 hdr Retry-After "%[var(txn.guard.retry_after)]" if { var(txn.guard.action) -m str deny } { var(txn.guard.status) -m int eq 429 }
    http-request deny deny_status 403 if { var(txn.guard.action) -m str deny }
    http-request deny deny_status 503 if { var(txn.guard.error) -m found }
CFG
        case $1 in
        spoe) server=$agent_server ;;
        norules) server=$norules_server ;;
        example) server=127.0.0.1:$example_port ;;
        esac
    ;;
    esac
    cat <<CFG
    http-request return status 200 content-type text/plain string "ok\n"
CFG
    [ -n "$server" ] && cat <<CFG
backend spoa-guard
    mode tcp
    balance roundrobin
    timeout connect 5s
    timeout server  30s
    option spop-check
    server guard1 $server check inter 2s ${SPOP_SERVER_OPTS:-}
CFG
    return 0
}
# The repository's SPOE file, unchanged but for per-request logging (kept off).
cp haproxy/spoe-guard.conf "$work/spoe-guard.conf"
for m in $modes; do
    for s in $setups; do haproxy_cfg "$s" "$m" > "$work/$s-$m.cfg"; "$haproxy" -c -q -f "$work/$s-$m.cfg"; done
done

# ---- the agents, once for all rounds ----------------------------------------------------
declare -A agent_pid=()
wait_listen() {  # $1 = listen address (host:port or unix:path)
    case $1 in
    unix:*) for _ in $(seq 300); do [ -S "${1#unix:}" ] && return 0; sleep 0.1; done
            echo "no socket at ${1#unix:}" >&2; return 1 ;;
    *) wait_port "${1##*:}" ;;
    esac
}
case " $setups " in *" spoe "*)
    "$bin" serve --config "$work/agent.toml" > "$work/agent.log" 2>&1 &
    agent_pid[spoe]=$!; pids+=("$!")
    wait_listen "$agent_listen"
esac
case " $setups " in *" norules "*)
    "$bin" serve --config "$work/norules.toml" > "$work/norules.log" 2>&1 &
    agent_pid[norules]=$!; pids+=("$!")
    wait_listen "$norules_listen"
esac
case " $setups " in *" example "*)
    # shellcheck disable=SC2086  # SPOA_EXAMPLE_ARGS is a list of options
    "$example_bin" -p "$example_port" ${SPOA_EXAMPLE_ARGS--c pipelining} > "$work/example.log" 2>&1 &
    agent_pid[example]=$!; pids+=("$!")
    wait_port "$example_port"
esac

haproxy_pid=
start_haproxy() {  # $1 = setup, $2 = mode
    # shellcheck disable=SC2046  # the taskset prefix is words or nothing
    $(pinned_to "$2" 0) "$haproxy" -db -f "$work/$1-$2.cfg" > "$work/haproxy-$1-$2.log" 2>&1 &
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
# Fails unless the setup answers as it should: browser 200; bad bot and scanner 403 where
# something filters them.
sanity_check() {  # $1 = setup
    local want_bot=200 want_scanner=200 ok bot scan
    case $1 in native) want_bot=403 ;; spoe) want_bot=403 want_scanner=403 ;; esac
    # SPOE setups fail closed (503) until the agent answers.
    for _ in $(seq 50); do [ "$(status_of "$ua")" = 200 ] && break; sleep 0.1; done
    ok=$(status_of "$ua") bot=$(status_of "$bad_bot") scan=$(status_of "$scanner")
    if [ "$ok" != 200 ] || [ "$bot" != "$want_bot" ] || [ "$scan" != "$want_scanner" ]; then
        echo "$1: sanity check failed: browser -> $ok, bad bot -> $bot, scanner -> $scan (want 200, $want_bot, $want_scanner)" >&2
        exit 1
    fi
}
to_us() {  # wrk latency "1.23ms" -> µs
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        printf "%.0f", n * f }'
}
agent_conns() {  # $1 = setup -> established connections to its agent (TCP), or -
    local port
    case $transport:$1 in
    tcp:spoe) port=$agent_port ;; tcp:norules) port=$norules_port ;; *:example) port=$example_port ;;
    *) echo -; return ;;
    esac
    ss -Htn state established "( sport = :$port )" | wc -l
}
per_request_us() {  # $1 = ticks, $2 = requests
    awk -v d="$1" -v n="$2" -v hz="$hz" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }'
}

[ "$json" = 1 ] || {
    echo "HAProxy $hapver ($haproxy); block list: $block_desc, $block_entries entries; $SCANNER_RULES separate scanner rules"
    echo "$rounds rounds x ${duration}s (+${warmup}s warmup), wrk -t1 -c$connections; modes: $modes$([ "$can_pin" = 1 ] || echo ' (cannot pin here: pinned runs unpinned)')"
    [ -z "${SPOP_SERVER_OPTS:-}" ] || echo "agent server options: $SPOP_SERVER_OPTS"
}
echo "mode setup round rps p99_us non2xx hap_us agent_us conns" > "$work/results"
for r in $(seq "$rounds"); do
    for m in $modes; do
        for s in $setups; do
            start_haproxy "$s" "$m"
            sanity_check "$s"
            # shellcheck disable=SC2046
            $(pinned_to "$m" 1) wrk -t1 -c"$connections" -d"${warmup}s" -H "User-Agent: $ua" \
                "http://127.0.0.1:$http_port/" > /dev/null
            apid=${agent_pid[$s]:-}
            h0=$(cpu_ticks "$haproxy_pid") a0=0
            [ -n "$apid" ] && a0=$(cpu_ticks "$apid")
            out=$work/wrk-$m-$s-$r.txt
            ( sleep "$(awk -v d="$duration" 'BEGIN { print d / 2 }')"; agent_conns "$s" > "$out.conns" ) &
            conns_pid=$!
            # shellcheck disable=SC2046
            $(pinned_to "$m" 1) wrk -t1 -c"$connections" -d"${duration}s" --latency -H "User-Agent: $ua" \
                "http://127.0.0.1:$http_port/" > "$out"
            h1=$(cpu_ticks "$haproxy_pid") a1=0
            [ -n "$apid" ] && a1=$(cpu_ticks "$apid")
            stop_haproxy
            reqs=$(awk '/requests in/ { print $1 }' "$out")
            rps=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$out")
            p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")
            non2xx=$(awk '/Non-2xx/ { print $NF }' "$out"); non2xx=${non2xx:-0}
            hap_us=$(per_request_us $((h1 - h0)) "$reqs")
            agent_us=-
            [ -n "$apid" ] && agent_us=$(per_request_us $((a1 - a0)) "$reqs")
            conns=-
            wait "$conns_pid" && conns=$(cat "$out.conns")
            echo "$m $s $r $rps $p99 $non2xx $hap_us $agent_us $conns" >> "$work/results"
            [ "$json" = 1 ] || printf '  round %s %-7s %-7s %8s req/s  p99 %6s µs  non-2xx %s  HAProxy %s µs/req  agent %s µs/req  %s conns\n' \
                "$r" "$m" "$s" "$rps" "$p99" "$non2xx" "$hap_us" "$agent_us" "$conns"
        done
    done
done

python3 - "$work/results" "$json" "$hapver" "$block_entries" "$rounds" "$duration" "$connections" "${SPOP_SERVER_OPTS:-}" <<'PY'
import json, statistics, sys
path, as_json, hapver, entries, rounds, duration, conns, spop_opts = sys.argv[1:]
rows = [l.split() for l in open(path).read().splitlines()[1:]]
def ordered(col, among):
    seen = []
    for r in among:
        if r[col] not in seen:
            seen.append(r[col])
    return seen
def med(mode, setup, col):
    vals = [float(r[col]) for r in rows if r[0] == mode and r[1] == setup and r[col] != "-"]
    return statistics.median(vals) if vals else None
modes = []
for m in ordered(0, rows):
    setups = []
    for s in ordered(1, [r for r in rows if r[0] == m]):
        rps = med(m, s, 3)
        setups.append({"setup": s, "rps_median": rps,
                       "rps_rounds": [int(r[3]) for r in rows if r[0] == m and r[1] == s],
                       "p99_us_median": med(m, s, 4),
                       "non_2xx": sum(int(r[5]) for r in rows if r[0] == m and r[1] == s),
                       "haproxy_cpu_us_per_req": med(m, s, 6), "agent_cpu_us_per_req": med(m, s, 7),
                       "agent_connections": med(m, s, 8)})
    # A ratio is the median of the per-round ratios: the two setups of one round ran
    # seconds apart, so a machine that speeds up or slows down between rounds (a VM's
    # neighbours) moves both; the ratio of the medians would mix rounds.
    def ratio(a, b):
        by_round = {}
        for r in rows:
            if r[0] == m and r[1] in (a, b):
                by_round.setdefault(r[2], {})[r[1]] = float(r[3])
        per_round = [v[a] / v[b] for v in by_round.values() if a in v and v.get(b)]
        return statistics.median(per_round) if per_round else None
    for o in setups:
        o["ratio_to_plain"] = ratio(o["setup"], "plain")
    modes.append({"mode": m, "setups": setups, "spoe_to_norules": ratio("spoe", "norules"),
                  "spoe_to_example": ratio("spoe", "example")})
if as_json == "1":
    print(json.dumps({"haproxy": hapver, "spop_server_opts": spop_opts, "block_entries": int(entries), "rounds": int(rounds),
                      "duration_s": int(duration), "connections": int(conns), "modes": modes}))
    sys.exit()
f = lambda v, fmt: "-" if v is None else fmt.format(v)
for m in modes:
    print(f"\n{m['mode']}:\n")
    print("| setup | req/s (median) | × plain | p99 µs | non-2xx | HAProxy CPU µs/req | agent CPU µs/req | agent conns |")
    print("|---|---|---|---|---|---|---|---|")
    for o in m["setups"]:
        print(f"| {o['setup']} | {o['rps_median']:,.0f} | {f(o['ratio_to_plain'], '{:.2f}')} | "
              f"{f(o['p99_us_median'], '{:,.0f}')} | {o['non_2xx']} | {f(o['haproxy_cpu_us_per_req'], '{:.2f}')} | "
              f"{f(o['agent_cpu_us_per_req'], '{:.2f}')} | {f(o['agent_connections'], '{:.0f}')} |")
    print(f"\nspoe ÷ norules: {f(m['spoe_to_norules'], '{:.2f}')}   spoe ÷ example: {f(m['spoe_to_example'], '{:.2f}')}")
PY
