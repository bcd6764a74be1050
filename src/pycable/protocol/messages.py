"""Server -> client messages of the Action Cable protocol and AnyCable's extensions.

Each function returns the JSON payload as bytes, ready for :func:`framing.text_frame`.
Key names and orders follow anycable-go's ``common.Reply`` (spec §1.3) so that raw-byte
comparisons against AnyCable hold where the spec states exact shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from pycable.protocol import constants as c

__all__ = [
    "welcome",
    "ping",
    "pong",
    "disconnect",
    "confirm_subscription",
    "reject_subscription",
    "confirm_history",
    "reject_history",
    "stream_message",
    "encode_data",
]

_dumps = orjson.dumps


def welcome(sid: str, restored_ids: Sequence[str] | None = None) -> bytes:
    """``{"type":"welcome","sid":…}``; with *restored_ids* given, a restored welcome (§2.2)."""
    if restored_ids is None:
        return _dumps({"type": c.WELCOME, "sid": sid})
    body: dict[str, object] = {"type": c.WELCOME, "sid": sid, "restored": True}
    if restored_ids:  # omitempty, as anycable-go
        body["restored_ids"] = list(restored_ids)
    return _dumps(body)


def ping(ts: int) -> bytes:
    """``{"type":"ping","message":<ts>}`` (§1.5)."""
    return b'{"type":"ping","message":%d}' % ts


def pong() -> bytes:
    """Reply to a client ``ping`` command (§2.6)."""
    return b'{"type":"pong"}'


def disconnect(reason: str, reconnect: bool) -> bytes:
    """``{"type":"disconnect","reason":…,"reconnect":…}`` (§1.6): both keys always present."""
    return _dumps({"type": c.DISCONNECT, "reason": reason, "reconnect": reconnect})


def _typed(type_: str, identifier: str) -> bytes:
    return _dumps({"type": type_, "identifier": identifier})


def confirm_subscription(identifier: str) -> bytes:
    return _typed(c.CONFIRM_SUBSCRIPTION, identifier)


def reject_subscription(identifier: str) -> bytes:
    return _typed(c.REJECT_SUBSCRIPTION, identifier)


def confirm_history(identifier: str) -> bytes:
    return _typed(c.CONFIRM_HISTORY, identifier)


def reject_history(identifier: str) -> bytes:
    return _typed(c.REJECT_HISTORY, identifier)


def encode_data(data: str) -> bytes:
    """The ``message`` value for a publication's ``data`` string (§1.3 payload rule).

    If *data* is JSON (and not ``null``) it is embedded as it is, keeping its formatting;
    otherwise the raw string is sent as a JSON string. Computed once per publication.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _dumps(data)
    if value is None:
        return _dumps(data)
    return data.strip().encode()


def stream_message(
    identifier: str,
    message: bytes,
    stream: str | None = None,
    epoch: str | None = None,
    offset: int | None = None,
    type_: str | None = None,
) -> bytes:
    """A stream message for one identifier; *message* is :func:`encode_data`'s output.

    ``stream_id``/``epoch``/``offset`` are added only when the broker registered the
    publication (§2.5: only if the epoch is not empty).
    """
    head = b'{"type":' + _dumps(type_) + b',"identifier":' if type_ else b'{"identifier":'
    out = head + _dumps(identifier) + b',"message":' + message
    if epoch:
        out += (
            b',"stream_id":' + _dumps(stream) + b',"epoch":' + _dumps(epoch) + b',"offset":%d}' % (offset or 0)
        )
    else:
        out += b"}"
    return out
