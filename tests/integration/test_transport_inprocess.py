"""The transport on an in-process server: the HTTP head timeout (shortened), counters."""

from __future__ import annotations

import asyncio

from pycable.broker.base import NullBroker
from pycable.node.controller import LocalController
from pycable.node.node import Node
from pycable.transport import http
from pycable.transport.http import HttpOptions, Request, Response, Router, ServerState
from pycable.transport.server import Server


async def _server() -> tuple[Node, Server]:
    node = Node(LocalController(noauth=True, public_streams=True), NullBroker())
    await node.start()
    server = Server(ServerState(node), "127.0.0.1", 0, HttpOptions(routes=Router().add("/health", _ok)))
    await server.start()
    return node, server


async def _ok(req: Request) -> Response:
    return Response(200, b"ok")


async def test_a_client_that_never_finishes_its_head_is_closed(monkeypatch):
    monkeypatch.setattr(http, "HEAD_TIMEOUT", 0.3)
    node, server = await _server()
    try:
        silent = await asyncio.open_connection("127.0.0.1", server.port)
        dribbling = await asyncio.open_connection("127.0.0.1", server.port)
        dribbling[1].write(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # no blank line: never ends
        for reader, _ in (silent, dribbling):
            assert await asyncio.wait_for(reader.read(), 5) == b"", "closed by the server"
        # A keep-alive client is served, then closed when idle for the same time.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 5)
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok")
        for _, w in (silent, dribbling, (reader, writer)):
            w.close()
    finally:
        await server.shutdown(1.0)
        await node.shutdown()


async def test_malformed_frames_are_counted():
    from websockets.asyncio.client import connect

    node, server = await _server()
    try:
        async with connect(f"ws://127.0.0.1:{server.port}/cable", subprotocols=["actioncable-v1-json"]) as ws:
            await ws.recv()  # welcome
            for bad in ("nope", '{"command":"fly"}', b"\x00binary"):
                await ws.send(bad)
            await ws.send('{"command":"subscribe","identifier":"{\\"channel\\":\\"$pubsub\\",\\"stream_name\\":\\"x\\"}"}')
            assert "confirm_subscription" in await ws.recv()  # commands run in order: all three were seen
        assert node.stats["malformed_frames"] == 3
    finally:
        await server.shutdown(1.0)
        await node.shutdown()
