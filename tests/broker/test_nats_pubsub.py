"""NATS pub/sub (``--pubsub=nats``, spec §5) and the legacy ``nats`` broadcaster (§4.5),
over a real NATS server; reconnection over an embedded one that is restarted."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable

import nats
import pytest

from contract.backends._nats import free_port, nats_url
from pycable.broadcast.nats import NatsBroadcaster
from pycable.enats import EmbeddedNats
from pycable.protocol.broadcast import RemoteCommand, StreamMessage
from pycable.pubsub.nats import NatsSubscriber
from pycable.testing import RecordingHandler

pytestmark = pytest.mark.nats


Recorder = RecordingHandler


@pytest.fixture
async def nodes() -> AsyncIterator[Callable[..., object]]:
    url = await nats_url()
    prefix = f"t{uuid.uuid4().hex[:8]}."
    made: list[NatsSubscriber] = []

    async def node(servers: list[str] | None = None) -> tuple[NatsSubscriber, Recorder]:
        sub = NatsSubscriber(servers or [url], prefix=prefix, connect_wait=3)
        rec = Recorder()
        await sub.start(rec)
        made.append(sub)
        return sub, rec

    node.url = url  # type: ignore[attr-defined]
    node.prefix = prefix  # type: ignore[attr-defined]
    yield node
    for s in made:
        await s.shutdown()


STREAMS = ["chat.1", "a b", "*", ">", "ünï ✓", "$JS.API.INFO", "_INBOX.x", "x" * 3000]


async def test_messages_reach_subscribed_nodes_only(nodes):
    (a, ra), (b, rb), (c, rc) = [await nodes() for _ in range(3)]
    assert a.describe().startswith("Starting NATS pub/sub: nats://")
    for stream in STREAMS:
        await b.subscribe(stream)
    for i, stream in enumerate(STREAMS):
        await a.broadcast(StreamMessage(stream, f'{{"i":{i}}}', offset=i + 1, epoch="ep"))
    # Local delivery is immediate, remote delivery through NATS, only where subscribed.
    assert [m.stream for m in ra.messages] == STREAMS
    await rb.until(lambda: len(rb.messages) == len(STREAMS))
    assert [(m.stream, m.data, m.offset, m.epoch) for m in rb.messages] == [
        (s, f'{{"i":{i}}}', i + 1, "ep") for i, s in enumerate(STREAMS)
    ]
    assert rc.messages == []
    await b.unsubscribe("chat.1")
    await a.broadcast(StreamMessage("chat.1", "late"))
    await a.broadcast(StreamMessage("a b", "still"))
    await rb.until(lambda: rb.messages[-1].data == "still")
    assert [m.data for m in rb.messages].count("late") == 0


async def test_order_per_stream_and_meta_are_kept(nodes):
    (a, _), (b, rb) = await nodes(), await nodes()
    await b.subscribe("ordered")
    for i in range(200):
        await a.broadcast(
            StreamMessage("ordered", str(i), exclude_socket="sid1", broadcast_type="x", offset=i + 1, epoch="e")
        )
    await rb.until(lambda: len(rb.messages) == 200)
    assert [m.offset for m in rb.messages] == list(range(1, 201))
    assert {(m.exclude_socket, m.broadcast_type) for m in rb.messages} == {("sid1", "x")}


async def test_remote_commands_reach_every_node(nodes):
    (a, ra), (b, rb), (c, rc) = [await nodes() for _ in range(3)]
    cmd = RemoteCommand("disconnect", '{"user_id":1}', reconnect=False)
    await a.broadcast_command(cmd)
    for rec in (ra, rb, rc):
        await rec.until(lambda r=rec: len(r.commands) == 1)
        assert rec.commands == [cmd]


async def test_go_nodes_messages_and_garbage(nodes):
    """A v1.5 Go node writes ``Offset``/``Epoch``; a malformed message is dropped, not fatal."""
    b, rb = await nodes()
    await b.subscribe("go")
    nc = await nats.connect(nodes.url)
    try:
        subject = nodes.prefix + "go"
        await nc.publish(subject, b"{not json")
        await nc.publish(subject, b'{"stream":"go","data":"1","Offset":7,"Epoch":"old"}')
        await nc.publish(subject, b'{"stream":"go","data":"2","offset":8,"epoch":"new"}')
        await nc.flush()
    finally:
        await nc.close()
    await rb.until(lambda: len(rb.messages) == 2)
    assert [(m.data, m.offset, m.epoch) for m in rb.messages] == [("1", 7, "old"), ("2", 8, "new")]
    assert b.stats["malformed"] == 1


async def test_legacy_broadcaster_fans_out(nodes):
    url = nodes.url
    channel = f"t{uuid.uuid4().hex[:8]}.__anycable__"
    recs = [Recorder() for _ in range(2)]
    bcs = [NatsBroadcaster([url], channel) for _ in recs]
    for bc, rec in zip(bcs, recs, strict=True):
        assert bc.is_fanout
        await bc.start(rec)
    await asyncio.gather(*(bc.conn.nc.flush() for bc in bcs))
    try:
        nc = await nats.connect(url)
        try:
            await nc.publish(channel, json.dumps({"stream": "s.1", "data": "{}"}).encode())
            await nc.publish(channel, b"garbage")
            await nc.publish(channel, json.dumps([{"stream": "a", "data": "1"}, {"stream": "b", "data": "2"}]).encode())
            await nc.publish(channel, json.dumps({"command": "disconnect", "payload": {"identifier": "x"}}).encode())
            await nc.flush()
        finally:
            await nc.close()
        for bc, rec in zip(bcs, recs, strict=True):
            await rec.until(lambda r=rec: len(r.fanout) == 3)
            assert [[getattr(p, "stream", getattr(p, "identifier", None)) for p in pubs] for pubs in rec.fanout] == [
                ["s.1"],
                ["a", "b"],
                ["x"],
            ]
            assert bc.stats["malformed"] == 1
        assert bcs[0].describe() == f"Starting NATS broadcaster: {url} (channel: {channel})"
    finally:
        for bc in bcs:
            await bc.shutdown()


async def test_resubscribes_after_nats_restarts_and_survives_it_being_down():
    port, store = free_port(), tempfile.mkdtemp()
    server = EmbeddedNats(f"nats://127.0.0.1:{port}", store_dir=store)
    await server.start()
    url = f"nats://127.0.0.1:{port}"
    a, b = NatsSubscriber([url]), NatsSubscriber([url])
    ra, rb = Recorder(), Recorder()
    await a.start(ra)
    await b.start(rb)
    try:
        await b.subscribe("s")
        # subscribe() bounds its wait for NATS to confirm the SUB to 2 s, which a loaded
        # machine can exceed: await the confirmation before relying on it.
        await b.conn.nc.flush(timeout=30)
        await a.broadcast(StreamMessage("s", "before"))
        await rb.until(lambda: len(rb.messages) == 1, timeout=30)
        await server.shutdown()
        # Down: local delivery goes on, nothing raises.
        await a.broadcast(StreamMessage("s", "while down"))
        assert ra.messages[-1].data == "while down"
        server = EmbeddedNats(f"nats://127.0.0.1:{port}", store_dir=store)
        await server.start()
        deadline = time.monotonic() + 15
        while not (a.conn.is_connected and b.conn.is_connected):
            assert time.monotonic() < deadline, "no reconnection"
            await asyncio.sleep(0.05)  # waiting on another process (the NATS server)
        await b.conn.nc.flush()  # its SUB is resent on reconnect
        await a.broadcast(StreamMessage("s", "after"))
        await rb.until(lambda: rb.messages[-1].data == "after", timeout=10)
    finally:
        await a.shutdown()
        await b.shutdown()
        await server.shutdown()


async def test_churn_leaves_exactly_one_subscription(nodes):
    """Subscribe, unsubscribe and subscribe again while the first is still in flight:
    one subscription remains, each message arrives once."""
    (a, _), (b, rb) = await nodes(), await nodes()
    first = asyncio.ensure_future(b.subscribe("churn"))
    await asyncio.sleep(0)  # let it start its subscription
    assert type(b._streams.get("churn")).__name__ == "_Pending", "not in flight: the test would prove nothing"
    await b.unsubscribe("churn")
    await b.subscribe("churn")
    await first
    await a.broadcast(StreamMessage("churn", "1"))
    await a.broadcast(StreamMessage("churn", "2"))
    await rb.until(lambda: [m.data for m in rb.messages][-1:] == ["2"])
    await b.conn.nc.flush()
    assert [m.data for m in rb.messages] == ["1", "2"]
    assert len([s for s in b.conn.nc._subs.values() if s.subject == nodes.prefix + "churn"]) == 1
