from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pycable.broker.base import Broker


@dataclass
class BrokerHandle:
    """A started broker plus a way to let time pass for it.

    ``advance(seconds)``: the memory broker moves its fake clock; a real backend whose
    TTLs are kept by its server waits for real (its tests use TTLs of about a second).
    ``expire()``: run the backend's expiry pass now, if it has one.
    """

    broker: Broker
    advance: Callable[[float], Awaitable[None]]
    close: Callable[[], Awaitable[None]]
    expire: Callable[[], None] = lambda: None
