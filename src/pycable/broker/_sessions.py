"""Session-cache limits shared by the brokers (issue 14 item 5).

* :class:`EntryLimit`: the per-session cap every broker applies before it stores an entry
  (``--sessions_max_entry_size``). An entry over it is not stored and the session's older
  entry is dropped: a restore would otherwise bring back a state that is no longer the
  session's. The session is then not restorable (its client reconnects as a new one).
* :class:`SessionStore`: an in-process cache bounded by a TTL and by bytes in total
  (``--sessions_max_cache_size``): when full, the entries written longest ago go first.
  The memory broker keeps its sessions here; the NATS broker its local copies.

Both count what they refuse or evict and log it, at most once a second (with the number
of events since the last line), so that a flood cannot flood the log too.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["EntryLimit", "SessionStore", "ENTRY_OVERHEAD"]

log = logging.getLogger("pycable.broker")

#: Bytes counted per cached entry on top of its sid and value (dict slot, tuple, objects).
ENTRY_OVERHEAD = 160


class _RateLog:
    """A warning at most once per *interval* seconds, carrying the count of skipped ones."""

    __slots__ = ("interval", "clock", "next_at", "skipped")

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.next_at = 0.0
        self.skipped = 0

    def warning(self, msg: str, *args: object) -> None:
        now = self.clock()
        if now < self.next_at:
            self.skipped += 1
            return
        self.next_at = now + self.interval
        if self.skipped:
            msg += " (and %d more since the last such line)"
            args = (*args, self.skipped)
            self.skipped = 0
        log.warning(msg, *args)


class EntryLimit:
    """The per-session cap. ``refused`` counts the entries that were over it."""

    __slots__ = ("max_size", "refused", "_log")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.refused = 0
        self._log = _RateLog()

    def fits(self, entry: bytes) -> bool:
        """True if *entry* may be stored; else it is counted and logged."""
        if self.max_size <= 0 or len(entry) <= self.max_size:
            return True
        self.refused += 1
        self._log.warning(
            "session cache entry of %d bytes is over --sessions_max_entry_size (%d): not stored, the session "
            "cannot be restored",
            len(entry),
            self.max_size,
        )
        return False


class SessionStore:
    """Entries by sid, each living ``ttl`` seconds from its last write, at most ``max_size``
    bytes in all (0: no byte bound).

    Entries are kept in write order, oldest first. A write (commit or touch) moves an entry
    to the end, so with one TTL for all the front is also the next to expire, and the
    front is what goes when the cache is full. The clock is passed in.
    """

    __slots__ = ("ttl", "max_size", "entries", "size", "evicted", "_log")

    def __init__(self, ttl: float, max_size: int = 0) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self.entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        #: Bytes counted for the entries held (values, sids and :data:`ENTRY_OVERHEAD`).
        self.size = 0
        #: Entries dropped before their TTL to stay within ``max_size``.
        self.evicted = 0
        self._log = _RateLog()

    @staticmethod
    def cost(sid: str, entry: bytes) -> int:
        return len(entry) + len(sid) + ENTRY_OVERHEAD

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, sid: str, entry: bytes, now: float) -> None:
        """Store *entry* until ``now + ttl``, evicting the oldest entries if needed."""
        self.discard(sid)
        self.expire(now)
        cost = self.cost(sid, entry)
        entries = self.entries
        evicted = 0
        if self.max_size and cost > self.max_size:  # larger than the whole cache: not kept
            self.evicted += 1
            self._log.warning("session cache entry of %d bytes is larger than --sessions_max_cache_size (%d): "
                              "not stored", len(entry), self.max_size)
            return
        while self.max_size and self.size + cost > self.max_size and entries:
            old_sid, (old, _) = entries.popitem(last=False)
            self.size -= self.cost(old_sid, old)
            evicted += 1
        if evicted:
            self.evicted += evicted
            self._log.warning(
                "session cache is full (--sessions_max_cache_size %d bytes): evicted %d oldest session(s)",
                self.max_size,
                evicted,
            )
        entries[sid] = (entry, now + self.ttl)
        self.size += cost

    def get(self, sid: str, now: float) -> bytes | None:
        """The entry, or ``None`` if unknown or expired."""
        found = self.entries.get(sid)
        if found is None or found[1] <= now:
            return None
        return found[0]

    def touch(self, sid: str, now: float) -> bool:
        """Extend a live entry's life; False if unknown or expired."""
        entry = self.get(sid, now)
        if entry is None:
            return False
        self.entries[sid] = (entry, now + self.ttl)
        self.entries.move_to_end(sid)
        return True

    def discard(self, sid: str) -> None:
        found = self.entries.pop(sid, None)
        if found is not None:
            self.size -= self.cost(sid, found[0])

    def expire(self, now: float) -> None:
        """Drop the expired entries at the front (all of them while the clock goes forward)."""
        entries = self.entries
        while entries:
            sid, (entry, deadline) = next(iter(entries.items()))
            if deadline > now:
                break
            del entries[sid]
            self.size -= self.cost(sid, entry)
