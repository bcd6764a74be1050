"""The ``Presence`` role: who is present in each stream (AnyCable 1.6 presence).

It sits beside the broker, as centrifuge's PresenceManager sits beside its Broker, and the
backend follows ``--broker``: memory (one node), Redis and NATS (shared by every node).
``tests/contract/test_presence.py`` runs the same suite against each implementation.

Contract:

* **Records.** A stream's presence set maps a presence *id* (chosen by the client or the
  application: usually a user id) to its ``info``. Several sessions may join with the
  same id; they count as one record (``total`` counts ids), which goes only when its last
  session goes. A later join with the same id replaces the record's ``info``.
* **Join.** :meth:`Presence.join` adds ``(stream, sid)`` under ``member.id`` and returns a
  ``join`` :class:`~pycable.protocol.presence.PresenceEvent` when the id is new in the
  stream, else ``None``. Joining again with the same id refreshes; with another id it
  raises :class:`~pycable.exceptions.PresenceError` ("presence ID mismatch").
* **Leave.** :meth:`Presence.leave` removes ``(stream, sid)`` and returns a ``leave``
  event when that was the id's last session, else ``None``. Leaving what was never joined
  is a no-op (``None``).
* **Expiry.** Each session has a deadline, ``ttl`` seconds after its last join or
  :meth:`Presence.touch`. :meth:`Presence.expire` removes every membership of the sessions
  past their deadline and returns the ``leave`` events that caused. In a cluster every
  node calls it; each event is returned to exactly one caller, so it is broadcast once.
  Example, ttl 15: a client joins at t=0 and its node dies; at t≈15 the next ``expire()``
  of any node returns its ``leave``.
* **Info.** :meth:`Presence.info` returns the stream's records (``[]`` for an unknown
  stream). Shared backends show other nodes' joins: Redis at once, NATS as soon as the
  change reached this node's copy (milliseconds).
* **Bounds.** At most ``max_per_stream`` ids per stream and ``max_per_session`` streams
  per session (0: no cap); past a cap :meth:`Presence.join` raises
  :class:`~pycable.exceptions.PresenceError` and changes nothing. With NATS the per-stream
  cap is checked against this node's copy, so concurrent joins on several nodes may pass
  it by a few.
* **Failures.** A backend that cannot be reached raises
  :class:`~pycable.exceptions.BrokerError`; callers reply with an error and carry on.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from pycable.exceptions import PresenceError
from pycable.protocol.presence import Member, PresenceEvent

__all__ = ["Presence", "PresenceLimits", "NullPresence", "check_caps"]


@dataclass(frozen=True, slots=True)
class PresenceLimits:
    """Presence settings shared by every backend.

    Attributes:
        ttl: seconds a session's memberships outlive its last join or touch
            (``--presence_ttl``).
        max_per_stream: most ids in one stream's set (``--presence_max_per_stream``; 0: no cap).
        max_per_session: most streams one session may be present in
            (``--presence_max_per_session``; 0: no cap).
        max_info_size: largest encoded ``info`` of a member, in bytes
            (``--presence_max_info_size``); checked by the node before a join.
    """

    ttl: float = 15.0
    max_per_stream: int = 10_000
    max_per_session: int = 100
    max_info_size: int = 4096


def check_caps(limits: PresenceLimits, stream_ids: int, new_id: bool, session_streams: int, new_stream: bool) -> None:
    """Raise :class:`PresenceError` if a join would pass a cap (shared by the backends)."""
    if new_stream and limits.max_per_session and session_streams >= limits.max_per_session:
        raise PresenceError(f"presence limit reached: at most {limits.max_per_session} streams per session")
    if new_id and limits.max_per_stream and stream_ids >= limits.max_per_stream:
        raise PresenceError(f"presence limit reached: at most {limits.max_per_stream} members per stream")


class Presence(Protocol):
    """**Protocol:** presence sets per stream. See the module docstring for the contract."""

    #: False for :class:`NullPresence` (no broker): every join is refused.
    enabled: bool
    #: True when every node sees the same sets (Redis, NATS).
    is_distributed: bool
    limits: PresenceLimits

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def describe(self) -> str:
        """The startup log line."""
        ...

    async def join(self, stream: str, sid: str, member: Member) -> PresenceEvent | None:
        """Add *sid* to *stream* as *member*; the ``join`` event if the id is new."""
        ...

    async def leave(self, stream: str, sid: str) -> PresenceEvent | None:
        """Remove *sid* from *stream*; the ``leave`` event if it was the id's last session."""
        ...

    async def info(self, stream: str) -> list[Member]:
        """The stream's records."""
        ...

    async def touch(self, sids: Collection[str]) -> None:
        """Move the deadlines of these (still connected) sessions to now + ttl."""
        ...

    async def expire(self) -> list[PresenceEvent]:
        """Drop the memberships of expired sessions; the resulting ``leave`` events."""
        ...


class NullPresence:
    """No broker (``--broker=none``): no presence, as in AnyCable; joins are refused."""

    enabled = False
    is_distributed = False

    def __init__(self, limits: PresenceLimits | None = None) -> None:
        self.limits = limits or PresenceLimits()

    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    def describe(self) -> str:
        return "Presence is disabled (no broker)"

    async def join(self, stream: str, sid: str, member: Member) -> PresenceEvent | None:
        raise PresenceError("presence is not available: the server runs without a broker")

    async def leave(self, stream: str, sid: str) -> PresenceEvent | None:
        return None

    async def info(self, stream: str) -> list[Member]:
        raise PresenceError("presence is not available: the server runs without a broker")

    async def touch(self, sids: Collection[str]) -> None:
        pass

    async def expire(self) -> list[PresenceEvent]:
        return []


if __debug__:
    from typing import TYPE_CHECKING

    if TYPE_CHECKING:
        _: type[Presence] = NullPresence


def null_from_config(config: object) -> NullPresence:
    return NullPresence()
