"""The Django app config: ``INSTALLED_APPS = [..., "pycable.contrib.django"]`` points
``pycable.sdk.broadcast()`` at the ``PYCABLE`` settings when Django starts."""

from __future__ import annotations

from django.apps import AppConfig


class PycableConfig(AppConfig):
    name = "pycable.contrib.django"
    label = "pycable"
    verbose_name = "pycable"

    def ready(self) -> None:
        from pycable.contrib.django.conf import pycable_settings
        from pycable.sdk import configure

        configure(pycable_settings())
