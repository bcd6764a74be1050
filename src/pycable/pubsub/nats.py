"""``--pubsub=nats``: registered messages travel between nodes over NATS (spec §5).

* A stream's messages are published on its subject, :func:`~pycable._nats.stream_subject`:
  the stream name itself, as in AnyCable, when that is a plain NATS subject, else a
  hashed ``_pcs.<hash>`` subject (names with spaces, wildcards, unicode…). The real name
  is always in the message, in the §5 format (``{"stream","data","meta","offset","epoch"}``;
  ``Offset``/``Epoch`` from v1.5 nodes are accepted).
* Remote commands go to ``--nats_pubsub_channel`` (``__anycable_internal__``), to which
  every node subscribes at start.
* A node subscribes to a stream's subject only while it has local subscribers.
* This node's own messages are delivered to it directly, not through NATS (the
  connection does not echo), so local delivery works, in order, even while NATS is down.
* NATS down: publications are buffered by the client while it reconnects (2 MiB), then
  dropped with a warning; remote nodes' clients catch up from history. Subscriptions are
  restored by the client after a reconnection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from pycable._nats import NatsConnection, servers_from_config, stream_subject
from pycable.exceptions import BroadcastError
from pycable.protocol.broadcast import RemoteCommand, parse_pubsub
from pycable.pubsub.base import PubSubHandler, RelayingSubscriber, Subscriber

if TYPE_CHECKING:
    from pycable.config import Config

__all__ = ["NatsSubscriber", "from_config"]

log = logging.getLogger("pycable.pubsub")


class _Pending:
    """A subscription being made."""

    __slots__ = ()


class NatsSubscriber(RelayingSubscriber):
    """Cluster fan-out over NATS core pub/sub.

    Args:
        servers: NATS URLs.
        prefix: prepended to every subject (isolation; empty for AnyCable compatibility).
        channel: the remote-command subject (before the prefix).
        connect_wait: seconds :meth:`start` waits for a first connection before going on
            (the connection keeps trying in the background).
    """

    def __init__(
        self,
        servers: list[str],
        prefix: str = "",
        channel: str = "__anycable_internal__",
        connect_wait: float = 5.0,
    ) -> None:
        super().__init__("NATS pub/sub")
        self.servers = servers
        self.prefix = prefix
        self.channel = prefix + channel
        self.connect_wait = connect_wait
        self.conn = NatsConnection(servers, "pycable-pubsub", log, no_echo=True)
        self.conn.on_connect.append(self._subscribe_all)
        #: stream → its subscription; None while waiting for the first connection; a
        #: :class:`_Pending` while being subscribed (so that a concurrent unsubscribe and
        #: subscribe of the same stream cannot leave two subscriptions behind).
        self._streams: dict[str, Subscription | _Pending | None] = {}
        self._internal: Subscription | None = None
        #: The first connection's subscriptions are made: subscribe() may subscribe directly.
        self._live = False
        self._subjects: dict[str, str] = {}
        self.stats.update(received=0, malformed=0)

    async def start(self, handler: PubSubHandler) -> None:
        self.handler = handler
        if await self.conn.start(self.connect_wait):
            await self.conn.wait_setup(self.connect_wait)  # subscribed before we say we started

    async def shutdown(self) -> None:
        await self.conn.close()

    def describe(self) -> str:
        return f"Starting NATS pub/sub: {self.conn.url}"

    def health(self) -> str:
        return self.conn.health()

    def _target(self, stream: str) -> str:
        subject = self._subjects.get(stream)
        if subject is None:
            subject = stream_subject(self.prefix, stream)
            if len(self._subjects) > 65536:
                self._subjects.clear()
            self._subjects[stream] = subject
        return subject

    async def _subscribe_all(self) -> None:
        """First connection: the internal channel and every stream asked for meanwhile.
        (After a reconnection the client resubscribes by itself.)"""
        nc = self.conn.nc
        if self._internal is None:
            self._internal = await nc.subscribe(self.channel, cb=self._on_message)
        while True:
            pending = [stream for stream, sub in self._streams.items() if sub is None]
            if not pending:
                break
            for stream in pending:
                if stream in self._streams and self._streams[stream] is None:
                    marker = self._streams[stream] = _Pending()
                    sub = await nc.subscribe(self._target(stream), cb=self._on_message)
                    if self._streams.get(stream) is marker:
                        self._streams[stream] = sub
                    else:  # unsubscribed (and maybe subscribed again) meanwhile
                        await sub.unsubscribe()
        self._live = True  # from now on subscribe() subscribes by itself (no await since the check)
        try:
            await nc.flush(timeout=2)
        except (nats.errors.Error, TimeoutError) as exc:
            log.debug("NATS pub/sub: flush after subscribing failed: %r", exc)

    async def subscribe(self, stream: str) -> None:
        if stream in self._streams:
            return
        if not self._live:
            self._streams[stream] = None  # _subscribe_all() will
            if self.conn.connected.is_set():  # its setup is running now: it is live after it
                await self.conn.wait_setup(self.connect_wait)
            return
        marker = self._streams[stream] = _Pending()
        nc = self.conn.nc
        sub = await nc.subscribe(self._target(stream), cb=self._on_message)
        try:
            # Wait until NATS has the subscription: the node reads history next, and the
            # broker's snapshot relies on live delivery covering what comes after.
            await nc.flush(timeout=2)
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("NATS pub/sub: subscription to %r not confirmed (%r): messages may be missed until it is",
                        stream[:64], exc)
        if self._streams.get(stream) is marker:
            self._streams[stream] = sub
        else:  # unsubscribed (and maybe subscribed again) while we were subscribing
            await sub.unsubscribe()

    async def unsubscribe(self, stream: str) -> None:
        sub = self._streams.pop(stream, None)
        if isinstance(sub, Subscription):
            try:
                await sub.unsubscribe()
            except nats.errors.Error as exc:
                log.debug("NATS pub/sub: unsubscribe from %r failed: %s", stream[:64], exc)

    async def _on_message(self, msg: Msg) -> None:
        handler = self.handler
        if handler is None:
            return
        try:
            publications = parse_pubsub(msg.data)
        except BroadcastError as exc:
            self.stats["malformed"] += 1
            log.warning("NATS pub/sub: dropped a malformed message on %s: %s", msg.subject, exc)
            return
        self.stats["received"] += 1
        for pub in publications:
            if isinstance(pub, RemoteCommand):
                handler.handle_remote_command(pub)
            else:
                handler.handle_pubsub(pub)

    async def _send(self, target: str, payload: bytes) -> None:
        if not self.conn.connected.is_set():
            self._drop("not connected yet")
            return
        try:
            await self.conn.nc.publish(target, payload)
            self.stats["published"] += 1
        except (nats.errors.Error, OSError) as exc:
            self._drop(repr(exc))


if TYPE_CHECKING:
    _: type[Subscriber] = NatsSubscriber


def from_config(config: Config) -> NatsSubscriber:
    channel = config.nats_pubsub_channel
    if channel == config.nats_channel and "nats" in config.broadcast_adapter:
        channel += "-int"  # keep remote commands apart from the legacy broadcaster (as AnyCable does for Redis)
    return NatsSubscriber(servers_from_config(config), config.nats_prefix, channel)
