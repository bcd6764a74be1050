"""The hub: stream → subscribers index and local fan-out (spec §1.3 "Fan-out per identifier").

Fan-out semantics: a publication is encoded once per distinct (identifier, encoding) pair
(usually one: WebSocket text frames; SSE sessions have their own encodings, see
:mod:`pycable.protocol.encoding`) and the same bytes are written to every subscriber that
shares it, synchronously, with no
per-client ``await``: a client that does not read cannot delay others. The transport caps
each connection's write buffer (``--ws_max_pending_size``) and closes a client over it
(``too_slow``); that client catches up from history when it resumes. Publications are
fanned out one at a time, in arrival order, by one worker that yields to the event loop
every :data:`YIELD_EVERY` writes so that reads and pings go on during a large fan-out.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from pycable.node.session import Session
from pycable.protocol.broadcast import StreamMessage
from pycable.protocol.delivery import SEND, StreamCursor
from pycable.protocol.encoding import Encoding

__all__ = ["Hub", "YIELD_EVERY"]

log = logging.getLogger("pycable.hub")

YIELD_EVERY = 500

Cursor = StreamCursor[StreamMessage]


class Subscriber:
    """One (session, identifier) subscribed to a stream, as the fan-out loop needs it."""

    __slots__ = ("session", "sid", "identifier", "cursor", "send", "encoding")

    def __init__(self, session: Session, identifier: str, cursor: Cursor) -> None:
        self.session = session
        self.sid = session.sid
        self.identifier = identifier
        self.cursor = cursor
        #: The connection's fan-out writer (``Connection.frame_writer``: the socket's own
        #: ``write``); a no-op once removed from the index or muted, so that a fan-out still
        #: walking its snapshot sends nothing through it (the same session may be subscribed
        #: again already, with a new cursor), and nothing follows a close frame. No check in
        #: the hot loop.
        self.send: Callable[[bytes], None] = session.conn.frame_writer
        #: How the connection's bytes look: a broadcast is encoded once per (identifier,
        #: encoding) and the same bytes go to every subscriber that shares both.
        self.encoding: Encoding = session.conn.encoding


def _removed(frame: bytes) -> None:
    """The writer of a subscriber no longer in the index."""


class Hub:
    """Index of (session, identifier) subscribers per stream, and the fan-out worker."""

    def __init__(self) -> None:
        #: stream → {(session, identifier): subscriber}
        self.streams: dict[str, dict[tuple[Session, str], Subscriber]] = {}
        self.sessions: dict[str, Session] = {}
        self.by_identifiers: dict[str, set[Session]] = {}
        self._queue: deque[StreamMessage] = deque()
        self._worker: asyncio.Task[None] | None = None
        #: Called after the worker fanned out a message (tests, metrics).
        self.on_delivered: Callable[[StreamMessage, int], None] | None = None

    # -- index -------------------------------------------------------------------------------

    def add_session(self, session: Session) -> None:
        self.sessions[session.sid] = session
        if session.identifiers:
            self.by_identifiers.setdefault(session.identifiers, set()).add(session)

    def remove_session(self, session: Session) -> list[str]:
        """Forget *session*; returns the streams it was subscribed to (one entry per subscription)."""
        self.sessions.pop(session.sid, None)
        group = self.by_identifiers.get(session.identifiers)
        if group is not None:
            group.discard(session)
            if not group:
                del self.by_identifiers[session.identifiers]
        released = []
        for sub in session.subscriptions.values():
            for stream in sub.streams:
                self._remove(stream, session, sub.identifier)
                released.append(stream)
        return released

    def subscribe(self, session: Session, identifier: str, stream: str, cursor: Cursor) -> None:
        self.streams.setdefault(stream, {})[(session, identifier)] = Subscriber(session, identifier, cursor)

    def unsubscribe(self, session: Session, identifier: str, stream: str) -> None:
        self._remove(stream, session, identifier)

    def mute(self, session: Session) -> None:
        """Fan out nothing more to *session* (its connection is closing); the index entries
        stay until the node forgets the session."""
        for sub in session.subscriptions.values():
            for stream in sub.streams:
                entry = self.streams.get(stream, {}).get((session, sub.identifier))
                if entry is not None:
                    entry.send = _removed

    def rewire(self, session: Session) -> None:
        """The connection's fan-out writer changed (an event stream that started after its
        subscriptions): fan out through the new one."""
        writer = session.conn.frame_writer
        for sub in session.subscriptions.values():
            for stream in sub.streams:
                entry = self.streams.get(stream, {}).get((session, sub.identifier))
                if entry is not None and entry.send is not _removed:
                    entry.send = writer

    def _remove(self, stream: str, session: Session, identifier: str) -> None:
        subs = self.streams.get(stream)
        if subs is not None:
            gone = subs.pop((session, identifier), None)
            if gone is not None:
                gone.send = _removed
            if not subs:
                del self.streams[stream]

    def sessions_with_identifiers(self, identifiers: str) -> list[Session]:
        return list(self.by_identifiers.get(identifiers, ()))

    # -- fan-out -----------------------------------------------------------------------------

    def broadcast(self, msg: StreamMessage) -> None:
        """Queue *msg* for fan-out; returns at once."""
        if msg.stream not in self.streams:
            return
        self._queue.append(msg)
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        queue = self._queue
        try:
            while queue:
                msg = queue.popleft()
                await self._fan_out(msg)
        finally:
            self._worker = None
            if queue:  # appended after the loop's last check
                self._worker = asyncio.get_running_loop().create_task(self._drain())

    async def _fan_out(self, msg: StreamMessage) -> None:
        subs = self.streams.get(msg.stream)
        if not subs:
            return
        exclude, offset, epoch = msg.exclude_socket, msg.offset, msg.epoch
        frames: dict[tuple[str, Encoding], bytes] = {}
        last_identifier, last_encoding, frame = "", None, b""
        sent = 0
        # A snapshot: subscribers may come and go while this yields (a removed one's send is
        # a no-op). This is the hottest loop of the server: the cursor's common case (not
        # holding, offset ahead) is inlined from StreamCursor.admit; the rest goes through it.
        for sub in list(subs.values()):
            if exclude is not None and sub.sid == exclude:
                continue
            cursor = sub.cursor
            if cursor.held is None and (not offset or offset > cursor.offset or epoch != cursor.epoch):
                if offset:
                    if epoch != cursor.epoch:
                        cursor.start = offset
                    cursor.epoch, cursor.offset = epoch, offset
            elif cursor.admit(msg) != SEND:
                continue
            identifier, encoding = sub.identifier, sub.encoding
            if identifier != last_identifier or encoding is not last_encoding:
                last_identifier, last_encoding = identifier, encoding
                key = (identifier, encoding)
                cached = frames.get(key)
                frame = frames[key] = cached if cached is not None else encoding.stream(msg, identifier)
            try:
                sub.send(frame)
            except RuntimeError:  # its socket closed before the transport could mute it
                sub.send = _removed
                continue
            sent += 1
            if sent % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        if self.on_delivered is not None:
            self.on_delivered(msg, sent)

    def deliver(self, session: Session, identifier: str, cursor: Cursor, msgs: list[StreamMessage]) -> None:
        """Send replayed or released messages to one subscriber (already cursor-filtered)."""
        encoding = session.conn.encoding
        for msg in msgs:
            session.send_frame(encoding.stream(msg, identifier))

    def counts(self) -> dict[str, int]:
        return {"streams": len(self.streams), "sessions": len(self.sessions)}


