"""Server-Sent Events (``--sse``, at ``--sse_path``): AnyCable's SSE transport on the node's port.

A GET request names one channel in its query (``identifier``, ``channel``, ``stream``,
``signed_stream`` or ``turbo_signed_stream_name``, with ``history_since``); a POST request
carries JSONL commands (several subscriptions on one stream). The client is identified as
on WebSocket (a JWT in the query or header, or the Connect RPC with the request's headers);
an unauthorized client or a rejected subscription gets 401 and no stream. Then the response
is ``200 text/event-stream`` and the session's messages follow as events
(:mod:`pycable.protocol.sse`): what the node sent before the stream started is written
first, then live broadcasts go to the socket through the hub like WebSocket frames (one
encoding per request kind, written as-is to every subscriber).

``Last-Event-ID`` (``<offset>/<epoch>/<stream>``, sent by EventSource when it reconnects)
becomes a history request on the subscription: the missed messages come first, exactly once
and in order, through the same cursor as WebSocket; when history cannot serve the gap the
client gets ``event: reject_history`` (never a silent loss).

Like WebSocket: pings (``event: ping``) every ``--ping_interval``, ``--max-conn`` counts SSE
streams too, a client whose unsent bytes pass ``--ws_max_pending_size`` is sent
``disconnect`` (``too_slow``) and closed, and a graceful shutdown sends ``disconnect``
(``server_restart``). CORS follows ``--allowed_origins``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pycable.exceptions import ProtocolError
from pycable.node.port import Handshake, NodePort, Session
from pycable.protocol import constants as c
from pycable.protocol import messages
from pycable.protocol.connection import ConnectionPolicy
from pycable.protocol.session import ping_timestamp, redact_sid
from pycable.protocol.sse import SSE_GET, SSE_GET_RAW, SSE_POST, SSEEncoding, ping_event, subscribe_command
from pycable.transport._sockets import arm_timer
from pycable.transport.http import Request, Response, ServerState, StreamResponse, StreamWriter, origin_allowed

__all__ = ["SSEHandler", "SSEOptions", "SSEConnection"]

log = logging.getLogger("pycable.sse")

_CORS_HEADERS = "Origin, X-Requested-With, X-Request-ID, Content-Type, Accept, X-CSRF-Token, Authorization, Last-Event-ID"
_TRUE = ("true", "1", "t", "y", "yes")


@dataclass(slots=True)
class SSEOptions:
    path: str = "/events"
    allowed_origins: tuple[str, ...] = ()
    max_conn: int = 0
    ping_interval: float = 3.0
    ping_precision: str = "s"
    #: The slow-client cap (``--ws_max_pending_size``).
    max_pending: int = 1 << 20
    #: The POST body cap (AnyCable's 64 KiB).
    max_body: int = 64 << 10
    version: str = ""
    scheme: str = "http"


class SSEConnection:
    """One event stream: the node's :class:`~pycable.node.port.Connection` and the server's
    live connection. Before the stream starts (authentication, subscriptions), what the node
    sends is kept and written first."""

    def __init__(self, node: NodePort, state: ServerState, encoding: SSEEncoding, options: SSEOptions) -> None:
        self.node = node
        self.state = state
        self._encoding = encoding
        self.options = options
        self.session: Session | None = None
        self.writer: StreamWriter | None = None
        self.backlog: list[bytes] | None = []
        self.frame_writer: Callable[[bytes], None] = self._keep
        self.closing = False
        #: Resolved True when the node connected the session, False when it closed it first.
        self.outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.policy = ConnectionPolicy(options.ping_interval, 0.0, time.time())
        self.timer: asyncio.TimerHandle | None = None

    # -- the node's Connection interface ----------------------------------------------------

    @property
    def encoding(self) -> SSEEncoding:
        return self._encoding

    def _keep(self, frame: bytes) -> None:
        if self.backlog is not None and frame:
            self.backlog.append(frame)

    def send_frame(self, frame: bytes) -> None:
        if self.closing or not frame:
            return
        if self.writer is not None:
            self.writer.write(frame)
        else:
            self._keep(frame)

    def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        if not self.outcome.done():
            self.outcome.set_result(False)
        if self.session is not None:
            self.node.closing(self.session)
        if self.writer is not None:
            self.writer.close()

    def ready(self) -> None:
        self.policy.authenticated()
        if not self.outcome.done():
            self.outcome.set_result(True)

    # -- the server's LiveConnection interface ------------------------------------------------

    def going_away(self) -> None:
        self.send_frame(self._encoding.message(messages.disconnect(c.SERVER_RESTART, True)))
        self.close(c.CLOSE_GOING_AWAY, "Server restart")

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
        else:
            self.close(c.CLOSE_GOING_AWAY, "Server restart")

    # -- the stream -----------------------------------------------------------------------------

    async def stream(self, writer: StreamWriter) -> None:
        """The response body: the kept messages, then live ones until the client leaves."""
        session = self.session
        assert session is not None
        self.writer = writer
        writer.on_slow = self._too_slow
        writer.on_going_away = self.going_away
        backlog, self.backlog = self.backlog, None
        if backlog:
            writer.write(b"".join(backlog))
        # From now on the fan-out writes to the socket itself (its cap: the high-water mark).
        self.frame_writer = writer.raw_write
        self.node.rewire(session)
        if self.closing:  # closed by the node before the stream started (a remote disconnect)
            writer.close()
        self._arm(time.time())
        try:
            await writer.closed.wait()
        finally:
            self.finish()

    def finish(self) -> None:
        """The client is gone (or never got a stream): release the session."""
        self._cancel_timer()
        self.closing = True
        self.state.lost(self)
        if self.session is not None:
            self.node.closed(self.session)
            self.session = None

    def _too_slow(self) -> None:
        sid = self.session.sid if self.session else "-"
        log.info("closing sid=%s: write buffer over %d bytes (too_slow)", redact_sid(sid), self.options.max_pending)
        if self.session is not None:
            self.node.closing(self.session)
        frame = self._encoding.message(messages.disconnect(c.TOO_SLOW, True))
        if self.writer is not None and frame:
            self.writer.transport.write(frame)
        self.closing = True

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
        send_ping, _ = self.policy.tick(now)  # no pong over SSE: never a no_pong close
        if send_ping:
            self.send_frame(ping_event(ping_timestamp(now, self.options.ping_precision), self._encoding.raw))
        self._arm(now)


class SSEHandler:
    """The HTTP handler of ``--sse_path`` (mount with ``Router.add(path, handler, max_body=…)``)."""

    def __init__(self, state: ServerState, options: SSEOptions) -> None:
        self.state = state
        self.node = state.node
        self.options = options

    def _cors(self, req: Request) -> list[tuple[str, str]] | None:
        """CORS headers for *req*; ``None`` when its Origin is not allowed."""
        origin = req.header("origin")
        if origin and not origin_allowed(origin, self.options.allowed_origins):
            return None
        return [
            ("Access-Control-Allow-Origin", origin or "*"),
            ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
            ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Allow-Headers", _CORS_HEADERS),
            ("Vary", "Origin"),
        ]

    async def __call__(self, req: Request) -> Response | StreamResponse:
        cors = self._cors(req)
        if cors is None:
            return Response(403, b"origin not allowed")
        if req.method == "OPTIONS":
            return Response(200, b"", cors)
        if req.method not in ("GET", "POST"):
            return Response(405, b"use GET or POST", [*cors, ("Allow", "GET, POST, OPTIONS")])
        opts, state = self.options, self.state
        if state.shutting_down or (opts.max_conn and len(state.connections) >= opts.max_conn):
            return Response(503, b"too many connections", cors)
        if req.method == "GET":
            encoding = SSE_GET_RAW if req.param("raw").lower() in _TRUE else SSE_GET
            try:
                subscribe = subscribe_command(req.params, req.header("last-event-id"))
            except ProtocolError as exc:
                return Response(400, str(exc).encode(), cors)
            if subscribe is None:
                return Response(400, b"no channel given (identifier, channel, stream, signed_stream or "
                                     b"turbo_signed_stream_name)", cors)
            lines = [subscribe]
        else:
            encoding = SSE_POST
            lines = [line for line in req.body.split(b"\n") if line.strip()]
        conn = SSEConnection(self.node, state, encoding, opts)
        now = time.time()
        for line in lines:
            bad = conn.policy.receive_text(line, now)
            if bad is not None:
                return Response(400, f"bad command: {bad.why}".encode(), cors)
        wanted = [cmd.identifier for cmd in conn.policy.commands or () if cmd.command == c.SUBSCRIBE]
        state.connections.add(conn)
        handshake = Handshake(
            url=f"{opts.scheme}://{req.header('host', 'localhost')}{req.target}",
            headers=req.headers,
            remote=req.remote,
            query=req.params,
        )
        session = conn.session = self.node.open(conn, handshake)
        if not await conn.outcome:
            conn.finish()
            return Response(401, b"unauthorized", cors)
        while (cmd := conn.policy.next_command()) is not None:
            why = await self.node.run(session, cmd)
            if why is not None:
                self.node.count_malformed()
                log.debug("dropped malformed command sid=%s: %s", redact_sid(session.sid), why)
        if conn.closing or any(ident not in session.subscriptions for ident in wanted):
            conn.finish()
            return Response(401, b"subscription rejected", cors)
        headers = [
            *cors,
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Cache-Control", "private, no-cache, no-store, must-revalidate, max-age=0"),
            ("Pragma", "no-cache"),
            ("Expires", "0"),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Accel-Buffering", "no"),
        ]
        if opts.version:
            headers.append(("X-AnyCable-Version", opts.version))
        return StreamResponse(200, headers, conn.stream, max_buffer=opts.max_pending)
