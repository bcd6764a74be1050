"""``--broker=memory``: presence sets in this process (one node)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from pycable.exceptions import PresenceError
from pycable.presence.base import Presence, PresenceLimits, check_caps
from pycable.protocol.presence import JOIN, LEAVE, Member, PresenceEvent

if TYPE_CHECKING:
    from pycable.config import Config

__all__ = ["MemoryPresence", "from_config"]


class _Record:
    __slots__ = ("member", "sids")

    def __init__(self, member: Member) -> None:
        self.member = member
        self.sids: set[str] = set()


class _Session:
    __slots__ = ("streams", "deadline")

    def __init__(self, deadline: float) -> None:
        self.streams: dict[str, str] = {}  # stream -> id
        self.deadline = deadline


class MemoryPresence:
    """Dicts of records per stream and memberships per session; ``expire`` walks the sessions.

    Args:
        limits: ttl and caps.
        clock: time source (tests pass a fake one).
    """

    enabled = True
    is_distributed = False

    def __init__(self, limits: PresenceLimits | None = None, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits or PresenceLimits()
        self.clock = clock
        self.streams: dict[str, dict[str, _Record]] = {}
        self.sessions: dict[str, _Session] = {}

    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        self.streams.clear()
        self.sessions.clear()

    def describe(self) -> str:
        return f"Using in-memory presence (presence ttl: {self.limits.ttl:g}s)"

    async def join(self, stream: str, sid: str, member: Member) -> PresenceEvent | None:
        session = self.sessions.get(sid)
        current = session.streams.get(stream) if session is not None else None
        if current is not None and current != member.id:
            raise PresenceError("presence ID mismatch")
        records = self.streams.get(stream, {})
        record = records.get(member.id)
        check_caps(self.limits, len(records), record is None, len(session.streams) if session else 0, current is None)
        if session is None:
            session = self.sessions[sid] = _Session(0.0)
        session.deadline = self.clock() + self.limits.ttl
        session.streams[stream] = member.id
        if record is None:
            record = self.streams.setdefault(stream, {})[member.id] = _Record(member)
            record.sids.add(sid)
            return PresenceEvent(JOIN, stream, member)
        record.member = member
        record.sids.add(sid)
        return None

    def _remove(self, stream: str, sid: str, pid: str) -> PresenceEvent | None:
        records = self.streams.get(stream)
        record = records.get(pid) if records is not None else None
        if records is None or record is None:
            return None
        record.sids.discard(sid)
        if record.sids:
            return None
        del records[pid]
        if not records:
            del self.streams[stream]
        return PresenceEvent(LEAVE, stream, Member(pid))

    async def leave(self, stream: str, sid: str) -> PresenceEvent | None:
        session = self.sessions.get(sid)
        if session is None or stream not in session.streams:
            return None
        pid = session.streams.pop(stream)
        if not session.streams:
            del self.sessions[sid]
        return self._remove(stream, sid, pid)

    async def info(self, stream: str) -> list[Member]:
        return [r.member for r in self.streams.get(stream, {}).values()]

    async def touch(self, sids: Collection[str]) -> None:
        deadline = self.clock() + self.limits.ttl
        for sid in sids:
            session = self.sessions.get(sid)
            if session is not None:
                session.deadline = deadline

    async def expire(self) -> list[PresenceEvent]:
        now = self.clock()
        events = []
        for sid in [sid for sid, s in self.sessions.items() if s.deadline <= now]:
            for stream, pid in self.sessions.pop(sid).streams.items():
                event = self._remove(stream, sid, pid)
                if event is not None:
                    events.append(event)
        return events


if TYPE_CHECKING:
    _: type[Presence] = MemoryPresence


def from_config(config: Config) -> MemoryPresence:
    return MemoryPresence(config.presence_limits())
