#!/usr/bin/env python3
"""The fault suite: the attacks of issue 15 against a real agent, each bounded in time,
each with a pass/fail verdict and the number behind it. Run through
benches/scripts/faults.sh, which builds the binaries; this file takes their paths:

    faults.py AGENT LOADGEN FIXTURES [--only NAME[,NAME]] [--json]

FIXTURES is tests/fixtures (the captured HAProxy frames). Faults, in order:

  slowloris-metrics  SLOW sockets trickle a request head to the metrics listener, one byte a
                     second; /healthz and /metrics must answer every probe within 1 s
  slowloris-admin    the same against the admin listener (a unix socket); `spoa-guard bans`
                     must answer within 2 s
  silent-spop        CAP + 50 TCP sockets connect to the SPOP port and send nothing; a real
                     HAPROXY-HELLO must still get its AGENT-HELLO within 1 s, and the agent
                     must close the silent ones after its hello deadline
  trickle-spop       sockets that send a HELLO one byte a second are closed at the deadline
  never-reading      a peer that sends NOTIFYs and never reads the ACKs is disconnected
                     within write_timeout (+ slack), counted as write-timeout
  random-bytes       200 connections of random bytes: each is closed, the agent stays up,
                     and its protocol-error log lines are rate-limited (about 1 a second)
  reload-under-load  the load generator checks every ACK (--check-verdicts: sources from a
                     blocked range denied, all others allowed) while the block list is
                     rewritten and reloaded back to back, one rewrite in five broken; no
                     wrong verdict, no timeout, no lost request, broken reloads refused
  memory-after-reloads  RELOADS (50) reloads of a 1M-entry list under load, each
                     different in every entry: RSS 12 s after them at most twice the RSS
                     before

Exit status 0 when every fault passes, 1 otherwise. Needs only the standard library.
"""

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

CAP = 200  # the agent's max_connections
HELLO_TIMEOUT = 2  # [server] hello_timeout_secs
WRITE_TIMEOUT = 2  # [server] write_timeout_secs
SETTLE = 12  # seconds for freed memory to go back (jemalloc's decay: 10 s)
SLOW = 150  # slowloris sockets per HTTP listener (the listener holds 64)
BLOCKED = "203.0.113."  # the range every block list holds: its sources must be denied
ALLOWED = "198.51.100.0/24"  # never in a block list: its sources must be allowed


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(fixtures, name):
    """One captured frame (length prefix included) of HAProxy 3.2."""
    with open(os.path.join(fixtures, "captures", "haproxy-3.2", name)) as f:
        return bytes.fromhex(f.read().strip())


def write_list(path, seed, broken=False):
    """A 50,000-entry block list with the blocked range, never the allowed one."""
    rng = random.Random(seed)
    lines = [BLOCKED + "0/24"]
    while len(lines) < 50_000:
        a = rng.getrandbits(32)
        if a >> 24 in (0, 10, 127, 198):
            continue
        lines.append(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/{rng.randint(24, 32)}")
    if broken:
        lines.insert(rng.randrange(len(lines)), "300.1.2.3/33 this is not an address")
    with open(path + ".new", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".new", path)


class Agent:
    """The agent under test, with its config, log and metrics."""

    def __init__(self, binary, work):
        self.work = work
        self.port, self.metrics = free_port(), free_port()
        self.admin = os.path.join(work, "admin.sock")
        self.list = os.path.join(work, "block.txt")
        write_list(self.list, 1)
        self.config = os.path.join(work, "agent.toml")
        with open(self.config, "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1:{self.port}"
max_connections = {CAP}
hello_timeout_secs = {HELLO_TIMEOUT}
write_timeout_secs = {WRITE_TIMEOUT}
[metrics]
listen = "127.0.0.1:{self.metrics}"
[admin]
listen = "unix:{self.admin}"
[reload]
watch = false
poll_secs = 0
[lists]
block = ["{self.list}"]
""")
        self.log_path = os.path.join(work, "agent.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "serve", "--config", self.config],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self.get("/readyz", 1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the agent did not become ready within 30 s: " + self.log_text()[-500:])

    def get(self, path, timeout):
        """GET on the metrics listener: (status, body)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()

    def counter(self, name, **labels):
        """The sum of the series of metric `name` that carry `labels` (0 when none)."""
        want = [f'{k}="{v}"' for k, v in labels.items()]
        total = 0.0
        for line in self.get("/metrics", 5)[1].splitlines():
            series, _, value = line.rpartition(" ")
            metric, _, rest = series.partition("{")
            if metric == name and all(w in rest.rstrip("}").split(",") for w in want):
                total += float(value)
        return total

    def log_text(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def slowloris(connect, n, seconds, head):
    """n sockets that trickle `head` one byte a second for `seconds`, in a thread; returns
    (thread, list of sockets the listener closed)."""
    closed = []

    def run():
        socks = []
        for _ in range(n):
            try:
                socks.append(connect())
            except OSError:
                closed.append(None)
        end = time.time() + seconds
        i = 0
        while time.time() < end and socks:
            for s in list(socks):
                try:
                    s.send(head[i % len(head):i % len(head) + 1])
                except OSError:
                    closed.append(s)
                    socks.remove(s)
            i += 1
            time.sleep(1)
        for s in socks:
            s.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, closed


def probe_during(thread, probe, every=0.5):
    """Runs probe() every `every` s while thread lives: (failures, slowest seconds)."""
    failures, slowest = 0, 0.0
    time.sleep(1.5)  # the sockets are open and trickling
    while thread.is_alive():
        t0 = time.time()
        try:
            ok = probe()
        except OSError:
            ok = False
        took = time.time() - t0
        slowest = max(slowest, took)
        failures += not ok
        time.sleep(every)
    return failures, slowest


def fault_slowloris_metrics(agent, ctx):
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 64
    t, _ = slowloris(lambda: socket.create_connection(("127.0.0.1", agent.metrics)), SLOW, 8, head)

    def probe():
        return agent.get("/healthz", 1)[0] == 200 and agent.get("/metrics", 1)[0] == 200

    failures, slowest = probe_during(t, probe)
    t.join()
    dropped = agent.counter("spoa_guard_http_connections_dropped_total", listener="metrics")
    ok = failures == 0 and slowest < 1.0 and dropped > 0
    return ok, f"{SLOW} slow sockets: {failures} failed probes, slowest {slowest * 1000:.0f} ms, {dropped:.0f} dropped"


def fault_slowloris_admin(agent, ctx):
    def connect():
        s = socket.socket(socket.AF_UNIX)
        s.connect(agent.admin)
        return s

    head = b"GET /bans HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 64
    t, _ = slowloris(connect, SLOW, 8, head)

    def probe():
        r = subprocess.run([ctx["agent_bin"], "bans", "--config", agent.config],
                           capture_output=True, timeout=5)
        return r.returncode == 0

    failures, slowest = probe_during(t, probe)
    t.join()
    ok = failures == 0 and slowest < 2.0
    return ok, f"{SLOW} slow sockets: {failures} failed `spoa-guard bans`, slowest {slowest * 1000:.0f} ms"


def spop_hello(agent, ctx, timeout=1.0):
    """A real HAPROXY-HELLO; True when an AGENT-HELLO (frame type 101) comes back."""
    with socket.create_connection(("127.0.0.1", agent.port), timeout=timeout) as s:
        s.sendall(ctx["hello"])
        data = b""
        while len(data) < 5:
            chunk = s.recv(4096)
            if not chunk:
                return False
            data += chunk
        return data[4] == 101


def closed_by_peer(socks, within):
    """How many of socks the peer closes (EOF or reset) within `within` seconds."""
    closed = set()
    end = time.time() + within
    for s in socks:
        s.setblocking(False)
    while time.time() < end and len(closed) < len(socks):
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                if s.recv(4096) == b"":
                    closed.add(i)
            except BlockingIOError:
                pass
            except OSError:
                closed.add(i)
        time.sleep(0.05)
    return len(closed)


def fault_silent_spop(agent, ctx):
    socks = [socket.create_connection(("127.0.0.1", agent.port)) for _ in range(CAP + 50)]
    time.sleep(0.3)
    t0 = time.time()
    answered = spop_hello(agent, ctx)
    took = time.time() - t0
    closed = closed_by_peer(socks, HELLO_TIMEOUT + 2)
    for s in socks:
        s.close()
    ok = answered and took < 1.0 and closed == len(socks)
    return ok, (f"{len(socks)} silent sockets (cap {CAP}): HELLO answered {answered} in "
                f"{took * 1000:.0f} ms; {closed}/{len(socks)} closed by the agent")


def fault_trickle_spop(agent, ctx):
    socks = [socket.create_connection(("127.0.0.1", agent.port)) for _ in range(20)]
    hello = ctx["hello"]
    t0 = time.time()
    closed, i = set(), 0
    while time.time() - t0 < HELLO_TIMEOUT + 3 and len(closed) < len(socks):
        for j, s in enumerate(socks):
            if j not in closed:
                try:
                    s.send(hello[i:i + 1])
                except OSError:
                    closed.add(j)
        i += 1
        time.sleep(0.5)
    closed_count = len(closed) + closed_by_peer([s for j, s in enumerate(socks) if j not in closed], 1)
    took = time.time() - t0
    for s in socks:
        s.close()
    ok = closed_count == len(socks) and took < HELLO_TIMEOUT + 4
    return ok, f"20 sockets sending a HELLO at 2 bytes/s: {closed_count} closed after {took:.1f} s"


def drops(agent):
    """SPOP connections the agent closed, by reason, and protocol errors."""
    out = {r: agent.counter("spoa_guard_connections_dropped_total", reason=r)
           for r in ("hello-timeout", "idle", "write-timeout", "evicted")}
    out["protocol-error"] = agent.counter("spoa_guard_protocol_errors_total")
    return out


def fault_never_reading(agent, ctx):
    before = drops(agent)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", agent.port))
    s.sendall(ctx["hello"])
    time.sleep(0.2)
    s.setblocking(False)
    batch = ctx["notify"] * 64
    pending = memoryview(b"")  # what is left of the batch a short send cut
    t0 = time.time()
    sent, ended = 0, None
    while time.time() - t0 < WRITE_TIMEOUT + 8:
        if not pending:
            pending = memoryview(batch)
        try:
            n = s.send(pending)
            pending = pending[n:]
            sent += n
        except BlockingIOError:
            time.sleep(0.05)
        except OSError as e:
            ended = e
            break
    took = time.time() - t0
    s.close()
    time.sleep(0.2)
    after = drops(agent)
    delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    ok = ended is not None and delta.get("write-timeout", 0) >= 1 and WRITE_TIMEOUT <= took
    return ok, (f"sent {sent / 1e6:.1f} MB of NOTIFYs, never read: "
                f"{'disconnected' if ended else 'still open'} after {took:.1f} s; "
                f"closed by the agent: {delta or 'none'}")


def fault_random_bytes(agent, ctx):
    """Half the connections send random bytes from the start, half after a real HELLO (a
    broken peer past the handshake, whose errors are logged at WARN)."""
    rng = random.Random(7)
    time.sleep(1.1)  # a line logged by an earlier fault no longer holds the log back
    errors_before = agent.counter("spoa_guard_protocol_errors_total")
    log_before = agent.log_text().count("protocol error")
    t0 = time.time()
    closed = 0
    for i in range(200):
        time.sleep(0.0125)  # over 2.5 s: the log limit (one line a second) shows
        with socket.create_connection(("127.0.0.1", agent.port), timeout=3) as s:
            try:
                if i % 2:
                    s.sendall(ctx["hello"])
                s.sendall(rng.randbytes(4096))
                while s.recv(4096):
                    pass
                closed += 1
            except TimeoutError:
                pass  # still open after 3 s: not closed
            except OSError:
                closed += 1
    took = time.time() - t0
    time.sleep(0.2)
    errors = agent.counter("spoa_guard_protocol_errors_total") - errors_before
    lines = agent.log_text().count("protocol error") - log_before
    healthy = agent.get("/healthz", 1)[0] == 200 and spop_hello(agent, ctx)
    limit = int(took) + 2
    ok = closed == 200 and healthy and agent.alive() and 1 <= lines <= limit and errors >= 100
    return ok, (f"200 connections of random bytes (100 after a HELLO) in {took:.1f} s: {closed} "
                f"closed, {errors:.0f} protocol errors counted, agent healthy {healthy}, "
                f"{lines} protocol-error log lines (1 to {limit})")


def fault_reload_under_load(agent, ctx):
    work = agent.work
    allowed = os.path.join(work, "allowed.txt")
    deny = os.path.join(work, "deny.txt")
    with open(allowed, "w") as f:
        f.write(ALLOWED + "\n")
    with open(deny, "w") as f:
        f.write(BLOCKED + "0/24\n")
    seconds = ctx["reload_seconds"]
    gen = subprocess.Popen([ctx["loadgen"], "--agent", f"127.0.0.1:{agent.port}", "--connections", "4",
                            "--pipeline", "4", "--rate", "4000", "--duration", f"{seconds}s",
                            "--warmup", "0s", "--timeout", "1s", "--sources", allowed,
                            "--deny-sources", deny, "--deny-share", "0.3", "--check-verdicts",
                            "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reloads = failed = 0
    n = 0
    end = time.time() + seconds - 1
    while time.time() < end:
        n += 1
        broken = n % 5 == 0
        write_list(agent.list, n, broken=broken)
        r = subprocess.run([ctx["agent_bin"], "reload", "--config", agent.config],
                           capture_output=True, timeout=30)
        if r.returncode == 0:
            reloads += 1
        elif broken:
            failed += 1
        else:
            return False, f"reload {n} failed: {r.stderr.decode().strip()}"
    out, err = gen.communicate(timeout=seconds + 30)
    try:
        report = json.loads(out)
    except ValueError:
        return False, "the load generator failed: " + err.decode().strip()
    wrong, checked = report.get("wrong_verdicts"), report.get("checked")
    bad = report["timeouts"] + report["lost"] + report["unsent"]
    expected_failed = n // 5
    ok = gen.returncode == 0 and wrong == 0 and checked and bad == 0 and failed == expected_failed
    return ok, (f"{reloads} reloads + {failed} broken ones refused in {seconds} s at 4000 NOTIFY/s: "
                f"{checked} ACKs checked, {wrong} wrong, {bad} timed out/lost/unsent")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fault_memory_after_reloads(agent, ctx):
    """RELOADS reloads of a 1M-entry list under 4,000 NOTIFY/s, each list different
    in every entry: settled RSS after them within 2x of the settled RSS before (jemalloc's
    purge: 10 s)."""
    rng = random.Random(11)
    lists = []
    for k in range(2):
        path = os.path.join(agent.work, f"big-{k}.txt")
        with open(path, "w") as f:
            for _ in range(1_000_000):
                a = rng.getrandbits(32)
                if a >> 24 not in (0, 10, 127, 198, 203):
                    f.write(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/{rng.randint(24, 32)}\n")
        lists.append(path)

    def reload(path):
        with open(path) as src, open(agent.list + ".new", "w") as dst:
            dst.write(BLOCKED + "0/24\n" + src.read())
        os.replace(agent.list + ".new", agent.list)
        r = subprocess.run([ctx["agent_bin"], "reload", "--config", agent.config],
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("reload failed: " + r.stderr.decode().strip())

    reload(lists[0])
    time.sleep(SETTLE)
    before = rss_mib(agent.proc.pid)
    n = ctx["reloads"]
    # Under traffic, as in production: the serving threads allocate too.
    gen = subprocess.Popen([ctx["loadgen"], "--agent", f"127.0.0.1:{agent.port}", "--rate", "4000",
                            "--duration", "600s", "--warmup", "0s"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for i in range(n):
            reload(lists[(i + 1) % 2])
    finally:
        gen.terminate()
        gen.wait()
    peak = rss_mib(agent.proc.pid)
    time.sleep(SETTLE)
    after = rss_mib(agent.proc.pid)
    ok = after <= 2 * before
    return ok, (f"{n} reloads of a 1M-entry list: RSS {before:.0f} MiB before, {peak:.0f} "
                f"right after, {after:.0f} {SETTLE} s later ({after / before:.2f}x, at most 2x)")


FAULTS = [
    ("slowloris-metrics", fault_slowloris_metrics),
    ("slowloris-admin", fault_slowloris_admin),
    ("silent-spop", fault_silent_spop),
    ("trickle-spop", fault_trickle_spop),
    ("never-reading", fault_never_reading),
    ("random-bytes", fault_random_bytes),
    ("reload-under-load", fault_reload_under_load),
    ("memory-after-reloads", fault_memory_after_reloads),
]


def main():
    args = sys.argv[1:]
    as_json = "--json" in args
    args = [a for a in args if a != "--json"]
    only = None
    if "--only" in args:
        i = args.index("--only")
        only = set(args[i + 1].split(","))
        del args[i:i + 2]
    agent_bin, loadgen, fixtures = args
    ctx = {"agent_bin": agent_bin, "loadgen": loadgen,
           "hello": frame(fixtures, "03-haproxy-hello.hex"),
           "notify": frame(fixtures, "05-notify-r1-get-root.hex"),
           "reload_seconds": int(os.environ.get("RELOAD_SECONDS", "20")),
           "reloads": int(os.environ.get("RELOADS", "50"))}
    unknown = (only or set()) - {name for name, _ in FAULTS}
    if unknown:
        sys.exit(f"unknown fault(s): {', '.join(sorted(unknown))}")
    results = []
    with tempfile.TemporaryDirectory() as work:
        agent = Agent(agent_bin, work)
        try:
            for name, fault in FAULTS:
                if only and name not in only:
                    continue
                t0 = time.time()
                try:
                    ok, detail = fault(agent, ctx)
                except Exception as e:  # a fault that cannot even run is a failure
                    ok, detail = False, f"{type(e).__name__}: {e}"
                if not agent.alive():
                    ok, detail = False, detail + "; the agent died: " + agent.log_text()[-300:]
                results.append({"fault": name, "pass": ok, "detail": detail,
                                "seconds": round(time.time() - t0, 1)})
                if not as_json:
                    print(f"{'PASS' if ok else 'FAIL'}  {name:<18} {detail}", flush=True)
                if not agent.alive():
                    break
        finally:
            agent.stop()
    passed = sum(r["pass"] for r in results)
    if as_json:
        print(json.dumps(results))
    else:
        print(f"\n{passed} of {len(results)} faults passed")
    sys.exit(0 if passed == len(results) else 1)


if __name__ == "__main__":
    main()
