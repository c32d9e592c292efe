#!/usr/bin/env bash
# Install HAProxy 3.x (3.2 when Debian sid carries it) next to the system's HAProxy,
# for the end-to-end tests, without touching the system's apt or dpkg state.
#
#   haproxy/install-haproxy-3.2.sh [DIR]      default DIR: <repo>/.cache/haproxy-3.2
#
# Result: DIR/haproxy, an executable wrapper that runs the unpacked sid binary through
# the unpacked sid dynamic loader and libraries (bookworm's glibc is too old for it), and
# DIR/VERSION, DIR/packages.txt (provenance). Idempotent: exits silently when DIR/haproxy
# already runs and reports a version >= 3.1; FORCE=1 reinstalls. Quiet unless it fails
# (then the apt log is printed); one line is printed after a fresh install.
#
# How: a private apt configuration (own sources list with sid/main on the machine's
# own Debian mirror, own lists/cache/status/lock directories, none of the machine's
# apt.conf.d hooks), "apt-get install --download-only haproxy" against an EMPTY dpkg
# status file, which resolves and downloads haproxy's complete dependency closure,
# then "dpkg -x" of every .deb into DIR/root. Nothing is configured, no maintainer
# script runs, /var/lib/dpkg and /var/lib/apt are never written.
#
# Environment: FORCE=1 (reinstall), SPOA_GUARD_DEBIAN_MIRROR (mirror URI override),
# SPOA_GUARD_SID_INSECURE=1 (see "Archive signature" below; off by default).
set -euo pipefail

min_version=3.1     # anything older has the 2.x SPOE engine; 3.1+ has the SPOP mux
want_series=3.2

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$script_dir/.." && pwd)
dest=${1:-$repo_dir/.cache/haproxy-3.2}
mkdir -p "$(dirname "$dest")"
dest=$(cd "$(dirname "$dest")" && pwd)/$(basename "$dest")

die() { echo "install-haproxy-3.2: $*" >&2; exit 1; }

for tool in apt-get apt-config dpkg dpkg-deb readlink find; do
    command -v "$tool" >/dev/null || die "missing tool: $tool (run this on Debian/Ubuntu)"
done

installed_version() {
    # prints the version reported by "$1 -v", fails if it does not run
    local out
    out=$("$1" -v 2>/dev/null) || return 1
    out=${out#*version }
    printf '%s\n' "${out%% *}"
}

if [[ ${FORCE:-0} != 1 && -x $dest/haproxy ]]; then
    if v=$(installed_version "$dest/haproxy") && dpkg --compare-versions "$v" ge "$min_version"; then
        exit 0
    fi
fi

# ---------------------------------------------------------------- work area and log
work=$(mktemp -d "${dest}.work.XXXXXX")
log=$work/install.log
: >"$log"
cleanup() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "install-haproxy-3.2: FAILED (exit $rc); log follows" >&2
        tail -n 60 "$log" >&2 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

run() { "$@" >>"$log" 2>&1; }

# ---------------------------------------------------------------- which mirror
# Reuse the machine's own Debian mirror (it is the one the network allows): the first
# "deb" entry of /etc/apt/sources.list.d/*.sources (deb822) or of the one-line
# sources.list(.d/*.list) files whose suite is the machine's release (or its -updates)
# with component main, and whose URI is not a security mirror. Third-party repositories
# (other suites or components) are skipped. Fallback: deb.debian.org.
codename=$( (. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}") || true)
find_mirror() {
    local f uri
    shopt -s nullglob
    for f in /etc/apt/sources.list.d/*.sources; do
        uri=$(awk -v codename="$codename" '
            function flush() {
                if (deb && main && suite_ok && uri != "") { print uri; found = 1; exit }
                deb = 0; main = 0; suite_ok = 0; uri = ""
            }
            /^[[:space:]]*$/ { flush(); next }
            { key = tolower($1) }
            key == "types:"      { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
            key == "enabled:"    { if (tolower($2) == "no") deb = -1000 }
            key == "components:" { for (i = 2; i <= NF; i++) if ($i == "main") main = 1 }
            key == "suites:"     { for (i = 2; i <= NF; i++)
                                       if ($i == codename || $i == codename "-updates" || codename == "") suite_ok = 1 }
            key == "uris:"       { for (i = 2; i <= NF; i++) if ($i !~ /security/ && uri == "") uri = $i }
            END { if (!found) flush() }
        ' "$f" | sed -n 1p)
        [[ -n $uri ]] && { printf '%s\n' "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        uri=$(awk -v codename="$codename" '
            $1 == "deb" {
                i = 2
                if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                u = $i; s = $(i + 1); m = 0
                for (j = i + 2; j <= NF; j++) if ($j == "main") m = 1
                if (u !~ /security/ && m && (s == codename || s == codename "-updates" || codename == "")) { print u; exit }
            }' "$f")
        [[ -n $uri ]] && { printf '%s\n' "$uri"; return; }
    done
    echo http://deb.debian.org/debian
}
mirror=${SPOA_GUARD_DEBIAN_MIRROR:-$(find_mirror)}
mirror=${mirror%/}

arch=$(dpkg --print-architecture)

# ---------------------------------------------------------------- private apt setup
apt_root=$work/apt
mkdir -p "$apt_root"/{etc/apt.conf.d,etc/preferences.d,etc/trusted.gpg.d,lists/partial,archives/partial,state,cache,log}
: >"$apt_root/state/status"   # empty dpkg status: apt resolves the FULL dependency closure

# The machine's apt.conf.d is NOT read (APT_CONFIG + Dir::Etc::Parts below): it may carry
# hooks that touch system state (e.g. docker-clean's APT::Update::Post-Invoke deletes
# /var/cache/apt/archives/*.deb, appstream refreshes its cache). Only the network-related
# settings are carried over: proxies, retries, and the freshness policy
# (Acquire::Check-Valid-Until / Check-Date: machines that use a frozen mirror or snapshot
# disable those checks, and sid's Release file is only "valid" for a week).
apt-config dump 2>/dev/null \
    | grep -E '^Acquire::(https?|ftp)::(Proxy|Timeout|Pipeline-Depth|Dl-Limit)|^Acquire::(Retries|ForceIPv4|ForceIPv6|Check-Valid-Until|Check-Date|Max-FutureTime)' \
    >"$apt_root/etc/carried.conf" || true

write_conf() {   # $1 = keyring, or "insecure"
    local signed
    if [[ $1 == insecure ]]; then signed="trusted=yes"; else signed="signed-by=$1"; fi
    printf 'deb [arch=%s %s] %s sid main\n' "$arch" "$signed" "$mirror" >"$apt_root/etc/sources.list"
    cat >"$apt_root/apt.conf" <<EOF
Dir::Etc::Main "/dev/null";
Dir::Etc::Parts "$apt_root/etc/apt.conf.d";
Dir::Etc::SourceList "$apt_root/etc/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "$apt_root/etc/preferences.d";
Dir::Etc::Trusted "/dev/null";
Dir::Etc::TrustedParts "$apt_root/etc/trusted.gpg.d";
Dir::State "$apt_root/state";
Dir::State::Lists "$apt_root/lists";
Dir::State::status "$apt_root/state/status";
Dir::State::extended_states "$apt_root/state/extended_states";
Dir::Cache "$apt_root/cache";
Dir::Cache::Archives "$apt_root/archives";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Dir::Log "$apt_root/log";
APT::Architecture "$arch";
APT::Architectures { "$arch"; };
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT::Get::Assume-Yes "true";
APT::Sandbox::User "root";
Acquire::Languages "none";
Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";
quiet "2";
EOF
    cat "$apt_root/etc/carried.conf" >>"$apt_root/apt.conf"
}

papt() { APT_CONFIG=$apt_root/apt.conf "$@"; }

apt_update() {
    rm -rf "$apt_root/lists" && mkdir -p "$apt_root/lists/partial"
    run papt apt-get update --error-on=any
}

# ---------------------------------------------------------------- archive signature
# 1. The machine's Debian archive keyring. sid's InRelease is signed by the current
#    "automatic signing keys" (in 2026: 12/bookworm and 13/trixie); bookworm's
#    debian-archive-keyring (2023.3+deb12u2) carries both, so this normally works.
# 2. If sid has moved to keys the installed keyring does not know (e.g. a 14/forky key
#    and the bookworm key retired), take the newest debian-archive-keyring package of
#    the machine's OWN release with "apt-get download": apt verifies it against the
#    machine's trusted, already-signed lists, and Debian adds the next release's keys to
#    stable's keyring package in point releases. That keeps a chain of trust rooted in
#    the machine's keys. (Taking the keyring from sid itself would prove nothing.)
# 3. Otherwise fail. SPOA_GUARD_SID_INSECURE=1 skips verification ([trusted=yes]); use
#    it only on throw-away CI machines: the packages are then as trustworthy as the
#    network path to the mirror.
keyring=""
for k in /usr/share/keyrings/debian-archive-keyring.gpg; do
    [[ -r $k ]] && keyring=$k
done
updated=0
if [[ -n $keyring ]]; then
    write_conf "$keyring"
    apt_update && updated=1
fi
if [[ $updated == 0 ]]; then
    echo "--- sid signature not verified with ${keyring:-<no keyring>}; trying the newest keyring of the machine's release" >>"$log"
    kr_dir=$work/keyring
    mkdir -p "$kr_dir"
    if (cd "$kr_dir" && run apt-get download -q debian-archive-keyring) \
        && run dpkg -x "$(ls "$kr_dir"/debian-archive-keyring_*.deb | sed -n 1p)" "$kr_dir/root" \
        && [[ -r $kr_dir/root/usr/share/keyrings/debian-archive-keyring.gpg ]]; then
        write_conf "$kr_dir/root/usr/share/keyrings/debian-archive-keyring.gpg"
        apt_update && updated=1
    fi
fi
if [[ $updated == 0 ]]; then
    if [[ ${SPOA_GUARD_SID_INSECURE:-0} == 1 ]]; then
        echo "install-haproxy-3.2: WARNING: sid archive signature NOT verified (SPOA_GUARD_SID_INSECURE=1)" >&2
        write_conf insecure
        apt_update
    else
        die "could not fetch/verify Debian sid from $mirror (log below); SPOA_GUARD_SID_INSECURE=1 skips signature checks"
    fi
fi

# ---------------------------------------------------------------- version check
version=$(papt apt-cache show --no-all-versions haproxy 2>>"$log" | awk '/^Version:/ { print $2; exit }')
[[ -n $version ]] || die "sid has no haproxy package for $arch"
upstream=${version#*:}
upstream=${upstream%%-*}
upstream=${upstream%%+*}
if ! dpkg --compare-versions "$upstream" ge "$min_version"; then
    die "sid carries haproxy $version, older than $min_version"
fi

# ---------------------------------------------------------------- download and unpack
run papt apt-get install --download-only haproxy
debs=("$apt_root"/archives/*.deb)
[[ -e ${debs[0]} ]] || die "apt downloaded nothing"

stage=$work/stage
mkdir -p "$stage/root"
: >"$stage/packages.txt"
for deb in "${debs[@]}"; do
    run dpkg -x "$deb" "$stage/root"
    dpkg-deb -f "$deb" Package Version | paste -sd' ' | sed 's/Package: //; s/ Version: / /' >>"$stage/packages.txt"
done
sort -o "$stage/packages.txt" "$stage/packages.txt"

[[ -x $stage/root/usr/sbin/haproxy ]] || die "usr/sbin/haproxy missing from the unpacked packages"
loader=$(find "$stage/root" -name 'ld-linux*.so.[0-9]' -type f | sort | sed -n 1p)
[[ -n $loader ]] || die "dynamic loader not found among the unpacked packages"
loader=${loader#"$stage/root/"}

# library directories, relative to the root: every lib*/ directory holding a shared library
libdirs=$(cd "$stage/root" && find . -path ./usr/share -prune -o -name 'lib*.so.*' \( -type f -o -type l \) -printf '%h\n' \
    | sed 's|^\./||' | grep -E '(^|/)lib[^/]*$|(^|/)lib[^/]*/[^/]*-linux-[^/]*$' | sort -u | paste -sd:)
[[ -n $libdirs ]] || die "no library directory found among the unpacked packages"

# The wrapper is relocatable (finds root/ next to itself) so the staging directory can
# be renamed into place atomically. exec: the haproxy process replaces the shell, so
# the test harness's PID is haproxy's and signals reach it. Caveat: /proc/self/exe is
# the loader, so master-worker reloads that re-exec the binary (-W + SIGUSR2) are not
# supported through this wrapper; the tests do not use them.
cat >"$stage/haproxy" <<EOF
#!/bin/sh
# HAProxy $version from Debian sid, unpacked by haproxy/install-haproxy-3.2.sh
here=\$(dirname "\$(readlink -f "\$0")")
root=\$here/root
libpath=
for d in $(printf '%s' "$libdirs" | tr ':' ' '); do libpath=\$libpath\${libpath:+:}\$root/\$d; done
exec "\$root/$loader" --library-path "\$libpath" "\$root/usr/sbin/haproxy" "\$@"
EOF
chmod 755 "$stage/haproxy"
printf '%s\n' "$version" >"$stage/VERSION"

run "$stage/haproxy" -vv || die "the unpacked haproxy does not run"
got=$(installed_version "$stage/haproxy") || die "cannot read the unpacked haproxy's version"

# Atomic-ish replacement: a half-finished run never leaves a broken DIR behind.
if [[ -e $dest ]]; then
    mv -T "$dest" "$work/old"
fi
if ! mv -T "$stage" "$dest" 2>>"$log"; then
    # A concurrent run finished first: fine if what it installed works.
    if v=$(installed_version "$dest/haproxy") && dpkg --compare-versions "$v" ge "$min_version"; then
        exit 0
    fi
    die "could not move the new installation to $dest"
fi

case $got in
    "$want_series".*) echo "install-haproxy-3.2: HAProxy $got (Debian sid $version) installed in $dest" ;;
    *) echo "install-haproxy-3.2: NOTE: sid no longer carries $want_series; installed HAProxy $got (Debian $version) in $dest" ;;
esac
