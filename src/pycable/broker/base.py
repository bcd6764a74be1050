"""The ``Broker`` role: stream history and the session cache (spec §3).

Contract, which every implementation must honour (``tests/contract/test_broker.py`` runs
the same suite against each):

* **Registration.** :meth:`Broker.register` stores a publication unless it is transient
  and returns it with ``offset``, ``epoch`` and ``timestamp`` set. Appending to the
  history and assigning the offset are one atomic step per stream: two concurrent
  registrations of one stream get distinct, consecutive offsets, and the history holds
  them in offset order.
* **Offsets** start at 1 in each stream and grow by one per stored message. They never
  restart within an epoch: a stream dropped after expiry continues above its last offset
  (it may jump; it never goes back), or the epoch changes.
* **Epoch.** A random string per history lifetime. Memory: per process start. Redis/NATS:
  shared by the cluster and kept while any history or session may live. A position is
  meaningful only together with its epoch.
* **Limits.** Each stream keeps at most ``limit`` messages for at most ``ttl`` seconds,
  from the :class:`HistoryPolicy` (per-stream overrides by pattern).
* **History by offset** (:meth:`Broker.history_from`) returns the stored messages with an
  offset greater than the given one, oldest first, or raises
  :class:`~pycable.exceptions.HistoryError` when it cannot be complete (preface decision 2):

  - the epoch differs;
  - the stream is unknown;
  - the offset is past the stream's last offset;
  - a message after the offset was evicted (``offset < low - 1``). ``offset == low - 1``
    has missed nothing and is served;
  - all messages expired and the offset is below the last one. Equal to it: an empty list.

  Example, limit 3, offsets 1..5 published: ``low`` is 3. ``history_from(e, 1)`` fails
  (2 was evicted), ``history_from(e, 2)`` → 3, 4, 5, ``history_from(e, 5)`` → ``[]``,
  ``history_from(e, 6)`` fails, ``history_from(other, 4)`` fails.
* **History by time** (:meth:`Broker.history_since`) returns the stored messages whose
  timestamp is ``>= since`` (seconds, inclusive), oldest first; an unknown stream gives
  ``[]``.
* **Sessions.** :meth:`Broker.commit_session` stores an opaque entry for ``sessions_ttl``
  seconds, :meth:`Broker.touch_session` extends it, :meth:`Broker.restore_session` returns
  it or ``None`` (unknown or expired). Restoring does not delete it. A ``sessions_ttl`` of 0
  stores nothing.
* **Interest.** :meth:`Broker.subscribe`/:meth:`Broker.unsubscribe` are reference-counted
  per node; a backend may use them to keep a local copy of the streams in use.
* Every method may raise :class:`~pycable.exceptions.BrokerError` when the backend is
  unreachable; callers degrade (reject history, skip restore), they never crash.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pycable.exceptions import HistoryError
from pycable.protocol.broadcast import StreamMessage

__all__ = ["Broker", "NullBroker", "HistoryPolicy", "StreamRule"]


@dataclass(frozen=True, slots=True)
class StreamRule:
    """A per-stream override: streams matching the glob *pattern* get *limit*/*ttl*."""

    pattern: str
    limit: int | None = None
    ttl: float | None = None


@dataclass(frozen=True)
class HistoryPolicy:
    """History limits: defaults plus per-stream overrides, first matching rule wins.

    Example: ``HistoryPolicy(100, 300, (StreamRule("chat/*", limit=1000, ttl=3600),))``
    keeps an hour of up to 1,000 messages for every ``chat/…`` stream, and the defaults
    for the others.
    """

    limit: int = 100
    ttl: float = 300.0
    rules: Sequence[StreamRule] = field(default_factory=tuple)

    def for_stream(self, stream: str) -> tuple[int, float]:
        """``(limit, ttl)`` for *stream*."""
        for rule in self.rules:
            if fnmatch.fnmatchcase(stream, rule.pattern):
                return (
                    self.limit if rule.limit is None else rule.limit,
                    self.ttl if rule.ttl is None else rule.ttl,
                )
        return self.limit, self.ttl

    @property
    def max_ttl(self) -> float:
        return max([self.ttl, *(r.ttl for r in self.rules if r.ttl is not None)])


class Broker(Protocol):
    """**Protocol:** stream history and the session cache. See the module docstring."""

    #: False for the no-op broker: messages get no offsets, history is always rejected.
    supports_history: bool
    #: True when history and sessions are shared by every node (Redis, NATS).
    is_distributed: bool

    @property
    def epoch(self) -> str: ...

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def describe(self) -> str:
        """The startup log line."""
        ...

    def health(self) -> str:
        """``""`` while ready; else why not, one line (``/health`` answers 503 with it)."""
        ...

    async def register(self, msg: StreamMessage) -> StreamMessage:
        """Store *msg* unless transient; return it with its position."""
        ...

    async def subscribe(self, stream: str) -> None: ...

    async def unsubscribe(self, stream: str) -> None: ...

    async def history_from(self, stream: str, epoch: str, offset: int) -> list[StreamMessage]: ...

    async def history_since(self, stream: str, since: float) -> list[StreamMessage]: ...

    async def commit_session(self, sid: str, entry: bytes) -> None: ...

    async def restore_session(self, sid: str) -> bytes | None: ...

    async def touch_session(self, sid: str) -> None: ...


class NullBroker:
    """``--broker=none`` (AnyCable's default): no offsets, no history, no sessions."""

    supports_history = False
    is_distributed = False
    epoch = ""

    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    def describe(self) -> str:
        return "Using no-op (legacy) broker"

    def health(self) -> str:
        return ""

    async def register(self, msg: StreamMessage) -> StreamMessage:
        return msg

    async def subscribe(self, stream: str) -> None:
        pass

    async def unsubscribe(self, stream: str) -> None:
        pass

    async def history_from(self, stream: str, epoch: str, offset: int) -> list[StreamMessage]:
        raise HistoryError("history not supported: no broker configured")

    async def history_since(self, stream: str, since: float) -> list[StreamMessage]:
        raise HistoryError("history not supported: no broker configured")

    async def commit_session(self, sid: str, entry: bytes) -> None:
        pass

    async def restore_session(self, sid: str) -> bytes | None:
        return None

    async def touch_session(self, sid: str) -> None:
        pass


if __debug__:
    from typing import TYPE_CHECKING

    if TYPE_CHECKING:
        _: type[Broker] = NullBroker


def null_from_config(config: object) -> NullBroker:
    return NullBroker()
