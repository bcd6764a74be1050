"""The ``Controller`` role (spec §6): Connect / Command / Disconnect.

Implementations: the RPC-less chain (JWT, noauth, ``$pubsub`` router) in
:mod:`pycable.node.controller`, and the gRPC / HTTP RPC controllers.

Status semantics (§6.3): ``SUCCESS`` and ``FAILURE`` are answers (transmissions are
relayed); an error (``ERROR`` status or a transport failure) raises
:class:`~pycable.exceptions.RPCError` and nothing is relayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "ERROR",
    "SUCCESS",
    "FAILURE",
    "Env",
    "ConnectResult",
    "CommandResult",
    "Controller",
    "RestoreNotifier",
]

ERROR = 0
SUCCESS = 1
FAILURE = 2


@dataclass(slots=True)
class Env:
    """The request environment of one connection (§6.2, §6.4)."""

    url: str
    headers: dict[str, str]
    sid: str
    remote_addr: str = ""
    cstate: dict[str, str] = field(default_factory=dict)
    #: For a Command: the state of that identifier only; for Disconnect: all of them.
    istate: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    subprotocols: tuple[str, ...] = ()


@dataclass(slots=True)
class ConnectResult:
    status: int
    identifiers: str = ""
    transmissions: list[str] = field(default_factory=list)
    cstate: dict[str, str] = field(default_factory=dict)
    #: False when no Disconnect call is wanted (JWT / noauth identification).
    disconnect_interest: bool = True
    #: A close reason for the log ("Auth Failed").
    error: str = ""


@dataclass(slots=True)
class CommandResult:
    status: int
    disconnect: bool = False
    stop_streams: bool = False
    streams: list[str] = field(default_factory=list)
    stopped_streams: list[str] = field(default_factory=list)
    transmissions: list[str] = field(default_factory=list)
    istate: dict[str, str] = field(default_factory=dict)
    cstate: dict[str, str] = field(default_factory=dict)
    disconnect_interest: bool = True
    error: str = ""
    #: ``CommandResponse.presence`` as ``(type, id, info JSON text)``: join or leave the
    #: subscription's presence stream (spec §6.3 step 7).
    presence: tuple[str, str, str] | None = None


class Controller(Protocol):
    """**Protocol:** the application side of a connection."""

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def describe(self) -> str: ...

    async def connect(self, env: Env) -> ConnectResult: ...

    async def command(self, command: str, identifier: str, identifiers: str, data: str, env: Env) -> CommandResult: ...

    async def disconnect(self, identifiers: str, subscriptions: list[str], env: Env) -> None: ...


class RestoreNotifier(Protocol):
    """**Protocol:** a controller that can tell the application about a session restore.

    pycable extension (opt-in ``--rpc_restore``, docs/rpc.md): a restored session makes no
    Connect call (spec §10 "No callbacks on restore"); a controller with this method is told
    instead. Implementations decide themselves whether the call is enabled and must not
    raise anything but :class:`~pycable.exceptions.RPCError`.

    Args:
        identifiers: the restored connection identifiers.
        subscriptions: the restored channel identifiers.
        env: the new request's url and headers; the restored cstate; ``istate`` maps each
            restored identifier to its channel state JSON-encoded (as for Disconnect).
        restored_sid: the session id the client restored from (``env.sid`` is the new one).
    """

    async def restore(self, identifiers: str, subscriptions: list[str], env: Env, restored_sid: str) -> None: ...
