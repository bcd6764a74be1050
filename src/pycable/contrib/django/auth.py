"""Connections authenticated from Django's session cookie by Django's own machinery.

The Connect call carries the browser's ``Cookie`` header (pycable forwards it; ``--headers``
defaults to ``cookie``). :func:`session_user` opens the session named by
``settings.SESSION_COOKIE_NAME`` with the project's ``SESSION_ENGINE`` and asks
``django.contrib.auth.get_user`` for its user, exactly as ``AuthenticationMiddleware`` does for
a view: the same backends, the same session-hash check (a password change logs the cable out
too), the same expiry.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, ClassVar

from asgiref.sync import sync_to_async

from pycable.sdk import Connection

__all__ = ["DjangoConnection", "session_user"]


def _session_user(cookies: dict[str, str]) -> Any:
    from django.conf import settings
    from django.contrib.auth import get_user
    from django.contrib.auth.models import AnonymousUser
    from django.http import HttpRequest

    key = cookies.get(settings.SESSION_COOKIE_NAME)
    if not key:
        return AnonymousUser()
    request = HttpRequest()
    request.COOKIES = cookies
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(key)
    return get_user(request)


async def session_user(cookies: dict[str, str]) -> Any:
    """The user of the Django session named in *cookies* (``AnonymousUser`` when there is
    none or it is invalid/expired). Runs Django's sync session and auth code in its
    thread-sensitive executor, as Django's own async views do."""
    return await sync_to_async(_session_user, thread_sensitive=True)(cookies)


class DjangoConnection(Connection):
    """A connection identified by the Django user of the request's session cookie.

    ``connect`` resolves the user as ``AuthenticationMiddleware`` does; an anonymous user is
    rejected (``unauthorized``) unless :attr:`allow_anonymous` is set. The connection is
    identified by ``user_id`` (the user's primary key); in any later call (a channel's
    action, ``disconnect``), ``await self.aget_user()`` loads that user with the async ORM.

    Override :meth:`connect` to add checks; call ``await super().connect()`` first and read
    :attr:`user`.

    Attributes:
        user: in ``connect``, the session's user (``AnonymousUser`` if none).
    """

    #: Accept connections without a logged-in user (identified by nothing).
    allow_anonymous: ClassVar[bool] = False

    user: Any = None

    async def connect(self) -> None:
        self.user = await session_user(self.request.cookies)
        if self.user.is_authenticated:
            self.identified_by(user_id=self.user.pk)
        elif not self.allow_anonymous:
            self.reject()

    async def aget_user(self) -> Any:
        """The identified user (loaded once per call), or ``AnonymousUser``. A user deleted
        since the connection was made is ``AnonymousUser`` too."""
        if self.user is None:
            from django.contrib.auth import get_user_model
            from django.contrib.auth.models import AnonymousUser

            pk = self.identifiers.get("user_id")
            user = None if pk is None else await get_user_model()._default_manager.filter(pk=pk).afirst()
            self.user = user if user is not None else AnonymousUser()
        return self.user
