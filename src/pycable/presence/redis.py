"""``--broker=redis``: presence sets in Redis, shared by every node.

Key layout, under ``--redis_prefix`` + ``$ac:p:`` (see ``presence/lua/presence.lua``):
``st:<stream>:m`` (hash id → info), ``st:<stream>:r`` (hash id → sessions),
``st:<stream>:s`` (hash sid → id), ``se:<sid>`` (set of streams), ``dl`` (sorted set
sid → deadline). Join, leave, touch and expiry are each one Lua script, so a set never
changes halfway and each join/leave event comes out of exactly one call. ``info`` is a
script too: it returns the records as one JSON text, which parses ten times faster than
the ``HGETALL`` reply of a thousand members in redis-py's pure-Python parser.

Calls in flight are capped (:data:`MAX_IN_FLIGHT`): a burst of joins queues instead of
exhausting the client's connection pool. Deadlines use the
Redis server's clock, so nodes with skewed clocks agree.

A cluster that went down entirely leaves its records behind with their deadlines; the
first node to start again expires them (and broadcasts their ``leave`` events).

AnyCable Pro keeps presence in Redis too, in a layout it does not publish; this one is ours.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Collection, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from pycable._redis import REDIS_ERRORS, address, close, connect
from pycable.exceptions import BrokerError, PresenceError
from pycable.presence.base import Presence, PresenceLimits
from pycable.protocol.presence import JOIN, LEAVE, Member, PresenceEvent

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

    from pycable.config import Config

__all__ = ["RedisPresence", "from_config"]

_REFUSALS = {
    -1: "presence ID mismatch",
    -2: "presence limit reached: at most {session} streams per session",
    -3: "presence limit reached: at most {stream} members per stream",
}
#: Sessions expired per script call (a long pass is several calls: Redis is not blocked).
EXPIRE_BATCH = 200
TOUCH_BATCH = 500
#: Calls in flight at once: more wait their turn (the client's pool refuses a 101st
#: connection instead of waiting, which would fail joins under a burst).
MAX_IN_FLIGHT = 32


class RedisPresence:
    """Presence in Redis hashes, changed only by ``presence.lua``.

    Args:
        client: a ``redis.asyncio`` client (closed on shutdown).
        limits: ttl and caps.
        prefix: ``--redis_prefix``.
        where: ``host:port`` for log lines.
    """

    enabled = True
    is_distributed = True

    def __init__(
        self, client: aioredis.Redis, limits: PresenceLimits | None = None, prefix: str = "", where: str = ""
    ) -> None:
        self.client = client
        self.limits = limits or PresenceLimits()
        self.prefix = f"{prefix}$ac:p:"
        self.where = where or "localhost:6379"
        source = (resources.files("pycable.presence") / "lua" / "presence.lua").read_text()
        self._script: AsyncScript = client.register_script(source)
        self._ttl_ms = max(1, math.ceil(self.limits.ttl * 1000))
        self._closed = False
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            await close(self.client)

    def describe(self) -> str:
        return f"Using Redis presence at {self.where} (presence ttl: {self.limits.ttl:g}s)"

    async def _run(self, *args: Any) -> Any:
        try:
            async with self._slots:
                return await self._script(keys=[], args=[args[0], self.prefix, *args[1:]])
        except REDIS_ERRORS as exc:
            raise BrokerError(f"Redis presence at {self.where}: {type(exc).__name__}: {exc}") from exc

    async def join(self, stream: str, sid: str, member: Member) -> PresenceEvent | None:
        lim = self.limits
        code = int(
            await self._run(
                "join", stream, sid, member.id, member.info, self._ttl_ms, lim.max_per_stream, lim.max_per_session
            )
        )
        if code < 0:
            raise PresenceError(_REFUSALS[code].format(session=lim.max_per_session, stream=lim.max_per_stream))
        return PresenceEvent(JOIN, stream, member) if code == 1 else None

    async def leave(self, stream: str, sid: str) -> PresenceEvent | None:
        pid = await self._run("leave", stream, sid)
        return PresenceEvent(LEAVE, stream, Member(pid.decode())) if pid else None

    async def info(self, stream: str) -> list[Member]:
        return [Member(pid, info) for pid, info in orjson.loads(await self._run("info", stream))]

    async def touch(self, sids: Collection[str]) -> None:
        batch: Sequence[str] = list(sids)
        for i in range(0, len(batch), TOUCH_BATCH):
            await self._run("touch", self._ttl_ms, *batch[i : i + TOUCH_BATCH])

    async def expire(self) -> list[PresenceEvent]:
        events = []
        while True:
            more, *flat = await self._run("expire", EXPIRE_BATCH)
            events += [
                PresenceEvent(LEAVE, flat[i].decode(), Member(flat[i + 1].decode())) for i in range(0, len(flat), 2)
            ]
            if not more:
                return events


if TYPE_CHECKING:
    _: type[Presence] = RedisPresence


def from_config(config: Config) -> RedisPresence:
    client = connect(config, name="pycable:presence", socket_timeout=2.0)
    return RedisPresence(client, config.presence_limits(), config.redis_prefix, address(config))
