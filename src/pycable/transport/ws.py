"""One WebSocket connection: websockets' sans-I/O ``ServerProtocol`` parses inbound frames
and runs the close handshake (RFC 6455 §7); outbound text frames are pre-framed by the
node and written straight to the socket (a server's frames are unmasked, §5.1, and no
extension is negotiated, so the bytes are identical to what ``send_text`` would produce).

This class owns the connection's timers (pings, pong deadline, restore hold, close
timeout) and its write buffer cap (``--ws_max_pending_size``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from pycable.exceptions import ProtocolError
from pycable.protocol import constants as c
from pycable.protocol import messages
from pycable.protocol.codec import Command, decode_command
from pycable.protocol.framing import close_frame, text_frame
from pycable.protocol.session import FloodGuard, Heartbeat, ping_timestamp
from pycable.transport._sockets import reset

if TYPE_CHECKING:
    from pycable.node.node import Node
    from pycable.node.session import Session

__all__ = ["WebSocketConnection", "WSOptions"]

log = logging.getLogger("pycable.ws")

#: Commands queued per connection before the client counts as flooding.
MAX_QUEUED_COMMANDS = 1024


@dataclass(slots=True)
class WSOptions:
    ping_interval: float = 3.0
    ping_precision: str = "s"
    pong_timeout: float = 0.0
    max_pending: int = 1 << 20
    write_timeout: float = 2.0
    #: Pong enforcement applies to ext sessions only (spec §1.5) unless this is set.
    pong_all: bool = False


_ping_cache: tuple[int, str, bytes] = (0, "", b"")


def _ping_frame(now: float, precision: str) -> bytes:
    """Pings encoded once per timestamp and shared by every connection."""
    global _ping_cache
    ts = ping_timestamp(now, precision)
    if _ping_cache[0] != ts or _ping_cache[1] != precision:
        _ping_cache = (ts, precision, text_frame(messages.ping(ts)))
    return _ping_cache[2]


class WebSocketConnection(asyncio.Protocol):
    """An upgraded connection, bound to a node :class:`~pycable.node.session.Session`."""

    def __init__(
        self,
        transport: asyncio.Transport,
        proto: ServerProtocol,
        node: Node,
        options: WSOptions,
        interval: float,
        precision: str,
        pong_timeout: float = 0.0,
        on_lost: object = None,
    ) -> None:
        self.transport = transport
        self.proto = proto
        self.node = node
        self.options = options
        self.max_pending = options.max_pending
        # The fan-out writes with the socket's own write (no Python call in between); the
        # --ws_max_pending_size cap is the transport's high-water mark: pause_writing() fires
        # when a client's unsent bytes pass it.
        self.frame_writer: Callable[[bytes], None] = transport.write
        transport.set_write_buffer_limits(high=self.max_pending)
        self.loop = asyncio.get_running_loop()
        self.session: Session | None = None
        self.closing = False
        self.lost = False
        self.flood = FloodGuard()
        #: Commands waiting to run, in order; created on demand and dropped when drained (an
        #: empty deque costs 0.76 KB, and most connections are idle).
        self.commands: deque[Command] | None = None
        self.runner: asyncio.Task[None] | None = None
        #: Restore-or-Connect in flight; cancelled if the client leaves before it ends (§6.7).
        self.auth_task: asyncio.Task[None] | None = None
        self.ready = False  # authenticated: commands may run
        #: The fragments of a text message still being received, else ``None``.
        self.fragments: list[bytes] | None = None
        now = time.time()
        # The first ping comes after a random delay in [interval/2, 3·interval/2) (spec §1.5),
        # so that clients connected together are not pinged together for ever after.
        self.heartbeat = Heartbeat(interval, pong_timeout, now, first_delay=interval * (0.5 + random.random()))
        self.precision = precision
        self.timer: asyncio.TimerHandle | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        self.on_lost = on_lost
        self._arm(now)

    # -- node-facing Connection interface ---------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        if not self.closing:
            self.transport.write(frame)

    def close(self, code: int, reason: str) -> None:
        """Start the close handshake; the socket is aborted if it does not finish in time."""
        if self.closing:
            return
        self._stop_sending()
        if self.proto.state is OPEN:
            self.proto.send_close(code, reason)
            self._flush()
        self._cancel_timer()
        if not self.lost:
            self.close_timer = self.loop.call_later(self.options.write_timeout, self._abort)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        proto = self.proto
        proto.receive_data(data)
        for event in proto.events_received():
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            if opcode is Opcode.TEXT:
                if event.fin:
                    self._on_text(bytes(event.data))
                else:  # the first fragment of a message (websockets caps the total size)
                    self.fragments = [bytes(event.data)]
            elif opcode is Opcode.CONT:
                fragments = self.fragments
                if fragments is not None:
                    fragments.append(bytes(event.data))
                    if event.fin:
                        self.fragments = None
                        self._on_text(b"".join(fragments))
                elif event.fin:  # the end of a fragmented binary message
                    self._malformed("binary frame on a JSON protocol")
            elif opcode is Opcode.BINARY and event.fin:
                self._malformed("binary frame on a JSON protocol")
            # PING/PONG/CLOSE are answered by the protocol itself.
            self.heartbeat.received()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._stop_sending()
        self._cancel_timer()
        if self.close_timer is not None:
            self.close_timer.cancel()
        if self.runner is not None and not self.runner.done():
            self.runner.cancel()
        auth = self.auth_task
        if auth is not None and not auth.done() and (self.session is None or not self.session.connected):
            auth.cancel()
        if callable(self.on_lost):
            self.on_lost(self)
        if self.session is not None:
            self.node._spawn(self.node.disconnect(self.session))

    def pause_writing(self) -> None:
        """The client's unsent bytes passed ``--ws_max_pending_size``: it is too slow."""
        if not self.closing:
            self._too_slow()

    def resume_writing(self) -> None:
        pass

    # -- inbound ------------------------------------------------------------------------------

    def _on_text(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            cmd = decode_command(data)
        except ProtocolError as exc:
            self._malformed(str(exc))
            return
        if cmd.command == c.PONG:
            return
        queue = self.commands
        if queue is None:
            queue = self.commands = deque()
        elif len(queue) >= MAX_QUEUED_COMMANDS:
            self._malformed("too many commands in flight")
            return
        queue.append(cmd)
        if self.ready and self.runner is None:
            self.runner = self.loop.create_task(self._run_commands())

    def _malformed(self, why: str) -> None:
        self.node.stats["malformed_frames"] += 1
        sid = self.session.sid if self.session else "-"
        log.debug("dropped malformed frame sid=%s: %s", sid, why)
        if self.flood.record(time.time()):
            log.info("closing sid=%s: too many malformed frames", sid)
            self.send_frame(text_frame(messages.disconnect(c.INVALID_REQUEST, False)))
            self.close(c.CLOSE_INVALID_DATA, "Invalid request")

    def start_commands(self) -> None:
        """Authentication finished: run the commands queued meanwhile."""
        self.ready = True
        if self.commands and self.runner is None and not self.closing:
            self.runner = self.loop.create_task(self._run_commands())

    async def _run_commands(self) -> None:
        session, node, queue = self.session, self.node, self.commands
        assert session is not None and queue is not None
        try:
            while queue and not self.closing:
                cmd = queue.popleft()
                try:
                    await node.handle_command(session, cmd)
                except ProtocolError as exc:
                    self._malformed(str(exc))
                except Exception:  # a bug must not kill the connection's command loop
                    log.exception("command %s failed sid=%s", cmd.command, session.sid)
        finally:
            self.runner = None
            if not queue and self.commands is queue:
                self.commands = None
        self._flush()

    # -- outbound / lifecycle -----------------------------------------------------------------

    def _flush(self) -> None:
        for chunk in self.proto.data_to_send():
            if chunk:
                if not self.lost:
                    self.transport.write(chunk)
            else:  # end of stream: the close handshake is done
                self._stop_sending()
                self.transport.close()

    def _too_slow(self) -> None:
        sid = self.session.sid if self.session else "-"
        log.info("closing sid=%s: write buffer over %d bytes (too_slow)", sid, self.options.max_pending)
        self._stop_sending()
        self.transport.write(text_frame(messages.disconnect(c.TOO_SLOW, True)))
        self.transport.write(close_frame(c.CLOSE_NORMAL, "Too slow"))
        self._cancel_timer()
        self.close_timer = self.loop.call_later(self.options.write_timeout, self._abort)

    def _stop_sending(self) -> None:
        """No frame but the closing ones from now on: mark the connection closing, and stop
        the fan-out, which writes to the socket directly, from writing here."""
        self.closing = True
        session = self.session
        if session is not None:
            session.closed = True
            self.node.hub.mute(session)

    def _abort(self) -> None:
        """The close handshake did not finish in time: reset the connection. SO_LINGER 0
        makes the close a reset, so the kernel drops what the peer never read instead of
        holding it (up to the socket buffer, megabytes) until a FIN-WAIT timeout."""
        self.close_timer = None
        if not self.lost:
            reset(self.transport)

    def _arm(self, now: float) -> None:
        self.timer = self.loop.call_at(
            self.loop.time() + max(0.0, self.heartbeat.next_wakeup() - now), self._on_timer
        )

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        self.timer = None
        if self.closing:
            return
        now = time.time()
        send_ping, missed = self.heartbeat.tick(now)
        if missed:
            self.send_frame(text_frame(messages.disconnect(c.NO_PONG, True)))
            self.close(c.CLOSE_NORMAL, "No Pong")
            return
        if send_ping and self.ready:
            self.send_frame(_ping_frame(now, self.precision))
        if not self.closing:
            self._arm(now)
