"""How messages become the bytes of one transport (sans-I/O).

The node hands a connection JSON payloads (welcome, confirmations, pings, transmissions) and
stream messages; the connection's :class:`Encoding` turns them into wire bytes. A broadcast
is encoded once per (identifier, encoding) and written as-is to every subscriber: an
encoding's output must not depend on the connection.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

from pycable.protocol import messages
from pycable.protocol.broadcast import StreamMessage
from pycable.protocol.framing import text_frame

__all__ = ["Encoding", "WebSocketEncoding", "WEBSOCKET", "stream_payload"]


class Encoding(Protocol):
    def message(self, payload: bytes) -> bytes:
        """One JSON message (a reply, a transmission) as wire bytes."""
        ...

    def stream(self, msg: StreamMessage, identifier: str) -> bytes:
        """A stream message for subscribers of *identifier*, as wire bytes (cacheable)."""
        ...


@lru_cache(maxsize=8192)
def _encoded_data(data: str) -> bytes:
    return messages.encode_data(data)


def stream_payload(msg: StreamMessage, identifier: str) -> bytes:
    """The JSON stream message of *msg* for *identifier* (§1.3)."""
    return messages.stream_message(
        identifier, _encoded_data(msg.data), msg.stream, msg.epoch, msg.offset, msg.broadcast_type
    )


@lru_cache(maxsize=8192)
def frame_for(msg: StreamMessage, identifier: str) -> bytes:
    """The framed stream message of *msg* for *identifier* (cached: replays to many clients
    after a mass reconnect hit the cache)."""
    return text_frame(stream_payload(msg, identifier))


class WebSocketEncoding:
    """Text frames (RFC 6455 §5.6), unmasked: one frame serves every subscriber."""

    __slots__ = ()

    def message(self, payload: bytes) -> bytes:
        return text_frame(payload)

    def stream(self, msg: StreamMessage, identifier: str) -> bytes:
        return frame_for(msg, identifier)


WEBSOCKET = WebSocketEncoding()
