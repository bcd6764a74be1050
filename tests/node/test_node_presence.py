"""Presence through the node (recording connections, in-memory presence with a fake clock):
the join/leave/presence commands, presence on subscribe, from RPC, keepalive and expiry,
and bad input answered with an error."""

from __future__ import annotations

import asyncio
import json

import pytest

from contract.backends.memory import FakeClock
from pycable.broker.base import HistoryPolicy
from pycable.broker.memory import MemoryBroker
from pycable.node.controller import LocalController
from pycable.node.node import Node, NodeConfig
from pycable.presence.base import PresenceLimits
from pycable.presence.memory import MemoryPresence
from pycable.rpc.base import SUCCESS, CommandResult
from pycable.testing import connect_session, send
from rpc.test_rpc_node import CHAT, FakeRPC, confirm, perform

IDENT = json.dumps({"channel": "$pubsub", "stream_name": "chat"})
TTL = 15.0


async def drain(node: Node) -> None:
    while node.hub._worker is not None:
        await asyncio.shield(node.hub._worker)


@pytest.fixture
async def setup():
    clock = FakeClock()
    broker = MemoryBroker(HistoryPolicy(), sessions_ttl=60, clock=clock)
    presence = MemoryPresence(PresenceLimits(TTL, max_per_stream=3, max_info_size=64), clock=clock)
    node = Node(
        LocalController(noauth=True, public_streams=True), broker, config=NodeConfig(sessions_ttl=60),
        presence=presence,
    )
    await node.start()
    yield node, clock
    await node.shutdown()


async def subscribed(node: Node, sid: str, **extra):
    session, conn = await connect_session(node, sid)
    await send(node, session, {"command": "subscribe", "identifier": IDENT, **extra})
    await drain(node)
    conn.clear()
    return session, conn


def presence_of(conn) -> list:
    return [m["message"] for m in conn.messages if m.get("type") == "presence"]


async def run(node: Node, session, command: dict) -> None:
    await send(node, session, {"identifier": IDENT, **command})
    await drain(node)


class TestCommands:
    async def test_join_reaches_every_subscriber_once_per_id(self, setup):
        node, _ = setup
        (a, ca), (b, cb) = [await subscribed(node, sid) for sid in ("a", "b")]
        await run(node, a, {"command": "join", "presence": {"id": "42", "info": {"name": "Sasha"}}})
        expected = {"type": "presence", "identifier": IDENT, "message": {"type": "join", "id": "42", "info": {"name": "Sasha"}}}
        assert ca.messages == [expected] and cb.messages == [expected]
        await run(node, b, {"command": "join", "presence": {"id": "42", "info": {"name": "Sasha"}}})
        assert len(ca.messages) == 1, "a second session of the same id is not a new member"

    async def test_info_lists_the_records(self, setup):
        node, _ = setup
        (a, ca), (b, _cb) = [await subscribed(node, sid) for sid in ("a", "b")]
        await run(node, a, {"command": "join", "presence": {"id": "1", "info": {"n": "A"}}})
        await run(node, b, {"command": "join", "presence": {"id": 2}})
        ca.clear()
        await run(node, a, {"command": "presence", "data": {}})
        (reply,) = ca.messages
        assert reply["type"] == "presence" and reply["identifier"] == IDENT
        assert reply["message"]["type"] == "info" and reply["message"]["total"] == 2
        assert sorted(reply["message"]["records"], key=lambda r: r["id"]) == [{"id": "1", "info": {"n": "A"}}, {"id": "2"}]
        ca.clear()
        await run(node, a, {"command": "presence", "data": {"return_records": False}})
        assert presence_of(ca) == [{"type": "info", "total": 2}]

    async def test_leave_and_unsubscribe_announce_the_last_session(self, setup):
        node, _ = setup
        (a, ca), (b, cb), (c, _) = [await subscribed(node, sid) for sid in ("a", "b", "c")]
        for s, pid in ((a, "1"), (b, "1"), (c, "2")):
            await run(node, s, {"command": "join", "presence": {"id": pid}})
        cb.clear()
        await run(node, a, {"command": "leave"})
        assert presence_of(cb) == [], "b still holds id 1"
        await run(node, b, {"command": "unsubscribe"})
        await run(node, c, {"command": "leave"})
        assert presence_of(ca) == [
            {"type": "join", "id": "1"},
            {"type": "join", "id": "2"},
            {"type": "leave", "id": "1"},
            {"type": "leave", "id": "2"},
        ]
        await run(node, a, {"command": "presence", "data": {}})
        assert presence_of(ca)[-1] == {"type": "info", "total": 0}

    async def test_subscribe_with_presence_joins_after_the_confirmation(self, setup):
        node, _ = setup
        _, watcher = await subscribed(node, "w")
        session, conn = await connect_session(node, "s")
        await send(node, session, {"command": "subscribe", "identifier": IDENT, "presence": {"id": "7"}})
        await drain(node)
        types = [m.get("type") for m in conn.messages]
        assert types.index("confirm_subscription") < types.index("presence")
        assert presence_of(watcher) == [{"type": "join", "id": "7"}]


class TestBadInput:
    @pytest.mark.parametrize(
        ("command", "reason"),
        [
            ({"command": "join"}, "presence data is missing"),
            ({"command": "join", "presence": "42"}, "must be an object"),
            ({"command": "join", "presence": {"id": ""}}, "empty"),
            ({"command": "join", "presence": {"id": "1", "info": "x" * 100}}, "larger than 64"),
        ],
    )
    async def test_bad_join_gets_an_error_and_changes_nothing(self, setup, command, reason):
        node, _ = setup
        a, ca = await subscribed(node, "a")
        await run(node, a, command)
        (msg,) = presence_of(ca)
        assert msg["type"] == "join_failed" and reason in msg["reason"]
        await run(node, a, {"command": "presence", "data": {}})
        assert presence_of(ca)[-1] == {"type": "info", "total": 0}

    async def test_unknown_subscription_and_mismatch_and_cap(self, setup):
        node, _ = setup
        a, ca = await subscribed(node, "a")
        other = json.dumps({"channel": "$pubsub", "stream_name": "other"})
        await send(node, a, {"command": "presence", "identifier": other})
        await send(node, a, {"command": "join", "identifier": other, "presence": {"id": "1"}})
        await run(node, a, {"command": "join", "presence": {"id": "1"}})
        await run(node, a, {"command": "join", "presence": {"id": "2"}})
        for sid, pid in (("b", "3"), ("c", "4"), ("d", "5")):
            s, _ = await subscribed(node, sid)
            await run(node, s, {"command": "join", "presence": {"id": pid}})
        msgs = presence_of(ca)
        assert msgs[0] == {"type": "error", "total": 0, "reason": "unknown subscription"}
        assert msgs[1] == {"type": "join_failed", "reason": "unknown subscription"}
        assert {"type": "join_failed", "reason": "presence ID mismatch"} in msgs
        joined = [m["id"] for m in msgs if m["type"] == "join"]
        assert joined == ["1", "3", "4"], "the cap of 3 members per stream holds"

    async def test_without_a_broker_presence_is_refused_politely(self):
        node = Node(LocalController(noauth=True, public_streams=True))
        await node.start()
        try:
            a, ca = await subscribed(node, "a")
            await run(node, a, {"command": "join", "presence": {"id": "1"}})
            await run(node, a, {"command": "presence"})
            await run(node, a, {"command": "leave"})
            msgs = presence_of(ca)
            assert [m["type"] for m in msgs] == ["join_failed", "error"]
            assert "without a broker" in msgs[0]["reason"]
        finally:
            await node.shutdown()


class TestExpiry:
    async def test_connected_sessions_are_kept_alive_and_gone_ones_expire(self, setup):
        node, clock = setup
        (a, ca), (b, _) = [await subscribed(node, sid) for sid in ("a", "b")]
        await run(node, a, {"command": "join", "presence": {"id": "1"}})
        await run(node, b, {"command": "join", "presence": {"id": "2"}})
        clock.now += TTL / 2 + 1
        await node.presence.keepalive()
        clock.now += TTL / 2 + 1
        await node.presence.sweep()
        await drain(node)
        assert [m["type"] for m in presence_of(ca)] == ["join", "join"], "kept alive while connected"
        await node.disconnect(b)
        for _ in range(2):  # the keepalive runs every ttl/2 for the connected session a
            clock.now += (TTL - 1) / 2
            await node.presence.keepalive()
            await node.presence.sweep()
        await drain(node)
        assert [m["type"] for m in presence_of(ca)] == ["join", "join"], "not before the ttl"
        clock.now += 2
        await node.presence.sweep()
        await drain(node)
        assert presence_of(ca)[-1] == {"type": "leave", "id": "2"}
        assert [m.id for m in await node.presence.presence.info("chat")] == ["1"]


class TestRPC:
    async def test_presence_from_the_application(self):
        rpc = FakeRPC()

        def on_command(command: str, identifier: str, data: str) -> CommandResult:
            if command == "subscribe":
                return CommandResult(
                    SUCCESS, streams=["room:1"], transmissions=[confirm(identifier)], istate={"$p": "room:1"},
                    presence=("join", "u1", '{"name":"Bart"}'),
                )
            if command == "unsubscribe":
                return CommandResult(SUCCESS)
            return CommandResult(SUCCESS, **json.loads(data)["result"])

        rpc.on_command = on_command  # type: ignore[method-assign]
        node = Node(LocalController(rpc=rpc), MemoryBroker(), config=NodeConfig(disconnect_rate=0), presence=MemoryPresence())
        await node.start()
        try:
            s, conn = await connect_session(node, "s1")
            await send(node, s, {"command": "subscribe", "identifier": CHAT})
            await drain(node)
            joined = {"type": "presence", "identifier": CHAT, "message": {"type": "join", "id": "u1", "info": {"name": "Bart"}}}
            assert joined in conn.messages
            await perform(node, s, CHAT, presence=["leave", "", ""])
            await drain(node)
            assert conn.messages[-1]["message"] == {"type": "leave", "id": "u1"}
            await perform(node, s, CHAT, presence=["wave", "u1", ""])  # refused: logged, nothing sent
            assert conn.messages[-1]["message"] == {"type": "leave", "id": "u1"}
        finally:
            await node.shutdown()
