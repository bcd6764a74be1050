"""RPC-less helpers: signed stream names, Turbo stream names and JWT identification tokens,
made exactly as pycable verifies them (docs/protocol.md).

* :func:`signed_stream` signs a stream name for the ``$pubsub`` channel
  (``{"channel":"$pubsub","signed_stream_name":...}``) with the streams secret;
* :func:`turbo_signed_stream_name` signs the name of a ``Turbo::StreamsChannel``
  subscription (``--turbo_streams``) with the Turbo secret;
* :func:`jwt_token` mints the token a client passes as ``?jid=`` (or ``X-JID``) so that
  pycable identifies the connection without calling the application.

Secrets default to the environment (:class:`~pycable.sdk.config.Settings`), derived from
``ANYCABLE_SECRET`` as the server derives them; pass ``secret=`` to override.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pycable.identity.signed import sign_stream, verify_stream
from pycable.sdk.application import encode_identifiers
from pycable.sdk.config import Settings

__all__ = ["signed_stream", "verify_signed_stream", "turbo_signed_stream_name", "jwt_token"]


def _secret(explicit: str | None, settings: Settings | None, attr: str, what: str) -> str:
    secret = explicit if explicit is not None else getattr(settings or Settings.from_env(), attr)
    if not secret:
        raise ValueError(f"no {what}: set ANYCABLE_SECRET (or the specific secret) or pass secret=")
    return str(secret)


def signed_stream(name: str, *, secret: str | None = None, settings: Settings | None = None) -> str:
    """The signed form of stream *name* (Rails MessageVerifier format, which pycable checks
    with ``--streams_secret``, default ``--secret``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a stream name is a non-empty string, got {name!r}")
    return sign_stream(name, _secret(secret, settings, "effective_streams_secret", "streams secret"))


def verify_signed_stream(signed: str, *, secret: str | None = None, settings: Settings | None = None) -> str | None:
    """The stream name inside *signed*, or ``None`` when the signature is not valid."""
    return verify_stream(signed, _secret(secret, settings, "effective_streams_secret", "streams secret"))


def turbo_signed_stream_name(*streamables: Any, secret: str | None = None, settings: Settings | None = None) -> str:
    """The ``signed_stream_name`` of a Turbo Streams subscription: the streamables joined
    with ``:`` as turbo-rails does (an object with a ``to_param()`` method gives its result,
    anything else its ``str()``; lists are flattened), signed with the Turbo secret."""
    if not streamables:
        raise ValueError("turbo_signed_stream_name needs at least one streamable")
    name = ":".join(_param(s) for s in streamables)
    return sign_stream(name, _secret(secret, settings, "effective_turbo_streams_secret", "Turbo streams secret"))


def _param(streamable: Any) -> str:
    if isinstance(streamable, (list, tuple)):
        return ":".join(_param(s) for s in streamable)
    to_param = getattr(streamable, "to_param", None)
    if callable(to_param):
        return str(to_param())
    return str(streamable)


def jwt_token(
    identifiers: Mapping[str, Any],
    ttl: float | None = 3600,
    *,
    secret: str | None = None,
    settings: Settings | None = None,
    now: float | None = None,
) -> str:
    """A JWT (HS256) identifying a connection: claims ``{"ext": <identifiers JSON>, "exp",
    "iat"}``, as the AnyCable SDKs issue them. pycable verifies it with ``--jwt_secret``
    (default ``--secret``) and uses ``ext`` as the connection identifiers, so
    :func:`~pycable.sdk.disconnect` with the same identifiers reaches the connection.

    Args:
        identifiers: JSON-serialisable values (``{"user": "ann"}``).
        ttl: seconds the token is valid; ``None``: no expiry.
        now: the issue time (default: the clock).
    """
    import jwt  # PyJWT (the `sdk` extra)

    issued = time.time() if now is None else now
    claims: dict[str, Any] = {"ext": encode_identifiers(identifiers), "iat": int(issued)}
    if ttl is not None:
        claims["exp"] = int(issued + ttl)
    return jwt.encode(claims, _secret(secret, settings, "effective_jwt_secret", "JWT secret"), algorithm="HS256")
