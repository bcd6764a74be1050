"""The ``redisx`` (consumer group) and legacy ``redis`` (pub/sub) broadcasters against a
real Redis (spec §4.3, §4.4, preface decision 5)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from helpers.redis_server import RedisServer, redis_url
from pycable.broadcast import redis_stream
from pycable.broadcast.redis_pubsub import RedisPubSubBroadcaster
from pycable.broadcast.redis_pubsub import from_config as legacy_from_config
from pycable.broadcast.redis_stream import RedisStreamBroadcaster
from pycable.broadcast.redis_stream import from_config as redisx_from_config
from pycable.config import Config
from pycable.protocol.broadcast import RemoteCommand, StreamMessage
from pycable.testing import RecordingHandler

pytestmark = pytest.mark.redis


Handler = RecordingHandler


def pub(data: str, stream: str = "s") -> dict[str, str]:
    return {"payload": f'{{"stream":"{stream}","data":"{data}"}}'}


@pytest.fixture
async def env() -> AsyncIterator[tuple[aioredis.Redis, str, list[RedisStreamBroadcaster]]]:
    raw = aioredis.Redis.from_url(redis_url(), decode_responses=True)
    stream = f"pycable-test-bx:{uuid.uuid4().hex[:10]}"
    started: list[RedisStreamBroadcaster] = []
    yield raw, stream, started
    for b in started:
        await b.shutdown()
    await raw.delete(stream)
    await raw.aclose()


async def start(env, handler: Handler, block_ms: int = 200, url: str | None = None) -> RedisStreamBroadcaster:
    _, stream, started = env
    cfg = Config(redis_url=url or redis_url(), redisx_stream=stream, redisx_read_block_milliseconds=block_ms)
    b = redisx_from_config(cfg)
    await b.start(handler)
    started.append(b)
    await asyncio.wait_for(b.ready.wait(), 5)
    return b


async def consumers(raw: aioredis.Redis, stream: str) -> dict[str, int]:
    return {c["name"]: c["pending"] for c in await raw.xinfo_consumers(stream, "bx")}


class TestRedisX:
    async def test_entries_are_handled_then_acknowledged_and_deleted(self, env):
        raw, stream, _ = env
        h = Handler()
        await start(env, h)
        await raw.xadd(stream, pub("1"))
        await raw.xadd(stream, {"payload": '[{"stream":"a","data":"2"},{"stream":"b","data":"3"}]'})
        await raw.xadd(stream, {"payload": '{"command":"disconnect","payload":{"identifier":"u","reconnect":false}}'})
        await h.until(lambda: len(h.got) == 4)
        assert h.data() == ["1", "2", "3"] and h.got[3] == RemoteCommand("disconnect", "u", False)
        assert await raw.xlen(stream) == 0
        assert (await raw.xpending(stream, "bx"))["pending"] == 0

    async def test_malformed_entries_are_dropped_and_acknowledged(self, env):
        """They would never succeed: logged, acked, deleted; the next entry still flows."""
        raw, stream, _ = env
        h = Handler()
        b = await start(env, h)
        await raw.xadd(stream, {"payload": "not json"})
        await raw.xadd(stream, {"payload": '{"stream":""}'})
        await raw.xadd(stream, {"other": "field"})
        await raw.xadd(stream, pub("ok"))
        await h.until(lambda: h.data() == ["ok"])
        assert b.stats["malformed"] == 3
        assert await raw.xlen(stream) == 0 and (await raw.xpending(stream, "bx"))["pending"] == 0

    async def test_a_failed_entry_stays_pending_and_is_retried_in_order(self, env):
        """Acknowledged only after the broker registered it (at-least-once, in order)."""
        raw, stream, _ = env
        h = Handler()
        h.failing = True
        await start(env, h)
        await raw.xadd(stream, pub("1"))
        await raw.xadd(stream, pub("2"))
        await h.until(lambda: h.attempts >= 2)  # the first entry failed twice: retried
        assert (await raw.xpending(stream, "bx"))["pending"] >= 1
        assert await raw.xlen(stream) == 2 and h.got == []
        h.failing = False
        await raw.xadd(stream, pub("3"))
        await h.until(lambda: len(h.got) == 3)
        assert h.data() == ["1", "2", "3"]
        assert await raw.xlen(stream) == 0 and (await raw.xpending(stream, "bx"))["pending"] == 0

    async def test_a_connection_killed_mid_batch_loses_nothing(self, env):
        """The consumer's connection dies while a batch is being handled (before its XACK):
        every entry is still handled, in order, and nothing is left pending."""
        raw, stream, _ = env
        gate = asyncio.Event()

        class Gated(Handler):
            async def handle_broadcast(self, publications):
                if not gate.is_set():
                    self.attempts += 1
                    self._changed.set()
                    await gate.wait()
                await super().handle_broadcast(publications)

        h = Gated()
        b = await start(env, h)
        for i in range(5):
            await raw.xadd(stream, pub(str(i)))
        await h.until(lambda: h.attempts >= 1)
        killed = 0
        for client in await raw.client_list():
            if client.get("name") == f"pycable:redisx:{b.consumer}":
                await raw.execute_command("CLIENT", "KILL", "ID", client["id"])
                killed += 1
        assert killed >= 1
        gate.set()
        await h.until(lambda: set(h.data()) == {str(i) for i in range(5)}, timeout=15)

        async def settled() -> None:
            while (await raw.xpending(stream, "bx"))["pending"] or await raw.xlen(stream):
                await asyncio.sleep(0.05)  # polling Redis, another process's state

        await asyncio.wait_for(settled(), 15)
        first_seen = list(dict.fromkeys(h.data()))
        assert first_seen == [str(i) for i in range(5)], "in order (a retry may repeat: at-least-once)"

    async def test_entries_of_a_dead_consumer_are_claimed(self, env):
        """Entries read by a consumer that never acknowledged them are taken over after the block time."""
        raw, stream, _ = env
        await raw.xgroup_create(stream, "bx", id="$", mkstream=True)
        await raw.xadd(stream, pub("orphan1"))
        await raw.xadd(stream, pub("orphan2"))
        await raw.xreadgroup("bx", "dead", {stream: ">"})
        assert (await raw.xpending(stream, "bx"))["pending"] == 2
        h = Handler()
        b = await start(env, h, block_ms=100)
        await raw.xadd(stream, pub("new"))
        await h.until(lambda: len(h.got) == 3)
        assert sorted(h.data()) == ["new", "orphan1", "orphan2"]
        assert b.stats["claimed"] == 2
        assert (await raw.xpending(stream, "bx"))["pending"] == 0

    async def test_stale_consumers_are_removed(self, env, monkeypatch):
        """Consumers with nothing pending, unseen for long, are deleted; those with pending entries stay."""
        monkeypatch.setattr(redis_stream, "STALE_CONSUMER_IDLE_MS", 50)
        raw, stream, _ = env
        await raw.xgroup_create(stream, "bx", id="$", mkstream=True)
        await raw.xgroup_createconsumer(stream, "bx", "gone")
        await raw.xgroup_createconsumer(stream, "bx", "busy")
        await raw.xadd(stream, pub("x"))
        await raw.xreadgroup("bx", "busy", {stream: ">"})
        await asyncio.sleep(0.1)  # let both consumers' idle time pass the (patched) threshold
        h = Handler()
        b = await start(env, h, block_ms=60_000)  # "busy"'s entry is not claimed within the test
        names = await consumers(raw, stream)
        assert "gone" not in names and names["busy"] == 1 and b.consumer in names

    async def test_shutdown_deletes_its_consumer_unless_it_has_pending_entries(self, env):
        raw, stream, started = env
        h = Handler()
        b = await start(env, h)
        started.remove(b)
        await b.shutdown()
        assert b.consumer not in await consumers(raw, stream)
        h2 = Handler()
        h2.failing = True
        b2 = await start(env, h2, block_ms=60_000)
        await raw.xadd(stream, pub("stuck"))
        await h2.until(lambda: h2.attempts >= 1)
        started.remove(b2)
        await b2.shutdown()
        assert (await consumers(raw, stream))[b2.consumer] == 1, "kept, for a live node to claim"

    async def test_redis_restart_reconnects_recreates_the_group_and_reads_on(self):
        """Redis dies: the loop reconnects with backoff, recreates the group and reads new entries."""
        with RedisServer() as server:
            raw = aioredis.Redis.from_url(server.url, decode_responses=True)
            h = Handler()
            env = (raw, "bx-stream", [])
            try:
                b = await start(env, h, url=server.url)
                await raw.xadd("bx-stream", pub("before"))
                await h.until(lambda: h.data() == ["before"])
                await raw.aclose()
                server.stop()
                server.start()
                raw = aioredis.Redis.from_url(server.url, decode_responses=True)
                # The group is gone with the data: the broadcaster recreates it ("$") when it
                # reconnects, so publish only once it reads again.
                await asyncio.wait_for(_group_exists(raw, "bx-stream"), 15)
                await asyncio.wait_for(b.ready.wait(), 15)
                await raw.xadd("bx-stream", pub("after"))
                await h.until(lambda: h.data() == ["before", "after"], timeout=10)
            finally:
                for started in env[2]:
                    await started.shutdown()
                await raw.aclose()

    def test_describe(self):
        b = redisx_from_config(Config(redisx_stream="s1", redisx_group="g1"))
        assert b.describe() == (
            f"Starting Redis broadcaster at localhost:6379 provider=redisx stream=s1 group=g1 consumer={b.consumer}"
        )
        assert len(b.consumer) == 6 and not b.is_fanout


async def _group_exists(raw: aioredis.Redis, stream: str) -> None:
    while True:
        try:
            if await raw.xinfo_groups(stream):
                return
        except aioredis.ResponseError:
            pass
        await asyncio.sleep(0.02)


class TestLegacyRedis:
    async def test_publications_fan_out_bypassing_the_broker(self):
        channel = f"pycable-test-legacy:{uuid.uuid4().hex[:8]}"
        b = legacy_from_config(Config(redis_url=redis_url(), redis_channel=channel))
        assert isinstance(b, RedisPubSubBroadcaster) and b.is_fanout
        h = Handler()
        await b.start(h)
        raw = aioredis.Redis.from_url(redis_url())
        try:
            await asyncio.wait_for(b.ready.wait(), 5)
            await raw.publish(channel, b"garbage")
            await raw.publish(channel, b'{"stream":"s","data":"1"}')
            await raw.publish(channel, b'{"command":"disconnect","payload":{"identifier":"u"}}')
            await h.until(lambda: len(h.fanout) == 2)
            assert h.fanout == [[StreamMessage("s", "1")], [RemoteCommand("disconnect", "u", True)]]
            assert h.got == [] and b.stats["malformed"] == 1
        finally:
            await raw.aclose()
            await b.shutdown()
        assert b.describe() == f"Starting Redis pub/sub: {b.where} provider=redis channel={channel}"
