"""Durable Streams benchmark: pycable (memory broker) against the reference Node server
(``@durable-streams/server``, in memory) in the same run.

    .venv/bin/python bench/ds_bench.py            # ~1 min
    .venv/bin/python bench/ds_bench.py --pollers 200 --reads 100 --appends 500   # smoke run

Measured for each server, one after the other, with the same client (raw HTTP/1.1 over
asyncio streams, keep-alive):

* catch-up read: GET ``offset=-1`` of a JSON stream holding 100 messages, ``--reads`` times in
  sequence: p50/p95 latency;
* long-poll wake-up: ``--pollers`` long-polls parked at the tail of one stream, then one
  append; for every poller, the time from the append's request to its response: p50/p99
  (``--rounds`` rounds, pooled);
* append throughput: ``--appends`` JSON appends of ~100 bytes over 8 connections, appends/s.

Ratios are pycable / reference (latency: lower is better; throughput: higher is better).
Results go to bench/results/ds_bench.json (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DS_DIR = ROOT / "tests" / "ds"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
        return cls(reader, writer, f"127.0.0.1:{port}")

    def send(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        body = b""
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        return status, headers, body

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
        self.send(method, path, body, headers)
        return await self.response()

    def close(self) -> None:
        self.writer.close()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


async def catch_up(port: int, base: str, reads: int) -> dict[str, float]:
    c = await Conn.open(port)
    path = f"{base}/bench/catchup-{time.time_ns()}"
    status, _, _ = await c.request("PUT", path, b"[]", {"Content-Type": "application/json"})
    assert status == 201, status
    for i in range(100):
        body = json.dumps({"i": i, "text": "x" * 80}).encode()
        status, _, _ = await c.request("POST", path, body, {"Content-Type": "application/json"})
        assert status in (200, 204), status
    times = []
    for _ in range(reads):
        t0 = time.perf_counter()
        status, _, body = await c.request("GET", f"{path}?offset=-1")
        times.append(time.perf_counter() - t0)
        assert status == 200 and len(json.loads(body)) == 100
    c.close()
    return {"p50_ms": pct(times, 50) * 1000, "p95_ms": pct(times, 95) * 1000}


async def wake_up(port: int, base: str, pollers: int, rounds: int) -> dict[str, float]:
    writer = await Conn.open(port)
    path = f"{base}/bench/lp-{time.time_ns()}"
    status, headers, _ = await writer.request("PUT", path, b"", {"Content-Type": "application/json"})
    assert status == 201, status
    tail = headers["stream-next-offset"]
    conns = []
    for _ in range(pollers):
        conns.append(await Conn.open(port))
    lat: list[float] = []
    for r in range(rounds):
        for c in conns:
            c.send("GET", f"{path}?offset={tail}&live=long-poll")
        # Parked: wait until the server has them all (an empty stream answers nothing before
        # the timeout; give the requests a moment to be read, then append).
        await asyncio.sleep(1.0)
        t0 = time.perf_counter()
        writer.send("POST", path, json.dumps({"round": r}).encode(), {"Content-Type": "application/json"})

        async def one(c: Conn, t0: float = t0) -> float:
            status, _, _ = await c.response()
            assert status == 200, status
            return time.perf_counter() - t0

        got = await asyncio.gather(*(one(c) for c in conns))
        status, headers, _ = await writer.response()
        assert status in (200, 204)
        tail = headers["stream-next-offset"]
        lat.extend(got)
    for c in conns:
        c.close()
    writer.close()
    return {"p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000, "samples": len(lat)}


async def appends(port: int, base: str, n: int, conns: int = 8) -> dict[str, float]:
    setup = await Conn.open(port)
    path = f"{base}/bench/append-{time.time_ns()}"
    status, _, _ = await setup.request("PUT", path, b"", {"Content-Type": "application/json"})
    assert status == 201
    setup.close()
    body = json.dumps({"text": "y" * 90}).encode()
    per = n // conns

    async def worker() -> None:
        c = await Conn.open(port)
        for _ in range(per):
            status, _, _ = await c.request("POST", path, body, {"Content-Type": "application/json"})
            assert status in (200, 204), status
        c.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return {"appends_per_s": per * conns / (time.perf_counter() - t0)}


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def start(kind: str, port: int, poll_s: float) -> subprocess.Popen[bytes]:
    log = open(ROOT / "bench" / "results" / f"ds-{kind}.log", "wb")  # noqa: SIM115 (the server's, for its life)
    if kind == "pycable":
        argv = [sys.executable, "-m", "pycable", "--host", "127.0.0.1", "--port", str(port),
                "--http_broadcast_port", str(port), "--broker", "memory", "--public", "--ds",
                "--ds_poll_interval", str(poll_s), "--stream_history", "bench/*=limit:0,ttl:0",
                "--log_level", "warn"]
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=log)
    else:
        argv = ["node", str(DS_DIR / "ref_server.mjs"), str(port), str(int(poll_s * 1000))]
        proc = subprocess.Popen(argv, cwd=DS_DIR, stdout=log, stderr=log)
    wait_port(port, proc)
    return proc


async def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    proc = start(kind, port, poll_s=30.0)
    base = "/ds" if kind == "pycable" else ""
    try:
        return {
            "catch_up_100": await catch_up(port, base, args.reads),
            "wake_up": await wake_up(port, base, args.pollers, args.rounds),
            "append": await appends(port, base, args.appends),
        }
    finally:
        proc.terminate()
        proc.wait(10)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--pollers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--appends", type=int, default=4000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.pollers + 1024)), hard))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    results = {kind: await measure(kind, args) for kind in ("reference", "pycable")}
    py, ref = results["pycable"], results["reference"]
    rows = [
        ("catch-up read of 100 messages, p95 (ms)", ref["catch_up_100"]["p95_ms"], py["catch_up_100"]["p95_ms"]),
        (f"long-poll wake-up, {args.pollers} pollers, p50 (ms)", ref["wake_up"]["p50_ms"], py["wake_up"]["p50_ms"]),
        (f"long-poll wake-up, {args.pollers} pollers, p99 (ms)", ref["wake_up"]["p99_ms"], py["wake_up"]["p99_ms"]),
        ("appends/s (8 connections)", ref["append"]["appends_per_s"], py["append"]["appends_per_s"]),
    ]
    print("| measure | reference (Node) | pycable | pycable / reference |")
    print("|---|---|---|---|")
    for label, r, p in rows:
        print(f"| {label} | {r:.1f} | {p:.1f} | {p / r:.2f} |")
    out = ROOT / "bench" / "results" / "ds_bench.json"
    out.write_text(json.dumps({"args": vars(args), "results": results, "cpus": os.cpu_count()}, indent=2))
    print(f"\n(details: {out.relative_to(ROOT)})")


if __name__ == "__main__":
    asyncio.run(main())
