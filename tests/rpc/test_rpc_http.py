"""HttpController (spec §6.6) against a scripted HTTP server: request shape, headers,
answer mapping, retries, circuit breaker and connection reuse."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from pycable.config import Config
from pycable.exceptions import ConfigError, RPCError
from pycable.identity.signed import derive_key
from pycable.rpc.barrier import (
    DEADLINE_EXCEEDED,
    INVALID_ARGUMENT,
    UNAUTHENTICATED,
    UNAVAILABLE,
    UNKNOWN,
    Barrier,
    CallError,
)
from pycable.rpc.base import FAILURE, SUCCESS, Env
from pycable.rpc.breaker import CircuitBreaker
from pycable.rpc.http import HttpController, from_config


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    conn: int

    @property
    def json(self):
        return json.loads(self.body)


Handler = Callable[[Request], Awaitable[bytes | None]]


def http_response(status: int, body: bytes | dict, extra: str = "") -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(raw)}\r\n{extra}\r\n".encode() + raw


def ok(body: dict) -> bytes:
    return http_response(200, body, "Content-Type: application/json\r\n")


@dataclass
class FakeApp:
    """An HTTP server that records requests and answers with ``handler(request)``
    (``None`` closes the connection without answering)."""

    handler: Handler
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    handlers: set[asyncio.Task] = field(default_factory=set)

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/_anycable"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                req = Request(method, path, headers, body, conn)
                self.requests.append(req)
                answer = await self.handler(req)
                if answer is None:
                    writer.transport.abort()
                    return
                writer.write(answer)
                await writer.drain()
        finally:
            writer.close()
            self.handlers.discard(task)

    async def close(self) -> None:
        """Stop listening and end every connection handler (their sockets are closed)."""
        if self.server is not None:
            self.server.close()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)


def script(*answers: bytes | None) -> Handler:
    """Answer with each of *answers* in turn, then repeat the last one."""
    queue = list(answers)

    async def handler(req: Request) -> bytes | None:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler


@pytest.fixture
async def make():
    apps: list[FakeApp] = []
    controllers: list[HttpController] = []

    async def factory(handler: Handler, **kw) -> tuple[HttpController, FakeApp]:
        app = FakeApp(handler)
        url = await app.start()
        kw.setdefault("barrier", Barrier(4, 2.0, 3.0))
        ctl = HttpController(url, **kw)
        await ctl.start()
        apps.append(app)
        controllers.append(ctl)
        return ctl, app

    yield factory
    for ctl in controllers:
        await ctl.shutdown()
    for app in apps:
        await app.close()


def env(**kw) -> Env:
    base = dict(url="ws://example.com/cable?user=1", headers={"cookie": "a=1", "REMOTE_ADDR": "10.0.0.1"}, sid="sid-1")
    base.update(kw)
    return Env(**base)


class TestRequests:
    async def test_connect_body_headers_and_path(self, make):
        """POST <rpc_host>/connect, snake_case JSON, empty fields omitted, no istate."""
        ctl, app = await make(
            script(ok({"status": 1, "identifiers": '{"u":1}', "transmissions": ['{"type":"welcome"}']})), secret="s3"
        )
        result = await ctl.connect(env(cstate={"k": "v"}, istate={"x": "y"}))
        (req,) = app.requests
        assert (req.method, req.path) == ("POST", "/_anycable/connect")
        assert req.json == {
            "env": {
                "url": "ws://example.com/cable?user=1",
                "headers": {"cookie": "a=1", "REMOTE_ADDR": "10.0.0.1"},
                "cstate": {"k": "v"},
            }
        }
        assert req.headers["content-type"] == "application/json"
        assert req.headers["authorization"] == "Bearer s3"
        assert req.headers["x-anycable-meta-sid"] == "sid-1"
        assert req.headers["x-anycable-meta-protov"] == "v1"
        assert (result.status, result.identifiers, result.transmissions) == (SUCCESS, '{"u":1}', ['{"type":"welcome"}'])

    async def test_command_body(self, make):
        ctl, app = await make(script(ok({"status": 1})))
        await ctl.command("message", '{"channel":"C"}', '{"u":1}', '{"action":"x"}', env(istate={"k": "v"}))
        assert app.requests[0].path == "/_anycable/command"
        assert app.requests[0].json == {
            "command": "message",
            "identifier": '{"channel":"C"}',
            "connection_identifiers": '{"u":1}',
            "data": '{"action":"x"}',
            "env": {
                "url": "ws://example.com/cable?user=1",
                "headers": {"cookie": "a=1", "REMOTE_ADDR": "10.0.0.1"},
                "istate": {"k": "v"},
            },
        }
        assert "authorization" not in app.requests[0].headers, "no secret: no Authorization header"

    async def test_subscribe_omits_empty_data(self, make):
        ctl, app = await make(script(ok({"status": 1})))
        await ctl.command("subscribe", "id", "", "", env(headers={}))
        assert app.requests[0].json == {
            "command": "subscribe",
            "identifier": "id",
            "env": {"url": "ws://example.com/cable?user=1"},
        }

    async def test_disconnect_and_restore_bodies(self, make):
        ctl, app = await make(script(ok({"status": 1})), restore=True)
        e = env(istate={"id1": '{"a":"1"}'})
        await ctl.disconnect('{"u":1}', ["id1"], e)
        await ctl.restore('{"u":1}', ["id1"], e, "old-sid")
        disconnect, restore = app.requests
        assert disconnect.path == "/_anycable/disconnect"
        assert disconnect.json["identifiers"] == '{"u":1}'
        assert disconnect.json["subscriptions"] == ["id1"]
        assert disconnect.json["env"]["istate"] == {"id1": '{"a":"1"}'}
        assert restore.path == "/_anycable/restore"
        assert restore.json == {**disconnect.json, "sid": "sid-1", "restored_sid": "old-sid"}

    async def test_restore_is_off_without_the_flag(self, make):
        ctl, app = await make(script(ok({"status": 1})))
        await ctl.restore("ids", [], env(), "old")
        assert app.requests == []

    def test_the_secret_is_derived_from_secret(self):
        config = Config(rpc_host="http://localhost:3000/_anycable", secret="qwerty")
        assert from_config(config).secret == derive_key("qwerty", "rpc-cable")
        config = Config(rpc_host="http://localhost:3000/_anycable", secret="qwerty", http_rpc_secret="explicit")
        assert from_config(config).secret == "explicit"
        assert from_config(Config(rpc_host="http://h/x")).secret == ""

    def test_timeouts_from_config(self):
        ctl = from_config(Config(rpc_host="http://h/x"))
        assert (ctl.barrier.request_timeout, ctl.barrier.command_timeout, ctl.barrier.concurrency) == (3.0, 3.0, 28)
        ctl = from_config(
            Config(rpc_host="http://h/x", rpc_request_timeout=500, rpc_command_timeout=1000, rpc_concurrency=5)
        )
        assert (ctl.barrier.request_timeout, ctl.barrier.command_timeout, ctl.barrier.concurrency) == (0.5, 1.0, 5)

    def test_a_grpc_host_is_refused(self):
        with pytest.raises(ConfigError):
            from_config(Config(rpc_host="localhost:50051", rpc_impl="http"))


class TestAnswers:
    async def test_command_answer_mapping(self, make):
        answer = {
            "status": 1,
            "disconnect": True,
            "stop_streams": True,
            "streams": ["a"],
            "stopped_streams": ["b"],
            "transmissions": ["t1", "t2"],
            "env": {"cstate": {"c": "1"}, "istate": {"i": ""}},
            "presence": {"type": "join", "id": "42", "info": '{"name":"Sasha"}'},
        }
        ctl, _ = await make(script(ok(answer)))
        r = await ctl.command("message", "id", "ids", "{}", env())
        assert (r.status, r.disconnect, r.stop_streams, r.streams, r.stopped_streams, r.transmissions) == (
            SUCCESS,
            True,
            True,
            ["a"],
            ["b"],
            ["t1", "t2"],
        )
        assert (r.cstate, r.istate) == ({"c": "1"}, {"i": ""})
        assert r.presence == ("join", "42", '{"name":"Sasha"}')

    async def test_enum_names_and_missing_fields(self, make):
        """Proto3 JSON allows enum names; absent fields are their defaults; nulls are tolerated."""
        ctl, _ = await make(script(ok({"status": "FAILURE", "transmissions": None, "env": {"cstate": None}})))
        r = await ctl.command("subscribe", "id", "ids", "", env())
        assert (r.status, r.transmissions, r.streams, r.cstate) == (FAILURE, [], [], {})

    async def test_failure_keeps_transmissions_and_closes_as_auth_failed(self, make):
        ctl, _ = await make(script(ok({"status": 2, "transmissions": ['{"type":"disconnect"}'], "error_msg": "nope"})))
        r = await ctl.connect(env())
        assert (r.status, r.transmissions, r.error) == (FAILURE, ['{"type":"disconnect"}'], "Auth Failed")

    @pytest.mark.parametrize("body", [{"status": 0, "error_msg": "boom", "transmissions": ["x"]}, {}])
    async def test_error_status_raises_and_drops_transmissions(self, make, body):
        ctl, app = await make(script(ok(body)))
        with pytest.raises(RPCError, match="Application error"):
            await ctl.connect(env())
        assert len(app.requests) == 1, "an ERROR answer is not retried"

    async def test_non_json_answer_is_an_error(self, make):
        ctl, _ = await make(script(http_response(200, b"<html>")))
        with pytest.raises(RPCError, match="not JSON"):
            await ctl.connect(env())

    @pytest.mark.parametrize(
        ("status", "code"),
        [
            (401, UNAUTHENTICATED),
            (400, INVALID_ARGUMENT),
            (422, INVALID_ARGUMENT),
            (500, UNKNOWN),
            (503, UNKNOWN),
            (404, UNKNOWN),
        ],
    )
    async def test_http_status_mapping(self, make, status, code):
        """Non-200 answers map to gRPC codes (§6.6) and none of them is retried."""
        ctl, app = await make(script(http_response(status, b"nope")))
        with pytest.raises(CallError) as err:
            await ctl.command("message", "id", "ids", "{}", env())
        assert err.value.code == code
        assert len(app.requests) == 1

    async def test_chunked_answer(self, make):
        chunked = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{"statu\r\n6\r\ns":1}\n\r\n0\r\n\r\n'
        ctl, _ = await make(script(chunked))
        assert (await ctl.command("subscribe", "id", "ids", "", env())).status == SUCCESS

    async def test_close_delimited_answer(self):
        """No length and not chunked: the body ends when the app closes the connection."""

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"status":2}')
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ctl = HttpController(f"http://127.0.0.1:{port}/x", barrier=Barrier(2, 2.0, 1.0))
        try:
            assert (await ctl.command("subscribe", "id", "ids", "", env())).status == FAILURE
        finally:
            await ctl.shutdown()
            server.close()


class TestTransport:
    async def test_keep_alive_reuses_one_connection(self, make):
        ctl, app = await make(script(ok({"status": 1})))
        for _ in range(5):
            await ctl.command("message", "id", "ids", "{}", env())
        assert len(app.requests) == 5
        assert app.connections == 1

    async def test_a_connection_the_app_closed_is_not_reused(self, make):
        ctl, app = await make(script(http_response(200, {"status": 1}, "Connection: close\r\n")))
        for _ in range(3):
            await ctl.command("message", "id", "ids", "{}", env())
        assert app.connections == 3

    async def test_network_errors_are_retried_as_unavailable(self, make):
        """A connection dropped without an answer is UNAVAILABLE: retried, then it succeeds."""
        ctl, app = await make(script(None, None, ok({"status": 1})))
        result = await ctl.command("message", "id", "ids", "{}", env())
        assert result.status == SUCCESS
        assert len(app.requests) == 3
        assert ctl.barrier.stats["retries"] == 2

    async def test_connection_refused_fails_after_the_command_timeout(self):
        app = FakeApp(script(ok({"status": 1})))
        url = await app.start()
        await app.close()
        await app.server.wait_closed()
        ctl = HttpController(url, barrier=Barrier(4, 1.0, 0.35))
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(CallError) as err:
                await ctl.connect(env())
            elapsed = loop.time() - started
        finally:
            await ctl.shutdown()
        assert err.value.code == UNAVAILABLE
        assert 0.3 <= elapsed < 1.5
        assert ctl.barrier.stats["retries"] >= 2

    async def test_a_slow_app_hits_the_request_timeout(self, make):
        gate = asyncio.Event()

        async def slow(req: Request) -> bytes | None:
            await gate.wait()
            return ok({"status": 1})

        ctl, _ = await make(slow, barrier=Barrier(4, 0.1, 3.0))
        try:
            with pytest.raises(CallError) as err:
                await ctl.connect(env())
            assert err.value.code == DEADLINE_EXCEEDED
        finally:
            gate.set()

    async def test_the_breaker_opens_after_repeated_network_errors(self, make):
        """10 refused requests (≥ 80 % failures) open the breaker: calls then fail at once."""
        ctl, app = await make(script(None), barrier=Barrier(4, 1.0, 0.0), breaker=CircuitBreaker())
        for _ in range(10):
            with pytest.raises(CallError):
                await ctl.command("message", "id", "ids", "{}", env())
        assert len(app.requests) == 10
        with pytest.raises(RPCError, match="temporarily unavailable"):
            await ctl.command("message", "id", "ids", "{}", env())
        assert len(app.requests) == 10, "no request while the breaker is open"

    async def test_http_errors_do_not_open_the_breaker(self, make):
        ctl, app = await make(script(http_response(500, b"x")), breaker=CircuitBreaker())
        for _ in range(12):
            with pytest.raises(CallError):
                await ctl.command("message", "id", "ids", "{}", env())
        assert len(app.requests) == 12
        assert ctl.breaker.state == "closed"
