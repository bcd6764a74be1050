"""The Broadcaster contract (``pycable.broadcast.base``), run against every broadcaster: HTTP,
``redisx`` (Redis Streams), legacy ``redis`` (pub/sub) and NATS, each fed AnyCable's broadcast
payloads through its own input (a request, XADD, PUBLISH).

* a single publication, a batch and a remote command reach the handler, whole and in order:
  ``handle_broadcast`` for a non-fan-out broadcaster, ``handle_fanout`` for a fan-out one;
* a malformed payload is dropped and the next one still flows;
* ``describe()`` says where it listens, ``health()`` is empty while ready, and ``shutdown()``
  can be called twice.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from pycable.broadcast.base import Broadcaster
from pycable.protocol.broadcast import Publication, RemoteCommand, StreamMessage
from pycable.testing import RecordingHandler

Send = Callable[[bytes], Awaitable[None]]


@dataclass
class Source:
    broadcaster: Broadcaster
    send: Send
    handler: RecordingHandler

    def received(self) -> list[Publication]:
        if self.broadcaster.is_fanout:
            return [p for batch in self.handler.fanout for p in batch]
        return list(self.handler.got)


async def _http() -> AsyncIterator[tuple[Broadcaster, Callable[[Broadcaster], Send]]]:
    from pycable.broadcast.http import HttpBroadcaster

    b = HttpBroadcaster()

    def sender(br: Broadcaster) -> Send:
        async def send(payload: bytes) -> None:
            await b.handle("POST", None, payload)  # the route's handler: the request body

        return send

    yield b, sender


async def _redisx() -> AsyncIterator[tuple[Broadcaster, Callable[[Broadcaster], Send]]]:
    import redis.asyncio as aioredis

    from helpers.redis_server import redis_url
    from pycable.broadcast.redis_stream import from_config
    from pycable.config import Config

    stream = f"pycable-test-bx:{uuid.uuid4().hex[:10]}"
    b = from_config(Config(redis_url=redis_url(), redisx_stream=stream, redisx_read_block_milliseconds=200))
    raw = aioredis.Redis.from_url(redis_url())

    def sender(br: Broadcaster) -> Send:
        async def send(payload: bytes) -> None:
            await raw.xadd(stream, {"payload": payload})

        return send

    try:
        yield b, sender
    finally:
        await raw.delete(stream)
        await raw.aclose()


async def _redis() -> AsyncIterator[tuple[Broadcaster, Callable[[Broadcaster], Send]]]:
    import redis.asyncio as aioredis

    from helpers.redis_server import redis_url
    from pycable.broadcast.redis_pubsub import from_config
    from pycable.config import Config

    channel = f"pycable-test-legacy:{uuid.uuid4().hex[:8]}"
    b = from_config(Config(redis_url=redis_url(), redis_channel=channel))
    raw = aioredis.Redis.from_url(redis_url())

    def sender(br: Broadcaster) -> Send:
        async def send(payload: bytes) -> None:
            await raw.publish(channel, payload)

        return send

    try:
        yield b, sender
    finally:
        await raw.aclose()


async def _nats() -> AsyncIterator[tuple[Broadcaster, Callable[[Broadcaster], Send]]]:
    import nats

    from contract.backends._nats import nats_url
    from pycable.broadcast.nats import NatsBroadcaster

    url = await nats_url()
    channel = f"t{uuid.uuid4().hex[:8]}.__anycable__"
    b = NatsBroadcaster([url], channel)
    nc = await nats.connect(url)

    def sender(br: Broadcaster) -> Send:
        async def send(payload: bytes) -> None:
            await nc.publish(channel, payload)
            await nc.flush()

        return send

    try:
        yield b, sender
    finally:
        await nc.close()


BACKENDS = {"http": _http, "redisx": _redisx, "redis": _redis, "nats": _nats}


async def _ready(b: Broadcaster) -> None:
    """Wait until the broadcaster listens (its own readiness, where it has one)."""
    ready = getattr(b, "ready", None)
    if isinstance(ready, asyncio.Event):
        await asyncio.wait_for(ready.wait(), 15)
    conn = getattr(b, "conn", None)
    if conn is not None:  # NATS: its subscription is confirmed once the connection flushed
        await conn.nc.flush()


@pytest.fixture(params=sorted(BACKENDS))
async def source(request: pytest.FixtureRequest) -> AsyncIterator[Source]:
    gen = BACKENDS[request.param]()
    b, sender = await gen.__anext__()
    handler = RecordingHandler()
    await b.start(handler)
    try:
        await _ready(b)
        yield Source(b, sender(b), handler)
    finally:
        await b.shutdown()
        await b.shutdown()  # idempotent
        await gen.aclose()


async def until(src: Source, n: int) -> list[Publication]:
    await src.handler.until(lambda: len(src.received()) >= n, timeout=30)
    return src.received()


async def test_publications_reach_the_handler_whole_and_in_order(source: Source) -> None:
    await source.send(b'{"stream":"a","data":"{\\"n\\":1}"}')
    await source.send(json.dumps([{"stream": "a", "data": "2"}, {"stream": "b", "data": "3"}]).encode())
    await source.send(b'{"command":"disconnect","payload":{"identifier":"u","reconnect":false}}')
    got = await until(source, 4)
    assert got == [
        StreamMessage("a", '{"n":1}'),
        StreamMessage("a", "2"),
        StreamMessage("b", "3"),
        RemoteCommand("disconnect", "u", False),
    ]
    other = source.handler.got if source.broadcaster.is_fanout else source.handler.fanout
    assert not other, "fan-out broadcasters bypass the broker path, the others never fan out"


async def test_a_malformed_payload_is_dropped_and_the_next_flows(source: Source) -> None:
    for bad in (b"not json", b'{"stream":""}', b"42"):
        await source.send(bad)
    await source.send(b'{"stream":"s","data":"ok"}')
    assert await until(source, 1) == [StreamMessage("s", "ok")]


async def test_describe_and_health(source: Source) -> None:
    assert source.broadcaster.describe()
    assert source.broadcaster.health() == ""
