"""The Redis broker beyond the shared contract: its key layout (spec §3.6), the shared
epoch, data loss, per-message expiry, per-stream rules, and Redis being unreachable."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from contract.backends.redis import delete_prefix
from helpers.redis_server import RedisServer, redis_url
from helpers.server import free_port
from pycable.broker.base import HistoryPolicy, StreamRule
from pycable.broker.redis import RedisBroker, from_config
from pycable.config import Config
from pycable.exceptions import BrokerError, HistoryError
from pycable.protocol.broadcast import StreamMessage

pytestmark = pytest.mark.redis


@pytest.fixture
async def env() -> AsyncIterator[tuple[str, aioredis.Redis, list[RedisBroker]]]:
    """A unique key prefix, a raw client to inspect Redis, and the brokers to shut down."""
    url = redis_url()
    prefix = f"pycable-test:{uuid.uuid4().hex[:10]}:"
    raw = aioredis.Redis.from_url(url)
    brokers: list[RedisBroker] = []
    yield prefix, raw, brokers
    for b in brokers:
        await b.shutdown()
    await raw.aclose()
    await delete_prefix(url, prefix)


async def make(env, policy: HistoryPolicy | None = None, sessions_ttl: float = 300.0) -> RedisBroker:
    prefix, _, brokers = env
    b = RedisBroker(aioredis.Redis.from_url(redis_url()), policy, sessions_ttl, prefix=prefix)
    await b.start()
    brokers.append(b)
    return b


class TestLayout:
    async def test_keys_follow_the_pro_layout(self, env):
        """Messages, offsets, timestamp index, epoch and sessions live where AnyCable Pro puts them."""
        prefix, raw, _ = env
        b = await make(env, HistoryPolicy(limit=10, ttl=60), sessions_ttl=30)
        m = await b.register(StreamMessage("chat/1", '{"a":1}', broadcast_type="presence"))
        await b.register(StreamMessage("chat/1", '{"a":2}'))
        assert await raw.get(f"{prefix}$ac:e") == m.epoch.encode()
        assert 0 < await raw.pttl(f"{prefix}$ac:e") <= 10 * 300 * 1000
        entries = await raw.xrange(f"{prefix}$ac:s:chat/1")
        assert [e[0] for e in entries] == [b"1-0", b"2-0"]
        assert entries[0][1][b"d"] == b'{"a":1}' and entries[0][1][b"b"] == b"presence"
        assert int(entries[0][1][b"t"]) == round(m.timestamp * 1000)
        assert 0 < await raw.pttl(f"{prefix}$ac:s:chat/1") <= 60_000
        assert await raw.get(f"{prefix}$ac:spos:chat/1") == b"2"
        index = await raw.xrange(f"{prefix}$ac:sts:chat/1")
        assert [e[1][b"pos"] for e in index] == [b"1", b"2"]
        await b.commit_session("sid1", b'{"ids":"x"}')
        assert await raw.get(f"{prefix}$ac:se:sid1") == b'{"ids":"x"}'
        assert 0 < await raw.pttl(f"{prefix}$ac:se:sid1") <= 30_000

    async def test_limit_trims_the_stream_and_its_index(self, env):
        prefix, raw, _ = env
        b = await make(env, HistoryPolicy(limit=3, ttl=60))
        for i in range(5):
            await b.register(StreamMessage("s", str(i)))
        assert await raw.xlen(f"{prefix}$ac:s:s") == 3
        assert await raw.xlen(f"{prefix}$ac:sts:s") == 3

    async def test_broadcast_type_and_timestamp_come_back_from_history(self, env):
        b = await make(env)
        sent = await b.register(StreamMessage("s", '"é ✓"', broadcast_type="presence"))
        (got,) = await b.history_from("s", b.epoch, 0)
        assert got == sent


class TestSharedState:
    async def test_two_nodes_share_epoch_offsets_and_sessions(self, env):
        """Brokers on one Redis form one history: one epoch, one offset sequence, one session cache."""
        a, b = await make(env), await make(env)
        assert a.epoch == b.epoch != ""
        out = await asyncio.gather(*(x.register(StreamMessage("s", str(i))) for i in range(20) for x in (a, b)))
        assert sorted(m.offset for m in out) == list(range(1, 41))
        assert [m.offset for m in await b.history_from("s", a.epoch, 0)] == list(range(1, 41))
        await a.commit_session("sid", b"entry")
        assert await b.restore_session("sid") == b"entry"

    async def test_lost_data_gives_a_new_epoch(self, env):
        """If Redis loses the keys (restart without persistence), old positions are void, never reused."""
        prefix, raw, _ = env
        b = await make(env)
        first = await b.register(StreamMessage("s", "1"))
        await delete_prefix(redis_url(), prefix)
        again = await b.register(StreamMessage("s", "2"))
        assert again.epoch != first.epoch and b.epoch == again.epoch
        assert again.offset == 1
        with pytest.raises(HistoryError):
            await b.history_from("s", first.epoch, 1)

    async def test_lost_offset_counter_never_goes_back(self, env):
        """A stream whose counter was evicted (maxmemory) continues above every offset ever given."""
        prefix, raw, _ = env
        b = await make(env)
        for _ in range(3):
            await b.register(StreamMessage("s", "x"))
        for _ in range(7):
            await b.register(StreamMessage("other", "x"))
        await raw.delete(f"{prefix}$ac:spos:s", f"{prefix}$ac:s:s")
        again = await b.register(StreamMessage("s", "y"))
        assert again.epoch == b.epoch and again.offset > 7

    async def test_refresh_keeps_the_epoch_alive(self, env):
        prefix, raw, _ = env
        b = await make(env)
        await raw.pexpire(f"{prefix}$ac:e", 50_000)
        assert await b.refresh() == b.epoch
        assert await raw.pttl(f"{prefix}$ac:e") > 50_000


class TestHistory:
    async def test_messages_older_than_the_ttl_expire_while_the_stream_lives(self, env):
        """Per-message TTL, as the memory broker: a fresh message does not keep an old one servable."""
        b = await make(env, HistoryPolicy(limit=100, ttl=1))
        await b.register(StreamMessage("s", "old"))
        await asyncio.sleep(0.7)
        await b.register(StreamMessage("s", "new"))
        await asyncio.sleep(0.5)  # "old" is 1.2 s old, "new" 0.5 s
        assert [m.data for m in await b.history_from("s", b.epoch, 1)] == ["new"]
        with pytest.raises(HistoryError, match="expired"):
            await b.history_from("s", b.epoch, 0)
        assert [m.data for m in await b.history_since("s", 0)] == ["new"]

    async def test_per_stream_rules(self, env):
        """A rule's TTL and limit apply to matching streams only."""
        policy = HistoryPolicy(limit=2, ttl=60, rules=(StreamRule("short/*", limit=5, ttl=0.3),))
        b = await make(env, policy)
        for i in range(4):
            await b.register(StreamMessage("short/1", str(i)))
            await b.register(StreamMessage("long", str(i)))
        assert len(await b.history_from("short/1", b.epoch, 0)) == 4
        await asyncio.sleep(0.5)
        assert await b.history_since("short/1", 0) == []
        assert [m.data for m in await b.history_since("long", 0)] == ["2", "3"]

    async def test_refusals_say_why(self, env):
        b = await make(env, HistoryPolicy(limit=2, ttl=60))
        for i in range(4):
            await b.register(StreamMessage("s", str(i)))
        with pytest.raises(HistoryError, match="unknown epoch"):
            await b.history_from("s", "nope", 3)
        with pytest.raises(HistoryError, match="no history"):
            await b.history_from("missing", b.epoch, 0)
        with pytest.raises(HistoryError, match="ahead"):
            await b.history_from("s", b.epoch, 5)
        with pytest.raises(HistoryError, match="oldest: 3"):
            await b.history_from("s", b.epoch, 1)
        with pytest.raises(HistoryError, match="negative"):
            await b.history_from("s", b.epoch, -1)

    async def test_since_is_inclusive_to_the_millisecond(self, env):
        b = await make(env)
        first = await b.register(StreamMessage("s", "1"))
        await asyncio.sleep(0.01)
        second = await b.register(StreamMessage("s", "2"))
        assert [m.data for m in await b.history_since("s", second.timestamp)] == ["2"]
        assert [m.data for m in await b.history_since("s", first.timestamp)] == ["1", "2"]
        assert await b.history_since("s", second.timestamp + 0.001) == []


class TestUnavailable:
    async def test_unreachable_redis_raises_broker_error_and_never_crashes(self):
        """Every call fails fast with a BrokerError naming the server; start() does not fail."""
        port = free_port()
        b = RedisBroker(aioredis.Redis.from_url(f"redis://127.0.0.1:{port}"), where=f"127.0.0.1:{port}")
        await b.start()
        try:
            for call in (
                b.register(StreamMessage("s", "x")),
                b.history_from("s", "e", 0),
                b.history_since("s", 0),
                b.commit_session("s", b"x"),
                b.restore_session("s"),
                b.touch_session("s"),
            ):
                with pytest.raises(BrokerError, match=f"127.0.0.1:{port}"):
                    await call
            assert (await b.register(StreamMessage("s", "t", transient=True))).offset == 0
        finally:
            await b.shutdown()

    async def test_recovers_when_redis_comes_up(self):
        """Started while Redis is down, the broker works once Redis answers, without a restart."""
        server = RedisServer()
        b = RedisBroker(aioredis.Redis.from_url(server.url), refresh_interval=0.1)
        await b.start()
        try:
            with pytest.raises(BrokerError):
                await b.register(StreamMessage("s", "x"))
            with server:
                m = await b.register(StreamMessage("s", "x"))
                assert m.offset == 1 and m.epoch == b.epoch
        finally:
            await b.shutdown()


async def test_tls_end_to_end():
    """rediss:// against a TLS-only redis-server: works with its CA, fails clearly without it."""
    with RedisServer(tls=True) as server:
        b = from_config(Config(redis_url=server.url))
        await b.start()
        try:
            m = await b.register(StreamMessage("s", "over tls"))
            assert [x.data for x in await b.history_from("s", m.epoch, 0)] == ["over tls"]
        finally:
            await b.shutdown()
        untrusted = from_config(Config(redis_url=f"rediss://127.0.0.1:{server.port}"))
        try:
            with pytest.raises(BrokerError, match=r"(?i)certificate"):
                await untrusted.register(StreamMessage("s", "x"))
        finally:
            await untrusted.client.aclose()
        unverified = from_config(Config(redis_url=f"rediss://127.0.0.1:{server.port}", redis_tls_verify=False))
        await unverified.start()
        try:  # --redis_tls_verify=false: encrypted, certificate not checked (self-signed managed Redis)
            m = await unverified.register(StreamMessage("s", "unverified"))
            assert m.offset == 2
        finally:
            await unverified.shutdown()


async def test_sentinel_end_to_end(tmp_path):
    """--redis_sentinels: the broker asks a real Sentinel for the master and uses it."""
    import subprocess

    with RedisServer() as master:
        sport = free_port()
        conf = tmp_path / "sentinel.conf"
        conf.write_text(f"port {sport}\nbind 127.0.0.1\nsentinel monitor pycmaster 127.0.0.1 {master.port} 1\n")
        sentinel = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            probe = redis.Redis(port=sport, socket_timeout=0.5)
            for _ in range(200):  # readiness: the sentinel answers (bounded poll across processes)
                try:
                    if probe.sentinel_get_master_addr_by_name("pycmaster"):
                        break
                except redis.RedisError:
                    time.sleep(0.05)
            probe.close()
            b = from_config(Config(redis_sentinels=[f"127.0.0.1:{sport}"], redis_sentinel_master="pycmaster"))
            await b.start()
            try:
                m = await b.register(StreamMessage("s", "via sentinel"))
            finally:
                await b.shutdown()
            raw = aioredis.Redis.from_url(master.url)
            try:
                assert await raw.get("$ac:spos:s") == b"1" and m.offset == 1
            finally:
                await raw.aclose()
        finally:
            sentinel.kill()
            sentinel.wait(5)


def test_from_config_and_describe():
    """The startup line has AnyCable's wording; the prefix and rules come from the config."""
    cfg = Config(redis_url="redis://cache.internal:6380/2", redis_prefix="app:", stream_history=["a*=ttl:5"])
    b = from_config(cfg)
    assert b.describe() == (
        "Using Redis broker at cache.internal:6380 (history limit: 100, history ttl: 300s, sessions ttl: 300s, "
        "stream rules: 1)"
    )
    assert b.prefix == "app:" and b.policy.for_stream("abc") == (100, 5.0)
    assert b.client.connection_pool.connection_kwargs["db"] == 2
    plain = from_config(Config())
    assert plain.describe() == (
        "Using Redis broker at localhost:6379 (history limit: 100, history ttl: 300s, sessions ttl: 300s)"
    )


def test_tls_and_sentinel_urls():
    """rediss:// gives a TLS connection; --redis_sentinels asks the sentinels for the master."""
    from redis.asyncio.connection import SSLConnection
    from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

    tls = from_config(Config(redis_url="rediss://:pw@secure:6390/1"))
    assert tls.client.connection_pool.connection_class is SSLConnection
    assert tls.where == "secure:6390"
    sentinel = from_config(Config(redis_sentinels=["s1:26379", "s2"], redis_sentinel_master="main"))
    assert isinstance(sentinel.client.connection_pool, SentinelConnectionPool)
    assert sentinel.client.connection_pool.service_name == "main"
    assert sentinel.where == "sentinel main@s1:26379,s2"
    tls_sentinel = from_config(Config(redis_url="rediss://secure", redis_sentinels=["s1:26379"]))
    assert tls_sentinel.client.connection_pool.connection_class is SentinelManagedSSLConnection
