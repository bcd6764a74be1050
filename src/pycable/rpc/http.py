"""HTTP RPC (spec §6.6): the RPC methods as JSON ``POST`` requests to the application.

``POST <rpc_host>/connect``, ``/command``, ``/disconnect`` (and ``/restore`` with
``--rpc_restore``, a pycable extension). Bodies are the proto messages of
``anycable.proto`` as JSON with snake_case field names, integer enums and empty fields
omitted; answers are parsed the same way (enum names are accepted too).

Headers: ``Content-Type: application/json``; ``Authorization: Bearer <secret>`` where the
secret is ``--http_rpc_secret`` or ``hex(HMAC-SHA256(--secret, "rpc-cable"))``;
``X-Anycable-Meta-Sid`` and ``X-Anycable-Meta-Protov: v1``.

Answer mapping (then the retry policy of :mod:`pycable.rpc.barrier` applies):

=================  ==========================================
200                the body is parsed
401                ``UNAUTHENTICATED``
400 / 422          ``INVALID_ARGUMENT``
other status       ``UNKNOWN``
network error      ``UNAVAILABLE`` (retried)
timeout            ``DEADLINE_EXCEEDED``
TLS error          ``UNAUTHENTICATED``
breaker open       fails at once, not retried
=================  ==========================================

The per-attempt deadline is ``--rpc_request_timeout``, 3000 ms when it is 0.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any

import orjson

from pycable.exceptions import ConfigError, RPCError
from pycable.identity.secrets import http_rpc_secret
from pycable.protocol.session import redact_sid
from pycable.rpc import _results
from pycable.rpc._http11 import HttpClient, HttpProtocolError, HttpResponse
from pycable.rpc.barrier import (
    DEADLINE_EXCEEDED,
    INVALID_ARGUMENT,
    UNAUTHENTICATED,
    UNAVAILABLE,
    UNKNOWN,
    Barrier,
    CallError,
)
from pycable.rpc.base import SUCCESS, CommandResult, ConnectResult, Controller, Env, RestoreNotifier
from pycable.rpc.breaker import CircuitBreaker

if TYPE_CHECKING:
    from pycable.config import Config

__all__ = ["HttpController", "from_config", "encode_env"]

log = logging.getLogger("pycable.rpc")

DEFAULT_REQUEST_TIMEOUT = 3.0
PROTO_VERSIONS = "v1"


def encode_env(env: Env, *, istate: bool = True) -> dict[str, Any]:
    """The ``Env`` message as JSON (empty fields omitted)."""
    out: dict[str, Any] = {}
    if env.url:
        out["url"] = env.url
    if env.headers:
        out["headers"] = env.headers
    if env.cstate:
        out["cstate"] = env.cstate
    if istate and env.istate:
        out["istate"] = env.istate
    return out


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else ("" if v is None else str(v)) for k, v in value.items()}


def _str_list(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str)]


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _presence(value: object) -> tuple[str, str, str] | None:
    """``presence`` of a Command reply: ``{"type", "id", "info"}`` (info is JSON text)."""
    if not isinstance(value, dict):
        return None
    return _str(value.get("type")), _str(value.get("id")), _str(value.get("info"))


def _env_of(reply: dict[str, Any]) -> dict[str, Any]:
    env = reply.get("env")
    return env if isinstance(env, dict) else {}


class HttpController:
    """The application over HTTP RPC.

    Args:
        base_url: ``--rpc_host`` (``http://app:3000/_anycable``).
        secret: the bearer token (empty: no ``Authorization`` header).
        barrier: concurrency bound and retry policy.
        restore: make Restore calls (``--rpc_restore``).
        breaker: the circuit breaker (default: anycable-go's settings).
        ssl_context: for ``https://`` hosts.
    """

    def __init__(
        self,
        base_url: str,
        *,
        secret: str = "",
        barrier: Barrier | None = None,
        restore: bool = False,
        breaker: CircuitBreaker | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.barrier = barrier or Barrier(28, DEFAULT_REQUEST_TIMEOUT)
        if self.barrier.request_timeout is None:
            self.barrier.request_timeout = DEFAULT_REQUEST_TIMEOUT
        self.client = HttpClient(base_url, max_idle=max(self.barrier.concurrency, 8), ssl_context=ssl_context)
        self.base_url = base_url
        self.secret = secret
        self.restore_enabled = restore
        self.breaker = breaker or CircuitBreaker()

    async def start(self) -> None:
        pass

    async def shutdown(self) -> None:
        await self.client.close()

    def describe(self) -> str:
        return (
            f"RPC controller initialized: {self.base_url} ({self.barrier.describe()}, impl: http, "
            f"proto_versions: {PROTO_VERSIONS}, restore: {str(self.restore_enabled).lower()})"
        )

    # -- Controller ------------------------------------------------------------------------

    async def connect(self, env: Env) -> ConnectResult:
        body = {"env": encode_env(env, istate=False)}
        reply = await self._call("connect", body, env.sid)
        status = _results.status_of(reply.get("status"))
        if status != SUCCESS:
            log.debug("connect answered %s sid=%s: %s", status, redact_sid(env.sid), _str(reply.get("error_msg")))
        return _results.connect_result(
            status,
            _str(reply.get("identifiers")),
            _str_list(reply.get("transmissions")),
            _str(reply.get("error_msg")),
            _str_map(_env_of(reply).get("cstate")),
        )

    async def command(self, command: str, identifier: str, identifiers: str, data: str, env: Env) -> CommandResult:
        body: dict[str, Any] = {"command": command, "identifier": identifier}
        if identifiers:
            body["connection_identifiers"] = identifiers
        if data:
            body["data"] = data
        body["env"] = encode_env(env)
        reply = await self._call("command", body, env.sid)
        reply_env = _env_of(reply)
        return _results.command_result(
            _results.status_of(reply.get("status")),
            disconnect=reply.get("disconnect") is True,
            stop_streams=reply.get("stop_streams") is True,
            streams=_str_list(reply.get("streams")),
            stopped_streams=_str_list(reply.get("stopped_streams")),
            transmissions=_str_list(reply.get("transmissions")),
            error_msg=_str(reply.get("error_msg")),
            istate=_str_map(reply_env.get("istate")),
            cstate=_str_map(reply_env.get("cstate")),
            presence=_presence(reply.get("presence")),
        )

    async def disconnect(self, identifiers: str, subscriptions: list[str], env: Env) -> None:
        body: dict[str, Any] = {}
        if identifiers:
            body["identifiers"] = identifiers
        if subscriptions:
            body["subscriptions"] = subscriptions
        body["env"] = encode_env(env)
        reply = await self._call("disconnect", body, env.sid)
        _results.check_status("disconnect", _results.status_of(reply.get("status")), _str(reply.get("error_msg")))

    async def restore(self, identifiers: str, subscriptions: list[str], env: Env, restored_sid: str) -> None:
        """``POST /restore`` (pycable extension; only with ``--rpc_restore``)."""
        if not self.restore_enabled:
            return
        body: dict[str, Any] = {}
        if identifiers:
            body["identifiers"] = identifiers
        if subscriptions:
            body["subscriptions"] = subscriptions
        body["sid"] = env.sid
        if restored_sid:
            body["restored_sid"] = restored_sid
        body["env"] = encode_env(env)
        reply = await self._call("restore", body, env.sid)
        _results.check_status("restore", _results.status_of(reply.get("status")), _str(reply.get("error_msg")))

    # -- transport -------------------------------------------------------------------------

    def headers(self, sid: str) -> dict[str, str]:
        out = {"Content-Type": "application/json"}
        if self.secret:
            out["Authorization"] = f"Bearer {self.secret}"
        out["X-Anycable-Meta-Sid"] = sid
        out["X-Anycable-Meta-Protov"] = PROTO_VERSIONS
        return out

    async def _call(self, name: str, body: dict[str, Any], sid: str) -> dict[str, Any]:
        payload = orjson.dumps(body)
        headers = self.headers(sid)

        async def attempt(timeout: float | None) -> HttpResponse:
            return await self._post(name, payload, headers, timeout)

        response = await self.barrier.call(name, attempt)
        try:
            reply = orjson.loads(response.body) if response.body.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise RPCError(f"HTTP RPC {name}: the answer is not JSON: {exc}") from None
        if not isinstance(reply, dict):
            raise RPCError(f"HTTP RPC {name}: the answer is not a JSON object")
        return reply

    async def _post(self, name: str, payload: bytes, headers: dict[str, str], timeout: float | None) -> HttpResponse:
        token = self.breaker.allow()
        if token is None:
            raise RPCError("http rpc is temporarily unavailable")
        try:
            response = await self.client.post(name, payload, headers, timeout)
        except TimeoutError:
            raise CallError(DEADLINE_EXCEEDED, "request timeout") from None
        except ssl.SSLError as exc:
            self.breaker.record(token, False)
            raise CallError(UNAUTHENTICATED, f"TLS error: {exc}") from None
        except (OSError, HttpProtocolError) as exc:
            self.breaker.record(token, False)
            raise CallError(UNAVAILABLE, str(exc) or type(exc).__name__) from None
        self.breaker.record(token, True)
        status = response.status
        if status == 200:
            return response
        reason = response.body[:200].decode("utf-8", "replace")
        if status == 401:
            raise CallError(UNAUTHENTICATED, "http returned 401")
        if status in (400, 422):
            raise CallError(INVALID_ARGUMENT, reason or f"http returned {status}")
        raise CallError(UNKNOWN, f"http returned {status}: {reason}")


def from_config(config: Config) -> HttpController:
    """The registry factory (``--rpc_impl=http`` or an ``http(s)://`` ``--rpc_host``)."""
    host = config.rpc_host
    if not host.startswith(("http://", "https://")):
        raise ConfigError(f"HTTP RPC needs an http:// or https:// --rpc_host, got {host!r}")
    secret = http_rpc_secret(config.secret, config.http_rpc_secret)
    barrier = Barrier(
        config.rpc_concurrency,
        (config.rpc_request_timeout or DEFAULT_REQUEST_TIMEOUT * 1000) / 1000,
        config.rpc_command_timeout / 1000,
    )
    return HttpController(host, secret=secret, barrier=barrier, restore=config.rpc_restore)


if TYPE_CHECKING:
    _controller: type[Controller] = HttpController
    _notifier: type[RestoreNotifier] = HttpController
