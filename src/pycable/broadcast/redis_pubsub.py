"""Legacy ``redis`` broadcaster: ``SUBSCRIBE <--redis_channel>`` (spec §4.4).

The application does ``PUBLISH __anycable__ '<publication JSON>'``. It is *fan-out*: every
node receives every publication and delivers it to its own clients, bypassing the broker,
so these messages get no offsets and no history (a broker has no effect on them; the app
warns at startup). Use ``redisx`` for reliable streams.

The channel is used as given (``--redis_prefix`` does not apply: it is the application's
contract). A lost connection is re-established with exponential backoff (0.05 s doubling
to 5 s, forever); publications sent while it was down are not received (Redis pub/sub
keeps nothing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from pycable._redis import REDIS_ERRORS, Backoff, address, close, connect, stop_task
from pycable.broadcast.base import Broadcaster, BroadcastHandler
from pycable.exceptions import BroadcastError
from pycable.log import Outage
from pycable.protocol.broadcast import parse_broadcast

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from pycable.config import Config

__all__ = ["RedisPubSubBroadcaster", "from_config"]

log = logging.getLogger("pycable.broadcast")

#: Seconds of silence before the listening connection is PINGed (and 3x before it is
#: considered dead and re-established).
PING_INTERVAL = 5.0


class RedisPubSubBroadcaster:
    """Fan-out publications from a Redis pub/sub channel (see the module docstring)."""

    is_fanout = True

    def __init__(self, client: aioredis.Redis, channel: str = "__anycable__", where: str = "localhost:6379") -> None:
        self.client = client
        self.channel = channel
        self.where = where
        self.handler: BroadcastHandler | None = None
        self.stats = {"received": 0, "malformed": 0}
        self._task: asyncio.Task[None] | None = None
        #: Set while subscribed (tests wait for it).
        self.ready = asyncio.Event()
        self.outage = Outage(log, f"Redis pub/sub broadcaster at {where}")

    def health(self) -> str:
        return self.outage.health()  # down from a failed attempt until one succeeds

    def describe(self) -> str:
        return f"Starting Redis pub/sub: {self.where} provider=redis channel={self.channel}"

    async def start(self, handler: BroadcastHandler) -> None:
        self.handler = handler
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def shutdown(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        await stop_task(task)
        await close(self.client)

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            ps = self.client.pubsub()
            try:
                await ps.subscribe(self.channel)
                seen = pinged = time.monotonic()
                while True:
                    msg = await ps.get_message(timeout=1.0)
                    now = time.monotonic()
                    if msg is not None:
                        seen = now
                        if msg["type"] == "subscribe":
                            self.outage.recovered()
                            backoff.reset()
                            self.ready.set()
                        elif msg["type"] == "message":
                            self._dispatch(msg["data"])
                        continue
                    if now - seen > 3 * PING_INTERVAL:
                        raise TimeoutError(f"no reply for {now - seen:.0f}s")
                    if now - seen > PING_INTERVAL and now - pinged > PING_INTERVAL:
                        pinged = now
                        await ps.ping()
            except REDIS_ERRORS as exc:
                self.outage.failed(f"{type(exc).__name__}: {exc}")
            except Exception:  # a bug must not stop the listener: start over
                log.exception("Redis pub/sub broadcaster failed; reconnecting")
            finally:
                self.ready.clear()
                try:
                    await ps.aclose()  # type: ignore[no-untyped-call]
                except REDIS_ERRORS:
                    pass
            await backoff.wait()

    def _dispatch(self, data: bytes) -> None:
        self.stats["received"] += 1
        try:
            publications = parse_broadcast(data)
        except BroadcastError as exc:
            self.stats["malformed"] += 1
            log.error("redis broadcaster: dropped a malformed publication: %s", exc)
            return
        if self.handler is not None:
            try:
                self.handler.handle_fanout(publications)
            except Exception:  # the node's bug must not stop the listener
                log.exception("redis broadcaster: a publication could not be delivered")


if TYPE_CHECKING:
    _: type[Broadcaster] = RedisPubSubBroadcaster


def from_config(config: Config) -> RedisPubSubBroadcaster:
    client = connect(config, name="pycable:redis-broadcast", socket_timeout=None, retries=0)
    return RedisPubSubBroadcaster(client, config.redis_channel, address(config))
