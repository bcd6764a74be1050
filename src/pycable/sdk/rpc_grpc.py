"""gRPC RPC on ``grpc.aio``: the ``anycable.RPC`` service of ``anycable.proto`` (Connect,
Command, Disconnect, and pycable's Restore), answering through the same
:func:`~pycable.sdk.dispatch.dispatch` as HTTP RPC. Needs the ``grpc`` extra.

The session id comes from the call metadata ``sid``. An unexpected failure of ours (never
the application's exceptions, which are ``ERROR`` answers) aborts the call with
``INTERNAL``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from pycable.sdk.dispatch import dispatch

try:
    from pycable.rpc._pb import anycable_pb2 as pb
    from pycable.rpc._pb import anycable_pb2_grpc as pb_grpc
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        f"the gRPC code generated from anycable.proto is unavailable ({exc}): install pycable with the grpc extra, "
        "pip install 'pycable[sdk,grpc]' (it is generated when the package is built; in a source checkout: "
        "make install, or make proto after editing anycable.proto)"
    ) from None

if TYPE_CHECKING:
    from pycable.sdk.application import Application

__all__ = ["grpc_server", "add_service", "Servicer"]

log = logging.getLogger("pycable.sdk")


def _env(env: Any) -> dict[str, Any]:
    return {"url": env.url, "headers": dict(env.headers), "cstate": dict(env.cstate), "istate": dict(env.istate)}


def _env_response(answer: Mapping[str, Any]) -> Any:
    env = answer.get("env")
    if not env:
        return None
    return pb.EnvResponse(cstate=env.get("cstate") or {}, istate=env.get("istate") or {})


def _sid(context: Any) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "sid":
            return str(value)
    return ""


class Servicer(pb_grpc.RPCServicer):  # type: ignore[misc]
    """``anycable.RPC`` for one :class:`~pycable.sdk.Application`."""

    def __init__(self, app: Application) -> None:
        self.app = app

    async def _dispatch(self, method: str, request: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            return await dispatch(self.app, method, request, _sid(context))
        except Exception:
            log.exception("gRPC %s failed", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            raise  # not reached: abort raises

    async def Connect(self, request: Any, context: Any) -> Any:
        answer = await self._dispatch("connect", {"env": _env(request.env)}, context)
        return pb.ConnectionResponse(
            status=answer["status"],
            identifiers=answer.get("identifiers", ""),
            transmissions=answer.get("transmissions", ()),
            error_msg=answer.get("error_msg", ""),
            env=_env_response(answer),
        )

    async def Command(self, request: Any, context: Any) -> Any:
        body = {
            "command": request.command,
            "identifier": request.identifier,
            "connection_identifiers": request.connection_identifiers,
            "data": request.data,
            "env": _env(request.env),
        }
        answer = await self._dispatch("command", body, context)
        presence = answer.get("presence")
        return pb.CommandResponse(
            status=answer["status"],
            disconnect=answer.get("disconnect", False),
            stop_streams=answer.get("stop_streams", False),
            streams=answer.get("streams", ()),
            stopped_streams=answer.get("stopped_streams", ()),
            transmissions=answer.get("transmissions", ()),
            error_msg=answer.get("error_msg", ""),
            env=_env_response(answer),
            presence=pb.PresenceResponse(**presence) if presence else None,
        )

    async def Disconnect(self, request: Any, context: Any) -> Any:
        body = {
            "identifiers": request.identifiers,
            "subscriptions": list(request.subscriptions),
            "env": _env(request.env),
        }
        answer = await self._dispatch("disconnect", body, context)
        return pb.DisconnectResponse(status=answer["status"], error_msg=answer.get("error_msg", ""))

    async def Restore(self, request: Any, context: Any) -> Any:
        body = {
            "identifiers": request.identifiers,
            "subscriptions": list(request.subscriptions),
            "sid": request.sid,
            "restored_sid": request.restored_sid,
            "env": _env(request.env),
        }
        answer = await self._dispatch("restore", body, context)
        return pb.RestoreResponse(status=answer["status"], error_msg=answer.get("error_msg", ""))


def add_service(app: Application, server: Any) -> None:
    """Serve ``anycable.RPC`` for *app* on the ``grpc.aio`` *server*."""
    pb_grpc.add_RPCServicer_to_server(Servicer(app), server)


def grpc_server(app: Application, address: str = "0.0.0.0:50051", **options: Any) -> Any:
    """A ``grpc.aio`` server with the service, listening (once started) on *address*.

    Args:
        app: the application.
        address: ``host:port`` (pycable's ``--rpc_host``).
        options: passed to :func:`grpc.aio.server` (e.g. ``maximum_concurrent_rpcs``).

    Returns:
        The server; ``await server.start()`` serves, ``await server.stop(grace)`` stops.
    """
    server = grpc.aio.server(**options)
    add_service(app, server)
    server.add_insecure_port(address)
    return server
