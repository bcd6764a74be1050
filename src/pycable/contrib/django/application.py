"""The SDK application for Django projects, and the ASGI router that serves it beside Django.

Django's ORM is synchronous underneath and keeps one database connection per thread.
:class:`DjangoApplication` runs sync callbacks and actions (``def speak(self, data)``) in
Django's thread-sensitive executor, the thread Django's async ORM (``await …afirst()``) uses
too, and closes unusable or expired connections around each call, as Django does around each
request (``close_old_connections``). So a channel may use the ORM either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import sync_to_async

from pycable.sdk import Application, Channel, Connection, Settings

__all__ = ["DjangoApplication", "asgi"]

ASGIApp = Callable[..., Any]


def _with_db(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        from django.db import close_old_connections

        close_old_connections()
        try:
            return fn(*args)
        finally:
            close_old_connections()

    return call


async def _run_sync(fn: Callable[..., Any], /, *args: Any) -> Any:
    return await sync_to_async(_with_db(fn), thread_sensitive=True)(*args)


class DjangoApplication(Application):
    """An :class:`~pycable.sdk.Application` whose settings default to ``settings.PYCABLE``
    (over the ``ANYCABLE_*`` environment) and whose sync callbacks run where Django's ORM
    expects them. Arguments as for :class:`~pycable.sdk.Application`."""

    def __init__(
        self,
        connection: type[Connection] = Connection,
        channels: Iterable[type[Channel]] = (),
        *,
        settings: Settings | None = None,
    ) -> None:
        super().__init__(connection, channels, settings=settings)
        self.run_sync = _run_sync

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from pycable.contrib.django.conf import pycable_settings

            self._settings = pycable_settings()
        return self._settings


class _Router:
    def __init__(self, django_app: ASGIApp, rpc: ASGIApp, path: str) -> None:
        self.django_app, self.rpc, self.path = django_app, rpc, path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == self.path or path.startswith(self.path + "/")):
            from django.db import close_old_connections

            try:
                await self.rpc(dict(scope, root_path=scope.get("root_path", "") + self.path), receive, send)
            finally:
                # Async ORM queries ran in the thread-sensitive executor: tidy its connection
                # as Django does after a request.
                await sync_to_async(close_old_connections, thread_sensitive=True)()
        else:
            await self.django_app(scope, receive, send)


def asgi(django_app: ASGIApp, cable: Application, path: str = "/_anycable", *, secret: str | None = None) -> ASGIApp:
    """An ASGI application: pycable's HTTP RPC at *path*, everything else to *django_app*.

    ::

        # asgi.py
        application = asgi(get_asgi_application(), cable)

    pycable then runs with ``--rpc_host http://<host>:<port>/_anycable``.

    Args:
        django_app: ``django.core.asgi.get_asgi_application()``.
        cable: the application (usually a :class:`DjangoApplication`).
        path: the RPC mount point.
        secret: the HTTP RPC secret (default: the application's settings).
    """
    if not path.startswith("/") or path.endswith("/"):
        raise ValueError(f"the RPC path must start and not end with '/', got {path!r}")
    return _Router(django_app, cable.asgi(secret=secret), path)
