"""Presence across two real server processes, on Redis and on NATS JetStream: a join on one
node is announced to clients of the other and shows in its ``presence`` info, and a killed
node's members expire after ``--presence_ttl`` (announced by the surviving node).

SETUP: nodes A and B share a Redis (``--broker redis --pubsub redis``, one key prefix) or a
NATS server (``--broker nats --pubsub nats``, one ``--nats_prefix``), ``--presence_ttl 2``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from contract.backends._nats import delete_prefixed, nats_url
from helpers.client import CableClient, ident
from helpers.redis_server import redis_url
from helpers.server import ServerProcess

pytestmark = [pytest.mark.slow]

TTL = "2"


def unique(prefix: str = "p") -> str:
    return prefix + uuid.uuid4().hex[:8]


@pytest.fixture(params=["redis", "nats"])
def nodes(request: pytest.FixtureRequest) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    if request.param == "redis":
        prefix = f"pycable-test:{unique()}:"
        args = ["--broker", "redis", "--pubsub", "redis", "--redis_url", redis_url(), "--redis_prefix", prefix]
    else:
        url = asyncio.run(nats_url())
        prefix = unique("pt")
        args = ["--broker", "nats", "--pubsub", "nats", "--nats_servers", url, "--nats_prefix", prefix]
    args += ["--public", "--presence_ttl", TTL]
    a = ServerProcess(*args).start()
    try:
        b = ServerProcess(*args).start()
    except BaseException:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()
    if request.param == "redis":
        client = redis.Redis.from_url(redis_url())
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    else:
        asyncio.run(delete_prefixed(url, prefix))


async def connect(opened: list[CableClient], srv: ServerProcess, identifier: str) -> CableClient:
    c = await CableClient.open(srv.url)
    opened.append(c)
    await c.welcome()
    assert (await c.subscribe(identifier))["type"] == "confirm_subscription"
    return c


def presence(c: CableClient, after: int = 0) -> list[dict]:
    return [m["message"] for m in c.received[after:] if m.get("type") == "presence"]


async def info(c: CableClient, identifier: str) -> dict:
    n = len(c.received)
    await c.send({"command": "presence", "identifier": identifier, "data": {}})
    reply = await c.wait_for(lambda m: m.get("type") == "presence" and m["message"].get("type") in ("info", "error"), after=n)
    return reply["message"]


async def info_until(c: CableClient, identifier: str, ids: set[str], bound: float = 20.0) -> dict:
    """Ask for info until it lists exactly *ids* (*bound* only limits a failure)."""
    deadline = time.monotonic() + bound
    while True:
        got = await info(c, identifier)
        if {r["id"] for r in got.get("records", [])} == ids:
            return got
        assert time.monotonic() < deadline, f"info never listed {ids}: {got}"
        await asyncio.sleep(0.1)


async def test_join_on_one_node_shows_on_the_other_and_a_killed_node_expires(nodes, opened):
    a, b = nodes
    room = ident(unique("room"))
    ca = await connect(opened, a, room)
    cb = await connect(opened, b, room)

    await ca.send({"command": "join", "identifier": room, "presence": {"id": "1", "info": {"name": "Alice"}}})
    event = await cb.wait_for(lambda m: m.get("type") == "presence", timeout=10)
    assert event == {"type": "presence", "identifier": room, "message": {"type": "join", "id": "1", "info": {"name": "Alice"}}}
    got = await info_until(cb, room, {"1"})
    assert got == {"type": "info", "total": 1, "records": [{"id": "1", "info": {"name": "Alice"}}]}

    # The same id joining on B is not a new member anywhere.
    n = len(ca.received)
    await cb.send({"command": "join", "identifier": room, "presence": {"id": "1", "info": {"name": "Alice"}}})
    cb2 = await connect(opened, b, room)
    await cb2.send({"command": "join", "identifier": room, "presence": {"id": "2"}})
    await ca.wait_for(lambda m: m.get("type") == "presence" and m["message"].get("id") == "2", after=n, timeout=10)
    assert presence(ca, n) == [{"type": "join", "id": "2"}]

    # Node A dies without a word: its members stay for the ttl, then B announces their leave.
    ck = await connect(opened, a, room)
    await ck.send({"command": "join", "identifier": room, "presence": {"id": "k"}})
    await info_until(cb, room, {"1", "2", "k"})
    # The join event travels on its own (pub/sub) and may reach B after its info does:
    # mark B's messages only once it has announced both joins it will ever announce.
    for joined in ("2", "k"):
        await cb.wait_for(lambda m, j=joined: m.get("type") == "presence" and m["message"] == {"type": "join", "id": j}, timeout=10)
    n = len(cb.received)
    a.kill()
    await cb.wait_for(lambda m: m.get("type") == "presence" and m["message"] == {"type": "leave", "id": "k"}, after=n, timeout=30)
    assert presence(cb, n) == [{"type": "leave", "id": "k"}], "id 1 stays: B's session still holds it"
    assert await info_until(cb, room, {"1", "2"}, bound=5)
