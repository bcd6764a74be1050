"""``--pubsub=redis``: registered messages and remote commands between nodes (spec §5).

Wire format: a stream message is ``PUBLISH``\\ ed to a channel named exactly like the stream
(``--redis_prefix`` + stream; the prefix is empty by default, as in AnyCable) with the JSON
of :func:`~pycable.protocol.broadcast.encode_pubsub` (lower-case ``offset``/``epoch``;
``Offset``/``Epoch`` from AnyCable 1.5 nodes are accepted). Remote commands go to
``--redis_pubsub_channel`` (``__anycable_internal__``; ``-int`` is appended if it equals the
legacy broadcaster's ``--redis_channel`` and that broadcaster is enabled).

Each node listens on the command channel from the start, and on a stream channel only
while it has local subscribers: the node reference-counts streams and calls
:meth:`RedisSubscriber.subscribe` for the first and :meth:`RedisSubscriber.unsubscribe`
for the last one. :meth:`~RedisSubscriber.subscribe` returns once Redis confirmed the
subscription (or after a short timeout), so a history read that follows cannot miss a
message published in between.

Local delivery does not go through Redis: :meth:`RedisSubscriber.broadcast` hands the
message to this node's subscribers at once, then publishes it with an ``origin`` field (the
node's random id, first in the JSON; other nodes and AnyCable ignore it) by which the
listener drops its own echo. So this node's clients, whispers and remote commands keep
working while Redis is down.

Failures: the listening connection is re-established with exponential backoff (0.05 s
doubling to 5 s, never giving up), and every channel is subscribed again (256 per
command). Messages published while the connection was down are not received; the node's
gap filler (:mod:`pycable.node.gaps`) recovers them from the broker's history when the
next message of the stream arrives, and clients recover them on reconnect. A failed
``PUBLISH`` is counted and logged (at most every 10 s), not raised: the message was
delivered here and is in the broker's history for the other nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING

from pycable._redis import REDIS_ERRORS, Backoff, address, close, connect, stop_task
from pycable.exceptions import BroadcastError
from pycable.log import Outage
from pycable.protocol.broadcast import RemoteCommand, parse_pubsub
from pycable.pubsub.base import PubSubHandler, RelayingSubscriber, Subscriber

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.asyncio.client import PubSub

    from pycable.config import Config

__all__ = ["RedisSubscriber", "from_config"]

log = logging.getLogger("pycable.pubsub")

#: Channels per SUBSCRIBE command when resubscribing after a reconnect (as AnyCable).
RESUBSCRIBE_BATCH = 256
#: Seconds :meth:`RedisSubscriber.subscribe` waits for Redis to confirm.
CONFIRM_TIMEOUT = 2.0
#: A silent listening connection is PINGed after this many seconds, and given up (and
#: re-established) after three times as long without any reply: a dead peer is noticed
#: even when TCP is not told.
PING_INTERVAL = 5.0


class RedisSubscriber(RelayingSubscriber):
    """Cluster pub/sub over Redis ``PUBLISH``/``SUBSCRIBE``.

    Args:
        publisher: client for ``PUBLISH`` (a pool; commands time out).
        listener: client whose one connection listens (no read timeout; health-checked).
        channel: the remote-command channel, already prefixed.
        prefix: prepended to stream names to form their channels.
        where: ``host:port`` for log lines.
    """

    def __init__(
        self,
        publisher: aioredis.Redis,
        listener: aioredis.Redis,
        channel: str = "__anycable_internal__",
        prefix: str = "",
        where: str = "localhost:6379",
    ) -> None:
        super().__init__(f"Redis pub/sub at {where}")
        self.publisher = publisher
        self.listener = listener
        self.channel = channel
        self.prefix = prefix
        self.where = where
        #: Streams this node wants (the node reference-counts; this is the set of >0).
        self.streams: set[str] = set()
        self._pubsub: PubSub | None = None
        self._lock = asyncio.Lock()  # SUBSCRIBE/UNSUBSCRIBE go out in call order
        self._confirm: dict[bytes, list[asyncio.Future[None]]] = {}
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.outage = Outage(log, f"Redis pub/sub at {where}")
        #: This node's id; published payloads start with it, so the listener skips its echo.
        self.origin = secrets.token_hex(8)
        self._own = b'{"origin":"' + self.origin.encode() + b'",'

    def describe(self) -> str:
        return f"Starting Redis pub/sub: {self.where}"

    def health(self) -> str:
        return self.outage.health()  # down from a failed attempt until one succeeds

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, handler: PubSubHandler) -> None:
        """Start listening in the background; a Redis that is down is retried, not fatal."""
        self.handler = handler
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
            # Give a reachable Redis a moment, so the first clients are covered at once.
            with contextlib.suppress(TimeoutError):  # a failure is logged by the outage
                await asyncio.wait_for(asyncio.shield(self._connected.wait()), CONFIRM_TIMEOUT)

    async def shutdown(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        await stop_task(task)
        await self._close_pubsub()
        await close(self.listener)
        await close(self.publisher)

    async def _close_pubsub(self) -> None:
        ps, self._pubsub = self._pubsub, None
        self._connected.clear()
        for waiters in self._confirm.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        self._confirm.clear()
        if ps is not None:
            try:
                await ps.aclose()  # type: ignore[no-untyped-call]
            except REDIS_ERRORS:
                pass

    # -- listening -------------------------------------------------------------------------

    def _target(self, stream: str) -> str:
        return self.prefix + stream

    async def _connect(self) -> PubSub:
        ps = self.listener.pubsub()
        async with self._lock:
            channels = [self.channel, *(self._target(s) for s in self.streams)]
            for i in range(0, len(channels), RESUBSCRIBE_BATCH):
                await ps.subscribe(*channels[i : i + RESUBSCRIBE_BATCH])
            self._pubsub = ps
        return ps

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                ps = await self._connect()
                # The first reply proves the connection works (and confirms the subscription).
                if not await self._read(ps, CONFIRM_TIMEOUT):
                    raise TimeoutError("no subscription confirmation")
                self.outage.recovered(f"{len(self.streams)} streams resubscribed")
                self._connected.set()
                backoff.reset()
                seen = pinged = time.monotonic()
                while True:
                    if await self._read(ps, 1.0):
                        seen = time.monotonic()
                        continue
                    now = time.monotonic()
                    if now - seen > 3 * PING_INTERVAL:
                        raise TimeoutError(f"no reply for {now - seen:.0f}s")
                    if now - seen > PING_INTERVAL and now - pinged > PING_INTERVAL:
                        pinged = now
                        async with self._lock:
                            await ps.ping()
            except REDIS_ERRORS as exc:
                self.outage.failed(f"{type(exc).__name__}: {exc}")
            except Exception:  # a bug must not stop the listener: start over
                log.exception("Redis pub/sub listener failed; reconnecting")
            await self._close_pubsub()
            await backoff.wait()

    async def _read(self, ps: PubSub, timeout: float) -> bool:
        """Handle one message or reply; False if none came within *timeout* seconds."""
        msg = await ps.get_message(timeout=timeout)
        if msg is None:
            return False
        kind = msg["type"]
        if kind == "message":
            self._dispatch(msg["channel"], msg["data"])
        elif kind == "subscribe":
            for fut in self._confirm.pop(msg["channel"], ()):
                if not fut.done():
                    fut.set_result(None)
        return True

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        handler = self.handler
        if handler is None or data.startswith(self._own):  # own echo: delivered already
            return
        try:
            publications = parse_pubsub(data)
        except BroadcastError as exc:
            log.warning("dropped a malformed pub/sub message on %r: %s", channel[:64], exc)
            return
        for pub in publications:
            try:
                if isinstance(pub, RemoteCommand):
                    handler.handle_remote_command(pub)
                else:
                    handler.handle_pubsub(pub)
            except Exception:  # the node's bug must not stop the listener
                log.exception("pub/sub message on %r could not be delivered", channel[:64])

    # -- interest --------------------------------------------------------------------------

    async def subscribe(self, stream: str) -> None:
        """Listen on *stream*'s channel; returns when Redis confirmed it (at most 2 s).

        Never raises: while Redis is down the stream is remembered and subscribed on
        reconnect.
        """
        self.streams.add(stream)
        channel = self._target(stream).encode()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            async with self._lock:
                ps = self._pubsub
                if ps is None:  # down: _connect() subscribes it
                    return
                self._confirm.setdefault(channel, []).append(fut)
                await ps.subscribe(channel)
            await asyncio.wait_for(fut, CONFIRM_TIMEOUT)
        except REDIS_ERRORS as exc:  # includes the confirmation timeout
            log.warning("subscribing to %r not confirmed (%s); it is resubscribed on reconnect", stream[:64], exc)

    async def unsubscribe(self, stream: str) -> None:
        self.streams.discard(stream)
        try:
            async with self._lock:
                ps = self._pubsub
                if ps is None:
                    return
                await ps.unsubscribe(self._target(stream))
        except REDIS_ERRORS as exc:
            log.debug("unsubscribe from %r failed: %s", stream[:64], exc)

    # -- publishing ------------------------------------------------------------------------

    async def _send(self, target: str, payload: bytes) -> None:
        try:
            await self.publisher.publish(target, self._own + payload[1:])  # payload is a JSON object
            self.stats["published"] += 1
        except REDIS_ERRORS as exc:
            self._drop(f"{type(exc).__name__}: {exc}")


if TYPE_CHECKING:
    _: type[Subscriber] = RedisSubscriber


def command_channel(config: Config) -> str:
    """``--redis_pubsub_channel``, made distinct from the legacy broadcaster's channel (§5)."""
    channel = config.redis_pubsub_channel
    if channel == config.redis_channel and "redis" in config.broadcast_adapter:
        channel += "-int"
    return config.redis_prefix + channel


def from_config(config: Config) -> RedisSubscriber:
    publisher = connect(config, name="pycable:pubsub", socket_timeout=2.0)
    listener = connect(config, name="pycable:pubsub-listen", socket_timeout=None, retries=0)
    return RedisSubscriber(publisher, listener, command_channel(config), config.redis_prefix, address(config))
