#!/usr/bin/env python3
"""The checks behind deploy/kubernetes/check.sh, on manifests rendered by kustomize.

Run by check.sh with the Python of its venv (.cache/k8s-venv: PyYAML, kubernetes-validate,
the prometheus-operator models of cloudcoil). Commands:

  prometheusrule-write ALERTS OUT     write monitoring/prometheusrule.yaml from the alerts file
  prometheusrule-source ALERTS FILE   FILE is what prometheusrule-write makes of ALERTS
  same-render NAME A B                two renders of one overlay are the same objects
  validate-core RENDER VERSION...     built-in kinds, strict schemas of those Kubernetes versions
  validate-crs RENDER ALERTS          ServiceMonitor / PrometheusRule, and the rule groups
  drift RENDER REPO                   the HAProxy side says what haproxy/ at the top says
  agent-check RENDER WORK BIN         `spoa-guard check` on the agent's files as mounted
  haproxy-check RENDER WORK HAPROXY.. `haproxy -c` on a controller-like haproxy.cfg
  toml-drift BASE VARIANT             VARIANT is BASE plus [fleet] and scope = "fleet"

Every command prints one line per thing it checked and exits 1 on any failure.
"""

import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import typing
from pathlib import Path

GENERATED_NAME = re.compile(r"^(?P<stem>.+)-(?P<hash>[a-z0-9]{10})$")
CR_GROUP = "monitoring.coreos.com/"
AGENT_CONTAINER = "spoa-guard"


class Failed(Exception):
    """A check failed; the message says which and why."""


def say(ok: bool, what: str) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)


def load(path):
    import yaml

    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def ident(doc) -> str:
    meta = doc.get("metadata", {})
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


# ---------------------------------------------------------------- PrometheusRule

PROMETHEUSRULE_HEADER = """\
# GENERATED from deploy/prometheus/spoa-guard-alerts.yml; do not edit by hand. Edit the
# alerts file, then regenerate:
#   python3 deploy/kubernetes/k8s_check.py prometheusrule-write \\
#       deploy/prometheus/spoa-guard-alerts.yml deploy/kubernetes/monitoring/prometheusrule.yaml
# deploy/kubernetes/check.sh fails when spec.groups here differ from that file's groups.
# What each alert means and what to do: deploy/README.md.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: spoa-guard
  namespace: haproxy-controller
  labels:
    app.kubernetes.io/name: spoa-guard
    # Your Prometheus resource picks rules by its ruleSelector (kube-prometheus-stack:
    # the label release: <its Helm release>): add that label in your overlay.
spec:
"""


def prometheusrule_text(alerts: str) -> str:
    """The PrometheusRule: the alerts file from its `groups:` line on, indented under spec
    (comments kept: the rules' explanations stay next to them)."""
    lines = alerts.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if re.match(r"^groups:\s*$", line))
    except StopIteration:
        raise Failed("the alerts file has no top-level 'groups:' line") from None
    body = ["  " + line if line.strip() else "" for line in lines[start:]]
    return PROMETHEUSRULE_HEADER + "\n".join(body).rstrip("\n") + "\n"


def cmd_prometheusrule_write(alerts, out):
    Path(out).write_text(prometheusrule_text(Path(alerts).read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {out}")


def cmd_prometheusrule_source(alerts, path):
    want = prometheusrule_text(Path(alerts).read_text(encoding="utf-8"))
    have = Path(path).read_text(encoding="utf-8")
    ok = want == have
    say(ok, f"{path} is generated from {alerts} (byte for byte)")
    if not ok:
        sys.stdout.writelines(
            difflib.unified_diff(have.splitlines(True), want.splitlines(True), path, "regenerated", n=1)
        )
        raise Failed(
            f"{path} is out of date: python3 deploy/kubernetes/k8s_check.py prometheusrule-write {alerts} {path}"
        )


# ---------------------------------------------------------------- two renders

def normalized(docs):
    """Docs keyed by identity, generated ConfigMap/Secret names reduced to their stem
    (kustomize 2 and 5 hash the same content differently)."""
    names = {}
    for d in docs:
        if d.get("kind") in ("ConfigMap", "Secret"):
            name = d["metadata"]["name"]
            m = GENERATED_NAME.match(name)
            if m:
                names[name] = m.group("stem") + "-<hash>"

    def walk(x):
        if isinstance(x, dict):
            # kustomize 2 writes empty labels/annotations maps on replaced generated
            # objects; the API server drops them, and so does the comparison.
            return {k: walk(v) for k, v in x.items() if not (k in ("labels", "annotations") and v == {})}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, str):
            return names.get(x, x)
        return x

    out = {}
    for d in docs:
        d = walk(d)
        key = (d.get("apiVersion"), ident(d))
        if key in out:
            raise Failed(f"{ident(d)} appears twice")
        out[key] = d
    return out, names


def cmd_same_render(name, a, b):
    import yaml

    da, ha = normalized(load(a))
    db, hb = normalized(load(b))
    problems = []
    for key in sorted(set(da) | set(db), key=str):
        if key not in db:
            problems.append(f"only in {a}: {key[1]}")
        elif key not in da:
            problems.append(f"only in {b}: {key[1]}")
        elif da[key] != db[key]:
            problems.append(f"differs: {key[1]}")
            ya = yaml.safe_dump(da[key], sort_keys=True).splitlines(True)
            yb = yaml.safe_dump(db[key], sort_keys=True).splitlines(True)
            sys.stdout.writelines(difflib.unified_diff(ya, yb, a, b, n=2))
    say(not problems, f"{name}: {len(da)} objects, the same from both kustomize versions"
        + (f" (generated names differ only in their hash: {sorted(ha)} / {sorted(hb)})" if ha != hb else ""))
    if problems:
        raise Failed("; ".join(problems))


# ---------------------------------------------------------------- schemas

def cmd_validate_core(render, *versions):
    import kubernetes_validate as kv

    docs = [d for d in load(render) if not str(d.get("apiVersion", "")).startswith(CR_GROUP)]
    failures = 0
    for version in versions:
        for d in docs:
            try:
                used = kv.validate(d, version, strict=True)
                say(True, f"{ident(d)} ({d['apiVersion']}) against Kubernetes {used}, strict")
            except kv.SchemaNotFoundError:
                failures += 1
                say(False, f"{ident(d)}: no schema for {d.get('apiVersion')} {d.get('kind')} in Kubernetes {version}")
            except kv.ValidationError as e:
                failures += 1
                where = "/".join(str(p) for p in e.path)
                say(False, f"{ident(d)} against Kubernetes {version}: {where}: {e.message}")
    if failures:
        raise Failed(f"{failures} schema failure(s) in {render}")


def strict_walk(model, data, where, problems):
    """Every key of data is a field of the pydantic model (cloudcoil's models accept and
    drop unknown keys, as the API server would prune them: a misspelt field would be lost
    silently). Recurses through nested models, lists and dicts."""
    import pydantic

    if not isinstance(data, dict):
        return
    fields = {(f.alias or n): f for n, f in model.model_fields.items()}
    for key, value in data.items():
        if key not in fields:
            problems.append(f"{where}.{key}: unknown field (known: {', '.join(sorted(fields))})")
            continue
        walk_type(fields[key].annotation, value, f"{where}.{key}", problems, pydantic)


def walk_type(tp, value, where, problems, pydantic):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return walk_type(args[0], value, where, problems, pydantic)
    if origin is typing.Union:
        models = [a for a in args if isinstance(a, type) and issubclass(a, pydantic.BaseModel)]
        if isinstance(value, dict) and len(models) == 1:
            return strict_walk(models[0], value, where, problems)
        for a in args:
            if typing.get_origin(a) in (list, dict):
                return walk_type(a, value, where, problems, pydantic)
        return None
    if origin is list and isinstance(value, list):
        for i, v in enumerate(value):
            walk_type(args[0], v, f"{where}[{i}]", problems, pydantic)
    elif origin is dict and isinstance(value, dict):
        for k, v in value.items():
            walk_type(args[1], v, f"{where}[{k}]", problems, pydantic)
    elif isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        strict_walk(tp, value, where, problems)
    return None


def cmd_validate_crs(render, alerts):
    import yaml
    from cloudcoil.models.prometheus_operator import v1 as po

    docs = load(render)
    crs = [d for d in docs if str(d.get("apiVersion", "")).startswith(CR_GROUP)]
    if not crs:
        raise Failed(f"{render} has no monitoring.coreos.com resources")
    models = {"ServiceMonitor": po.ServiceMonitor, "PrometheusRule": po.PrometheusRule}
    failures = []
    for d in crs:
        model = models.get(d.get("kind"))
        if d.get("apiVersion") != "monitoring.coreos.com/v1" or model is None:
            failures.append(f"{ident(d)}: {d.get('apiVersion')} {d.get('kind')} is not checked here")
            continue
        problems = []
        try:
            model.model_validate(d)
        except Exception as e:  # pydantic.ValidationError: types, required fields, enums
            problems.append(str(e).replace("\n", " | "))
        strict_walk(model, d, d["kind"], problems)
        if not d.get("metadata", {}).get("name") or not d["metadata"].get("namespace"):
            problems.append("metadata.name and metadata.namespace are required")
        say(not problems, f"{ident(d)}: prometheus-operator v1 model (cloudcoil), unknown fields refused")
        failures += [f"{ident(d)}: {p}" for p in problems]

    # The ServiceMonitor finds a Service of the render, by labels, with its port, and the
    # job label the alerts expect.
    services = [d for d in docs if d.get("kind") == "Service"]
    for sm in (d for d in crs if d.get("kind") == "ServiceMonitor"):
        want = sm["spec"].get("selector", {}).get("matchLabels", {})
        ns = sm["metadata"].get("namespace")
        hits = [s for s in services if s["metadata"].get("namespace") == ns
                and all(s["metadata"].get("labels", {}).get(k) == v for k, v in want.items())]
        ports = {p.get("name") for s in hits for p in s["spec"].get("ports", [])}
        jobs = {s["metadata"].get("labels", {}).get(sm["spec"].get("jobLabel", ""), s["metadata"]["name"]) for s in hits}
        ok = (len(hits) == 1 and all(e.get("port") in ports for e in sm["spec"]["endpoints"])
              and jobs == {"spoa-guard"})
        say(ok, f"{ident(sm)} selects one Service ({[ident(s) for s in hits]}), its port, job=\"spoa-guard\"")
        if not ok:
            failures.append(f"{ident(sm)}: selects {len(hits)} Service(s), ports {sorted(ports)}, job {sorted(jobs)}")

    with open(alerts, encoding="utf-8") as f:
        want_groups = yaml.safe_load(f)["groups"]
    rules = [d for d in crs if d.get("kind") == "PrometheusRule"]
    for pr in rules:
        ok = pr["spec"].get("groups") == want_groups
        n = sum(len(g["rules"]) for g in want_groups)
        say(ok, f"{ident(pr)}: spec.groups == the groups of {alerts} ({len(want_groups)} groups, {n} rules)")
        if not ok:
            failures.append(f"{ident(pr)}: spec.groups differ from {alerts}; regenerate monitoring/prometheusrule.yaml")
    if len(rules) != 1:
        failures.append(f"{len(rules)} PrometheusRule objects in {render}, expected 1")
    if failures:
        raise Failed("; ".join(failures))


# ---------------------------------------------------------------- pod files

def deployment(docs):
    deps = [d for d in docs if d.get("kind") == "Deployment"
            and any(c.get("name") == AGENT_CONTAINER for c in d["spec"]["template"]["spec"]["containers"])]
    if len(deps) != 1:
        raise Failed(f"expected one Deployment with a '{AGENT_CONTAINER}' container, found {len(deps)}")
    return deps[0]


def container(dep, name=None, arg_prefix=None):
    for c in dep["spec"]["template"]["spec"]["containers"]:
        if c.get("name") == name or (arg_prefix and any(a.startswith(arg_prefix) for a in c.get("args", []))):
            return c
    raise Failed(f"{ident(dep)}: no container {name or arg_prefix}")


def materialize(docs, dep, cont, root: Path):
    """Lays the container's volumes out under root as the kubelet would mount them:
    ConfigMaps from the render (whole directories, or one key with subPath), Secrets as
    placeholders for the keys their volume's items name (the Secret is not in the
    repository), emptyDirs as empty directories. Returns {mountPath: what}."""
    ns = dep["metadata"].get("namespace")
    configmaps = {d["metadata"]["name"]: d for d in docs
                  if d.get("kind") == "ConfigMap" and d["metadata"].get("namespace") == ns}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"].get("volumes", [])}
    laid = {}
    for m in cont.get("volumeMounts", []):
        vol = volumes.get(m["name"])
        if vol is None:
            raise Failed(f"{cont['name']}: volumeMount {m['name']} has no volume")
        target = root / m["mountPath"].lstrip("/")
        if "configMap" in vol:
            cm = configmaps.get(vol["configMap"]["name"])
            if cm is None:
                raise Failed(f"volume {m['name']}: ConfigMap {vol['configMap']['name']} is not in the render")
            files = {i["path"]: cm["data"][i["key"]] for i in vol["configMap"].get("items", [])} or dict(cm.get("data", {}))
            what = f"ConfigMap {cm['metadata']['name']}"
        elif "secret" in vol:
            items = vol["secret"].get("items")
            if not items:
                raise Failed(f"volume {m['name']}: a Secret volume needs items (its keys) to be checked here")
            files = {i["path"]: f"placeholder for Secret {vol['secret']['secretName']} key {i['key']}\n" for i in items}
            what = f"Secret {vol['secret']['secretName']} (placeholders)"
        elif "emptyDir" in vol:
            target.mkdir(parents=True, exist_ok=True)
            laid[m["mountPath"]] = "emptyDir"
            continue
        else:
            raise Failed(f"volume {m['name']}: kind not handled by this check")
        if "subPath" in m:
            if m["subPath"] not in files:
                raise Failed(f"{cont['name']}: subPath {m['subPath']} is not a key of {what}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(files[m["subPath"]], encoding="utf-8")
            laid[m["mountPath"]] = f"{what}, key {m['subPath']} (subPath)"
        else:
            for rel, text in files.items():
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                (target / rel).write_text(text, encoding="utf-8")
            laid[m["mountPath"]] = f"{what}: {', '.join(sorted(files))}"
    return laid


def cmd_agent_check(render, work, binary):
    docs = load(render)
    dep = deployment(docs)
    cont = container(dep, AGENT_CONTAINER)
    root = Path(work) / "agent-root"
    laid = materialize(docs, dep, cont, root)
    for mount, what in laid.items():
        print(f"       {mount}: {what}")
    args = cont.get("args", [])
    if "--config" not in args:
        raise Failed(f"container {AGENT_CONTAINER}: no --config in its args {args}")
    config = args[args.index("--config") + 1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOA_GUARD__")}
    for e in cont.get("env", []):
        if "value" not in e:
            raise Failed(f"env {e['name']}: only literal values can be checked here")
        env[e["name"]] = e["value"]
        print(f"       env {e['name']}={e['value']}")
    cmd = [binary, "check", "--config", str(root / config.lstrip("/"))]
    print("       $ " + " ".join(shlex.quote(c) for c in cmd))
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in (p.stdout + p.stderr).splitlines():
        print("       | " + line)
    say(p.returncode == 0, f"spoa-guard check accepts {config} with the files as mounted (exit {p.returncode})")
    if p.returncode != 0:
        raise Failed("spoa-guard check refused the configuration")
    wiring(docs, dep, cont, root, config, env)


def wiring(docs, dep, cont, root, config, env):
    """What `spoa-guard check` cannot know: the pod around the agent. The container's
    root file system is read-only, so every file the agent writes must be on an emptyDir;
    HAProxy must reach its SPOP socket; the probes must hit its metrics listener; the
    files [fleet] and [admin] read must be mounted."""
    import tomllib

    settings = tomllib.loads((root / config.lstrip("/")).read_text(encoding="utf-8"))

    def value(section, key):
        name = f"SPOA_GUARD__{section.upper()}__{key.upper()}"
        return env.get(name, settings.get(section, {}).get(key))

    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"].get("volumes", [])}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in cont.get("volumeMounts", [])}
    problems = []

    def on_empty_dir(path, what):
        parent = str(Path(path).parent)
        vol = mounts.get(parent)
        ok = vol is not None and "emptyDir" in vol
        say(ok, f"{what} {path}: its directory is a writable emptyDir mount"
            + (f" ({vol['name']})" if ok else ""))
        if not ok:
            problems.append(f"{what} {path} is not in an emptyDir mounted at {parent}")
        return vol

    spop = value("server", "listen") or "127.0.0.1:12345"
    if spop.startswith("unix:"):
        spop_path = spop[len("unix:"):]
        vol = on_empty_dir(spop_path, "[server] listen")
        ctl = container(dep, arg_prefix="--configmap=")
        shared = vol is not None and any(
            m["name"] == vol["name"] and m["mountPath"] == str(Path(spop_path).parent)
            for m in ctl.get("volumeMounts", []))
        say(shared, f"the controller container mounts the same volume at {Path(spop_path).parent}")
        if not shared:
            problems.append("the SPOP socket's volume is not mounted at the same path in the controller container")
        want = f"unix@{spop_path}"
    else:
        want = spop
    aux = [d for d in docs if d.get("kind") == "ConfigMap" and "haproxy-aux.cfg" in d.get("data", {})]
    servers = [line.split()[2] for d in aux for line in directives(d["data"]["haproxy-aux.cfg"])
               if line.startswith("server ")]
    ok = servers and all(s == want for s in servers)
    say(bool(ok), f"haproxy-aux.cfg's server line(s) {servers} reach the agent's listener {want}")
    if not ok:
        problems.append(f"haproxy-aux.cfg servers {servers} != the agent's {want}")

    admin = value("admin", "listen")
    if admin and admin.startswith("unix:"):
        on_empty_dir(admin[len("unix:"):], "[admin] listen")
    state = value("bans", "state_file")
    if state:
        on_empty_dir(state, "[bans] state_file")

    metrics = value("metrics", "listen") or ""
    port = int(metrics.rsplit(":", 1)[1]) if ":" in metrics else None
    named = {p.get("name"): p["containerPort"] for p in cont.get("ports", [])}
    for probe in ("readinessProbe", "livenessProbe"):
        get = cont.get(probe, {}).get("httpGet", {})
        target = named.get(get.get("port"), get.get("port"))
        want_path = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}[probe]
        ok = target == port and get.get("path") == want_path and not metrics.startswith("127.")
        say(ok, f"{probe}: GET {get.get('path')} on port {target}, the agent's [metrics] listen {metrics}")
        if not ok:
            problems.append(f"{probe} does not reach {want_path} on [metrics] listen {metrics}")

    base = Path(config).parent
    for section, key in (("fleet", "password_file"), ("fleet", "secret_file"), ("admin", "token_file")):
        path = value(section, key)
        if path:
            full = Path(path) if Path(path).is_absolute() else base / path
            ok = (root / os.path.normpath(str(full)).lstrip("/")).is_file()
            say(ok, f"[{section}] {key} {path}: mounted in the container ({os.path.normpath(str(full))})")
            if not ok:
                problems.append(f"[{section}] {key} {path} is not mounted")
    if problems:
        raise Failed("; ".join(problems))


def cmd_toml_drift(base, variant):
    """The fleet overlay's spoa-guard.toml is the base's plus [fleet] and scope = "fleet"."""
    import tomllib

    a = tomllib.loads(Path(base).read_text(encoding="utf-8"))
    b = tomllib.loads(Path(variant).read_text(encoding="utf-8"))
    b.pop("fleet", None)
    for limit in b.get("limit", []):
        if limit.get("scope") == "fleet":
            del limit["scope"]
    ok = a == b
    say(ok, f"{variant} is {base} plus [fleet] and scope = \"fleet\", nothing else")
    if not ok:
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                print(f"         [{key}]: base {a.get(key)!r} / variant {b.get(key)!r}")
        raise Failed(f"{variant} differs from {base} beyond [fleet]")


# ---------------------------------------------------------------- HAProxy side

def directives(text):
    """Non-comment, non-empty lines, whitespace collapsed."""
    out = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        line = " ".join(line.split())
        if line:
            out.append(line)
    return out


def section(lines, header):
    """The directives of the section whose header line starts with `header`."""
    out, inside = None, False
    heads = ("global", "defaults", "frontend", "backend", "listen", "peers", "resolvers", "userlist", "[")
    for line in lines:
        if line.startswith(heads) or line.startswith("spoe-"):
            if inside:
                break
            if line == header or line.startswith(header + " "):
                inside, out = True, []
                continue
        if inside:
            out.append(line)
    if out is None:
        raise Failed(f"no section '{header}'")
    return out


def haproxy_pieces(docs):
    dep = deployment(docs)
    ctl = container(dep, arg_prefix="--configmap=")
    ref = next(a for a in ctl["args"] if a.startswith("--configmap="))[len("--configmap="):]
    ns, name = ref.split("/", 1)
    cms = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == name
           and d["metadata"].get("namespace") == ns]
    if len(cms) != 1:
        raise Failed(f"the controller's ConfigMap {ref} is not in the render")
    return dep, ctl, cms[0].get("data", {})


def cmd_drift(render, repo):
    """The HAProxy side in the cluster does what haproxy/haproxy.cfg and
    haproxy/spoe-guard.conf at the top of the repository do."""
    docs = load(render)
    dep, ctl, data = haproxy_pieces(docs)
    root = Path(repo)
    top_cfg = directives((root / "haproxy/haproxy.cfg").read_text(encoding="utf-8"))
    top_spoe = directives((root / "haproxy/spoe-guard.conf").read_text(encoding="utf-8"))

    with tempfile.TemporaryDirectory() as tmp:
        laid_root = Path(tmp)
        materialize(docs, dep, ctl, laid_root)
        aux = directives((laid_root / "etc/haproxy/haproxy-aux.cfg").read_text(encoding="utf-8"))
        snippet = directives(data.get("frontend-config-snippet", ""))
        m = re.match(r"filter spoe engine (\S+) config (\S+)$", snippet[0]) if snippet else None
        if not m:
            raise Failed("frontend-config-snippet does not start with 'filter spoe engine NAME config FILE'")
        spoe_path = laid_root / m.group(2).lstrip("/")
        if not spoe_path.is_file():
            raise Failed(f"the snippet's SPOE file {m.group(2)} is not mounted in the controller container")
        spoe = directives(spoe_path.read_text(encoding="utf-8"))

    failures = []

    def compare(what, ours, theirs):
        ok = ours == theirs
        say(ok, what)
        if not ok:
            sys.stdout.writelines(
                "         " + line.rstrip("\n") + "\n"
                for line in difflib.unified_diff(theirs, ours, "top-level", "deploy/kubernetes", n=1)
            )
            print()
            failures.append(what)

    compare("spoe-guard.conf: the same directives as haproxy/spoe-guard.conf", spoe, top_spoe)

    top_front = [d for d in section(top_cfg, "frontend www")
                 if d.startswith(("filter spoe", "http-request"))]
    top_front = [re.sub(r" config \S+$", " config spoe-guard.conf", d) for d in top_front]
    ours_front = [re.sub(r" config \S+$", " config spoe-guard.conf", d) for d in snippet]
    compare("frontend-config-snippet: the filter and http-request lines of haproxy/haproxy.cfg (frontend www)",
            ours_front, top_front)

    def backend(lines):
        out = []
        for d in lines:
            if d.startswith("server "):
                parts = d.split()
                d = " ".join(parts[:2] + ["<address>"] + parts[3:])
            out.append(d)
        return out

    aux_headers = [d for d in aux if d.startswith("backend spoa-guard")]
    if len(aux_headers) != 1:
        failures.append("haproxy-aux.cfg: no 'backend spoa-guard'")
        say(False, "haproxy-aux.cfg has one backend spoa-guard")
    else:
        compare("haproxy-aux.cfg: backend spoa-guard as in haproxy/haproxy.cfg (server address aside)",
                backend(section(aux, aux_headers[0])), backend(section(top_cfg, "backend spoa-guard")))
    if failures:
        raise Failed("; ".join(failures))


CONTROLLER_LIKE = """\
# A haproxy.cfg shaped like the one haproxytech/kubernetes-ingress 3.2 generates (its
# fs/usr/local/etc/haproxy/haproxy.cfg template, pkg/haproxy/env/defaults.go, and
# client-native's section order: the controller's http-request rules, then the
# config snippet, then use_backend), with the controller ConfigMap's snippets in it.
# Written by deploy/kubernetes/k8s_check.py; checked with haproxy -c, never run.
global
  master-worker
  pidfile {work}/haproxy.pid
  stats socket {work}/haproxy-runtime-api.sock level admin expose-fd listeners
  stats timeout 36000
  default-path config
  hard-stop-after 30m
  localpeer local
  log 127.0.0.1:514 local0 notice
  ssl-default-bind-options no-sslv3 no-tls-tickets no-tlsv10
{global_snippet}
defaults haproxytech
  log global
  log-format '%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs "%HM %[var(txn.base)] %HV"'
  option dontlognull
  option http-keep-alive
  timeout http-request 5000
  timeout connect 5000
  timeout client 50000
  timeout queue 5000
  timeout server 50000
  timeout tunnel 3600000
  timeout http-keep-alive 60000

peers localinstance
  peer local 127.0.0.1:10000

{http_frontends}
frontend healthz from haproxytech
  mode http
  bind 127.0.0.1:11042 name v4
  monitor-uri /healthz
  option dontlog-normal

backend default_local-service_http from haproxytech
  mode http
  http-request return status 404
"""

# The controller's http and https frontends (the frontend snippet goes into both): one
# template, formatted for each.
CONTROLLER_FRONTEND = """\
frontend {name} from haproxytech
  mode http
  bind 127.0.0.1:{port} name v4
  http-request set-var(txn.base) base
  http-request set-var(txn.path_match) var(txn.base),map_beg(/dev/null)
  ###_config-snippet_### BEGIN
{frontend_snippet}
  ###_config-snippet_### END
  use_backend %[var(txn.path_match),field(1,.)]
  default_backend default_local-service_http
"""


def cmd_haproxy_check(render, work, *binaries):
    docs = load(render)
    dep, ctl, data = haproxy_pieces(docs)
    work = Path(work)
    root = work / "haproxy-root"
    laid = materialize(docs, dep, ctl, root)
    for mount, what in laid.items():
        print(f"       {mount}: {what}")
    aux = root / "etc/haproxy/haproxy-aux.cfg"
    if not aux.is_file():
        raise Failed("/etc/haproxy/haproxy-aux.cfg is not mounted in the controller container")

    def localize(text):
        # absolute paths of files mounted in the controller container -> their copies here
        def swap(m):
            p = root / m.group(0).lstrip("/")
            return str(p) if p.is_file() else m.group(0)

        return re.sub(r"(?<![\w@])/[\w./-]+", swap, text)

    def indent(text):
        return "\n".join("  " + line for line in localize(text).strip("\n").splitlines())

    cfg = work / "haproxy.cfg"
    cfg.write_text(CONTROLLER_LIKE.format(
        work=work,
        global_snippet=indent(data.get("global-config-snippet", "")),
        http_frontends="\n".join(
            CONTROLLER_FRONTEND.format(
                name=name, port=port,
                frontend_snippet=indent(data.get("frontend-config-snippet", "")))
            for name, port in (("http", 18080), ("https", 18443))),
    ), encoding="utf-8")
    failures = []
    for binary in binaries:
        version = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
        # -dW: zero-warning mode, a warning fails the check like an error
        cmd = [binary, "-dW", "-c", "-f", str(cfg), "-f", str(aux)]
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        output = (p.stdout + p.stderr).splitlines()
        for line in output:
            if "NOTICE" not in line:
                print("       | " + line)
        # 2.6 reports some problems as ALERT lines and still says "valid": any counts.
        flagged = [line for line in output if "[ALERT]" in line or "[WARNING]" in line]
        ok = p.returncode == 0 and not flagged
        say(ok, f"{version}: haproxy -dW -c accepts the snippets, spoe-guard.conf and haproxy-aux.cfg, no warning")
        if not ok:
            failures.append(f"{binary} -c: exit {p.returncode}, {len(flagged)} alert/warning line(s)")
    if failures:
        raise Failed("; ".join(failures))


COMMANDS = {
    "prometheusrule-write": cmd_prometheusrule_write,
    "prometheusrule-source": cmd_prometheusrule_source,
    "same-render": cmd_same_render,
    "validate-core": cmd_validate_core,
    "validate-crs": cmd_validate_crs,
    "drift": cmd_drift,
    "agent-check": cmd_agent_check,
    "haproxy-check": cmd_haproxy_check,
    "toml-drift": cmd_toml_drift,
}


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        COMMANDS[argv[1]](*argv[2:])
    except Failed as e:
        print(f"k8s_check {argv[1]}: FAILED: {e}", file=sys.stderr)
        return 1
    except TypeError as e:
        print(f"k8s_check {argv[1]}: usage: {e}\n{__doc__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
