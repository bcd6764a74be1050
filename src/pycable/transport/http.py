"""HTTP/1.1 front door (httptools): routes, streaming responses and the WebSocket upgrade.

Handler API
-----------
A route maps a path to an async handler that takes a :class:`Request` and returns a
:class:`Response` (status, headers, body) or a :class:`StreamResponse`::

    async def hello(req: Request) -> Response:
        return Response(200, b"hi " + req.param("name", "you").encode())

    router = Router()
    router.add("/hello", hello)                       # exact path
    router.add("/ds/", streams, prefix=True)          # any path under /ds/ (longest prefix wins)
    router.add("/_broadcast", post, check=key_check, max_body=1 << 20)

* **Request**: ``method``, ``path``, raw ``target``, ``query`` (every ``(name, value)`` pair
  in order) and ``params`` (name → first value), ``headers`` (lower-cased names; repeated
  headers joined with ``", "``), ``raw_headers`` (as received), ``body`` and ``remote`` (the
  peer's address).
* **Head check** (``check=``): called with the request as soon as its head is complete,
  before any body byte is read (``body`` is still empty). It may return a Response to answer
  at once (a 401, a 413: the body is then never read and the connection closes), and may set
  ``req.max_body`` for this request (the route's ``max_body`` is the default; 16 MiB unless
  given). A ``Content-Length`` over the cap is answered 413 at once; a chunked body is cut at
  the cap with a 413. ``Expect: 100-continue`` gets its interim ``100 Continue`` after the
  check passed (not when the request is pipelined behind one still being served).
* **Streaming** (:class:`StreamResponse`): the head is sent, then ``run(writer)`` produces the
  body through a :class:`StreamWriter` until it returns or the client is gone; the body is
  delimited by the connection's close (``Connection: close``, RFC 9112 §6.3), so the bytes
  written are exactly the bytes on the wire (one encoding can be written to many clients).
  ``writer.write(data)`` never blocks. Without ``backpressure`` the socket's unsent bytes are
  capped at ``max_buffer``: past it the client is too slow, ``writer.on_slow`` (if set) writes
  its last words and the connection closes. With ``backpressure=True`` the producer awaits
  ``writer.drain()`` (the cap still holds, as a hard limit). ``writer.closed`` is an event set
  once the client is gone or the stream was closed (``run`` is called even then: a client
  that left while the handler ran, a HEAD request), so that it can clean up. On graceful
  shutdown the server calls ``writer.on_going_away`` (if set) or closes the stream.

Keep-alive and pipelining are supported (answers go out in order); request heads must arrive
within :data:`HEAD_TIMEOUT` seconds; heads are capped at 64 KiB.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

import httptools
from websockets.datastructures import Headers
from websockets.http11 import Request as WSRequest
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from pycable.node.port import Handshake, NodePort
from pycable.protocol import constants as c
from pycable.transport._sockets import rearm, reset
from pycable.transport.ws import WebSocketConnection, WSOptions

__all__ = [
    "HeadCheck",
    "Handler",
    "HttpOptions",
    "HttpProtocol",
    "LiveConnection",
    "Request",
    "Response",
    "Route",
    "Router",
    "ServerState",
    "StreamResponse",
    "StreamWriter",
]

log = logging.getLogger("pycable.http")

MAX_BODY = 16 << 20
#: Request heads: at most this many bytes and headers (real browsers with many cookies
#: send heads of tens of KB); beyond either, 431.
MAX_HEAD = 64 << 10
MAX_HEADERS = 256
#: Seconds a request body may take to arrive once its head is complete: a body that stalls
#: is answered 408 and closed.
BODY_TIMEOUT = 30.0
#: Unsent response bytes (pipelined requests whose answers the client does not read) above
#: which the connection stops reading until they drain; also the most requests waiting.
MAX_UNSENT = 64 << 10
MAX_PIPELINED = 32
#: Seconds a connection may take to send a request head (from accept, or after the previous
#: response): a client that opens a socket and sends nothing, or dribbles, is closed.
HEAD_TIMEOUT = 30.0
#: Seconds a closing stream gets to flush before its socket is reset.
STREAM_CLOSE_TIMEOUT = 2.0
#: The transport's high-water mark for a ``backpressure`` stream (``drain`` waits under it).
DRAIN_HIGH = 64 << 10

_REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    413: "Payload Too Large",
    414: "URI Too Long",
    422: "Unprocessable Entity",
    426: "Upgrade Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(slots=True, eq=False)
class Request:
    """One HTTP request. ``body`` is empty until the whole body is read (head checks)."""

    method: str
    target: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    remote: str
    body: bytes = b""
    #: The body cap for this request (a head check may change it).
    max_body: int = MAX_BODY
    #: Query parameters by name, the first value of each.
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.params:
            for name, value in self.query:
                self.params.setdefault(name, value)

    @property
    def query_string(self) -> str:
        return self.target.partition("?")[2]

    def header(self, name: str, default: str = "") -> str:
        """A header by (case-insensitive) name."""
        return self.headers.get(name.lower(), default)

    def param(self, name: str, default: str = "") -> str:
        return self.params.get(name, default)


@dataclass(slots=True)
class Response:
    """A complete response; ``Content-Length`` is added, ``Content-Type`` guessed if absent."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class StreamResponse:
    """A response whose body ``run`` writes through a :class:`StreamWriter` (see module doc)."""

    status: int
    headers: list[tuple[str, str]]
    run: Callable[[StreamWriter], Awaitable[None]]
    max_buffer: int = 1 << 20
    backpressure: bool = False


Handler = Callable[[Request], Awaitable["Response | StreamResponse"]]
HeadCheck = Callable[[Request], "Response | None"]


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    check: HeadCheck | None = None
    max_body: int = MAX_BODY


class Router:
    """Routes by exact path, then by the longest matching prefix."""

    def __init__(self) -> None:
        self.exact: dict[str, Route] = {}
        self.prefixes: list[tuple[str, Route]] = []

    def add(
        self,
        path: str,
        handler: Handler,
        *,
        prefix: bool = False,
        check: HeadCheck | None = None,
        max_body: int = MAX_BODY,
    ) -> Router:
        route = Route(handler, check, max_body)
        if prefix:
            self.prefixes = [(p, r) for p, r in self.prefixes if p != path] + [(path, route)]
            self.prefixes.sort(key=lambda item: -len(item[0]))
        else:
            self.exact[path] = route
        return self

    def match(self, path: str) -> Route | None:
        route = self.exact.get(path)
        if route is not None:
            return route
        for prefix, candidate in self.prefixes:
            if path.startswith(prefix):
                return candidate
        return None

    def __contains__(self, path: str) -> bool:
        return self.match(path) is not None


class StreamWriter:
    """The body of a :class:`StreamResponse`: write bytes, learn when the client is gone."""

    __slots__ = ("transport", "max_buffer", "backpressure", "closed", "on_slow", "on_going_away",
                 "_writable", "_abort_timer")

    def __init__(self, transport: asyncio.Transport, max_buffer: int, backpressure: bool) -> None:
        self.transport = transport
        self.max_buffer = max_buffer
        self.backpressure = backpressure
        #: Set once the client is gone or the stream was closed.
        self.closed = asyncio.Event()
        #: Called when the client reads too slowly, before the stream closes (last words).
        self.on_slow: Callable[[], None] | None = None
        #: Called on graceful shutdown instead of closing at once (it should close soon).
        self.on_going_away: Callable[[], None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._abort_timer: asyncio.TimerHandle | None = None
        transport.set_write_buffer_limits(high=min(max_buffer, DRAIN_HIGH) if backpressure else max_buffer)

    @property
    def raw_write(self) -> Callable[[bytes], None]:
        """The socket's own ``write`` (a fan-out writer with no Python call in between: the
        cap still holds, through the transport's high-water mark); may raise ``RuntimeError``
        once the socket is gone."""
        return self.transport.write

    @property
    def is_closing(self) -> bool:
        return self.closed.is_set()

    def write(self, data: bytes) -> bool:
        """Write *data*; False (nothing written) when the stream is closed or the write would
        pass the cap (the stream is then closed as too slow)."""
        if self.closed.is_set():
            return False
        if self.backpressure and self.transport.get_write_buffer_size() + len(data) > self.max_buffer:
            self.slow()
            return False
        self.transport.write(data)
        return True

    async def drain(self) -> None:
        """Wait until the socket's buffer is under the high-water mark (or the stream closed)."""
        if not self._writable.is_set() and not self.closed.is_set():
            closed = asyncio.ensure_future(self.closed.wait())
            writable = asyncio.ensure_future(self._writable.wait())
            try:
                await asyncio.wait((closed, writable), return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
                writable.cancel()

    def close(self) -> None:
        """End the stream: flush what is buffered, then close (reset after a short timeout)."""
        if self.closed.is_set():
            return
        self.closed.set()
        self._writable.set()
        transport = self.transport
        if transport.is_closing():
            return
        pending = transport.get_write_buffer_size()
        transport.close()
        if pending:
            self._abort_timer = asyncio.get_running_loop().call_later(STREAM_CLOSE_TIMEOUT, self.abort)

    def abort(self) -> None:
        """Reset the connection now (SO_LINGER 0: the kernel drops what the peer never read)."""
        self._abort_timer = None
        self.closed.set()
        reset(self.transport)

    def slow(self) -> None:
        """The client reads too slowly: last words (``on_slow``), then close."""
        if self.closed.is_set():
            return
        hook, self.on_slow = self.on_slow, None
        if hook is not None:
            try:
                hook()
            except Exception:
                log.exception("stream on_slow hook failed")
        self.close()

    def going_away(self) -> None:
        """Graceful shutdown."""
        hook, self.on_going_away = self.on_going_away, None
        if hook is None:
            self.close()
            return
        try:
            hook()
        except Exception:
            log.exception("stream on_going_away hook failed")
            self.close()

    # -- from the protocol ------------------------------------------------------------------

    def _paused(self) -> None:
        if self.backpressure:
            self._writable.clear()
        else:
            self.slow()

    def _resumed(self) -> None:
        self._writable.set()

    def _lost(self) -> None:
        self.closed.set()
        self._writable.set()
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None


@dataclass(slots=True)
class HttpOptions:
    ws_paths: frozenset[str] = frozenset({"/cable"})
    routes: Router = field(default_factory=Router)
    allowed_origins: tuple[str, ...] = ()
    max_conn: int = 0
    max_message_size: int = 65536
    version: str = ""
    ws: WSOptions = field(default_factory=WSOptions)
    scheme: str = "http"  # the RPC env url: http(s)://host/path as Go sends it (spec §1.1)


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


def _content_type(body: bytes) -> str:
    return "application/json" if body[:1] in (b"{", b"[") else "text/plain; charset=utf-8"


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Stop(Exception):
    """Raised from a parser callback to stop reading the request (answered already)."""


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
        #: Requests to answer, in order, each with its early answer (from the head check) if any.
        self.pending: list[tuple[Request, Response | None, bool]] = []
        self.request: Request | None = None
        self.route: Route | None = None
        self.early: Response | None = None
        self.upgraded = False
        #: Reading stopped: the connection closes after the pending answers.
        self.stopped = False
        #: Raw bytes of the request head being parsed (an upgrade request is re-read by
        #: websockets); bodies are never kept here.
        self.raw = bytearray()
        #: The current request's head is complete: what follows is body, not kept in ``raw``.
        self.in_body = False
        self.too_large = False
        self.head_too_large = False
        self.url_too_long = False
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        #: Reading is paused: too many answers unsent or requests waiting (pipelining).
        self.reading_paused = False
        #: Set while the socket's unsent bytes are under the high-water mark.
        self.writable = asyncio.Event()
        self.writable.set()
        #: The streaming response being written, if any.
        self.writer: StreamWriter | None = None

    # -- asyncio ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        transport.set_write_buffer_limits(high=MAX_UNSENT)  # type: ignore[attr-defined]
        self.server.http.add(self)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.http.discard(self)
        self._cancel_head_timer()
        self._cancel_body_timer()
        self.writable.set()
        if self.writer is not None:
            self.writer._lost()

    def pause_writing(self) -> None:
        if self.writer is not None:
            self.writer._paused()
        else:  # answers the client does not read: read no more requests until they drain
            self.writable.clear()
            self._pause_reading()

    def resume_writing(self) -> None:
        self.writable.set()
        if self.writer is not None:
            self.writer._resumed()
        else:
            self._maybe_resume_reading()

    def _pause_reading(self) -> None:
        transport = self.transport
        if not self.reading_paused and transport is not None and not transport.is_closing():
            self.reading_paused = True
            transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        transport = self.transport
        if not self.reading_paused or transport is None or transport.is_closing() or self.upgraded:
            return
        if transport.get_write_buffer_size() <= MAX_UNSENT // 2 and len(self.pending) < MAX_PIPELINED // 2:
            self.reading_paused = False
            transport.resume_reading()

    def _arm_body_timer(self) -> None:
        self.body_timer = rearm(self.body_timer, BODY_TIMEOUT, self._body_timeout)

    def _cancel_body_timer(self) -> None:
        self.body_timer = rearm(self.body_timer)

    def _body_timeout(self) -> None:
        self.body_timer = None
        if self.transport is not None and not self.stopped and self.in_body:
            self._answer_now(Response(408, b"request body timeout"))

    def _arm_head_timer(self) -> None:
        self.head_timer = rearm(self.head_timer, HEAD_TIMEOUT, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        self.head_timer = rearm(self.head_timer)

    def _head_timeout(self) -> None:
        self.head_timer = None
        if self.transport is not None and not self.upgraded:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            return  # answered and closing, or streaming: nothing more is read
        kept = not self.in_body
        if kept:
            self.raw += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if not kept:  # an upgrade pipelined behind a request body: not supported
                self._answer_now(Response(400, b"malformed upgrade request"))
                return
            offset = upgrade.args[0] if upgrade.args else len(data)
            head = bytes(self.raw[: len(self.raw) - len(data) + offset])
            self._upgrade(head, data[offset:])
        except httptools.HttpParserError as exc:
            if self.stopped:  # a head check (or the body cap) answered already
                self._serve_soon()
            elif self.too_large:
                self._answer_now(Response(413, b"request body too large"))
            elif self.head_too_large:
                self._answer_now(Response(431, b"request head too large"))
            elif self.url_too_long:
                self._answer_now(Response(414, b"request URL too long"))
            else:
                self._answer_now(Response(400, f"malformed HTTP request: {exc}".encode()))

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body, self.body_size, self.head_size = b"", [], [], 0, 0
        self.request, self.route, self.early = None, None, None

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD:
            self.url_too_long = True
            raise httptools.HttpParserError("request URL too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD or len(self.headers) >= MAX_HEADERS:
            self.head_too_large = True
            raise httptools.HttpParserError("request head too large")
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.in_body = True
        self._cancel_head_timer()
        if self.parser.should_upgrade():
            return  # handled by HttpParserUpgrade
        request = self.request = self._new_request()
        route = self.route = self.options.routes.match(request.path)
        headers = request.headers
        has_body = headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers
        early = None
        if request.path in self.options.ws_paths:
            early = Response(426, b"WebSocket upgrade required")
        elif route is None:  # nothing here takes a body: answer before reading it
            early = Response(404, b"not found")
        else:
            request.max_body = route.max_body
            if route.check is not None:
                early = route.check(request)
            if early is None and has_body and route.max_body <= 0:
                early = Response(413, b"this path takes no request body")
        if early is None and has_body:
            try:
                declared = int(headers.get("content-length", "0"))
            except ValueError:
                declared = 0
            if declared > request.max_body:
                early = Response(413, b"request body too large")
        if early is not None:
            self.early = early
            if has_body:  # answer without reading the body, then close
                self.pending.append((request, early, False))
                self.stopped = True
                raise _Stop()
            return
        if has_body:
            self._arm_body_timer()
        if has_body and headers.get("expect", "").lower() == "100-continue" and not self.busy and not self.pending:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        limit = self.request.max_body if self.request is not None else MAX_BODY
        if self.body_size > limit:  # answered 413 and closed at once, not read to the end
            self.too_large = True
            raise httptools.HttpParserError("request body too large")
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.parser.should_upgrade():
            return  # handled by HttpParserUpgrade
        request = self.request
        assert request is not None
        self._cancel_body_timer()
        request.body = b"".join(self.body)
        self.body = []
        self.raw.clear()  # requests are not pipelined into an upgrade; keep the buffer small
        self.in_body = False
        self.pending.append((request, self.early, self.parser.should_keep_alive()))
        if len(self.pending) >= MAX_PIPELINED:
            self._pause_reading()
        self._serve_soon()

    def _new_request(self) -> Request:
        target = self.url.decode("latin-1")
        split = urlsplit(target)
        headers: dict[str, str] = {}
        for name, value in self.headers:
            key = name.lower()
            prev = headers.get(key)
            headers[key] = value if prev is None else prev + ("; " if key == "cookie" else ", ") + value
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return Request(
            method=self.parser.get_method().decode(),
            target=target,
            path=split.path,
            query=parse_qsl(split.query, keep_blank_values=True),
            headers=headers,
            raw_headers=self.headers,
            remote=peer[0] if isinstance(peer, tuple) else "",
        )

    # -- plain HTTP -------------------------------------------------------------------------

    def _answer_now(self, response: Response) -> None:
        """A request that cannot be parsed: answer it after those pending, then close."""
        self.stopped = True
        self._cancel_body_timer()
        request = Request("GET", "", "", [], {}, [], "")
        self.pending.append((request, response, False))
        self._serve_soon()

    def _serve_soon(self) -> None:
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        try:
            while self.pending:
                request, early, keep_alive = self.pending.pop(0)
                close = not keep_alive or (self.stopped and not self.pending)
                if early is not None:
                    self._respond(request, early, close)
                    continue
                route = self.options.routes.match(request.path)
                result: Response | StreamResponse
                if request.path in self.options.ws_paths:
                    result = Response(426, b"WebSocket upgrade required")
                elif route is None:
                    result = Response(404, b"not found")
                else:
                    try:
                        result = await route.handler(request)
                    except Exception:
                        log.exception("HTTP handler failed for %s", request.path)
                        result = Response(500, b"internal error")
                if isinstance(result, StreamResponse):
                    await self._stream(request, result)
                    return
                self._respond(request, result, close)
                if not self.writable.is_set():  # the client does not read its answers: wait
                    await self.writable.wait()
        finally:
            self.busy = False
            transport = self.transport
            if transport is not None and not transport.is_closing():
                if self.stopped and self.writer is None:
                    transport.close()
                else:
                    self._maybe_resume_reading()
                    self._arm_head_timer()  # the next request on this connection

    def _respond(self, request: Request, response: Response, close: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        body = response.body
        headers = list(response.headers)
        names = {name.lower() for name, _ in headers}
        if "content-type" not in names and (body or response.status >= 400):
            headers.append(("Content-Type", _content_type(body)))
        if "content-length" not in names:
            headers.append(("Content-Length", str(len(body))))
        if close:
            headers.append(("Connection", "close"))
        transport.write(_head(response.status, headers) + (b"" if request.method == "HEAD" else body))
        if close:
            transport.close()

    async def _stream(self, request: Request, response: StreamResponse) -> None:
        transport = self.transport
        assert transport is not None
        self.stopped = True  # the body is delimited by the close: nothing more is read
        self.pending.clear()
        writer = self.writer = StreamWriter(transport, response.max_buffer, response.backpressure)
        if transport.is_closing():  # the client left while the handler ran: run sees it gone
            writer._lost()
        else:
            transport.write(_head(response.status, [*response.headers, ("Connection", "close")]))
            if request.method == "HEAD":
                writer.close()
        try:
            await response.run(writer)
        except Exception:
            log.exception("HTTP stream failed for %s", request.path)
        finally:
            writer.close()

    # -- WebSocket upgrade --------------------------------------------------------------------

    def _upgrade(self, head: bytes, rest: bytes) -> None:
        assert self.transport is not None
        opts, server = self.options, self.server
        split = urlsplit(self.url.decode("latin-1"))
        headers = Headers(self.headers)
        if split.path not in opts.ws_paths:
            self._answer_now(Response(404, b"not found"))
            return
        if not origin_allowed(headers.get("Origin"), opts.allowed_origins):
            self._answer_now(Response(403, b"origin not allowed"))
            return
        if server.shutting_down or (opts.max_conn and len(server.connections) >= opts.max_conn):
            self._answer_now(Response(503, b"too many connections"))
            return
        proto = ServerProtocol(
            subprotocols=[Subprotocol(p) for p in c.SUBPROTOCOLS],
            select_subprotocol=_select_subprotocol,
            max_size=opts.max_message_size,
        )
        # The request as httptools parsed it (websockets' own parser would refuse a line over
        # 8 KiB or more than 128 headers, which browsers with many cookies send).
        if self.busy or self.pending:  # an upgrade pipelined behind a request: not supported
            self._answer_now(Response(400, b"malformed upgrade request"))
            return
        response = proto.accept(WSRequest(self.url.decode("latin-1"), headers))
        if opts.version:
            response.headers["X-AnyCable-Version"] = opts.version
        proto.send_response(response)
        for chunk in proto.data_to_send():
            self.transport.write(chunk)
        if response.status_code != 101:
            self.transport.close()
            return
        self.upgraded = True
        self.stopped = True
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
        opts = self.options
        query: dict[str, str] = {}
        for name, value in parse_qsl(query_string):
            query.setdefault(name, value)
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
            self.transport, proto, self.server.node, opts.ws, interval, precision, pong_timeout, self.server.lost
        )
        self.server.connections.add(conn)
        self.transport.set_protocol(conn)
        offered = tuple(
            p.strip() for v in headers.get_all("Sec-WebSocket-Protocol") for p in v.split(",") if p.strip()
        )
        request = self._new_request()
        handshake = Handshake(
            url=f"{opts.scheme}://{request.header('host', 'localhost')}{request.target}",
            headers=request.headers,
            remote=request.remote,
            query=query,
            subprotocols=offered,
            ext=ext,
        )
        conn.start(handshake, rest)


def response_subprotocol(proto: ServerProtocol) -> str | None:
    handshake = getattr(proto, "handshake_exc", None)
    if handshake is not None:
        return None
    return proto.subprotocol


class LiveConnection(Protocol):
    """A long-lived client connection (a WebSocket, an event stream) as the server sees it."""

    def going_away(self) -> None:
        """Graceful shutdown: tell the client (``server_restart``) and start closing."""
        ...

    def abort(self) -> None:
        """Reset the connection now (it did not close in time)."""
        ...


class ServerState:
    """Shared by every connection of one server: the node, live connections, shutdown flag."""

    def __init__(self, node: NodePort) -> None:
        self.node = node
        #: Live client connections (counted by ``--max-conn``, drained on shutdown).
        self.connections: set[LiveConnection] = set()
        self.http: set[HttpProtocol] = set()
        self.shutting_down = False
        self.started = time.time()
        #: Set when shutting down and the last connection is gone.
        self.drained = asyncio.Event()

    def lost(self, conn: LiveConnection) -> None:
        self.connections.discard(conn)
        if self.shutting_down and not self.connections:
            self.drained.set()
