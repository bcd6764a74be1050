"""Publications from the application (spec §4.1) and pub/sub messages between nodes (§5)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson

from pycable.exceptions import BroadcastError, BroadcastFormatError

__all__ = ["StreamMessage", "RemoteCommand", "parse_broadcast", "parse_pubsub", "encode_pubsub"]


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """A publication to one stream.

    Attributes:
        stream: the stream name.
        data: the payload string (usually JSON).
        exclude_socket: a session id that must not receive it (``meta.exclude_socket``).
        transient: never stored in history, no offset (``meta.transient``).
        broadcast_type: overrides the reply ``type`` (``meta.broadcast_type``).
        offset, epoch: assigned by the broker when it registered the message.
        timestamp: unix seconds when the broker registered it (history ``since``).
    """

    stream: str
    data: str
    exclude_socket: str | None = None
    transient: bool = False
    broadcast_type: str | None = None
    offset: int = 0
    epoch: str = ""
    timestamp: float = 0.0

    def registered(self, offset: int, epoch: str, timestamp: float) -> StreamMessage:
        """A copy carrying the broker's position."""
        return replace(self, offset=offset, epoch=epoch, timestamp=timestamp)


@dataclass(frozen=True, slots=True)
class RemoteCommand:
    """``{"command":"disconnect","payload":{"identifier":…,"reconnect":…}}`` (§4.6)."""

    command: str
    identifier: str
    reconnect: bool


Publication = StreamMessage | RemoteCommand


def _meta(obj: dict[str, Any]) -> tuple[str | None, bool, str | None]:
    meta = obj.get("meta")
    if meta is None:
        return None, False, None
    if not isinstance(meta, dict):
        raise BroadcastFormatError("'meta' must be an object")
    exclude = meta.get("exclude_socket")
    transient = meta.get("transient", False)
    btype = meta.get("broadcast_type")
    if exclude is not None and not isinstance(exclude, str):
        raise BroadcastFormatError("'meta.exclude_socket' must be a string")
    if not isinstance(transient, bool):
        raise BroadcastFormatError("'meta.transient' must be a boolean")
    if btype is not None and not isinstance(btype, str):
        raise BroadcastFormatError("'meta.broadcast_type' must be a string")
    return exclude or None, transient, btype or None


def _stream_message(obj: Any, pubsub: bool = False) -> StreamMessage:
    if not isinstance(obj, dict):
        raise BroadcastFormatError("a publication must be an object")
    stream, data = obj.get("stream"), obj.get("data")
    if not isinstance(stream, str) or not stream:
        raise BroadcastFormatError("'stream' must be a non-empty string")
    if not isinstance(data, str):
        raise BroadcastFormatError("'data' must be a string (JSON-encode objects)")
    exclude, transient, btype = _meta(obj)
    offset, epoch = 0, ""
    if pubsub:
        # v1.5 nodes write Offset/Epoch, v1.6 offset/epoch: accept both (§5).
        offset = obj.get("offset", obj.get("Offset")) or 0
        epoch = obj.get("epoch", obj.get("Epoch")) or ""
        if not isinstance(offset, int) or not isinstance(epoch, str):
            raise BroadcastFormatError("'offset' must be an integer and 'epoch' a string")
    return StreamMessage(stream, data, exclude, transient, btype, offset, epoch)


def _remote_command(obj: dict[str, Any]) -> RemoteCommand:
    command = obj.get("command")
    if command != "disconnect":
        raise BroadcastFormatError(
            "expected a publication ({stream, data}), a batch, or a remote command ({command: 'disconnect'})"
        )
    payload = obj.get("payload")
    if not isinstance(payload, dict):
        raise BroadcastFormatError("'payload' must be an object")
    identifier = payload.get("identifier")
    reconnect = payload.get("reconnect", True)
    if not isinstance(identifier, str) or not isinstance(reconnect, bool):
        raise BroadcastFormatError("'payload.identifier' must be a string and 'payload.reconnect' a boolean")
    return RemoteCommand(command, identifier, reconnect)


def _parse(body: bytes | str, pubsub: bool) -> list[Publication]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BroadcastError(f"invalid JSON: {exc}") from None
    if isinstance(obj, list):
        if not obj:
            raise BroadcastFormatError("an empty batch")
        # A batch is validated whole before anything is published (preface decision 3).
        return [_stream_message(item, pubsub) for item in obj]
    if not isinstance(obj, dict):
        raise BroadcastFormatError("a broadcast must be a JSON object or array")
    if "stream" in obj:
        return [_stream_message(obj, pubsub)]
    return [_remote_command(obj)]


def parse_broadcast(body: bytes | str) -> list[Publication]:
    """Parse an application broadcast: one publication, a batch, or a remote command.

    Raises:
        BroadcastError: *body* is not JSON (HTTP 400).
        BroadcastFormatError: valid JSON of the wrong shape (HTTP 422). Nothing of the
            body may be published then.
    """
    return _parse(body, pubsub=False)


def parse_pubsub(body: bytes | str) -> list[Publication]:
    """Parse a message between nodes: like :func:`parse_broadcast`, plus ``offset``/``epoch``."""
    return _parse(body, pubsub=True)


def encode_pubsub(msg: Publication) -> bytes:
    """Encode for pub/sub with lower-case ``offset``/``epoch`` keys (§5)."""
    if isinstance(msg, RemoteCommand):
        return orjson.dumps(
            {"command": msg.command, "payload": {"identifier": msg.identifier, "reconnect": msg.reconnect}}
        )
    out: dict[str, Any] = {"stream": msg.stream, "data": msg.data}
    meta: dict[str, Any] = {}
    if msg.exclude_socket:
        meta["exclude_socket"] = msg.exclude_socket
    if msg.transient:
        meta["transient"] = True
    if msg.broadcast_type:
        meta["broadcast_type"] = msg.broadcast_type
    if meta:
        out["meta"] = meta
    if msg.epoch:
        out["offset"] = msg.offset
        out["epoch"] = msg.epoch
    return orjson.dumps(out)
