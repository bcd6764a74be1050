"""Three pycable nodes, each with an embedded NATS server, clustered over routes on loopback
(spec §9.1 ``enats_broker.testfile``, issue 6): JetStream keeps history and sessions for the
cluster, NATS pub/sub carries broadcasts between nodes.

SETUP: three ``python -m pycable --broker nats --pubsub nats --embed_nats`` processes whose
embedded servers route to each other (JetStream R3).

The tests run in file order against the same cluster; the last one kills node 1.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers.client import CableClient, ident
from helpers.server import ServerProcess, free_port

pytestmark = [pytest.mark.nats, pytest.mark.slow]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def post(srv: ServerProcess, stream: str, i: int, deadline: float = 0.0) -> None:
    """Broadcast ``{"i": i}`` to *stream* through *srv*; with a *deadline*, retry a 5xx (a
    JetStream leader election after a node died) until then."""
    body = json.dumps({"stream": stream, "data": json.dumps({"i": i})})
    while True:
        status, text = srv.broadcast(body)
        if status == 201 or time.monotonic() >= deadline:
            break
        time.sleep(0.2)  # bounded retry of a refused request, not a wait for an event
    assert status == 201, (status, text)


def values(client: CableClient, stream: str) -> list[int]:
    return [m["message"]["i"] for m in client.messages(stream)]


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(p) for p in text]
    return out


def dead(pid: int) -> bool:
    """Gone or a zombie (killed, waiting to be reaped by init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.fixture(scope="module")
def cluster():
    store = tempfile.mkdtemp(prefix="pycable-nats-cluster-")
    client_ports = [free_port() for _ in range(3)]
    cluster_ports = [free_port() for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
    nodes = [
        ServerProcess(
            "--public",
            "--broker", "nats",
            "--pubsub", "nats",
            "--embed_nats",
            "--enats_addr", f"nats://127.0.0.1:{client_ports[i]}",
            # its own embedded server, whatever NATS_URL the tests were given
            "--nats_servers", f"nats://127.0.0.1:{client_ports[i]}",
            "--enats_cluster", f"nats://127.0.0.1:{cluster_ports[i]}",
            "--enats_cluster_routes", routes,
            "--enats_store_dir", os.path.join(store, f"n{i + 1}"),
            "--enats_server_name", f"n{i + 1}",
            "--ping_interval", "1",
            # node 1 is SIGKILLed: its embedded server's temporary directory goes with the store
            env={"TMPDIR": store},
        )
        for i in range(3)
    ]  # fmt: skip
    # Started together: JetStream needs a quorum of the three servers before any is healthy.
    with ThreadPoolExecutor(3) as pool:
        started = list(pool.map(lambda n: _start(n), nodes))
    try:
        errors = [e for e in started if e]
        assert not errors, "\n\n".join(errors)
        yield nodes
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(store, ignore_errors=True)


def _start(node: ServerProcess) -> str:
    try:
        node.start(timeout=40)
        return ""
    except RuntimeError as exc:
        return str(exc)


async def test_startup_lines(cluster):
    log = cluster[0].log()
    assert "Embedded NATS server started: nats://127.0.0.1:" in log
    assert "cluster_name: anycable-cluster, routes: nats://127.0.0.1:" in log
    assert "Using NATS broker: nats://127.0.0.1:" in log
    assert "(history limit: 100, history ttl: 300s, sessions ttl: 300s)" in log
    assert "Starting NATS pub/sub: nats://127.0.0.1:" in log
    # the embedded server's own log lines are in ours, in our format
    assert "Embedded NATS server started: nats://127.0.0.1:" in log
    # its start-up banner is not at info level (debug shows the embedded server's lines)
    assert "Starting nats-server" not in log


async def test_epoch_is_shared_and_broadcasts_reach_every_node(cluster):
    """A broadcast through any node reaches subscribers on all three with the same epoch,
    and offsets are one sequence for the cluster."""
    stream = unique("epoch.")
    clients = [await CableClient.open(n.url) for n in cluster for _ in range(2)]
    try:
        for c in clients:
            await c.welcome()
            assert (await c.subscribe(ident(stream)))["type"] == "confirm_subscription"
        for i, node in enumerate(cluster):
            post(node, stream, i)
            for c in clients:
                await c.wait_count(lambda m: m.get("stream_id") == stream, i + 1, timeout=10)
        epochs = {m["epoch"] for c in clients for m in c.messages(stream)}
        assert len(epochs) == 1 and "" not in epochs
        for c in clients:
            assert values(c, stream) == [0, 1, 2]
            assert [m["offset"] for m in c.messages(stream)] == [1, 2, 3]
    finally:
        for c in clients:
            await c.close()


async def test_subject_breaking_stream_names_cross_the_cluster(cluster):
    """Stream names that are not NATS subjects or JetStream names work end to end."""
    names = [unique("chat.") + ".room 1", unique("a*b>") + " ✓", unique("$JS.API.STREAM.DELETE."), unique("_INBOX.")]
    for stream in names:
        sub = await CableClient.open(cluster[2].url)
        try:
            await sub.welcome()
            await sub.subscribe(ident(stream))
            post(cluster[0], stream, 1)
            post(cluster[1], stream, 2)
            got = await sub.wait_count(lambda m, s=stream: m.get("stream_id") == s, 2, timeout=10)
            assert [m["message"]["i"] for m in got] == [1, 2]
            epoch = got[0]["epoch"]
        finally:
            await sub.close()
        # And from history on another node (JetStream → that node's snapshot).
        late = await CableClient.open(cluster[1].url)
        try:
            await late.welcome()
            await late.subscribe(ident(stream), history={"streams": {stream: {"epoch": epoch, "offset": 0}}})
            await late.wait_for({"type": "confirm_history"}, timeout=10)
            assert values(late, stream) == [1, 2]
        finally:
            await late.close()


async def test_resume_on_another_node_gets_missed_history_exactly_once(cluster):
    """SETUP: a client on node 2, cut after 3 messages. EXECUTE: 3 more are broadcast on
    node 1; the client resumes on node 3 with ?sid= and asks for history.
    TEST: the session is restored (shared KV), the 3 missed messages come once, in order,
    followed by live ones."""
    n1, n2, n3 = cluster
    stream = unique("resume.")
    c = await CableClient.open(n2.url)
    sid = (await c.welcome())["sid"]
    await c.subscribe(ident(stream))
    for i in range(1, 4):
        post(n1, stream, i)
    await c.wait_count(lambda m: m.get("stream_id") == stream, 3, timeout=10)
    last = c.messages(stream)[-1]
    await c.abort()

    for i in range(4, 7):
        post(n1, stream, i)

    r = await CableClient.open(f"{n3.url}?sid={sid}")
    try:
        welcome = await r.welcome()
        assert welcome.get("restored") is True, welcome
        assert welcome["restored_ids"] == [ident(stream)]
        await r.send(
            {
                "command": "history",
                "identifier": ident(stream),
                "history": {"streams": {stream: {"epoch": last["epoch"], "offset": last["offset"]}}},
            }
        )
        await r.wait_for({"type": "confirm_history"}, timeout=10)
        post(n1, stream, 7)
        await r.wait_count(lambda m: m.get("stream_id") == stream, 4, timeout=10)
        assert values(r, stream) == [4, 5, 6, 7]
        assert [m["offset"] for m in r.messages(stream)] == [4, 5, 6, 7]
        assert {m["epoch"] for m in r.messages(stream)} == {last["epoch"]}
    finally:
        await r.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to check the NATS child process")
async def test_node_killed_the_others_keep_serving_and_keep_history(cluster):
    """SIGKILL node 1: its nats-server dies with it; nodes 2 and 3 keep broadcasting to each
    other and still serve history written before (R3 streams), in the same epoch."""
    n1, n2, n3 = cluster
    kept = unique("kept.")
    for i in range(1, 4):
        post(n1, kept, i)
    probe = await CableClient.open(n2.url)
    await probe.welcome()
    await probe.subscribe(ident(kept), history={"since": 1})
    await probe.wait_count(lambda m: m.get("stream_id") == kept, 3, timeout=10)
    epoch = probe.messages(kept)[0]["epoch"]
    await probe.close()

    assert n1.proc is not None
    enats_pids = children(n1.proc.pid)
    assert enats_pids, "node 1 has no nats-server child"
    n1.kill()
    deadline = time.monotonic() + 5
    while not all(dead(p) for p in enats_pids) and time.monotonic() < deadline:
        time.sleep(0.05)  # bounded poll of another process's state
    assert all(dead(p) for p in enats_pids), "the embedded nats-server outlived its pycable (orphan)"

    stream = unique("after.")
    subs = [await CableClient.open(n.url) for n in (n2, n3)]
    try:
        for s in subs:
            await s.welcome()
            await s.subscribe(ident(stream))
        post(n2, stream, 1, deadline=time.monotonic() + 20)
        post(n3, stream, 2, deadline=time.monotonic() + 20)
        for s in subs:
            got = await s.wait_count(lambda m: m.get("stream_id") == stream, 2, timeout=15)
            assert [m["message"]["i"] for m in got] == [1, 2]
            assert {m["epoch"] for m in got} == {epoch}
    finally:
        for s in subs:
            await s.close()

    # History written through the dead node is still served, by both survivors.
    for node in (n3, n2):
        late = await CableClient.open(node.url)
        try:
            await late.welcome()
            await late.subscribe(ident(kept), history={"streams": {kept: {"epoch": epoch, "offset": 0}}})
            await late.wait_for({"type": "confirm_history"}, timeout=15)
            assert values(late, kept) == [1, 2, 3]
        finally:
            await late.close()
    assert n2.proc is not None and n2.proc.poll() is None
    assert n3.proc is not None and n3.proc.poll() is None
