"""Peer benchmark: pycable against the servers Python users pick today, in one run.

    make bench-peers                             # installs the `bench` extra, full run (~15 min)
    .venv/bin/python bench/peers.py --quick      # smoke run: N=50, the cheap servers only
    .venv/bin/python bench/peers.py --n 1000 --servers pycable,socketio
    .venv/bin/python bench/peers.py --plot bench/results/peers-<time>.json   # redraw the charts

Servers (the apps are in bench/peers/, each written as its own documentation shows):
``pycable`` (broker off), ``socketio`` (python-socketio ASGI on uvicorn), ``channels-uvicorn``
and ``channels-daphne`` (Django Channels with the InMemoryChannelLayer), ``channels-uvicorn-redis``
and ``channels-daphne-redis`` (with channels_redis on REDIS_URL, default redis://127.0.0.1:6379),
and the bare floors ``websockets`` and ``picows``.

One bench/loadgen (C, epoll; it speaks Action Cable, plain WebSocket and Socket.IO over
Engine.IO v4) measures every server, one server at a time. Each server is pinned to CPU 0, the
loadgen and this driver to CPU 1, as in bench/fanout.py. For each N and server:
connect N subscribers (RSS per idle connection: VmRSS after a warm-up batch and after all N,
divided by the connections in between), fan time (broadcasts one at a time, each after the
previous one reached every client and its HTTP reply came back: trigger -> last client has it),
then throughput with 1 and with 8 broadcasts in flight (delivered messages / time from the first
trigger to the last receive). The number of broadcasts in each phase adapts to the server's
speed so that each phase lasts a few seconds. Completeness: every subscribed client got every
broadcast exactly once and in order (the loadgen counts per-client duplicates and reorders),
no client was closed, every trigger got a 2xx. A server that cannot finish a phase is recorded
with where and how it broke, and the run goes on. A JSON file with everything goes to
bench/results/ (gitignored), the servers' logs beside it; the charts go to docs/img/.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fanout
from fanout import (
    BENCH,
    CLIENT_CPU,
    PYTHON,
    RESULTS,
    ROOT,
    SERVER_CPU,
    Loadgen,
    build_loadgen,
    free_port,
    log,
    pad_for_target,
    pct,
    proc_cpu_s,
    rss_kb,
    stop_server,
    wait_port,
)

PEERS = BENCH / "peers"
CHANNELS_APP = PEERS / "channels_app"
IMG = ROOT / "docs" / "img"
VENV_BIN = PYTHON.parent
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")

UVICORN = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
PLAIN_WS = ["--proto", "", "--no-welcome", "--subscribe", '{"command":"subscribe"}', "--confirm", "confirm_subscription"]
SOCKETIO = ["--path", "/socket.io/?EIO=4&transport=websocket", "--proto", "", "--welcome", "pingInterval",
            "--subscribe", "40", "--confirm", "40{", "--eio"]  # fmt: skip


@dataclass
class Peer:
    """How to start one server and how the loadgen talks to it."""

    label: str  # for tables and charts
    cmd: list[str]  # with {port} and {bport} placeholders
    loadgen: list[str]  # extra loadgen options (path, protocol)
    modules: tuple[str, ...] = ()  # Python modules it needs (the `bench` extra)
    same_port: bool = False  # the broadcast trigger is on the WebSocket port
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    cheap: bool = False  # in --quick
    redis: bool = False  # needs Redis
    cpus: str = ""  # taskset CPU list (default: SERVER_CPU)


def _channels(server: str, layer: str) -> Peer:
    if server == "uvicorn":
        cmd = [str(VENV_BIN / "uvicorn"), "--app-dir", str(CHANNELS_APP), "asgi:application",
               "--host", "127.0.0.1", "--port", "{port}", *UVICORN]  # fmt: skip
    else:
        cmd = [str(VENV_BIN / "daphne"), "-b", "127.0.0.1", "-p", "{port}", "-v", "0", "asgi:application"]
    return Peer(
        label=f"Channels ({server}, {'channels_redis' if layer == 'redis' else 'in-memory layer'})",
        cmd=cmd,
        loadgen=["--path", "/ws/", *PLAIN_WS],
        modules=("channels", "django", server, *(("channels_redis",) if layer == "redis" else ())),
        same_port=True,
        env={"BENCH_CHANNEL_LAYER": layer, "DJANGO_SETTINGS_MODULE": "settings", "PYTHONPATH": str(CHANNELS_APP)},
        cwd=CHANNELS_APP,
        redis=layer == "redis",
    )


SERVERS: dict[str, Peer] = {
    "pycable": Peer(
        "pycable",
        [str(PYTHON), "-m", "pycable", "--public", "--host", "127.0.0.1", "--port", "{port}",
         "--http_broadcast_port", "{bport}"],
        [],
        cheap=True,
    ),
    "socketio": Peer(
        "python-socketio (uvicorn)",
        [str(VENV_BIN / "uvicorn"), "--app-dir", str(PEERS), "socketio_app:app", "--host", "127.0.0.1",
         "--port", "{port}", *UVICORN],
        SOCKETIO,
        modules=("socketio", "uvicorn"),
        same_port=True,
        cheap=True,
    ),
    "channels-uvicorn": _channels("uvicorn", "memory"),
    "channels-daphne": _channels("daphne", "memory"),
    "channels-uvicorn-redis": _channels("uvicorn", "redis"),
    "channels-daphne-redis": _channels("daphne", "redis"),
    "websockets": Peer(
        "websockets (bare)",
        [str(PYTHON), str(PEERS / "websockets_server.py"), "--host", "127.0.0.1", "--port", "{port}",
         "--http_broadcast_port", "{bport}"],
        ["--path", "/", *PLAIN_WS],
        cheap=True,
    ),
    "picows": Peer(
        "picows (bare)",
        [str(PYTHON), str(PEERS / "picows_server.py"), "--host", "127.0.0.1", "--port", "{port}",
         "--http_broadcast_port", "{bport}"],
        ["--path", "/", *PLAIN_WS],
        modules=("picows",),
    ),
}


def tree_pids(pid: int) -> list[int]:
    """*pid* and all its descendants (a supervisor's workers, an embedded NATS...)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def tree_sum(pid: int, read: Any) -> Any:
    """``read(p)`` summed over a process and its descendants (those that vanished count 0)."""
    total = 0
    for p in tree_pids(pid):
        try:
            total += read(p)
        except (OSError, RuntimeError):
            pass
    return total


def tree_cpu_s(pid: int) -> float:
    """utime + stime of a process and its descendants, seconds."""
    return float(tree_sum(pid, proc_cpu_s))


def tree_rss_kb(pid: int) -> int:
    return int(tree_sum(pid, rss_kb))


def available(name: str) -> str | None:
    """Why a server cannot run here, or None."""
    missing = [m for m in SERVERS[name].modules if importlib.util.find_spec(m) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (make bench-peers installs the bench extra)"
    return None


# ---------------------------------------------------------------------------- one server


class Broke(Exception):
    """The server could not finish a phase: the message says where and how."""


class Run:
    def __init__(self, name: str, n: int, args: argparse.Namespace, pad: int, tag: str) -> None:
        self.name, self.peer, self.n, self.args, self.pad = name, SERVERS[name], n, args, pad
        self.port = free_port()
        self.bport = self.port if self.peer.same_port else free_port()
        while self.bport == self.port and not self.peer.same_port:
            self.bport = free_port()
        cmd = [a.format(port=self.port, bport=self.bport, nport=free_port()) for a in self.peer.cmd]
        self.cmd = ["taskset", "-c", self.peer.cpus or SERVER_CPU, *cmd]
        self.log_path = RESULTS / f"{tag}-{name}-{n}.log"
        self.res: dict[str, Any] = {"server": name, "label": self.peer.label, "n": n, "cmd": " ".join(cmd)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.lg: Loadgen | None = None
        self.closes0 = 0
        self.env = dict(os.environ, **self.peer.env)
        if self.peer.redis:
            self.env["REDIS_URL"] = REDIS_URL
            self.env["BENCH_CHANNELS_PREFIX"] = f"peers-{uuid.uuid4().hex[:8]}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> str:
        assert self.proc is not None
        code = self.proc.poll()
        return "" if code is None else f"; the server exited with {code}"

    def start(self) -> None:
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                self.cmd, cwd=self.peer.cwd, env=self.env, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_port(self.port, self.proc, timeout=60)
        if self.bport != self.port:
            wait_port(self.bport, self.proc, timeout=60)
        time.sleep(self.args.settle)
        self.res["rss_start_kb"] = tree_rss_kb(self.pid)

    def connect(self) -> None:
        n, res = self.n, self.res
        self.lg = lg = Loadgen(self.port, self.bport, self.pad, 8, max_seq=self.args.max_seq, extra=self.peer.loadgen)
        warm = max(10, min(100, n // 10))
        lg.send(f"CONNECT {warm}")
        ready = lg.expect("READY", 120)[-1].split()
        if int(ready[1]) != warm:
            raise Broke(f"connect: only {ready[1]} of {warm} warm-up clients subscribed{self.alive()}")
        time.sleep(self.args.settle)
        res["rss_warm_kb"] = tree_rss_kb(self.pid)
        t0 = time.monotonic()
        lg.send(f"CONNECT {n}")
        ready = lg.expect("READY", 60 + n / 10)[-1].split()
        res["connect_s"] = round(float(ready[2]) / 1000, 2)
        res["connect_errors"] = int(ready[3])
        if int(ready[1]) != n:
            raise Broke(
                f"connect: {ready[1]} of {n} clients subscribed after {time.monotonic() - t0:.0f} s, "
                f"{ready[3]} failed attempts{self.alive()}"
            )
        # Clients the server closed while the others connected were replaced by the loadgen
        # (noted, not a completeness failure); from here on, any close is one.
        st = self.stat()
        res["connect_closes"] = self.closes0 = st["closes"]
        if st["closes"]:
            res["connect_note"] = f"{st['closes']} clients closed by the server while connecting, reconnected"
            res["connect_note"] += self.log_hint()
        time.sleep(self.args.settle * 2)
        res["rss_idle_kb"] = tree_rss_kb(self.pid)
        res["rss_per_conn_kb"] = round((res["rss_idle_kb"] - res["rss_warm_kb"]) / (n - warm), 2)

    def fan(self, k: int, timeout_s: float, record: bool) -> list[float]:
        """k broadcasts one at a time; returns the fan times (ms) of the complete ones."""
        assert self.lg is not None
        self.lg.send(f"FAN {k} {int(timeout_s * 1000)}")
        try:  # per broadcast: up to timeout_s for its HTTP reply, then timeout_s for delivery
            lines = self.lg.expect("FANDONE", 30 + k * (2 * timeout_s + 5))
        except TimeoutError:
            raise Broke(
                f"fan: {k} broadcasts one at a time did not finish within {30 + k * (2 * timeout_s + 5):.0f} s "
                f"(more than {timeout_s:.0f} s per broadcast){self.alive()}"
            ) from None
        times, statuses = [], set()
        for line in lines[:-1]:
            if line.startswith("SEQ"):
                _, _seq, trig, _first, last, count, status, _klast = line.split()
                statuses.add(int(status))
                if int(count) == self.n:
                    times.append((int(last) - int(trig)) / 1e6)
        incomplete = int(lines[-1].split()[2])
        if len(times) < k and not incomplete:  # complete for the clients left: some were closed
            raise Broke(f"fan: clients were closed by the server during broadcasts ({self.stat_text()}){self.alive()}")
        if incomplete or any(not 200 <= s < 300 for s in statuses):
            raise Broke(
                f"fan: {incomplete} of {k} broadcasts did not reach all {self.n} clients within {timeout_s:.0f} s "
                f"(HTTP statuses {sorted(statuses)}; {self.stat_text()}){self.alive()}"
            )
        if record:
            self.res["fan_ms"] = [round(t, 3) for t in times]
        return times

    def tput(self, k: int, window: int, timeout_s: float) -> dict[str, Any]:
        assert self.lg is not None
        c0 = tree_cpu_s(self.pid)
        self.lg.send(f"TPUT {k} {window} {int(timeout_s * 1000)}")
        f = self.lg.expect("TPUT", timeout_s + 60)[-1].split()
        cpu = tree_cpu_s(self.pid) - c0
        delivered, expected, span = int(f[2]), int(f[3]), (int(f[5]) - int(f[4])) / 1e9
        out = {
            "broadcasts": k,
            "delivered": delivered,
            "expected": expected,
            "incomplete_broadcasts": int(f[9]),
            "reorders": int(f[10]),
            "http_errors": int(f[11]),
            "span_s": round(span, 3),
            "msgs_per_s": round(delivered / span) if span > 0 else 0,
            "server_cpu_us_per_msg": round(cpu / delivered * 1e6, 2) if delivered else None,
            "server_cpu_s": round(cpu, 3),
            "loadgen_cpu_s": round((int(f[6]) + int(f[7])) / 1e9, 3),
            "wall_s": round(int(f[8]) / 1e9, 3),
        }
        # With one broadcast in flight every client must get them in trigger order. With 8 in flight
        # they are triggered on 8 HTTP connections at once, so the server may take them in any
        # order: there only duplicates count (STAT's dup, checked at the end).
        bad_order = out["reorders"] if window == 1 else 0
        if out["incomplete_broadcasts"] or out["http_errors"] or bad_order:
            raise Broke(
                f"throughput with {window} in flight: {out['incomplete_broadcasts']} of {k} broadcasts incomplete "
                f"after {timeout_s:.0f} s, {out['http_errors']} trigger errors, {bad_order} reorders or "
                f"duplicates ({self.stat_text()}){self.alive()}"
            )
        return out

    def stat(self) -> dict[str, int]:
        assert self.lg is not None
        self.lg.send("STAT")
        s = self.lg.expect("STAT", 10)[-1].split()
        keys = ["ready", "msgs", "seq_msgs", "other_text", "pings", "closes", "dup", "reorders"]
        return dict(zip(keys, map(int, s[1:]), strict=True))

    def stat_text(self) -> str:
        try:
            st = self.stat()
        except (TimeoutError, RuntimeError):
            return "loadgen did not answer"
        text = f"{st['ready']} of {self.n} clients still connected, {st['closes']} close frames"
        return text + self.log_hint()

    def log_hint(self) -> str:
        """The last exception line of the server's log, if any (how it broke)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [ln for ln in lines if ln and not ln.startswith((" ", "Traceback")) and "Error" in ln]
        return f"; server log: {len(errors)} error lines, last: {errors[-1][:200]!r}" if errors else ""

    def measure(self) -> None:
        a, n = self.args, self.n
        self.start()
        self.connect()
        # Warm-up (not recorded), which also sizes the phases to this server's speed.
        warm = self.fan(a.warm, a.fan_timeout, record=False)
        est_s = max(statistics.median(warm) / 1000, 1e-4)
        k_fan = int(min(a.fan_max, max(a.fan_min, a.fan_budget / est_s)))
        fan = self.fan(k_fan, a.fan_timeout, record=True)
        self.res["fan"] = {
            "broadcasts": k_fan,
            "p50_ms": round(pct(fan, 50), 2),
            "p99_ms": round(pct(fan, 99), 2),
        }
        rate = n / (statistics.median(fan) / 1000)
        for window in (1, 8):
            k = int(min(a.tput_max, max(a.tput_min, a.tput_budget * rate / n)))
            t = self.tput(k, window, timeout_s=max(60.0, 10 * k * n / rate))
            self.res[f"tput{window}"] = t
            rate = max(rate, t["msgs_per_s"])
        st = self.stat()
        self.res["loadgen_stat"] = st
        self.res["rss_after_kb"] = tree_rss_kb(self.pid)
        self.res["complete"] = st["ready"] == n and st["closes"] == self.closes0 and st["dup"] == 0
        if not self.res["complete"]:
            raise Broke(f"completeness: {st}")
        self.res["ok"] = True

    def close(self) -> None:
        if self.lg is not None:
            self.lg.close()
        if self.proc is not None:
            stop_server(self.proc)


def run_one(name: str, n: int, args: argparse.Namespace, pad: int, tag: str) -> dict[str, Any]:
    r = Run(name, n, args, pad, tag)
    t0 = time.monotonic()
    try:
        r.measure()
    except (Broke, RuntimeError, TimeoutError, OSError, statistics.StatisticsError) as exc:
        r.res["ok"] = False
        r.res["error"] = str(exc) if isinstance(exc, Broke) else f"{type(exc).__name__}: {exc}"
    finally:
        r.close()
    r.res["wall_s"] = round(time.monotonic() - t0, 1)
    if r.res.get("ok"):
        t1, t8, f = r.res["tput1"], r.res["tput8"], r.res["fan"]
        log(
            f"  {name} N={n}: {t1['msgs_per_s']} / {t8['msgs_per_s']} msg/s (1 / 8 in flight), fan p50 "
            f"{f['p50_ms']} p99 {f['p99_ms']} ms, {r.res['rss_per_conn_kb']} KB/conn ({r.res['wall_s']} s)"
        )
    else:
        log(f"  {name} N={n}: BROKE: {r.res['error']} (server log: {r.log_path.relative_to(ROOT)})")
    return r.res


# ---------------------------------------------------------------------------- report


def ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """pycable's msg/s over each other server's, per N and broadcasts in flight (``N/wK``), and
    each other server's CPU per delivered message over pycable's (``N/wK/cpu``), from one run.
    The CPU ratio depends much less on what else the machine was running at the time."""
    out: dict[str, dict[str, float]] = {}
    for n in sorted({r["n"] for r in results}):
        py = next((r for r in results if r["n"] == n and r["server"] == "pycable" and r.get("ok")), None)
        if py is None:
            continue
        for r in results:
            if r["n"] == n and r["server"] != "pycable" and r.get("ok"):
                for w in (1, 8):
                    mine, theirs = py[f"tput{w}"], r[f"tput{w}"]
                    out.setdefault(r["server"], {})[f"{n}/w{w}"] = round(mine["msgs_per_s"] / theirs["msgs_per_s"], 2)
                    if mine["server_cpu_us_per_msg"] and theirs["server_cpu_us_per_msg"]:
                        out[r["server"]][f"{n}/w{w}/cpu"] = round(
                            theirs["server_cpu_us_per_msg"] / mine["server_cpu_us_per_msg"], 2
                        )
    return out


def markdown(results: list[dict[str, Any]]) -> str:
    rows = [
        "| server | N | msg/s, 1 in flight | msg/s, 8 in flight | pycable ÷ this (8 in flight) | CPU µs/msg (8 in flight) "
        "| this ÷ pycable | CPU share | fan p50 / p99 ms | KB per idle conn | connect s | complete |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    rat = ratios(results)
    for r in results:
        if not r.get("ok"):
            rows.append(f"| {r['label']} | {r['n']:,} | — | — | — | — | — | — | — | {r.get('rss_per_conn_kb', '—')} | "
                        f"{r.get('connect_s', '—')} | broke: {r.get('error', '?')} |")  # fmt: skip
            continue
        x = rat.get(r["server"], {}).get("{}/w8".format(r["n"]))
        ratio = "1" if r["server"] == "pycable" else "—" if x is None else f"{x:g}×"
        xc = rat.get(r["server"], {}).get("{}/w8/cpu".format(r["n"]))
        cpu_ratio = "1" if r["server"] == "pycable" else "—" if xc is None else f"{xc:g}×"
        t8 = r["tput8"]
        share = f"{t8['server_cpu_s'] / t8['wall_s']:.0%}" if t8.get("wall_s") else "—"
        rows.append(
            f"| {r['label']} | {r['n']:,} | {r['tput1']['msgs_per_s']:,} | {r['tput8']['msgs_per_s']:,} | {ratio} | "
            f"{t8['server_cpu_us_per_msg']:g} | {cpu_ratio} | {share} | "
            f"{r['fan']['p50_ms']:g} / {r['fan']['p99_ms']:g} | {r['rss_per_conn_kb']:g} | {r['connect_s']:g} | yes"
            + (f" ({r['connect_closes']} closed by the server while connecting, reconnected)" if r.get("connect_closes") else "")
            + " |"
        )
    return "\n".join(rows)


def plot(results: list[dict[str, Any]], outdir: Path) -> list[Path]:
    """msg/s by N, the fan-time CDF and memory per connection, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    names = [s for s in SERVERS if any(r["server"] == s for r in results)]
    ns = sorted({r["n"] for r in results})
    colors = {name: plt.get_cmap("tab10")(i) for i, name in enumerate(SERVERS)}

    def get(name: str, n: int) -> dict[str, Any] | None:
        return next((r for r in results if r["server"] == name and r["n"] == n and r.get("ok")), None)

    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, w in zip(axes, (8, 1), strict=True):
        for name in names:
            pts = [(n, r[f"tput{w}"]["msgs_per_s"]) for n in ns if (r := get(name, n))]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=SERVERS[name].label,
                        color=colors[name], linewidth=2.5 if name == "pycable" else 1.5)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xticks(ns, [f"{n:,}" for n in ns])
        ax.set_xlabel("subscribed clients (N)")
        ax.set_title(f"fan-out, {w} broadcast{'s' if w > 1 else ''} in flight")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("delivered messages / s (log scale)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle("One CPU per server, same C load generator, same run")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    paths.append(outdir / "peers-throughput.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(ns), figsize=(6 * len(ns), 4.5), squeeze=False)
    for ax, n in zip(axes[0], ns, strict=True):
        for name in names:
            r = get(name, n)
            if r and r.get("fan_ms"):
                xs = sorted(r["fan_ms"])
                ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=SERVERS[name].label,
                        color=colors[name], drawstyle="steps-post")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("fan time, trigger -> last client has it (ms, log scale)")
        ax.set_ylabel("share of broadcasts")
        ax.set_title(f"fan time CDF, N={n:,}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(outdir / "peers-latency-cdf.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(1, len(ns))
    for j, n in enumerate(ns):
        vals = [(r["rss_per_conn_kb"] if (r := get(name, n)) else 0) for name in names]
        bars = ax.bar([i + j * width for i in range(len(names))], vals, width, label=f"N={n:,}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks([i + width * (len(ns) - 1) / 2 for i in range(len(names))],
                  [SERVERS[n].label for n in names], rotation=20, ha="right", fontsize=8)  # fmt: skip
    ax.set_ylabel("KB of RSS per idle subscribed connection")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    paths.append(outdir / "peers-memory.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default=None, help="comma-separated client counts (default 1000,5000; quick: 50)")
    ap.add_argument("--servers", default=None, help=f"comma-separated, from {','.join(SERVERS)} (default all)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: N=50, tiny phases, the cheap servers (pycable, websockets, and python-socketio "
                         "if the bench extra is installed)")  # fmt: skip
    ap.add_argument("--out", default=None, help="JSON output path (default bench/results/peers-<time>.json)")
    ap.add_argument("--img", default=str(IMG), help="where the charts go (default docs/img)")
    ap.add_argument("--no-plot", action="store_true", help="do not draw the charts")
    ap.add_argument("--plot", default=None, metavar="JSON", help="only redraw the charts from a results file")
    args = ap.parse_args()
    if args.plot:
        data = json.loads(Path(args.plot).read_text())
        for p in plot(data["results"], Path(args.img)):
            log(f"wrote {p}")
        print(markdown(data["results"]))
        return 0
    quick = args.quick
    ns = [int(x) for x in (args.n or ("50" if quick else "1000,5000")).split(",")]
    names = (args.servers or ",".join(s for s in SERVERS if SERVERS[s].cheap or not quick)).split(",")
    for name in names:
        if name not in SERVERS:
            ap.error(f"unknown server {name!r}")
    # phase sizes: seconds of work per phase, bounded broadcast counts
    args.settle = 0.2 if quick else 0.5
    args.fan_budget, args.fan_min, args.fan_max = (0.5, 5, 20) if quick else (6.0, 5, 100)
    args.tput_budget, args.tput_min, args.tput_max = (0.5, 10, 50) if quick else (5.0, 4, 2000)
    args.fan_timeout = 30.0 if quick else 60.0
    args.warm = 3 if quick else 2  # warm-up broadcasts, not recorded
    args.max_seq = 3 + args.fan_max + 2 * args.tput_max + 100  # seqs per loadgen (one per server and N)

    RESULTS.mkdir(parents=True, exist_ok=True)
    build_loadgen()
    os.sched_setaffinity(0, {int(CLIENT_CPU)})
    pad = pad_for_target()
    tag = "peers-" + time.strftime("%Y%m%d-%H%M%S")
    t0 = time.time()
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for n in ns:
        for name in names:
            why = available(name)
            if why:
                skipped[name] = why
                continue
            log(f"{name} N={n} ...")
            results.append(run_one(name, n, args, pad, tag))
    for name, why in skipped.items():
        log(f"skipped {name}: {why}")
    out = {
        "tag": tag,
        "quick": quick,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t0)),
        "wall_s": round(time.time() - t0, 1),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "server_cpu": SERVER_CPU,
                    "client_cpu": CLIENT_CPU},
        "frame_target_bytes": fanout.FRAME_TARGET,
        "skipped": skipped,
        "ratios": ratios(results),
        "results": results,
    }
    path = Path(args.out) if args.out else RESULTS / f"{tag}.json"
    path.write_text(json.dumps(out, indent=1))
    log(f"results: {path}")
    print(markdown(results))
    print(json.dumps(out["ratios"], indent=1))
    if not quick and not args.no_plot:
        for p in plot(results, Path(args.img)):
            log(f"wrote {p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}")
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
