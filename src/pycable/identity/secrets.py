"""The secrets derived from ``--secret`` (spec §4.2, §6.6, §7.2, §7.3), shared by the server's
configuration and the application SDK so that both derive them the same way.

Each function takes the application secret and the explicit value of the derived option; an
explicit value wins, ``"none"`` (for the secret and the broadcast key) turns it off.
"""

from __future__ import annotations

from pycable.identity.signed import derive_key

__all__ = [
    "NONE",
    "application_secret",
    "broadcast_key",
    "http_rpc_secret",
    "jwt_secret",
    "streams_secret",
    "turbo_streams_secret",
]

NONE = "none"


def application_secret(secret: str) -> str:
    """``--secret``, with ``none`` meaning no secret."""
    return "" if secret == NONE else secret


def broadcast_key(secret: str, explicit: str = "", *, public: bool = False) -> str:
    """``--broadcast_key``, else ``hex(HMAC-SHA256(secret, "broadcast-cable"))``; empty (no
    key) with ``--public``, ``--broadcast_key=none`` or no secret."""
    if public or explicit == NONE:
        return ""
    if explicit:
        return explicit
    secret = application_secret(secret)
    return derive_key(secret, "broadcast-cable") if secret else ""


def http_rpc_secret(secret: str, explicit: str = "") -> str:
    """``--http_rpc_secret``, else ``hex(HMAC-SHA256(secret, "rpc-cable"))``; empty: none."""
    if explicit:
        return explicit
    secret = application_secret(secret)
    return derive_key(secret, "rpc-cable") if secret else ""


def jwt_secret(secret: str, explicit: str = "") -> str:
    """``--jwt_secret``, else the application secret itself."""
    return explicit or application_secret(secret)


def streams_secret(secret: str, explicit: str = "") -> str:
    """``--streams_secret``, else the application secret itself."""
    return explicit or application_secret(secret)


def turbo_streams_secret(secret: str, streams: str = "", explicit: str = "") -> str:
    """``--turbo_streams_secret``, else the streams secret."""
    return explicit or streams_secret(secret, streams)
