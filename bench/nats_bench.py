"""NATS broker benchmark: history reads and registrations against the memory broker in the
same run, and (with ``--fanout``) fan-out throughput of a NATS-backed server as a ratio to a
memory-backed one.

    .venv/bin/python bench/nats_bench.py                 # history + register, embedded nats-server
    .venv/bin/python bench/nats_bench.py --nats-url nats://127.0.0.1:4222
    .venv/bin/python bench/nats_bench.py --fanout        # + fan-out (bench/fanout.py harness)

History (in-process, one broker object each, same machine and loop):

* ``hot``: ``history_from(epoch, 50)`` on a subscribed stream holding 100 messages (50
  returned), and ``history_since(0)`` (100 returned): the steady state, served from the
  NATS broker's local snapshot;
* ``new_subscriber``: what a client subscribing with history costs on a stream the node
  already follows: subscribe, ``history_from(epoch, 50)``, unsubscribe. The NATS broker asks
  JetStream for the last offset once per new subscription (one round trip, no messages);
* ``first``: the first read after a node starts following a stream (subscribe, then read
  from 0 a stream of 100 messages written by another node). This one asks JetStream for the
  stream's last offset and waits for the snapshot to have it: it includes setting up the
  consumer and receiving the messages;
* ``register``: one ``register()`` (memory: an append; NATS: a JetStream publish + ack).

Fan-out: ``bench/fanout.py``'s ``run_one`` (its C load generator, CPU pinning, one broadcast
at a time then a window of 8) run for ``pycable --broker memory`` and for
``pycable --broker nats --pubsub nats --embed_nats``, alternated, ratio of delivered
messages per second. The embedded nats-server inherits the server's CPU pinning (it runs
on the same core as pycable, as an embedded server would on a one-core node).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pycable.broker.base import HistoryPolicy  # noqa: E402
from pycable.broker.memory import MemoryBroker  # noqa: E402
from pycable.broker.nats import NatsBroker  # noqa: E402
from pycable.enats import EmbeddedNats  # noqa: E402
from pycable.protocol.broadcast import StreamMessage  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def summary_us(samples: list[float]) -> dict[str, float]:
    us = [s * 1e6 for s in samples]
    return {
        "n": len(us),
        "p50_us": round(pct(us, 50), 1),
        "p95_us": round(pct(us, 95), 1),
        "p99_us": round(pct(us, 99), 1),
        "mean_us": round(statistics.fmean(us), 1),
    }


async def timed(coro_factory: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await coro_factory()
        out.append(time.perf_counter() - t0)
    return out


async def bench_history(url: str, reads: int, first_streams: int) -> dict[str, Any]:
    policy = HistoryPolicy(100, 300)
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    memory = MemoryBroker(policy, 300)
    writer = NatsBroker([url], policy, 300, prefix=prefix)
    reader = NatsBroker([url], policy, 300, prefix=prefix)
    await memory.start()
    await writer.start()
    await reader.start()
    results: dict[str, Any] = {}
    try:
        for name, broker in (("memory", memory), ("nats", reader)):
            await broker.subscribe("hot")
            for i in range(100):
                await (writer if name == "nats" else broker).register(StreamMessage("hot", json.dumps({"i": i})))
            assert len(await broker.history_from("hot", broker.epoch, 0)) == 100  # warm (and verify)
            e = broker.epoch
            results[f"{name}_hot_from"] = summary_us(
                await timed(lambda b=broker, e=e: b.history_from("hot", e, 50), reads)
            )
            results[f"{name}_hot_since"] = summary_us(await timed(lambda b=broker: b.history_since("hot", 0), reads))

            async def subscribe_and_read(b: Any = broker, e: str = e) -> None:
                await b.subscribe("hot")
                assert len(await b.history_from("hot", e, 50)) == 50
                await b.unsubscribe("hot")

            results[f"{name}_new_subscriber"] = summary_us(await timed(subscribe_and_read, reads // 5))

        # First read after a node starts following a stream that another node wrote.
        for i in range(first_streams):
            for j in range(100):
                await writer.register(StreamMessage(f"first{i}", str(j)))
                await memory.register(StreamMessage(f"first{i}", str(j)))
        for name, broker in (("memory", memory), ("nats", reader)):
            samples = []
            for i in range(first_streams):
                t0 = time.perf_counter()
                await broker.subscribe(f"first{i}")
                got = await broker.history_from(f"first{i}", broker.epoch, 0)
                samples.append(time.perf_counter() - t0)
                assert len(got) == 100, len(got)
            results[f"{name}_first_read"] = summary_us(samples)

        for name, broker in (("memory", memory), ("nats", writer)):
            results[f"{name}_register"] = summary_us(
                await timed(lambda b=broker: b.register(StreamMessage("reg", '{"x":1}')), reads // 5)
            )
    finally:
        await memory.shutdown()
        await writer.shutdown()
        await reader.shutdown()
        await _cleanup(url, prefix)
    return results


async def _cleanup(url: str, prefix: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for si in await js.streams_info():
            name = si.config.name or ""
            if name.startswith(prefix) or name.startswith(f"KV_{prefix}"):
                await js.delete_stream(name)
    finally:
        await nc.close()


def bench_fanout(n: int, rounds: int, quick: bool) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("fanout_harness", ROOT / "bench" / "fanout.py")
    assert spec and spec.loader
    fanout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fanout)
    stores: list[str] = []

    def argv() -> list[str]:
        stores.append(tempfile.mkdtemp(prefix="pycable-bench-nats-"))
        return [
            str(fanout.PYTHON), "-m", "pycable", "--public", "--broker", "nats", "--pubsub", "nats",
            "--embed_nats", "--enats_addr", f"nats://127.0.0.1:{free_port()}", "--enats_store_dir", stores[-1],
        ]  # fmt: skip

    return fanout.compare_with_memory("nats", argv, n, rounds, quick, lambda: shutil.rmtree(stores[-1], True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nats-url", default="", help="use this NATS (JetStream on) instead of an embedded nats-server")
    ap.add_argument("--reads", type=int, default=5000, help="timed history reads per kind")
    ap.add_argument("--first", type=int, default=100, help="streams for the first-read measurement")
    ap.add_argument("--fanout", action="store_true", help="also measure fan-out throughput (needs taskset, cc)")
    ap.add_argument("--n", type=int, default=1000, help="fan-out subscribers")
    ap.add_argument("--rounds", type=int, default=2, help="fan-out rounds (memory and NATS alternate)")
    ap.add_argument("--quick", action="store_true", help="smaller run")
    args = ap.parse_args()
    if args.quick:
        args.reads, args.first, args.n, args.rounds = 1000, 20, 200, 1

    async def run() -> dict[str, Any]:
        server = None
        url = args.nats_url
        if not url:
            server = EmbeddedNats(f"nats://127.0.0.1:{free_port()}", jetstream=True)
            await server.start()
            url = server.client_url
        try:
            return {"nats": url, "embedded": server is not None, **await bench_history(url, args.reads, args.first)}
        finally:
            if server is not None:
                await server.shutdown()

    try:
        import uvloop

        history = uvloop.run(run())
    except ImportError:
        history = asyncio.run(run())
    doc: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "args": vars(args),
        "history": history,
    }
    print(f"NATS: {history['nats']} ({'embedded' if history['embedded'] else 'external'})")
    print(f"{'measure':<22}{'p50 us':>10}{'p95 us':>10}{'p99 us':>10}{'mean us':>10}")
    for kind in ("hot_from", "hot_since", "new_subscriber", "first_read", "register"):
        for broker in ("memory", "nats"):
            s = history[f"{broker}_{kind}"]
            print(f"{broker + ' ' + kind:<22}{s['p50_us']:>10}{s['p95_us']:>10}{s['p99_us']:>10}{s['mean_us']:>10}")
    for kind in ("hot_from", "new_subscriber"):
        p95 = history[f"nats_{kind}"]["p95_us"] / 1000
        print(f"NATS {kind} p95 = {p95:.3f} ms (target <= 2 ms): {'PASS' if p95 <= 2 else 'MISS'}")
    if args.fanout:
        fo = bench_fanout(args.n, args.rounds, args.quick)
        doc["fanout"] = fo
        print(
            f"fan-out N={fo['n']}: memory {fo['memory_msgs_per_s']} msg/s, NATS {fo['nats_msgs_per_s']} msg/s, "
            f"ratio {fo['nats_vs_memory']} (rounds: {fo['nats_vs_memory_rounds']}); fan p50 "
            f"{fo['memory_fan_p50_ms']} / {fo['nats_fan_p50_ms']} ms"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"nats-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(doc, indent=2))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
