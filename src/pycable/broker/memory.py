"""``--broker=memory``: history and sessions in this process (single node only)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from pycable.broker._sessions import EntryLimit, SessionStore
from pycable.broker._stream import MemStream
from pycable.broker.base import DurableBroker, HistoryPolicy
from pycable.exceptions import BrokerFullError, HistoryError
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

    ``max_bytes`` caps the message data kept by all streams together (characters of
    ``data``; 0: no cap): a registration over it raises
    :class:`~pycable.exceptions.BrokerFullError` and stores nothing. Streams with Durable
    Streams metadata are never dropped by the sweep; their messages follow the policy.

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
        max_bytes: int = 0,
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
        self.max_bytes = max_bytes
        #: Characters of message data kept by every stream (what ``max_bytes`` caps).
        self.size = 0
        self.ds: dict[str, bytes] = {}

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
            + (f" capped at {self.max_bytes} bytes of history" if self.max_bytes else "")
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
        if self.max_bytes and self.size + len(msg.data) > self.max_bytes:
            raise BrokerFullError(
                f"the memory broker is full ({self.max_bytes} bytes of history kept, --history_max_bytes)"
            )
        mem = self._stream(msg.stream)
        before = mem.size
        stored = mem.add(msg, self._epoch, self.clock())
        self.size += mem.size - before
        return stored

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
        now = self.clock()
        self._expire(mem, now)
        return mem.after(offset, now)

    async def history_since(self, stream: str, since: float) -> list[StreamMessage]:
        mem = self.streams.get(stream)
        if mem is None:
            return []
        now = self.clock()
        self._expire(mem, now)
        return mem.since(since, now)

    def _expire(self, mem: MemStream, now: float) -> None:
        before = mem.size
        mem.expire(now)
        self.size += mem.size - before

    # -- Durable Streams ---------------------------------------------------------------------

    async def ds_create(self, stream: str, meta: bytes) -> bool:
        if stream in self.ds:
            return False
        self.ds[stream] = meta
        self._stream(stream)
        return True

    async def ds_fork(self, source: str, target: str, upto: int, meta: bytes) -> bool:
        if target in self.ds:
            return False
        src = self.streams.get(source)
        limit, ttl = self.policy.for_stream(target)
        mem = MemStream(limit, ttl)
        if src is not None:
            for m in src.entries:
                if m.offset <= upto:
                    mem.entries.append(replace(m, stream=target))
                    mem.size += len(m.data)
        mem.offset = upto
        old = self.streams.get(target)
        if old is not None:
            self.size -= old.size
        self.streams[target] = mem
        self.size += mem.size
        self.ds[target] = meta
        return True

    async def ds_load(self, stream: str) -> bytes | None:
        return self.ds.get(stream)

    async def ds_store(self, stream: str, meta: bytes) -> None:
        self.ds[stream] = meta

    async def ds_delete(self, stream: str) -> None:
        self.ds.pop(stream, None)
        mem = self.streams.pop(stream, None)
        if mem is not None:
            self.size -= mem.size
            self.offset_floor = max(self.offset_floor, mem.offset)

    async def tail(self, stream: str) -> int | None:
        mem = self.streams.get(stream)
        return None if mem is None else mem.offset

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
            self._expire(mem, now)
            if mem.idle(now) and name not in self.refs and name not in self.ds:
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
    _: type[DurableBroker] = MemoryBroker


def from_config(config: Config) -> MemoryBroker:
    policy = HistoryPolicy(config.history_limit, config.history_ttl, config.stream_rules())
    return MemoryBroker(
        policy,
        config.sessions_ttl,
        max_bytes=config.history_max_bytes,
        session_max_size=config.sessions_max_entry_size,
        sessions_cache_size=config.sessions_max_cache_size,
    )
