"""The node with an RPC controller (in process, recording connections): the connect flow
(§1.1), command results (§6.3), state (§6.4), the Disconnect queue (§6.5) and the Restore
notification."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest

from pycable.broker.base import HistoryPolicy
from pycable.broker.memory import MemoryBroker
from pycable.exceptions import RPCError
from pycable.node.controller import LocalController
from pycable.node.node import Node, NodeConfig
from pycable.node.session import Session
from pycable.protocol.broadcast import StreamMessage
from pycable.rpc.base import FAILURE, SUCCESS, CommandResult, ConnectResult, Env
from pycable.testing import FakeClock, RecordingConnection, connect_session, send

CHAT = json.dumps({"channel": "ChatChannel", "room": "1"})
NEWS = json.dumps({"channel": "NewsChannel"})
PUBLIC = json.dumps({"channel": "$pubsub", "stream_name": "public"})


def confirm(identifier: str) -> str:
    return json.dumps({"identifier": identifier, "type": "confirm_subscription"})


class FakeRPC:
    """Records every call; answers with ``on_connect`` / ``on_command`` (overridable)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.restore_error = False

    def _record(self, name: str, payload: Any) -> None:
        self.calls.append((name, payload))
        self.changed.set()

    def of(self, name: str) -> list[Any]:
        return [p for n, p in self.calls if n == name]

    async def wait(self, name: str, n: int = 1, timeout: float = 5.0) -> list[Any]:
        async def until() -> list[Any]:
            while len(self.of(name)) < n:
                self.changed.clear()
                await self.changed.wait()
            return self.of(name)

        return await asyncio.wait_for(until(), timeout)

    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    def describe(self) -> str:
        return "fake RPC"

    async def connect(self, env: Env) -> ConnectResult:
        self._record("connect", env)
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self._record("connect cancelled", env)
                raise
        return self.on_connect(env)

    def on_connect(self, env: Env) -> ConnectResult:
        if "reject" in env.url:
            return ConnectResult(
                FAILURE, transmissions=['{"type":"disconnect","reason":"unauthorized"}'], error="Auth Failed"
            )
        if "boom" in env.url:
            raise RPCError("Application error: boom")
        return ConnectResult(
            SUCCESS, '{"user":"u1"}', [json.dumps({"type": "welcome", "sid": env.sid})], {"token": "t1"}
        )

    async def command(self, command: str, identifier: str, identifiers: str, data: str, env: Env) -> CommandResult:
        self._record("command", (command, identifier, identifiers, data, dict(env.istate), dict(env.cstate)))
        if self.gate is not None:
            await self.gate.wait()
        return self.on_command(command, identifier, data)

    def on_command(self, command: str, identifier: str, data: str) -> CommandResult:
        if command == "subscribe":
            stream = "news" if identifier == NEWS else "room:1"
            return CommandResult(
                SUCCESS, streams=[stream], transmissions=[confirm(identifier)], istate={"room": "1", "count": "0"}
            )
        if command == "unsubscribe":
            return CommandResult(SUCCESS, cstate={"left": "yes"})
        action = json.loads(data)
        return CommandResult(SUCCESS, **action.get("result", {}))

    async def disconnect(self, identifiers: str, subscriptions: list[str], env: Env) -> None:
        self._record("disconnect", (identifiers, subscriptions, env))

    async def restore(self, identifiers: str, subscriptions: list[str], env: Env, restored_sid: str) -> None:
        self._record("restore", (identifiers, subscriptions, env, restored_sid))
        if self.restore_error:
            raise RPCError("UNIMPLEMENTED")


@pytest.fixture
async def setup():
    rpc = FakeRPC()
    broker = MemoryBroker(HistoryPolicy(limit=10, ttl=60), sessions_ttl=60, clock=FakeClock())
    node = Node(
        LocalController(rpc=rpc, public_streams=True), broker, config=NodeConfig(sessions_ttl=60, disconnect_rate=0)
    )
    await node.start()
    yield node, rpc
    await node.shutdown()


async def perform(node: Node, session, identifier: str, **result: Any) -> None:
    await send(
        node,
        session,
        {"command": "message", "identifier": identifier, "data": json.dumps({"action": "x", "result": result})},
    )


async def publish(node: Node, stream: str, data: str) -> None:
    await node.handle_broadcast([StreamMessage(stream, data)])
    while node.hub._worker is not None:
        await asyncio.shield(node.hub._worker)


def streams_of(session, identifier: str) -> list[str]:
    return sorted(session.subscriptions[identifier].streams)


class TestConnect:
    async def test_success_stores_identifiers_and_cstate_and_relays_transmissions(self, setup):
        node, rpc = setup
        s, conn = await connect_session(node, "s1")
        assert s.identifiers == '{"user":"u1"}' and s.cstate == {"token": "t1"}
        assert conn.messages == [{"type": "welcome", "sid": "s1"}]
        (env,) = rpc.of("connect")
        assert env.sid == "s1" and env.istate == {}

    async def test_failure_relays_then_closes_with_1000(self, setup):
        node, _ = setup
        s2, conn2 = await _connect(node, "s2", "ws://test/cable?reject=1")
        assert conn2.messages == [{"type": "disconnect", "reason": "unauthorized"}]
        assert conn2.closed == (1000, "Auth Failed")
        assert not s2.connected

    async def test_rpc_error_closes_with_1011_and_sends_nothing(self, setup):
        node, _ = setup
        s, conn = await _connect(node, "s1", "ws://test/cable?boom=1")
        assert conn.messages == []
        assert conn.closed == (1011, "Auth Error")


async def _connect(node: Node, sid: str, url: str):
    conn = RecordingConnection()
    session = Session(sid, conn, Env(url, {}, sid, "127.0.0.1"), ext=True, resumable=node.resumable(True))
    await node.authenticate(session)
    return session, conn


class TestCommands:
    async def test_subscribe_adds_streams_state_and_relays_the_apps_confirmation(self, setup):
        node, rpc = setup
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": CHAT})
        assert conn.messages[-1] == {"identifier": CHAT, "type": "confirm_subscription"}
        assert streams_of(s, CHAT) == ["room:1"]
        assert s.istate[CHAT] == {"room": "1", "count": "0"}
        # The subscribe carried the connection identifiers and no channel state yet.
        assert rpc.of("command")[0] == ("subscribe", CHAT, '{"user":"u1"}', "", {}, {"token": "t1"})

    async def test_a_command_carries_only_its_own_channel_state(self, setup):
        node, rpc = setup
        s, _ = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": CHAT})
        await send(node, s, {"command": "subscribe", "identifier": NEWS})
        await perform(node, s, NEWS, istate={"seen": "3"})
        await perform(node, s, CHAT)
        *_, (cmd, ident, _, _, istate, _) = rpc.of("command")
        assert (cmd, ident, istate) == ("message", CHAT, {"room": "1", "count": "0"})

    async def test_state_merge_and_empty_string_deletes(self, setup):
        node, rpc = setup
        s, _ = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": CHAT})
        await perform(node, s, CHAT, istate={"count": "1", "room": ""}, cstate={"token": "", "mode": "dark"})
        assert s.istate[CHAT] == {"count": "1"}
        assert s.cstate == {"mode": "dark"}
        await perform(node, s, CHAT)
        assert rpc.of("command")[-1][4:] == ({"count": "1"}, {"mode": "dark"})

    async def test_stop_streams_and_stopped_streams(self, setup):
        node, _ = setup
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": CHAT})
        await perform(node, s, CHAT, streams=["a", "b"])
        assert streams_of(s, CHAT) == ["a", "b", "room:1"]
        await perform(node, s, CHAT, stopped_streams=["a"])
        assert streams_of(s, CHAT) == ["b", "room:1"]
        await publish(node, "a", '"gone"')
        await publish(node, "b", '"here"')
        assert [m["message"] for m in conn.stream_messages()] == ["here"]
        await perform(node, s, CHAT, stop_streams=True, streams=["c"])
        assert streams_of(s, CHAT) == ["c"], "stop_streams first, then the new streams (§6.3)"
        assert "b" not in node.hub.streams and "room:1" not in node.hub.streams

    async def test_transmissions_are_relayed_verbatim_and_disconnect_closes_after_them(self, setup):
        node, _ = setup
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": CHAT})
        raw = '{"identifier":"x",  "message":{"b":2,"a":1}}'
        await perform(node, s, CHAT, transmissions=[raw], disconnect=True)
        assert conn.frames[-1].endswith(raw.encode())
        assert conn.closed is not None and conn.closed[0] == 1000

    async def test_rejected_subscription(self, setup):
        node, rpc = setup
        rpc.on_command = lambda c, i, d: CommandResult(
            FAILURE, transmissions=[json.dumps({"identifier": i, "type": "reject_subscription"})]
        )
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": CHAT})
        assert conn.messages[-1]["type"] == "reject_subscription"
        assert CHAT not in s.subscriptions

    async def test_subscribe_error_sends_nothing(self, setup):
        node, rpc = setup

        def fail(*args):
            raise RPCError("Application error: nope")

        rpc.on_command = fail
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": CHAT})
        assert conn.messages == [{"type": "welcome", "sid": "s1"}]
        assert CHAT not in s.subscriptions and conn.closed is None

    async def test_unsubscribe_stops_streams_clears_state_and_merges_cstate(self, setup):
        node, rpc = setup
        s, _ = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": CHAT})
        await perform(node, s, CHAT, istate={"count": "5"})
        await send(node, s, {"command": "unsubscribe", "identifier": CHAT})
        cmd, ident, _, _, istate, _ = rpc.of("command")[-1]
        assert (cmd, istate) == ("unsubscribe", {"room": "1", "count": "5"}), "state present in unsubscribe"
        assert CHAT not in s.subscriptions and CHAT not in s.istate
        assert "room:1" not in node.hub.streams
        assert s.cstate == {"token": "t1", "left": "yes"}

    async def test_built_in_channels_make_no_rpc_call(self, setup):
        node, rpc = setup
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": PUBLIC})
        assert conn.messages[-1] == {"identifier": PUBLIC, "type": "confirm_subscription"}
        await send(node, s, {"command": "unsubscribe", "identifier": PUBLIC})
        assert rpc.of("command") == []

    async def test_whisper_and_perform_on_a_public_stream_make_no_rpc_call(self, setup):
        node, rpc = setup
        s, conn = await connect_session(node, "s1")
        peer, peer_conn = await connect_session(node, "s2")
        for session in (s, peer):
            await send(node, session, {"command": "subscribe", "identifier": PUBLIC})
        await send(node, s, {"command": "whisper", "identifier": PUBLIC, "data": {"typing": True}})
        await send(node, s, {"command": "message", "identifier": PUBLIC, "data": json.dumps({"action": "x"})})
        while node.hub._worker is not None:
            await asyncio.shield(node.hub._worker)
        assert [m["message"] for m in peer_conn.stream_messages()] == [{"typing": True}]
        assert conn.stream_messages() == [], "a whisper is not echoed to its sender"
        assert rpc.of("command") == []

    async def test_a_subscribe_reply_with_disconnect_closes_after_relaying(self, setup):
        node, rpc = setup
        s, conn = await connect_session(node, "s1")
        rpc.on_command = lambda command, identifier, data: CommandResult(
            SUCCESS, disconnect=True, streams=["room:1"], transmissions=[confirm(identifier)]
        )
        await send(node, s, {"command": "subscribe", "identifier": CHAT})
        assert conn.messages[-1] == {"identifier": CHAT, "type": "confirm_subscription"}
        assert conn.closed == (1000, "Command Failed")

    async def test_a_rejected_subscribe_keeps_the_connection_state_it_returned(self, setup):
        node, rpc = setup
        s, conn = await connect_session(node, "s1")
        rpc.on_command = lambda command, identifier, data: CommandResult(
            FAILURE, streams=["room:1"], cstate={"rejected": "1"}, transmissions=['{"type":"reject_subscription"}']
        )
        await send(node, s, {"command": "subscribe", "identifier": CHAT})
        assert conn.messages[-1] == {"type": "reject_subscription"}
        assert CHAT not in s.subscriptions and s.cstate["rejected"] == "1"
        assert "room:1" not in node.hub.streams


class TestDisconnect:
    async def test_one_call_with_all_channel_state_json_encoded(self, setup):
        node, rpc = setup
        s, _ = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": CHAT})
        await send(node, s, {"command": "subscribe", "identifier": NEWS})
        await perform(node, s, NEWS, istate={"room": "", "count": "", "seen": "3"})
        await node.disconnect(s)
        await node.disconnect(s)  # the transport may report a close twice: still one call
        ((identifiers, subscriptions, env),) = await rpc.wait("disconnect")
        assert identifiers == '{"user":"u1"}'
        assert subscriptions == [CHAT, NEWS]
        assert {k: json.loads(v) for k, v in env.istate.items()} == {
            CHAT: {"room": "1", "count": "0"},
            NEWS: {"seen": "3"},
        }
        assert all(isinstance(v, str) for v in env.istate.values())
        assert env.cstate == {"token": "t1"} and env.sid == "s1"
        await node.disconnector.shutdown(1.0)
        assert len(rpc.of("disconnect")) == 1

    @pytest.mark.parametrize(
        ("mode", "noauth", "expected"),
        [
            ("auto", False, 1),
            ("auto", True, 0),
            ("always", True, 1),
            ("never", False, 0),
        ],
    )
    async def test_disconnect_mode(self, mode, noauth, expected):
        rpc = FakeRPC()
        node = Node(
            LocalController(rpc=rpc, noauth=noauth),
            MemoryBroker(),
            config=NodeConfig(sessions_ttl=0, disconnect_mode=mode, disconnect_rate=0),
        )
        await node.start()
        s, _ = await connect_session(node, "s1")
        await node.disconnect(s)
        await node.shutdown()
        assert len(rpc.of("disconnect")) == expected

    async def test_calls_are_rate_limited(self):
        """--disconnect_rate 20: 5 closed sessions are told apart by at least 1/20 s each."""
        rpc = FakeRPC()
        stamps: list[float] = []
        original = rpc.disconnect

        async def stamped(*args: Any) -> None:
            stamps.append(time.monotonic())
            await original(*args)

        rpc.disconnect = stamped  # type: ignore[method-assign]
        node = Node(LocalController(rpc=rpc), MemoryBroker(), config=NodeConfig(sessions_ttl=0, disconnect_rate=20))
        await node.start()
        sessions = [(await connect_session(node, f"s{i}"))[0] for i in range(5)]
        for s in sessions:
            await node.disconnect(s)
        await rpc.wait("disconnect", 5)
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert min(gaps) >= 0.04, gaps
        await node.shutdown()

    async def test_shutdown_drains_the_queue_and_tells_open_sessions(self):
        """A slow rate does not hold the shutdown: the backlog is drained at once; sessions
        still open when the node stops get their Disconnect too."""
        rpc = FakeRPC()
        node = Node(
            LocalController(rpc=rpc),
            MemoryBroker(),
            config=NodeConfig(sessions_ttl=0, disconnect_rate=1, shutdown_timeout=5),
        )
        await node.start()
        sessions = [(await connect_session(node, f"s{i}"))[0] for i in range(4)]
        for s in sessions[:2]:
            await node.disconnect(s)
        started = time.monotonic()
        await node.shutdown()
        assert time.monotonic() - started < 1.0
        assert sorted(env.sid for _, _, env in rpc.of("disconnect")) == ["s0", "s1", "s2", "s3"]

    async def test_shutdown_gives_up_after_the_timeout(self):
        rpc = FakeRPC()
        gate = asyncio.Event()

        async def hung(*args: Any) -> None:
            await gate.wait()

        rpc.disconnect = hung  # type: ignore[method-assign]
        node = Node(
            LocalController(rpc=rpc),
            MemoryBroker(),
            config=NodeConfig(sessions_ttl=0, disconnect_rate=0, shutdown_timeout=0.2),
        )
        await node.start()
        s, _ = await connect_session(node, "s1")
        await node.disconnect(s)
        started = time.monotonic()
        await node.shutdown()
        assert 0.15 < time.monotonic() - started < 2.0
        assert node.disconnector.stats["abandoned"] == 1


class TestRestore:
    async def test_restore_makes_no_connect_and_one_restore_call(self, setup):
        node, rpc = setup
        s, _ = await connect_session(node, "old")
        await send(node, s, {"command": "subscribe", "identifier": CHAT})
        await perform(node, s, CHAT, istate={"count": "2"}, cstate={"mode": "dark"})
        await node.disconnect(s)
        s2, conn2 = await connect_session(node, "new", prev_sid="old")
        assert conn2.messages[0]["restored"] is True
        assert len(rpc.of("connect")) == 1, "a restored session makes no Connect call"
        ((identifiers, subscriptions, env, restored_sid),) = rpc.of("restore")
        assert (identifiers, subscriptions, restored_sid) == ('{"user":"u1"}', [CHAT], "old")
        assert env.sid == "new"
        assert env.cstate == {"token": "t1", "mode": "dark"}
        assert {k: json.loads(v) for k, v in env.istate.items()} == {CHAT: {"room": "1", "count": "2"}}
        # The restored session keeps working with its state.
        await perform(node, s2, CHAT)
        assert rpc.of("command")[-1][4] == {"room": "1", "count": "2"}

    async def test_a_client_gone_during_the_restore_lookup_gets_no_connect_call(self, setup):
        node, rpc = setup
        s, _ = await connect_session(node, "old")
        await node.disconnect(s)
        looked_up, resume = asyncio.Event(), asyncio.Event()
        restore_session = node.broker.restore_session

        async def slow_restore(sid: str):
            looked_up.set()
            await resume.wait()
            return await restore_session(sid)

        node.broker.restore_session = slow_restore
        conn = RecordingConnection()
        session = Session("new", conn, Env("ws://test/cable?sid=old", {}, "new", "127.0.0.1"), ext=True, resumable=True)
        task = asyncio.create_task(node.authenticate(session, "old"))
        await looked_up.wait()
        session.closed = True  # what the transport does when the socket goes
        resume.set()
        assert await task is False
        assert not session.connected and conn.messages == []
        assert len(rpc.of("connect")) == 1, "no Connect for a client that left"
        assert "new" not in node.hub.sessions


    async def test_a_failing_restore_call_does_not_fail_the_restore(self, setup):
        node, rpc = setup
        rpc.restore_error = True
        s, _ = await connect_session(node, "old")
        await node.disconnect(s)
        s2, conn2 = await connect_session(node, "new", prev_sid="old")
        assert conn2.messages[0]["restored"] is True and s2.connected
        assert len(rpc.of("restore")) == 1 and len(rpc.of("connect")) == 1


class TestRPCDown:
    async def test_a_hung_rpc_does_not_stall_broadcasts(self, setup):
        """Connected clients keep receiving while Connect and Command calls hang."""
        node, rpc = setup
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": CHAT})
        rpc.gate = asyncio.Event()
        hung_connect = asyncio.create_task(connect_session(node, "s2"))
        hung_perform = asyncio.create_task(perform(node, s, CHAT))
        await rpc.wait("connect", 2)
        await rpc.wait("command", 2)
        await publish(node, "room:1", '"live"')
        assert [m["message"] for m in conn.stream_messages()] == ["live"]
        rpc.gate.set()
        await asyncio.gather(hung_connect, hung_perform)


class TestOverTheSocket:
    async def test_a_client_leaving_during_connect_cancels_the_call(self, setup):
        """Spec §6.7: an RPC call in flight is cancelled when its session closes."""
        from websockets.asyncio.client import connect

        from pycable.transport.http import HttpOptions, ServerState
        from pycable.transport.server import Server

        node, rpc = setup
        rpc.gate = asyncio.Event()
        state = ServerState(node)
        server = Server(state, "127.0.0.1", 0, HttpOptions())
        await server.start()
        try:
            async with connect(f"ws://127.0.0.1:{server.port}/cable", subprotocols=["actioncable-v1-ext-json"]):
                (env,) = await rpc.wait("connect")
            assert env.url == f"http://127.0.0.1:{server.port}/cable"
            await rpc.wait("connect cancelled")
            assert not node.hub.sessions
        finally:
            await server.shutdown(1.0)
