"""Redis pub/sub between nodes (spec §5) against a real Redis: the wire format, interest,
remote commands, malformed input, and resubscription after the connection is killed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from helpers.redis_server import RedisServer, redis_url
from pycable._redis import connect
from pycable.config import Config
from pycable.protocol.broadcast import RemoteCommand, StreamMessage
from pycable.pubsub import redis as redis_pubsub
from pycable.pubsub.redis import RedisSubscriber, command_channel, from_config
from pycable.testing import RecordingHandler

pytestmark = pytest.mark.redis


Recorder = RecordingHandler


def subscriber(url: str, prefix: str) -> RedisSubscriber:
    """As from_config builds it, with a unique name on the listening connection (to kill it)."""
    cfg = Config(redis_url=url, redis_prefix=prefix)
    sub = from_config(cfg)
    sub.listener = connect(cfg, name=f"pycable-test-listen-{uuid.uuid4().hex[:8]}", socket_timeout=None, retries=0)
    return sub


@pytest.fixture
async def pair() -> AsyncIterator[tuple[str, list[tuple[RedisSubscriber, Recorder]]]]:
    """Two started subscribers ("nodes") sharing a unique prefix."""
    prefix = f"pycable-test:{uuid.uuid4().hex[:8]}:"
    nodes = []
    for _ in range(2):
        s, r = subscriber(redis_url(), prefix), Recorder()
        await s.start(r)
        nodes.append((s, r))
    yield prefix, nodes
    for s, _ in nodes:
        await s.shutdown()


async def test_messages_reach_nodes_listening_on_the_stream(pair):
    """A node gets a stream's messages only while subscribed; offsets and meta survive the trip."""
    _, [(a, ra), (b, rb)] = pair
    await b.subscribe("chat")
    msg = StreamMessage("chat", '{"t":1}', exclude_socket="sid1", broadcast_type="x", offset=4, epoch="ep")
    other = StreamMessage("other", "1", offset=1, epoch="ep")
    await a.broadcast(msg)
    await a.broadcast(other)
    assert ra.messages == [msg, other], "delivered locally at once, not through Redis"
    await rb.until(lambda: len(rb.messages) == 1)
    assert rb.messages == [msg]
    await b.unsubscribe("chat")
    await a.subscribe("chat")
    await b.broadcast(StreamMessage("chat", "2", offset=5, epoch="ep"))
    await ra.until(lambda: len(ra.messages) == 3)
    assert [m.data for m in ra.messages] == ['{"t":1}', "1", "2"], "no echo of its own messages"
    assert [m.data for m in rb.messages] == ['{"t":1}', "2"]


async def test_channels_are_the_stream_names_with_the_prefix(pair):
    """The wire: PUBLISH <prefix><stream> with lower-case offset/epoch keys; commands on the internal channel."""
    prefix, [(a, _), _] = pair
    raw = aioredis.Redis.from_url(redis_url())
    ps = raw.pubsub()
    try:
        await ps.subscribe(prefix + "s", prefix + "__anycable_internal__")
        for _ in range(2):
            assert (await ps.get_message(timeout=2))["type"] == "subscribe"
        await a.broadcast(StreamMessage("s", "d", offset=1, epoch="e"))
        got = await ps.get_message(timeout=2)
        assert got["channel"] == (prefix + "s").encode()
        origin = b'{"origin":"' + a.origin.encode() + b'",'
        assert got["data"] == origin + b'"stream":"s","data":"d","offset":1,"epoch":"e"}'
        await a.broadcast_command(RemoteCommand("disconnect", "uid", False))
        got = await ps.get_message(timeout=2)
        assert got["channel"] == (prefix + "__anycable_internal__").encode()
        assert got["data"] == origin + b'"command":"disconnect","payload":{"identifier":"uid","reconnect":false}}'
    finally:
        await ps.aclose()
        await raw.aclose()


async def test_remote_commands_reach_every_node(pair):
    _, [(a, ra), (_, rb)] = pair
    await a.broadcast_command(RemoteCommand("disconnect", '{"user":1}', True))
    await ra.until(lambda: bool(ra.commands))
    await rb.until(lambda: bool(rb.commands))
    assert ra.commands == rb.commands == [RemoteCommand("disconnect", '{"user":1}', True)]


async def test_v15_capitalised_keys_and_malformed_messages(pair):
    """AnyCable 1.5 nodes write Offset/Epoch: accepted. Malformed payloads are dropped, not fatal."""
    prefix, [(a, ra), _] = pair
    await a.subscribe("s")
    raw = aioredis.Redis.from_url(redis_url())
    try:
        await raw.publish(prefix + "s", b"not json")
        await raw.publish(prefix + "s", b'{"stream":"s"}')
        await raw.publish(prefix + "s", b'{"stream":"s","data":"x","Offset":7,"Epoch":"old"}')
    finally:
        await raw.aclose()
    await ra.until(lambda: bool(ra.messages))
    assert [(m.offset, m.epoch) for m in ra.messages] == [(7, "old")]


async def test_resubscribes_after_the_connection_is_killed(pair):
    """CLIENT KILL of the listening connection: it reconnects and every stream is subscribed again."""
    _, [(a, ra), (b, rb)] = pair
    for i in range(300):  # more than one resubscription batch
        await b.subscribe(f"s{i}")
    ps = b._pubsub
    name = b.listener.get_connection_kwargs()["client_name"]
    raw = aioredis.Redis.from_url(redis_url())
    try:
        victims = [c for c in await raw.client_list() if c["name"] == name]
        assert len(victims) == 1
        await raw.client_kill_filter(_id=victims[0]["id"])
    finally:
        await raw.aclose()
    await asyncio.wait_for(_reconnected(b, ps), 10)
    await a.broadcast(StreamMessage("s299", "after", offset=1, epoch="e"))
    await a.broadcast_command(RemoteCommand("disconnect", "u", True))
    await rb.until(lambda: bool(rb.messages) and bool(rb.commands))
    assert [m.data for m in rb.messages] == ["after"]


async def _reconnected(sub: RedisSubscriber, old: object) -> None:
    while sub._pubsub is old or sub._pubsub is None or not sub._connected.is_set():
        await asyncio.sleep(0.01)


async def test_survives_a_redis_restart():
    """Redis goes away and comes back (empty): no crash, publishing fails meanwhile, then works again."""
    with RedisServer() as server:
        prefix = "p:"
        a, b = subscriber(server.url, prefix), subscriber(server.url, prefix)
        ra, rb = Recorder(), Recorder()
        await a.start(ra)
        await b.start(rb)
        try:
            await b.subscribe("s")
            server.stop()
            await a.broadcast(StreamMessage("s", "local"))  # does not raise while Redis is down
            assert [m.data for m in ra.messages] == ["local"], "this node's clients are still served"
            assert a.stats["dropped"] == 1
            server.start()
            # Wait until b is listening again (its reconnect loop backs off), then deliver.
            deadline = asyncio.get_running_loop().time() + 15
            while not rb.messages:
                assert asyncio.get_running_loop().time() < deadline, "not resubscribed"
                await a.broadcast(StreamMessage("s", "back"))
                try:
                    await rb.until(lambda: bool(rb.messages), timeout=0.2)
                except TimeoutError:
                    pass
            assert {m.data for m in rb.messages} == {"back"}
        finally:
            await a.shutdown()
            await b.shutdown()


async def test_start_does_not_fail_when_redis_is_down(monkeypatch):
    monkeypatch.setattr(redis_pubsub, "CONFIRM_TIMEOUT", 0.2)
    server = RedisServer()  # not started
    s = subscriber(server.url, "")
    await s.start(Recorder())
    await s.subscribe("kept")  # remembered for when Redis answers
    assert s.streams == {"kept"}
    await s.shutdown()


def test_command_channel_and_describe():
    """``-int`` is appended when the legacy broadcaster uses the same channel (§5)."""
    assert command_channel(Config()) == "__anycable_internal__"
    same = Config(redis_pubsub_channel="__anycable__", broadcast_adapter=["http", "redis"])
    assert command_channel(same) == "__anycable__-int"
    assert command_channel(Config(redis_prefix="x:")) == "x:__anycable_internal__"
    assert from_config(Config()).describe() == "Starting Redis pub/sub: localhost:6379"


async def test_a_failing_handler_does_not_stop_the_listener(caplog):
    """A bug in the node while handling one message is logged; the next message still arrives."""

    class Flaky(Recorder):
        def handle_pubsub(self, msg: StreamMessage) -> None:
            if msg.data == "boom":
                raise RuntimeError("node bug")
            super().handle_pubsub(msg)

    prefix = f"pycable-test:{uuid.uuid4().hex[:8]}:"
    s, r = subscriber(redis_url(), prefix), Flaky()
    other = subscriber(redis_url(), prefix)
    await s.start(r)
    await other.start(Recorder())
    try:
        await s.subscribe("s")
        await other.broadcast(StreamMessage("s", "boom"))
        await other.broadcast(StreamMessage("s", "fine"))
        await r.until(lambda: bool(r.messages))
        assert [m.data for m in r.messages] == ["fine"]
        assert "could not be delivered" in caplog.text
    finally:
        await s.shutdown()
        await other.shutdown()
