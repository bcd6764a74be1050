"""The SSE transport on an in-process server: identification, rejection, POST commands, CORS,
resume with Last-Event-ID, the gap signal, limits and shutdown."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from pycable.broker.base import HistoryPolicy
from pycable.broker.memory import MemoryBroker
from pycable.node.controller import LocalController
from pycable.protocol import messages
from pycable.protocol.broadcast import StreamMessage
from pycable.testing import InProcessServer
from pycable.transport.sse import SSEHandler, SSEOptions

SECRET = "s3cret"


@asynccontextmanager
async def sse_server(controller: LocalController | None = None, **options: Any) -> AsyncIterator[InProcessServer]:
    server = InProcessServer(
        controller=controller or LocalController(noauth=True, public_streams=True),
        broker=MemoryBroker(HistoryPolicy(100, 300.0), 300.0),
    )
    server.options.routes.add("/events", SSEHandler(server.state, SSEOptions(**options)), max_body=64 << 10)
    async with server:
        yield server


class Stream:
    """A raw HTTP client reading one event stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    @classmethod
    async def open(cls, server: InProcessServer, target: str, method: str = "GET", body: bytes = b"",
                   headers: dict[str, str] | None = None) -> Stream:
        reader, writer = await asyncio.open_connection(sock=await server.socket())
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        length = f"Content-Length: {len(body)}\r\n" if body else ""
        writer.write(f"{method} {target} HTTP/1.1\r\nHost: test\r\n{extra}{length}\r\n".encode() + body)
        self = cls(reader, writer)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in self.headers:
            self.body = await reader.readexactly(int(self.headers["content-length"]))
        return self

    async def event(self) -> dict[str, str]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\n\n"), 10)
        fields: dict[str, str] = {}
        for line in raw.decode().splitlines():
            if line:
                name, _, value = line.partition(": ")
                fields[name] = fields[name] + "\n" + value if name in fields else value
        return fields

    async def until(self, kind: str) -> dict[str, str]:
        while True:
            ev = await self.event()
            if ev.get("event", "message") == kind:
                return ev

    def close(self) -> None:
        self.writer.close()


async def test_welcome_confirm_and_live_messages_with_ids():
    async with sse_server() as server:
        s = await Stream.open(server, "/events?stream=chat")
        assert s.status == 200 and s.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert (await s.event())["event"] == "welcome"
        assert (await s.event())["event"] == "confirm_subscription"
        await server.node.handle_broadcast([StreamMessage("chat", '{"n":1}')])
        ev = await s.until("message")
        assert ev["data"] == '{"n":1}' and ev["id"] == f"1/{server.node.broker.epoch}/chat"
        s.close()
        await server.wait_for(lambda: not server.node.hub.sessions and not server.state.connections)


async def test_last_event_id_resumes_exactly_after_it():
    async with sse_server() as server:
        node = server.node
        await node.handle_broadcast([StreamMessage("chat", str(i)) for i in range(1, 6)])
        epoch = node.broker.epoch
        s = await Stream.open(server, "/events?stream=chat", headers={"Last-Event-ID": f"2/{epoch}/chat"})
        assert s.status == 200
        got = [(await s.until("message"))["data"] for _ in range(3)]
        assert got == ["3", "4", "5"]
        await node.handle_broadcast([StreamMessage("chat", "6")])
        assert (await s.until("message"))["data"] == "6"
        s.close()


async def test_a_gap_history_cannot_serve_is_signalled():
    async with sse_server() as server:
        await server.node.handle_broadcast([StreamMessage("chat", "1")])
        s = await Stream.open(server, "/events?stream=chat", headers={"Last-Event-ID": "1/another-epoch/chat"})
        assert s.status == 200
        ev = await s.until("reject_history")
        assert json.loads(ev["data"])["type"] == "reject_history"
        s.close()


async def test_unauthorized_and_rejected_get_401():
    controller = LocalController(jwt_secret=SECRET, jwt_param="jid", enforce_jwt=True)
    async with sse_server(controller) as server:
        s = await Stream.open(server, "/events?stream=chat")
        assert s.status == 401
        assert not server.state.connections and not server.node.hub.sessions
        s.close()
    async with sse_server(LocalController(noauth=True, public_streams=False)) as server:
        s = await Stream.open(server, "/events?stream=chat")  # public streams are off: rejected
        assert s.status == 401
        s.close()
        await server.wait_for(lambda: not server.node.hub.sessions)


async def test_jwt_in_the_query_or_header_identifies():
    from pycable.identity.jwt import encode_jwt

    token = encode_jwt(json.dumps({"user": "ann"}), SECRET, exp=time.time() + 60)
    controller = LocalController(jwt_secret=SECRET, jwt_param="jid", enforce_jwt=True, public_streams=True)
    async with sse_server(controller) as server:
        s = await Stream.open(server, f"/events?stream=chat&jid={quote(token)}")
        assert s.status == 200
        s.close()
        server.node.config.jwt_header = "x-jid"
        s = await Stream.open(server, "/events?stream=chat", headers={"X-JID": token})
        assert s.status == 200
        s.close()


async def test_post_jsonl_subscribes_several_and_data_is_the_full_payload():
    idents = [json.dumps({"channel": "$pubsub", "stream_name": n}) for n in ("a", "b")]
    body = b"\n".join(json.dumps({"command": "subscribe", "identifier": i}).encode() for i in idents) + b"\n"
    async with sse_server() as server:
        s = await Stream.open(server, "/events", method="POST", body=body)
        assert s.status == 200
        assert (await s.event())["event"] == "welcome"
        confirmed = [json.loads((await s.until("confirm_subscription"))["data"])["identifier"] for _ in idents]
        assert confirmed == idents
        await server.node.handle_broadcast([StreamMessage("b", '{"x":2}')])
        msg = json.loads((await s.until("message"))["data"])
        assert msg["identifier"] == idents[1] and msg["message"] == {"x": 2}
        s.close()
        bad = await Stream.open(server, "/events", method="POST", body=b"not json\n")
        assert bad.status == 400
        bad.close()


async def test_bad_requests():
    async with sse_server() as server:
        for target, status in (("/events", 400), ("/events?stream=x&history_since=soon", 400)):
            s = await Stream.open(server, target)
            assert s.status == status, target
            s.close()
        s = await Stream.open(server, "/events?stream=x", method="DELETE")
        assert s.status == 405
        s.close()


async def test_cors_follows_allowed_origins():
    async with sse_server(allowed_origins=("example.com",)) as server:
        s = await Stream.open(server, "/events", method="OPTIONS", headers={"Origin": "https://example.com"})
        assert s.status == 200 and s.headers["access-control-allow-origin"] == "https://example.com"
        assert "GET" in s.headers["access-control-allow-methods"]
        s.close()
        s = await Stream.open(server, "/events?stream=x", headers={"Origin": "https://evil.test"})
        assert s.status == 403
        s.close()


async def test_raw_mode_sends_data_only():
    async with sse_server() as server:
        s = await Stream.open(server, "/events?stream=chat&raw=true")
        assert s.status == 200
        await server.node.handle_broadcast([StreamMessage("chat", "hello")])
        assert await s.event() == {"data": "hello", "id": f"1/{server.node.broker.epoch}/chat"}
        s.close()


async def test_max_conn_counts_event_streams():
    async with sse_server(max_conn=1) as server:
        first = await Stream.open(server, "/events?stream=x")
        second = await Stream.open(server, "/events?stream=x")
        assert (first.status, second.status) == (200, 503)
        first.close()
        second.close()


async def test_pings_flow():
    async with sse_server(ping_interval=0.1) as server:
        s = await Stream.open(server, "/events?stream=x")
        ping = await s.until("ping")
        assert isinstance(json.loads(ping["data"])["message"], int)
        s.close()


async def test_a_remote_disconnect_without_reconnect_ends_the_stream_with_a_retry():
    async with sse_server() as server:
        s = await Stream.open(server, "/events?stream=x")
        await s.until("confirm_subscription")
        (session,) = server.node.hub.sessions.values()
        session.send(messages.disconnect("remote", False))  # as a remote disconnect does
        session.close(1000, "Closed remotely")
        ev = await s.until("disconnect")
        assert ev["retry"] == "31536000000"
        assert await asyncio.wait_for(s.reader.read(), 10) == b""
        s.close()


async def test_a_slow_reader_is_cut_with_too_slow():
    async with sse_server(max_pending=4096) as server:
        s = await Stream.open(server, "/events?stream=x")
        await s.until("confirm_subscription")
        s.writer.transport.pause_reading()
        big = json.dumps("x" * 8000)
        conn = next(iter(server.state.connections))
        for _ in range(2000):
            await server.node.handle_broadcast([StreamMessage("x", big)])
            if getattr(conn, "closing", False):
                break
            await asyncio.sleep(0)
        assert conn.closing  # type: ignore[attr-defined]
        await server.wait_for(lambda: not server.state.connections)
        s.writer.transport.resume_reading()
        rest = await asyncio.wait_for(s.reader.read(), 10)
        assert b'"reason":"too_slow"' in rest or rest == b""  # a reset may drop the last words
        s.close()


async def test_graceful_shutdown_says_server_restart():
    server = InProcessServer(broker=MemoryBroker(HistoryPolicy(100, 300.0), 300.0))
    server.options.routes.add("/events", SSEHandler(server.state, SSEOptions()))
    await server.start()
    s = await Stream.open(server, "/events?stream=x")
    await s.until("confirm_subscription")
    await server.stop()
    ev = await s.until("disconnect")
    assert json.loads(ev["data"]) == {"type": "disconnect", "reason": "server_restart", "reconnect": True}
    s.close()
