"""Reliable-streams benchmark (issue 3): a reconnect storm and history latency.

    .venv/bin/python bench/reconnect.py            # N=1000 clients, 50 missed messages each
    .venv/bin/python bench/reconnect.py --n 200 --missed 20

1. Start pycable (`--public --broker memory`) pinned to CPU 0. The clients run in this
   process (uvloop, raw asyncio protocols: frame headers parsed, payload JSON decoded only for
   the welcome), pinned to CPU 1.
2. N ext-protocol clients connect and subscribe to one stream; one broadcast tells each
   client its position (epoch, offset).
3. All N sockets are cut at once (no close handshake); M messages are broadcast.
4. All N reconnect together with `?sid=`; on the restored welcome each sends its `history`
   request. Reported: the time from the first reconnect until every client has all M
   messages and `confirm_history`, and a check that each got exactly M, in order.
5. History latency over the wire: one client sends K history requests one after another
   (50 messages each); request → `confirm_history` p50/p95. Plus the broker call alone
   (`MemoryBroker.history_from`, in-process) p50/p95.

Targets (issue 3): catch-up ≤ 2 s for N=1000, M=50; history p95 ≤ 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers.server import free_port  # noqa: E402

IDENT = '{"channel":"$pubsub","stream_name":"bench"}'
IDENT_JSON = json.dumps(IDENT)


class Client(asyncio.Protocol):
    """A minimal WebSocket client: upgrade, masked sends, unmasked frames parsed by header."""

    def __init__(self, path: str, on_frame) -> None:
        self.path = path
        self.on_frame = on_frame
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (f"GET {self.path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Protocol: actioncable-v1-ext-json\r\n\r\n").encode()
        )

    def send(self, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x81, 0x80 | n]) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(head + mask + masked)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            del buf[: end + 4]
            self.upgraded = True
        while len(buf) >= 2:
            n, pos = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, pos = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, pos = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < pos + n:
                return
            opcode, payload = buf[0] & 0x0F, bytes(buf[pos : pos + n])
            del buf[: pos + n]
            if opcode == 1:
                self.on_frame(self, payload)

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class Sub:
    """One benchmark client's state across its two connections."""

    def __init__(self) -> None:
        self.sid = ""
        self.epoch = ""
        self.offset = 0
        self.got: list[int] = []
        self.welcomed = asyncio.get_running_loop().create_future()
        self.confirmed = asyncio.get_running_loop().create_future()
        self.positioned = asyncio.get_running_loop().create_future()
        self.done = asyncio.get_running_loop().create_future()
        self.done_at = 0.0
        self.restored = False
        self.history_confirmed = False

    def on_frame(self, conn: Client, payload: bytes) -> None:
        if payload.startswith(b'{"type":"welcome"'):
            msg = json.loads(payload)
            self.sid = msg["sid"]
            self.restored = bool(msg.get("restored"))
            if self.restored:
                conn.send(json.dumps({"command": "history", "identifier": IDENT, "history": {
                    "streams": {"bench": {"epoch": self.epoch, "offset": self.offset}}}}).encode())
            if not self.welcomed.done():
                self.welcomed.set_result(None)
        elif b'"confirm_subscription"' in payload:
            if not self.confirmed.done():
                self.confirmed.set_result(None)
        elif b'"confirm_history"' in payload:
            self.history_confirmed = True
            self._check()
        elif b'"offset":' in payload:
            offset = int(payload[payload.rindex(b'"offset":') + 9 : -1])
            if not self.positioned.done():
                msg = json.loads(payload)
                self.epoch, self.offset = msg["epoch"], offset
                self.positioned.set_result(None)
            else:
                self.got.append(offset)
                self._check()

    def _check(self) -> None:
        if self.history_confirmed and len(self.got) >= EXPECTED and not self.done.done():
            self.done_at = time.perf_counter()
            self.done.set_result(None)


EXPECTED = 50


async def connect(port: int, path: str, sub: Sub) -> Client:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: Client(path, sub.on_frame), "127.0.0.1", port)
    return proto


def broadcast(bport: int, body: object) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{bport}/_broadcast", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 201


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def storm(port: int, bport: int, n: int, missed: int) -> dict:
    global EXPECTED
    EXPECTED = missed
    subs = [Sub() for _ in range(n)]
    conns = []
    for i in range(0, n, 100):
        conns += await asyncio.gather(*(connect(port, "/cable", s) for s in subs[i : i + 100]))
    await asyncio.gather(*(s.welcomed for s in subs))
    for c in conns:
        c.send(json.dumps({"command": "subscribe", "identifier": IDENT}).encode())
    await asyncio.gather(*(s.confirmed for s in subs))
    await asyncio.to_thread(broadcast, bport, {"stream": "bench", "data": '{"first":true}'})
    await asyncio.gather(*(s.positioned for s in subs))
    for c in conns:
        c.transport.abort()
    await asyncio.gather(*(c.lost for c in conns))
    batch = [{"stream": "bench", "data": json.dumps({"i": i, "pad": "x" * 120})} for i in range(missed)]
    await asyncio.to_thread(broadcast, bport, batch)
    for s in subs:
        s.welcomed = asyncio.get_running_loop().create_future()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    conns = await asyncio.gather(*(connect(port, f"/cable?sid={s.sid}", s) for s in subs))
    await asyncio.wait_for(asyncio.gather(*(s.done for s in subs)), 60)
    elapsed = max(s.done_at for s in subs) - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    ok = all(s.restored for s in subs) and all(s.got == list(range(2, 2 + missed)) for s in subs)
    for c in conns:
        c.transport.close()
    return {
        "epoch": subs[0].epoch, "clients": n, "missed": missed, "catch_up_s": round(elapsed, 3), "exactly_once_in_order": ok,
        "client_cpu_s": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 3),
    }


async def history_latency(port: int, k: int, epoch: str) -> dict:
    """k subscribes-with-history on distinct identifiers (each its own cursor, so each replay
    really sends the backlog): request -> confirm_history, with every message in between."""
    loop = asyncio.get_running_loop()
    sub = Sub()
    waiter: list[asyncio.Future] = []

    def on_frame(conn: Client, payload: bytes) -> None:
        if b'"confirm_history"' in payload or b'"reject_history"' in payload:
            waiter[0].set_result(payload)
        else:
            sub.on_frame(conn, payload)

    _, conn = await loop.create_connection(lambda: Client("/cable", on_frame), "127.0.0.1", port)
    await sub.welcomed
    times = []
    for i in range(k):
        ident = json.dumps({"channel": "$pubsub", "stream_name": "bench", "n": i}, separators=(",", ":"))
        req = json.dumps({"command": "subscribe", "identifier": ident, "history": {
            "streams": {"bench": {"epoch": epoch, "offset": 1}}}})
        waiter[:] = [loop.create_future()]
        t0 = time.perf_counter()
        conn.send(req.encode())
        payload = await waiter[0]
        times.append((time.perf_counter() - t0) * 1000)
        assert b"confirm_history" in payload, payload
    conn.transport.close()
    return {"requests": k, "p50_ms": round(pct(times, 50), 3), "p95_ms": round(pct(times, 95), 3)}


async def broker_latency(k: int) -> dict:
    from pycable.broker.memory import MemoryBroker
    from pycable.protocol.broadcast import StreamMessage

    broker = MemoryBroker()
    for i in range(100):
        await broker.register(StreamMessage("s", json.dumps({"i": i})))
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        got = await broker.history_from("s", broker.epoch, 50)
        times.append((time.perf_counter() - t0) * 1000)
        assert len(got) == 50
    return {"calls": k, "p50_ms": round(pct(times, 50), 4), "p95_ms": round(pct(times, 95), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--missed", type=int, default=50)
    ap.add_argument("--requests", type=int, default=1000)
    args = ap.parse_args()
    port, bport = free_port(), free_port()
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "pycable", "--host", "127.0.0.1", "--port", str(port),
         "--http_broadcast_port", str(bport), "--public", "--broker", "memory", "--log_level", "warn"],
        cwd=ROOT,
    )
    try:
        os.sched_setaffinity(0, {1})
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                time.sleep(0.05)
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            run = asyncio.run
        result = {"storm": run(storm(port, bport, args.n, args.missed))}
        # The storm connected clients that the server forgets as they close; new clients now.
        sub_port = port
        result["history_over_the_wire"] = run(history_latency(sub_port, args.requests, result["storm"]["epoch"]))
        result["memory_broker_history_from"] = run(broker_latency(args.requests))
        print(json.dumps(result, indent=2))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
