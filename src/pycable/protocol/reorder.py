"""Per-stream offset order for messages arriving from pub/sub (preface decision 6).

Why: with a shared broker, two nodes may register offsets 4 and 5 of one stream and
publish them concurrently; a third node may receive 5 before 4. The subscribers'
:class:`~pycable.protocol.delivery.StreamCursor` never goes backwards, so 4 would be
dropped: a loss. Messages can also be missed outright (a pub/sub reconnect, a node that
died between registering and publishing).

:class:`Reorderer` sits between pub/sub and the hub of one node. Per stream it remembers
the last offset it passed on; a message with the next offset passes at once, a message
further ahead is *held*, and the stream is reported as waiting. The I/O layer then gives
the missing offsets a short window to arrive (they usually do, within a millisecond) and
otherwise fills the gap from the broker's history (:meth:`Reorderer.fill`) or gives up on
it (:meth:`Reorderer.give_up`, the held messages pass with the gap).

Example: last passed 3; 5 arrives → held, waiting; 4 arrives → 4 and 5 pass. Or: the window
ends first → history after 3 is 4, 5, 6 → 4, 5, 6 pass (5 was held; 6 had not arrived yet
and will be passed on, then dropped by the cursors, when it does).

The first message of a stream (after the node started listening, or in a new epoch) has
no predecessor to compare with: unless its offset is 1 it is held for the window too,
then :meth:`Reorderer.settle` passes what was held in order and anchors the stream just
below the lowest offset seen (so a predecessor published concurrently by another node is
not dropped by the cursors). A predecessor arriving after that passes and is dropped by
the cursors of subscribers that already got a later offset.

Messages without an offset (transient, or no broker) pass at once. A message from another
epoch resets the stream (the held ones pass first). A message at or below the last passed
offset is dropped (counted in ``stale``): every subscriber then listening got it or a later
one already, and one that subscribed since (a fresh cursor, after a restore without
positions) must not get it: the offsets passed after it would be a silent gap before it.
(Found by the property tests in ``tests/protocol/test_properties.py``.)

Sans-I/O: no clock, no timers, no awaits.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pycable.protocol.delivery import Positioned

__all__ = ["Reorderer", "MAX_HELD"]

#: A stream holding this many messages is due for a fill at once.
MAX_HELD = 1000

M = TypeVar("M", bound=Positioned)


class _Stream(Generic[M]):
    __slots__ = ("epoch", "last", "held", "filling", "anchored")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.last = 0
        self.held: dict[int, M] = {}
        self.filling = False
        #: False until the first window passed (or offset 1 arrived): ``last`` is a guess.
        self.anchored = False


class Reorderer(Generic[M]):
    """Passes messages of each stream on in offset order; see the module docstring."""

    __slots__ = ("streams", "stale")

    def __init__(self) -> None:
        self.streams: dict[str, _Stream[M]] = {}
        #: Messages dropped because their offset had been passed on already.
        self.stale = 0

    def push(self, stream: str, msg: M) -> list[M]:
        """A message from pub/sub: returns what may be passed on now, in order."""
        offset, epoch = msg.offset, msg.epoch
        if not offset or not epoch:
            return [msg]
        st = self.streams.get(stream)
        out: list[M] = []
        if st is None or epoch != st.epoch:
            if st is not None:
                out = [st.held[k] for k in sorted(st.held)]
            st = self.streams[stream] = _Stream(epoch)
        if offset <= st.last:
            self.stale += 1
            return out
        if offset == st.last + 1:
            st.last = offset
            st.anchored = True
            out.append(msg)
            out.extend(self._drain(st))
            return out
        st.held[offset] = msg
        return out

    @staticmethod
    def _drain(st: _Stream[M]) -> list[M]:
        out = []
        held = st.held
        while held:
            nxt = held.pop(st.last + 1, None)
            if nxt is None:
                break
            out.append(nxt)
            st.last += 1
        return out

    def waiting(self, stream: str) -> bool:
        """Messages are held for *stream* (a gap is open)."""
        st = self.streams.get(stream)
        return st is not None and bool(st.held)

    def overflowing(self, stream: str) -> bool:
        st = self.streams.get(stream)
        return st is not None and len(st.held) >= MAX_HELD

    def settle(self, stream: str) -> list[M]:
        """The window passed for a stream not anchored yet: anchor it below the lowest offset
        held and return what passes now (call before :meth:`start_fill`)."""
        st = self.streams.get(stream)
        if st is None or st.anchored or not st.held:
            return []
        st.anchored = True
        st.last = min(st.held) - 1
        return self._drain(st)

    def start_fill(self, stream: str) -> tuple[str, int] | None:
        """The window passed: ``(epoch, last)`` to read history after, or ``None`` if no
        gap is open (any more), the stream is not anchored, or a fill is already running."""
        st = self.streams.get(stream)
        if st is None or not st.held or st.filling or not st.anchored:
            return None
        st.filling = True
        return st.epoch, st.last

    def fill(self, stream: str, epoch: str, backlog: list[M]) -> list[M]:
        """History after the ``last`` of :meth:`start_fill` arrived: returns what passes.

        The backlog is in offset order and contiguous (the broker guarantees it).
        Messages in it at or below the stream's current last offset were passed meanwhile.
        """
        st = self.streams.get(stream)
        if st is None or st.epoch != epoch:
            return []
        st.filling = False
        out = []
        for msg in backlog:
            if msg.epoch == epoch and msg.offset == st.last + 1:
                st.held.pop(msg.offset, None)
                st.last = msg.offset
                out.append(msg)
        out.extend(self._drain(st))
        # Still held (the history ended before them: registered after the read)? Anything
        # held below the next gap is passed on when its predecessor arrives.
        return out

    def give_up(self, stream: str) -> list[M]:
        """History could not fill the gap: pass the held messages on, in order, with the gap."""
        st = self.streams.get(stream)
        if st is None:
            return []
        st.filling = False
        st.anchored = True
        out = [st.held[k] for k in sorted(st.held)]
        st.held.clear()
        if out:
            st.last = out[-1].offset
        return out

    def forget(self, stream: str) -> list[M]:
        """The node stopped listening to *stream*: drop its state (held messages are returned)."""
        st = self.streams.pop(stream, None)
        if st is None:
            return []
        return [st.held[k] for k in sorted(st.held)]
