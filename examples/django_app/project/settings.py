"""Settings of the example project. Everything pycable needs is in ``PYCABLE`` (below) and
``INSTALLED_APPS``; keys left out of ``PYCABLE`` come from the ``ANYCABLE_*`` environment."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-example-only")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "pycable.contrib.django",  # points pycable.sdk.broadcast() at PYCABLE
    "board",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_PATH", BASE_DIR / "db.sqlite3"),
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
LOGIN_REDIRECT_URL = "/rooms/general/messages"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# pycable: the server gets the same secret (pycable --secret / ANYCABLE_SECRET) and calls this
# project's HTTP RPC at /_anycable (project/asgi.py). Other keys: BROADCAST_URL, BROADCAST_KEY,
# HTTP_RPC_SECRET, BROADCAST_ADAPTER ("http" or "redisx"), REDIS_URL… (docs/frameworks.md);
# what is left out comes from the ANYCABLE_* environment.
PYCABLE = {
    "SECRET": os.environ.get("ANYCABLE_SECRET", ""),
}
