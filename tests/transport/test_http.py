"""The HTTP handler API over real sockets (an in-process server on port 0)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pycable.broker.base import NullBroker
from pycable.node.controller import LocalController
from pycable.node.node import Node
from pycable.transport.http import HttpOptions, Request, Response, Router, ServerState, StreamResponse, StreamWriter
from pycable.transport.server import Server


@asynccontextmanager
async def serving(router: Router) -> AsyncIterator[Server]:
    node = Node(LocalController(noauth=True, public_streams=True), NullBroker())
    await node.start()
    server = Server(ServerState(node), "127.0.0.1", 0, HttpOptions(routes=router))
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown(1.0)
        await node.shutdown()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    n = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(n), 10) if n else b""
    return status, headers, body


async def echo(req: Request) -> Response:
    text = f"{req.method} {req.path} {req.query} {req.params} {req.remote} {req.header('X-Thing')}|".encode()
    return Response(200, text + req.body, [("X-Echo", "1")])


async def test_exact_and_prefix_routes_query_headers_and_keep_alive():
    async def ds(req: Request) -> Response:
        return Response(200, f"ds {req.path}".encode())

    async def ds_special(req: Request) -> Response:
        return Response(200, b"special")

    router = Router().add("/echo", echo).add("/ds/", ds, prefix=True).add("/ds/special/", ds_special, prefix=True)
    async with serving(router) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /echo?a=1&b=2&a=3&c= HTTP/1.1\r\nHost: x\r\nX-Thing: t1\r\nx-thing: t2\r\n"
                     b"Content-Length: 4\r\n\r\nbody")
        status, headers, body = await read_response(reader)
        assert status == 200 and headers["x-echo"] == "1"
        assert body == (b"POST /echo [('a', '1'), ('b', '2'), ('a', '3'), ('c', '')] "
                        b"{'a': '1', 'b': '2', 'c': ''} 127.0.0.1 t1, t2|body")
        # The same connection (keep-alive), two pipelined requests answered in order.
        writer.write(b"GET /ds/one HTTP/1.1\r\nHost: x\r\n\r\nGET /ds/special/two HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[2] == b"ds /ds/one"
        assert (await read_response(reader))[2] == b"special"
        writer.write(b"HEAD /ds/x HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await read_response_head_only(reader)
        assert status == 200 and headers["content-length"] == str(len(b"ds /ds/x")) and body == b""
        writer.write(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[0] == 404
        writer.write(b"GET /cable HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[0] == 426
        writer.close()


async def read_response_head_only(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return int(lines[0].split()[1]), headers, b""


async def test_a_handler_that_raises_is_500_and_the_connection_lives_on():
    async def broken(req: Request) -> Response:
        raise RuntimeError("bug")

    async with serving(Router().add("/broken", broken).add("/echo", echo)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[0] == 500
        writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_a_head_check_answers_before_the_body_is_read():
    seen: list[Request] = []

    def check(req: Request) -> Response | None:
        seen.append(req)
        assert req.body == b""  # called with the head only
        if req.header("authorization") != "Bearer k":
            return Response(401, b"no")
        return None

    async def handler(req: Request) -> Response:
        return Response(201, b"got %d" % len(req.body))

    async with serving(Router().add("/post", handler, check=check)) as server:
        # A 1 GiB body is announced and never sent: the 401 comes at once, then the close.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert (status, body, headers["connection"]) == (401, b"no", "close")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        # Without a body the connection is kept.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /post HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[0] == 401
        writer.write(b"POST /post HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: 3\r\n\r\nabc")
        assert (await read_response(reader))[:3:2] == (201, b"got 3")
        writer.close()
        assert len(seen) == 3


async def test_per_route_body_cap_and_expect_100_continue():
    async def handler(req: Request) -> Response:
        return Response(200, b"%d" % len(req.body))

    def bigger_for_admins(req: Request) -> Response | None:
        if req.header("x-admin"):
            req.max_body = 100
        return None

    router = Router().add("/small", handler, max_body=10, check=bigger_for_admins)
    async with serving(router) as server:
        # Content-Length over the cap: 413 at once.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
        assert (await read_response(reader))[0] == 413
        writer.close()
        # A chunked body is cut at the cap.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n")
        writer.write(b"8\r\n12345678\r\n0\r\n\r\n")
        assert (await read_response(reader))[0] == 413
        writer.close()
        # The head check raised the cap for this request; Expect: 100-continue gets its 100.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /small HTTP/1.1\r\nHost: x\r\nX-Admin: 1\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 50\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"x" * 50)
        assert (await read_response(reader))[:3:2] == (200, b"50")
        writer.close()


async def test_a_stream_writes_until_the_client_leaves():
    started, gone = asyncio.Event(), asyncio.Event()
    writers: list[StreamWriter] = []

    async def run(writer: StreamWriter) -> None:
        writers.append(writer)
        assert writer.write(b"data: one\n\n")
        started.set()
        await writer.closed.wait()
        assert not writer.write(b"late")
        gone.set()

    async def events(req: Request) -> StreamResponse:
        return StreamResponse(200, [("Content-Type", "text/event-stream")], run)

    async with serving(Router().add("/events", events)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Type: text/event-stream" in head
        assert b"Content-Length" not in head and b"Connection: close" in head
        assert await asyncio.wait_for(reader.readexactly(11), 10) == b"data: one\n\n"
        await asyncio.wait_for(started.wait(), 10)
        writers[0].write(b"data: two\n\n")
        assert await asyncio.wait_for(reader.readexactly(11), 10) == b"data: two\n\n"
        writer.close()  # the client goes: the writer learns it
        await asyncio.wait_for(gone.wait(), 10)


async def test_a_stream_ends_when_its_producer_returns():
    async def run(writer: StreamWriter) -> None:
        writer.write(b"all of it")

    async def handler(req: Request) -> StreamResponse:
        return StreamResponse(200, [], run)

    async with serving(Router().add("/once", handler)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /once HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 10)
        assert reply.endswith(b"\r\n\r\nall of it")
        writer.close()


async def test_a_slow_reader_is_cut_at_the_cap_with_last_words():
    """The client never reads: the server's buffer stops at the cap, then the stream closes."""
    cap = 64 << 10
    done = asyncio.Event()
    peak = 0
    slow_called: list[bool] = []

    async def run(writer: StreamWriter) -> None:
        nonlocal peak
        writer.on_slow = lambda: slow_called.append(writer.write(b"bye"))
        chunk = b"x" * 4096
        while not writer.closed.is_set():
            writer.raw_write(chunk)  # the fan-out's way: the socket's own write
            peak = max(peak, writer.transport.get_write_buffer_size())
            await asyncio.sleep(0)
        done.set()

    async def handler(req: Request) -> StreamResponse:
        return StreamResponse(200, [], run, max_buffer=cap)

    async with serving(Router().add("/firehose", handler)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=1 << 16)
        writer.transport.pause_reading()
        writer.write(b"GET /firehose HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(done.wait(), 60)
        assert peak <= cap + 4096
        assert slow_called == [True]  # on_slow ran before the close: its last words were written
        writer.close()


async def test_backpressure_streams_wait_for_drain():
    done = asyncio.Event()
    total = 4 << 20
    chunk = b"y" * (32 << 10)

    async def run(writer: StreamWriter) -> None:
        sent = 0
        while sent < total:
            assert writer.write(chunk)
            sent += len(chunk)
            await writer.drain()
            assert writer.transport.get_write_buffer_size() <= 64 << 10
        done.set()

    async def handler(req: Request) -> StreamResponse:
        return StreamResponse(200, [], run, max_buffer=1 << 20, backpressure=True)

    async with serving(Router().add("/big", handler)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        got = 0
        while got < total:
            data = await asyncio.wait_for(reader.read(1 << 16), 10)
            assert data
            got += len(data)
        await asyncio.wait_for(done.wait(), 10)
        writer.close()


async def test_graceful_shutdown_says_goodbye_on_streams():
    greeted = asyncio.Event()

    async def run(writer: StreamWriter) -> None:
        def bye() -> None:
            writer.write(b"goodbye")
            writer.close()

        writer.on_going_away = bye
        writer.write(b"hello ")
        greeted.set()
        await writer.closed.wait()

    async def handler(req: Request) -> StreamResponse:
        return StreamResponse(200, [], run)

    node = Node(LocalController(noauth=True, public_streams=True), NullBroker())
    await node.start()
    server = Server(ServerState(node), "127.0.0.1", 0, HttpOptions(routes=Router().add("/s", handler)))
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(greeted.wait(), 10)
    await server.shutdown(1.0)
    await node.shutdown()
    assert (await asyncio.wait_for(reader.read(), 10)).endswith(b"hello goodbye")
    writer.close()
