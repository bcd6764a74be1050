"""``/health`` tells the truth: 503 with the reason while a configured broker, pub/sub or
broadcaster is down, 200 again when it is back; the outage and the recovery are logged."""

from __future__ import annotations

import time

import pytest

from helpers.redis_server import RedisServer
from helpers.server import ServerProcess, free_port

pytestmark = pytest.mark.redis


def _wait_status(srv: ServerProcess, status: int, timeout: float = 30.0) -> bytes:
    """Poll /health (another process: no event to await) until it answers *status*."""
    deadline = time.monotonic() + timeout
    last: tuple[int, bytes] = (0, b"")
    while time.monotonic() < deadline:
        last = srv.get("/health")
        if last[0] == status:
            return last[1]
        time.sleep(0.1)
    raise AssertionError(f"/health stayed {last} instead of {status}:\n{srv.log()}")


def test_an_unreachable_redis_is_503_with_the_reason():
    port = free_port()  # nothing listens there
    with ServerProcess("--broker=redis", f"--redis_url=redis://127.0.0.1:{port}", ready=(200, 503)) as srv:
        status, body = srv.get("/health")
        assert status == 503, body
        assert f"Redis broker at 127.0.0.1:{port} is unreachable" in body.decode()
        assert f"Redis pub/sub at 127.0.0.1:{port} is unreachable" in body.decode()
        log = srv.log()
        assert f"WRN Redis broker at 127.0.0.1:{port} is unreachable: " in log
        assert "WRN not ready: Redis broker at" in log  # said plainly after the start-up lines
        # broadcasts are refused meanwhile (the broker cannot register them)
        assert srv.broadcast('{"stream":"s","data":"1"}')[0] == 503


def test_redis_down_then_back_is_503_then_200_and_logged():
    with RedisServer() as redis, ServerProcess("--broker=redis", f"--redis_url={redis.url}") as srv:
        assert srv.get("/health")[0] == 200
        redis.stop()
        body = _wait_status(srv, 503)
        assert b"is unreachable" in body
        redis.start()
        _wait_status(srv, 200)
        log = srv.log()
        assert "is unreachable" in log and "is reachable again after" in log
