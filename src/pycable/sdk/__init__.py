"""pycable.sdk: the application side of pycable, in Python.

* :class:`Application`, :class:`Connection`, :class:`Channel`: Action Cable-shaped
  connections and channels, served to pycable over HTTP RPC (:meth:`Application.asgi`) or
  gRPC (:meth:`Application.grpc_server`).
* :func:`broadcast` / :func:`abroadcast` (and batches, remote :func:`disconnect`): publish
  to pycable over HTTP or redisx from anywhere in the application.
* :func:`signed_stream`, :func:`turbo_signed_stream_name`, :func:`jwt_token`: the RPC-less
  helpers.
* :class:`Settings`: the server's ``ANYCABLE_*`` environment, read by the application.

Importing it starts nothing and loads no server code: no ``pycable.node``, no transport, no
backends; gRPC and Redis are imported only when used. Guide: docs/sdk.md.
"""

from __future__ import annotations

from pycable.exceptions import BroadcastError
from pycable.sdk.application import Application, Channel, Connection, Request, current_socket, encode_identifiers
from pycable.sdk.broadcast import (
    HTTPBroadcaster,
    RedisXBroadcaster,
    abroadcast,
    abroadcast_batch,
    adisconnect,
    broadcast,
    broadcast_batch,
    configure,
    disconnect,
    get_broadcaster,
)
from pycable.sdk.config import Settings
from pycable.sdk.tokens import jwt_token, signed_stream, turbo_signed_stream_name, verify_signed_stream

__all__ = [
    "Application",
    "Connection",
    "Channel",
    "Request",
    "current_socket",
    "encode_identifiers",
    "broadcast",
    "abroadcast",
    "broadcast_batch",
    "abroadcast_batch",
    "disconnect",
    "adisconnect",
    "configure",
    "get_broadcaster",
    "HTTPBroadcaster",
    "RedisXBroadcaster",
    "BroadcastError",
    "signed_stream",
    "verify_signed_stream",
    "turbo_signed_stream_name",
    "jwt_token",
    "Settings",
]
