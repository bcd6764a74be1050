"""The SDK's settings, read from the server's own environment names, so that one set of
``ANYCABLE_*`` variables configures both pycable and the application.

=================================  =====================================================
``ANYCABLE_SECRET``                the application secret; every key below is derived from
                                   it exactly as pycable derives it
``ANYCABLE_BROADCAST_URL``         where HTTP broadcasts go (default below)
``ANYCABLE_BROADCAST_KEY``         HTTP broadcast key (default ``hex(HMAC(secret, "broadcast-cable"))``)
``ANYCABLE_HTTP_RPC_SECRET``       HTTP RPC bearer token (default ``hex(HMAC(secret, "rpc-cable"))``)
``ANYCABLE_JWT_SECRET``            JWT secret (default: the secret)
``ANYCABLE_STREAMS_SECRET``        signed streams secret (default: the secret)
``ANYCABLE_TURBO_STREAMS_SECRET``  Turbo stream names (default: the streams secret)
``ANYCABLE_BROADCAST_ADAPTER``     ``http`` or ``redisx`` (the first of a server-style list)
``ANYCABLE_REDIS_URL``             Redis for ``redisx`` (also ``REDIS_URL``)
``ANYCABLE_REDISX_STREAM``         the Redis Stream the server's redisx broadcaster reads
=================================  =====================================================

Without ``ANYCABLE_BROADCAST_URL`` the URL is the one the server listens on with the same
environment: ``http://127.0.0.1:<port><ANYCABLE_HTTP_BROADCAST_PATH>`` where the port is
``ANYCABLE_HTTP_BROADCAST_PORT``, else 8090, or the main port (``ANYCABLE_PORT``, 8080)
when a broadcast key is in effect. So with nothing set it is
``http://127.0.0.1:8090/_broadcast``.

Explicit arguments override the environment: ``Settings.from_env(secret="...")``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from pycable.identity import secrets

__all__ = ["Settings", "DEFAULT_BROADCAST_URL", "BROADCAST_ADAPTERS"]

DEFAULT_BROADCAST_URL = "http://127.0.0.1:8090/_broadcast"
BROADCAST_ADAPTERS = ("http", "redisx")
_TRUE = ("1", "true", "yes", "on", "t", "y")


@dataclass(frozen=True, slots=True)
class Settings:
    """What an application needs to talk to pycable.

    The ``*_key``/``*_secret`` fields hold explicit values only. The ``effective_*``
    properties give the values in force: the explicit one, else the one derived from
    :attr:`secret` exactly as pycable derives it.
    """

    secret: str = ""
    broadcast_url: str = ""
    broadcast_key: str = ""
    http_rpc_secret: str = ""
    jwt_secret: str = ""
    streams_secret: str = ""
    turbo_streams_secret: str = ""
    broadcast_adapter: str = "http"
    redis_url: str = "redis://localhost:6379"
    redisx_stream: str = "__anycable__"
    #: ``--public``: the server wants no broadcast key.
    public: bool = False
    #: Seconds an HTTP broadcast may take before :class:`~pycable.exceptions.BroadcastError`.
    broadcast_timeout: float = 5.0
    #: Used to build the default broadcast URL (the server's own options).
    port: int = 8080
    http_broadcast_port: int = 0
    http_broadcast_path: str = "/_broadcast"

    def __post_init__(self) -> None:
        adapter = self.broadcast_adapter.split(",")[0].strip() or "http"
        if adapter not in BROADCAST_ADAPTERS:
            raise ValueError(
                f"broadcast adapter {self.broadcast_adapter!r} is not supported by the SDK "
                f"(use one of: {', '.join(BROADCAST_ADAPTERS)})"
            )
        object.__setattr__(self, "broadcast_adapter", adapter)
        if self.broadcast_timeout <= 0:
            raise ValueError("broadcast_timeout must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``ANYCABLE_*`` variables (*environ*, default ``os.environ``), then
        *overrides* (field names) on top."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"ANYCABLE_{f.name.upper()}"
            raw = env.get(name)
            if raw is None and f.name == "redis_url":
                name, raw = "REDIS_URL", env.get("REDIS_URL")
            if raw is None:
                continue
            try:
                if f.type in ("bool", bool):
                    values[f.name] = raw.strip().lower() in _TRUE
                elif f.type in ("int", int):
                    values[f.name] = int(raw)
                elif f.type in ("float", float):
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a valid {f.type}") from None
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with *changes*."""
        return replace(self, **changes)

    # -- derived, exactly as the server derives them ----------------------------------------

    @property
    def effective_broadcast_key(self) -> str:
        return secrets.broadcast_key(self.secret, self.broadcast_key, public=self.public)

    @property
    def effective_http_rpc_secret(self) -> str:
        return secrets.http_rpc_secret(self.secret, self.http_rpc_secret)

    @property
    def effective_jwt_secret(self) -> str:
        return secrets.jwt_secret(self.secret, self.jwt_secret)

    @property
    def effective_streams_secret(self) -> str:
        return secrets.streams_secret(self.secret, self.streams_secret)

    @property
    def effective_turbo_streams_secret(self) -> str:
        return secrets.turbo_streams_secret(self.secret, self.streams_secret, self.turbo_streams_secret)

    @property
    def effective_broadcast_url(self) -> str:
        if self.broadcast_url:
            return self.broadcast_url
        port = self.http_broadcast_port or (self.port if self.effective_broadcast_key else 8090)
        return f"http://127.0.0.1:{port}{self.http_broadcast_path}"
