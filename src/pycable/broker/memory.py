"""``--broker=memory``: history and sessions in this process (single node only)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pycable.broker._sessions import EntryLimit, SessionStore
from pycable.broker._stream import MemStream
from pycable.broker.base import Broker, HistoryPolicy
from pycable.exceptions import HistoryError
from pycable.protocol.broadcast import StreamMessage

if TYPE_CHECKING:
    from pycable.config import Config

__all__ = ["MemoryBroker", "from_config"]


class MemoryBroker:
    """In-memory broker: a random epoch per start, per-stream :class:`MemStream` histories.

    Memory stays bounded: an expiry pass every ``sweep_interval`` seconds drops expired
    messages, expired sessions, and streams that have no local subscribers and have been
    empty for 10 TTLs (until then an up-to-date client is still confirmed, decision 2).
    A dropped stream's last offset is folded into ``offset_floor``, and a stream created
    later starts above it, so offsets never go back within the epoch (new streams may
    then start above 1: offsets may jump, they never repeat).

    Sessions live in a :class:`~pycable.broker._sessions.SessionStore`: one entry at most
    ``session_max_size`` bytes (else it is not stored), all of them at most
    ``sessions_cache_size`` bytes (the oldest go first); 0 means no bound.
    """

    supports_history = True
    is_distributed = False

    def __init__(
        self,
        policy: HistoryPolicy | None = None,
        sessions_ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
        sweep_interval: float = 1.0,
        epoch: str | None = None,
        session_max_size: int = 0,
        sessions_cache_size: int = 0,
    ) -> None:
        self.policy = policy or HistoryPolicy()
        self.sessions_ttl = sessions_ttl
        self.clock = clock
        self.sweep_interval = sweep_interval
        self._epoch = epoch or secrets.token_hex(4)
        self.streams: dict[str, MemStream] = {}
        self.refs: dict[str, int] = {}
        self.offset_floor = 0
        self.sessions = SessionStore(sessions_ttl, sessions_cache_size)
        self.session_limit = EntryLimit(session_max_size)
        self._task: asyncio.Task[None] | None = None

    @property
    def epoch(self) -> str:
        return self._epoch

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def shutdown(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def health(self) -> str:
        return ""

    def describe(self) -> str:
        rules = f", stream rules: {len(self.policy.rules)}" if self.policy.rules else ""
        return (
            f"Using in-memory broker (epoch: {self._epoch}, history limit: {self.policy.limit}, "
            f"history ttl: {self.policy.ttl:g}s, sessions ttl: {self.sessions_ttl:g}s{rules})"
        )

    # -- history -------------------------------------------------------------------------

    def _stream(self, name: str) -> MemStream:
        stream = self.streams.get(name)
        if stream is None:
            limit, ttl = self.policy.for_stream(name)
            stream = self.streams[name] = MemStream(limit, ttl, self.offset_floor)
        return stream

    async def register(self, msg: StreamMessage) -> StreamMessage:
        if msg.transient:
            return msg
        return self._stream(msg.stream).add(msg, self._epoch, self.clock())

    async def subscribe(self, stream: str) -> None:
        self.refs[stream] = self.refs.get(stream, 0) + 1

    async def unsubscribe(self, stream: str) -> None:
        n = self.refs.get(stream, 0) - 1
        if n > 0:
            self.refs[stream] = n
        else:
            self.refs.pop(stream, None)

    async def history_from(self, stream: str, epoch: str, offset: int) -> list[StreamMessage]:
        if epoch != self._epoch:
            raise HistoryError(f"unknown epoch {epoch[:32]!r} (current: {self._epoch})")
        mem = self.streams.get(stream)
        if mem is None:
            raise HistoryError(f"stream {stream[:64]!r} has no history")
        return mem.after(offset, self.clock())

    async def history_since(self, stream: str, since: float) -> list[StreamMessage]:
        mem = self.streams.get(stream)
        if mem is None:
            return []
        return mem.since(since, self.clock())

    # -- sessions ------------------------------------------------------------------------

    async def commit_session(self, sid: str, entry: bytes) -> None:
        if self.sessions_ttl <= 0:
            return
        if self.session_limit.fits(entry):
            self.sessions.put(sid, entry, self.clock())
        else:
            self.sessions.discard(sid)

    async def restore_session(self, sid: str) -> bytes | None:
        return self.sessions.get(sid, self.clock())

    async def touch_session(self, sid: str) -> None:
        self.sessions.touch(sid, self.clock())

    # -- expiry --------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Drop expired messages, idle empty streams and expired sessions."""
        for name in list(self.streams):
            mem = self.streams[name]
            mem.expire(now)
            if mem.idle(now) and name not in self.refs:
                self.offset_floor = max(self.offset_floor, mem.offset)
                del self.streams[name]
        self.sessions.expire(now)

    def counts(self) -> dict[str, int]:
        """Internal sizes, for tests and metrics."""
        return {
            "streams": len(self.streams),
            "messages": sum(len(s.entries) for s in self.streams.values()),
            "sessions": len(self.sessions),
            "sessions_bytes": self.sessions.size,
            "sessions_evicted": self.sessions.evicted,
            "sessions_refused": self.session_limit.refused,
            "refs": len(self.refs),
        }

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            self.expire(self.clock())


if TYPE_CHECKING:
    _: type[Broker] = MemoryBroker


def from_config(config: Config) -> MemoryBroker:
    policy = HistoryPolicy(config.history_limit, config.history_ttl, config.stream_rules())
    return MemoryBroker(
        policy,
        config.sessions_ttl,
        session_max_size=config.sessions_max_entry_size,
        sessions_cache_size=config.sessions_max_cache_size,
    )
