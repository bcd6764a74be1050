"""Durable Streams over HTTP: mounts :class:`~pycable.ds.service.DurableStreams` at ``--ds_path``.

Only bytes move here: a request becomes a :class:`~pycable.ds.service.DSRequest`, the answer
a :class:`~pycable.transport.http.Response`, or a streaming response for SSE whose events
are written as the service yields them (the stream ends when the client goes, on shutdown,
or after ``--ds_sse_ttl``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import unquote

from pycable.ds.service import EXPOSE, DSRequest, DurableStreams
from pycable.transport.http import (
    Handler,
    HeadCheck,
    Request,
    Response,
    StreamResponse,
    StreamWriter,
    origin_allowed,
)

__all__ = ["ds_route"]

_WRITES = ("PUT", "POST", "DELETE")


def ds_route(
    service: DurableStreams, path: str, allowed_origins: tuple[str, ...] = ()
) -> tuple[str, Handler, HeadCheck, int]:
    """``(prefix, handler, head check, max body)`` for ``Router.add(prefix, handler, prefix=True, …)``.

    CORS: any origin when ``--allowed_origins`` is empty, else the allowed ones (echoed).
    """
    prefix = path.rstrip("/") + "/"

    def cors(req: Request) -> list[tuple[str, str]]:
        origin = req.headers.get("origin")
        if not allowed_origins:
            value = "*"
        elif origin and origin_allowed(origin, allowed_origins):
            value = origin
        else:
            return []
        return [("access-control-allow-origin", value), ("access-control-expose-headers", EXPOSE)]

    def check(req: Request) -> Response | None:
        """Refuse an unauthorized write before its body is read."""
        if req.method.upper() in _WRITES:
            denied = service.write_denied(req.headers.get("authorization", ""))
            if denied is not None:
                return Response(denied.status, denied.body, denied.headers)
        return None

    async def handle(req: Request) -> Response | StreamResponse:
        name = unquote(req.path[len(prefix):])
        scheme = "https" if req.headers.get("x-forwarded-proto") == "https" else "http"
        host = req.headers.get("host", "localhost")
        url = f"{scheme}://{host}{req.path}"
        ds_req = DSRequest(req.method, name, req.query, req.headers, req.body, url=url, remote_addr=req.remote)
        resp = await service.handle(ds_req)
        resp.headers.extend(cors(req))
        events = resp.events
        if events is None:
            return Response(resp.status, resp.body, resp.headers)

        async def run(writer: StreamWriter) -> None:
            await _pump(events, writer)

        return StreamResponse(resp.status, resp.headers, run)

    return prefix, handle, check, service.options.max_append


async def _pump(events: AsyncIterator[bytes], writer: StreamWriter) -> None:
    """Write each chunk as it comes; stop when the client is gone (the service's generator
    is closed, so its waiter is released at once)."""
    gone = asyncio.ensure_future(writer.closed.wait())
    agen = events.__aiter__()
    try:
        while True:
            nxt = asyncio.ensure_future(agen.__anext__())
            done, _ = await asyncio.wait((nxt, gone), return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
                return
            try:
                chunk = nxt.result()
            except StopAsyncIteration:
                return
            if not writer.write(chunk):
                return
    finally:
        gone.cancel()
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        writer.close()
