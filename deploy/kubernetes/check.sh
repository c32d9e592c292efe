#!/usr/bin/env bash
# Checks deploy/kubernetes/ without a cluster: renders every kustomization, validates the
# result against the Kubernetes API's schemas, checks the agent's configuration with
# `spoa-guard check` and the HAProxy side with `haproxy -c`. Nothing is applied anywhere.
#
#   deploy/kubernetes/check.sh
#
# 1. Renders with kubectl 1.20's built-in kustomize 2.0.3, from Debian bookworm's
#    kubernetes-client package (apt-get download + dpkg -x into .cache/kubernetes-client;
#    not installed, so it cannot conflict with another kubectl). When another kubectl
#    (kustomize 3+) or a kustomize binary is in PATH, renders with it too and requires
#    the same objects (generated names may differ in their hash suffix).
# 2. Validates every built-in object with kubernetes-validate (strict: unknown fields are
#    errors) against Kubernetes ${K8S_VERSIONS[*]}; the ServiceMonitor and PrometheusRule
#    against prometheus-operator models (cloudcoil), and the PrometheusRule's groups
#    against deploy/prometheus/spoa-guard-alerts.yml. Python packages: a venv in
#    .cache/k8s-venv from requirements.txt (every version pinned).
# 3. Lays out the agent's mounted files as the kubelet would and runs `spoa-guard check`
#    on them (cargo build --release first, a no-op when the build is current; or
#    SPOA_GUARD_BIN=path), then checks the pod's wiring (writable paths, the shared socket,
#    probes); builds a haproxy.cfg shaped like the controller's with the ConfigMap's
#    snippets and haproxy-aux.cfg and runs `haproxy -dW -c` with HAProxy 2.x
#    (SPOA_GUARD_HAPROXY26, default /usr/sbin/haproxy) and 3.x (SPOA_GUARD_HAPROXY32,
#    default .cache/haproxy-3.2/haproxy from haproxy/install-haproxy-3.2.sh).
# 4. Prints what passed; exits 1 at the first failure. A missing HAProxy 3.x fails under
#    CI=true and is reported as SKIPPED otherwise; no newer kubectl/kustomize in PATH is
#    reported (SKIP line), never required: kustomize 2.0.3 is always there.
#
# Needs: bash, apt-get and dpkg (Debian bookworm; apt lists present, or root to run
# apt-get update), python3 with venv, cargo (or SPOA_GUARD_BIN), HAProxy 2.x.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=$repo/.cache
cd "$repo"                        # paths in the output are relative to the repository
rel=deploy/kubernetes
alerts=deploy/prometheus/spoa-guard-alerts.yml
K8S_VERSIONS=(1.30 1.33)          # 1.30: the oldest with the preStop sleep action used here
TARGETS=(base overlays/production overlays/fleet)   # overlays a user applies: full checks
PARTS=(base/agent monitoring)                       # kustomizations used as bases: rendered
EXAMPLES=(overlays/fleet/redis-networkpolicy.example.yaml)   # plain manifests: schemas

passed=()
skipped=()
step() { printf '\n== %s\n' "$*"; }
pass() { passed+=("$*"); }
die() { printf '\ncheck.sh: FAILED: %s\n' "$*" >&2; exit 1; }
is_ci() { [[ ${CI:-} == true || ${CI:-} == 1 ]]; }

work=$(mktemp -d "${TMPDIR:-/tmp}/spoa-guard-k8s-check.XXXXXX")
cleanup() {
    local rc=$?
    if [[ $rc -eq 0 ]]; then rm -rf "$work"; else echo "check.sh: work files kept in $work" >&2; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. kubectl 1.20 (kustomize 2.0.3)
step "kubectl with kustomize 2.0.3 (Debian bookworm kubernetes-client, in .cache/kubernetes-client)"
kc_dir=$cache/kubernetes-client
kc=$kc_dir/root/usr/bin/kubectl
if ! "$kc" version --client >/dev/null 2>&1; then
    for tool in apt-get dpkg dpkg-deb; do
        command -v "$tool" >/dev/null || die "missing $tool: kubectl 1.20 comes from Debian's kubernetes-client package"
    done
    dl=$work/kubernetes-client
    mkdir -p "$dl"
    download() { (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root kubernetes-client) >"$work/apt.log" 2>&1; }
    if ! download; then
        if [[ $(id -u) == 0 ]]; then
            echo "apt-get download failed; refreshing the package lists (apt-get update) and trying again"
            apt-get update -qq >>"$work/apt.log" 2>&1 || true
            download || { cat "$work/apt.log" >&2; die "apt-get download kubernetes-client failed (Debian bookworm's package, see the log above)"; }
        else
            cat "$work/apt.log" >&2
            die "apt-get download kubernetes-client failed; run 'apt-get update' (as root) and try again"
        fi
    fi
    deb=$(find "$dl" -maxdepth 1 -name 'kubernetes-client_*.deb' | head -n 1)
    [[ -n $deb ]] || die "apt-get download left no kubernetes-client_*.deb"
    dpkg -x "$deb" "$dl/root"
    [[ -x $dl/root/usr/bin/kubectl ]] || die "the kubernetes-client package has no usr/bin/kubectl"
    dpkg-deb -f "$deb" Version >"$dl/VERSION"
    rm -f "$deb"
    rm -rf "$kc_dir.new" && mkdir -p "$cache" && mv "$dl" "$kc_dir.new"
    rm -rf "$kc_dir" && mv "$kc_dir.new" "$kc_dir"
    echo "unpacked kubernetes-client $(cat "$kc_dir/VERSION") into $kc_dir"
fi
kc_version=$("$kc" version --client --short 2>/dev/null | sed -n 's/^Client Version: //p')
[[ $kc_version == v1.20.* ]] || die "$kc is $kc_version, expected v1.20.x (kustomize 2.0.3)"
echo "$kc: kubectl $kc_version (Debian $(cat "$kc_dir/VERSION" 2>/dev/null || echo '?')), kustomize 2.0.3 built in"
pass "kubectl $kc_version (kustomize 2.0.3) from Debian's kubernetes-client"

# Newer renderers, when present: the same objects are required from each.
others=()
if command -v kubectl >/dev/null && [[ $(readlink -f "$(command -v kubectl)") != "$(readlink -f "$kc")" ]]; then
    others+=("kubectl kustomize")
fi
if command -v kustomize >/dev/null; then
    others+=("kustomize build")
fi
if [[ ${#others[@]} -eq 0 ]]; then
    echo "no other kubectl or kustomize in PATH: rendering with kustomize 2.0.3 only"
    skipped+=("comparison with a newer kustomize (none in PATH)")
else
    for o in "${others[@]}"; do
        case $o in
            kubectl*) v=$(kubectl version --client 2>/dev/null | paste -sd' ' || true) ;;
            *) v=$(kustomize version 2>/dev/null | head -n 1 || true) ;;
        esac
        echo "also rendering with: $o (${v:-version unknown})"
    done
fi

# ---------------------------------------------------------------- 2. Python venv
step "Python packages (requirements.txt, in .cache/k8s-venv)"
venv=$cache/k8s-venv
req=$here/requirements.txt
want_stamp=$(sha256sum "$req" | cut -d' ' -f1)
if [[ ! -x $venv/bin/python || $(cat "$venv/.requirements.sha256" 2>/dev/null) != "$want_stamp" ]]; then
    py=${PYTHON:-python3}
    command -v "$py" >/dev/null || die "no $py: Python 3.11+ is needed for the checks"
    rm -rf "$venv"
    "$py" -m venv "$venv" || die "$py -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >"$work/pip.log" 2>&1 \
        || { cat "$work/pip.log" >&2; die "pip install -r $req failed (PyPI reachable?)"; }
    echo "$want_stamp" >"$venv/.requirements.sha256"
    echo "created $venv"
fi
py=$venv/bin/python
"$py" -c 'import sys, tomllib; assert sys.version_info >= (3, 11)' 2>/dev/null \
    || die "$venv needs Python 3.11+ (tomllib); remove it and set PYTHON=python3.11"
echo "$("$py" --version), $("$venv/bin/pip" freeze --disable-pip-version-check | grep -E '^(kubernetes-validate|cloudcoil.models.prometheus.operator|PyYAML)==' | paste -sd' ')"
pass "venv .cache/k8s-venv: $("$venv/bin/pip" freeze --disable-pip-version-check | grep -cE '==') pinned packages"
check() { "$py" "$here/k8s_check.py" "$@"; }

# ---------------------------------------------------------------- the agent and HAProxy
step "spoa-guard binary"
if [[ -n ${SPOA_GUARD_BIN:-} ]]; then
    bin=$SPOA_GUARD_BIN
else
    command -v cargo >/dev/null || die "no cargo to build spoa-guard (or set SPOA_GUARD_BIN)"
    (cd "$repo" && cargo build --release --quiet --bin spoa-guard) || die "cargo build --release failed"
    bin=$repo/target/release/spoa-guard
fi
[[ -x $bin ]] || die "$bin is not executable"
echo "$bin ($("$bin" --version 2>/dev/null || echo 'version unknown'))"

step "HAProxy"
haproxies=()
h26=${SPOA_GUARD_HAPROXY26:-/usr/sbin/haproxy}
if [[ -x $h26 ]]; then
    haproxies+=("$h26")
else
    die "no HAProxy 2.x at $h26 (apt-get install haproxy, or set SPOA_GUARD_HAPROXY26)"
fi
h32=${SPOA_GUARD_HAPROXY32:-$repo/.cache/haproxy-3.2/haproxy}
if [[ -x $h32 ]]; then
    haproxies+=("$h32")
elif is_ci; then
    die "no HAProxy 3.x at $h32 (haproxy/install-haproxy-3.2.sh, or set SPOA_GUARD_HAPROXY32)"
else
    echo "SKIPPED: HAProxy 3.x checks: no $h32 (run haproxy/install-haproxy-3.2.sh; required under CI=true)"
    skipped+=("haproxy -c with HAProxy 3.x (not installed)")
fi
for h in "${haproxies[@]}"; do echo "$h: $("$h" -v | head -n 1)"; done

# ---------------------------------------------------------------- sources
step "sources"
check prometheusrule-source "$alerts" "$rel/monitoring/prometheusrule.yaml" \
    || die "monitoring/prometheusrule.yaml is not generated from deploy/prometheus/spoa-guard-alerts.yml"
check toml-drift "$rel/base/agent/spoa-guard.toml" "$rel/overlays/fleet/spoa-guard.toml" \
    || die "overlays/fleet/spoa-guard.toml drifted from base/agent/spoa-guard.toml"
# every kustomization is checked here
while IFS= read -r k; do
    dir=${k#"$here/"}; dir=${dir%/kustomization.yaml}
    [[ " ${TARGETS[*]} ${PARTS[*]} " == *" $dir "* ]] || die "$dir/kustomization.yaml is not in TARGETS or PARTS of check.sh"
done < <(find "$here" -name kustomization.yaml | sort)
echo "  ok   every kustomization is in the list: ${TARGETS[*]} ${PARTS[*]}"
pass "PrometheusRule generated from the alerts file, fleet config = base + [fleet]"

# ---------------------------------------------------------------- render and check
render() {   # $1 = kustomization dir (relative), $2 = output file, rest = command
    local dir=$1 out=$2
    shift 2
    "$@" "$here/$dir" >"$out" 2>"$out.err" || { cat "$out.err" >&2; die "$* $dir failed"; }
}

for dir in "${PARTS[@]}"; do
    step "render $dir (a part: rendered only)"
    render "$dir" "$work/part.yaml" "$kc" kustomize
    echo "  ok   $(grep -c '^kind:' "$work/part.yaml") objects"
done

for dir in "${TARGETS[@]}"; do
    name=${dir//\//-}
    out=$work/$name
    mkdir -p "$out"
    step "$dir: render"
    render "$dir" "$out/k20.yaml" "$kc" kustomize
    echo "  ok   kubectl $kc_version kustomize: $(grep -c '^kind:' "$out/k20.yaml") objects"
    for o in "${others[@]}"; do
        # shellcheck disable=SC2086  # $o is a command and its subcommand
        render "$dir" "$out/other.yaml" $o
        check same-render "$dir ($o vs kustomize 2.0.3)" "$out/k20.yaml" "$out/other.yaml" \
            || die "$dir renders differently with $o"
    done

    step "$dir: schemas (Kubernetes ${K8S_VERSIONS[*]}, strict)"
    check validate-core "$out/k20.yaml" "${K8S_VERSIONS[@]}" || die "$dir: schema validation failed"
    if grep -q '^apiVersion: monitoring.coreos.com/' "$out/k20.yaml"; then
        check validate-crs "$out/k20.yaml" "$alerts" \
            || die "$dir: ServiceMonitor/PrometheusRule check failed"
    fi

    step "$dir: the agent's configuration, as mounted"
    check agent-check "$out/k20.yaml" "$out" "$bin" || die "$dir: the agent's configuration failed"

    step "$dir: the HAProxy side"
    check drift "$out/k20.yaml" . || die "$dir: the HAProxy side differs from haproxy/ at the top"
    check haproxy-check "$out/k20.yaml" "$out" "${haproxies[@]}" || die "$dir: haproxy -c failed"
    renderers="kustomize 2.0.3"
    for o in "${others[@]}"; do renderers+=" = $o"; done
    pass "$dir: renders ($renderers), schemas of Kubernetes ${K8S_VERSIONS[*]}, spoa-guard check, haproxy -c (${#haproxies[@]} versions), same as haproxy/"
done

step "examples (not part of an overlay): schemas"
for f in "${EXAMPLES[@]}"; do
    check validate-core "$rel/$f" "${K8S_VERSIONS[@]}" || die "$f: schema validation failed"
done
pass "examples: ${EXAMPLES[*]}"

# ---------------------------------------------------------------- summary
printf '\n== deploy/kubernetes/check.sh: passed\n'
for p in "${passed[@]}"; do echo "  PASS  $p"; done
for s in "${skipped[@]}"; do echo "  SKIP  $s"; done
echo "  (rendering and offline checks only: nothing was applied to a cluster)"
