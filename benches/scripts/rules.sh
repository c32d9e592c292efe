# The realistic rule set of the end-to-end and agent benchmarks (benches/scripts/e2e.sh,
# benches/scripts/agent.sh). Meant to be sourced (bash), not run:
#
#   . benches/scripts/rules.sh
#   write_rules "$work" 127.0.0.1:12345     # or unix:/path/agent.sock
#
# write_rules DIR LISTEN writes DIR/agent.toml, an agent configuration listening on LISTEN
# with:
#   - the block list: with SPOA_GUARD_DATA, the real ≈190k entries (FireHOL level 4, X4B
#     v4/v6, Spamhaus DROP/DROPv6/EDROP), read in place; otherwise DIR/generated.txt,
#     BLOCK_ENTRIES (default 190k) generated IPv4 CIDRs (/24-/32, never 0/8, 10/8 or 127/8;
#     the same ones every time); BLOCK_ENTRIES also makes the generated list when
#     SPOA_GUARD_DATA is set
#   - the full ASN tables of benches/data, AS64496 and examples/lists/asn-block.txt blocked
#   - the bad-bot user-agent list (examples/lists/bad-user-agents.list, case-insensitive, deny)
#   - three limits that never deny: per client, per client and /login path, per /24 or /48
# The agent's [server] threads is AGENT_THREADS (default 1).
# Knobs for rule-count benchmarks (benches/scripts/scaling.sh), each replacing one part:
#   UA_RULES=N     N separate [[user_agent]] rules instead of the bad-bot list, one scanner
#                  word each, written as users write them: pattern "(?i)(^|[^a-z])WORD",
#                  deny (words from benches/data/scanner-words.txt; past its 50, the words
#                  again with a number: sqlmap2, …). UA_RULES=0: no user-agent rule.
#   UA_COMBINED=1  the same words (UA_RULES, default 50) as ONE rule: (?i)(^|[^a-z])(w1|w2|…)
#   LIMITS=N       instead of the three limits: the per-client limit and N-1 limits on
#                  distinct path prefixes (/api/v1/endpoint-K, key src+path) that the load
#                  generator's paths never hit; all never deny
#   LIST_FILES=N   the generated block list split over N files (without SPOA_GUARD_DATA,
#                  or with BLOCK_ENTRIES)
#   SCANNER_RULES=N  besides the bad-bot list (without UA_RULES), N separate scanner-word
#                  rules as UA_RULES writes them (benches/scripts/e2e.sh: 50 by default)
# and sets, for the caller:
#   block_desc     what the block list is, in words
#   block_entries  its number of entries
#   block_haproxy  DIR/block-haproxy.txt: the block list as one HAProxy pattern file
#                  (entries only, comments removed); also a --sources file for the loadgen
#   ua_list        the bad-bot list (HAProxy `-m reg -i -f` takes it as it is)
# Needs python3 (without SPOA_GUARD_DATA).

write_rules() {  # $1 = directory, $2 = listen address
    local dir=$1 listen=$2 root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    local block_files
    local entries=${BLOCK_ENTRIES:-190000}
    if [ -n "${SPOA_GUARD_DATA:-}" ] && [ -z "${BLOCK_ENTRIES:-}" ]; then
        local d=$SPOA_GUARD_DATA/blocklists
        block_files=("$d/firehol_level4.netset" "$d/x4bnet-datacenter-ipv4.txt" "$d/x4bnet-datacenter-ipv6.txt"
            "$d/spamhaus-drop.txt" "$d/spamhaus-dropv6.txt" "$d/spamhaus-edrop-2023-12-01.txt")
        block_desc="real lists (FireHOL level 4, X4B v4/v6, Spamhaus DROP/DROPv6/EDROP)"
    else
        python3 - "$dir/generated.txt" "$entries" <<'PY'
import random, sys
random.seed(3)
with open(sys.argv[1], "w") as f:
    n = 0
    while n < int(sys.argv[2]):
        a = random.getrandbits(32)
        if a >> 24 in (0, 10, 127):
            continue
        f.write(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/{random.randint(24, 32)}\n")
        n += 1
PY
        block_files=("$dir/generated.txt")
        local files=${LIST_FILES:-1}
        if [ "$files" -gt 1 ]; then
            split -n "l/$files" -d -a 3 --additional-suffix=.txt "$dir/generated.txt" "$dir/generated-"
            rm "$dir/generated.txt"
            block_files=("$dir"/generated-*.txt)
        fi
        block_desc="$entries generated IPv4 CIDRs (/24-/32) in ${#block_files[@]} file(s)"
    fi
    # HAProxy pattern files take '#' comments only, not Spamhaus's '; SBL...'.
    block_haproxy=$dir/block-haproxy.txt
    sed -e 's/[;#].*//' -e 's/[[:space:]]//g' -e '/^$/d' "${block_files[@]}" > "$block_haproxy"
    block_entries=$(wc -l < "$block_haproxy")
    ua_list=$root/examples/lists/bad-user-agents.list

    local toml_block
    toml_block=$(printf '"%s", ' "${block_files[@]}")
    cat > "$dir/agent.toml" <<TOML
[server]
listen = "$listen"
threads = ${AGENT_THREADS:-1}
[lists]
block = [${toml_block%, }]
[asn]
databases = ["$root/benches/data/ip-location-db-asn-ipv4.csv.gz", "$root/benches/data/ip-location-db-asn-ipv6.csv.gz"]
block = [64496]
block_file = "$root/examples/lists/asn-block.txt"
$(user_agent_rules "$root")
$(limit_rules)
TOML
}

# The [[user_agent]] blocks of write_rules (see UA_RULES, UA_COMBINED, SCANNER_RULES);
# $1 = repository root.
user_agent_rules() {
    local root=$1
    if [ -z "${UA_RULES:-}" ] && [ -z "${UA_COMBINED:-}" ]; then
        cat <<TOML
[[user_agent]]
name = "bad-bots"
file = "$root/examples/lists/bad-user-agents.list"
ignore_case = true
action = "deny"
TOML
        [ "${SCANNER_RULES:-0}" -gt 0 ] && scanner_rules "$root" "$SCANNER_RULES" 0
        return 0
    fi
    scanner_rules "$root" "${UA_RULES:-50}" "${UA_COMBINED:-0}"
}

# $2 scanner-word rules, separate or ($3 = 1) as one; $1 = repository root.
scanner_rules() {
    python3 - "$1/benches/data/scanner-words.txt" "$2" "$3" <<'PY'
import sys
base = [w.strip() for w in open(sys.argv[1]) if w.strip() and not w.startswith("#")]
n, combined = int(sys.argv[2]), sys.argv[3] == "1"
words = [base[i % len(base)] + (str(i // len(base) + 1) if i >= len(base) else "") for i in range(n)]
rule = lambda name, pattern: f'[[user_agent]]\nname = "{name}"\npattern = \'{pattern}\'\naction = "deny"\n'
if combined and words:
    print(rule("scanners", "(?i)(^|[^a-z])(" + "|".join(words) + ")"))
elif not combined:
    print("\n".join(rule(f"scanner-{w}", f"(?i)(^|[^a-z]){w}") for w in words))
PY
}

# The [[limit]] blocks of write_rules (see LIMITS). All set high enough never to deny.
limit_rules() {
    local n=${LIMITS:-} k
    if [ -z "$n" ]; then
        cat <<TOML
[[limit]]
name = "per-client"
rate = 10000000
burst = 10000000
[[limit]]
name = "login"
key = "src+path"
path_prefix = "/login"
rate = 10000000
burst = 10000000
[[limit]]
name = "per-network"
key = "src/24/48"
rate = 10000000
burst = 10000000
TOML
        return
    fi
    [ "$n" -ge 1 ] && printf '[[limit]]\nname = "per-client"\nrate = 10000000\nburst = 10000000\n'
    for ((k = 1; k < n; k++)); do
        printf '[[limit]]\nname = "endpoint-%d"\nkey = "src+path"\npath_prefix = "/api/v1/endpoint-%d"\nrate = 10000000\nburst = 10000000\n' "$k" "$k"
    done
}
