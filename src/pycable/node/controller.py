"""The RPC-less controller chain (spec §7.1): JWT, then noauth, then the ``$pubsub``
router, then the application's RPC controller (if any)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson

from pycable.identity.jwt import EXPIRED, verify_jwt
from pycable.identity.signed import verify_stream
from pycable.protocol import constants as c
from pycable.protocol import messages
from pycable.rpc.base import FAILURE, SUCCESS, CommandResult, ConnectResult, Controller, Env

__all__ = ["LocalController"]

log = logging.getLogger("pycable.node")

TURBO_CHANNEL = c.TURBO_CHANNEL


def _unauthorized(reason: str = c.UNAUTHORIZED) -> ConnectResult:
    return ConnectResult(
        FAILURE, transmissions=[messages.disconnect(reason, False).decode()], error="Auth Failed"
    )


def channel_of(identifier: str) -> tuple[str, dict[str, object]]:
    """``(channel, params)`` of an identifier, or ``("", {})`` if it is not a JSON object."""
    try:
        obj = orjson.loads(identifier)
    except orjson.JSONDecodeError:
        return "", {}
    if not isinstance(obj, dict):
        return "", {}
    channel = obj.get("channel")
    return (channel if isinstance(channel, str) else ""), obj


class LocalController:
    """Identification and built-in channels, delegating everything else to *rpc*.

    Args:
        jwt_secret: verify ``jid`` tokens with this secret (empty: JWT off).
        jwt_param: query parameter / ``X-<param>`` header holding the token.
        enforce_jwt: a connection without a token is unauthorized.
        noauth: accept every connection (``--noauth``/``--public``).
        streams_secret: verify ``signed_stream_name`` (empty: signed streams off).
        public_streams: allow unsigned ``stream_name``.
        streams_whisper: signed streams allow whisper (public streams always do).
        turbo_secret: route ``Turbo::StreamsChannel`` with this secret (empty: off).
        rpc: the application's controller, or ``None`` (no RPC: unknown channels rejected).
        clock: time source for JWT expiry.
    """

    def __init__(
        self,
        *,
        jwt_secret: str = "",
        jwt_param: str = "jid",
        enforce_jwt: bool = False,
        noauth: bool = False,
        streams_secret: str = "",
        public_streams: bool = False,
        streams_whisper: bool = False,
        streams_presence: bool = True,
        turbo_secret: str = "",
        rpc: Controller | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jwt_secret = jwt_secret
        self.jwt_param = jwt_param
        self.enforce_jwt = enforce_jwt
        self.noauth = noauth
        self.streams_secret = streams_secret
        self.public_streams = public_streams
        self.streams_whisper = streams_whisper
        self.streams_presence = streams_presence
        self.turbo_secret = turbo_secret
        self.rpc = rpc
        self.clock = clock

    async def start(self) -> None:
        if self.rpc is not None:
            await self.rpc.start()

    async def shutdown(self) -> None:
        if self.rpc is not None:
            await self.rpc.shutdown()

    def describe(self) -> str:
        lines = []
        if self.jwt_secret:
            lines.append(
                f"JWT authentication is enabled (param: {self.jwt_param}, enforced: {str(self.enforce_jwt).lower()})"
            )
        if self.noauth:
            lines.append("connection authentication is disabled")
        routed = [c.PUBSUB_CHANNEL] + ([TURBO_CHANNEL] if self.turbo_secret else [])
        lines.append("Using channels router: " + ", ".join(routed))
        lines.append(self.rpc.describe() if self.rpc is not None else "RPC is disabled: unknown channels are rejected")
        return "\n".join(lines)

    # -- connect ---------------------------------------------------------------------------

    def _token(self, env: Env) -> str:
        header = env.headers.get(f"x-{self.jwt_param}".lower())
        if header:
            return header
        for proto in env.subprotocols:
            if proto.startswith(c.TOKEN_SUBPROTOCOL_PREFIX):
                return proto[len(c.TOKEN_SUBPROTOCOL_PREFIX) :]
        return env.query.get(self.jwt_param, "")

    def claimed_identity(self, env: Env) -> tuple[bool, str | None]:
        """``(carries, identifiers)``: does the request identify itself (a JWT in the header,
        the query or the subprotocol, when JWT is on), and as whom (``None``: the token is
        not valid now). Restores check it against the session's identifiers."""
        if not self.jwt_secret:
            return False, None
        token = self._token(env)
        if not token:
            return False, None
        return True, verify_jwt(token, self.jwt_secret, self.clock()).identifiers

    async def connect(self, env: Env) -> ConnectResult:
        welcome = messages.welcome(env.sid).decode()
        if self.jwt_secret:
            token = self._token(env)
            if token:
                result = verify_jwt(token, self.jwt_secret, self.clock())
                if result.identifiers is not None:
                    return ConnectResult(SUCCESS, result.identifiers, [welcome], disconnect_interest=False)
                log.debug("JWT rejected: %s", result.error)
                return _unauthorized(c.TOKEN_EXPIRED if result.error == EXPIRED else c.UNAUTHORIZED)
            if self.enforce_jwt:
                return _unauthorized()
        if self.noauth:
            ids = orjson.dumps({"sid": env.sid}).decode()
            return ConnectResult(SUCCESS, ids, [welcome], disconnect_interest=False)
        if self.rpc is not None:
            return await self.rpc.connect(env)
        return _unauthorized()

    # -- commands --------------------------------------------------------------------------

    def _local_stream(self, channel: str, params: dict[str, object]) -> tuple[bool, str | None, bool]:
        """``(routed, stream or None if rejected, whisper allowed)``."""
        if channel == c.PUBSUB_CHANNEL:
            signed = params.get("signed_stream_name")
            if isinstance(signed, str):
                name = verify_stream(signed, self.streams_secret) if self.streams_secret else None
                return True, name, self.streams_whisper
            plain = params.get("stream_name")
            if isinstance(plain, str) and plain and self.public_streams:
                return True, plain, True
            return True, None, False
        if channel == TURBO_CHANNEL and self.turbo_secret:
            signed = params.get("signed_stream_name")
            name = verify_stream(signed, self.turbo_secret) if isinstance(signed, str) else None
            return True, name, False
        return False, None, False

    async def command(
        self, command: str, identifier: str, identifiers: str, data: str, env: Env
    ) -> CommandResult:
        channel, params = channel_of(identifier)
        routed, stream, whisper = self._local_stream(channel, params)
        if not routed:
            if self.rpc is not None:
                return await self.rpc.command(command, identifier, identifiers, data, env)
            if command == c.SUBSCRIBE:
                return CommandResult(FAILURE, transmissions=[messages.reject_subscription(identifier).decode()])
            return CommandResult(FAILURE, error="no RPC configured")
        if command == c.SUBSCRIBE:
            if stream is None:
                return CommandResult(FAILURE, transmissions=[messages.reject_subscription(identifier).decode()])
            istate = {c.WHISPER_STREAM_STATE: stream} if whisper else {}
            if self.streams_presence or whisper:
                istate[c.PRESENCE_STREAM_STATE] = stream
            return CommandResult(
                SUCCESS,
                streams=[stream],
                transmissions=[messages.confirm_subscription(identifier).decode()],
                istate=istate,
                disconnect_interest=False,
            )
        if command == c.UNSUBSCRIBE:
            return CommandResult(SUCCESS, stop_streams=True, disconnect_interest=False)
        return CommandResult(SUCCESS, disconnect_interest=False)  # perform: nothing to do

    async def disconnect(self, identifiers: str, subscriptions: list[str], env: Env) -> None:
        if self.rpc is not None:
            await self.rpc.disconnect(identifiers, subscriptions, env)

    async def restore(self, identifiers: str, subscriptions: list[str], env: Env, restored_sid: str) -> None:
        """Pass a session restore on to the RPC controller, if it takes Restore calls."""
        notify = getattr(self.rpc, "restore", None)
        if notify is not None:
            await notify(identifiers, subscriptions, env, restored_sid)
