"""Fan-out benchmark: pycable against a bare WebSocket broadcast server on the same stack.

    .venv/bin/python bench/fanout.py              # full run (N = 1000 and 5000, 2 rounds, ~5 min)
    .venv/bin/python bench/fanout.py --quick      # smoke run (N = 200, a few seconds)
    .venv/bin/python bench/fanout.py --n 1000 --servers bare,pycable

Servers: ``bare`` (bench/bare_server.py), ``pycable`` (broker off), ``pycable-memory``
(``--broker memory``), and with ``--baseline DIR`` the same two run from another checkout
(``pycable-base``, ``pycable-memory-base``: ``--servers bare,pycable-base,pycable``), and
``pycable-sse``: pycable with its clients on Server-Sent Events (``--servers pycable,pycable-sse``), each pinned to CPU 0; one bench/loadgen (C, epoll) per server and this
driver pinned to CPU 1. For every round and N, all servers are started and get N subscribers
(RSS per idle subscribed connection: VmRSS after a warm-up batch of connections and after all
N are subscribed and idle, divided by the connections in between), then their fan time is
measured (broadcasts one at a time, each after the previous one reached every client and its
HTTP reply came back: trigger -> last client has it, p50/p99). The throughput phase (K
broadcasts with at most `window` not yet fully delivered; delivered messages/s from the first
trigger to the last receive) alternates between the servers in chunks, the servers not being
measured paused with SIGSTOP, so that a slow stretch of the shared machine hits all of them
alike; pycable's throughput is reported as the median ratio of its chunks to the adjacent
chunks of the bare server. The CPU time of the server (/proc/<pid>/stat) and of the loadgen
(getrusage), the busy/softirq/steal shares of CPU 0 and CPU 1 (/proc/stat), and the gap
between the kernel's arrival time of each broadcast's last copy and the loadgen's read show
which side saturates. ``--sequential`` measures the servers one after the other instead.
A JSON file with everything goes to bench/results/ (gitignored), with the servers' logs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
LOADGEN_SRC = BENCH / "loadgen.c"
LOADGEN = BENCH / "loadgen"
PYTHON = ROOT / ".venv" / "bin" / "python"
if not PYTHON.exists():
    PYTHON = Path(sys.executable)

IDENTIFIER = '{"channel":"$pubsub","stream_name":"bench"}'
SUBSCRIBE = json.dumps({"command": "subscribe", "identifier": IDENTIFIER}, separators=(",", ":"))
FRAME_TARGET = 200  # bytes on the wire for one broadcast frame (pycable, broker off)

SERVERS: dict[str, list[str]] = {
    "bare": [str(PYTHON), str(BENCH / "bare_server.py")],
    "pycable": [str(PYTHON), "-m", "pycable", "--public"],
    "pycable-memory": [str(PYTHON), "-m", "pycable", "--public", "--broker", "memory"],
    # The same server, its clients on Server-Sent Events (GET /events?stream=bench).
    "pycable-sse": [str(PYTHON), "-m", "pycable", "--public", "--sse"],
}
#: Loadgen options per server (the others speak WebSocket at /cable).
LOADGEN_EXTRA: dict[str, list[str]] = {"pycable-sse": ["--sse", "--path", "/events?stream=bench"]}
SERVER_CPU = "0"
CLIENT_CPU = "1"
CONTENDED = 0.9  # a saturated server below this share of CPU 0 shared it with another process
NOISY_STEAL = 0.05  # steal share of CPU 0 or 1 in the throughput phase above which a run is flagged
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# ---------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout} s")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_ticks() -> dict[str, tuple[int, int, int, int]]:
    """(busy, softirq, total, steal) jiffies of cpu0 and cpu1 from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(("cpu0 ", "cpu1 ")):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                out[line.split()[0]] = (sum(v[:8]) - idle, v[6], sum(v[:8]), v[7])
    return out


def cpu_busy(a: dict[str, tuple[int, int, int, int]], b: dict[str, tuple[int, int, int, int]]) -> dict[str, float]:
    """Busy share of each CPU over an interval, and the softirq part of it separately: with
    IRQ time accounting the kernel charges softirq time (loopback TCP receive and ACK
    processing) to no process, so a process's own CPU time understates its CPU's load. Steal
    (time the hypervisor gave to other guests) is counted as busy and also shown alone."""
    res = {}
    for k in a:
        total = b[k][2] - a[k][2]
        res[k] = round((b[k][0] - a[k][0]) / total, 3) if total else 0.0
        res[k + "_softirq"] = round((b[k][1] - a[k][1]) / total, 3) if total else 0.0
        res[k + "_steal"] = round((b[k][3] - a[k][3]) / total, 3) if total else 0.0
    return res


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def build_loadgen() -> None:
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return
    log(f"building {LOADGEN.relative_to(ROOT)}")
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(LOADGEN), str(LOADGEN_SRC)], check=True)


def pad_for_target() -> int:
    """Pad length that makes pycable's broker-off frame FRAME_TARGET bytes on the wire."""
    msg = '{"seq":100,"pad":""}'
    payload = '{"identifier":' + json.dumps(IDENTIFIER) + ',"message":' + msg + "}"
    header = 2 if FRAME_TARGET - 2 < 126 else 4
    return max(0, FRAME_TARGET - header - len(payload))


class Loadgen:
    def __init__(
        self, port: int, bport: int, pad: int, hconns: int, max_seq: int, extra: list[str] | None = None
    ) -> None:
        cmd = [
            "taskset", "-c", CLIENT_CPU, str(LOADGEN),
            "--host", "127.0.0.1", "--port", str(port), "--path", "/cable",
            "--proto", "actioncable-v1-json", "--bport", str(bport), "--bpath", "/_broadcast",
            "--stream", "bench", "--pad", str(pad), "--subscribe", SUBSCRIBE,
            "--hconns", str(hconns), "--max-seq", str(max_seq), *(extra or []),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sys.stderr)
        self.buf = b""
        self.expect("HELLO", 10)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("loadgen did not answer")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"loadgen exited ({self.proc.wait()})")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def expect(self, word: str, timeout: float) -> list[str]:
        """Reads lines until one starting with `word`; returns all lines read (last = match)."""
        lines = []
        while True:
            line = self.readline(timeout)
            lines.append(line)
            if line.startswith(word):
                return lines
            if line.startswith("ERR"):
                raise RuntimeError(line)

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid)

    def close(self) -> None:
        try:
            self.send("QUIT")
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------- one measurement


class Target:
    """One server under test, with its own loadgen and everything measured on it.

    The server can be paused (SIGSTOP) while another one is measured: the interleaved mode keeps
    all servers connected and alternates short measurement chunks between them, so that a slow
    stretch of the shared machine hits every server alike.
    """

    def __init__(self, server: str, n: int, args: argparse.Namespace, pad: int, tag: str) -> None:
        self.server, self.n, self.args, self.pad = server, n, args, pad
        self.port, self.bport = free_port(), free_port()
        while self.bport == self.port:
            self.bport = free_port()
        self.cmd = ["taskset", "-c", SERVER_CPU, *SERVERS[server], "--host", "127.0.0.1",
                    "--port", str(self.port), "--http_broadcast_port", str(self.bport)]  # fmt: skip
        self.log_path = RESULTS / f"{tag}-{server}-{n}.log"
        self.res: dict[str, Any] = {
            "server": server, "n": n, "cmd": " ".join(self.cmd), "log": str(self.log_path.relative_to(ROOT))
        }  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.lg: Loadgen | None = None
        self.paused = False
        self.failed = False
        self.fan_ms: list[float] = []
        self.first_ms: list[float] = []
        self.kfan_ms: list[float] = []
        self.lag_ms: list[float] = []
        self.statuses: set[int] = set()
        self.fan_broadcasts = self.fan_incomplete = 0
        self.fan_server_cpu = self.fan_wall = 0.0
        self.fan_lg_cpu_ns = self.fan_lg_wall_ns = 0
        self.chunks: list[dict[str, Any]] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                self.cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_port(self.port, self.proc)
        wait_port(self.bport, self.proc)
        time.sleep(self.args.settle)
        self.res["rss_start_kb"] = rss_kb(self.pid)

    def connect(self) -> None:
        """Connect N subscribers (RSS before and after), then 5 warm-up broadcasts."""
        n, args, res = self.n, self.args, self.res
        max_seq = 2 * (args.fan + tput_for(n, args)) + 200
        self.lg = lg = Loadgen(
            self.port, self.bport, self.pad, args.hconns, max_seq=max_seq, extra=LOADGEN_EXTRA.get(self.server)
        )
        warm = max(10, min(100, n // 10))
        lg.send(f"CONNECT {warm}")
        ready = lg.expect("READY", 60)[-1].split()
        if int(ready[1]) != warm:
            raise RuntimeError(f"only {ready[1]} of {warm} warm-up clients subscribed")
        time.sleep(args.settle)
        res["rss_warm_kb"] = rss_kb(self.pid)
        lg.send(f"CONNECT {n}")
        ready = lg.expect("READY", 120)[-1].split()
        res["connect_s"] = float(ready[2]) / 1000
        res["connect_errors"] = int(ready[3])
        if int(ready[1]) != n:
            raise RuntimeError(f"only {ready[1]} of {n} clients subscribed")
        time.sleep(args.settle * 2)
        res["rss_idle_kb"] = rss_kb(self.pid)
        res["rss_per_conn_kb"] = round((res["rss_idle_kb"] - res["rss_warm_kb"]) / (n - warm), 2)
        res["rss_per_conn_kb_incl_startup"] = round((res["rss_idle_kb"] - res["rss_start_kb"]) / n, 2)
        lg.send("FAN 5 10000")  # warm-up, not recorded
        lg.expect("FANDONE", 120)

    def pause(self) -> None:
        if self.proc is not None and self.proc.poll() is None and not self.paused:
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False

    def fan(self, k: int) -> None:
        """k broadcasts one at a time (each after the previous reached every client)."""
        assert self.lg is not None
        c0, w0 = proc_cpu_s(self.pid), time.monotonic()
        self.lg.send(f"FAN {k} 10000")
        lines = self.lg.expect("FANDONE", 30 + k * 12)
        self.fan_wall += time.monotonic() - w0
        self.fan_server_cpu += proc_cpu_s(self.pid) - c0
        for line in lines[:-1]:
            if not line.startswith("SEQ"):
                continue
            _, _seq, trig, first, last, count, status, klast = line.split()
            self.statuses.add(int(status))
            if int(count) == self.n:
                self.fan_ms.append((int(last) - int(trig)) / 1e6)
                self.first_ms.append((int(first) - int(trig)) / 1e6)
                self.kfan_ms.append((int(klast) - int(trig)) / 1e6)
                self.lag_ms.append((int(last) - int(klast)) / 1e6)
        done = lines[-1].split()
        self.fan_broadcasts += k
        self.fan_incomplete += int(done[2])
        self.fan_lg_cpu_ns += int(done[3]) + int(done[4])
        self.fan_lg_wall_ns += int(done[5])

    def tput(self, k: int) -> dict[str, Any]:
        """One throughput chunk: k broadcasts, at most `window` not yet fully delivered."""
        assert self.lg is not None
        n, window = self.n, self.args.window
        c0, t0, w0 = proc_cpu_s(self.pid), cpu_ticks(), time.monotonic()
        self.lg.send(f"TPUT {k} {window} {int(60_000 + k * n / 20)}")
        line = self.lg.expect("TPUT", 120 + k * n / 20_000)[-1]
        t1 = cpu_ticks()
        f = line.split()
        chunk: dict[str, Any] = {
            "broadcasts": int(f[1]),
            "delivered": int(f[2]),
            "expected": int(f[3]),
            "span_s": (int(f[5]) - int(f[4])) / 1e9,
            "kernel_span_s": (int(f[12]) - int(f[4])) / 1e9,
            "wall_s": time.monotonic() - w0,
            "server_cpu_s": proc_cpu_s(self.pid) - c0,
            "loadgen_user_s": int(f[6]) / 1e9,
            "loadgen_sys_s": int(f[7]) / 1e9,
            "loadgen_wall_s": int(f[8]) / 1e9,
            "incomplete_broadcasts": int(f[9]),
            "reorders": int(f[10]),
            "http_errors": int(f[11]),
            "ticks": {cpu: [b - a for a, b in zip(t0[cpu], t1[cpu], strict=True)] for cpu in t0},
        }
        chunk["msgs_per_s"] = round(chunk["delivered"] / chunk["span_s"]) if chunk["span_s"] > 0 else 0
        chunk["server_cpu_frac"] = round(chunk["server_cpu_s"] / chunk["wall_s"], 3) if chunk["wall_s"] else 0.0
        self.chunks.append(chunk)
        return chunk

    def finish(self) -> dict[str, Any]:
        """Aggregate everything measured into self.res."""
        assert self.lg is not None
        res = self.res
        fan = self.fan_ms
        res["fan"] = {
            "broadcasts": self.fan_broadcasts,
            "incomplete": self.fan_incomplete,
            "http_status": sorted(self.statuses),
            "p50_ms": round(pct(fan, 50), 2),
            "p99_ms": round(pct(fan, 99), 2),
            "mean_ms": round(statistics.fmean(fan), 2) if fan else None,
            "max_ms": round(max(fan), 2) if fan else None,
            "first_p50_ms": round(pct(self.first_ms, 50), 3),
            # same, with the kernel's arrival time of the last copy instead of the loadgen's read
            "kernel_p50_ms": round(pct(self.kfan_ms, 50), 2),
            "kernel_p99_ms": round(pct(self.kfan_ms, 99), 2),
            "loadgen_lag_p50_ms": round(pct(self.lag_ms, 50), 3),
            "loadgen_lag_max_ms": round(max(self.lag_ms), 3) if self.lag_ms else None,
            "server_cpu_frac": round(self.fan_server_cpu / self.fan_wall, 3) if self.fan_wall else None,
            "loadgen_cpu_frac": round(self.fan_lg_cpu_ns / self.fan_lg_wall_ns, 3) if self.fan_lg_wall_ns else None,
        }
        cs = self.chunks
        tot = {key: sum(c[key] for c in cs) for key in (
            "broadcasts", "delivered", "expected", "span_s", "kernel_span_s", "wall_s", "server_cpu_s",
            "loadgen_user_s", "loadgen_sys_s", "loadgen_wall_s", "incomplete_broadcasts", "reorders",
            "http_errors")}  # fmt: skip
        ticks = {cpu: [sum(c["ticks"][cpu][i] for c in cs) for i in range(4)] for cpu in ("cpu0", "cpu1")}
        busy: dict[str, float] = {}
        for cpu, (b, soft, total, steal) in ticks.items():
            busy[cpu] = round(b / total, 3) if total else 0.0
            busy[cpu + "_softirq"] = round(soft / total, 3) if total else 0.0
            busy[cpu + "_steal"] = round(steal / total, 3) if total else 0.0
        delivered = tot["delivered"]
        lg_cpu = tot["loadgen_user_s"] + tot["loadgen_sys_s"]
        res["tput"] = {
            "broadcasts": tot["broadcasts"],
            "window": self.args.window,
            "chunks": len(cs),
            "delivered": delivered,
            "expected": tot["expected"],
            "incomplete_broadcasts": tot["incomplete_broadcasts"],
            "reorders": tot["reorders"],
            "http_errors": tot["http_errors"],
            "span_s": round(tot["span_s"], 3),
            # delivered messages over the summed spans (first trigger -> last receive) of the chunks
            "msgs_per_s": round(delivered / tot["span_s"]) if tot["span_s"] > 0 else 0,
            "kernel_msgs_per_s": round(delivered / tot["kernel_span_s"]) if tot["kernel_span_s"] > 0 else 0,
            "chunk_msgs_per_s": [c["msgs_per_s"] for c in cs],
            "chunk_server_cpu_frac": [c["server_cpu_frac"] for c in cs],
            "server_cpu_frac": round(tot["server_cpu_s"] / tot["wall_s"], 3) if tot["wall_s"] else 0.0,
            "loadgen_cpu_frac": round(lg_cpu / tot["loadgen_wall_s"], 3) if tot["loadgen_wall_s"] else 0.0,
            "loadgen_user_s": round(tot["loadgen_user_s"], 3),
            "loadgen_sys_s": round(tot["loadgen_sys_s"], 3),
            "server_cpu_us_per_msg": round(tot["server_cpu_s"] / delivered * 1e6, 2) if delivered else None,
            "loadgen_cpu_us_per_msg": round(lg_cpu / delivered * 1e6, 2) if delivered else None,
            "cpu_busy": busy,
        }
        # the hypervisor gave a noticeable share of a CPU to other guests: a noisy measurement
        res["noisy"] = max(busy["cpu0_steal"], busy["cpu1_steal"]) > NOISY_STEAL
        res["rss_after_kb"] = rss_kb(self.pid)
        self.lg.send("STAT")
        s = self.lg.expect("STAT", 10)[-1].split()
        res["loadgen_stat"] = dict(
            zip(
                ["ready", "msgs", "seq_msgs", "other_text", "pings", "closes", "dup", "reorders"],
                map(int, s[1:]),
                strict=True,
            )
        )
        res["ok"] = (
            not self.failed
            and res["fan"]["incomplete"] == 0
            and bool(fan)
            and res["tput"]["incomplete_broadcasts"] == 0
            and res["tput"]["http_errors"] == 0
            and res["loadgen_stat"]["closes"] == 0
        )
        return res

    def fail(self, exc: BaseException) -> None:
        self.failed = True
        self.res["ok"] = False
        self.res["error"] = f"{type(exc).__name__}: {exc}"
        log(f"  {self.server} N={self.n}: {self.res['error']} (server log: {self.log_path})")

    def close(self) -> None:
        if self.lg is not None:
            self.lg.close()
            self.lg = None
        if self.proc is not None:
            self.resume()  # a stopped process would not act on SIGTERM
            stop_server(self.proc)


def tput_for(n: int, args: argparse.Namespace) -> int:
    """Broadcasts in the throughput phase: --tput, or enough for ~400k deliveries (>= 200)."""
    return int(args.tput) if getattr(args, "tput", None) else max(200, 400_000 // n)


def run_one(server: str, n: int, args: argparse.Namespace, pad: int, tag: str) -> dict[str, Any]:
    """Measure one server alone (start, connect, fan, throughput, stop). Used by other benches."""
    t = Target(server, n, args, pad, tag)
    try:
        t.start()
        t.connect()
        t.fan(args.fan)
        t.tput(tput_for(n, args))
        t.finish()
    except Exception as exc:  # noqa: BLE001 - record the failure, the caller goes on
        t.fail(exc)
    finally:
        t.close()
    return t.res


def compare_with_memory(
    name: str, argv: Any, n: int, rounds: int, quick: bool, cleanup: Any = None
) -> dict[str, Any]:
    """Fan-out of ``pycable-<name>`` (``argv()`` gives its command line, fresh each run) as a
    ratio to ``pycable-memory``, alternated for *rounds* rounds with :func:`run_one`. Used by
    the broker benchmarks (``bench/redis_bench.py``, ``bench/nats_bench.py``); *cleanup* runs
    after each run of the named server."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    build_loadgen()
    os.sched_setaffinity(0, {int(CLIENT_CPU)})
    args = argparse.Namespace(
        fan=20 if quick else 100, tput=40 if quick else 200, window=8, hconns=1, settle=0.2 if quick else 0.5
    )
    pad = pad_for_target()
    tag = time.strftime("%Y%m%d-%H%M%S") + f"-{name}"
    server_name = f"pycable-{name}"
    runs = []
    for rnd in range(rounds):
        for server in ("pycable-memory", server_name):
            if server == server_name:
                SERVERS[server] = argv()
            print(f"fan-out round {rnd + 1}/{rounds} N={n} {server} ...", file=sys.stderr, flush=True)
            r = run_one(server, n, args, pad, tag)
            if server == server_name and cleanup is not None:
                cleanup()
            r["round"] = rnd
            runs.append(r)
            if r.get("ok"):
                print(
                    f"  {r['tput']['msgs_per_s']:.0f} msg/s, fan p50 {r['fan']['p50_ms']} ms, p99 {r['fan']['p99_ms']} ms",
                    file=sys.stderr,
                )
            else:
                print(f"  FAILED: {r.get('error')}", file=sys.stderr)

    def ok(rnd: int, server: str) -> dict[str, Any] | None:
        return next((r for r in runs if r["round"] == rnd and r["server"] == server and r.get("ok")), None)

    ratios = []
    for rnd in range(rounds):
        m, x = ok(rnd, "pycable-memory"), ok(rnd, server_name)
        if m and x:
            ratios.append(x["tput"]["msgs_per_s"] / m["tput"]["msgs_per_s"])

    def med(server: str, *path: str) -> float | None:
        vals = []
        for r in runs:
            if r["server"] == server and r.get("ok"):
                v: Any = r
                for key in path:
                    v = v[key]
                vals.append(v)
        return round(statistics.median(vals), 2) if vals else None

    out: dict[str, Any] = {"n": n, "rounds": rounds}
    for label, server in (("memory", "pycable-memory"), (name, server_name)):
        out[f"{label}_msgs_per_s"] = med(server, "tput", "msgs_per_s")
        out[f"{label}_fan_p50_ms"] = med(server, "fan", "p50_ms")
        out[f"{label}_fan_p99_ms"] = med(server, "fan", "p99_ms")
    out[f"{name}_vs_memory"] = round(statistics.median(ratios), 3) if ratios else None
    out[f"{name}_vs_memory_rounds"] = [round(x, 3) for x in ratios]
    out["runs"] = runs
    return out


def run_interleaved(servers: list[str], n: int, args: argparse.Namespace, pad: int, tag: str) -> list[dict[str, Any]]:
    """All servers started and connected (each paused with SIGSTOP while it is not measured).

    The fan-time phase runs for each server right after it connected, before it was ever
    paused: a pause lines up every connection's ping timer (they all fire on resume), and a
    burst of N pings inside a timed broadcast would distort the fan-time tail. The throughput
    phase then alternates between the servers in `args.chunks` chunks, in a rotating order,
    so that slow stretches of the shared machine hit every server alike (the pings' total
    cost per second does not change when they are lined up)."""
    targets = [Target(s, n, args, pad, tag) for s in servers]
    try:
        for t in targets:
            log(f"  {t.server}: start, connect {n}, fan time")
            try:
                t.start()
                t.connect()
                t.fan(args.fan)
            except Exception as exc:  # noqa: BLE001
                t.fail(exc)
            t.pause()
        chunks = max(1, args.chunks)
        tput_per = -(-tput_for(n, args) // chunks)
        log(f"  throughput: {chunks} x {tput_per} broadcasts per server, alternating")
        for c in range(chunks):
            live = [t for t in targets if not t.failed]
            if not live:
                break
            k = c % len(live)
            for t in live[k:] + live[:k]:
                try:
                    t.resume()
                    time.sleep(args.resume_settle)
                    t.tput(tput_per)
                except Exception as exc:  # noqa: BLE001
                    t.fail(exc)
                t.pause()
        for t in targets:
            if t.failed:
                continue
            t.resume()
            try:
                t.finish()
            except Exception as exc:  # noqa: BLE001
                t.fail(exc)
    finally:
        for t in targets:
            t.close()
    return [t.res for t in targets]


# ---------------------------------------------------------------------------- report


def summarize(runs: list[dict[str, Any]], servers: list[str], ns: list[int]) -> dict[str, Any]:
    """Per (server, N): medians over rounds, and ratios to the bare server of the same round."""
    out: dict[str, Any] = {}
    for n in ns:
        for server in servers:
            rs = [r for r in runs if r["server"] == server and r["n"] == n and r.get("ok")]
            if not rs:
                out[f"{server}/{n}"] = {"ok": False}
                continue
            entry: dict[str, Any] = {"ok": True, "rounds": len(rs)}

            def med(path: tuple[str, ...], rs: list[dict[str, Any]] = rs) -> float:
                vals = []
                for r in rs:
                    v: Any = r
                    for p in path:
                        v = v[p]
                    vals.append(v)
                return round(float(statistics.median(vals)), 3)

            entry["msgs_per_s"] = med(("tput", "msgs_per_s"))
            entry["fan_p50_ms"] = med(("fan", "p50_ms"))
            entry["fan_p99_ms"] = med(("fan", "p99_ms"))
            entry["rss_per_conn_kb"] = med(("rss_per_conn_kb",))
            entry["rss_idle_mb"] = round(med(("rss_idle_kb",)) / 1024, 1)
            entry["server_cpu_frac"] = med(("tput", "server_cpu_frac"))
            entry["loadgen_cpu_frac"] = med(("tput", "loadgen_cpu_frac"))
            entry["cpu0_busy"] = med(("tput", "cpu_busy", "cpu0"))
            entry["cpu1_busy"] = med(("tput", "cpu_busy", "cpu1"))
            entry["fan_lag_p50_ms"] = med(("fan", "loadgen_lag_p50_ms"))
            entry["cpu0_steal"] = med(("tput", "cpu_busy", "cpu0_steal"))
            entry["noisy_rounds"] = sum(1 for r in rs if r.get("noisy"))
            entry["server_us_per_msg"] = med(("tput", "server_cpu_us_per_msg"))
            entry["loadgen_us_per_msg"] = med(("tput", "loadgen_cpu_us_per_msg"))
            # ratios to the bare server (and to pycable broker off) measured in the same round
            for base in ("bare", "pycable"):
                if base == server or base not in servers:
                    continue
                ratios, chunk_ratios, fan_ratios, cpu_ratios, dropped = [], [], [], [], 0
                for r in rs:
                    b = next(
                        (x for x in runs if x["server"] == base and x["n"] == n and x.get("ok")
                         and x["round"] == r["round"]),
                        None,
                    )  # fmt: skip
                    if b:
                        ratios.append(r["tput"]["msgs_per_s"] / b["tput"]["msgs_per_s"])
                        # chunk i of this server against chunk i of the base: measured seconds apart
                        # pairs where either server got less than CONTENDED of its CPU (another
                        # process ran on CPU 0) are left out
                        for x, y, fx, fy in zip(
                            r["tput"]["chunk_msgs_per_s"],
                            b["tput"]["chunk_msgs_per_s"],
                            r["tput"]["chunk_server_cpu_frac"],
                            b["tput"]["chunk_server_cpu_frac"],
                            strict=False,
                        ):
                            if min(fx, fy) < CONTENDED:
                                dropped += 1
                            else:
                                chunk_ratios.append(x / y)
                        fan_ratios.append(r["fan"]["p50_ms"] / b["fan"]["p50_ms"])
                        cpu_ratios.append(b["tput"]["server_cpu_us_per_msg"] / r["tput"]["server_cpu_us_per_msg"])
                if ratios:
                    entry[f"tput_vs_{base}"] = round(statistics.median(chunk_ratios or ratios), 3)
                    entry[f"tput_vs_{base}_dropped_chunks"] = dropped
                    entry[f"tput_vs_{base}_chunks"] = [round(x, 3) for x in chunk_ratios]
                    entry[f"tput_vs_{base}_rounds"] = [round(x, 3) for x in ratios]
                    entry[f"fan_p50_vs_{base}"] = round(statistics.median(fan_ratios), 3)
                    entry[f"cpu_per_msg_vs_{base}"] = round(statistics.median(cpu_ratios), 3)
            out[f"{server}/{n}"] = entry
    return out


def targets(summary: dict[str, Any], ns: list[int]) -> list[str]:
    lines = []
    for n in ns:
        p = summary.get(f"pycable/{n}", {})
        m = summary.get(f"pycable-memory/{n}", {})
        if p.get("ok") and "tput_vs_bare" in p:
            v = p["tput_vs_bare"]
            lines.append(
                f"N={n}: pycable throughput / bare = {v:.2f} (target >= 0.70): {'PASS' if v >= 0.7 else 'MISS'}"
                f"  [per round {p['tput_vs_bare_rounds']}; server CPU per message bare/pycable"
                f" {p['cpu_per_msg_vs_bare']:.2f}; {p['tput_vs_bare_dropped_chunks']} contended chunk pairs left out]"
            )
        if p.get("ok"):
            v = p["rss_per_conn_kb"]
            lines.append(
                f"N={n}: pycable RSS per idle connection = {v:.1f} KB (target <= 16): {'PASS' if v <= 16 else 'MISS'}"
            )
        if m.get("ok") and "tput_vs_pycable" in m:
            v = m["tput_vs_pycable"]
            lines.append(
                f"N={n}: memory broker on / off = {v:.2f} (target >= 0.90): {'PASS' if v >= 0.9 else 'MISS'}"
                f"  [per round {m['tput_vs_pycable_rounds']}; CPU per message off/on {m['cpu_per_msg_vs_pycable']:.2f}]"
            )
        if m.get("ok"):
            v = m["rss_per_conn_kb"]
            lines.append(f"N={n}: pycable --broker memory RSS per idle connection = {v:.1f} KB (target <= 16): "
                         f"{'PASS' if v <= 16 else 'MISS'}")  # fmt: skip
    noisy = sum(e.get("noisy_rounds", 0) for e in summary.values())
    if noisy:
        lines.append(
            f"note: {noisy} measurement(s) saw > {NOISY_STEAL:.0%} CPU steal (see runs[].noisy); ratios are medians"
        )
    for key, e in summary.items():
        if e.get("ok") and e["loadgen_cpu_frac"] > 0.85:
            lines.append(f"WARNING {key}: the loadgen used {e['loadgen_cpu_frac']:.0%} of a CPU in the throughput "
                         "phase: it may be the bottleneck")  # fmt: skip
    return lines


def print_table(summary: dict[str, Any]) -> None:
    hdr = (f"{'server':<16}{'N':>6} {'msg/s':>8} {'vs bare':>8} {'fan p50':>8} {'p99 ms':>7} {'KB/conn':>8}"
           f" {'RSS MB':>7} {'cpu0':>5} {'cpu1':>5} {'srv CPU':>8} {'lg CPU':>7} {'srv us/msg':>10} {'lg us/msg':>9}"
           f" {'lag ms':>7}")  # fmt: skip
    print(hdr)
    print("-" * len(hdr))
    for key, e in summary.items():
        server, n = key.split("/")
        if not e.get("ok"):
            print(f"{server:<16}{n:>6}  FAILED")
            continue
        vs = f"{e['tput_vs_bare']:.2f}" if "tput_vs_bare" in e else "1.00" if server == "bare" else "-"
        print(
            f"{server:<16}{n:>6} {e['msgs_per_s']:>8.0f} {vs:>8} {e['fan_p50_ms']:>8.1f} {e['fan_p99_ms']:>7.1f}"
            f" {e['rss_per_conn_kb']:>8.1f} {e['rss_idle_mb']:>7.1f} {e['cpu0_busy']:>5.2f} {e['cpu1_busy']:>5.2f}"
            f" {e['server_cpu_frac']:>8.2f} {e['loadgen_cpu_frac']:>7.2f} {e['server_us_per_msg']:>10.2f}"
            f" {e['loadgen_us_per_msg']:>9.2f} {e['fan_lag_p50_ms']:>7.2f}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default=None, help="comma-separated client counts (default 1000,5000; quick: 200)")
    ap.add_argument("--servers", default="bare,pycable,pycable-memory", help=f"from {','.join(SERVERS)}")
    ap.add_argument("--rounds", type=int, default=None, help="rounds, fresh server processes each (default 2)")
    ap.add_argument("--chunks", type=int, default=None, help="alternations between servers per round (default 5)")
    ap.add_argument("--fan", type=int, default=None, help="timed one-at-a-time broadcasts per round (default 100)")
    ap.add_argument(
        "--tput", type=int, default=None, help="throughput broadcasts per round (default: max(200, 400000/N))"
    )
    ap.add_argument("--window", type=int, default=8, help="broadcasts outstanding in the throughput phase")
    ap.add_argument("--hconns", type=int, default=1, help="HTTP connections used to trigger broadcasts")
    ap.add_argument("--settle", type=float, default=0.5, help="seconds to let the server settle before RSS reads")
    ap.add_argument("--resume-settle", type=float, default=0.5, help="seconds after resuming a paused server")
    ap.add_argument(
        "--sequential", action="store_true", help="measure servers one after the other (no pausing/interleaving)"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: N=200, 1 round, 2 chunks, 20+40 broadcasts")
    ap.add_argument("--out", default=None, help="JSON output path (default bench/results/fanout-<time>.json)")
    ap.add_argument(
        "--baseline", default=None, metavar="DIR",
        help="a checkout of other code (e.g. `git worktree add --detach /tmp/base main`): adds the servers pycable-base and "
        "pycable-memory-base, run from DIR/src, to compare with in the same run",
    )
    args = ap.parse_args()
    if args.baseline:
        base_src = str(Path(args.baseline).resolve() / "src")
        for name in ("pycable", "pycable-memory"):
            SERVERS[f"{name}-base"] = ["env", f"PYTHONPATH={base_src}", *SERVERS[name]]
    if args.quick:
        args.n = args.n or "200"
        args.rounds = args.rounds or 1
        args.chunks = args.chunks or 2
        args.resume_settle = min(args.resume_settle, 0.2)
        args.fan = args.fan or 20
        args.tput = args.tput or 40
        args.settle = min(args.settle, 0.2)
    ns = [int(x) for x in (args.n or "1000,5000").split(",")]
    args.rounds = args.rounds or 2
    args.chunks = args.chunks or 5
    args.fan = args.fan or 100
    servers = [s for s in args.servers.split(",") if s]
    for s in servers:
        if s not in SERVERS:
            ap.error(f"unknown server {s!r}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    build_loadgen()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # servers inherit it
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if max(ns) + 200 > resource.getrlimit(resource.RLIMIT_NOFILE)[0]:
        log(f"warning: fd limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} is too low for N={max(ns)}")
    os.sched_setaffinity(0, {int(CLIENT_CPU)})  # keep the driver off the server's CPU
    if any(s.startswith("pycable") for s in servers):
        probe = subprocess.run([str(PYTHON), "-m", "pycable", "--help"], cwd=ROOT, capture_output=True)
        if probe.returncode != 0:
            log("pycable is not runnable (python -m pycable --help failed); running the bare server only")
            servers = [s for s in servers if not s.startswith("pycable")]

    pad = pad_for_target()
    tag = time.strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        for n in ns:
            log(f"round {rnd + 1}/{args.rounds}  N={n}")
            rtag = f"{tag}-r{rnd + 1}"
            if args.sequential:
                results = [run_one(server, n, args, pad, rtag) for server in servers]
            else:
                results = run_interleaved(servers, n, args, pad, rtag)
            for r in results:
                r["round"] = rnd
                runs.append(r)
                if r.get("ok"):
                    log(f"  {r['server']}: {r['tput']['msgs_per_s']:.0f} msg/s, fan p50 {r['fan']['p50_ms']} ms,"
                        f" p99 {r['fan']['p99_ms']} ms, {r['rss_per_conn_kb']} KB/conn,"
                        f" server CPU {r['tput']['server_cpu_frac']:.2f}, loadgen CPU {r['tput']['loadgen_cpu_frac']:.2f}")  # fmt: skip
    summary = summarize(runs, servers, ns)
    print()
    print_table(summary)
    print()
    for line in targets(summary, ns):
        print(line)
    out = Path(args.out) if args.out else RESULTS / f"fanout-{tag}.json"
    doc = {
        "tag": tag,
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "args": vars(args),
        "frame_bytes": FRAME_TARGET,
        "pad": pad,
        "summary": summary,
        "targets": targets(summary, ns),
        "runs": runs,
    }
    out.write_text(json.dumps(doc, indent=2))
    print(f"\nresults: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}  ({doc['elapsed_s']} s)")
    return 0 if all(r.get("ok") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
