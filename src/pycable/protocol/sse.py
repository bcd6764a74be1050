"""Server-Sent Events, sans-I/O: AnyCable's event format and its request parameters.

Each message is one event, ended by a blank line (WHATWG HTML §9.2.6):

* a typed message (welcome, confirm_subscription, ping, disconnect, reject_history, …) is
  ``event: <type>`` then ``data: <the full JSON payload>``;
* a stream message is ``data: <payload>``: for GET requests only its ``message`` part (a
  string as it is, anything else as JSON), for POST requests the full payload;
* with a broker, a stream message has ``id: <offset>/<epoch>/<stream>`` (the stream last: it
  may contain ``/``), which EventSource sends back as ``Last-Event-ID`` when it reconnects;
* a ``disconnect`` with ``reconnect: false`` carries ``retry: 31536000000`` (a year), so that
  EventSource does not come back.

The ``raw`` GET parameter drops every typed message (only data goes out).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import orjson

from pycable.exceptions import HistoryError, ProtocolError
from pycable.protocol import constants as c
from pycable.protocol import messages
from pycable.protocol.broadcast import StreamMessage
from pycable.protocol.encoding import _encoded_data, stream_payload

__all__ = [
    "SSEEncoding",
    "SSE_GET",
    "SSE_POST",
    "SSE_GET_RAW",
    "parse_last_event_id",
    "subscribe_command",
    "event",
]

#: ``retry:`` of a disconnect that must not reconnect (ms): a year, as AnyCable sends it.
RETRY_NO_RECONNECT = 31536000000


def event(data: bytes, kind: str = "", event_id: str = "", retry: int = 0) -> bytes:
    """One event: ``event:``, ``data:`` (one line per line of *data*), ``id:``, ``retry:``."""
    out = b"event: " + kind.encode() + b"\n" if kind else b""
    out += b"".join(b"data: " + line + b"\n" for line in data.split(b"\n"))
    if event_id:
        out += b"id: " + event_id.encode() + b"\n"
    if retry:
        out += b"retry: %d\n" % retry
    return out + b"\n"


def event_id(msg: StreamMessage) -> str:
    return f"{msg.offset}/{msg.epoch}/{msg.stream}" if msg.offset > 0 and msg.epoch and msg.stream else ""


@dataclass(frozen=True, slots=True)
class SSEEncoding:
    """An SSE :class:`~pycable.protocol.encoding.Encoding`.

    Attributes:
        unwrap: data events carry the ``message`` part only (GET).
        raw: typed messages are dropped (``?raw=true``).
    """

    unwrap: bool
    raw: bool = False

    def message(self, payload: bytes) -> bytes:
        kind, reconnect = _peek(payload)
        if not kind:  # a transmission without a type: data, unwrapped for GET
            if self.unwrap:
                try:
                    obj = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    return event(payload)
                if isinstance(obj, dict) and "message" in obj:
                    inner = obj["message"]
                    return event(inner.encode() if isinstance(inner, str) else orjson.dumps(inner))
            return event(payload)
        if self.raw:
            return b""
        retry = RETRY_NO_RECONNECT if kind == c.DISCONNECT and reconnect is False else 0
        return event(payload, kind, retry=retry)

    def stream(self, msg: StreamMessage, identifier: str) -> bytes:
        return _stream_event(msg, identifier, self.unwrap)


@lru_cache(maxsize=8192)
def _stream_event(msg: StreamMessage, identifier: str, unwrap: bool) -> bytes:
    if unwrap:  # the ``message`` value: a string as it is, anything else as JSON
        encoded = _encoded_data(msg.data)
        data = orjson.loads(encoded).encode() if encoded[:1] == b'"' else encoded
    else:
        data = stream_payload(msg, identifier)
    return event(data, event_id=event_id(msg))


def _peek(payload: bytes) -> tuple[str, bool | None]:
    """The ``type`` and ``reconnect`` of a JSON message (``""`` when it has no type)."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "", None
    if not isinstance(obj, dict):
        return "", None
    kind = obj.get("type")
    reconnect = obj.get("reconnect")
    return (kind if isinstance(kind, str) else ""), (reconnect if isinstance(reconnect, bool) else None)


SSE_GET = SSEEncoding(unwrap=True)
SSE_GET_RAW = SSEEncoding(unwrap=True, raw=True)
SSE_POST = SSEEncoding(unwrap=False)


_PING_CACHE: dict[bool, tuple[int, bytes]] = {}


def ping_event(ts: int, raw: bool = False) -> bytes:
    """``event: ping`` for timestamp *ts*, encoded once per timestamp (shared by sessions)."""
    if raw:
        return b""
    cached = _PING_CACHE.get(raw)
    if cached is None or cached[0] != ts:
        cached = _PING_CACHE[raw] = (ts, event(messages.ping(ts), c.PING))
    return cached[1]


# -- requests --------------------------------------------------------------------------------


def parse_last_event_id(value: str) -> tuple[str, str, int] | None:
    """``(stream, epoch, offset)`` of a ``Last-Event-ID`` header, ``None`` if it is not ours.

    Raises:
        HistoryError: it has our shape but a bad offset.
    """
    parts = value.split("/", 2)
    if len(parts) != 3 or not parts[2]:
        return None
    try:
        offset = int(parts[0])
    except ValueError:
        raise HistoryError(f"bad offset in Last-Event-ID: {value!r}") from None
    if offset < 0:
        raise HistoryError(f"bad offset in Last-Event-ID: {value!r}")
    return parts[2], parts[1], offset


def _ident(**fields: str) -> str:
    return orjson.dumps(fields).decode()


def subscribe_command(params: dict[str, str], last_event_id: str = "") -> bytes | None:
    """The subscribe command a GET request asks for (AnyCable's parameters, in its order of
    precedence: ``identifier``, ``channel``, ``stream``, ``signed_stream``,
    ``turbo_signed_stream_name``), with a history request from ``Last-Event-ID`` or
    ``history_since``; ``None`` when no channel is given.

    Raises:
        ProtocolError: a malformed ``history_since`` or ``Last-Event-ID``.
    """
    identifier = params.get("identifier", "")
    if not identifier and params.get("channel"):
        identifier = _ident(channel=params["channel"])
    if not identifier and params.get("stream"):
        identifier = _ident(channel=c.PUBSUB_CHANNEL, stream_name=params["stream"])
    if not identifier and params.get("signed_stream"):
        identifier = _ident(channel=c.PUBSUB_CHANNEL, signed_stream_name=params["signed_stream"])
    if not identifier and params.get("turbo_signed_stream_name"):
        identifier = _ident(channel=c.TURBO_CHANNEL, signed_stream_name=params["turbo_signed_stream_name"])
    if not identifier:
        return None
    cmd: dict[str, object] = {"command": c.SUBSCRIBE, "identifier": identifier}
    history: dict[str, object] = {}
    if last_event_id:
        try:
            position = parse_last_event_id(last_event_id)
        except HistoryError as exc:
            raise ProtocolError(str(exc)) from None
        if position is not None:
            stream, epoch, offset = position
            history["streams"] = {stream: {"offset": offset, "epoch": epoch}}
    since = params.get("history_since", "")
    if since:
        try:
            history["since"] = int(since)
        except ValueError:
            raise ProtocolError(f"bad history_since: {since!r}") from None
    if history:
        cmd["history"] = history
    return orjson.dumps(cmd)
