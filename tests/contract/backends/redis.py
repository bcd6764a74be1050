"""The Redis broker for the contract suite: a real Redis (``REDIS_URL``, 127.0.0.1:6379, or
one started for the session), one key prefix per test, real time for TTLs."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from contract.backends.handle import BrokerHandle
from helpers.redis_server import redis_url
from pycable.broker.base import HistoryPolicy
from pycable.broker.redis import RedisBroker


async def delete_prefix(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix.replace("[", "\\[") + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def make(policy: HistoryPolicy, sessions_ttl: float, name: str, **options: int) -> BrokerHandle:
    url = redis_url()
    prefix = f"pycable-test:{name}:"
    broker = RedisBroker(aioredis.Redis.from_url(url), policy, sessions_ttl, prefix=prefix, **options)
    await broker.start()

    async def close() -> None:
        await broker.shutdown()
        await delete_prefix(url, prefix)

    return BrokerHandle(broker, asyncio.sleep, close)
