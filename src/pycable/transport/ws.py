"""One WebSocket connection: websockets' sans-I/O ``ServerProtocol`` parses inbound frames
and runs the close handshake (RFC 6455 §7); outbound text frames are pre-framed (the
connection's encoding is :data:`~pycable.protocol.encoding.WEBSOCKET`) and written straight
to the socket (a server's frames are unmasked, §5.1, and no extension is negotiated, so the
bytes are identical to what ``send_text`` would produce).

The connection's policy (flood guard, heartbeat, command queue, auth gate) is
:class:`~pycable.protocol.connection.ConnectionPolicy`; the session is the node's, reached
through its port (:mod:`pycable.node.port`). This class owns the socket and the timers
(pings, pong deadline, close timeout) and its write buffer cap (``--ws_max_pending_size``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from pycable.node.port import Handshake, NodePort, Session
from pycable.protocol import constants as c
from pycable.protocol import messages
from pycable.protocol.connection import Close, ConnectionPolicy, Malformed
from pycable.protocol.encoding import WEBSOCKET
from pycable.protocol.framing import close_frame, text_frame
from pycable.protocol.session import ping_timestamp, redact_sid
from pycable.transport._sockets import arm_timer, reset

__all__ = ["WebSocketConnection", "WSOptions"]

log = logging.getLogger("pycable.ws")

#: Frames one fragmented message may have (empty continuation frames cost nothing against
#: ``--max_message_size``, but each is a frame to parse and a list entry): beyond, close 1009.
MAX_FRAGMENTS = 1024


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
_RESTART_FRAME = text_frame(messages.disconnect(c.SERVER_RESTART, True))


def _ping_frame(now: float, precision: str) -> bytes:
    """Pings encoded once per timestamp and shared by every connection."""
    global _ping_cache
    ts = ping_timestamp(now, precision)
    if _ping_cache[0] != ts or _ping_cache[1] != precision:
        _ping_cache = (ts, precision, text_frame(messages.ping(ts)))
    return _ping_cache[2]


class WebSocketConnection(asyncio.Protocol):
    """An upgraded connection, bound to a node session (a :class:`~pycable.node.port.Connection`)."""

    encoding = WEBSOCKET

    def __init__(
        self,
        transport: asyncio.Transport,
        proto: ServerProtocol,
        node: NodePort,
        options: WSOptions,
        interval: float,
        precision: str,
        pong_timeout: float = 0.0,
        on_lost: Callable[[WebSocketConnection], None] | None = None,
    ) -> None:
        self.transport = transport
        self.proto = proto
        self.node = node
        self.options = options
        # The fan-out writes with the socket's own write (no Python call in between); the
        # --ws_max_pending_size cap is the transport's high-water mark: pause_writing() fires
        # when a client's unsent bytes pass it.
        self.frame_writer: Callable[[bytes], None] = transport.write
        transport.set_write_buffer_limits(high=options.max_pending)
        self.loop = asyncio.get_running_loop()
        self.session: Session | None = None
        self.closing = False
        #: Disconnected as too slow: nothing more is read or queued.
        self.too_slow = False
        self.lost = False
        now = time.time()
        self.policy = ConnectionPolicy(interval, pong_timeout, now)
        self.runner: asyncio.Task[None] | None = None
        #: The fragments of a text message still being received, else ``None``.
        self.fragments: list[bytes] | None = None
        self.precision = precision
        self.timer: asyncio.TimerHandle | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        self.on_lost = on_lost
        self._arm(now)

    def start(self, handshake: Handshake, rest: bytes = b"") -> None:
        """Open the node session, then read what followed the handshake."""
        self.session = self.node.open(self, handshake)
        if rest:
            self.data_received(rest)

    # -- the node's Connection interface ----------------------------------------------------

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
            self.close_timer = self.loop.call_later(self.options.write_timeout, self.abort)

    def ready(self) -> None:
        """Authenticated: run the commands queued meanwhile."""
        self.policy.authenticated()
        self._run_soon()

    # -- the server's interface -------------------------------------------------------------

    def going_away(self) -> None:
        """Graceful shutdown (§1.6): ``server_restart``, then close with 1001."""
        self.send_frame(_RESTART_FRAME)
        self.close(c.CLOSE_GOING_AWAY, "Server restart")

    def abort(self) -> None:
        """The close handshake did not finish in time: reset the connection."""
        self.close_timer = None
        if not self.lost:
            reset(self.transport)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def _sid(self) -> str:
        return redact_sid(self.session.sid) if self.session else "-"

    def data_received(self, data: bytes) -> None:
        if self.too_slow:
            return  # nothing more is read, nor answered (pings), once it is too slow
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
                    if len(fragments) >= MAX_FRAGMENTS:
                        self.fragments = None
                        log.info("closing sid=%s: more than %d fragments in one message", self._sid(), MAX_FRAGMENTS)
                        self.close(c.CLOSE_TOO_BIG, "Too many fragments")
                        break
                    fragments.append(bytes(event.data))
                    if event.fin:
                        self.fragments = None
                        self._on_text(b"".join(fragments))
                elif event.fin:  # the end of a fragmented binary message
                    self._malformed(self.policy.malformed("binary frame on a JSON protocol", time.time()))
            elif opcode is Opcode.BINARY and event.fin:
                self._malformed(self.policy.malformed("binary frame on a JSON protocol", time.time()))
            # PING/PONG/CLOSE are answered by the protocol itself.
            self.policy.activity()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._stop_sending()
        self._cancel_timer()
        if self.close_timer is not None:
            self.close_timer.cancel()
        if self.runner is not None and not self.runner.done():
            self.runner.cancel()
        if self.on_lost is not None:
            self.on_lost(self)
        if self.session is not None:
            self.node.closed(self.session)

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
        bad = self.policy.receive_text(data, time.time())
        if bad is not None:
            self._malformed(bad)
        else:
            self._run_soon()

    def _malformed(self, bad: Malformed) -> None:
        self.node.count_malformed()
        sid = self.session.sid if self.session else "-"
        log.debug("dropped malformed frame sid=%s: %s", redact_sid(sid), bad.why)
        if bad.close is not None:
            log.info("closing sid=%s: too many malformed frames", redact_sid(sid))
            self._close_with(bad.close)

    def _close_with(self, close: Close) -> None:
        self.send_frame(text_frame(messages.disconnect(close.reason, close.reconnect)))
        self.close(close.code, close.text)

    def _run_soon(self) -> None:
        if self.runner is None and self.policy.runnable and not self.closing:
            self.runner = self.loop.create_task(self._run_commands())

    async def _run_commands(self) -> None:
        session, node, policy = self.session, self.node, self.policy
        assert session is not None
        try:
            while not self.closing:
                cmd = policy.next_command()
                if cmd is None:
                    break
                why = await node.run(session, cmd)
                if why is not None:
                    self._malformed(policy.malformed(why, time.time()))
        finally:
            self.runner = None
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
        log.info("closing sid=%s: write buffer over %d bytes (too_slow)", redact_sid(sid), self.options.max_pending)
        self._stop_sending()
        # A client that does not read must not make us queue more: no replies to its PINGs,
        # no close handshake; its socket is reset after --ws_write_timeout.
        self.too_slow = True
        self.transport.pause_reading()
        self.transport.write(text_frame(messages.disconnect(c.TOO_SLOW, True)))
        self.transport.write(close_frame(c.CLOSE_NORMAL, "Too slow"))
        self._cancel_timer()
        self.close_timer = self.loop.call_later(self.options.write_timeout, self.abort)

    def _stop_sending(self) -> None:
        """No frame but the closing ones from now on: mark the connection closing, and stop
        the fan-out, which writes to the socket directly, from writing here."""
        self.closing = True
        if self.session is not None:
            self.node.closing(self.session)

    def _arm(self, now: float) -> None:
        self.timer = arm_timer(self.policy, now, self._on_timer)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        self.timer = None
        if self.closing:
            return
        now = time.time()
        send_ping, close = self.policy.tick(now)
        if close is not None:
            self._close_with(close)
            return
        if send_ping:
            self.send_frame(_ping_frame(now, self.precision))
        if not self.closing:
            self._arm(now)
