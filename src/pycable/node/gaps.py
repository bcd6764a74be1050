"""The gap filler: the I/O half of :mod:`pycable.protocol.reorder`.

It sits between pub/sub and the hub (``Node.handle_pubsub``) on nodes whose messages can
arrive out of offset order or go missing: a distributed broker or a multi-node pub/sub.
An out-of-order message (or the first one of a stream, unless its offset is 1) is held
for :attr:`GapFiller.window` seconds; if the missing offsets have not arrived by then,
they are read from the broker's history (``history_from(stream, epoch, last)``) and
passed on in order. If history cannot fill the gap (evicted, broker down) the held
messages pass with the gap and a warning is logged.
"""

from __future__ import annotations

import asyncio
import logging

from pycable.broker.base import Broker
from pycable.exceptions import BrokerError, HistoryError
from pycable.node.hub import Hub
from pycable.protocol.broadcast import StreamMessage
from pycable.protocol.reorder import Reorderer

__all__ = ["GapFiller", "WINDOW"]

log = logging.getLogger("pycable.node")

#: Seconds an out-of-order message waits for its predecessors before history is read.
WINDOW = 0.05


class GapFiller:
    """Per-stream offset order for one node (see the module docstring).

    Args:
        broker: where missing messages are read from.
        hub: where messages go (``Hub.broadcast``), in offset order per stream; streams
            without local subscribers are not tracked.
        window: seconds to wait for a missing offset before reading history.
    """

    def __init__(self, broker: Broker, hub: Hub, window: float = WINDOW) -> None:
        self.broker = broker
        self.hub = hub
        self.deliver = hub.broadcast
        self.window = window
        self.order: Reorderer[StreamMessage] = Reorderer()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = {"held": 0, "filled": 0, "gaps_lost": 0}

    def push(self, msg: StreamMessage) -> None:
        """A message from pub/sub."""
        stream = msg.stream
        if stream not in self.hub.streams and stream not in self.hub.watchers:
            # Not listening (any more): keep no baseline that a later subscription could trip on.
            return
        ready = self.order.push(stream, msg)
        for m in ready:
            self.deliver(m)
        if not ready:
            self.stats["held"] += 1
        if not self.order.waiting(stream):
            self._cancel(stream)
        elif self.order.overflowing(stream):
            self._cancel(stream)
            self._due(stream)
        elif stream not in self._timers:
            self._timers[stream] = asyncio.get_running_loop().call_later(self.window, self._due, stream)

    def forget(self, stream: str) -> None:
        """The node no longer listens to *stream*."""
        self._cancel(stream)
        for m in self.order.forget(stream):
            self.deliver(m)

    def close(self) -> None:
        for stream in list(self._timers):
            self._cancel(stream)
        for task in list(self._tasks):
            task.cancel()

    def _cancel(self, stream: str) -> None:
        timer = self._timers.pop(stream, None)
        if timer is not None:
            timer.cancel()

    def _due(self, stream: str) -> None:
        self._timers.pop(stream, None)
        for m in self.order.settle(stream):
            self.deliver(m)
        start = self.order.start_fill(stream)
        if start is None:
            return
        task = asyncio.get_running_loop().create_task(self._fill(stream, *start))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fill(self, stream: str, epoch: str, last: int) -> None:
        try:
            backlog = await self.broker.history_from(stream, epoch, last)
        except (HistoryError, BrokerError) as exc:
            out = self.order.give_up(stream)
            self.stats["gaps_lost"] += 1
            log.warning(
                "stream %r: offsets after %d did not arrive and history cannot fill the gap (%s); "
                "delivering %d later messages without them",
                stream[:64],
                last,
                exc,
                len(out),
            )
        else:
            out = self.order.fill(stream, epoch, backlog)
            self.stats["filled"] += 1
            log.debug("stream %r: filled a gap after offset %d from history", stream[:64], last)
        for m in out:
            self.deliver(m)
        if self.order.waiting(stream) and stream not in self._timers:
            self._timers[stream] = asyncio.get_running_loop().call_later(self.window, self._due, stream)
