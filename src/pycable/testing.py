"""Fakes for testing code built on pycable (and pycable's own tests)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import orjson

from pycable.node.node import Node
from pycable.node.session import Session
from pycable.protocol.codec import decode_command
from pycable.rpc.base import Env

__all__ = ["RecordingConnection", "decode_frame", "connect_session"]


def decode_frame(frame: bytes) -> tuple[int, bytes]:
    """``(opcode, payload)`` of one unmasked frame produced by :mod:`pycable.protocol.framing`."""
    opcode, n = frame[0] & 0x0F, frame[1] & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", frame[2:4])
        return opcode, frame[4 : 4 + n]
    if n == 127:
        (n,) = struct.unpack("!Q", frame[2:10])
        return opcode, frame[10 : 10 + n]
    return opcode, frame[2 : 2 + n]


class RecordingConnection:
    """A :class:`~pycable.node.session.Connection` that records what the node sends."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.frame_writer: Callable[[bytes], None] = self.send_frame

    def send_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    @property
    def messages(self) -> list[Any]:
        return [orjson.loads(decode_frame(f)[1]) for f in self.frames]

    def stream_messages(self) -> list[Any]:
        return [m for m in self.messages if "message" in m and "type" not in m]

    def clear(self) -> None:
        self.frames.clear()


async def connect_session(
    node: Node, sid: str, ext: bool = True, prev_sid: str = "", query: dict[str, str] | None = None
) -> tuple[Session, RecordingConnection]:
    """Create and authenticate a session on *node* over a recording connection."""
    conn = RecordingConnection()
    env = Env(f"ws://test/cable?sid={prev_sid}", {}, sid, "127.0.0.1", query=query or {})
    session = Session(sid, conn, env, ext=ext, resumable=node.resumable(ext))
    await node.authenticate(session, prev_sid)
    return session, conn


async def send(node: Node, session: Session, command: dict[str, Any]) -> None:
    """Decode and run one command as the transport would."""
    await node.handle_command(session, decode_command(orjson.dumps(command)))
