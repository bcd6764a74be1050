from __future__ import annotations

from contract.backends.handle import BrokerHandle
from pycable.broker.base import HistoryPolicy
from pycable.broker.memory import MemoryBroker
from pycable.testing import FakeClock


async def make(policy: HistoryPolicy, sessions_ttl: float, name: str, **options: int) -> BrokerHandle:
    clock = FakeClock()
    broker = MemoryBroker(policy, sessions_ttl, clock=clock, **options)
    await broker.start()

    async def advance(seconds: float) -> None:
        clock.now += seconds

    return BrokerHandle(broker, advance, broker.shutdown, lambda: broker.expire(clock.now))
