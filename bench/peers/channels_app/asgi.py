"""ASGI entry point of the Django Channels peer, as the Channels tutorial writes it.

    DJANGO_SETTINGS_MODULE=settings uvicorn --app-dir bench/peers/channels_app asgi:application ...
    DJANGO_SETTINGS_MODULE=settings daphne asgi:application ...   (cwd bench/peers/channels_app)
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()  # before importing consumers (app registry)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from consumers import BenchConsumer  # noqa: E402
from django.urls import path  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("ws/", BenchConsumer.as_asgi())]),
    }
)
