"""The WebSocket transport over a socketpair: handshake, commands, the policy's closes, the
node port (closing mutes, a lost socket releases the session)."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect

from pycable.node.controller import LocalController
from pycable.protocol.broadcast import StreamMessage
from pycable.rpc.base import ConnectResult, Env
from pycable.testing import InProcessServer


def ident(stream: str) -> str:
    return json.dumps({"channel": "$pubsub", "stream_name": stream})


async def test_welcome_subscribe_and_a_broadcast():
    async with InProcessServer() as server:
        async with connect("ws://test/cable", sock=await server.socket(), subprotocols=["actioncable-v1-ext-json"]) as ws:
            welcome = json.loads(await ws.recv())
            assert welcome["type"] == "welcome" and welcome["sid"]
            await ws.send(json.dumps({"command": "subscribe", "identifier": ident("a")}))
            assert json.loads(await ws.recv())["type"] == "confirm_subscription"
            await server.node.handle_broadcast([StreamMessage("a", '{"n":1}')])
            msg = json.loads(await ws.recv())
            assert msg["message"] == {"n": 1} and msg["identifier"] == ident("a")
        # The socket is gone: the node released the session and its stream.
        await server.wait_for(lambda: not server.node.hub.sessions and not server.node.hub.streams)


async def test_malformed_frames_are_counted_and_a_flood_is_closed():
    async with InProcessServer() as server:
        async with connect("ws://test/cable", sock=await server.socket(), subprotocols=["actioncable-v1-json"]) as ws:
            await ws.recv()  # welcome
            for _ in range(11):
                await ws.send("not json")
            msg = json.loads(await ws.recv())
            assert msg == {"type": "disconnect", "reason": "invalid_request", "reconnect": False}
            await ws.wait_closed()
            assert ws.close_code == 1007
        assert server.node.stats["malformed_frames"] == 11


async def test_commands_wait_for_authentication_then_run_in_order():
    release = asyncio.Event()

    class SlowConnect(LocalController):
        async def connect(self, env: Env) -> ConnectResult:
            await release.wait()
            return await super().connect(env)

    async with InProcessServer(controller=SlowConnect(noauth=True, public_streams=True)) as server:
        ws = await connect("ws://test/cable", sock=await server.socket(), subprotocols=["actioncable-v1-ext-json"])
        async with ws:
            for stream in ("a", "b", "c"):
                await ws.send(json.dumps({"command": "subscribe", "identifier": ident(stream)}))
            release.set()
            got = [json.loads(await ws.recv()) for _ in range(4)]
            assert got[0]["type"] == "welcome"
            assert [m["identifier"] for m in got[1:]] == [ident("a"), ident("b"), ident("c")]


async def test_a_client_leaving_during_connect_is_never_connected():
    entered, release = asyncio.Event(), asyncio.Event()

    class SlowConnect(LocalController):
        async def connect(self, env: Env) -> ConnectResult:
            entered.set()
            await release.wait()
            return await super().connect(env)

    async with InProcessServer(controller=SlowConnect(noauth=True, public_streams=True)) as server:
        ws = await connect("ws://test/cable", sock=await server.socket())
        await asyncio.wait_for(entered.wait(), 10)
        ws.transport.abort()
        await server.wait_for(lambda: not server.state.connections)
        release.set()
        await asyncio.sleep(0)
        assert not server.node.hub.sessions


async def test_graceful_shutdown_says_server_restart():
    server = InProcessServer()
    await server.start()
    ws = await connect("ws://test/cable", sock=await server.socket(), subprotocols=["actioncable-v1-ext-json"])
    await ws.recv()
    await server.stop()
    msg = json.loads(await ws.recv())
    assert msg == {"type": "disconnect", "reason": "server_restart", "reconnect": True}
    await ws.wait_closed()
    assert ws.close_code == 1001
