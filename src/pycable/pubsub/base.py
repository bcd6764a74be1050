"""The ``Subscriber`` role (spec §5): carries registered publications to every node.

Contract: :meth:`Subscriber.broadcast` delivers the message to the :class:`PubSubHandler`
of every node that subscribed its stream (this node included), in the order broadcast
from one node; :meth:`Subscriber.broadcast_command` delivers a remote command to every
node. Delivery is at-most-once per node (a node that is down misses it, its clients
catch up from history). A backend that loses its connection resubscribes by itself.
Neither method raises: this node's delivery never depends on the backend, and a message
the others missed is counted and logged (raising would make the sender retry, storing
the message twice at a new offset).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from typing import Protocol

from pycable.protocol.broadcast import RemoteCommand, StreamMessage, encode_pubsub

__all__ = ["Subscriber", "PubSubHandler", "LocalSubscriber", "RelayingSubscriber"]

log = logging.getLogger("pycable.pubsub")

#: Seconds between two warnings about messages not sent to other nodes.
DROP_LOG_INTERVAL = 10.0


class PubSubHandler(Protocol):
    def handle_pubsub(self, msg: StreamMessage) -> None: ...

    def handle_remote_command(self, cmd: RemoteCommand) -> None: ...


class Subscriber(Protocol):
    """**Protocol:** cluster fan-out of registered messages."""

    is_multi_node: bool

    async def start(self, handler: PubSubHandler) -> None: ...

    async def shutdown(self) -> None: ...

    def describe(self) -> str: ...

    def health(self) -> str:
        """``""`` while ready; else why not, one line (``/health`` answers 503 with it)."""
        ...

    async def subscribe(self, stream: str) -> None: ...

    async def unsubscribe(self, stream: str) -> None: ...

    async def broadcast(self, msg: StreamMessage) -> None: ...

    async def broadcast_command(self, cmd: RemoteCommand) -> None: ...


class LocalSubscriber:
    """``--pubsub=none``: deliver on this node only."""

    is_multi_node = False

    def __init__(self) -> None:
        self.handler: PubSubHandler | None = None

    async def start(self, handler: PubSubHandler) -> None:
        self.handler = handler

    async def shutdown(self) -> None:
        pass

    def describe(self) -> str:
        return "Using local pub/sub (single node)"

    def health(self) -> str:
        return ""

    async def subscribe(self, stream: str) -> None:
        pass

    async def unsubscribe(self, stream: str) -> None:
        pass

    async def broadcast(self, msg: StreamMessage) -> None:
        assert self.handler is not None, "start() first"
        self.handler.handle_pubsub(msg)

    async def broadcast_command(self, cmd: RemoteCommand) -> None:
        assert self.handler is not None, "start() first"
        self.handler.handle_remote_command(cmd)


class RelayingSubscriber(ABC):
    """What the cluster pub/subs (Redis, NATS) share: a message is handed to this node's
    handler at once, then published for the other nodes (a backend must not deliver its own
    messages back). A publish that fails is counted and logged, at most every
    :data:`DROP_LOG_INTERVAL` seconds, never raised: the other nodes' clients catch up from
    history, and the message was delivered here."""

    is_multi_node = True
    #: The command channel / subject, set by the backend.
    channel: str

    def __init__(self, name: str) -> None:
        self.handler: PubSubHandler | None = None
        self.stats: dict[str, int] = {"published": 0, "dropped": 0}
        self._name = name
        self._dropped = 0
        self._dropped_logged = 0.0

    @abstractmethod
    def _target(self, stream: str) -> str:
        """The channel or subject of *stream*."""

    @abstractmethod
    async def _send(self, target: str, payload: bytes) -> None:
        """Publish; returns normally or calls :meth:`_drop`."""

    def _drop(self, reason: str) -> None:
        self.stats["dropped"] += 1
        self._dropped += 1
        now = time.monotonic()
        if now - self._dropped_logged > DROP_LOG_INTERVAL:
            log.warning(
                "%s: %d message(s) not sent to other nodes (%s); they catch up from history",
                self._name, self._dropped, reason,
            )
            self._dropped, self._dropped_logged = 0, now

    async def broadcast(self, msg: StreamMessage) -> None:
        assert self.handler is not None, "start() first"
        self.handler.handle_pubsub(msg)
        await self._send(self._target(msg.stream), encode_pubsub(msg))

    async def broadcast_command(self, cmd: RemoteCommand) -> None:
        assert self.handler is not None, "start() first"
        self.handler.handle_remote_command(cmd)
        await self._send(self.channel, encode_pubsub(cmd))


if __debug__:
    from typing import TYPE_CHECKING

    if TYPE_CHECKING:
        _: type[Subscriber] = LocalSubscriber


def local_from_config(config: object) -> LocalSubscriber:
    return LocalSubscriber()
