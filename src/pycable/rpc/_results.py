"""RPC answers → controller results, shared by the gRPC and HTTP controllers (spec §6.3).

``ERROR`` (status 0, also what an empty or malformed answer decodes to) raises
:class:`~pycable.exceptions.RPCError` ``"Application error: <error_msg>"`` and drops the
transmissions; ``SUCCESS`` and ``FAILURE`` become results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pycable.exceptions import RPCError
from pycable.rpc.base import FAILURE, SUCCESS, CommandResult, ConnectResult

__all__ = ["connect_result", "command_result", "check_status", "status_of"]

ERROR = 0
_NAMES = {"ERROR": 0, "SUCCESS": SUCCESS, "FAILURE": FAILURE}


def status_of(value: object) -> int:
    """An enum value as sent: an integer, or its name (proto3 JSON accepts both)."""
    if isinstance(value, bool):
        return ERROR
    if isinstance(value, int):
        return value if value in (SUCCESS, FAILURE) else ERROR
    if isinstance(value, str):
        return _NAMES.get(value, ERROR)
    return ERROR


def check_status(method: str, status: int, error_msg: str) -> None:
    """Raise for an ``ERROR`` answer."""
    if status not in (SUCCESS, FAILURE):
        raise RPCError(f"Application error: {error_msg}" if error_msg else f"Application error ({method})")


def connect_result(
    status: int, identifiers: str, transmissions: Iterable[str], error_msg: str, cstate: Mapping[str, str]
) -> ConnectResult:
    check_status("connect", status, error_msg)
    if status == SUCCESS:
        return ConnectResult(SUCCESS, identifiers, list(transmissions), dict(cstate))
    # The close reason stays "Auth Failed" (spec §1.1); the app's message is for the log.
    return ConnectResult(FAILURE, identifiers, list(transmissions), dict(cstate), error="Auth Failed")


def command_result(
    status: int,
    *,
    disconnect: bool,
    stop_streams: bool,
    streams: Iterable[str],
    stopped_streams: Iterable[str],
    transmissions: Iterable[str],
    error_msg: str,
    istate: Mapping[str, str],
    cstate: Mapping[str, str],
    presence: tuple[str, str, str] | None = None,
) -> CommandResult:
    check_status("command", status, error_msg)
    return CommandResult(
        status,
        disconnect=disconnect,
        stop_streams=stop_streams,
        streams=list(streams),
        stopped_streams=list(stopped_streams),
        transmissions=list(transmissions),
        istate=dict(istate),
        cstate=dict(cstate),
        error=error_msg,
        presence=presence if presence is not None and presence[0] else None,
    )
