"""RPC benchmark (issue 4): Connect + subscribe throughput, in sessions per second.

    .venv/bin/python bench/rpc_bench.py                  # N=2000 sessions, 64 in flight, 5 modes
    .venv/bin/python bench/rpc_bench.py --n 500 --inflight 16 --modes grpc,http

One session = open a WebSocket, get the welcome, send one subscribe, get the
confirmation. Sessions stay open until the end of the mode (so the figure is connect +
subscribe, not churn); ``--inflight`` sessions are being set up at any time. Modes, each on
a fresh server (``--broker memory --disconnect_mode never``):

* ``public``: RPC-less, ``--public`` and a ``$pubsub`` public stream (no application);
* ``grpc``: the gRPC app of tests/rpc/grpc_app.py (grpc.aio, one process, ``--quiet``):
  one Connect and one Command per session;
* ``http``: the HTTP RPC app on ``@anycable/serverless-js`` (tests/rpc_app, Node, quiet);
* ``sdk-grpc`` / ``sdk-http``: the same application written with ``pycable.sdk``
  (tests/sdk/chat_app.py) served by the SDK's grpc.aio adapter / its ASGI adapter under
  uvicorn (tests/sdk/app_main.py ``--quiet``: the bare adapters, one process, uvloop).

Placement on this 2-core machine: pycable on CPU 0; the clients (this process, uvloop,
raw asyncio protocols) and the application on CPU 1, so the application's cost competes
with the load generator's, not with the server's. Reported per mode: sessions/s, the
p50 / p95 / p99 time from TCP connect to ``confirm_subscription``, the CPU time per session
of each process, and the application's CPU time per RPC call (its process CPU time divided
by the calls it answered: two per session, Connect and the subscribe Command).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers.server import ServerProcess  # noqa: E402
from rpc.apps import KINDS, RpcApp, node_available  # noqa: E402

CHAT = '{"channel":"chat","room":"bench"}'
PUBLIC = '{"channel":"$pubsub","stream_name":"bench"}'


class Session(asyncio.Protocol):
    """Upgrade, wait for the welcome, subscribe, wait for the confirmation."""

    def __init__(self, path: str, identifier: str) -> None:
        self.path = path
        self.subscribe = json.dumps({"command": "subscribe", "identifier": identifier}).encode()
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: actioncable-v1-json\r\n\r\n"
            ).encode()
        )

    def send(self, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x81, 0x80 | n]) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
        self.transport.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self._fail(f"upgrade refused: {bytes(buf[:40])!r}")
                return
            del buf[: end + 4]
            self.upgraded = True
        while len(buf) >= 2:
            n, pos = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, pos = struct.unpack_from("!H", buf, 2)[0], 4
            if len(buf) < pos + n:
                return
            opcode, payload = buf[0] & 0x0F, bytes(buf[pos : pos + n])
            del buf[: pos + n]
            if opcode == 8:
                self._fail(f"closed by the server: {payload[:2].hex()}")
            elif b'"welcome"' in payload:
                self.send(self.subscribe)
            elif b'"confirm_subscription"' in payload and not self.done.done():
                self.done.set_result(None)
            elif b'"reject_subscription"' in payload or b'"disconnect"' in payload:
                self._fail(payload.decode())

    def _fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(why))

    def connection_lost(self, exc) -> None:
        self._fail(f"connection lost: {exc}")


async def run_sessions(port: int, path: str, identifier: str, n: int, inflight: int) -> tuple[float, list[float]]:
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(inflight)
    latencies: list[float] = []
    sessions: list[Session] = []

    async def one() -> None:
        async with slots:
            started = time.perf_counter()
            _, session = await loop.create_connection(lambda: Session(path, identifier), "127.0.0.1", port)
            sessions.append(session)
            await asyncio.wait_for(session.done, 30)
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    elapsed = time.perf_counter() - began
    for s in sessions:
        s.transport.close()
    return elapsed, latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpu: int) -> None:
    try:
        os.sched_setaffinity(pid, {cpu})
    except (AttributeError, OSError):
        pass


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def bench_mode(mode: str, n: int, inflight: int, warmup: int) -> dict:
    app: RpcApp | None = None
    args = ["--broker", "memory", "--disconnect_mode", "never", "--log_level", "warn"]
    if mode == "public":
        args += ["--public"]
        identifier, path = PUBLIC, "/cable"
    else:
        app = RpcApp(mode, quiet=True).start()
        pin(app.proc.pid, 1)
        args += ["--rpc_host", app.rpc_host]
        identifier, path = CHAT, "/cable?user=bench"
    server = ServerProcess(*args).start()
    pin(server.proc.pid, 0)
    try:
        if warmup:
            await run_sessions(server.port, path, identifier, warmup, inflight)
        pids = {"server": server.proc.pid, "client": os.getpid()}
        if app is not None:
            pids["app"] = app.proc.pid
        before = {k: cpu_seconds(pid) for k, pid in pids.items()}
        elapsed, latencies = await run_sessions(server.port, path, identifier, n, inflight)
        used = {k: cpu_seconds(pid) - before[k] for k, pid in pids.items()}
        cpu = {k: round(v / n * 1e6) for k, v in used.items()}
    finally:
        server.stop()
        if app is not None:
            app.stop()
    return {
        "mode": mode,
        "sessions": n,
        "inflight": inflight,
        "seconds": round(elapsed, 3),
        "sessions_per_s": round(n / elapsed),
        "p50_ms": round(pct(latencies, 50) * 1000, 2),
        "p95_ms": round(pct(latencies, 95) * 1000, 2),
        "p99_ms": round(pct(latencies, 99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
        "cpu_us_per_session": cpu,
        # Connect + subscribe Command: two calls per session.
        "app_cpu_us_per_call": round(used["app"] / (2 * n) * 1e6) if "app" in used else None,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="sessions per mode")
    parser.add_argument("--inflight", type=int, default=64, help="sessions being set up at once")
    parser.add_argument("--warmup", type=int, default=200, help="sessions before measuring")
    parser.add_argument("--modes", default="public,grpc,http,sdk-grpc,sdk-http")
    parser.add_argument("--json", help="also write the results to this file")
    opts = parser.parse_args()
    pin(0, 1)
    results = []
    for mode in opts.modes.split(","):
        if mode not in ("public", *KINDS):
            parser.error(f"unknown mode {mode!r} (public, {', '.join(KINDS)})")
        if mode == "http" and (why := node_available()):
            print(f"{mode:>7}: skipped ({why})")
            continue
        r = await bench_mode(mode, opts.n, opts.inflight, opts.warmup)
        results.append(r)
        print(
            f"{mode:>7}: {r['sessions_per_s']:>6} sessions/s  ({r['sessions']} in {r['seconds']}s, "
            f"{r['inflight']} in flight)  connect→confirm p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, "
            f"p99 {r['p99_ms']} ms; CPU µs/session {r['cpu_us_per_session']}"
            + (f"; app CPU µs/call {r['app_cpu_us_per_call']}" if r["app_cpu_us_per_call"] is not None else ""),
            flush=True,
        )
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
