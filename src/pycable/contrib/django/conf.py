"""``settings.PYCABLE``: the SDK's settings from Django's, over the ``ANYCABLE_*`` environment.

Keys are the :class:`pycable.sdk.Settings` field names, upper- or lower-case (``SECRET``,
``BROADCAST_URL``, ``BROADCAST_KEY``, ``HTTP_RPC_SECRET``, ``BROADCAST_ADAPTER``,
``REDIS_URL``…). What ``PYCABLE`` leaves out comes from the environment, as for any SDK
application, so the server and the application can still share one set of variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from pycable.sdk import Settings

__all__ = ["pycable_settings", "settings_from"]

_FIELDS = frozenset(f.name for f in fields(Settings))


def settings_from(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """:class:`Settings` from a ``PYCABLE``-style mapping over *environ* (default ``os.environ``).

    Raises:
        ValueError: an unknown key (the message lists the known ones) or a bad value.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"PYCABLE must be a dict, got {type(config).__name__}")
    overrides: dict[str, Any] = {}
    for key, value in config.items():
        name = str(key).lower()
        if name not in _FIELDS:
            raise ValueError(
                f"PYCABLE has an unknown key {key!r} (known: {', '.join(sorted(k.upper() for k in _FIELDS))})"
            )
        overrides[name] = value
    return Settings.from_env(environ, **overrides)


def pycable_settings() -> Settings:
    """The SDK settings of this Django project (``settings.PYCABLE`` over the environment).

    Raises:
        django.core.exceptions.ImproperlyConfigured: ``PYCABLE`` is not valid.
    """
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        return settings_from(getattr(settings, "PYCABLE", {}))
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from exc
