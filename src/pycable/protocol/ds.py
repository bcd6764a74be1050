"""Durable Streams, the pure parts: offsets, headers, cursors, ETags, producers, JSON mode, SSE.

The Durable Streams protocol serves a stream's history over plain HTTP: GET from an opaque
offset (catch-up, long-poll or SSE), and PUT/POST/HEAD/DELETE to create, append to, inspect
and delete streams. Nothing here does I/O or reads the clock: ``now`` and random jitter
are arguments, so ``tests/protocol/test_ds.py`` runs without an event loop.

Offsets. A DS offset names a position of the broker's history: the broker's epoch and the
offset of the last message read. The token is ``<16-digit offset>_<epoch>``, so tokens of
one stream sort lexicographically in stream order (the epoch is the same for every token
of a live history). AnyCable's own form ``<offset>::<epoch>`` is accepted too. Anything
else but the sentinels ``-1`` (the start) and ``now`` (the tail) is malformed (400); a
well-formed token of another epoch or past the tail names no position of this history and
is rejected by the reader (410/400).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

__all__ = [
    "Offset",
    "START",
    "NOW",
    "OffsetError",
    "parse_offset",
    "encode_offset",
    "media_type",
    "is_json",
    "is_text",
    "parse_ttl",
    "parse_expires_at",
    "is_closed_header",
    "ProducerHeaders",
    "parse_producer",
    "ProducerState",
    "ProducerVerdict",
    "check_producer",
    "StreamMeta",
    "split_json_append",
    "json_body",
    "sse_event",
    "control_event",
    "response_cursor",
    "etag",
    "MAX_SAFE_INTEGER",
]

START = "-1"
NOW = "now"
MAX_SAFE_INTEGER = (1 << 53) - 1
#: The cursor clock of the protocol: 20-second intervals from 2024-10-09T00:00:00Z.
CURSOR_EPOCH = 1728432000.0
CURSOR_INTERVAL = 20
MAX_JITTER = 3600

_TOKEN = re.compile(r"(\d{16})_([A-Za-z0-9_-]{1,64})")
_ANYCABLE_TOKEN = re.compile(r"(\d{1,19})::([A-Za-z0-9_-]{1,64})")
_TTL = re.compile(r"0|[1-9][0-9]{0,17}")
_INT = re.compile(r"[0-9]{1,20}")
_MEDIA = re.compile(r"[\w.+-]+/[\w.+-]+")


class OffsetError(ValueError):
    """A malformed offset (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Offset:
    """A decoded position: the messages after *offset* in *epoch*."""

    offset: int
    epoch: str


def encode_offset(epoch: str, offset: int) -> str:
    """The opaque token of (*epoch*, *offset*); sorts in stream order within an epoch."""
    return f"{offset:016d}_{epoch}"


def parse_sub_offset(raw: str) -> int:
    """``Stream-Fork-Sub-Offset``: a non-negative decimal integer, as :func:`parse_ttl`."""
    return _decimal(raw, "Stream-Fork-Sub-Offset")


def parse_offset(raw: str) -> Offset | str:
    """``-1``/``now`` (returned as is) or a decoded token.

    Raises:
        OffsetError: empty or malformed (commas, spaces, slashes, unknown shapes…).
    """
    if raw in (START, NOW):
        return raw
    match = _TOKEN.fullmatch(raw) or _ANYCABLE_TOKEN.fullmatch(raw)
    if match is None:
        raise OffsetError(f"malformed offset {raw[:64]!r}")
    return Offset(int(match.group(1)), match.group(2))


# -- content types -------------------------------------------------------------------------


def media_type(content_type: str | None) -> str:
    """The lower-cased media type without parameters (``application/json; charset=utf-8`` →
    ``application/json``); empty when absent."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def valid_content_type(content_type: str | None) -> bool:
    return bool(content_type) and _MEDIA.match(content_type.strip()) is not None  # type: ignore[union-attr]


def is_json(content_type: str) -> bool:
    """JSON mode: message boundaries kept, reads return a JSON array."""
    return media_type(content_type) == "application/json"


def is_text(content_type: str) -> bool:
    """Text streams (``text/*`` and JSON) carry UTF-8; the others are binary (base64 in SSE
    and in the broker)."""
    mt = media_type(content_type)
    return mt.startswith("text/") or mt == "application/json"


# -- headers -------------------------------------------------------------------------------


def parse_ttl(raw: str) -> int:
    """``Stream-TTL``: a non-negative decimal integer, no sign, no leading zeros, no point.

    Raises:
        ValueError: anything else.
    """
    return _decimal(raw, "Stream-TTL")


def _decimal(raw: str, header: str) -> int:
    if _TTL.fullmatch(raw) is None:
        raise ValueError(f"invalid {header} {raw[:32]!r}: a non-negative decimal integer")
    return int(raw)


def parse_expires_at(raw: str) -> float:
    """``Stream-Expires-At``: an RFC 3339 timestamp with a zone (``Z`` or ``±hh:mm``) → unix seconds.

    Raises:
        ValueError: not a timestamp, or without a zone.
    """
    text = raw.strip()
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"invalid Stream-Expires-At {raw[:40]!r}: an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise ValueError(f"invalid Stream-Expires-At {raw[:40]!r}: the timestamp needs a time zone")
    return moment.timestamp()


def is_closed_header(value: str | None) -> bool:
    """``Stream-Closed`` counts only when it is ``true`` (any case); other values are ignored."""
    return value is not None and value.strip().lower() == "true"


@dataclass(frozen=True, slots=True)
class ProducerHeaders:
    id: str
    epoch: int
    seq: int


def parse_producer(pid: str | None, epoch: str | None, seq: str | None) -> ProducerHeaders | None:
    """The idempotent-producer headers: all three or none.

    Raises:
        ValueError: some but not all, an empty id, or a value that is not an integer
            in 0..2^53-1.
    """
    given = (pid is not None, epoch is not None, seq is not None)
    if not any(given):
        return None
    if not all(given):
        raise ValueError("Producer-Id, Producer-Epoch and Producer-Seq must be given together")
    assert pid is not None and epoch is not None and seq is not None
    if not pid:
        raise ValueError("Producer-Id must not be empty")
    values = []
    for name, raw in (("Producer-Epoch", epoch), ("Producer-Seq", seq)):
        if _INT.fullmatch(raw) is None or int(raw) > MAX_SAFE_INTEGER:
            raise ValueError(f"{name} must be an integer from 0 to 2^53-1")
        values.append(int(raw))
    return ProducerHeaders(pid, values[0], values[1])


# -- producer state ------------------------------------------------------------------------


@dataclass(slots=True)
class ProducerState:
    epoch: int
    seq: int
    updated: float


@dataclass(frozen=True, slots=True)
class ProducerVerdict:
    """The outcome of :func:`check_producer`.

    ``status``: ``accepted`` (append, then store ``state``), ``duplicate`` (204, nothing
    appended; ``seq`` is the highest accepted), ``stale_epoch`` (403, ``epoch`` is the
    current one), ``bad_epoch_seq`` (400: a new epoch must start at 0), ``gap`` (409:
    ``expected``/``seq`` received).
    """

    status: str
    epoch: int = 0
    seq: int = 0
    expected: int = 0
    state: ProducerState | None = None


def check_producer(current: ProducerState | None, p: ProducerHeaders, now: float) -> ProducerVerdict:
    """Validate one request of an idempotent producer against its stored state (pure: the
    caller stores ``verdict.state`` only once the append succeeded)."""
    if current is None:
        if p.seq != 0:
            return ProducerVerdict("gap", expected=0, seq=p.seq)
        return ProducerVerdict("accepted", p.epoch, 0, state=ProducerState(p.epoch, 0, now))
    if p.epoch < current.epoch:
        return ProducerVerdict("stale_epoch", epoch=current.epoch)
    if p.epoch > current.epoch:
        if p.seq != 0:
            return ProducerVerdict("bad_epoch_seq")
        return ProducerVerdict("accepted", p.epoch, 0, state=ProducerState(p.epoch, 0, now))
    if p.seq <= current.seq:
        return ProducerVerdict("duplicate", p.epoch, current.seq)
    if p.seq == current.seq + 1:
        return ProducerVerdict("accepted", p.epoch, p.seq, state=ProducerState(p.epoch, p.seq, now))
    return ProducerVerdict("gap", expected=current.seq + 1, seq=p.seq)


#: Producer state older than this is forgotten (the protocol recommends 7 days in memory).
PRODUCER_TTL = 7 * 24 * 3600.0


@dataclass(slots=True)
class StreamMeta:
    """What a DS stream keeps besides its messages; stored by the broker as JSON bytes.

    ``ttl`` is a sliding window in seconds (reset by reads and writes, not HEAD), ``expires_at``
    the raw ``Stream-Expires-At`` (echoed by HEAD) with ``deadline`` its unix time.
    """

    content_type: str
    created: float
    accessed: float
    ttl: int | None = None
    expires_at: str | None = None
    deadline: float | None = None
    closed: bool = False
    closed_by: tuple[str, int, int] | None = None
    stream_seq: str | None = None
    producers: dict[str, ProducerState] = field(default_factory=dict)
    #: A fork: its source stream, the ``Stream-Fork-Offset``/``-Sub-Offset`` it was created with.
    forked_from: str | None = None
    fork_offset: str | None = None
    fork_sub: int = 0
    #: Forks made from this stream and not deleted; ``gone``: deleted while forks remained
    #: (410 to everyone, the data kept until the last fork goes).
    refs: int = 0
    gone: bool = False

    def expired(self, now: float) -> bool:
        if self.deadline is not None and now >= self.deadline:
            return True
        return self.ttl is not None and now >= self.accessed + self.ttl

    def same_config(self, content_type: str, ttl: int | None, expires_at: str | None, closed: bool) -> bool:
        """A repeated PUT with this configuration is idempotent (200) rather than a conflict."""
        return (
            media_type(self.content_type) == media_type(content_type)
            and self.ttl == ttl
            and self.expires_at == expires_at
            and self.closed == closed
        )

    def forget_producers(self, now: float) -> None:
        stale = [pid for pid, st in self.producers.items() if now - st.updated > PRODUCER_TTL]
        for pid in stale:
            del self.producers[pid]

    def dumps(self) -> bytes:
        return orjson.dumps({
            "ct": self.content_type, "c": self.created, "a": self.accessed, "ttl": self.ttl,
            "x": self.expires_at, "d": self.deadline, "cl": self.closed,
            "cb": list(self.closed_by) if self.closed_by else None, "ss": self.stream_seq,
            "p": {k: [v.epoch, v.seq, v.updated] for k, v in self.producers.items()},
            "ff": self.forked_from, "fo": self.fork_offset, "fs": self.fork_sub, "r": self.refs, "g": self.gone,
        })

    @classmethod
    def loads(cls, raw: bytes) -> StreamMeta:
        d: dict[str, Any] = orjson.loads(raw)
        cb = d.get("cb")
        return cls(
            d["ct"], d["c"], d["a"], d.get("ttl"), d.get("x"), d.get("d"), bool(d.get("cl")),
            (str(cb[0]), int(cb[1]), int(cb[2])) if cb else None, d.get("ss"),
            {k: ProducerState(int(v[0]), int(v[1]), float(v[2])) for k, v in (d.get("p") or {}).items()},
            d.get("ff"), d.get("fo"), int(d.get("fs") or 0), int(d.get("r") or 0), bool(d.get("g")),
        )


# -- JSON mode -----------------------------------------------------------------------------


def split_json_append(body: bytes, allow_empty: bool = False) -> list[str]:
    """The messages of a JSON-mode append: one level of a top-level array is flattened,
    each message re-serialised compactly.

    Raises:
        ValueError: invalid JSON (or not UTF-8), or an empty array where not allowed (a
            POST; a PUT may create an empty stream with ``[]``).
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if isinstance(value, list):
        if not value and not allow_empty:
            raise ValueError("an empty JSON array appends nothing")
        return [orjson.dumps(item).decode() for item in value]
    return [orjson.dumps(value).decode()]


def json_body(datas: list[str]) -> bytes:
    """A JSON-mode read body: the messages (each a JSON text) as one array."""
    return ("[" + ",".join(datas) + "]").encode()


def as_json_text(data: str) -> str:
    """A stored message as JSON text: messages broadcast by an application need not be JSON;
    those are served as JSON strings."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return orjson.dumps(data).decode()
    return data


# -- binary payloads -----------------------------------------------------------------------


def to_stored(body: bytes, content_type: str) -> str:
    """A non-JSON append as broker data: UTF-8 text for text streams, base64 for binary.

    Raises:
        ValueError: a text stream's body that is not UTF-8.
    """
    if is_text(content_type):
        try:
            return body.decode()
        except UnicodeDecodeError:
            raise ValueError("the body of a text/* stream must be UTF-8") from None
    return base64.b64encode(body).decode()


def from_stored(data: str, content_type: str) -> bytes:
    """The bytes of a stored non-JSON message (the inverse of :func:`to_stored`)."""
    if is_text(content_type):
        return data.encode()
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:  # published by an application as plain text
        return data.encode()


# -- SSE -----------------------------------------------------------------------------------

_LINES = re.compile(r"\r\n|\r|\n")


def sse_event(kind: str, payload: str) -> bytes:
    """One SSE event; every line of *payload* gets its own ``data:`` field, so CR/LF in a
    payload never ends the event early."""
    lines = _LINES.split(payload)
    return (f"event: {kind}\n" + "".join(f"data:{line}\n" for line in lines) + "\n").encode()


def control_event(next_offset: str, cursor: str | None, up_to_date: bool, closed: bool) -> bytes:
    """The ``control`` event after data: the next offset, and the cursor while the stream is
    open, or ``streamClosed`` at the end of a closed stream."""
    body: dict[str, Any] = {"streamNextOffset": next_offset}
    if closed:
        body["streamClosed"] = True
        body["upToDate"] = True
    else:
        if cursor is not None:
            body["streamCursor"] = cursor
        if up_to_date:
            body["upToDate"] = True
    return sse_event("control", orjson.dumps(body).decode())


# -- caching -------------------------------------------------------------------------------


def response_cursor(client: str | None, now: float, jitter: int) -> str:
    """``Stream-Cursor``: the current 20-second interval, or, when the client's cursor is not
    behind it, the client's plus *jitter* seconds (1..3600, random from the caller) counted
    in intervals, so that a cursor never repeats and CDN caches cannot loop."""
    current = int((now - CURSOR_EPOCH) // CURSOR_INTERVAL)
    if not client or not client.isdigit() or len(client) > 18:
        return str(current)
    given = int(client)
    if given < current:
        return str(current)
    return str(given + max(1, -(-max(1, min(jitter, MAX_JITTER)) // CURSOR_INTERVAL)))


def etag(stream: str, start: str, end: str, closed: bool) -> str:
    """``"<stream id>:<start>:<end>[:c]"``: changes with new data and with closure."""
    sid = base64.urlsafe_b64encode(stream.encode()).decode().rstrip("=")
    return f'"{sid}:{start}:{end}{":c" if closed else ""}"'
