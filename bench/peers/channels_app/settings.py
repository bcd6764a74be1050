"""Django settings of the Django Channels peer (bench/peers/channels_app).

Production-style: ``DEBUG = False``, no database, no middleware that the benchmark does not
need. The channel layer is chosen with ``BENCH_CHANNEL_LAYER``: ``memory``
(``channels.layers.InMemoryChannelLayer``, one process only) or ``redis``
(``channels_redis.core.RedisChannelLayer`` at ``REDIS_URL``, default redis://127.0.0.1:6379,
with the prefix ``BENCH_CHANNELS_PREFIX`` so that runs do not share keys).
"""

from __future__ import annotations

import os

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "urls"
INSTALLED_APPS = ["channels"]
MIDDLEWARE: list[str] = []
DATABASES: dict[str, object] = {}
USE_TZ = True
ASGI_APPLICATION = "asgi.application"
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

if os.environ.get("BENCH_CHANNEL_LAYER", "memory") == "redis":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")],
                "prefix": os.environ.get("BENCH_CHANNELS_PREFIX", "asgi"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
