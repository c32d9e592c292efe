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
        block_desc="$entries generated IPv4 CIDRs (/24-/32)"
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
[[user_agent]]
name = "bad-bots"
file = "$ua_list"
ignore_case = true
action = "deny"
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
}
