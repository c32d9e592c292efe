#!/usr/bin/env bash
# The fault suite of issue 15 (benches/scripts/faults.py): slowloris on the metrics and
# admin listeners, silent and trickling sockets up to the SPOP connection cap, a peer that
# never reads, random bytes, and reloads (one in five broken) under a load whose every ACK
# is checked, and memory after 50 reloads of a 1M-entry list — each bounded, each PASS or
# FAIL with its numbers. Exit status 1 when any fault fails. About 2 minutes. CI runs it
# (.ci/run).
#
# Usage: benches/scripts/faults.sh [--only NAME[,NAME]] [--json]
#   RELOAD_SECONDS=20 RELOADS=50 benches/scripts/faults.sh
# Needs python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet --bins   # spoa-guard and spoa-guard-loadgen
ulimit -n 4096
exec python3 benches/scripts/faults.py target/release/spoa-guard target/release/spoa-guard-loadgen \
    tests/fixtures "$@"
