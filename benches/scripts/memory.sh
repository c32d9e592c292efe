#!/usr/bin/env bash
# Load time and resident memory of a large rule set, each in a fresh process:
# 1M generated IPv4 CIDRs + the full ip-location-db ASN tables + the bad-bot and AI
# crawler lists + three limits, loaded by `spoa-guard check`. With SPOA_GUARD_DATA set,
# also the real ≈190k-entry block lists (FireHOL level 4, X4B, Spamhaus).
# Usage: benches/scripts/memory.sh   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet
bin=target/release/spoa-guard
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$(pwd)

python3 - "$work/generated-1m.txt" <<'PY'
import random, sys
random.seed(2)
with open(sys.argv[1], "w") as f:
    for _ in range(1_000_000):
        a = random.getrandbits(32)
        f.write(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/{random.randint(16, 32)}\n")
PY

config() {  # $1 = block list entries (TOML array body)
    cat <<TOML
[lists]
block = [$1]
[asn]
databases = ["$root/benches/data/ip-location-db-asn-ipv4.csv.gz", "$root/benches/data/ip-location-db-asn-ipv6.csv.gz"]
block = [64496]
[[user_agent]]
name = "bad-bots"
file = "$root/tests/fixtures/useragents/bad-user-agents.list"
ignore_case = true
action = "deny"
[[user_agent]]
name = "ai-crawlers"
file = "$root/tests/fixtures/useragents/ai-robots-haproxy-block-ai-bots.txt"
literal = true
ignore_case = true
action = "deny"
[[limit]]
name = "per-client"
rate = 50
burst = 100
[[limit]]
name = "login"
key = "src+path"
path_prefix = "/login"
rate = 1
burst = 5
[[limit]]
name = "global"
key = "global"
rate = 100000
burst = 100000
TOML
}

config "\"$work/generated-1m.txt\"" > "$work/1m.toml"
echo "== 1M generated CIDRs + full ASN tables + UA lists + 3 limits"
"$bin" check --config "$work/1m.toml" | tail -n 1

if [ -n "${SPOA_GUARD_DATA:-}" ]; then
    d=$SPOA_GUARD_DATA/blocklists
    config "\"$d/firehol_level4.netset\", \"$d/x4bnet-datacenter-ipv4.txt\", \"$d/x4bnet-datacenter-ipv6.txt\", \"$d/spamhaus-drop.txt\", \"$d/spamhaus-dropv6.txt\", \"$d/spamhaus-edrop-2023-12-01.txt\"" > "$work/real.toml"
    echo "== real ≈190k block lists + full ASN tables + UA lists + 3 limits"
    "$bin" check --config "$work/real.toml" | tail -n 1
fi
