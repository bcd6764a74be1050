"""A small asyncio HTTP/1.1 client for HTTP RPC: ``POST`` with keep-alive connection pooling.

Why not httpx or aiohttp: HTTP RPC needs one verb against one origin, with a deadline per
request and transport errors told apart from answers (spec §6.6 maps them to different
status codes). ``httptools`` (already a dependency, it parses the server side) gives a
fast, strict response parser; the rest is a connection pool of ~150 lines, with no extra
dependency to install and no second event-loop abstraction. See docs/rpc.md.

Errors:

* :class:`ssl.SSLError` (handshake, certificate): raised as is;
* :class:`TimeoutError`: the deadline passed (the connection is dropped);
* :class:`ConnectionError` / :class:`OSError`: connect refused, reset, closed before a
  complete response;
* :class:`HttpProtocolError`: the response cannot be parsed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

__all__ = ["HttpClient", "HttpResponse", "HttpProtocolError"]

MAX_RESPONSE = 64 << 20


class HttpProtocolError(Exception):
    """The server's answer is not valid HTTP/1.1."""


@dataclass(slots=True, frozen=True)
class HttpResponse:
    status: int
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.waiter: asyncio.Future[HttpResponse] | None = None
        self.body: list[bytes] = []
        self.size = 0
        self.headers_done = False
        self.length_known = False
        self.keep_alive = True

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            # Bytes nobody asked for: the connection cannot be reused safely.
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpProtocolError(str(exc)))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.headers_done and exc is None and not self.length_known:
            # A body delimited by the end of the connection (no length, not chunked).
            waiter.set_result(HttpResponse(self.parser.get_status_code(), b"".join(self.body)))
        else:
            waiter.set_exception(exc or ConnectionResetError("connection closed before a complete response"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.body, self.size, self.headers_done = [], 0, False
        self.length_known = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.length_known = True

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_RESPONSE:
            self._fail(HttpProtocolError("response body too large"))
            self.close()
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(HttpResponse(self.parser.get_status_code(), b"".join(self.body)))

    # client side

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def request(self, data: bytes) -> HttpResponse:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        try:
            return await self.waiter
        finally:
            self.waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """POSTs to one origin (``http://`` or ``https://``) over pooled keep-alive connections.

    Args:
        base_url: the origin plus an optional base path (``http://app:3000/_anycable``).
        max_idle: idle connections kept for reuse.
        ssl_context: for ``https://`` (default: certificate verification on).
    """

    def __init__(self, base_url: str, max_idle: int = 32, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = parts.port is None or parts.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if default_port else f"{host}:{self.port}"
        self.base_path = parts.path.rstrip("/")
        self.query = parts.query
        self.max_idle = max_idle
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.ssl = ssl_context or ssl.create_default_context()
        self._idle: deque[_Connection] = deque()
        self._all: set[_Connection] = set()

    def url_for(self, name: str) -> str:
        return f"{self.scheme}://{self.authority}{self.path_for(name)}"

    def path_for(self, name: str) -> str:
        path = f"{self.base_path}/{name}"
        return f"{path}?{self.query}" if self.query else path

    async def post(self, name: str, body: bytes, headers: dict[str, str], timeout: float | None = None) -> HttpResponse:
        """POST *body* to ``<base path>/<name>``; any HTTP status is returned, not raised."""
        head = [
            f"POST {self.path_for(name)} HTTP/1.1",
            f"Host: {self.authority}",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive",
        ]
        head += [f"{k}: {v}" for k, v in headers.items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        if timeout is None:
            return await self._exchange(data)
        async with asyncio.timeout(timeout):
            return await self._exchange(data)

    async def _exchange(self, data: bytes) -> HttpResponse:
        conn = await self._acquire()
        ok = False
        try:
            response = await conn.request(data)
            ok = True
            return response
        finally:
            # A cancelled, timed-out or failed exchange leaves the connection in an
            # unknown state: drop it.
            if ok and conn.keep_alive and not conn.closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
            else:
                self._discard(conn)

    async def _acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            transport = conn.transport
            if not conn.closed and transport is not None and not transport.is_closing():
                return conn
            self._discard(conn)
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            _Connection, self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
        )
        self._all.add(conn)
        return conn

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._all.discard(conn)

    async def close(self) -> None:
        """Close every connection (idle or not)."""
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        self._all.clear()
