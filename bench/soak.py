"""Soak test (issue 14): many clients cut at random while broadcasts flow.

    .venv/bin/python bench/soak.py                 # make soak: 2,000 clients, 10 minutes
    .venv/bin/python bench/soak.py --quick         # 60 s, 200 clients (run by make test)
    .venv/bin/python bench/soak.py --clients 500 --duration 120 --rate 5

1. Start pycable (`--public --broker memory`) as its own process, its log to a file.
2. N `actioncable-v1-ext-json` clients (raw asyncio sockets, uvloop) connect in batches and
   subscribe to one stream. A broadcaster POSTs one message every 1/rate seconds.
3. Each client, once it has its first message, is cut (socket aborted, no close
   handshake) after a random 2-6 s, and reconnects 0-0.5 s later with `?sid=<last sid>`;
   on the restored welcome it sends `history` from its last (epoch, offset), as
   `@anycable/core` does. (A reconnect that is not restored re-subscribes with that history;
   counted as `fresh_reconnects`.)
4. At the end the broadcaster stops, cutting stops, every client gets a last chance to
   catch up, then each client's offsets are checked: every offset after its first, once
   each, in order.
5. The server's RSS is sampled every few seconds; after the warm-up a least-squares slope is
   reported in MB/min. The server log must hold no traceback.

Every reconnect leaves the previous sid's session in the cache for `--sessions_ttl`, so the
cache grows for one TTL before it is flat. The soak runs with `--sessions_ttl` 60 s (10 s with
`--quick`) and a warm-up of the first 20 % of the run or two TTLs, whichever is longer.

Exit status 0 when: 100 % delivered, no duplicate, nothing out of order, no traceback, and the
RSS growth over the post-warm-up window (slope x window) is under --rss-budget MB.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from reconnect import Client  # noqa: E402

from helpers.server import ServerProcess  # noqa: E402

STREAM = "soak"
IDENT = json.dumps({"channel": "$pubsub", "stream_name": STREAM})


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    den = sum((t - mx) ** 2 for t, _ in samples)
    return 0.0 if den == 0 else 60 * sum((t - mx) * (v - my) for t, v in samples) / den


class SoakClient:
    """One client across all its connections: its sid, position and every offset it got."""

    def __init__(self, soak: Soak) -> None:
        self.soak = soak
        self.sid = ""
        self.epoch = ""
        self.got: list[int] = []
        self.conn: Client | None = None
        self.positioned = asyncio.get_running_loop().create_future()
        self.connects = 0
        self.welcomed: asyncio.Future[None] | None = None
        self.connected_at = 0.0
        self.restores = 0
        self.fresh = 0
        self.rejects = 0

    @property
    def offset(self) -> int:
        return self.got[-1] if self.got else 0

    def history(self) -> dict[str, object]:
        return {"streams": {STREAM: {"epoch": self.epoch, "offset": self.offset}}}

    def on_frame(self, conn: Client, payload: bytes) -> None:
        if payload.startswith(b'{"type":"welcome"'):
            msg = json.loads(payload)
            restoring = bool(self.sid)
            self.sid = msg["sid"]
            if self.welcomed is not None and not self.welcomed.done():
                self.soak.welcome_latency.append(time.monotonic() - self.connected_at)
                self.welcomed.set_result(None)
            if not restoring:
                conn.send(json.dumps({"command": "subscribe", "identifier": IDENT}).encode())
            elif msg.get("restored"):
                self.restores += 1
                conn.send(json.dumps({"command": "history", "identifier": IDENT, "history": self.history()}).encode())
            else:
                self.fresh += 1
                conn.send(json.dumps({"command": "subscribe", "identifier": IDENT, "history": self.history()}).encode())
        elif b'"offset":' in payload:
            offset = int(payload[payload.rindex(b'"offset":') + 9 : payload.rindex(b"}")])
            if not self.epoch:
                self.epoch = json.loads(payload)["epoch"]
            self.got.append(offset)
            if not self.positioned.done():
                self.positioned.set_result(None)
        elif b'"reject_history"' in payload:
            self.rejects += 1

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        path = f"/cable?sid={self.sid}" if self.sid else "/cable"
        self.connects += 1
        self.welcomed = loop.create_future()
        self.connected_at = time.monotonic()
        _, self.conn = await loop.create_connection(lambda: Client(path, self.on_frame), "127.0.0.1", self.soak.port)

    async def run(self) -> None:
        """Wait for the first message, then cut and reconnect at random until told to stop."""
        await self.positioned
        rnd = self.soak.rnd
        while not self.soak.stop_cutting.is_set():
            try:
                await asyncio.wait_for(self.soak.stop_cutting.wait(), rnd.uniform(2.0, 6.0))
                break
            except TimeoutError:
                pass
            assert self.conn is not None and self.conn.transport is not None
            self.conn.transport.abort()
            await self.conn.lost
            await asyncio.sleep(rnd.uniform(0.0, 0.5))
            while True:
                try:
                    await self.connect()
                except OSError:
                    self.soak.connect_errors += 1
                    await asyncio.sleep(0.5)
                    continue
                # The next cut is timed from the welcome: a client is not cut while the server
                # is still answering its reconnect.
                assert self.welcomed is not None
                try:
                    await asyncio.wait_for(asyncio.shield(self.welcomed), 60)
                    break
                except TimeoutError:
                    self.soak.welcome_timeouts += 1
                    assert self.conn is not None and self.conn.transport is not None
                    self.conn.transport.abort()
                    await self.conn.lost


class Soak:
    def __init__(self, args: argparse.Namespace, server: ServerProcess) -> None:
        self.args = args
        self.server = server
        self.port = server.port
        self.rnd = random.Random(args.seed)
        self.stop_cutting = asyncio.Event()
        self.sent = 0
        self.connect_errors = 0
        self.welcome_timeouts = 0
        self.welcome_latency: list[float] = []
        self.broadcast_errors = 0
        self.rss: list[tuple[float, float]] = []

    async def broadcaster(self, stop: asyncio.Event) -> None:
        interval = 1.0 / self.args.rate
        next_at = time.monotonic()
        while not stop.is_set():
            body = json.dumps({"stream": STREAM, "data": json.dumps({"i": self.sent, "pad": "x" * 64})})
            status, _ = await asyncio.to_thread(self.server.broadcast, body)
            if status in (200, 201):
                self.sent += 1
            else:
                self.broadcast_errors += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def sampler(self, start: float, stop: asyncio.Event) -> None:
        assert self.server.proc is not None
        while not stop.is_set():
            self.rss.append((time.monotonic() - start, rss_kb(self.server.proc.pid) / 1024))
            try:
                await asyncio.wait_for(stop.wait(), self.args.sample)
            except TimeoutError:
                pass

    async def run(self) -> dict[str, object]:
        args = self.args
        clients = [SoakClient(self) for _ in range(args.clients)]
        start = time.monotonic()
        stop_bcast, stop_sampling = asyncio.Event(), asyncio.Event()
        sampler = asyncio.create_task(self.sampler(start, stop_sampling))
        bcast = asyncio.create_task(self.broadcaster(stop_bcast))
        for i in range(0, len(clients), 100):
            await asyncio.gather(*(c.connect() for c in clients[i : i + 100]))
        await asyncio.wait_for(asyncio.gather(*(c.positioned for c in clients)), 120)
        ready = time.monotonic() - start
        runners = [asyncio.create_task(c.run()) for c in clients]
        await asyncio.sleep(max(0.0, args.duration - (time.monotonic() - start)))
        self.stop_cutting.set()
        await asyncio.gather(*runners)
        stop_bcast.set()
        await bcast
        final = self.sent
        # Catch-up: every client must reach the last offset (they are all connected now).
        deadline = time.monotonic() + args.catch_up
        while time.monotonic() < deadline and any(c.offset < final for c in clients):
            await asyncio.sleep(0.2)
        stop_sampling.set()
        await sampler
        cpu = cpu_seconds(self.server.proc.pid) if self.server.proc is not None else 0.0
        for c in clients:
            if c.conn is not None and c.conn.transport is not None:
                c.conn.transport.close()

        missing = duplicates = disorder = 0
        for c in clients:
            got = c.got
            first = got[0]
            seen = set(got)
            duplicates += len(got) - len(seen)
            disorder += sum(1 for a, b in itertools.pairwise(got) if b <= a)
            missing += sum(1 for o in range(first, final + 1) if o not in seen)
        expected = sum(final - c.got[0] + 1 for c in clients)
        warm = [(t, v) for t, v in self.rss if t >= max(args.duration * 0.2, 2 * args.sessions_ttl)]
        slope = slope_per_min(warm)
        window_min = (warm[-1][0] - warm[0][0]) / 60 if len(warm) > 1 else 0.0
        log = self.server.log()
        result: dict[str, object] = {
            "clients": args.clients,
            "duration_s": args.duration,
            "rate_per_s": args.rate,
            "sessions_ttl_s": args.sessions_ttl,
            "clients_ready_s": round(ready, 1),
            "broadcasts": final,
            "broadcast_errors": self.broadcast_errors,
            "connects": sum(c.connects for c in clients),
            "restores": sum(c.restores for c in clients),
            "fresh_reconnects": sum(c.fresh for c in clients),
            "history_rejected": sum(c.rejects for c in clients),
            "connect_errors": self.connect_errors,
            "welcome_timeouts": self.welcome_timeouts,
            "welcome_p50_ms": round(1000 * pct(self.welcome_latency, 50), 1),
            "welcome_p99_ms": round(1000 * pct(self.welcome_latency, 99), 1),
            "server_cpu_pct": round(100 * cpu / (time.monotonic() - start), 1),
            "expected_deliveries": expected,
            "delivered_pct": round(100 * (expected - missing) / expected, 4) if expected else 0.0,
            "missing": missing,
            "duplicates": duplicates,
            "out_of_order": disorder,
            "rss_start_mb": round(self.rss[0][1], 1) if self.rss else 0,
            "rss_after_warmup_mb": round(warm[0][1], 1) if warm else 0,
            "rss_end_mb": round(self.rss[-1][1], 1) if self.rss else 0,
            "rss_max_mb": round(max(v for _, v in self.rss), 1) if self.rss else 0,
            "rss_slope_mb_per_min": round(slope, 3),
            "rss_growth_after_warmup_mb": round(slope * window_min, 1),
            "tracebacks": log.count("Traceback"),
            "log_errors": sum(1 for line in log.splitlines() if " ERROR " in line or '"level":"error"' in line),
        }
        result["pass"] = (
            missing == 0 and duplicates == 0 and disorder == 0 and result["tracebacks"] == 0
            and slope * window_min < args.rss_budget and final > 0
        )
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="60 s with 200 clients (make test)")
    ap.add_argument("--clients", type=int, default=None, help="default 2000 (200 with --quick)")
    ap.add_argument("--duration", type=float, default=None, help="seconds of cutting (default 600; 60 with --quick)")
    ap.add_argument("--rate", type=float, default=5.0, help="broadcasts per second")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--catch-up", type=float, default=60.0, help="seconds the clients get to catch up at the end")
    ap.add_argument("--rss-budget", type=float, default=None,
                    help="MB of RSS growth allowed after warm-up (default 20; 40 with --quick, whose window is short)")
    ap.add_argument("--sessions-ttl", type=float, default=None, help="the server's --sessions_ttl (60; 10 with --quick)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=str, default="", help="also write the result here")
    args = ap.parse_args()
    if args.clients is None:
        args.clients = 200 if args.quick else 2000
    if args.duration is None:
        args.duration = 60.0 if args.quick else 600.0
    if args.rss_budget is None:
        args.rss_budget = 40.0 if args.quick else 20.0
    if args.sessions_ttl is None:
        args.sessions_ttl = 10.0 if args.quick else 60.0
    if args.quick:
        args.sample = min(args.sample, 2.0)
    server = ServerProcess("--public", "--broker", "memory", "--history_limit", "1000", "--log_level", "info",
                           "--sessions_ttl", str(args.sessions_ttl))
    with server:
        try:
            import uvloop

            result = uvloop.run(Soak(args, server).run())
        except ImportError:
            result = asyncio.run(Soak(args, server).run())
        if result["tracebacks"]:
            print(server.log()[-5000:], file=sys.stderr)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0 if result["pass"] else 1)


if __name__ == "__main__":
    main()
