"""Fan-out benchmark: pycable against a bare WebSocket broadcast server on the same stack.

    .venv/bin/python bench/fanout.py              # full run (N = 1000 and 5000, 3 rounds)
    .venv/bin/python bench/fanout.py --quick      # smoke run (small N, few broadcasts)
    .venv/bin/python bench/fanout.py --n 1000 --servers bare,pycable

For every round, N and server (interleaved, so that the noise of a shared machine hits all
servers alike): start the server pinned to CPU 0, connect N subscribers with bench/loadgen (C,
epoll, pinned to CPU 1 together with this driver), and measure

* RSS per idle subscribed connection: VmRSS of the server after a warm-up batch of connections
  and again after all N are subscribed and idle, divided by the connections in between;
* fan time: broadcasts triggered one at a time (the next one only after the loadgen saw the
  previous one at every client and got the HTTP reply), trigger -> last client has it, p50/p99;
* throughput: K broadcasts with at most `window` not yet fully delivered, delivered messages/s
  from the first trigger to the last receive;
* the CPU time of the server and of the loadgen (getrusage in the loadgen, /proc/<pid>/stat for
  the server) and the busy share of CPU 0 and CPU 1 (/proc/stat) during the throughput phase,
  to show which side saturates.

Throughput and RSS are reported as ratios to the bare server measured in the same round.
A JSON file with everything goes to bench/results/.
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
}
SERVER_CPU = "0"
CLIENT_CPU = "1"
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


def cpu_ticks() -> dict[str, tuple[int, int, int]]:
    """(busy, softirq, total) jiffies of cpu0 and cpu1 from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(("cpu0 ", "cpu1 ")):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                out[line.split()[0]] = (sum(v[:8]) - idle, v[6], sum(v[:8]))
    return out


def cpu_busy(a: dict[str, tuple[int, int, int]], b: dict[str, tuple[int, int, int]]) -> dict[str, float]:
    """Busy share of each CPU over an interval, and the softirq part of it separately: with
    IRQ time accounting the kernel charges softirq time (loopback TCP receive and ACK
    processing) to no process, so a process's own CPU time understates its CPU's load."""
    res = {}
    for k in a:
        total = b[k][2] - a[k][2]
        res[k] = round((b[k][0] - a[k][0]) / total, 3) if total else 0.0
        res[k + "_softirq"] = round((b[k][1] - a[k][1]) / total, 3) if total else 0.0
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
    def __init__(self, port: int, bport: int, pad: int, hconns: int, max_seq: int) -> None:
        cmd = [
            "taskset", "-c", CLIENT_CPU, str(LOADGEN),
            "--host", "127.0.0.1", "--port", str(port), "--path", "/cable",
            "--proto", "actioncable-v1-json", "--bport", str(bport), "--bpath", "/_broadcast",
            "--stream", "bench", "--pad", str(pad), "--subscribe", SUBSCRIBE,
            "--hconns", str(hconns), "--max-seq", str(max_seq),
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


def run_one(server: str, n: int, args: argparse.Namespace, pad: int, tag: str) -> dict[str, Any]:
    port, bport = free_port(), free_port()
    while bport == port:
        bport = free_port()
    cmd = ["taskset", "-c", SERVER_CPU, *SERVERS[server], "--host", "127.0.0.1", "--port", str(port),
           "--http_broadcast_port", str(bport)]  # fmt: skip
    log_path = RESULTS / f"{tag}-{server}-{n}.log"
    res: dict[str, Any] = {"server": server, "n": n, "cmd": " ".join(cmd), "log": str(log_path.relative_to(ROOT))}
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    lg: Loadgen | None = None
    try:
        wait_port(port, proc)
        wait_port(bport, proc)
        time.sleep(args.settle)
        res["rss_start_kb"] = rss_kb(proc.pid)

        lg = Loadgen(port, bport, pad, args.hconns, max_seq=args.fan + args.tput + 100)
        warm = max(10, min(100, n // 10))
        lg.send(f"CONNECT {warm}")
        ready = lg.expect("READY", 60)[-1].split()
        if int(ready[1]) != warm:
            raise RuntimeError(f"only {ready[1]} of {warm} warm-up clients subscribed")
        time.sleep(args.settle)
        res["rss_warm_kb"] = rss_kb(proc.pid)

        lg.send(f"CONNECT {n}")
        ready = lg.expect("READY", 120)[-1].split()
        res["connect_s"] = float(ready[2]) / 1000
        res["connect_errors"] = int(ready[3])
        if int(ready[1]) != n:
            raise RuntimeError(f"only {ready[1]} of {n} clients subscribed")
        time.sleep(args.settle * 2)
        res["rss_idle_kb"] = rss_kb(proc.pid)
        res["rss_per_conn_kb"] = round((res["rss_idle_kb"] - res["rss_warm_kb"]) / (n - warm), 2)
        res["rss_per_conn_kb_incl_startup"] = round((res["rss_idle_kb"] - res["rss_start_kb"]) / n, 2)

        # warm-up broadcasts, not recorded
        lg.send("FAN 5 10000")
        lg.expect("FANDONE", 120)

        # fan time, one broadcast at a time
        c0, w0 = proc_cpu_s(proc.pid), time.monotonic()
        lg.send(f"FAN {args.fan} 10000")
        lines = lg.expect("FANDONE", 30 + args.fan * 12)
        wall = time.monotonic() - w0
        fan_ms, first_ms, kfan_ms, lag_ms, statuses = [], [], [], [], set()
        for line in lines[:-1]:
            if not line.startswith("SEQ"):
                continue
            _, _seq, trig, first, last, count, status, klast = line.split()
            statuses.add(int(status))
            if int(count) == n:
                fan_ms.append((int(last) - int(trig)) / 1e6)
                first_ms.append((int(first) - int(trig)) / 1e6)
                kfan_ms.append((int(klast) - int(trig)) / 1e6)
                lag_ms.append((int(last) - int(klast)) / 1e6)
        done = lines[-1].split()
        res["fan"] = {
            "broadcasts": args.fan,
            "incomplete": int(done[2]),
            "http_status": sorted(statuses),
            "p50_ms": round(pct(fan_ms, 50), 2),
            "p99_ms": round(pct(fan_ms, 99), 2),
            "mean_ms": round(statistics.fmean(fan_ms), 2) if fan_ms else None,
            "max_ms": round(max(fan_ms), 2) if fan_ms else None,
            "first_p50_ms": round(pct(first_ms, 50), 3),
            # same, with the kernel's arrival time of the last copy instead of the loadgen's read
            "kernel_p50_ms": round(pct(kfan_ms, 50), 2),
            "kernel_p99_ms": round(pct(kfan_ms, 99), 2),
            "loadgen_lag_p50_ms": round(pct(lag_ms, 50), 3),
            "loadgen_lag_max_ms": round(max(lag_ms), 3) if lag_ms else None,
            "server_cpu_frac": round((proc_cpu_s(proc.pid) - c0) / wall, 3),
            "loadgen_cpu_frac": round((int(done[3]) + int(done[4])) / int(done[5]), 3),
        }

        # throughput, `window` broadcasts outstanding
        c0, t0, w0 = proc_cpu_s(proc.pid), cpu_ticks(), time.monotonic()
        lg.send(f"TPUT {args.tput} {args.window} {int(60_000 + args.tput * n / 20)}")
        line = lg.expect("TPUT", 120 + args.tput * n / 20_000)[-1]
        wall = time.monotonic() - w0
        busy = cpu_busy(t0, cpu_ticks())
        server_cpu = proc_cpu_s(proc.pid) - c0
        f = line.split()
        k, delivered, expected = int(f[1]), int(f[2]), int(f[3])
        span_s = (int(f[5]) - int(f[4])) / 1e9
        kspan_s = (int(f[12]) - int(f[4])) / 1e9
        lg_cpu = (int(f[6]) + int(f[7])) / 1e9
        res["tput"] = {
            "broadcasts": k,
            "window": args.window,
            "delivered": delivered,
            "expected": expected,
            "incomplete_broadcasts": int(f[9]),
            "reorders": int(f[10]),
            "http_errors": int(f[11]),
            "span_s": round(span_s, 3),
            "msgs_per_s": round(delivered / span_s) if span_s > 0 else 0,
            "kernel_msgs_per_s": round(delivered / kspan_s) if kspan_s > 0 else 0,
            "server_cpu_frac": round(server_cpu / wall, 3),
            "loadgen_cpu_frac": round(lg_cpu / (int(f[8]) / 1e9), 3),
            "loadgen_user_s": round(int(f[6]) / 1e9, 3),
            "loadgen_sys_s": round(int(f[7]) / 1e9, 3),
            "server_cpu_us_per_msg": round(server_cpu / delivered * 1e6, 2) if delivered else None,
            "loadgen_cpu_us_per_msg": round(lg_cpu / delivered * 1e6, 2) if delivered else None,
            "cpu_busy": busy,
        }
        res["rss_after_kb"] = rss_kb(proc.pid)
        lg.send("STAT")
        s = lg.expect("STAT", 10)[-1].split()
        res["loadgen_stat"] = dict(
            zip(
                ["ready", "msgs", "seq_msgs", "other_text", "pings", "closes", "dup", "reorders"],
                map(int, s[1:]),
                strict=True,
            )
        )
        res["ok"] = (
            res["fan"]["incomplete"] == 0
            and res["tput"]["incomplete_broadcasts"] == 0
            and res["tput"]["http_errors"] == 0
            and res["loadgen_stat"]["closes"] == 0
        )
    except Exception as exc:  # noqa: BLE001 - keep going with the other servers, record the failure
        res["ok"] = False
        res["error"] = f"{type(exc).__name__}: {exc}"
        log(f"  {server} N={n}: {res['error']} (server log: {log_path})")
    finally:
        if lg is not None:
            lg.close()
        stop_server(proc)
    return res


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
            entry["server_us_per_msg"] = med(("tput", "server_cpu_us_per_msg"))
            entry["loadgen_us_per_msg"] = med(("tput", "loadgen_cpu_us_per_msg"))
            # ratios to the bare server (and to pycable broker off) measured in the same round
            for base in ("bare", "pycable"):
                if base == server or base not in servers:
                    continue
                ratios, fan_ratios = [], []
                for r in rs:
                    b = next(
                        (x for x in runs if x["server"] == base and x["n"] == n and x.get("ok")
                         and x["round"] == r["round"]),
                        None,
                    )  # fmt: skip
                    if b:
                        ratios.append(r["tput"]["msgs_per_s"] / b["tput"]["msgs_per_s"])
                        fan_ratios.append(r["fan"]["p50_ms"] / b["fan"]["p50_ms"])
                if ratios:
                    entry[f"tput_vs_{base}"] = round(statistics.median(ratios), 3)
                    entry[f"tput_vs_{base}_rounds"] = [round(x, 3) for x in ratios]
                    entry[f"fan_p50_vs_{base}"] = round(statistics.median(fan_ratios), 3)
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
            )
        if p.get("ok"):
            v = p["rss_per_conn_kb"]
            lines.append(
                f"N={n}: pycable RSS per idle connection = {v:.1f} KB (target <= 16): {'PASS' if v <= 16 else 'MISS'}"
            )
        if m.get("ok") and "tput_vs_pycable" in m:
            v = m["tput_vs_pycable"]
            lines.append(f"N={n}: memory broker on / off = {v:.2f} (target >= 0.90): {'PASS' if v >= 0.9 else 'MISS'}")
        if m.get("ok"):
            v = m["rss_per_conn_kb"]
            lines.append(f"N={n}: pycable --broker memory RSS per idle connection = {v:.1f} KB (target <= 16): "
                         f"{'PASS' if v <= 16 else 'MISS'}")  # fmt: skip
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
    ap.add_argument("--rounds", type=int, default=None, help="rounds over all servers (default 3; quick: 1)")
    ap.add_argument("--fan", type=int, default=None, help="timed one-at-a-time broadcasts (default 100)")
    ap.add_argument("--tput", type=int, default=None, help="broadcasts in the throughput phase (default 200)")
    ap.add_argument("--window", type=int, default=8, help="broadcasts outstanding in the throughput phase")
    ap.add_argument("--hconns", type=int, default=1, help="HTTP connections used to trigger broadcasts")
    ap.add_argument("--settle", type=float, default=0.5, help="seconds to let the server settle before RSS reads")
    ap.add_argument("--quick", action="store_true", help="smoke run: N=200, 1 round, 20+40 broadcasts")
    ap.add_argument("--out", default=None, help="JSON output path (default bench/results/fanout-<time>.json)")
    args = ap.parse_args()
    if args.quick:
        args.n = args.n or "200"
        args.rounds = args.rounds or 1
        args.fan = args.fan or 20
        args.tput = args.tput or 40
        args.settle = min(args.settle, 0.2)
    ns = [int(x) for x in (args.n or "1000,5000").split(",")]
    args.rounds = args.rounds or 3
    args.fan = args.fan or 100
    args.tput = args.tput or 200
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
            for server in servers:
                log(f"round {rnd + 1}/{args.rounds}  N={n}  {server} ...")
                r = run_one(server, n, args, pad, tag)
                r["round"] = rnd
                runs.append(r)
                if r.get("ok"):
                    log(f"  {r['tput']['msgs_per_s']:.0f} msg/s, fan p50 {r['fan']['p50_ms']} ms,"
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
