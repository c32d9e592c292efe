#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the repository's own data: the SPOP frames captured
# from HAProxy 2.6 and 3.2, the rule-file fixtures, the example lists and configuration,
# and the two small MaxMind DBs in fuzz/seeds/. Adds to an existing corpus (files are
# named by their source, so seeding twice changes nothing). Needs perl (Debian's
# perl-base, always installed) for hex and for cutting files, and gzip.
#
# Usage: fuzz/seed.sh [TARGET...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")/.."

captures=tests/fixtures/captures
corpus=fuzz/corpus
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(spop_frame notify_inplace_vs_owned hello_negotiation ip_list asn_db user_agent_rules config)

# hex FILE: the bytes of a .hex capture (lowercase hex on one line).
hex() { perl -ne 's/\s+//g; print pack("H*", $_)' "$1"; }

# prefixed BYTE FILE: FILE behind one byte (the switch byte of asn_db and user_agent_rules).
prefixed() { printf "\\x$(printf %02x "$1")"; cat "$2"; }

seed_spop_frame() {
    local dir=$corpus/spop_frame version f
    mkdir -p "$dir"
    for f in "$captures"/haproxy-*/*.hex; do
        version=$(basename "$(dirname "$f")")
        hex "$f" >"$dir/$version-$(basename "$f" .hex)"
    done
    # Whole sessions as one stream: what HAProxy sends on a connection, in order.
    for version in haproxy-2.6 haproxy-3.2; do
        for f in "$captures/$version"/*.hex; do
            case $(basename "$f") in *agent-*|*ack-*) continue ;; esac
            hex "$f"
        done >"$dir/$version-session-haproxy-to-agent"
    done
}

# Frame bodies: the captures without their 4-byte length prefix. $2 filters by name.
seed_bodies() {
    local dir=$corpus/$1 pattern=$2 version f
    mkdir -p "$dir"
    for f in "$captures"/haproxy-*/$pattern.hex; do
        version=$(basename "$(dirname "$f")")
        hex "$f" | tail -c +5 >"$dir/$version-$(basename "$f" .hex)"
    done
}

seed_ip_list() {
    local dir=$corpus/ip_list f
    mkdir -p "$dir"
    for f in tests/fixtures/lists/*.txt tests/fixtures/lists/*.netset examples/lists/allow.txt examples/lists/blocklist.txt; do
        cp "$f" "$dir/$(basename "$(dirname "$f")")-$(basename "$f")"
    done
}

seed_asn_db() {
    local dir=$corpus/asn_db f name pick
    mkdir -p "$dir"
    # The switch byte picks the file name the target parses under (NAMES in asn_db.rs).
    for f in tests/fixtures/asn/*.tsv tests/fixtures/asn/*.csv tests/fixtures/asn/*.gz \
        tests/fixtures/asn/*.txt examples/data/*.tsv fuzz/seeds/*.mmdb; do
        name=$(basename "$f")
        case $name in
            *.mmdb.gz) pick=6 ;;
            *.csv.gz) pick=5 ;;
            *.tsv.gz) pick=4 ;;
            *.mmdb) pick=3 ;;
            *.csv) pick=2 ;;
            *.tsv) pick=1 ;;
            *) pick=0 ;;
        esac
        prefixed $pick "$f" >"$dir/$(basename "$(dirname "$f")")-$name"
    done
    for f in fuzz/seeds/*.mmdb; do
        gzip -9nc "$f" >"$dir/seeds-$(basename "$f").gz.tmp"
        prefixed 6 "$dir/seeds-$(basename "$f").gz.tmp" >"$dir/seeds-$(basename "$f").gz"
        rm "$dir/seeds-$(basename "$f").gz.tmp"
    done
}

# chunks BYTE FILE NAME: FILE cut into pieces of 20 lines, each behind BYTE, as
# NAME-1, NAME-2, ...: a whole list costs tens of milliseconds per run once instrumented,
# a piece one or two.
chunks() {
    perl -e '
        my ($byte, $file, $name) = @ARGV;
        open my $in, "<", $file or die "$file: $!";
        my @lines = <$in>;
        for (my ($i, $n) = (0, 1); $i < @lines; $i += 20, $n++) {
            my $end = $i + 19 < $#lines ? $i + 19 : $#lines;
            open my $out, ">", "$name-$n" or die "$name-$n: $!";
            print $out chr($byte), @lines[$i .. $end];
        }
    ' "$@"
}

seed_user_agent_rules() {
    local dir=$corpus/user_agent_rules f n=0 pattern
    mkdir -p "$dir"
    # Switch byte: 0 regexes, 1 regexes ignoring case, 2 plain substrings, 4 an inline pattern.
    for f in tests/fixtures/useragents/ai-robots-haproxy-block-ai-bots.txt \
        tests/fixtures/useragents/bad-user-agents.list examples/lists/ai-crawlers.txt; do
        chunks 0 "$f" "$dir/$(basename "$f")-regex"
        chunks 1 "$f" "$dir/$(basename "$f")-ignore-case"
        chunks 2 "$f" "$dir/$(basename "$f")-literal"
    done
    chunks 2 tests/fixtures/useragents/bots-sample.txt "$dir/bots-sample.txt-literal"
    # The inline patterns of the example configuration (TOML basic strings, unescaped).
    while IFS= read -r pattern; do
        n=$((n + 1))
        printf '\x04%s' "$pattern" >"$dir/example-pattern-$n"
    done < <(perl -ne 'if (/^pattern = "((?:[^"\\]|\\.)*)"/) { ($p = $1) =~ s/\\(.)/$1/g; print "$p\n" }' examples/spoa-guard.toml)
}

seed_config() {
    local dir=$corpus/config
    mkdir -p "$dir"
    cp examples/spoa-guard.toml "$dir/example"
    # The example with its commented-out [fleet] section switched on.
    perl -pe 's/^# (\[fleet\]|[a-z_]+ = )/$1/' examples/spoa-guard.toml >"$dir/example-fleet"
    # One seed per top-level section, so that mutations start from each of them.
    perl -ne '
        if (/^\[\[?([a-z_]+)\]\]?/) { $n++; close OUT; open OUT, ">", "'"$dir"'/section-$n-$1" or die }
        print OUT if $n;
    ' examples/spoa-guard.toml
    # The TOML blocks of the documentation.
    perl -ne '
        if (/^```toml/) { $n++; $in = 1; open OUT, ">", "'"$dir"'/doc-" . ($ARGV =~ s{/}{-}gr) . "-$n" or die; next }
        if ($in && /^```/) { $in = 0; close OUT; next }
        print OUT if $in;
    ' README.md deploy/README.md
}

for target in "${targets[@]}"; do
    case $target in
        spop_frame) seed_spop_frame ;;
        notify_inplace_vs_owned) seed_bodies notify_inplace_vs_owned '*' ;;
        hello_negotiation) seed_bodies hello_negotiation '*hello*' ;;
        ip_list) seed_ip_list ;;
        asn_db) seed_asn_db ;;
        user_agent_rules) seed_user_agent_rules ;;
        config) seed_config ;;
        *) echo "fuzz/seed.sh: unknown target $target" >&2; exit 2 ;;
    esac
    echo "fuzz/seed.sh: $target: $(find "$corpus/$target" -type f | wc -l) inputs in $corpus/$target"
done
