"""Broadcasting from views, signals and tasks: :func:`pycable.sdk.broadcast` works anywhere
(``INSTALLED_APPS`` points it at ``settings.PYCABLE``); :func:`broadcast_on_commit` waits for
the current transaction, so subscribers never hear of a row that is then rolled back."""

from __future__ import annotations

from typing import Any

from pycable.sdk import broadcast

__all__ = ["broadcast_on_commit"]


def broadcast_on_commit(stream: str, data: Any, *, exclude_socket: str | None = None, using: str | None = None) -> None:
    """Broadcast *data* to *stream* once the current transaction commits (at once outside a
    transaction), e.g. from a ``post_save`` signal handler.

    Errors are raised by the commit that runs the broadcast
    (:class:`pycable.sdk.BroadcastError`: pycable did not accept it); nothing is dropped
    silently.
    """
    from django.db import transaction

    transaction.on_commit(lambda: broadcast(stream, data, exclude_socket=exclude_socket), using=using)
