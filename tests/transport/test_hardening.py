"""Hardening of the transport (issue 14): bodies checked at the head, stalled bodies timed out,
pipelined answers capped, heads up to 64 KiB / 256 headers (431 beyond), fragments capped,
nothing queued after too_slow. An in-process server on port 0, real sockets."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pycable.broker.base import NullBroker
from pycable.node.controller import LocalController
from pycable.node.node import Node
from pycable.transport import http, ws
from pycable.transport.http import HttpOptions, Request, Response, Router, ServerState
from pycable.transport.server import Server
from pycable.transport.ws import WSOptions

KEY = "k3y"


def key_check(req: Request) -> Response | None:
    if req.header("authorization") != f"Bearer {KEY}":
        return Response(401, b"missing or invalid key")
    return None


async def post(req: Request) -> Response:
    return Response(201, str(len(req.body)).encode())


async def health(req: Request) -> Response:
    return Response(200, b"ok")


@asynccontextmanager
async def serving(ws_options: WSOptions | None = None) -> AsyncIterator[tuple[Server, ServerState]]:
    node = Node(LocalController(noauth=True, public_streams=True), NullBroker())
    await node.start()
    router = Router().add("/_broadcast", post, check=key_check).add("/health", health, max_body=0)
    state = ServerState(node)
    server = Server(state, "127.0.0.1", 0, HttpOptions(routes=router, ws=ws_options or WSOptions()))
    await server.start()
    try:
        yield server, state
    finally:
        await server.shutdown(1.0)
        await node.shutdown()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    n = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(n), 10) if n else b""
    return int(lines[0].split()[1]), body


# -- item 1: bodies -------------------------------------------------------------------------


async def test_a_wrong_key_is_answered_401_before_any_body_byte():
    async with serving() as (server, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /_broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: 15728640\r\n\r\n")
        assert (await read_response(reader))[0] == 401
        assert await asyncio.wait_for(reader.read(), 10) == b"", "closed without reading the body"
        writer.close()


async def test_expect_100_continue_is_answered_100_401_or_413():
    async with serving() as (server, _):
        for head, want in (
            (f"Authorization: Bearer {KEY}\r\nContent-Length: 2\r\n", 100),
            ("Content-Length: 2\r\n", 401),
            (f"Authorization: Bearer {KEY}\r\nContent-Length: {(16 << 20) + 1}\r\n", 413),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"POST /_broadcast HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n{head}\r\n".encode())
            status, _ = await read_response(reader)
            assert status == want
            if want == 100:
                writer.write(b"{}")
                assert await read_response(reader) == (201, b"2")
            writer.close()


async def test_paths_that_take_no_body_answer_at_once():
    async with serving() as (server, _):
        for path, want in ((b"/nowhere", 404), (b"/health", 413), (b"/cable", 426)):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 15728640\r\n\r\n")
            assert (await read_response(reader))[0] == want, path
            writer.close()


async def test_a_stalled_body_is_closed_by_the_body_timeout(monkeypatch):
    monkeypatch.setattr(http, "BODY_TIMEOUT", 0.5)
    async with serving() as (server, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"POST /_broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                     "Content-Length: 100\r\n\r\n{".encode())
        assert (await read_response(reader))[0] == 408
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()


def test_the_default_body_timeout_is_at_most_30_s():
    assert 0 < http.BODY_TIMEOUT <= 30


# -- item 2: pipelined requests whose answers are never read -----------------------------------


async def test_pipelined_requests_stop_being_read_while_answers_are_unsent():
    async with serving() as (server, state):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=1 << 16)
        request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        chunk = request * 2000
        sent = 0
        # Write up to 40 MB of requests without reading a single answer; the server must stop
        # reading (our writes then stall against the socket buffers) instead of queueing answers.
        conn = None
        while sent < 40_000_000:
            writer.write(chunk)
            sent += len(chunk)
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                pass
            conn = next(iter(state.http), None)
            if conn is not None and getattr(conn, "reading_paused", False):
                break
        assert conn is not None and conn.reading_paused, "the server kept reading"
        assert conn.transport.get_write_buffer_size() <= 2 * http.MAX_UNSENT
        # What one read of the socket held, at most (the parser takes a read whole).
        assert len(conn.pending) <= 300_000 // len(request)
        assert sent < 40_000_000, "40 MB of requests were all read"
        # Reading the answers lets it go on.
        status, body = await read_response(reader)
        assert (status, body) == (200, b"ok")
        writer.transport.abort()


# -- item 7: heads ------------------------------------------------------------------------------


def upgrade_head(extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /cable HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: actioncable-v1-json\r\n{extra}\r\n").encode()


async def status_of(server: Server, head: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head)
    line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(line.split()[1])


async def test_browser_sized_heads_are_accepted_and_larger_ones_get_431():
    async with serving() as (server, _):
        cookie = "Cookie: " + "; ".join(f"c{i}={'v' * 80}" for i in range(110)) + "\r\n"  # ~9.5 KB
        assert len(cookie) > 9000
        many = "".join(f"X-H{i}: {i}\r\n" for i in range(130))
        assert await status_of(server, upgrade_head(cookie)) == 101
        assert await status_of(server, upgrade_head(many)) == 101
        assert await status_of(server, b"GET /health HTTP/1.1\r\nHost: x\r\n" + cookie.encode() + b"\r\n") == 200
        near = "".join(f"X-H{i}: {i}\r\n" for i in range(240))
        assert await status_of(server, upgrade_head(near)) == 101
        over = "".join(f"X-H{i}: {i}\r\n" for i in range(300))
        assert await status_of(server, upgrade_head(over)) == 431
        huge = "X-Big: " + "v" * (70 << 10) + "\r\n"
        assert await status_of(server, upgrade_head(huge)) == 431
        assert await status_of(server, b"GET /health HTTP/1.1\r\nHost: x\r\n" + huge.encode() + b"\r\n") == 431


# -- items 3 and 6: WebSocket frames ------------------------------------------------------------


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    head = struct.pack("!BB", first, 0x80 | n) if n < 126 else struct.pack("!BBH", first, 0x80 | 126, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def ws_connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(upgrade_head())
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer


async def test_empty_continuation_frames_are_capped():
    async with serving() as (server, state):
        reader, writer = await ws_connect(server)
        writer.write(masked(0x1, b'{"comm', fin=False))
        empty = masked(0x0, b"", fin=False)
        # 30 MB of empty continuation frames (6 bytes each): the connection is closed long before.
        closed = False
        for _ in range(1000):
            try:
                writer.write(empty * 5000)
                await asyncio.wait_for(writer.drain(), 5)
            except (ConnectionError, TimeoutError):
                closed = True
                break
            if writer.transport.is_closing() or reader.at_eof():
                closed = True
                break
            conn = next(iter(state.connections), None)
            if conn is None or conn.closing:
                closed = True
                break
            assert conn.fragments is None or len(conn.fragments) <= ws.MAX_FRAGMENTS
        assert closed, "30 MB of empty continuation frames were accepted"
        data = await asyncio.wait_for(reader.read(1 << 20), 10)
        assert b"\x03\xf1" in data, "close 1009"  # 1009 = 0x03f1 in the close frame
        writer.transport.abort()


async def test_after_too_slow_nothing_more_is_queued_not_even_pongs():
    async with serving(WSOptions(max_pending=4096, write_timeout=30.0)) as (server, state):
        reader, writer = await ws_connect(server)
        conn = next(iter(state.connections))
        big = b"\x81\x7e\x20\x00" + b"x" * 8192  # one pre-framed 8 KiB text frame
        for _ in range(5000):  # the client reads nothing: kernel buffers fill, then ours
            conn.send_frame(big)
            if conn.too_slow:
                break
        assert conn.too_slow and conn.closing
        assert not conn.transport.is_reading(), "a client that does not read is not read either"
        before = conn.transport.get_write_buffer_size()
        ping = masked(0x9, b"p" * 100)
        for _ in range(100):  # what the loop would hand over if it kept reading
            conn.data_received(ping * 50)
        assert conn.transport.get_write_buffer_size() == before, "pongs were queued to a client that never reads"
        writer.transport.abort()
