"""A pure in-memory stream history (offsets, limit, TTL). Not task-safe: the owner
serialises access (the event loop does, since nothing here awaits)."""

from __future__ import annotations

from collections import deque
from itertools import islice

from pycable.exceptions import HistoryError
from pycable.protocol.broadcast import StreamMessage

__all__ = ["MemStream"]


class MemStream:
    """History of one stream.

    Args:
        limit: at most this many messages are kept (0: unbounded).
        ttl: messages older than this many seconds are dropped (0: never).
        start_offset: the last offset of an earlier incarnation of this stream, so that
            offsets never go back within an epoch.

    ``size`` is the number of characters of message data kept (the memory broker's cap).
    """

    __slots__ = ("limit", "ttl", "offset", "entries", "updated", "size")

    def __init__(self, limit: int, ttl: float, start_offset: int = 0) -> None:
        self.limit = max(0, limit)
        self.ttl = max(0.0, ttl)
        self.offset = start_offset  # the last offset assigned
        self.entries: deque[StreamMessage] = deque(maxlen=self.limit or None)
        self.updated = 0.0  # when the last message was added
        self.size = 0

    def idle(self, now: float) -> bool:
        """Empty and untouched for 10 TTLs: its offset alone is worth keeping (as the floor)."""
        return not self.entries and bool(self.ttl) and now > self.updated + 10 * self.ttl

    def add(self, msg: StreamMessage, epoch: str, now: float) -> StreamMessage:
        self.offset += 1
        self.updated = now
        stored = msg.registered(self.offset, epoch, now)
        entries = self.entries
        if self.limit and len(entries) == self.limit:
            self.size -= len(entries[0].data)
        entries.append(stored)
        self.size += len(stored.data)
        return stored

    def expire(self, now: float) -> None:
        if not self.ttl:
            return
        entries, cutoff = self.entries, now - self.ttl
        while entries and entries[0].timestamp < cutoff:
            self.size -= len(entries.popleft().data)

    def since(self, ts: float, now: float) -> list[StreamMessage]:
        self.expire(now)
        return [m for m in self.entries if m.timestamp >= ts]

    def after(self, offset: int, now: float) -> list[StreamMessage]:
        """Messages with an offset > *offset* (see the broker contract for the errors)."""
        self.expire(now)
        if offset > self.offset:
            raise HistoryError(f"offset {offset} is ahead of the stream (last: {self.offset})")
        if offset == self.offset:
            return []
        if not self.entries:
            raise HistoryError("the stream's history has expired")
        low = self.entries[0].offset
        if offset < low - 1:
            raise HistoryError(f"offset {offset} is no longer in the history (oldest: {low})")
        # Offsets in the deque are contiguous (low, low+1, …), so the index is known.
        return list(islice(self.entries, offset - low + 1, None))
