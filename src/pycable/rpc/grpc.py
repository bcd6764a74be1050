"""gRPC RPC (spec §6.1): the ``anycable.RPC`` service over ``grpc.aio``.

Every call carries the metadata ``sid=<session id>`` and ``protov=v1``. The channel uses
round-robin load balancing over the resolved addresses (``dns:///host:port`` resolves to
several) and keepalive pings every 10 s, also with no call in flight, as anycable-go does.
``grpc-list://h1:p1,h2:p2`` opens one channel per host and alternates between them.

Failures go through :class:`~pycable.rpc.barrier.Barrier`: ``UNAVAILABLE`` and
``RESOURCE_EXHAUSTED`` are retried with backoff until ``--rpc_command_timeout``, every
other code fails the call at once. Python's gRPC has no "reset connect backoff" (which
anycable-go calls when the channel is in ``TRANSIENT_FAILURE``); instead the channel's
reconnect backoff is capped at 1 s, so an application that comes back is found within the
retry budget.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from google.protobuf.runtime_version import VersionError as _VersionError

from pycable.exceptions import ConfigError
from pycable.protocol.session import redact_sid
from pycable.rpc import _results
from pycable.rpc.barrier import UNAVAILABLE, Barrier, CallError
from pycable.rpc.base import CommandResult, ConnectResult, Controller, Env, RestoreNotifier

try:  # generated at build time (setup.py); it checks the installed protobuf and grpcio versions
    from pycable.rpc._pb import anycable_pb2 as pb
    from pycable.rpc._pb import anycable_pb2_grpc as pb_grpc
except (ImportError, RuntimeError, _VersionError) as exc:  # pragma: no cover - depends on the install
    raise ConfigError(
        f"gRPC RPC is unavailable: {exc}. Install it with: pip install 'pycable[grpc]' "
        "(in a source checkout: make install, or make proto after editing anycable.proto)"
    ) from None

if TYPE_CHECKING:
    from pycable.config import Config

__all__ = ["GrpcController", "from_config", "parse_targets", "CHANNEL_OPTIONS"]

log = logging.getLogger("pycable.rpc")

PROTO_VERSIONS = "v1"

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Retries are ours (spec §6.7), not the channel's.
    ("grpc.enable_retries", 0),
]


def parse_targets(host: str) -> list[str]:
    """``--rpc_host`` → gRPC targets: ``grpc-list://a:1,b:2`` → ``["a:1", "b:2"]``."""
    if host.startswith("grpc-list://"):
        targets = [t.strip() for t in host[len("grpc-list://") :].split(",") if t.strip()]
        if not targets:
            raise ConfigError(f"no hosts in --rpc_host {host!r}")
        return targets
    if host.startswith(("http://", "https://")):
        raise ConfigError(f"--rpc_host {host!r} is an HTTP URL: use --rpc_impl=http or drop --rpc_impl=grpc")
    return [host.removeprefix("grpc://")]


def _env(env: Env, *, istate: bool = True) -> Any:
    if istate:
        return pb.Env(url=env.url, headers=env.headers, cstate=env.cstate, istate=env.istate)
    return pb.Env(url=env.url, headers=env.headers, cstate=env.cstate)


class GrpcController:
    """The application over gRPC.

    Args:
        targets: gRPC targets (``host:port``, ``dns:///host:port``, ``unix:path``…).
        barrier: concurrency bound and retry policy.
        tls: use TLS with the system's root certificates.
        restore: make ``Restore`` calls (``--rpc_restore``).
    """

    def __init__(
        self, targets: list[str], *, barrier: Barrier | None = None, tls: bool = False, restore: bool = False
    ) -> None:
        self.targets = targets
        self.barrier = barrier or Barrier(28)
        self.tls = tls
        self.restore_enabled = restore
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: list[Any] = []
        self._next: Iterator[Any] = iter(())

    async def start(self) -> None:
        for target in self.targets:
            if self.tls:
                channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            self._channels.append(channel)
            self._stubs.append(pb_grpc.RPCStub(channel))
        self._next = itertools.cycle(self._stubs)

    async def shutdown(self) -> None:
        channels, self._channels, self._stubs = self._channels, [], []
        for channel in channels:
            await channel.close(grace=1.0)

    def describe(self) -> str:
        return (
            f"RPC controller initialized: {','.join(self.targets)} ({self.barrier.describe()}, impl: grpc, "
            f"enable_tls: {str(self.tls).lower()}, proto_versions: {PROTO_VERSIONS}, "
            f"restore: {str(self.restore_enabled).lower()})"
        )

    # -- Controller ------------------------------------------------------------------------

    async def connect(self, env: Env) -> ConnectResult:
        reply = await self._call("Connect", pb.ConnectionRequest(env=_env(env, istate=False)), env.sid)
        if reply.status != pb.SUCCESS:
            log.debug("connect answered %s sid=%s: %s", reply.status, redact_sid(env.sid), reply.error_msg)
        return _results.connect_result(
            reply.status, reply.identifiers, reply.transmissions, reply.error_msg, reply.env.cstate
        )

    async def command(self, command: str, identifier: str, identifiers: str, data: str, env: Env) -> CommandResult:
        request = pb.CommandMessage(
            command=command, identifier=identifier, connection_identifiers=identifiers, data=data, env=_env(env)
        )
        reply = await self._call("Command", request, env.sid)
        return _results.command_result(
            reply.status,
            disconnect=reply.disconnect,
            stop_streams=reply.stop_streams,
            streams=reply.streams,
            stopped_streams=reply.stopped_streams,
            transmissions=reply.transmissions,
            error_msg=reply.error_msg,
            istate=reply.env.istate,
            cstate=reply.env.cstate,
            presence=(
                (reply.presence.type, reply.presence.id, reply.presence.info) if reply.HasField("presence") else None
            ),
        )

    async def disconnect(self, identifiers: str, subscriptions: list[str], env: Env) -> None:
        request = pb.DisconnectRequest(identifiers=identifiers, subscriptions=subscriptions, env=_env(env))
        reply = await self._call("Disconnect", request, env.sid)
        _results.check_status("disconnect", reply.status, reply.error_msg)

    async def restore(self, identifiers: str, subscriptions: list[str], env: Env, restored_sid: str) -> None:
        """``Restore`` (pycable extension; only with ``--rpc_restore``)."""
        if not self.restore_enabled:
            return
        request = pb.RestoreRequest(
            identifiers=identifiers, subscriptions=subscriptions, sid=env.sid, restored_sid=restored_sid, env=_env(env)
        )
        reply = await self._call("Restore", request, env.sid)
        _results.check_status("restore", reply.status, reply.error_msg)

    # -- transport -------------------------------------------------------------------------

    async def _call(self, method: str, request: Any, sid: str) -> Any:
        if not self._stubs:
            raise CallError(UNAVAILABLE, "the gRPC controller is not started")
        metadata = (("sid", sid), ("protov", PROTO_VERSIONS))

        async def attempt(timeout: float | None) -> Any:
            stub = next(self._next)
            try:
                return await getattr(stub, method)(request, timeout=timeout, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                raise CallError(exc.code().name, exc.details() or "") from None

        return await self.barrier.call(method, attempt)


def from_config(config: Config) -> GrpcController:
    """The registry factory (the default RPC implementation)."""
    barrier = Barrier(
        config.rpc_concurrency,
        config.rpc_request_timeout / 1000 if config.rpc_request_timeout > 0 else None,
        config.rpc_command_timeout / 1000,
    )
    return GrpcController(
        parse_targets(config.rpc_host), barrier=barrier, tls=config.rpc_enable_tls, restore=config.rpc_restore
    )


if TYPE_CHECKING:
    _controller: type[Controller] = GrpcController
    _notifier: type[RestoreNotifier] = GrpcController
