"""Fakes for testing code built on pycable (and pycable's own tests).

* :class:`RecordingConnection`: a node :class:`~pycable.node.port.Connection` that keeps what
  the node sends; :func:`connect_session` / :func:`send` drive a node with it.
* :class:`RecordingHandler`: a pub/sub and broadcast handler (what a Subscriber or a
  Broadcaster hands messages to) that records them and lets a test await them.
* :class:`FakeClock`: a clock that moves only when told.
* :class:`InProcessServer`: a node and its HTTP/WebSocket server in this event loop, on port 0
  or over socketpairs.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from pycable.broker.base import Broker, NullBroker
from pycable.exceptions import BrokerError
from pycable.node.controller import LocalController
from pycable.node.node import Node, NodeConfig
from pycable.node.session import Session
from pycable.protocol.broadcast import Publication, RemoteCommand, StreamMessage
from pycable.protocol.codec import decode_command
from pycable.protocol.encoding import WEBSOCKET, Encoding
from pycable.pubsub.base import Subscriber
from pycable.rpc.base import Controller, Env
from pycable.transport.http import HttpOptions, HttpProtocol, ServerState
from pycable.transport.server import Server

__all__ = [
    "FakeClock",
    "InProcessServer",
    "RecordingConnection",
    "RecordingHandler",
    "connect_session",
    "decode_frame",
    "send",
]


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
    """A :class:`~pycable.node.port.Connection` that records what the node sends (as
    WebSocket frames: :attr:`messages` decodes them)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.is_ready = False
        self.frame_writer: Callable[[bytes], None] = self.send_frame

    @property
    def encoding(self) -> Encoding:
        return WEBSOCKET

    def send_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def ready(self) -> None:
        self.is_ready = True

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


class FakeClock:
    """A clock (``() -> float``) that only moves when a test moves it."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingHandler:
    """A ``PubSubHandler`` and ``BroadcastHandler`` that records what it is handed.

    Attributes:
        messages / commands: what a Subscriber delivered (``handle_pubsub`` /
            ``handle_remote_command``).
        got: publications a Broadcaster handed to ``handle_broadcast`` (refused with a
            ``BrokerError`` while ``failing`` is set; ``attempts`` counts every call).
        fanout: the batches a fan-out Broadcaster handed to ``handle_fanout``.
    """

    def __init__(self) -> None:
        self.messages: list[StreamMessage] = []
        self.commands: list[RemoteCommand] = []
        self.got: list[Publication] = []
        self.fanout: list[list[Publication]] = []
        self.failing = False
        self.attempts = 0
        self.changed = asyncio.Event()

    def handle_pubsub(self, msg: StreamMessage) -> None:
        self.messages.append(msg)
        self.changed.set()

    def handle_remote_command(self, cmd: RemoteCommand) -> None:
        self.commands.append(cmd)
        self.changed.set()

    async def handle_broadcast(self, publications: Sequence[Publication]) -> None:
        self.attempts += 1
        self.changed.set()
        if self.failing:
            raise BrokerError("broker down (test)")
        self.got.extend(publications)

    def handle_fanout(self, publications: Sequence[Publication]) -> None:
        self.fanout.append(list(publications))
        self.changed.set()

    def data(self) -> list[str]:
        """The data of the stream messages handed to ``handle_broadcast``."""
        return [p.data for p in self.got if isinstance(p, StreamMessage)]

    async def until(self, pred: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until *pred* holds (checked after each recorded call)."""

        async def wait() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)


class InProcessServer:
    """A started node and server in this event loop (``async with``), listening on port 0.

    :meth:`socket` gives a client socket connected to the server through a socketpair (no
    port); :attr:`port` is the listening port.
    """

    def __init__(
        self,
        controller: Controller | None = None,
        broker: Broker | None = None,
        pubsub: Subscriber | None = None,
        options: HttpOptions | None = None,
        config: NodeConfig | None = None,
    ) -> None:
        self.node = Node(
            controller or LocalController(noauth=True, public_streams=True), broker or NullBroker(), pubsub, config
        )
        self.options = options or HttpOptions()
        self.state = ServerState(self.node)
        self.server = Server(self.state, "127.0.0.1", 0, self.options)
        self._sockets: list[socket.socket] = []

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> InProcessServer:
        await self.node.start()
        await self.server.start()
        return self

    async def stop(self, timeout: float = 1.0) -> None:
        await self.server.shutdown(timeout)
        await self.node.shutdown()
        for sock in self._sockets:
            sock.close()

    async def socket(self) -> socket.socket:
        """A connected client socket whose peer the server serves as an accepted connection."""
        ours, theirs = socket.socketpair()
        self._sockets.append(theirs)
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: HttpProtocol(self.state, self.options), ours)
        return theirs

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until *pred* holds, polling server state (a bounded poll: internal state has
        no event to await)."""

        async def poll() -> None:
            while not pred():
                await asyncio.sleep(0.005)

        await asyncio.wait_for(poll(), timeout)

    async def __aenter__(self) -> InProcessServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
