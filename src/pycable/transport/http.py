"""HTTP/1.1 front door (httptools): the WebSocket upgrade at ``--path``, health, and the
broadcast endpoint. Keep-alive is supported; request bodies are capped."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

import httptools
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from pycable.node.node import new_sid
from pycable.node.session import Session
from pycable.protocol import constants as c
from pycable.rpc.base import Env
from pycable.transport.ws import WebSocketConnection, WSOptions

if TYPE_CHECKING:
    from pycable.node.node import Node

__all__ = ["HttpProtocol", "HttpOptions", "Route"]

log = logging.getLogger("pycable.http")

#: An HTTP route: (method, headers (lower-cased names), body) -> (status, body).
Route = Callable[[str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]]

MAX_BODY = 16 << 20
MAX_HEAD = 64 << 10
#: Seconds a connection may take to send a request head (from accept, or after the previous
#: response): a client that opens a socket and sends nothing, or dribbles, is closed.
HEAD_TIMEOUT = 30.0

_REASONS = {
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    426: "Upgrade Required",
    503: "Service Unavailable",
}


@dataclass(slots=True)
class HttpOptions:
    ws_paths: frozenset[str] = frozenset({"/cable"})
    routes: dict[str, Route] = field(default_factory=dict)
    allowed_origins: tuple[str, ...] = ()
    max_conn: int = 0
    max_message_size: int = 65536
    headers: tuple[str, ...] = ("cookie",)
    proxy_cookies: tuple[str, ...] = ()
    version: str = ""
    ws: WSOptions = field(default_factory=WSOptions)
    scheme: str = "http"  # the RPC env url: http(s)://host/path as Go sends it (spec §1.1)
    jwt_header: str = ""


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """``--allowed_origins``: host match, ``*suffix`` wildcard, empty list allows all (§1.1)."""
    if not allowed:
        return True
    if not origin:
        return False
    host = (urlsplit(origin).hostname or origin).lower()
    for entry in allowed:
        entry = entry.lower()
        if entry.startswith("*") and host.endswith(entry[1:]):
            return True
        if host == entry:
            return True
    return False


def _select_subprotocol(proto: ServerProtocol, offered: object) -> Subprotocol | None:
    offered_list = list(offered)  # type: ignore[call-overload]
    for choice in (c.ACTIONCABLE_V1_EXT_JSON, c.ACTIONCABLE_V1_JSON):
        if choice in offered_list:
            return Subprotocol(choice)
    return None


def _filter_cookies(cookie: str, keep: tuple[str, ...]) -> str:
    parts = [p.strip() for p in cookie.split(";")]
    return "; ".join(p for p in parts if p.split("=", 1)[0] in keep)


class HttpProtocol(asyncio.Protocol):
    """One accepted TCP connection until it upgrades (or for its HTTP requests)."""

    def __init__(self, server: ServerState, options: HttpOptions) -> None:
        self.server = server
        self.options = options
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.head_size = 0
        self.busy = False
        self.pending: list[tuple[str, str, dict[str, str], bytes, bool]] = []
        self.upgraded = False
        #: Raw bytes of the request head being parsed (an upgrade request is re-read by
        #: websockets); bodies are never kept here.
        self.raw = bytearray()
        #: The current request's head is complete: what follows is body, not kept in ``raw``.
        self.in_body = False
        self.too_large = False
        self.head_timer: asyncio.TimerHandle | None = None

    # -- asyncio ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.server.http.add(self)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.http.discard(self)
        self._cancel_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self.head_timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timeout(self) -> None:
        self.head_timer = None
        if self.transport is not None and not self.upgraded:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        kept = not self.in_body
        if kept:
            self.raw += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if not kept:  # an upgrade pipelined behind a request body: not supported
                self._respond(400, b"malformed upgrade request", close=True)
                return
            offset = upgrade.args[0] if upgrade.args else len(data)
            head = bytes(self.raw[: len(self.raw) - len(data) + offset])
            self._upgrade(head, data[offset:])
        except httptools.HttpParserError as exc:
            if self.too_large:
                self._respond(413, b"request body too large", close=True)
            else:
                self._respond(400, f"malformed HTTP request: {exc}".encode(), close=True)

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body, self.body_size, self.head_size = b"", [], [], 0, 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD:
            raise httptools.HttpParserError("request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value)
        if self.head_size > MAX_HEAD:
            raise httptools.HttpParserError("request head too large")
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.in_body = True
        self._cancel_head_timer()

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > MAX_BODY:  # answered 413 and closed at once, not read to the end
            self.too_large = True
            raise httptools.HttpParserError("request body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.parser.should_upgrade():
            return  # handled by HttpParserUpgrade
        method = self.parser.get_method().decode()
        path = urlsplit(self.url.decode("latin-1")).path
        headers = {k.lower(): v for k, v in self.headers}
        keep_alive = self.parser.should_keep_alive()
        self.raw.clear()  # requests are not pipelined into an upgrade; keep the buffer small
        self.in_body = False
        self.pending.append((method, path, headers, b"".join(self.body), keep_alive))
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._serve())

    # -- plain HTTP -------------------------------------------------------------------------

    async def _serve(self) -> None:
        try:
            while self.pending:
                method, path, headers, body, keep_alive = self.pending.pop(0)
                route = self.options.routes.get(path)
                if path in self.options.ws_paths:
                    status, out = 426, b"WebSocket upgrade required"
                elif route is None:
                    status, out = 404, b"not found"
                else:
                    try:
                        status, out = await route(method, headers, body)
                    except Exception:
                        log.exception("HTTP handler failed for %s", path)
                        status, out = 500, b"internal error"
                self._respond(status, out, close=not keep_alive, head=method == "HEAD")
        finally:
            self.busy = False
            if self.transport is not None and not self.transport.is_closing():
                self._arm_head_timer()  # the next request on this connection

    def _respond(self, status: int, body: bytes, close: bool = False, head: bool = False) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        ctype = "application/json" if body[:1] in (b"{", b"[") else "text/plain; charset=utf-8"
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            f"Content-Length: {len(body)}",
            f"Content-Type: {ctype}",
        ]
        if close:
            lines.append("Connection: close")
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body))
        if close:
            transport.close()

    # -- WebSocket upgrade --------------------------------------------------------------------

    def _upgrade(self, head: bytes, rest: bytes) -> None:
        assert self.transport is not None
        opts, server = self.options, self.server
        split = urlsplit(self.url.decode("latin-1"))
        headers = Headers(self.headers)
        if split.path not in opts.ws_paths:
            self._respond(404, b"not found", close=True)
            return
        if not origin_allowed(headers.get("Origin"), opts.allowed_origins):
            self._respond(403, b"origin not allowed", close=True)
            return
        if server.shutting_down or (opts.max_conn and len(server.connections) >= opts.max_conn):
            self._respond(503, b"too many connections", close=True)
            return
        proto = ServerProtocol(
            subprotocols=[Subprotocol(p) for p in c.SUBPROTOCOLS],
            select_subprotocol=_select_subprotocol,
            max_size=opts.max_message_size,
        )
        proto.receive_data(head)
        events = proto.events_received()
        if not events or not isinstance(events[0], Request):
            self._respond(400, b"malformed upgrade request", close=True)
            return
        response = proto.accept(events[0])
        if opts.version:
            response.headers["X-AnyCable-Version"] = opts.version
        proto.send_response(response)
        for chunk in proto.data_to_send():
            self.transport.write(chunk)
        if response.status_code != 101:
            self.transport.close()
            return
        self.upgraded = True
        self._cancel_head_timer()
        self.server.http.discard(self)
        subprotocol = response_subprotocol(proto)
        # A fresh protocol in the OPEN state for the connection's life: the handshake one keeps
        # the parsed upgrade request alive in its suspended parser (≈ 2.6 KB per connection).
        proto = ServerProtocol(state=OPEN, max_size=opts.max_message_size)
        self._start_session(proto, subprotocol, split.query, headers, rest)

    def _start_session(
        self, proto: ServerProtocol, subprotocol: str | None, query_string: str, headers: Headers, rest: bytes
    ) -> None:
        assert self.transport is not None
        opts, node = self.options, self.server.node
        query = dict(parse_qsl(query_string))
        ext = subprotocol == c.ACTIONCABLE_V1_EXT_JSON
        interval = opts.ws.ping_interval
        if "pi" in query:
            try:
                interval = max(0.1, float(query["pi"]))
            except ValueError:
                pass
        precision = query.get("ptp", opts.ws.ping_precision)
        if precision not in ("s", "ms", "ns"):
            precision = opts.ws.ping_precision
        pong_timeout = opts.ws.pong_timeout if (ext or opts.ws.pong_all) else 0.0
        conn = WebSocketConnection(
            self.transport, proto, node, opts.ws, interval, precision, pong_timeout, self.server.lost
        )
        self.server.connections.add(conn)
        self.transport.set_protocol(conn)
        sid = headers.get("X-Request-ID") or new_sid()
        env = self._env(headers, query, sid)
        session = Session(sid, conn, env, ext=ext, resumable=node.resumable(ext))
        conn.session = session
        prev_sid = headers.get("X-AnyCable-Restore-SID") or query.get("sid", "")
        if rest:
            conn.data_received(rest)
        conn.auth_task = node._spawn(_authenticate(node, conn, session, prev_sid))

    def _env(self, headers: Headers, query: dict[str, str], sid: str) -> Env:
        opts = self.options
        host = headers.get("Host", "localhost")
        url = f"{opts.scheme}://{host}{self.url.decode('latin-1')}"
        picked: dict[str, str] = {}
        for name in opts.headers:
            value = headers.get(name)
            if value is not None:
                if name == "cookie" and opts.proxy_cookies:
                    value = _filter_cookies(value, opts.proxy_cookies)
                picked[name] = value
        peer = self.transport.get_extra_info("peername") if self.transport else None
        remote = peer[0] if isinstance(peer, tuple) else ""
        picked["REMOTE_ADDR"] = remote
        offered = tuple(
            p.strip() for v in headers.get_all("Sec-WebSocket-Protocol") for p in v.split(",") if p.strip()
        )
        if opts.jwt_header:  # spec §1.1: plus the JWT header, if JWT is enabled
            token = headers.get(opts.jwt_header)
            if token is not None:
                picked[opts.jwt_header] = token
        return Env(url, picked, sid, remote, {}, {}, query, offered)


def response_subprotocol(proto: ServerProtocol) -> str | None:
    handshake = getattr(proto, "handshake_exc", None)
    if handshake is not None:
        return None
    return proto.subprotocol


async def _authenticate(node: Node, conn: WebSocketConnection, session: Session, prev_sid: str) -> None:
    try:
        ok = await node.authenticate(session, prev_sid)
    except Exception:
        log.exception("authentication crashed sid=%s", session.sid)
        conn.close(c.CLOSE_INTERNAL_ERROR, "Auth Error")
        return
    finally:
        conn.auth_task = None  # nothing to cancel any more; do not keep the task per connection
    if ok:
        conn.start_commands()


class ServerState:
    """Shared by every connection of one server: the node, live connections, shutdown flag."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.connections: set[WebSocketConnection] = set()
        self.http: set[HttpProtocol] = set()
        self.shutting_down = False
        self.started = time.time()
        #: Set when shutting down and the last connection is gone.
        self.drained = asyncio.Event()

    def lost(self, conn: WebSocketConnection) -> None:
        self.connections.discard(conn)
        if self.shutting_down and not self.connections:
            self.drained.set()
