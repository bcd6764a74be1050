"""The broker contract (``pycable.broker.base``), run against every backend."""

from __future__ import annotations

import asyncio

import pytest

from pycable.broker.base import StreamRule
from pycable.exceptions import HistoryError
from pycable.protocol.broadcast import StreamMessage


def msg(stream: str, data: str = "{}", transient: bool = False) -> StreamMessage:
    return StreamMessage(stream, data, transient=transient)


async def publish(broker, stream: str, n: int, start: int = 1) -> list[StreamMessage]:
    return [await broker.register(msg(stream, f'{{"n":{i}}}')) for i in range(start, start + n)]


class TestRegistration:
    async def test_offsets_start_at_one_and_grow_by_one(self, make_broker):
        """Offsets start at 1 per stream and grow by one; the epoch is set and shared."""
        b = (await make_broker()).broker
        out = await publish(b, "a", 3)
        other = await b.register(msg("b"))
        assert [m.offset for m in out] == [1, 2, 3]
        assert other.offset == 1
        assert out[0].epoch and {m.epoch for m in out} == {other.epoch} == {b.epoch}
        assert out[2].data == '{"n":3}' and out[2].stream == "a"

    async def test_transient_messages_are_not_stored(self, make_broker):
        """A transient publication gets no position and never shows up in history."""
        b = (await make_broker()).broker
        first = await b.register(msg("a"))
        t = await b.register(msg("a", "x", transient=True))
        last = await b.register(msg("a"))
        assert t.offset == 0 and t.epoch == ""
        assert last.offset == 2
        assert [m.offset for m in await b.history_from("a", b.epoch, 0)] == [1, 2]
        assert first.offset == 1

    async def test_concurrent_registrations_are_atomic(self, make_broker):
        """Concurrent registrations of one stream get distinct consecutive offsets, stored in order."""
        b = (await make_broker()).broker
        out = await asyncio.gather(*(b.register(msg("a", f'"{i}"')) for i in range(50)))
        assert sorted(m.offset for m in out) == list(range(1, 51))
        history = await b.history_from("a", b.epoch, 0)
        assert [m.offset for m in history] == list(range(1, 51))
        by_offset = {m.offset: m.data for m in out}
        assert all(by_offset[m.offset] == m.data for m in history)


class TestHistoryFrom:
    async def test_returns_messages_after_the_offset(self, make_broker):
        b = (await make_broker()).broker
        await publish(b, "a", 5)
        got = await b.history_from("a", b.epoch, 2)
        assert [m.offset for m in got] == [3, 4, 5]
        assert [m.data for m in got] == ['{"n":3}', '{"n":4}', '{"n":5}']
        assert all(m.stream == "a" and m.epoch == b.epoch for m in got)

    async def test_offset_equal_to_last_is_empty(self, make_broker):
        b = (await make_broker()).broker
        await publish(b, "a", 3)
        assert await b.history_from("a", b.epoch, 3) == []

    async def test_offset_ahead_of_last_is_rejected(self, make_broker):
        b = (await make_broker()).broker
        await publish(b, "a", 3)
        with pytest.raises(HistoryError):
            await b.history_from("a", b.epoch, 4)

    async def test_other_epoch_is_rejected(self, make_broker):
        b = (await make_broker()).broker
        await publish(b, "a", 3)
        with pytest.raises(HistoryError):
            await b.history_from("a", b.epoch + "x", 1)

    async def test_unknown_stream_is_rejected(self, make_broker):
        b = (await make_broker()).broker
        with pytest.raises(HistoryError):
            await b.history_from("nope", b.epoch, 0)

    async def test_eviction_edge(self, make_broker):
        """limit 3, offsets 1..5: low is 3; offset 2 (= low-1) missed nothing and is served, 1 is not."""
        b = (await make_broker(limit=3)).broker
        await publish(b, "a", 5)
        assert [m.offset for m in await b.history_from("a", b.epoch, 2)] == [3, 4, 5]
        with pytest.raises(HistoryError):
            await b.history_from("a", b.epoch, 1)
        with pytest.raises(HistoryError):
            await b.history_from("a", b.epoch, 0)

    async def test_per_stream_rules(self, make_broker):
        """A matching rule overrides the limit; other streams keep the default."""
        b = (await make_broker(limit=2, rules=(StreamRule("big/*", limit=10),))).broker
        await publish(b, "big/1", 6)
        await publish(b, "small", 6)
        assert len(await b.history_from("big/1", b.epoch, 0)) == 6
        assert [m.offset for m in await b.history_from("small", b.epoch, 4)] == [5, 6]
        with pytest.raises(HistoryError):
            await b.history_from("small", b.epoch, 0)


class TestHistorySince:
    async def test_since_is_inclusive_and_ordered(self, make_broker):
        h = await make_broker()
        b = h.broker
        await publish(b, "a", 2)
        await h.advance(10)
        later = await publish(b, "a", 2, start=3)
        ts = later[0].timestamp
        got = await b.history_since("a", ts)
        assert [m.offset for m in got] == [3, 4]
        assert [m.offset for m in await b.history_since("a", 0)] == [1, 2, 3, 4]

    async def test_unknown_stream_is_empty(self, make_broker):
        b = (await make_broker()).broker
        assert await b.history_since("nope", 0) == []


class TestExpiry:
    async def test_expired_messages_leave_history(self, make_broker):
        """After the TTL, an up-to-date client is confirmed; a client behind is rejected."""
        h = await make_broker(ttl=1)
        b = h.broker
        await publish(b, "a", 3)
        await h.advance(2.5)
        h.expire()
        assert await b.history_since("a", 0) == []
        assert await b.history_from("a", b.epoch, 3) == []
        with pytest.raises(HistoryError):
            await b.history_from("a", b.epoch, 1)

    async def test_per_stream_ttl_rule(self, make_broker):
        """A matching rule's TTL keeps its streams' history; the others expire with the default."""
        h = await make_broker(ttl=1, rules=(StreamRule("keep/*", ttl=600),))
        b = h.broker
        await publish(b, "keep/1", 2)
        await publish(b, "a", 2)
        await h.advance(2.5)
        h.expire()
        assert [m.offset for m in await b.history_from("keep/1", b.epoch, 0)] == [1, 2]
        assert await b.history_since("a", 0) == []

    async def test_offsets_never_go_back_after_expiry(self, make_broker):
        """A stream recreated after it was dropped (idle for 10 TTLs) continues above its last offset."""
        h = await make_broker(ttl=0.2)
        b = h.broker
        await publish(b, "a", 3)
        await h.advance(2.5)
        h.expire()
        again = await b.register(msg("a"))
        assert again.epoch != b.epoch or again.offset > 3


class TestSessions:
    async def test_commit_restore_touch(self, make_broker):
        b = (await make_broker()).broker
        await b.commit_session("s1", b'{"ids":"x"}')
        assert await b.restore_session("s1") == b'{"ids":"x"}'
        assert await b.restore_session("s1") == b'{"ids":"x"}', "restoring does not delete"
        assert await b.restore_session("nope") is None
        await b.touch_session("nope")  # no error for an unknown session
        assert await b.restore_session("nope") is None

    async def test_sessions_expire_unless_touched(self, make_broker):
        h = await make_broker(sessions_ttl=1)
        b = h.broker
        await b.commit_session("s1", b"one")
        await b.commit_session("s2", b"two")
        await h.advance(0.6)
        await b.touch_session("s2")
        await h.advance(0.6)
        h.expire()
        assert await b.restore_session("s1") is None
        assert await b.restore_session("s2") == b"two"

    async def test_an_entry_over_the_size_cap_is_not_stored_and_drops_the_older_one(self, make_broker):
        """``session_max_size``: a larger entry is refused (counted), and the session's older
        entry goes too: it is not the session's state any more."""
        b = (await make_broker(session_max_size=100)).broker
        await b.commit_session("s1", b"x" * 100)
        await b.commit_session("s2", b"z" * 10)
        assert await b.restore_session("s1") == b"x" * 100
        await b.commit_session("s1", b"y" * 101)
        assert await b.restore_session("s1") is None
        await b.touch_session("s1")
        assert await b.restore_session("s1") is None
        assert await b.restore_session("s2") == b"z" * 10
        assert b.session_limit.refused == 1

    async def test_sessions_ttl_zero_stores_nothing(self, make_broker):
        b = (await make_broker(sessions_ttl=0)).broker
        await b.commit_session("s1", b"one")
        assert await b.restore_session("s1") is None
