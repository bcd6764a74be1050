"""Legacy ``nats`` broadcaster (spec §4.5): a fan-out subscription on ``--nats_channel``.

The application publishes ``nats pub __anycable__ '<publication JSON>'`` (the §4.1 format:
one publication, a batch, or a remote command); every node receives every message and
delivers it to its own clients, bypassing the broker: no offsets, no history (AnyCable:
"when legacy adapters are used, enabling a broker has no effect").

A body that does not parse is logged and dropped. The subscription survives NATS
restarts (the client resubscribes after reconnecting).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nats.aio.msg import Msg

from pycable._nats import NatsConnection, servers_from_config
from pycable.broadcast.base import Broadcaster, BroadcastHandler
from pycable.exceptions import BroadcastError
from pycable.protocol.broadcast import parse_broadcast

if TYPE_CHECKING:
    from pycable.config import Config

__all__ = ["NatsBroadcaster", "from_config"]

log = logging.getLogger("pycable.broadcast")


class NatsBroadcaster:
    """Fan-out broadcasts from a NATS subject.

    Args:
        servers: NATS URLs.
        channel: the subject (``--nats_channel``, with ``--nats_prefix`` prepended).
        connect_wait: seconds :meth:`start` waits for NATS before going on in the background.
    """

    is_fanout = True

    def __init__(self, servers: list[str], channel: str = "__anycable__", connect_wait: float = 5.0) -> None:
        self.servers = servers
        self.channel = channel
        self.connect_wait = connect_wait
        self.conn = NatsConnection(servers, "pycable-broadcast", log)
        self.conn.on_connect.append(self._subscribe)
        self.handler: BroadcastHandler | None = None
        self.stats = {"received": 0, "malformed": 0}

    async def start(self, handler: BroadcastHandler) -> None:
        self.handler = handler
        if await self.conn.start(self.connect_wait):
            await self.conn.wait_setup(self.connect_wait)  # subscribed before we say we started

    async def shutdown(self) -> None:
        await self.conn.close()
        self.handler = None

    def health(self) -> str:
        return self.conn.health()

    def describe(self) -> str:
        return f"Starting NATS broadcaster: {self.conn.url} (channel: {self.channel})"

    async def _subscribe(self) -> None:
        await self.conn.nc.subscribe(self.channel, cb=self._on_message)

    async def _on_message(self, msg: Msg) -> None:
        handler = self.handler
        if handler is None:
            return
        try:
            publications = parse_broadcast(msg.data)
        except BroadcastError as exc:
            self.stats["malformed"] += 1
            log.warning("NATS broadcaster: dropped a malformed broadcast: %s", exc)
            return
        self.stats["received"] += 1
        handler.handle_fanout(publications)


if TYPE_CHECKING:
    _: type[Broadcaster] = NatsBroadcaster


def from_config(config: Config) -> NatsBroadcaster:
    return NatsBroadcaster(servers_from_config(config), config.nats_prefix + config.nats_channel)
