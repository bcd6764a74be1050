"""Django: connections authenticated by Django's own session and auth, the ORM in channels,
broadcasts from views and signals, settings in ``settings.py``.

::

    # settings.py
    INSTALLED_APPS = [..., "pycable.contrib.django"]
    PYCABLE = {"SECRET": "...", "BROADCAST_URL": "http://127.0.0.1:8080/_broadcast"}

    # cable.py
    from pycable.contrib.django import DjangoApplication, DjangoConnection
    class RoomChannel(Channel): ...
    cable = DjangoApplication(connection=DjangoConnection, channels=[RoomChannel])

    # asgi.py
    application = pycable.contrib.django.asgi(get_asgi_application(), cable)   # RPC at /_anycable

Import the submodules' names from here. Guide: docs/frameworks.md.
"""

from __future__ import annotations

from pycable.contrib.django.application import DjangoApplication, asgi
from pycable.contrib.django.auth import DjangoConnection, session_user
from pycable.contrib.django.broadcast import broadcast_on_commit
from pycable.contrib.django.conf import pycable_settings, settings_from

__all__ = [
    "DjangoApplication",
    "DjangoConnection",
    "asgi",
    "broadcast_on_commit",
    "pycable_settings",
    "session_user",
    "settings_from",
]
