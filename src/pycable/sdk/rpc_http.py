"""HTTP RPC as an ASGI application: ``POST <mount>/connect``, ``/command``, ``/disconnect``
and ``/restore`` (docs/rpc.md "HTTP RPC"). Mount it anywhere (Starlette ``Mount``, FastAPI
``app.mount``, Django's ASGI router) or serve it alone with any ASGI server.

* The method is the last path segment, so the mount point does not matter.
* ``Authorization: Bearer <secret>`` is checked (constant time) when a secret is set: the
  HTTP RPC secret pycable sends (``--http_rpc_secret``, or derived from ``--secret``).
* The session id comes from ``X-Anycable-Meta-Sid``.

Answers: 200 with the RPC answer (also for the application's errors, which are ``ERROR``
answers); 401 wrong or missing secret; 400 a body that is not a JSON object; 404 an
unknown method; 405 not a POST; 413 a body over the limit. pycable treats 401, 400 and
other statuses as failed calls without retrying them (docs/rpc.md).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson

from pycable.sdk.dispatch import METHODS, dispatch

if TYPE_CHECKING:
    from pycable.sdk.application import Application

__all__ = ["RPCApp"]

log = logging.getLogger("pycable.sdk")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]


class RPCApp:
    """The ASGI application of :meth:`Application.asgi() <pycable.sdk.Application.asgi>`.

    Args:
        app: the SDK application.
        secret: the expected bearer token (empty: no check).
        max_body_size: larger bodies get 413.
    """

    def __init__(self, app: Application, *, secret: str = "", max_body_size: int = 16 << 20) -> None:
        self.app = app
        self.secret = secret
        self._expected = f"Bearer {secret}".encode() if secret else b""
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        method = scope["path"].rstrip("/").rpartition("/")[2]
        if scope["method"] != "POST":
            await _reply(send, 405, b'{"error":"HTTP RPC takes POST requests"}', [(b"allow", b"POST"), *_JSON])
            return
        if method not in METHODS:
            await _reply(send, 404, orjson.dumps({"error": f"unknown RPC method {method!r}"}))
            return
        auth = sid = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value
            elif name == b"x-anycable-meta-sid":
                sid = value
        if self._expected and not hmac.compare_digest(auth, self._expected):
            log.warning("HTTP RPC %s refused: wrong or missing Authorization (check the HTTP RPC secret)", method)
            await _reply(send, 401, b'{"error":"unauthorized"}')
            return
        body = await _read(receive, self.max_body_size)
        if body is None:
            await _reply(send, 413, b'{"error":"request body too large"}')
            return
        try:
            request = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError as exc:
            await _reply(send, 400, orjson.dumps({"error": f"invalid JSON: {exc}"}))
            return
        if not isinstance(request, dict):
            await _reply(send, 400, b'{"error":"the request is not a JSON object"}')
            return
        try:
            answer = await dispatch(self.app, method, request, sid.decode("latin-1"))
        except Exception:  # a bug of ours: the application's own errors are answers
            log.exception("HTTP RPC %s failed", method)
            await _reply(send, 500, b'{"error":"internal error"}')
            return
        await _reply(send, 200, orjson.dumps(answer))


async def _read(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks) if len(chunks) != 1 else chunks[0]


async def _reply(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    hdrs = [*(headers or _JSON), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
