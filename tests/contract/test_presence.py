"""The presence contract (``pycable.presence.base``), run against memory, Redis and NATS.

Each backend gets its own namespace (Redis key prefix, NATS bucket prefix). Time: the
memory and NATS backends take a fake clock; Redis keeps deadlines on its own clock, so its
expiry tests wait for real (TTL 1 s, polled with a generous bound).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from contract.backends._nats import delete_prefixed, nats_url
from contract.backends.redis import delete_prefix
from helpers.redis_server import redis_url
from pycable.exceptions import PresenceError
from pycable.presence.base import NullPresence, Presence, PresenceLimits
from pycable.presence.memory import MemoryPresence
from pycable.presence.nats import NatsPresence
from pycable.presence.redis import RedisPresence
from pycable.protocol.presence import JOIN, LEAVE, Member, PresenceEvent


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Handle:
    presence: Presence
    #: Let *seconds* pass for the backend's deadlines.
    advance: Callable[[float], Awaitable[None]]
    #: A second node on the same shared state (None for memory).
    peer: Presence | None = None


Make = Callable[..., Awaitable[Handle]]


@pytest.fixture(params=["memory", "redis", "nats"])
async def make_presence(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    closers: list[Callable[[], Awaitable[None]]] = []
    backend = request.param

    async def make(ttl: float = 15.0, max_per_stream: int = 100, max_per_session: int = 10) -> Handle:
        limits = PresenceLimits(ttl, max_per_stream, max_per_session)
        name = f"t{uuid.uuid4().hex[:10]}"
        if backend == "memory":
            clock = FakeClock()
            mem = MemoryPresence(limits, clock=clock)

            async def advance(seconds: float) -> None:
                clock.now += seconds

            return Handle(mem, advance)
        if backend == "redis":
            url = redis_url()
            prefix = f"pycable-test:{name}:"
            a = RedisPresence(aioredis.Redis.from_url(url), limits, prefix)
            b = RedisPresence(aioredis.Redis.from_url(url), limits, prefix)

            async def close_redis() -> None:
                await a.shutdown()
                await b.shutdown()
                await delete_prefix(url, prefix)

            closers.append(close_redis)
            return Handle(a, asyncio.sleep, b)
        url = await nats_url()
        clock = FakeClock()
        na = NatsPresence([url], limits, prefix=name, ready_timeout=10, clock=clock)
        nb = NatsPresence([url], limits, prefix=name, ready_timeout=10, clock=clock)
        await na.start()
        await nb.start()

        async def advance_nats(seconds: float) -> None:
            clock.now += seconds

        async def close_nats() -> None:
            await na.shutdown()
            await nb.shutdown()
            await delete_prefixed(url, name)

        closers.append(close_nats)
        return Handle(na, advance_nats, nb)

    make.backend = backend  # type: ignore[attr-defined]
    yield make
    for close in closers:
        await close()


def ids(members: list[Member]) -> set[str]:
    return {m.id for m in members}


async def eventually(check: Callable[[], Awaitable[bool]], bound: float = 15.0) -> None:
    """Poll *check* until true; *bound* only limits a failure."""
    deadline = time.monotonic() + bound
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


class TestJoinLeave:
    async def test_join_is_an_event_only_for_a_new_id(self, make_presence):
        p = (await make_presence()).presence
        alice = Member("1", '{"name":"Alice"}')
        assert await p.join("room", "s1", alice) == PresenceEvent(JOIN, "room", alice)
        assert await p.join("room", "s2", alice) is None  # another session, same id
        assert await p.join("room", "s1", alice) is None  # the same session again
        assert await p.info("room") == [alice]

    async def test_leave_is_an_event_only_for_the_last_session(self, make_presence):
        p = (await make_presence()).presence
        bob = Member("2")
        await p.join("room", "s1", bob)
        await p.join("room", "s2", bob)
        assert await p.leave("room", "s1") is None
        assert ids(await p.info("room")) == {"2"}
        assert await p.leave("room", "s2") == PresenceEvent(LEAVE, "room", Member("2"))
        assert await p.info("room") == []

    async def test_leave_without_join_is_a_no_op(self, make_presence):
        p = (await make_presence()).presence
        assert await p.leave("room", "nobody") is None
        await p.join("room", "s1", Member("1"))
        assert await p.leave("other", "s1") is None
        assert ids(await p.info("room")) == {"1"}

    async def test_another_id_for_the_same_session_and_stream_is_refused(self, make_presence):
        p = (await make_presence()).presence
        await p.join("room", "s1", Member("1"))
        with pytest.raises(PresenceError, match="mismatch"):
            await p.join("room", "s1", Member("2"))
        assert ids(await p.info("room")) == {"1"}
        assert await p.join("hall", "s1", Member("2")) is not None  # other streams are independent

    async def test_a_later_join_replaces_info(self, make_presence):
        p = (await make_presence()).presence
        await p.join("room", "s1", Member("1", '{"v":1}'))
        await p.join("room", "s2", Member("1", '{"v":2}'))
        assert await p.info("room") == [Member("1", '{"v":2}')]

    async def test_ids_and_info_round_trip_exactly(self, make_presence):
        p = (await make_presence()).presence
        odd = Member('ü "/\\ \u0001 🙂', '{"name":"Zoë \\"Z\\" 🙂","tags":[1,null,{}]}')
        await p.join("room", "s1", odd)
        await p.join("room", "s2", Member("plain"))
        assert sorted(await p.info("room"), key=lambda m: m.id) == [Member("plain"), odd]

    async def test_streams_are_separate_and_unknown_is_empty(self, make_presence):
        p = (await make_presence()).presence
        await p.join("a", "s1", Member("1"))
        await p.join("b", "s2", Member("2"))
        assert ids(await p.info("a")) == {"1"}
        assert ids(await p.info("b")) == {"2"}
        assert await p.info("nothing") == []

    async def test_many_members(self, make_presence):
        p = (await make_presence()).presence
        events = await asyncio.gather(*(p.join("big", f"s{i}", Member(str(i), f'{{"n":{i}}}')) for i in range(60)))
        assert all(e is not None and e.type == JOIN for e in events)
        records = await p.info("big")
        assert ids(records) == {str(i) for i in range(60)}
        assert {m.id: m.info for m in records}["7"] == '{"n":7}'


    async def test_a_burst_of_joins_from_many_sessions_all_succeed(self, make_presence):
        """More concurrent joins than a client pool has connections: they queue, none fails."""
        p = (await make_presence(max_per_stream=1000)).presence
        events = await asyncio.gather(*(p.join("crowd", f"s{i}", Member(str(i))) for i in range(300)))
        assert sum(1 for e in events if e is not None) == 300
        assert len(await p.info("crowd")) == 300


class TestBounds:
    async def test_cap_per_stream(self, make_presence):
        p = (await make_presence(max_per_stream=3)).presence
        for i in range(3):
            await p.join("room", f"s{i}", Member(str(i)))
        with pytest.raises(PresenceError, match="per stream"):
            await p.join("room", "s9", Member("9"))
        assert await p.join("room", "s9", Member("0")) is None  # a known id adds no record
        assert len(await p.info("room")) == 3

    async def test_cap_per_session(self, make_presence):
        p = (await make_presence(max_per_session=2)).presence
        await p.join("a", "s1", Member("1"))
        await p.join("b", "s1", Member("1"))
        with pytest.raises(PresenceError, match="per session"):
            await p.join("c", "s1", Member("1"))
        assert await p.info("c") == []
        await p.join("a", "s1", Member("1"))  # re-joining a stream it is in is fine
        await p.leave("a", "s1")
        assert await p.join("c", "s1", Member("1")) is not None


class TestExpiry:
    async def test_untouched_sessions_expire_with_one_leave_event(self, make_presence):
        h = await make_presence(ttl=1.0)
        p = h.presence
        await p.join("room", "gone", Member("1"))
        await p.join("hall", "gone", Member("1"))
        await p.join("room", "stays", Member("2"))
        events: list[PresenceEvent] = []

        async def expired() -> bool:
            await p.touch(["stays"])
            events.extend(await p.expire())
            return len(events) >= 2

        await h.advance(0.6)
        await p.touch(["stays"])
        await h.advance(0.6)
        await eventually(expired)
        assert sorted((e.type, e.stream, e.member.id) for e in events) == [
            (LEAVE, "hall", "1"),
            (LEAVE, "room", "1"),
        ]
        assert ids(await p.info("room")) == {"2"}
        assert await p.expire() == []

    async def test_touch_renews_every_session_given(self, make_presence):
        h = await make_presence(ttl=2.0)
        p = h.presence
        for sid, stream, pid in (("t1", "room", "1"), ("t2", "room", "1"), ("t1", "hall", "1"), ("u", "room", "2")):
            await p.join(stream, sid, Member(pid))
        await h.advance(1.2)
        await p.touch(["t1", "t2", "nobody"])
        await h.advance(1.2)  # u's deadline (2.0) has passed; t1's and t2's (3.2) have not
        events: list[PresenceEvent] = []

        async def u_gone() -> bool:
            events.extend(await p.expire())
            return bool(events)

        await eventually(u_gone)
        assert [(e.stream, e.member.id) for e in events] == [("room", "2")]
        assert ids(await p.info("room")) == {"1"} and ids(await p.info("hall")) == {"1"}

    async def test_expiry_keeps_an_id_with_a_live_session(self, make_presence):
        h = await make_presence(ttl=1.0)
        p = h.presence
        await p.join("room", "old", Member("1"))
        await h.advance(0.6)
        await p.join("room", "new", Member("1"))  # e.g. the client's restored session
        await h.advance(0.6)
        assert await p.expire() == []  # "old" may be gone; the id is not
        assert ids(await p.info("room")) == {"1"}


class TestCluster:
    async def test_a_join_on_one_node_shows_on_the_other(self, make_presence):
        h = await make_presence()
        if h.peer is None:
            pytest.skip("the memory backend is single-node")
        a, b = h.presence, h.peer
        await a.join("room", "s1", Member("1", '{"at":"a"}'))

        async def seen() -> bool:
            return ids(await b.info("room")) == {"1"}

        await eventually(seen)
        assert await b.join("room", "s2", Member("1")) is None  # not new cluster-wide
        assert await a.leave("room", "s1") is None  # b's session still holds the id
        assert await b.leave("room", "s2") == PresenceEvent(LEAVE, "room", Member("1"))

    async def test_each_expiry_event_comes_from_one_node(self, make_presence):
        h = await make_presence(ttl=1.0)
        if h.peer is None:
            pytest.skip("the memory backend is single-node")
        a, b = h.presence, h.peer
        for i in range(5):
            await a.join("room", f"s{i}", Member(str(i)))
        await eventually(lambda: _count(b, "room", 5))
        events: list[PresenceEvent] = []
        await h.advance(1.2)

        async def all_expired() -> bool:
            got = await asyncio.gather(a.expire(), b.expire())
            events.extend(got[0] + got[1])
            return len(events) >= 5

        await eventually(all_expired)
        assert sorted(e.member.id for e in events) == ["0", "1", "2", "3", "4"]  # each once


async def _count(p: Presence, stream: str, n: int) -> bool:
    return len(await p.info(stream)) == n


class TestNull:
    async def test_joins_are_refused_and_nothing_breaks(self):
        p = NullPresence()
        with pytest.raises(PresenceError):
            await p.join("room", "s1", Member("1"))
        with pytest.raises(PresenceError):
            await p.info("room")
        assert await p.leave("room", "s1") is None
        assert await p.expire() == []
