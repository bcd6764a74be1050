"""The memory broker's cap on kept message data (--history_max_bytes)."""

from __future__ import annotations

import pytest

from pycable.broker.base import HistoryPolicy
from pycable.broker.memory import MemoryBroker
from pycable.exceptions import BrokerError, BrokerFullError
from pycable.protocol.broadcast import StreamMessage


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_full_broker_refuses_and_keeps_what_it_has():
    b = MemoryBroker(HistoryPolicy(limit=0, ttl=0), max_bytes=10)
    first = await b.register(StreamMessage("s", "abcdef"))
    with pytest.raises(BrokerFullError) as err:
        await b.register(StreamMessage("s", "ghijk"))
    assert isinstance(err.value, BrokerError) and "--history_max_bytes" in str(err.value)
    assert [m.data for m in await b.history_since("s", 0)] == ["abcdef"]
    assert await b.tail("s") == first.offset == 1  # nothing was stored, no offset was used
    assert (await b.register(StreamMessage("s", "xyzw"))).offset == 2  # what fits still goes in


async def test_eviction_expiry_and_deletion_free_room():
    clock = Clock()
    b = MemoryBroker(HistoryPolicy(limit=2, ttl=10), clock=clock, max_bytes=100)
    for _ in range(5):
        await b.register(StreamMessage("s", "x" * 10))
    assert b.size == 20  # two kept (limit 2)
    clock.now += 11
    assert await b.history_since("s", 0) == []
    assert b.size == 0
    await b.ds_create("d", b"m")
    await b.register(StreamMessage("d", "y" * 30))
    assert b.size == 30
    await b.ds_delete("d")
    assert b.size == 0


async def test_no_cap_by_default():
    b = MemoryBroker(HistoryPolicy(limit=0, ttl=0))
    for _ in range(100):
        await b.register(StreamMessage("s", "z" * 1000))
    assert b.size == 100_000 and b.max_bytes == 0
