"""SSE end to end: a WHATWG EventSource client (the ``eventsource`` npm package, in Node)
against a real pycable process with ``--sse`` and a broker: live messages, dropped streams
and EventSource's own reconnects with ``Last-Event-ID``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from test_js_client import BROKER_FLAGS, Harness, NodeProc

pytestmark = pytest.mark.js


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def sse(env: Harness, url: str, name: str = "sse", **config: Any) -> NodeProc:
    proc = NodeProc(env.node, "sse.mjs", {"url": url, **config}, env.dir, name)
    env.procs.append(proc)
    proc.wait_for({"event": "started"}, what="started")
    return proc


def events_url(port: int, stream: str) -> str:
    return f"http://127.0.0.1:{port}/events?stream={quote(stream)}"


def test_eventsource_gets_live_messages_and_every_missed_one_after_a_drop(env: Harness) -> None:
    srv = env.server(*BROKER_FLAGS, "--sse")
    client = sse(env, events_url(srv.port, "sse-live"), clients=1)
    client.wait_for({"event": "open", "n": 1}, timeout=20)
    for n in range(1, 6):
        srv.broadcast("sse-live", {"seq": n})
    first = client.wait_count({"event": "message"}, 5, timeout=20)
    assert [e["seq"] for e in first] == [1, 2, 3, 4, 5]
    assert all(e["id"].endswith("/sse-live") and e["id"].split("/")[0].isdigit() for e in first), first
    # Broadcasts keep flowing from another thread while the stream is dropped and EventSource
    # reconnects on its own (after its default 3 s retry).
    total = 40
    done = threading.Event()

    def flow() -> None:
        for n in range(6, total + 1):
            srv.broadcast("sse-live", {"seq": n})
            time.sleep(0.15)  # pacing the producer, not synchronisation
        done.set()

    thread = threading.Thread(target=flow)
    thread.start()
    client.wait_count({"event": "message"}, 8, timeout=20)
    client.send(cmd="cut", i=0)
    cut = client.wait_for({"event": "cut"}, timeout=10)
    assert cut["lastEventId"].endswith("/sse-live"), cut
    client.wait_for({"event": "open", "n": 2}, timeout=20)
    thread.join(timeout=60)
    assert done.is_set()
    got = client.wait_count({"event": "message"}, total, timeout=30)
    assert [e["seq"] for e in got] == list(range(1, total + 1)), "every message exactly once, in order"
    offsets = [int(e["id"].split("/")[0]) for e in got]
    assert offsets == list(range(offsets[0], offsets[0] + total)), offsets
    client.send(cmd="report")
    report = client.wait_for({"event": "report"})["clients"][0]
    assert report["errors"] == [] and report["cuts"] == 1 and report["opens"] == 2, report


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sse_jitter_100_clients_exactly_once_in_order(env: Harness) -> None:
    srv = env.server(*BROKER_FLAGS, "--sse")
    clients = 100
    j = sse(env, events_url(srv.port, "sse-jitter"), name="sse-jitter", clients=clients, cutEveryMs=[3000, 6000])
    j.wait_for({"event": "ready"}, timeout=60)
    j.send(cmd="start_jitter")
    j.wait_for({"event": "jitter_started"})
    total = 60  # 2 per second for 30 s
    srv.broadcast_paced("sse-jitter", total, every=0.5)
    j.send(cmd="stop_jitter")
    j.wait_for({"event": "jitter_stopped"})
    # Every client is back and has caught up (EventSource retries after 3 s).
    deadline = time.monotonic() + 60
    while True:
        mark = j.mark()
        j.send(cmd="report")
        report = j.wait_for({"event": "report"}, start=mark)["clients"]
        if all(len(c["seqs"]) >= total for c in report) or time.monotonic() > deadline:
            break
        time.sleep(1.0)  # polling another process's state: no event to await across it
    bad = [c for c in report if c["seqs"] != list(range(1, total + 1)) or c["errors"]]
    cuts = sum(c["cuts"] for c in report)
    print("sse jitter:", json.dumps({"clients": clients, "cuts": cuts, "bad": len(bad)}))
    assert not bad, json.dumps(bad[:3])[:3000]
    assert cuts >= clients * 3, f"jitter did not happen: {cuts} cuts"
    assert all(c["opens"] == c["cuts"] + 1 for c in report), "every cut was followed by one reconnect"
