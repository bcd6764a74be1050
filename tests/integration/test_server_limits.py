"""Issue 14 on a real server process: what unauthenticated clients can make it hold (RSS of
the process, generous bounds that still fail before the fixes)."""

from __future__ import annotations

import socket
import time

import pytest

from helpers.server import ServerProcess

KEY = "sekrit"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def status_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


@pytest.mark.slow
def test_unauthenticated_bodies_are_not_read():
    """8 connections each POSTing 15 MiB without the key: 401 at the head, RSS grows < 30 MB."""
    with ServerProcess("--noauth", "--broadcast_key", KEY, "--broker", "memory") as server:
        assert server.proc is not None
        before = rss_mb(server.proc.pid)
        body = b"x" * (1 << 20)
        socks = []
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", server.bport), timeout=30)
            s.sendall(b"POST /_broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: 15728640\r\n\r\n")
            socks.append(s)
        for s in socks:
            try:
                for _ in range(15):
                    s.sendall(body)
            except OSError:
                pass  # answered and closed: the body is not wanted
        peak = rss_mb(server.proc.pid)
        for s in socks:
            assert status_line(s).startswith(b"HTTP/1.1 401"), "the key is checked before the body"
            s.close()
        assert peak - before < 30, f"RSS grew by {peak - before:.0f} MB"


@pytest.mark.slow
def test_pipelined_answers_that_are_never_read_are_bounded():
    """40 MB of pipelined GET /health, never reading an answer: RSS grows < 64 MB."""
    with ServerProcess("--public", "--broker", "memory") as server:
        assert server.proc is not None
        before = rss_mb(server.proc.pid)
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        chunk = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 10_000
        sent, peak = 0, before
        deadline = time.monotonic() + 60
        try:
            while sent < 40_000_000 and time.monotonic() < deadline:
                s.sendall(chunk)  # blocks (then times out) once the server stops reading
                sent += len(chunk)
                peak = max(peak, rss_mb(server.proc.pid))
        except (TimeoutError, OSError):
            pass
        peak = max(peak, rss_mb(server.proc.pid))
        s.close()
        assert peak - before < 64, f"RSS grew by {peak - before:.0f} MB after {sent / 1e6:.0f} MB of requests"
