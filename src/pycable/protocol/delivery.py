"""Exactly-once, in-order delivery per subscription and stream (preface decision 6).

The stock JS client does not deduplicate (js-client.md §6), so the server must never send
an offset twice to a subscription and never out of order. Each (session, identifier,
stream) has a :class:`StreamCursor`:

* a live message is sent only if its offset is past the cursor (same epoch); a message
  from another epoch resets the cursor (the broker's offsets restarted);
* while a history replay is pending the cursor *holds* live messages; the replay is
  filtered against the cursor, then the held messages are released, filtered again.

Example: the client last saw offset 4. After a restore the cursor holds; live 7 and 8
arrive and are held. The client's history request replays 5, 6, 7 (the broker had 7
already): 5, 6, 7 are sent, the cursor is at 7; releasing sends 8 only. Nothing twice,
nothing out of order.

Messages without an offset (transient, or no broker) are never dropped, but they are held
with the rest so that order is kept.

A cursor also remembers ``start``, the first offset it delivered in its epoch. A later
history request reaching back before ``start`` asks for messages that can no longer be
sent in order (the client already has later ones): :meth:`StreamCursor.missed` says so and
the request is rejected instead of being confirmed with a silent gap.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

__all__ = ["StreamCursor", "Positioned", "SEND", "DROP", "HOLD", "MAX_HELD"]

SEND, DROP, HOLD = 0, 1, 2

#: At most this many live messages are held per cursor; the oldest go first (they are
#: the ones the replay most likely covers). ``overflowed`` tells; the node logs it.
MAX_HELD = 10_000


class Positioned(Protocol):
    @property
    def offset(self) -> int: ...

    @property
    def epoch(self) -> str: ...


M = TypeVar("M", bound=Positioned)


class StreamCursor(Generic[M]):
    """The last position delivered to one subscription in one stream."""

    __slots__ = ("epoch", "offset", "start", "held", "overflowed")

    def __init__(self, epoch: str = "", offset: int = 0) -> None:
        self.epoch = epoch
        self.offset = offset
        #: The first offset delivered in this epoch (0: none yet).
        self.start = 0
        #: Held live messages while a replay is pending, else ``None``.
        self.held: deque[M] | None = None
        self.overflowed = False

    @property
    def holding(self) -> bool:
        return self.held is not None

    def hold(self) -> None:
        """Hold live messages until :meth:`release` (a replay is pending)."""
        if self.held is None:
            self.held = deque(maxlen=MAX_HELD)

    def _advance(self, epoch: str, offset: int) -> bool:
        if not offset:
            return True
        if epoch == self.epoch:
            if offset <= self.offset:
                return False
        else:
            self.start = offset
        self.epoch, self.offset = epoch, offset
        return True

    def missed(self, backlog: Iterable[M]) -> bool:
        """True if *backlog* holds a message of this epoch from before :attr:`start`: the
        client never had it and it cannot be sent in order any more."""
        start = self.start
        return bool(start) and any(m.offset and m.offset < start and m.epoch == self.epoch for m in backlog)

    def admit(self, msg: M) -> int:
        """Decide for a live message: :data:`SEND` (cursor advanced), :data:`DROP` or :data:`HOLD`."""
        held = self.held
        if held is not None:
            if len(held) == MAX_HELD:
                self.overflowed = True
            held.append(msg)
            return HOLD
        return SEND if self._advance(msg.epoch, msg.offset) else DROP

    def replay(self, messages: Iterable[M], since: tuple[str, int] | None = None) -> list[M]:
        """Filter a history backlog (in offset order); returns what to send, advancing.

        Args:
            messages: the backlog, in offset order.
            since: the ``(epoch, offset)`` the client asked from: it has every offset up to
                it, so the cursor moves there first if it is behind. Without this a restored
                session's fresh cursor, answered with an empty backlog, would pass a late
                duplicate of an offset the client already has.
        """
        if since is not None:
            epoch, offset = since
            if epoch and offset:
                if epoch != self.epoch:
                    self.epoch, self.offset, self.start = epoch, offset, 0
                elif offset > self.offset:
                    self.offset = offset
        return [m for m in messages if self._advance(m.epoch, m.offset)]

    def release(self) -> list[M]:
        """Stop holding; returns the held messages still to send, in arrival order."""
        held, self.held = self.held, None
        if not held:
            return []
        return [m for m in held if self._advance(m.epoch, m.offset)]


