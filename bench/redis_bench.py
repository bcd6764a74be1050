"""Redis benchmark: broker history fetch, redisx vs HTTP ingest and latency, fan-out with the
Redis broker. Every figure is also given as a ratio to its baseline measured in the same run
(memory broker / HTTP broadcasting), so the noise of a shared machine hits both alike.

    .venv/bin/python bench/redis_bench.py            # full run
    .venv/bin/python bench/redis_bench.py --quick    # smoke run
    REDIS_URL=redis://host:6379 .venv/bin/python bench/redis_bench.py

Phases:

1. **History fetch** (in-process, no server): a stream of 100 messages in a
   :class:`~pycable.broker.memory.MemoryBroker` and in a
   :class:`~pycable.broker.redis.RedisBroker`; ``history_from`` of the last 10 and of all 100
   messages, p50/p95/mean per call (target for Redis: p95 <= 2 ms).
2. **Ingest throughput**: one server (``--broker redis --pubsub redis``, adapters http and
   redisx) and one subscribed WebSocket client; N publications sent as fast as possible, by
   HTTP (8 keep-alive connections) or by ``XADD`` (pipelined, 500 per round trip); messages/s
   from the first send until the client received the last one.
3. **Broadcast-to-client latency**: one publication at a time (the next after the client got
   the previous), send -> client receipt, p50/p95, HTTP vs redisx (redisx pays up to one
   blocking-read wake-up; XREADGROUP BLOCK returns as soon as an entry arrives).
4. **Fan-out**: ``bench/fanout.py``'s harness (its C load generator on CPU 1, the server on
   CPU 0; N=1,000 subscribers of one stream, messages/s) for ``--broker redis --pubsub redis``
   against ``--broker memory``, alternated over two rounds (``compare_with_memory``).

Phases 1-3 run their clients in this process: on a 2-CPU machine the client side shares the
machine with the server and Redis, so absolute rates are lower bounds; ratios are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
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
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from pycable.broker.base import HistoryPolicy  # noqa: E402
from pycable.broker.memory import MemoryBroker  # noqa: E402
from pycable.broker.redis import RedisBroker  # noqa: E402
from pycable.protocol.broadcast import StreamMessage  # noqa: E402

PYTHON = ROOT / ".venv" / "bin" / "python"
if not PYTHON.exists():
    PYTHON = Path(sys.executable)
RESULTS = ROOT / "bench" / "results"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {"p50": round(pct(ms, 0.5), 3), "p95": round(pct(ms, 0.95), 3), "mean": round(statistics.mean(ms), 3)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- 1. history fetch ------------------------------------------------------------------------


async def bench_history(url: str, calls: int) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    brokers: dict[str, Any] = {
        "memory": MemoryBroker(HistoryPolicy(100, 300)),
        "redis": RedisBroker(aioredis.Redis.from_url(url), HistoryPolicy(100, 300), prefix=prefix),
    }
    out: dict[str, Any] = {}
    try:
        for name, broker in brokers.items():
            await broker.start()
            for i in range(100):
                await broker.register(StreamMessage("bench", json.dumps({"i": i, "pad": "x" * 100})))
            for label, offset in (("last10", 90), ("all100", 0)):
                for _ in range(min(200, calls)):  # warm-up
                    await broker.history_from("bench", broker.epoch, offset)
                samples = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    got = await broker.history_from("bench", broker.epoch, offset)
                    samples.append(time.perf_counter() - t0)
                    assert len(got) == 100 - offset
                out[f"{name}_{label}"] = summary_ms(samples)
    finally:
        for broker in brokers.values():
            await broker.shutdown()
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
    return out


# -- servers and clients -----------------------------------------------------------------------


class Server:
    def __init__(self, *args: str) -> None:
        self.port, self.bport = free_port(), free_port()
        argv = [str(PYTHON), "-m", "pycable", "--host", "127.0.0.1", "--port", str(self.port),
                "--http_broadcast_port", str(self.bport), "--public", "--log_level", "warn", *args]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class HttpPoster:
    """A keep-alive HTTP/1.1 client for the broadcast endpoint (asyncio streams)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(b"POST /_broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if length:
            await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Subscriber:
    """A WebSocket client subscribed to one stream that counts what it receives."""

    def __init__(self) -> None:
        self.count = 0
        self.last_i = -1
        self.event = asyncio.Event()
        self.target = 0

    async def open(self, port: int, stream: str) -> Subscriber:
        self.ws = await connect(f"ws://127.0.0.1:{port}/cable", subprotocols=["actioncable-v1-ext-json"],  # type: ignore[list-item]
                                max_queue=None)  # fmt: skip
        await self.ws.recv()  # welcome
        ident = json.dumps({"channel": "$pubsub", "stream_name": stream})
        await self.ws.send(json.dumps({"command": "subscribe", "identifier": ident}))
        while "confirm_subscription" not in str(await self.ws.recv()):
            pass
        self.task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        async for raw in self.ws:
            if '"stream_id"' in raw:
                self.count += 1
                self.last_i = json.loads(raw)["message"]["i"]
                if self.count >= self.target:
                    self.event.set()

    async def until(self, n: int, timeout: float = 120) -> None:
        self.target = n
        if self.count < n:
            self.event.clear()
            await asyncio.wait_for(self.event.wait(), timeout)

    async def close(self) -> None:
        self.task.cancel()
        await self.ws.close()


def body(stream: str, i: int) -> bytes:
    return json.dumps({"stream": stream, "data": json.dumps({"i": i})}).encode()


# -- 2 + 3. ingest throughput and latency ------------------------------------------------------


async def bench_ingest(url: str, n: int, samples: int) -> dict[str, Any]:
    prefix, xstream = f"bench-{uuid.uuid4().hex[:8]}:", f"bench-bx-{uuid.uuid4().hex[:8]}"
    server = Server("--broker", "redis", "--pubsub", "redis", "--redis_url", url, "--redis_prefix", prefix,
                    "--broadcast_adapter", "http,redisx", "--redisx_stream", xstream)  # fmt: skip
    raw = aioredis.Redis.from_url(url)
    out: dict[str, Any] = {}
    try:
        # Throughput.
        for mode in ("http", "redisx", "http", "redisx"):  # interleaved, best of two
            stream = f"ingest-{mode}-{uuid.uuid4().hex[:6]}"
            sub = await Subscriber().open(server.port, stream)
            t0 = time.perf_counter()
            if mode == "http":
                posters = [HttpPoster(server.bport) for _ in range(8)]

                async def worker(p: HttpPoster, k: int) -> None:
                    for i in range(k, n, len(posters)):
                        assert await p.post(body(stream, i)) == 201

                await asyncio.gather(*(worker(p, k) for k, p in enumerate(posters)))
                for p in posters:
                    await p.close()
            else:
                for start in range(0, n, 500):
                    async with raw.pipeline(transaction=False) as pipe:
                        for i in range(start, min(n, start + 500)):
                            pipe.xadd(xstream, {"payload": body(stream, i)})
                        await pipe.execute()
            await sub.until(n)
            rate = n / (time.perf_counter() - t0)
            out[f"ingest_{mode}_msgs_per_s"] = max(out.get(f"ingest_{mode}_msgs_per_s", 0), round(rate))
            await sub.close()
        # Latency.
        for mode in ("http", "redisx"):
            stream = f"lat-{mode}-{uuid.uuid4().hex[:6]}"
            sub = await Subscriber().open(server.port, stream)
            poster = HttpPoster(server.bport)
            lat = []
            for i in range(samples):
                t0 = time.perf_counter()
                if mode == "http":
                    await poster.post(body(stream, i))
                else:
                    await raw.xadd(xstream, {"payload": body(stream, i)})
                await sub.until(i + 1)
                lat.append(time.perf_counter() - t0)
            out[f"latency_{mode}_ms"] = summary_ms(lat[min(20, samples // 10):])
            await poster.close()
            await sub.close()
    finally:
        server.stop()
        keys = [k async for k in raw.scan_iter(match=prefix + "*")]
        if keys:
            await raw.delete(*keys)
        await raw.delete(xstream)
        await raw.aclose()
    return out


# -- 4. fan-out ---------------------------------------------------------------------------------


def bench_fanout(url: str, n: int, rounds: int, quick: bool) -> dict[str, Any]:
    """``bench/fanout.py``'s harness (C load generator, CPU pinning): Redis-backed vs memory."""
    spec = importlib.util.spec_from_file_location("fanout_harness", ROOT / "bench" / "fanout.py")
    assert spec and spec.loader
    fanout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fanout)

    def argv() -> list[str]:
        return [
            str(fanout.PYTHON), "-m", "pycable", "--public", "--broker", "redis", "--pubsub", "redis",
            "--redis_url", url, "--redis_prefix", f"bench-{uuid.uuid4().hex[:8]}:",
        ]  # fmt: skip

    return fanout.compare_with_memory("redis", argv, n, rounds, quick)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    opts = parser.parse_args()
    q = opts.quick
    res: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "redis": urlsplit(opts.redis_url).netloc.rpartition("@")[2],
        "redis_version": redis.Redis.from_url(opts.redis_url).info("server")["redis_version"],
    }
    res.update(await bench_history(opts.redis_url, 200 if q else 5000))
    res.update(await bench_ingest(opts.redis_url, 500 if q else 5000, 50 if q else 500))
    fo = await asyncio.to_thread(bench_fanout, opts.redis_url, 200 if q else 1000, 1 if q else 2, q)
    res["fanout"] = {k: v for k, v in fo.items() if k != "runs"}
    res["ratios"] = {
        "history_p95_last10_redis_over_memory": round(res["redis_last10"]["p95"] / res["memory_last10"]["p95"], 1),
        "history_p95_all100_redis_over_memory": round(res["redis_all100"]["p95"] / res["memory_all100"]["p95"], 1),
        "ingest_redisx_over_http": round(res["ingest_redisx_msgs_per_s"] / res["ingest_http_msgs_per_s"], 2),
        "latency_p50_redisx_over_http": round(res["latency_redisx_ms"]["p50"] / res["latency_http_ms"]["p50"], 2),
        "fanout_redis_over_memory": fo["redis_vs_memory"],
    }
    print(json.dumps(res, indent=2))
    if not q:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"redis-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(res, indent=2) + "\n")
        print(f"written to {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
