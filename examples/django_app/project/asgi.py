"""ASGI entry point: Django, with pycable's HTTP RPC at /_anycable.

uvicorn project.asgi:application --port 8000
pycable --rpc_host http://127.0.0.1:8000/_anycable
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_app = get_asgi_application()  # sets Django up: models can be imported after this

from board.cable import cable  # noqa: E402

from pycable.contrib.django import asgi  # noqa: E402

application = asgi(django_app, cable)
