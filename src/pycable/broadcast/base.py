"""The ``Broadcaster`` role (spec §4): takes publications from the application.

A broadcaster hands each publication to a :class:`BroadcastHandler`. Non-fan-out
broadcasters (HTTP, ``redisx``) deliver each publication to ONE node, which registers it
with the broker then re-transmits it through pub/sub. Fan-out broadcasters (legacy
``redis``/``nats``) deliver to EVERY node, which delivers locally, bypassing the broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pycable.protocol.broadcast import Publication

__all__ = ["Broadcaster", "BroadcastHandler"]


class BroadcastHandler(Protocol):
    async def handle_broadcast(self, publications: Sequence[Publication]) -> None:
        """Register and publish (non-fan-out path). Raises BrokerError on failure."""
        ...

    def handle_fanout(self, publications: Sequence[Publication]) -> None:
        """Deliver locally, bypassing the broker (fan-out path)."""
        ...


class Broadcaster(Protocol):
    """**Protocol:** a source of publications."""

    is_fanout: bool

    async def start(self, handler: BroadcastHandler) -> None: ...

    async def shutdown(self) -> None: ...

    def describe(self) -> str: ...

    def health(self) -> str:
        """``""`` while ready; else why not, one line (``/health`` answers 503 with it)."""
        ...
