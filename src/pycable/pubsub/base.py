"""The ``Subscriber`` role (spec §5): carries registered publications to every node.

Contract: :meth:`Subscriber.broadcast` delivers the message to the :class:`PubSubHandler`
of every node that subscribed its stream (this node included), in the order broadcast
from one node; :meth:`Subscriber.broadcast_command` delivers a remote command to every
node. Delivery is at-most-once per node (a node that is down misses it, its clients
catch up from history). A backend that loses its connection resubscribes by itself.
"""

from __future__ import annotations

from typing import Protocol

from pycable.protocol.broadcast import RemoteCommand, StreamMessage

__all__ = ["Subscriber", "PubSubHandler", "LocalSubscriber"]


class PubSubHandler(Protocol):
    def handle_pubsub(self, msg: StreamMessage) -> None: ...

    def handle_remote_command(self, cmd: RemoteCommand) -> None: ...


class Subscriber(Protocol):
    """**Protocol:** cluster fan-out of registered messages."""

    is_multi_node: bool

    async def start(self, handler: PubSubHandler) -> None: ...

    async def shutdown(self) -> None: ...

    def describe(self) -> str: ...

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


if __debug__:
    from typing import TYPE_CHECKING

    if TYPE_CHECKING:
        _: type[Subscriber] = LocalSubscriber


def local_from_config(config: object) -> LocalSubscriber:
    return LocalSubscriber()
