"""python-socketio peer: an ``AsyncServer`` in ASGI mode, served by uvicorn.

Written as the python-socketio documentation shows it: ``socketio.AsyncServer(async_mode="asgi")``
wrapped in ``socketio.ASGIApp``, a ``connect`` handler that puts the client in the room
``bench``, and broadcasts with ``await sio.emit("message", data, room="bench")``. The broadcast
trigger (``POST /_broadcast``, the body bench/loadgen sends to every server) is a plain ASGI app
passed as ``other_asgi_app``, on the same port. Production settings: logging off (the default),
no message queue (one process). uvicorn runs it with uvloop, httptools and websockets, without
access log (bench/peers.py gives the command line).

    uvicorn --app-dir bench/peers socketio_app:app --port 8080 --loop uvloop --http httptools \
        --ws websockets --no-access-log --log-level warning
"""

from __future__ import annotations

import json
from typing import Any

import socketio

sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False)


@sio.event  # type: ignore[misc]
async def connect(sid: str, environ: dict[str, Any]) -> None:
    await sio.enter_room(sid, "bench")


async def trigger(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``POST /_broadcast`` -> emit the body's ``data`` to the room, reply 201."""
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        event = await receive()
        body += event.get("body", b"")
        more = event.get("more_body", False)
    status = 404
    if scope["path"] == "/_broadcast" and scope["method"] == "POST":
        try:
            data = json.loads(body)["data"]
        except (ValueError, KeyError, TypeError):
            status = 422
        else:
            await sio.emit("message", data, room="bench")
            status = 201
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


app = socketio.ASGIApp(sio, other_asgi_app=trigger)
