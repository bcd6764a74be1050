"""Pre-framing of outgoing WebSocket frames (RFC 6455 §5.2), done once per message.

A server's frames are never masked (RFC 6455 §5.1), so one encoded frame can be written
as-is to every subscriber: this is how a broadcast is encoded once and written to all.
Extensions are never negotiated, so the payload is sent as it is.
"""

from __future__ import annotations

import struct

__all__ = ["text_frame", "close_frame"]

_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack

OP_TEXT = 0x1
OP_CLOSE = 0x8


def _frame(opcode: int, payload: bytes) -> bytes:
    first = 0x80 | opcode  # FIN + opcode
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _PACK_16(first, 126, n) + payload
    return _PACK_64(first, 127, n) + payload


def text_frame(payload: bytes) -> bytes:
    """Frame *payload* (UTF-8 JSON) as one final, unmasked text frame."""
    return _frame(OP_TEXT, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    """Frame a close frame with *code* and a UTF-8 *reason* (RFC 6455 §5.5.1)."""
    body = struct.pack("!H", code) + reason.encode()[:123]
    return _frame(OP_CLOSE, body)
