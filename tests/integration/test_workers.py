"""``--workers``: a supervisor and real worker processes sharing ports and an embedded NATS.

What each test proves:
* ``--max-conn`` is divided between the workers, so two accepted clients under
  ``--max-conn 2`` are on different workers; a broadcast posted to the shared broadcast port
  (taken by one worker) reaches both, exactly once and in order;
* every log line of a worker says which one wrote it;
* SIGTERM to the supervisor drains every worker gracefully (``server_restart``), then it exits 0;
* a worker killed with SIGKILL is started again, and a session it held resumes on a worker
  with the messages broadcast in between;
* workers that cannot listen at all (the port is held without SO_REUSEPORT) stop the server
  with exit code 1 instead of restarting forever.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from websockets.exceptions import InvalidStatus

from helpers.client import CableClient, ident
from helpers.server import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.nats, pytest.mark.timeout(120)]

FLAGS = ("--presets", "broker", "--public", "--workers", "2")


def workers_server(*extra: str) -> ServerProcess:
    srv = ServerProcess(*FLAGS, *extra)
    # The embedded NATS of the supervisor, not a Redis/NATS from the environment.
    srv.env = {k: v for k, v in srv.env.items() if not k.startswith("ANYCABLE_") and k not in ("REDIS_URL", "NATS_URL")}
    return srv


def wait_log(srv: ServerProcess, pattern: str, count: int = 1, timeout: float = 40.0) -> list[re.Match[str]]:
    """The first *count* matches of *pattern* in the server's log (bounded poll: the log is
    another process's output, there is no event to await)."""
    deadline = time.monotonic() + timeout
    while True:
        found = list(re.finditer(pattern, srv.log()))
        if len(found) >= count:
            return found[:count]
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} x{count} not in the log:\n{srv.log()[-6000:]}")
        time.sleep(0.05)


def worker_pids(srv: ServerProcess) -> dict[int, int]:
    pids: dict[int, int] = {}
    for m in re.finditer(r"worker (\d+) ready pid=(\d+)", srv.log()):
        pids[int(m.group(1))] = int(m.group(2))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def open_until(url: str, accepted: int, attempts: int) -> tuple[list[CableClient], int]:
    """Open connections one by one; keep the accepted ones; count the 503 refusals."""
    clients: list[CableClient] = []
    refused = 0
    for _ in range(attempts):
        try:
            c = await CableClient.open(url)
        except InvalidStatus as exc:
            assert exc.response.status_code == 503, exc
            refused += 1
            continue
        await c.welcome()
        clients.append(c)
        if len(clients) == accepted and refused >= 3:
            break
    return clients, refused


async def test_max_conn_is_shared_and_broadcasts_reach_every_worker() -> None:
    with workers_server("--max-conn", "2") as srv:
        wait_log(srv, r"all 2 workers ready")
        clients, refused = await open_until(srv.url, 2, 60)
        try:
            # Each worker admits one: the total is --max-conn, and the two are on different workers.
            assert len(clients) == 2 and refused >= 3, (len(clients), refused)
            for c in clients:
                assert (await c.subscribe(ident("w")))["type"] == "confirm_subscription"
            for n in range(1, 21):  # each POST is a new connection: the kernel picks the worker
                status, _ = srv.broadcast(json.dumps({"stream": "w", "data": json.dumps({"n": n})}))
                assert status == 201
            for c in clients:
                await c.wait_for(lambda m: m.get("message") == {"n": 20}, timeout=20)
                # Pub/sub keeps per-stream order, so a duplicate would have come before n=20.
                assert [m["message"]["n"] for m in c.messages()] == list(range(1, 21))
        finally:
            for c in clients:
                await c.close()
        log = srv.log()
        assert re.search(r"context=main worker=1$", log, re.M) and re.search(r"context=main worker=2$", log, re.M)
        assert "starting 2 workers (broker=nats pubsub=nats embedded_nats=" in log


async def test_sigterm_drains_every_worker_then_the_supervisor_exits() -> None:
    srv = workers_server()
    srv.start()
    try:
        wait_log(srv, r"all 2 workers ready")
        pids = worker_pids(srv)
        assert len(pids) == 2
        clients, _ = await open_until(srv.url, 8, 8)
        assert len(clients) == 8
        srv.signal(signal.SIGTERM)
        for c in clients:
            msg = await c.wait_for({"type": "disconnect"}, timeout=20)
            assert msg["reason"] == "server_restart" and msg["reconnect"] is True
            await asyncio.wait_for(c.closed.wait(), 20)
        assert srv.wait(30) == 0
        assert not any(alive(p) for p in pids.values())
        log = srv.log()
        assert log.count("Shutting down...") == 2
        assert "all workers stopped" in log and "restarting" not in log
    finally:
        srv.stop()


async def test_killed_worker_is_restarted_and_its_session_resumes_with_what_it_missed() -> None:
    with workers_server("--sessions_ttl", "300") as srv:
        wait_log(srv, r"all 2 workers ready")
        pids = worker_pids(srv)
        # A client on worker 1: open until one lands there (the other worker's are closed).
        target = None
        for _ in range(60):
            c = await CableClient.open(srv.url)
            welcome = await c.welcome()
            if socket_owner(c.ws.transport.get_extra_info("sockname")[1], pids) == 1:
                target = (c, welcome["sid"])
                break
            await c.close()
        assert target is not None, "no connection landed on worker 1 in 60 tries"
        client, sid = target
        assert (await client.subscribe(ident("k")))["type"] == "confirm_subscription"
        srv.broadcast(json.dumps({"stream": "k", "data": json.dumps({"n": 1})}))
        first = await client.wait_for(lambda m: m.get("message") == {"n": 1}, timeout=20)
        os.kill(pids[1], signal.SIGKILL)
        await asyncio.wait_for(client.closed.wait(), 20)
        for n in (2, 3):  # while the worker is gone
            status, _ = srv.broadcast(json.dumps({"stream": "k", "data": json.dumps({"n": n})}))
            assert status == 201
        wait_log(srv, rf"worker 1 pid={pids[1]} exited with -9: restarting")
        wait_log(srv, r"worker 1 ready pid=(\d+)", count=2)
        assert worker_pids(srv)[1] != pids[1]
        # Resume the session on whichever worker takes the new connection.
        again = await CableClient.open(f"{srv.url}?sid={sid}")
        try:
            welcome = await again.welcome()
            assert welcome.get("restored") is True and welcome["restored_ids"] == [ident("k")], welcome
            await again.send({"command": "history", "identifier": ident("k"), "history": {
                "streams": {"k": {"epoch": first["epoch"], "offset": first["offset"]}}}})
            got = await again.wait_count(lambda m: m.get("stream_id") == "k", 2, timeout=20)
            assert [m["message"]["n"] for m in got] == [2, 3]
        finally:
            await again.close()


def socket_owner(client_port: int, pids: dict[int, int]) -> int | None:
    """The worker number whose process holds the server end of our connection."""
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            remote_port = int(parts[2].split(":")[1], 16)
            if remote_port == client_port:
                inode = parts[9]
                break
    if inode is None:
        return None
    for number, pid in pids.items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return number
            except OSError:
                continue
    return None


def test_workers_that_never_listen_stop_the_server() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        srv = workers_server()
        argv = [sys.executable, "-m", "pycable", "--host", "127.0.0.1", "--port", str(holder.getsockname()[1]),
                "--http_broadcast_port", str(srv.bport), *FLAGS]  # fmt: skip
        proc = subprocess.run(argv, env=srv.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert re.search(r"worker \d pid=\d+ exited with 1 before it was ever ready: stopping", proc.stderr), proc.stderr
    assert "restarting" not in proc.stderr and "all workers stopped" in proc.stderr
