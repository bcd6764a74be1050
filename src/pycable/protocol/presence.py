"""Presence (AnyCable 1.6 extended protocol): commands in, events and info replies out.

Pure: parsing and validation of the ``join``/``leave``/``presence`` commands and of an
RPC's ``CommandResponse.presence``, and the JSON of what the server sends. No I/O.

Wire shapes (the same as AnyCable's)::

    C: {"command":"join","identifier":I,"presence":{"id":"42","info":{"name":"Sasha"}}}
    C: {"command":"leave","identifier":I}
    C: {"command":"presence","identifier":I,"data":{}}
    S: {"type":"presence","identifier":I,"message":{"type":"join","id":"42","info":{"name":"Sasha"}}}
    S: {"type":"presence","identifier":I,"message":{"type":"leave","id":"42"}}
    S: {"type":"presence","identifier":I,"message":{"type":"info","total":1,"records":[{"id":"42","info":{…}}]}}
    S: {"type":"presence","identifier":I,"message":{"type":"error","total":0,"reason":"…"}}
    S: {"type":"presence","identifier":I,"message":{"type":"join_failed","reason":"…"}}

Join and leave events reach subscribers as transient publications to the presence
stream with ``broadcast_type="presence"``, so :func:`join_data`/:func:`leave_data` give
the publication's ``data`` and the hub frames it like any broadcast.

A member's ``info`` is kept as JSON text (``""`` when absent), encoded once at join, so
an info reply for a thousand members is string concatenation, not a re-encode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from pycable.exceptions import PresenceError
from pycable.protocol.constants import JOIN, LEAVE, PRESENCE

__all__ = [
    "JOIN",
    "LEAVE",
    "INFO",
    "ERROR",
    "MAX_ID_LENGTH",
    "DEFAULT_MAX_INFO_SIZE",
    "Member",
    "PresenceEvent",
    "parse_member",
    "parse_rpc_presence",
    "join_data",
    "leave_data",
    "event_data",
    "info_message",
    "error_message",
]

INFO: Final = "info"
ERROR: Final = "error"

#: Longest presence id accepted (characters).
MAX_ID_LENGTH: Final = 256
#: Default cap on a member's encoded ``info`` (bytes), ``--presence_max_info_size``.
DEFAULT_MAX_INFO_SIZE: Final = 4096

_dumps = orjson.dumps


@dataclass(frozen=True, slots=True)
class Member:
    """One presence record: its id and its ``info`` as JSON text (``""``: none)."""

    id: str
    info: str = ""


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A change of a stream's presence set, to be broadcast to its subscribers.

    ``join`` only when the id is new in the stream; ``leave`` only when its last session
    went (left, unsubscribed or expired).
    """

    type: Literal["join", "leave"]
    stream: str
    member: Member


def _id(value: Any) -> str:
    # The JS client sends String(id); Rails may send a number: both are accepted as text.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PresenceError("presence id must be a string or an integer")
    text = str(value)
    if not text:
        raise PresenceError("presence id is empty")
    if len(text) > MAX_ID_LENGTH:
        raise PresenceError(f"presence id is longer than {MAX_ID_LENGTH} characters")
    return text


def _info(value: Any, max_info_size: int) -> str:
    if value is None:
        return ""
    try:
        text = _dumps(value).decode()
    except TypeError as exc:  # pragma: no cover - values come from orjson.loads
        raise PresenceError(f"presence info is not JSON: {exc}") from None
    if len(text) > max_info_size:
        raise PresenceError(f"presence info is larger than {max_info_size} bytes")
    return text


def parse_member(presence: Any, max_info_size: int = DEFAULT_MAX_INFO_SIZE) -> Member:
    """The member of a ``join`` command (or of ``subscribe``'s ``presence`` field).

    Args:
        presence: the command's raw ``presence`` value.
        max_info_size: the largest encoded ``info`` accepted, in bytes.

    Raises:
        PresenceError: ``presence`` is missing or not an object, its ``id`` is missing,
            empty, too long or not a string/integer, or its ``info`` is too large.
    """
    if presence is None:
        raise PresenceError("presence data is missing")
    if not isinstance(presence, dict):
        raise PresenceError("presence must be an object")
    return Member(_id(presence.get("id")), _info(presence.get("info"), max_info_size))


def parse_rpc_presence(
    type_: str, id_: str, info: str, max_info_size: int = DEFAULT_MAX_INFO_SIZE
) -> tuple[Literal["join", "leave"], Member | None]:
    """An RPC's ``CommandResponse.presence`` (``type``, ``id``, ``info`` as JSON text).

    ``info`` that is not JSON is kept as a JSON string, as AnyCable does.

    Returns:
        ``("join", member)`` or ``("leave", None)``.

    Raises:
        PresenceError: an unknown ``type``, or a join with a bad id or too large info.
    """
    if type_ == LEAVE:
        return LEAVE, None
    if type_ != JOIN:
        raise PresenceError(f"unknown presence event {type_[:32]!r}")
    if info:
        try:
            value: Any = orjson.loads(info)
        except orjson.JSONDecodeError:
            value = info
    else:
        value = None
    return JOIN, Member(_id(id_), _info(value, max_info_size))


def join_data(member: Member) -> str:
    """The ``data`` of a join event's publication: ``{"type":"join","id":…,"info":…}``."""
    head = '{"type":"join","id":' + _dumps(member.id).decode()
    return head + (',"info":' + member.info + "}" if member.info else "}")


def leave_data(member: Member) -> str:
    """The ``data`` of a leave event's publication: ``{"type":"leave","id":…}``."""
    return '{"type":"leave","id":' + _dumps(member.id).decode() + "}"


def event_data(event: PresenceEvent) -> str:
    return join_data(event.member) if event.type == JOIN else leave_data(event.member)


def _record(member: Member) -> bytes:
    out = b'{"id":' + _dumps(member.id)
    return out + (b',"info":' + member.info.encode() + b"}" if member.info else b"}")


def info_message(identifier: str, total: int, records: Iterable[Member]) -> bytes:
    """The reply to a ``presence`` command (``records`` left out when empty, as AnyCable)."""
    body = b",".join(_record(m) for m in records)
    head = b'{"type":"presence","identifier":' + _dumps(identifier) + b',"message":{"type":"info","total":%d' % total
    return head + (b',"records":[' + body + b"]}}" if body else b"}}")


def error_message(identifier: str, reason: str, command: str = PRESENCE) -> bytes:
    """A refused presence command, with our ``reason``.

    For ``presence`` (info) it is AnyCable's ``{"type":"error","total":0}``, on which the
    JS client rejects its pending ``presence.info()``. A refused ``join``/``leave`` says
    ``"type":"join_failed"``/``"leave_failed"`` instead: an ``error`` would reject an info
    request that happens to be pending, and clients ignore presence types they do not know.
    """
    if command == PRESENCE:
        message: dict[str, Any] = {"type": ERROR, "total": 0, "reason": reason}
    else:
        message = {"type": f"{command}_failed", "reason": reason}
    return _dumps({"type": PRESENCE, "identifier": identifier, "message": message})
