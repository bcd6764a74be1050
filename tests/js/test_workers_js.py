"""``--workers 2`` with the real ``@anycable/core`` client: the jitter scenario across two
workers, and a worker killed with SIGKILL under load. Clients reconnect to whichever worker the
kernel gives them (SO_REUSEPORT), resume their session there and lose nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
from test_js_client import (  # noqa: F401 - env is a fixture
    BROKER_FLAGS,
    Harness,
    Server,
    assert_delivered_exactly_once,
    env,
    run_jitter,
)

pytestmark = [pytest.mark.js, pytest.mark.slow, pytest.mark.nats]

WORKERS = (*BROKER_FLAGS, "--workers", "2")


def wait_log(srv: Server, pattern: str, count: int = 1, timeout: float = 40.0) -> list[re.Match[str]]:
    """The first *count* matches of *pattern* in the server log (bounded poll: another
    process's output has no event to await)."""
    deadline = time.monotonic() + timeout
    while True:
        found = list(re.finditer(pattern, srv.log_path.read_text(errors="replace")))
        if len(found) >= count:
            return found[:count]
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} x{count} not in the server log")
        time.sleep(0.05)


@pytest.mark.timeout(180)
def test_jitter_across_two_workers_exactly_once(env: Harness) -> None:  # noqa: F811
    srv = env.server(*WORKERS)
    wait_log(srv, r"all 2 workers ready")
    run_jitter(env, srv, finish_timeout_ms=15000)  # each broadcast POST is taken by either worker
    assert "restarting" not in srv.log_path.read_text()


@pytest.mark.timeout(180)
def test_kill_9_of_a_worker_under_load_loses_nothing(env: Harness) -> None:  # noqa: F811
    srv = env.server(*WORKERS)
    wait_log(srv, r"all 2 workers ready")
    pids = {int(m.group(1)): int(m.group(2)) for m in wait_log(srv, r"worker (\d+) ready pid=(\d+)", count=2)}
    clients = 100
    j = env.jitter(srv.ws_url, stream="load", clients=clients, batch=25, finishTimeoutMs=20000)
    ready = j.wait_for({"event": "ready"}, timeout=90)
    assert ready["subscribed"] == clients, ready
    total = 100  # 20 per second for 5 s; worker 1 is killed after the 30th
    start = time.monotonic()
    for n in range(1, total + 1):
        srv.broadcast("load", {"seq": n})
        if n == 30:
            os.kill(pids[1], signal.SIGKILL)
        delay = start + n * 0.05 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    wait_log(srv, rf"worker 1 pid={pids[1]} exited with -9: restarting")
    j.send(cmd="finish", expected=total)
    result = j.wait_for({"event": "result"}, timeout=40)
    print("kill -9 totals:", json.dumps(result["totals"]))
    totals = assert_delivered_exactly_once(result, clients)
    # The killed worker's clients (about half) came back and resumed their sessions.
    assert totals["restored"] >= 1 and totals["fresh"] == 0, totals
    wait_log(srv, r"worker 1 ready pid=(\d+)", count=2)
