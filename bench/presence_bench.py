"""Presence benchmark: the ``presence`` (info) command with N members on one stream.

    .venv/bin/python bench/presence_bench.py                    # N=1,000, memory, redis, nats
    .venv/bin/python bench/presence_bench.py --n 200 --k 50     # smoke run
    REDIS_URL=redis://host:6379 NATS_URL=nats://host:4222 .venv/bin/python bench/presence_bench.py

For each backend (``--broker memory``, ``redis``, ``nats``: presence follows the broker) one
server process is started (``--public``, a fresh Redis key prefix / NATS prefix), N WebSocket
clients each subscribe to one stream and join its presence set with a small ``info``
(``{"name": "user <i>"}``), and one more client then alternates, K times each, a ``presence``
command (reply: ``total`` N and N records, about 40 KB) and a ``ping`` command (reply ``pong``),
one at a time, timing send -> reply. The ping is the baseline measured in the same run: the
ratio ``info p95 / ping p95`` is what the presence read costs over a bare command round trip
on this (shared, noisy) machine. The clients run in this process, on the same 2 CPUs as the
server, Redis and NATS, so absolute numbers are upper bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
if not PYTHON.exists():
    PYTHON = Path(sys.executable)

IDENT = '{"channel":"$pubsub","stream_name":"room"}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def backend_args(name: str) -> list[str] | None:
    """Server flags for *name*, or ``None`` when its service does not answer."""
    tag = f"pbench{uuid.uuid4().hex[:6]}"
    if name == "memory":
        return ["--broker", "memory"]
    if name == "redis":
        url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
        rest = url.split("://", 1)[-1].rsplit("@", 1)[-1].split("/")[0]
        host, _, port = rest.partition(":")
        if not answers(host or "127.0.0.1", int(port or 6379)):
            return None
        return ["--broker", "redis", "--pubsub", "redis", "--redis_url", url, "--redis_prefix", f"{tag}:"]
    url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    rest = url.split("://", 1)[-1].rsplit("@", 1)[-1]
    host, _, port = rest.partition(":")
    if not answers(host or "127.0.0.1", int(port or 4222)):
        return None
    return ["--broker", "nats", "--pubsub", "nats", "--nats_servers", url, "--nats_prefix", tag]


def start_server(args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    argv = [str(PYTHON), "-m", "pycable", "--host", "127.0.0.1", "--port", str(port),
            "--http_broadcast_port", str(free_port()), "--public", "--log_level", "warn", *args]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # readiness of another process: a bounded poll
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(argv)}")
        if answers("127.0.0.1", port):
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


async def reply_of(ws: ClientConnection, want: str) -> dict[str, Any]:
    """The next message of type *want*; for ``presence``, the next info or error reply (the
    probe is subscribed, so join events arrive too)."""
    while True:
        msg = json.loads(await ws.recv())
        if msg.get("type") == want and (want != "presence" or msg["message"].get("type") in ("info", "error")):
            return msg


async def member(url: str, i: int) -> ClientConnection:
    ws = await connect(url, subprotocols=["actioncable-v1-ext-json"], max_size=None)  # type: ignore[list-item]
    await reply_of(ws, "welcome")
    await ws.send(json.dumps({"command": "subscribe", "identifier": IDENT}))
    await reply_of(ws, "confirm_subscription")
    await ws.send(json.dumps({"command": "join", "identifier": IDENT, "presence": {"id": str(i), "info": {"name": f"user {i}"}}}))
    return ws


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(port: int, n: int, k: int) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{port}/cable"
    members: list[ClientConnection] = []
    for start in range(0, n, 100):
        members += await asyncio.gather(*(member(url, i) for i in range(start, min(n, start + 100))))
    probe = await connect(url, subprotocols=["actioncable-v1-ext-json"], max_size=None)  # type: ignore[list-item]
    await reply_of(probe, "welcome")
    await probe.send(json.dumps({"command": "subscribe", "identifier": IDENT}))
    await reply_of(probe, "confirm_subscription")
    # Every member is in (NATS: also in this node's copy) before timing starts.
    deadline = time.monotonic() + 60
    while True:
        await probe.send(json.dumps({"command": "presence", "identifier": IDENT, "data": {}}))
        info = (await reply_of(probe, "presence"))["message"]
        if info.get("type") == "info" and info["total"] == n:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {info.get('total')} of {n} members joined")
        await asyncio.sleep(0.1)
    infos, pings, size = [], [], 0
    for _ in range(k):
        t = time.perf_counter()
        await probe.send(json.dumps({"command": "presence", "identifier": IDENT, "data": {}}))
        raw = None
        while True:
            raw = await probe.recv()
            if '"type":"info"' in raw:
                break
        infos.append(time.perf_counter() - t)
        size = len(raw)
        t = time.perf_counter()
        await probe.send('{"command":"ping"}')
        await reply_of(probe, "pong")
        pings.append(time.perf_counter() - t)
    for ws in [*members, probe]:
        await ws.close()
    ms = 1000.0
    return {
        "members": n,
        "reply_bytes": size,
        "info_p50_ms": round(statistics.median(infos) * ms, 2),
        "info_p95_ms": round(pct(infos, 0.95) * ms, 2),
        "ping_p50_ms": round(statistics.median(pings) * ms, 2),
        "ping_p95_ms": round(pct(pings, 0.95) * ms, 2),
        "info_p95_over_ping_p95": round(pct(infos, 0.95) / pct(pings, 0.95), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="members on the stream")
    parser.add_argument("--k", type=int, default=200, help="timed info (and ping) round trips")
    parser.add_argument("--backends", default="memory,redis,nats")
    opts = parser.parse_args()
    results: dict[str, Any] = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)", "n": opts.n, "k": opts.k}
    for name in opts.backends.split(","):
        args = backend_args(name)
        if args is None:
            print(f"{name}: not reachable, skipped", file=sys.stderr)
            continue
        proc, port = start_server(args)
        try:
            results[name] = asyncio.run(measure(port, opts.n, opts.k))
        finally:
            proc.terminate()
            proc.wait(10)
        print(f"{name}: {results[name]}", file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
