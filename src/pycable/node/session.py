"""Per-connection state kept by the node (spec §6.4) and its session-cache entry (§3.4)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from pycable.protocol.broadcast import StreamMessage
from pycable.protocol.delivery import StreamCursor
from pycable.protocol.encoding import Encoding
from pycable.rpc.base import Env

__all__ = ["Connection", "Session", "Subscription", "CacheEntry"]


class Connection(Protocol):
    """What the node needs from a transport connection (re-exported by :mod:`pycable.node.port`)."""

    @property
    def encoding(self) -> Encoding:
        """How messages become bytes for this connection."""
        ...

    @property
    def frame_writer(self) -> Callable[[bytes], None]:
        """The fan-out's writer: as fast as the transport allows (for a socket, its ``write``
        itself). The hub stops using it once the transport reports the session closing
        (``NodePort.closing``); after the socket is gone it may raise ``RuntimeError``, and
        the hub then stops using it too."""
        ...

    def send_frame(self, frame: bytes) -> None:
        """Write bytes already encoded with :attr:`encoding`; never blocks (buffers are capped
        by the transport)."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Close the connection (*code* and *reason* as a WebSocket close frame has them)."""
        ...

    def ready(self) -> None:
        """Restore-or-Connect succeeded: the session's commands may run."""
        ...


class Subscription:
    """One channel subscription: its identifier and a delivery cursor per stream."""

    __slots__ = ("identifier", "streams")

    def __init__(self, identifier: str) -> None:
        self.identifier = identifier
        self.streams: dict[str, StreamCursor[StreamMessage]] = {}


class Session:
    """A connected client as the node sees it.

    Attributes:
        sid: this connection's session id.
        ext: the ``actioncable-v1-ext-json`` subprotocol was negotiated.
        resumable: its state goes to the broker's session cache.
        identifiers: the connection identifiers from Connect, JWT or a restore.
        cstate: connection state; istate: channel state per identifier.
        subscriptions: confirmed subscriptions by identifier.
        pending: identifiers whose subscribe is in flight.
    """

    __slots__ = (
        "sid",
        "conn",
        "env",
        "ext",
        "resumable",
        "identifiers",
        "istate",
        "subscriptions",
        "pending",
        "connected",
        "closed",
        "disconnect_interest",
        "hold_timer",
        "auth_task",
    )

    def __init__(self, sid: str, conn: Connection, env: Env, ext: bool = False, resumable: bool = False):
        self.sid = sid
        self.conn = conn
        self.env = env
        self.ext = ext
        self.resumable = resumable
        self.identifiers = ""
        self.istate: dict[str, dict[str, str]] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.pending: set[str] = set()
        self.connected = False
        self.closed = False
        self.disconnect_interest = False
        self.hold_timer: Any = None
        #: Restore-or-Connect in flight (cancelled if the client leaves before it ends, §6.7).
        self.auth_task: Any = None

    @property
    def cstate(self) -> dict[str, str]:
        return self.env.cstate

    def send(self, payload: bytes) -> None:
        """Encode and send one JSON payload."""
        if not self.closed:
            conn = self.conn
            conn.send_frame(conn.encoding.message(payload))

    def send_frame(self, frame: bytes) -> None:
        if not self.closed:
            self.conn.send_frame(frame)

    def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.conn.close(code, reason)

    def to_cache_entry(self) -> bytes:
        """The session-cache entry, in anycable-go's format (``Disconnectable`` capitalised)."""
        return orjson.dumps(
            {
                "ids": self.identifiers,
                "subs": {ident: list(sub.streams) for ident, sub in self.subscriptions.items()},
                "cstate": self.env.cstate,
                "istate": {k: v for k, v in self.istate.items() if v},
                "Disconnectable": self.disconnect_interest,
            }
        )


@dataclass(slots=True)
class CacheEntry:
    """A decoded session-cache entry."""

    ids: str
    subs: dict[str, list[str]] = field(default_factory=dict)
    cstate: dict[str, str] = field(default_factory=dict)
    istate: dict[str, dict[str, str]] = field(default_factory=dict)
    disconnectable: bool = False

    @classmethod
    def decode(cls, raw: bytes) -> CacheEntry | None:
        """Parse an entry; ``None`` if it is malformed (then the restore falls back to Connect)."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("ids", ""), str):
            return None
        subs, cstate, istate = obj.get("subs") or {}, obj.get("cstate") or {}, obj.get("istate") or {}
        if not (isinstance(subs, dict) and isinstance(cstate, dict) and isinstance(istate, dict)):
            return None
        if not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in subs.values()):
            return None
        return cls(
            obj.get("ids", ""),
            subs,
            {str(k): str(v) for k, v in cstate.items()},
            {k: dict(v) for k, v in istate.items() if isinstance(v, dict)},
            bool(obj.get("Disconnectable", False)),
        )
