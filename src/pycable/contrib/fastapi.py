"""FastAPI and Starlette: mount an SDK application's HTTP RPC, and broadcast from routes.

::

    from fastapi import Depends, FastAPI
    from pycable.contrib.fastapi import Broadcast, lifespan, mount

    api = FastAPI(lifespan=lifespan)
    mount(api, cable)                      # pycable runs with --rpc_host http://<api>/_anycable

    @api.post("/notes")
    async def add(note: Note, broadcast: Annotated[Broadcast, Depends()]):
        await broadcast("notes", note.model_dump(), to_others=True)

Only Starlette is imported (FastAPI is built on it), so this works for plain Starlette apps too.
Guide: docs/frameworks.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.requests import Request
from starlette.routing import Router

from pycable.sdk import Application, abroadcast, get_broadcaster

__all__ = ["SOCKET_ID_HEADER", "Broadcast", "lifespan", "mount"]

#: The header a client sends with its session id so that a route can broadcast "to others"
#: (``cable.sessionId`` in ``@anycable/core``; Rails' ``X-Socket-ID``).
SOCKET_ID_HEADER = "x-socket-id"


def mount(app: Any, cable: Application, path: str = "/_anycable", *, secret: str | None = None) -> None:
    """Serve *cable*'s HTTP RPC under *path* of a FastAPI or Starlette *app*.

    Args:
        app: a ``FastAPI``, ``Starlette`` or ``Router``.
        cable: the SDK application.
        path: the mount point; pycable's ``--rpc_host`` is ``http://<host>:<port><path>``.
        secret: the HTTP RPC secret (default: the application's settings, i.e.
            ``ANYCABLE_HTTP_RPC_SECRET`` or the one derived from ``ANYCABLE_SECRET``).
    """
    if not path.startswith("/") or path.endswith("/"):
        raise ValueError(f"mount path must start and not end with '/', got {path!r}")
    router: Router = app.router if hasattr(app, "router") else app
    router.mount(path, cable.asgi(secret=secret))


class Broadcast:
    """A route dependency (``Annotated[Broadcast, Depends()]``) that broadcasts to pycable.

    ``to_others=True`` leaves out the client whose session id the request carries in the
    ``X-Socket-ID`` header (the page that made the request already shows its change).

    Attributes:
        socket_id: the request's ``X-Socket-ID``, or None.
    """

    def __init__(self, request: Request) -> None:
        self.socket_id: str | None = request.headers.get(SOCKET_ID_HEADER) or None

    async def __call__(self, stream: str, data: Any, *, to_others: bool = False) -> None:
        """Broadcast *data* (JSON-encoded unless a string) to *stream*.

        Raises:
            pycable.sdk.BroadcastError: pycable did not accept it (never dropped silently).
        """
        await abroadcast(stream, data, exclude_socket=self.socket_id if to_others else None)


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """An app lifespan that closes the broadcaster's keep-alive connections on shutdown."""
    yield
    await get_broadcaster().aclose()
