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


def durable(handle):
    if not hasattr(handle.broker, "ds_create"):
        pytest.skip("this backend keeps no Durable Streams metadata yet")
    return handle.broker


class TestDurableStreams:
    """Durable Streams metadata and unbounded history (``DurableBroker``)."""

    async def test_create_load_store(self, make_broker):
        b = durable(await make_broker())
        assert await b.tail("ds") is None and await b.ds_load("ds") is None
        assert await b.ds_create("ds", b"meta-1") is True
        assert await b.ds_create("ds", b"meta-2") is False  # exists: unchanged
        assert await b.ds_load("ds") == b"meta-1"
        assert await b.tail("ds") == 0
        assert await b.history_from("ds", b.epoch, 0) == []  # a created stream is known, empty
        await b.ds_store("ds", b"meta-3")
        assert await b.ds_load("ds") == b"meta-3"

    async def test_appends_move_the_tail(self, make_broker):
        b = durable(await make_broker())
        await b.ds_create("ds", b"m")
        out = await publish(b, "ds", 3)
        assert await b.tail("ds") == out[-1].offset == 3
        assert [m.data for m in await b.history_since("ds", 0)] == ['{"n":1}', '{"n":2}', '{"n":3}']

    async def test_delete_forgets_and_offsets_continue(self, make_broker):
        b = durable(await make_broker())
        await b.ds_create("ds", b"m")
        await publish(b, "ds", 4)
        await b.ds_delete("ds")
        assert await b.ds_load("ds") is None and await b.history_since("ds", 0) == []
        assert await b.tail("ds") in (None, 4)  # gone, or (NATS) an empty stream at its last offset
        await b.ds_delete("ds")  # deleting again is harmless
        assert await b.ds_create("ds", b"again") is True
        first = await b.register(msg("ds"))
        assert first.offset > 4  # a new stream under the same name never reuses positions
        with pytest.raises(HistoryError):
            await b.history_from("ds", b.epoch, 2)

    async def test_payloads_are_kept_exactly(self, make_broker):
        b = durable(await make_broker())
        await b.ds_create("ds", b"m")
        datas = ["AAECA/8=", "line1\nline2\r\n", "héllo ☃ \U0001f600", '"quoted"', " "]
        for data in datas:
            await b.register(msg("ds", data))
        assert [m.data for m in await b.history_from("ds", b.epoch, 0)] == datas

    async def test_unbounded_rule_keeps_everything(self, make_broker):
        h = await make_broker(limit=3, ttl=1.0, rules=(StreamRule("ds/*", limit=0, ttl=0),))
        b = durable(h)
        await b.ds_create("ds/all", b"m")
        await publish(b, "ds/all", 50)
        await publish(b, "other", 5)
        await h.advance(1.5)
        h.expire()
        assert [m.offset for m in await b.history_from("ds/all", b.epoch, 0)] == list(range(1, 51))
        assert await b.history_since("other", 0) == []

    async def test_metadata_outlives_an_empty_history(self, make_broker):
        h = await make_broker(ttl=1.0)
        b = durable(h)
        await b.ds_create("ds", b"m")
        await publish(b, "ds", 1)
        await h.advance(12)
        h.expire()
        assert await b.ds_load("ds") == b"m"
        assert await b.tail("ds") == 1


class TestForks:
    """``ds_fork``: a copy of the source's messages up to an offset, offsets kept."""

    async def test_fork_copies_with_offsets_and_continues_above(self, make_broker):
        b = durable(await make_broker())
        if not hasattr(b, "ds_fork"):
            pytest.skip("this backend does not fork streams")
        await b.ds_create("src", b"s")
        out = await publish(b, "src", 4)
        assert await b.ds_fork("src", "fork", out[1].offset, b"f") is True
        assert await b.ds_fork("src", "fork", out[1].offset, b"again") is False
        assert await b.ds_load("fork") == b"f"
        assert await b.tail("fork") == out[1].offset
        got = await b.history_since("fork", 0)
        assert [(m.offset, m.data, m.stream) for m in got] == [(m.offset, m.data, "fork") for m in out[:2]]
        own = await b.register(msg("fork", '"own"'))
        assert own.offset == out[1].offset + 1
        assert [m.data for m in await b.history_from("fork", b.epoch, out[0].offset)] == [out[1].data, '"own"']
        assert [m.offset for m in await b.history_from("src", b.epoch, 0)] == [m.offset for m in out]  # untouched
        assert await b.ds_fork("src", "empty", 0, b"e") is True
        assert await b.history_since("empty", 0) == [] and await b.tail("empty") == 0
