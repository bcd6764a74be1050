"""The Subscriber contract (``pycable.pubsub.base``), run against every pub/sub backend:
local (single node), Redis and NATS (real servers; each test gets its own prefix).

* a message is handed to this node's handler at once, and never echoed back to it;
* messages from one node reach every subscribed node once each, in the order broadcast;
* remote commands reach every node;
* ``broadcast`` never raises, even with the backend down;
* after the connection to the backend is lost and comes back, subscriptions are live again.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from pycable.protocol.broadcast import RemoteCommand, StreamMessage
from pycable.pubsub.base import LocalSubscriber, Subscriber
from pycable.testing import RecordingHandler

Node = tuple[Subscriber, RecordingHandler]


@dataclass
class Cluster:
    """Nodes of one backend sharing a namespace; ``cut(sub)`` drops its backend connection and
    waits until it is back; ``down()`` makes a node whose backend does not answer."""

    backend: str
    make: Callable[[], Awaitable[Subscriber]]
    cut: Callable[[Subscriber], Awaitable[None]]
    down: Callable[[], Awaitable[Subscriber]]
    #: Waits until the backend confirmed a node's subscriptions, where its own start() and
    #: subscribe() bound that wait (NATS: a 2 s flush, which a loaded machine can pass).
    settle: Callable[[Subscriber], Awaitable[None]] | None = None
    made: list[Subscriber] = field(default_factory=list)

    async def node(self) -> Node:
        sub, rec = await self.make(), RecordingHandler()
        await sub.start(rec)
        self.made.append(sub)
        await self.settled(sub)
        return sub, rec

    async def subscribe(self, sub: Subscriber, *streams: str) -> None:
        """Subscribe *sub* to *streams* and wait until the backend confirmed it: subscribe()
        bounds its own wait for that (2 s), which a loaded machine can exceed."""
        for stream in streams:
            await sub.subscribe(stream)
        await self.settled(sub)

    async def settled(self, sub: Subscriber) -> None:
        if self.settle is not None:
            await self.settle(sub)


async def _local() -> AsyncIterator[Cluster]:
    async def make() -> Subscriber:
        return LocalSubscriber()

    async def cut(sub: Subscriber) -> None:
        pass  # no connection to lose

    yield Cluster("local", make, cut, make)


async def _redis() -> AsyncIterator[Cluster]:
    import redis.asyncio as aioredis

    import pycable.pubsub.redis as pubsub_redis
    from helpers.redis_server import RedisServer, redis_url
    from pycable._redis import connect
    from pycable.config import Config
    from pycable.pubsub.redis import RedisSubscriber, from_config

    url, prefix = redis_url(), f"pycable-test:{uuid.uuid4().hex[:8]}:"
    patch = pytest.MonkeyPatch()

    def build(target: str) -> RedisSubscriber:
        cfg = Config(redis_url=target, redis_prefix=prefix)
        sub = from_config(cfg)
        sub.listener = connect(cfg, name=f"pycable-test-{uuid.uuid4().hex[:8]}", socket_timeout=None, retries=0)
        return sub

    async def make() -> Subscriber:
        return build(url)

    async def cut(sub: Subscriber) -> None:
        assert isinstance(sub, RedisSubscriber)
        old = sub._pubsub
        name = sub.listener.get_connection_kwargs()["client_name"]
        raw = aioredis.Redis.from_url(url)
        try:
            victims = [c for c in await raw.client_list() if c["name"] == name]
            assert len(victims) == 1
            await raw.client_kill_filter(_id=victims[0]["id"])
        finally:
            await raw.aclose()
        while sub._pubsub is old or sub._pubsub is None or not sub._connected.is_set():
            await asyncio.sleep(0.01)  # the subscriber's own reconnect: internal state, no event

    async def down() -> Subscriber:
        patch.setattr(pubsub_redis, "CONFIRM_TIMEOUT", 0.2)  # do not wait long for the absent server
        return build(RedisServer().url)  # never started: nothing answers

    try:
        yield Cluster("redis", make, cut, down)
    finally:
        patch.undo()


async def _nats() -> AsyncIterator[Cluster]:
    from contract.backends._nats import free_port
    from pycable.enats import EmbeddedNats
    from pycable.pubsub.nats import NatsSubscriber

    port, store = free_port(), tempfile.mkdtemp()
    url = f"nats://127.0.0.1:{port}"
    servers = [EmbeddedNats(url, store_dir=store)]
    await servers[0].start()
    prefix = f"t{uuid.uuid4().hex[:8]}."
    made: list[NatsSubscriber] = []

    async def make() -> Subscriber:
        made.append(NatsSubscriber([url], prefix=prefix, connect_wait=10))
        return made[-1]

    async def cut(sub: Subscriber) -> None:
        assert isinstance(sub, NatsSubscriber)
        await servers[0].shutdown()  # every node's connection drops; the server comes back
        servers[0] = EmbeddedNats(url, store_dir=store)
        await servers[0].start()
        for node in made:  # so wait for every node, not only *sub*
            while not node.conn.is_connected:
                await asyncio.sleep(0.05)  # nats-py's own reconnect: no event to await
            await node.conn.nc.flush()  # its SUBs were resent on reconnect

    async def down() -> Subscriber:
        return NatsSubscriber([f"nats://127.0.0.1:{free_port()}"], prefix=prefix, connect_wait=0.3)

    async def settle(sub: Subscriber) -> None:
        assert isinstance(sub, NatsSubscriber)
        await sub.conn.nc.flush(timeout=30)

    try:
        yield Cluster("nats", make, cut, down, settle)
    finally:
        await servers[0].shutdown()


BACKENDS: dict[str, Callable[[], AsyncIterator[Cluster]]] = {"local": _local, "redis": _redis, "nats": _nats}


@pytest.fixture(params=sorted(BACKENDS))
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    gen = BACKENDS[request.param]()
    c = await gen.__anext__()
    try:
        yield c
    finally:
        for sub in c.made:
            await sub.shutdown()
        await gen.aclose()


def multi_node(sub: Subscriber) -> None:
    if not sub.is_multi_node:
        pytest.skip("a single-node backend: nothing crosses nodes")


def msgs(stream: str, n: int, start: int = 1) -> list[StreamMessage]:
    return [StreamMessage(stream, f'{{"i":{i}}}', offset=i, epoch="ep") for i in range(start, start + n)]


async def test_delivered_here_at_once_and_never_echoed(cluster: Cluster) -> None:
    (a, ra), (b, _rb) = await cluster.node(), await cluster.node()
    await a.subscribe("s")
    sent = msgs("s", 20)
    for m in sent:
        await a.broadcast(m)
    assert ra.messages == sent, "handed to this node's handler at once"
    if a.is_multi_node:
        await cluster.subscribe(b, "s")
        marker = StreamMessage("s", "marker")
        await b.broadcast(marker)  # once it is here, anything echoed before it is here too
        await ra.until(lambda: marker in ra.messages, timeout=30)
    assert ra.messages.count(sent[0]) == 1 and ra.messages[:20] == sent, "no echo of its own messages"


async def test_one_nodes_messages_arrive_once_in_order_where_subscribed(cluster: Cluster) -> None:
    (a, _), (b, rb), (_c, rc) = await cluster.node(), await cluster.node(), await cluster.node()
    multi_node(a)
    await cluster.subscribe(b, "ordered")
    sent = msgs("ordered", 200)
    for m in sent:
        await a.broadcast(m)
    await rb.until(lambda: len(rb.messages) >= 200, timeout=30)
    assert rb.messages == sent, "once each, in order, offsets and epoch kept"
    assert rc.messages == [], "not subscribed: nothing"
    await b.unsubscribe("ordered")
    await cluster.subscribe(b, "other")
    await a.broadcast(StreamMessage("ordered", "late"))
    await a.broadcast(StreamMessage("other", "sync"))
    await rb.until(lambda: rb.messages[-1].data == "sync", timeout=30)
    assert all(m.data != "late" for m in rb.messages)


async def test_remote_commands_reach_every_node(cluster: Cluster) -> None:
    (a, ra), (_b, rb) = await cluster.node(), await cluster.node()
    cmd = RemoteCommand("disconnect", '{"user":1}', True)
    await a.broadcast_command(cmd)
    assert ra.commands == [cmd]
    if a.is_multi_node:
        await rb.until(lambda: bool(rb.commands), timeout=30)
        assert rb.commands == [cmd]


async def test_broadcast_never_raises_with_the_backend_down(cluster: Cluster) -> None:
    sub, rec = await cluster.down(), RecordingHandler()
    await sub.start(rec)  # starting does not fail either
    cluster.made.append(sub)
    await sub.subscribe("s")
    m = StreamMessage("s", "local")
    await sub.broadcast(m)
    await sub.broadcast_command(RemoteCommand("disconnect", "u", False))
    assert rec.messages == [m] and len(rec.commands) == 1, "this node's clients are still served"


async def test_subscriptions_are_live_again_after_a_reconnect(cluster: Cluster) -> None:
    (a, _), (b, rb) = await cluster.node(), await cluster.node()
    multi_node(a)
    streams = [f"s{i}" for i in range(120)]
    await cluster.subscribe(b, *streams)
    await cluster.cut(b)  # NATS: the server restarts for every node; cut() waits for them all
    expected: list[Any] = []
    for s in (streams[0], streams[-1]):
        m = StreamMessage(s, "after", offset=1, epoch="e")
        expected.append(m)
        await a.broadcast(m)
    await a.broadcast_command(RemoteCommand("disconnect", "u", True))
    await rb.until(lambda: len(rb.messages) >= 2 and bool(rb.commands), timeout=30)
    assert rb.messages == expected
