"""The gap filler between pub/sub and the hub: order restored within the window, else from history."""

from __future__ import annotations

import asyncio

import pytest

from pycable.broker.base import HistoryPolicy
from pycable.broker.memory import MemoryBroker
from pycable.exceptions import BrokerError
from pycable.node.gaps import GapFiller
from pycable.node.hub import Hub
from pycable.protocol.broadcast import StreamMessage


class RecordingHub(Hub):
    def __init__(self, streams: tuple[str, ...] = ("s",)) -> None:
        super().__init__()
        for s in streams:
            self.streams[s] = {}
        self.got: list[StreamMessage] = []
        self.event = asyncio.Event()

    def broadcast(self, msg: StreamMessage) -> None:
        self.got.append(msg)
        self.event.set()


async def registered(broker: MemoryBroker, n: int, stream: str = "s") -> list[StreamMessage]:
    return [await broker.register(StreamMessage(stream, str(i))) for i in range(n)]


async def wait_for_count(hub: RecordingHub, n: int) -> None:
    async def until() -> None:
        while len(hub.got) < n:
            hub.event.clear()
            await hub.event.wait()

    await asyncio.wait_for(until(), 2)


async def test_reordered_within_the_window_without_history():
    broker = MemoryBroker()
    msgs = await registered(broker, 5)
    hub = RecordingHub()
    gaps = GapFiller(broker, hub, window=5)
    for i in (0, 1, 3, 4, 2):
        gaps.push(msgs[i])
    assert [m.offset for m in hub.got] == [1, 2, 3, 4, 5]
    assert gaps.stats["filled"] == 0 and not gaps._timers


async def test_a_missing_message_is_read_from_history_after_the_window():
    broker = MemoryBroker()
    msgs = await registered(broker, 5)
    hub = RecordingHub()
    gaps = GapFiller(broker, hub, window=0.01)
    for i in (0, 1, 4):  # 3 and 4 never arrive (a node died before publishing them)
        gaps.push(msgs[i])
    assert [m.offset for m in hub.got] == [1, 2]
    await wait_for_count(hub, 5)
    assert [m.offset for m in hub.got] == [1, 2, 3, 4, 5]
    assert gaps.stats["filled"] == 1


async def test_an_unfillable_gap_passes_the_held_messages():
    broker = MemoryBroker(HistoryPolicy(limit=2))
    msgs = await registered(broker, 6)  # only 5 and 6 are kept
    hub = RecordingHub()
    gaps = GapFiller(broker, hub, window=0.01)
    gaps.push(msgs[0])
    gaps.push(msgs[5])
    await wait_for_count(hub, 2)
    assert [m.offset for m in hub.got] == [1, 6]
    assert gaps.stats["gaps_lost"] == 1


async def test_broker_down_passes_the_held_messages():
    class Down(MemoryBroker):
        async def history_from(self, stream, epoch, offset):
            raise BrokerError("down")

    broker = Down()
    msgs = await registered(broker, 3)
    hub = RecordingHub()
    gaps = GapFiller(broker, hub, window=0.01)
    gaps.push(msgs[0])
    gaps.push(msgs[2])
    await wait_for_count(hub, 2)
    assert [m.offset for m in hub.got] == [1, 3]


async def test_streams_without_local_subscribers_are_not_tracked():
    broker = MemoryBroker()
    msgs = await registered(broker, 3, "other")
    hub = RecordingHub()
    gaps = GapFiller(broker, hub, window=5)
    gaps.push(msgs[0])
    gaps.push(msgs[2])
    assert hub.got == [] and "other" not in gaps.order.streams


async def test_forget_drops_the_state_and_timer():
    broker = MemoryBroker()
    msgs = await registered(broker, 3)
    hub = RecordingHub()
    gaps = GapFiller(broker, hub, window=5)
    gaps.push(msgs[0])
    gaps.push(msgs[2])
    gaps.forget("s")
    assert not gaps._timers and "s" not in gaps.order.streams
    gaps.close()


@pytest.mark.parametrize("order", [(0, 2, 1), (2, 0, 1), (1, 2, 0)])
async def test_any_arrival_order_comes_out_in_offset_order(order):
    broker = MemoryBroker()
    msgs = await registered(broker, 3)
    hub = RecordingHub()
    gaps = GapFiller(broker, hub, window=0.01)
    for i in order:
        gaps.push(msgs[i])
    await wait_for_count(hub, 3)
    assert [m.offset for m in hub.got] == [1, 2, 3]
    gaps.close()


async def test_the_first_message_waits_for_a_concurrent_predecessor():
    """A node starts listening mid-stream: 5 arrives before 4 (published concurrently elsewhere);
    both are passed on, in order, after the window."""
    broker = MemoryBroker()
    msgs = await registered(broker, 5)
    hub = RecordingHub()
    gaps = GapFiller(broker, hub, window=0.02)
    gaps.push(msgs[4])
    gaps.push(msgs[3])
    assert hub.got == []
    await wait_for_count(hub, 2)
    assert [m.offset for m in hub.got] == [4, 5]
    assert gaps.stats["filled"] == 0, "nothing before the first message is read from history"
    gaps.close()
