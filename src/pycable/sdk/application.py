"""Connections, channels and the application that routes pycable's RPC calls to them.

The shapes are Action Cable's: a :class:`Connection` subclass authenticates a WebSocket
(``connect``) and names its user (``identified_by``); :class:`Channel` subclasses handle
subscriptions (``subscribed``/``unsubscribed``) and the actions clients ``perform``.

Every object here lives for one RPC call: pycable keeps the state between calls (the
connection's identifiers and :attr:`Connection.state`, each channel's :attr:`Channel.state`)
and sends it back with the next call. What a callback does (transmit, stream, change state,
reject, close) is collected on the objects and turned into the call's answer by
:mod:`pycable.sdk.dispatch`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from pycable.protocol.constants import PRESENCE_STREAM_STATE, WHISPER_STREAM_STATE

if TYPE_CHECKING:
    from pycable.sdk.config import Settings

__all__ = [
    "Application",
    "Connection",
    "Channel",
    "Request",
    "current_socket",
    "encode_identifiers",
    "RunSync",
]

log = logging.getLogger("pycable.sdk")

#: Runs a synchronous callback: in a worker thread (the default), or inline.
RunSync = Callable[..., Awaitable[Any]]

_current_socket: ContextVar[str | None] = ContextVar("pycable_sdk_socket", default=None)


def current_socket() -> str | None:
    """The session id (``sid``) of the RPC call being handled, or ``None`` outside one.

    Pass it as ``exclude_socket`` to broadcast "to others": every subscriber but the client
    whose command is running gets the message (``broadcast(..., to_others=True)`` does it).
    """
    return _current_socket.get()


def encode_identifiers(identifiers: Mapping[str, Any]) -> str:
    """The connection identifiers as pycable stores them: compact JSON with sorted keys, so
    that the same identifiers always give the same string (remote disconnects and JWTs
    compare these strings)."""
    return orjson.dumps(identifiers, option=orjson.OPT_SORT_KEYS).decode()


def decode_identifiers(raw: str) -> dict[str, Any]:
    """The identifiers of a call; anything but a JSON object gives ``{}``."""
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("connection identifiers are not JSON: %.200r", raw)
        return {}
    return value if isinstance(value, dict) else {}


def parse_cookies(header: str) -> dict[str, str]:
    """``a=1; b="x y"`` → ``{"a": "1", "b": "x y"}``; pairs without ``=`` are skipped."""
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out.setdefault(name, unquote(value))
    return out


class Request:
    """The WebSocket request of a connection, as pycable passes it to the application.

    Attributes:
        url: the request URL (``http(s)://host/cable?query``).
        headers: the headers pycable forwards (``--headers``, default ``cookie`` only), with
            lower-case names.
        remote_addr: the client's address.
    """

    def __init__(self, url: str = "", headers: Mapping[str, str] | None = None) -> None:
        self.url = url
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        self.remote_addr = hdrs.pop("remote_addr", "")
        self.headers: dict[str, str] = hdrs

    @cached_property
    def path(self) -> str:
        return urlsplit(self.url).path

    @cached_property
    def query(self) -> dict[str, str]:
        """Query parameters (the last value of a repeated name wins)."""
        return dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))

    @cached_property
    def cookies(self) -> dict[str, str]:
        return parse_cookies(self.headers.get("cookie", ""))

    def __repr__(self) -> str:
        return f"Request(url={self.url!r}, remote_addr={self.remote_addr!r})"


class _Outcome:
    """What the callbacks of one call asked for (read by the dispatcher)."""

    __slots__ = ("transmissions", "rejected", "closed")

    def __init__(self) -> None:
        self.transmissions: list[str] = []
        self.rejected = False
        self.closed = False


def _to_text(data: Any) -> str:
    return data if isinstance(data, str) else orjson.dumps(data).decode()


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn)


class Connection:
    """One client connection. Subclass it and override :meth:`connect` (and, if needed,
    :meth:`disconnect` and :meth:`restored`); sync ``def`` overrides work too.

    Attributes:
        request: the WebSocket request (:class:`Request`).
        sid: the session id pycable gave the connection.
        identifiers: who the connection is (set by :meth:`identified_by`); JSON values.
            Each is readable as an attribute too: ``self.user``.
        state: the connection state (strings), kept by pycable between calls and across
            session restores; change it in any callback.
        restored_sid: in :meth:`restored`, the session id the client restored from.
    """

    def __init__(
        self,
        request: Request,
        *,
        sid: str = "",
        identifiers: Mapping[str, Any] | None = None,
        state: Mapping[str, str] | None = None,
    ) -> None:
        self.request = request
        self.sid = sid
        self.identifiers: dict[str, Any] = dict(identifiers or {})
        self.state: dict[str, str] = dict(state or {})
        self.restored_sid = ""
        self._outcome = _Outcome()

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: identifiers as attributes (self.user).
        if not name.startswith("_"):
            identifiers = self.__dict__.get("identifiers")
            if identifiers is not None and name in identifiers:
                return identifiers[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute or identifier {name!r}")

    # -- what callbacks call -----------------------------------------------------------------

    def identified_by(self, **identifiers: Any) -> None:
        """Identify the connection (in :meth:`connect`): ``self.identified_by(user="ann")``.

        The values must be JSON-serialisable; pycable passes them back with every call.
        """
        self.identifiers.update(identifiers)

    def reject(self) -> None:
        """Refuse the connection (in :meth:`connect`): the client gets
        ``{"type":"disconnect","reason":"unauthorized","reconnect":false}`` and is closed."""
        self._outcome.rejected = True

    def transmit(self, data: Any) -> None:
        """Send *data* (a string as is, anything else as JSON) to this client as a raw
        Action Cable message."""
        self._outcome.transmissions.append(_to_text(data))

    def close(self) -> None:
        """Close the client's connection once the current command is handled."""
        self._outcome.closed = True

    # -- override ----------------------------------------------------------------------------

    async def connect(self) -> None:
        """A client connects: call :meth:`identified_by` or :meth:`reject`. The default
        accepts everyone, anonymously."""

    async def disconnect(self) -> None:
        """The client went away (called after every channel's ``unsubscribed``)."""

    async def restored(self) -> None:
        """The client's session was restored by pycable (``--rpc_restore``): no
        :meth:`connect` was made for it. :attr:`restored_sid` is the old session id. The
        answer is only logged: transmissions and rejections have no effect here."""


class Channel:
    """A channel. Subclass it; the name clients subscribe with is the class name, or
    ``channel_name`` when the class sets it.

    Actions are the public methods declared on the subclass (not those of :class:`Channel`
    itself): ``def speak(self, data)`` (sync or ``async``) answers
    ``perform("speak", {...})`` with the whole ``data`` dict (``data["action"]`` included).
    Anything else a client asks for gets an error answer.

    Attributes:
        connection: the client's :class:`Connection` (with its identifiers and state).
        identifier: the subscription identifier (JSON) as the client sent it.
        params: the identifier's parameters, ``channel`` left out.
        state: this subscription's state (strings), kept by pycable between calls.
    """

    channel_name: ClassVar[str] = "Channel"
    _actions: ClassVar[dict[str, tuple[bool, bool]]] = {}
    _async: ClassVar[dict[str, bool]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "channel_name" not in cls.__dict__:
            cls.channel_name = cls.__name__
        base = set(dir(Channel))
        actions: dict[str, tuple[bool, bool]] = {}
        for name in dir(cls):
            if name.startswith("_") or name in base:
                continue
            fn = inspect.getattr_static(cls, name)
            if not inspect.isfunction(fn):
                continue  # properties, static and class methods, attributes
            params = [
                p
                for p in list(inspect.signature(fn).parameters.values())[1:]
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
            ]
            actions[name] = (_is_async(fn), bool(params))
        cls._actions = actions
        cls._async = {name: _is_async(getattr(cls, name)) for name in ("subscribed", "unsubscribed", "restored")}

    def __init__(
        self,
        connection: Connection,
        identifier: str,
        params: Mapping[str, Any] | None = None,
        state: Mapping[str, str] | None = None,
    ) -> None:
        self.connection = connection
        self.identifier = identifier
        self.params: dict[str, Any] = dict(params or {})
        self.state: dict[str, str] = dict(state or {})
        self._streams: list[str] = []
        self._stopped: list[str] = []
        self._stop_all = False
        self._rejected = False
        #: ``(type, id, info JSON)`` for the answer's ``presence`` (join / leave).
        self._presence: tuple[str, str, str] | None = None

    @classmethod
    def actions(cls) -> frozenset[str]:
        """The names clients may ``perform``."""
        return frozenset(cls._actions)

    # -- what callbacks call -----------------------------------------------------------------

    def stream_from(self, name: str, whisper: bool = False, presence: bool = False) -> None:
        """Deliver broadcasts on stream *name* to this subscription. With *whisper*, the
        client may also whisper on it (to the stream's other subscribers). With *presence*,
        it is the subscription's presence stream: the client may ``join``/``leave`` it and
        ask who is there, and :meth:`join_presence` joins it (docs/presence.md)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a stream name is a non-empty string, got {name!r}")
        self._streams.append(name)
        if whisper:
            self.state[WHISPER_STREAM_STATE] = name
        if presence:
            self.state[PRESENCE_STREAM_STATE] = name

    def join_presence(self, id: str | int, info: Any = None) -> None:
        """Join this subscription's presence stream (set by ``stream_from(..., presence=True)``,
        in this call or an earlier one) as *id* with *info* (any JSON value): every subscriber
        of the stream gets ``{"type":"join","id":...,"info":...}`` and ``info`` lists it.

        Raises:
            ValueError: no presence stream, or an id that is not 1 to 256 characters.
        """
        if not self.state.get(PRESENCE_STREAM_STATE):
            raise ValueError("join_presence needs a presence stream: call stream_from(name, presence=True) first")
        if isinstance(id, bool) or not isinstance(id, (str, int)) or not 1 <= len(str(id)) <= 256:
            raise ValueError(f"a presence id is a string or an integer of 1 to 256 characters, got {id!r}")
        self._presence = ("join", str(id), "" if info is None else orjson.dumps(info).decode())

    def leave_presence(self) -> None:
        """Leave this subscription's presence stream (its other subscribers get ``leave``
        when no other session holds the id)."""
        self._presence = ("leave", "", "")

    def stop_stream_from(self, name: str) -> None:
        """Stop delivering stream *name* to this subscription."""
        self._stopped.append(name)

    def stop_all_streams(self) -> None:
        """Stop every stream of this subscription (streams added after it in the same call
        stay)."""
        self._stop_all = True
        self._streams.clear()
        self._stopped.clear()

    def reject(self) -> None:
        """Refuse the subscription (in :meth:`subscribed`): the client gets
        ``reject_subscription``."""
        self._rejected = True

    def transmit(self, data: Any) -> None:
        """Send *data* to this subscription only: ``{"identifier": ..., "message": data}``."""
        self.connection._outcome.transmissions.append(
            orjson.dumps({"identifier": self.identifier, "message": data}).decode()
        )

    # -- override ----------------------------------------------------------------------------

    async def subscribed(self) -> None:
        """A client subscribes: stream, transmit, or :meth:`reject`. The default accepts."""

    async def unsubscribed(self) -> None:
        """The client unsubscribed or went away."""

    async def restored(self) -> None:
        """The subscription came back with a restored session (``--rpc_restore``)."""


class Application:
    """The application pycable calls: one :class:`Connection` class and the channels.

    Args:
        connection: the :class:`Connection` subclass (default: accept everyone).
        channels: :class:`Channel` subclasses, each under its ``channel_name``.
        settings: default :meth:`Settings.from_env() <pycable.sdk.config.Settings.from_env>`;
            given explicitly, they also become the defaults of the module-level
            ``broadcast()`` functions.
        sync_callbacks: where sync ``def`` callbacks and actions run: ``"thread"`` (a worker
            thread, so they may block, e.g. on Django's ORM) or ``"inline"`` (on the event
            loop: only for callbacks that never block).

    Raises:
        ValueError: two channels with one name, or a class that is not a Channel.
    """

    def __init__(
        self,
        connection: type[Connection] = Connection,
        channels: Iterable[type[Channel]] = (),
        *,
        settings: Settings | None = None,
        sync_callbacks: Literal["thread", "inline"] = "thread",
    ) -> None:
        if not (isinstance(connection, type) and issubclass(connection, Connection)):
            raise ValueError(f"connection must be a Connection subclass, got {connection!r}")
        if sync_callbacks not in ("thread", "inline"):
            raise ValueError(f"sync_callbacks must be 'thread' or 'inline', got {sync_callbacks!r}")
        self.connection_class = connection
        self.channels: dict[str, type[Channel]] = {}
        for channel in channels:
            self.register(channel)
        self.run_sync: RunSync = asyncio.to_thread if sync_callbacks == "thread" else _inline
        self.connection_async = {
            name: _is_async(getattr(connection, name)) for name in ("connect", "disconnect", "restored")
        }
        self._settings = settings
        if settings is not None:
            from pycable.sdk.broadcast import configure

            configure(settings)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from pycable.sdk.config import Settings

            self._settings = Settings.from_env()
        return self._settings

    def register(self, channel: type[Channel]) -> type[Channel]:
        """Add a channel (usable as a class decorator)."""
        if not (isinstance(channel, type) and issubclass(channel, Channel)) or channel is Channel:
            raise ValueError(f"channels must be Channel subclasses, got {channel!r}")
        name = channel.channel_name
        if name in self.channels and self.channels[name] is not channel:
            raise ValueError(f"two channels named {name!r}: {self.channels[name]!r} and {channel!r}")
        self.channels[name] = channel
        return channel

    async def handle(self, method: str, request: Mapping[str, Any], sid: str = "") -> dict[str, Any]:
        """Answer one RPC call (see :func:`pycable.sdk.dispatch.dispatch`)."""
        from pycable.sdk.dispatch import dispatch

        return await dispatch(self, method, request, sid)

    def asgi(self, *, secret: str | None = None, max_body_size: int = 16 << 20) -> Any:
        """An ASGI application serving HTTP RPC (``POST .../connect``, ``/command``,
        ``/disconnect``, ``/restore``) wherever it is mounted.

        Args:
            secret: the bearer token pycable sends (default: the settings'
                ``effective_http_rpc_secret``; empty: no check).
            max_body_size: larger request bodies get 413.
        """
        from pycable.sdk.rpc_http import RPCApp

        if secret is None:
            secret = self.settings.effective_http_rpc_secret
        return RPCApp(self, secret=secret, max_body_size=max_body_size)

    def grpc_server(self, address: str = "0.0.0.0:50051", **server_options: Any) -> Any:
        """A ``grpc.aio`` server serving ``anycable.RPC`` on *address* (needs the ``grpc``
        extra). Start it with ``await server.start()``."""
        from pycable.sdk.rpc_grpc import grpc_server

        return grpc_server(self, address, **server_options)

    def add_grpc_service(self, server: Any) -> None:
        """Serve ``anycable.RPC`` on an existing ``grpc.aio`` server."""
        from pycable.sdk.rpc_grpc import add_service

        add_service(self, server)


async def _inline(fn: Callable[..., Any], /, *args: Any) -> Any:
    return fn(*args)


def set_current_socket(sid: str | None) -> Any:
    """Set :func:`current_socket` for the call being handled; returns the reset token."""
    return _current_socket.set(sid)


def reset_current_socket(token: Any) -> None:
    _current_socket.reset(token)
