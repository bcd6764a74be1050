"""End to end: a real pycable process, the SDK test application (tests/sdk/chat_app.py, served
by uvicorn for HTTP RPC and by grpc.aio for gRPC, each in its own process) and the real
``@anycable/core`` client in Node. Broadcasts go through the SDK's own clients, configured
the way an application is: from ``ANYCABLE_*``.

The detailed RPC semantics (state merges, stopped streams, failures, restore calls...) are
also run against this application by tests/rpc/test_rpc_e2e.py (``sdk-grpc``/``sdk-http``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from js_cable import JsCable

from helpers.client import CableClient
from helpers.redis_server import redis_url
from helpers.server import ServerProcess, free_port
from pycable.exceptions import BroadcastError
from pycable.identity.signed import derive_key
from pycable.sdk import (
    HTTPBroadcaster,
    RedisXBroadcaster,
    Settings,
    abroadcast,
    abroadcast_batch,
    adisconnect,
    broadcast,
    broadcast_batch,
    configure,
    disconnect,
    get_broadcaster,
    jwt_token,
    signed_stream,
    turbo_signed_stream_name,
)
from rpc.apps import RpcApp, where

pytestmark = pytest.mark.js

SECRET = "sdk-e2e-secret-long-enough-for-hs256"
RPC_KEY = derive_key(SECRET, "rpc-cable")


class Stack:
    """pycable (memory broker, ``--rpc_restore``) + the SDK app over *transport*."""

    def __init__(self, transport: str, *extra: str) -> None:
        bport = free_port()
        self.env = {"ANYCABLE_SECRET": SECRET, "ANYCABLE_BROADCAST_URL": f"http://127.0.0.1:{bport}/_broadcast"}
        self.app = RpcApp(f"sdk-{transport}", secret=RPC_KEY, env=self.env).start()
        try:
            self.server = ServerProcess(
                "--rpc_host", self.app.rpc_host, "--broker", "memory", "--secret", SECRET, "--rpc_restore", *extra,
                bport=bport,
            ).start()  # fmt: skip
        except Exception:
            self.app.stop()
            raise
        self.settings = Settings.from_env(self.env)
        self.cables: list[JsCable] = []

    def url(self, query: str = "") -> str:
        return self.server.url + (f"?{query}" if query else "")

    def cable(self, user: str | None, *subs: dict[str, Any], name: str = "") -> JsCable:
        cable = JsCable(self.url(f"user={user}" if user else ""), name or user or "anon", list(subs))
        self.cables.append(cable)
        return cable

    def close_cables(self) -> None:
        while self.cables:
            self.cables.pop().close()

    def close(self) -> None:
        self.close_cables()
        self.server.stop()
        self.app.stop()


def room(id: str, name: str) -> dict[str, Any]:
    return {"id": id, "channel": "chat", "params": {"room": name}}


@pytest.fixture(scope="module", params=["http", "grpc"])
def stack(request) -> Iterator[Stack]:
    s = Stack(request.param)
    yield s
    s.close()


@pytest.fixture(autouse=True)
async def sdk_defaults(request) -> AsyncIterator[None]:
    """The module-level broadcast functions go to this test's server; the connections the
    async broadcaster opened on this test's event loop are closed with it."""
    if "stack" in request.fixturenames:
        configure(request.getfixturevalue("stack").settings)
    yield
    await get_broadcaster().aclose()
    get_broadcaster().close()
    configure(Settings())


@pytest.fixture(autouse=True)
def cables(request) -> Iterator[None]:
    yield
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").close_cables()


class TestChannels:
    async def test_connect_subscribe_perform_and_sdk_broadcasts(self, stack):
        ann = stack.cable("ann", room("r", "c1"))
        await ann.wait({"event": "subscribed", "id": "r"})
        await ann.message("r", {"hello": "c1", "user": "ann"})
        ann.perform("r", "count")
        await ann.message("r", {"count": 1})
        ann.perform("r", "echo", text="from a sync action")
        await ann.message("r", {"echo": "from a sync action"})
        await asyncio.to_thread(broadcast, "room:c1", {"n": 1})  # sync, HTTP, keep-alive
        await abroadcast("room:c1", {"n": 2})
        await asyncio.to_thread(broadcast_batch, [("room:c1", {"n": 3}), ("room:c1", "four")])
        await abroadcast_batch([("room:c1", {"n": 5})])
        await ann.message("r", {"n": 5})
        assert [m for m in ann.messages("r") if isinstance(m, str) or "n" in m] == [
            {"n": 1}, {"n": 2}, {"n": 3}, "four", {"n": 5}
        ]  # fmt: skip
        assert ann.errors() == []

    async def test_rejected_connection_and_subscription(self, stack):
        nobody = stack.cable(None, name="nobody")
        await nobody.wait(lambda e: e["event"] in ("disconnect", "close") and e["reason"] == "unauthorized")
        bob = stack.cable("bob", {"id": "bad", "channel": "chat", "params": {}})
        failed = await bob.wait({"event": "subscribe_failed", "id": "bad"})
        assert "rejected" in (failed["message"] or "").lower(), failed
        bob.subscribe("unknown", channel="NoSuchChannel", params={})
        await bob.wait({"event": "subscribe_failed", "id": "unknown"})

    async def test_streams_whisper_and_leave(self, stack):
        cat = stack.cable("cat", room("r", "c2"))
        await cat.wait({"event": "subscribed", "id": "r"})
        cat.perform("r", "follow", stream="extra")
        cat.perform("r", "echo", text="followed")
        await cat.message("r", {"echo": "followed"})
        await abroadcast("extra", "x1")
        await cat.message("r", "x1")
        cat.perform("r", "leave")
        cat.perform("r", "echo", text="left")
        await cat.message("r", {"echo": "left"})
        await abroadcast("extra", "gone")
        await abroadcast("room:c2", "gone too")
        mark = cat.mark()
        cat.subscribe("m", channel="chat", params={"room": "c2-marker"})
        await cat.wait({"event": "subscribed", "id": "m"}, after=mark)
        await abroadcast("room:c2-marker", "marker")
        await cat.message("m", "marker")
        assert "gone" not in cat.messages("r") and "gone too" not in cat.messages("r")


class TestWhisper:
    async def test_whisper_on_a_stream_the_channel_opened_with_whisper(self, stack):
        ann, bob = stack.cable("ann", room("r", "wh")), stack.cable("bob", room("r", "wh"))
        for c in (ann, bob):
            await c.wait({"event": "subscribed", "id": "r"})
            c.perform("r", "whisper_on", stream="typing/wh")
            c.perform("r", "echo", text="whisper on")
            await c.message("r", {"echo": "whisper on"})
        ann.send(cmd="whisper", id="r", data={"typing": "ann"})
        await bob.message("r", {"typing": "ann"})
        assert {"typing": "ann"} not in ann.messages("r"), "a whisper skips its sender"


class TestPresence:
    async def test_join_and_leave_from_the_channel(self, stack):
        ann, bob = stack.cable("ann", room("r", "pr")), stack.cable("bob", room("r", "pr"))
        for c in (ann, bob):
            await c.wait({"event": "subscribed", "id": "r"})
        bob.perform("r", "present")
        bob.perform("r", "echo", text="bob is here")
        await bob.message("r", {"echo": "bob is here"})
        bob.send(cmd="presence_info", id="r")
        info = await bob.wait({"event": "presence_info", "id": "r"})
        assert info["data"] == {"bob": {"name": "Bob"}}
        ann.perform("r", "present")
        joined = await bob.wait(lambda e: e["event"] == "presence" and e["data"].get("id") == "ann")
        assert joined["data"] == {"type": "join", "id": "ann", "info": {"name": "Ann"}}
        ann.perform("r", "absent")
        await bob.wait(lambda e: e["event"] == "presence" and e["data"] == {"type": "leave", "id": "ann"})


class TestFromInsideACall:
    @pytest.mark.parametrize("action", ["speak", "speak_sync"])
    async def test_to_others(self, stack, action):
        name = f"o-{action}"
        ann, bob = stack.cable("ann", room("r", name)), stack.cable("bob", room("r", name))
        await ann.wait({"event": "subscribed", "id": "r"})
        await bob.wait({"event": "subscribed", "id": "r"})
        ann.perform("r", action, text="only for others", others=True)
        await bob.message("r", {"user": "ann", "text": "only for others"})
        ann.perform("r", action, text="for everyone")
        await ann.message("r", {"user": "ann", "text": "for everyone"})
        await bob.message("r", {"user": "ann", "text": "for everyone"})
        assert {"user": "ann", "text": "only for others"} not in ann.messages("r")

    async def test_remote_disconnect_by_identifiers(self, stack):
        dan1, dan2 = stack.cable("dan", room("r", "d"), name="dan1"), stack.cable("dan", room("r", "d"), name="dan2")
        eve = stack.cable("eve", room("r", "d"))
        for c in (dan1, dan2, eve):
            await c.wait({"event": "subscribed", "id": "r"})
        eve.perform("r", "kick_user", user="dan")  # adisconnect from inside the app
        for c in (dan1, dan2):
            await c.wait({"event": "frame", "frame": {"type": "disconnect", "reason": "remote", "reconnect": False}})
        fay = stack.cable("fay", room("r", "d2"))
        await fay.wait({"event": "subscribed", "id": "r"})
        await asyncio.to_thread(disconnect, user="fay")  # from outside, sync
        await fay.wait({"event": "frame", "frame": {"type": "disconnect", "reason": "remote", "reconnect": True}})
        assert not [e for e in eve.events if e["event"] == "frame" and e["frame"].get("type") == "disconnect"]

    async def test_an_exception_in_user_code(self, stack):
        gus = stack.cable("gus", room("r", "g"))
        await gus.wait({"event": "subscribed", "id": "r"})
        mark = stack.app.mark()
        for action in ("boom", "boom_sync"):
            gus.perform("r", action)
        gus.perform("r", "echo", text="still serving")
        await gus.message("r", {"echo": "still serving"})
        await abroadcast("never-streamed", "x")
        await abroadcast("room:g", "after")
        await gus.message("r", "after")
        assert {"never": "sent"} not in gus.messages("r") and "x" not in gus.messages("r")
        await stack.app.wait_calls(where("command", command="message"), 3, after=mark)
        err = stack.app.stderr()
        assert "ValueError: boom in an action" in err and "ValueError: boom in a sync action" in err
        assert "Traceback" in err
        assert "Application error: ValueError: boom in an action" in stack.server.log()
        # An exception in connect: the client is closed with 1011; the app keeps serving.
        client = await CableClient.open(stack.url("user=explode"))
        try:
            await asyncio.wait_for(client.closed.wait(), 10)
            assert client.ws.close_code == 1011 and client.received == []
        finally:
            await client.close()
        ok = stack.cable("after-explode", room("r", "g"))
        await ok.wait({"event": "subscribed", "id": "r"})


class TestRestore:
    async def test_a_restored_session_makes_no_connect(self, stack):
        """The socket is cut; the client comes back with its session: the app hears
        ``restored`` (Restore call), no new Connect, the channel state survived, and the
        broadcast sent while it was away arrives exactly once."""
        mark = stack.app.event_mark()
        hal = stack.cable("hal", room("r", "h"))
        await hal.wait({"event": "subscribed", "id": "r"})
        hal.perform("r", "count")
        await hal.message("r", {"count": 1})
        first = await stack.app.wait_event(lambda e: e["callback"] == "connect" and e["user"] == "hal", after=mark)
        n = hal.mark()
        hal.send(cmd="terminate")
        await hal.wait({"event": "disconnect"}, after=n)
        await abroadcast("room:h", "while away")
        await hal.wait(lambda e: e["event"] == "connect" and e["restored"], after=n)
        await hal.message("r", "while away", after=n)
        hal.perform("r", "count")
        await hal.message("r", {"count": 2}, after=n)
        restored = await stack.app.wait_event(lambda e: e["callback"] == "restored", after=mark)
        assert restored["restored_sid"] == first["sid"] and restored["user"] == "hal"
        assert restored["state"] == {"user": "hal"}
        channel = await stack.app.wait_event(lambda e: e["callback"] == "channel_restored", after=mark)
        assert json.loads(channel["identifier"]) == {"channel": "chat", "room": "h"}
        assert channel["state"] == {"room": "h", "count": "1"}
        connects = stack.app.events(lambda e: e["callback"] == "connect" and e["user"] == "hal")
        assert connects == [first]
        assert hal.messages("r").count("while away") == 1


class TestBroadcastErrors:
    async def test_wrong_key_and_unreachable_server_raise(self, stack):
        wrong = HTTPBroadcaster(stack.settings.effective_broadcast_url, key="wrong")
        gone = HTTPBroadcaster(f"http://127.0.0.1:{free_port()}/_broadcast")
        try:
            with pytest.raises(BroadcastError, match=r"HTTP 401.*broadcast key"):
                await asyncio.to_thread(wrong.publish, b'{"stream":"s","data":"x"}')
            with pytest.raises(BroadcastError, match="HTTP 401"):
                await wrong.apublish(b'{"stream":"s","data":"x"}')
            with pytest.raises(BroadcastError, match="cannot broadcast"):
                await asyncio.to_thread(gone.publish, b"{}")
            with pytest.raises(BroadcastError, match="cannot broadcast"):
                await gone.apublish(b"{}")
        finally:
            for b in (wrong, gone):
                b.close()
                await b.aclose()

    async def test_keep_alive_survives_a_server_side_close(self, stack):
        """The sync client reuses its connection; when pycable restarts (closing it), the
        next broadcast reconnects instead of failing."""
        b = HTTPBroadcaster(stack.settings.effective_broadcast_url, stack.settings.effective_broadcast_key)
        b.publish(b'{"stream":"ka","data":"1"}')  # (blocking this loop briefly: the server is another process)
        conn = b._local.conn
        b.publish(b'{"stream":"ka","data":"2"}')
        assert b._local.conn is conn, "kept alive"
        conn.sock.shutdown(socket.SHUT_RDWR)  # as if the server had dropped the idle connection
        b.publish(b'{"stream":"ka","data":"3"}')
        assert b._local.conn is not conn
        b.close()


#: One environment for pycable and the SDK: the application secret alone, or every secret set
#: on its own. The server reads it as ANYCABLE_* variables, the SDK through Settings.from_env.
RPC_LESS_ENVS = {
    "secret": {"ANYCABLE_SECRET": SECRET},
    "separate": {
        "ANYCABLE_JWT_SECRET": "jwt-" + SECRET,
        "ANYCABLE_STREAMS_SECRET": "streams-" + SECRET,
        "ANYCABLE_TURBO_STREAMS_SECRET": "turbo-" + SECRET,
        "ANYCABLE_BROADCAST_KEY": "key-" + SECRET,
    },
}


@pytest.fixture(scope="module", params=sorted(RPC_LESS_ENVS))
def rpc_less(request) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """pycable with no application at all: JWT identification, signed and Turbo streams."""
    env = {**RPC_LESS_ENVS[request.param], "ANYCABLE_ENFORCE_JWT": "true", "ANYCABLE_TURBO_STREAMS": "true"}
    with ServerProcess("--broker", "memory", env=env) as server:
        yield server, {**env, "ANYCABLE_BROADCAST_URL": f"http://127.0.0.1:{server.bport}/_broadcast"}


class TestRpcLess:
    async def test_jwt_signed_and_turbo_streams_minted_by_the_sdk(self, rpc_less):
        rpc_less, env = rpc_less
        settings = Settings.from_env(env)
        configure(settings)
        token = jwt_token({"user": "ivy"}, ttl=60, settings=settings)
        turbo = turbo_signed_stream_name("rooms", 5, settings=settings)
        ivy = JsCable(
            f"{rpc_less.url}?jid={token}",
            "ivy",
            [
                {"id": "news", "signed": signed_stream("news", settings=settings)},
                {"id": "turbo", "channel": "Turbo::StreamsChannel", "params": {"signed_stream_name": turbo}},
            ],
        )
        try:
            await ivy.wait({"event": "subscribed", "id": "news"})
            await ivy.wait({"event": "subscribed", "id": "turbo"})
            await abroadcast("news", {"headline": "hi"})
            await abroadcast("rooms:5", "<turbo-stream></turbo-stream>")
            await ivy.message("news", {"headline": "hi"})
            await ivy.message("turbo", "<turbo-stream></turbo-stream>")
            # The JWT's identifiers are the string a remote disconnect names.
            await adisconnect(user="ivy", reconnect=False)
            await ivy.wait({"event": "frame", "frame": {"type": "disconnect", "reason": "remote", "reconnect": False}})
        finally:
            ivy.close()

    async def test_bad_tokens_and_signatures_are_refused(self, rpc_less):
        rpc_less, env = rpc_less
        settings = Settings.from_env(env)
        expired = jwt_token({"user": "old"}, ttl=-10, settings=settings)
        client = await CableClient.open(f"{rpc_less.url}?jid={expired}")
        try:
            msg = await client.wait_for({"type": "disconnect"})
            assert msg["reason"] == "token_expired"
        finally:
            await client.close()
        ok = jwt_token({"user": "ok"}, settings=settings)
        client = await CableClient.open(f"{rpc_less.url}?jid={ok}")
        try:
            await client.welcome()
            forged = json.dumps({"channel": "$pubsub", "signed_stream_name": signed_stream("x", secret="other" * 8)})
            assert (await client.subscribe(forged))["type"] == "reject_subscription"
        finally:
            await client.close()


class TestRedisX:
    async def test_broadcast_and_disconnect_through_the_redis_stream(self):
        url = redis_url()
        stream = f"sdk-e2e-{uuid.uuid4().hex[:8]}"
        server = ServerProcess(
            "--public", "--broker", "memory", "--broadcast_adapter", "redisx", "--redis_url", url,
            "--redisx_stream", stream, "--pubsub", "none", "--redisx_read_block_milliseconds", "200",
        ).start()  # fmt: skip
        b = RedisXBroadcaster(url, stream)
        configure(Settings(broadcast_adapter="redisx", redis_url=url, redisx_stream=stream))
        cable = JsCable(server.url, "rx", [{"id": "s", "stream": "rx-stream"}])
        try:
            await cable.wait({"event": "subscribed", "id": "s"})
            await asyncio.to_thread(b.publish, b'{"stream":"rx-stream","data":"\\"sync\\""}')
            await b.apublish(b'{"stream":"rx-stream","data":"\\"async\\""}')
            await abroadcast("rx-stream", {"via": "abroadcast"})
            await asyncio.to_thread(broadcast_batch, [("rx-stream", 1), ("rx-stream", 2)])
            await cable.message("s", 2)
            assert cable.messages("s") == ["sync", "async", {"via": "abroadcast"}, 1, 2]
        finally:
            cable.close()
            await b.aclose()
            b.close()
            server.stop()
        dead = RedisXBroadcaster("redis://127.0.0.1:1", stream)
        with pytest.raises(BroadcastError, match="cannot broadcast through Redis"):
            await dead.apublish(b"{}")
        with pytest.raises(BroadcastError, match="cannot broadcast through Redis"):
            await asyncio.to_thread(dead.publish, b"{}")
