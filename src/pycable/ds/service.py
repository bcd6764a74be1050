"""The Durable Streams service: reads and writes of streams kept by the broker (no sockets).

A request comes in as a :class:`DSRequest` and leaves as a :class:`DSResponse` (an SSE
response carries an async iterator of chunks); the transport (``transport/ds.py``) only
moves bytes. The pure rules are in :mod:`pycable.protocol.ds`.

* A DS stream is a broker stream: its messages are the broker's history, its offsets the
  broker's (epoch, offset). An append is a broadcast: each message goes through
  :meth:`Node.handle_broadcast`, so the stream's WebSocket subscribers get it live with the
  same offset, and a DS reader reads what they got, in the same order. JSON-mode appends
  store each (flattened) JSON value as one message; other content types store each append
  as one message (UTF-8 text for ``text/*``, base64 for binary, decoded on read).
* A stream that was never created over DS but has history (broadcasts by the application)
  reads as an open ``application/json`` stream, as AnyCable serves it.
* Metadata (content type, TTL/expiry, closure, producers, ``Stream-Seq``) is kept by the
  broker (:class:`~pycable.broker.base.DurableBroker`). Writes to one stream are serialised
  on this node by a lock.
* Long-poll and SSE readers wait on :class:`Waiters`: one hub watcher per stream wakes all of
  them when a message of the stream is fanned out on this node, or when it closes or goes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import orjson

from pycable.ds import forks
from pycable.exceptions import BrokerError, BrokerFullError, ConfigError, HistoryError, RPCError
from pycable.protocol import constants as c
from pycable.protocol import ds as p
from pycable.protocol.broadcast import StreamMessage
from pycable.rpc.base import SUCCESS, Env

if TYPE_CHECKING:
    from pycable.broker.base import DurableBroker
    from pycable.config import Config
    from pycable.node.node import Node

__all__ = ["DSRequest", "DSResponse", "DSOptions", "DurableStreams", "Waiters", "from_config"]

log = logging.getLogger("pycable.ds")

#: Catch-up responses stop after this many bytes of data (at least one message is sent).
MAX_CHUNK = 1 << 20
JSON = "application/json"
OCTET = "application/octet-stream"

_SECURITY = [("x-content-type-options", "nosniff"), ("cross-origin-resource-policy", "cross-origin")]
#: CORS: the headers a browser client may read (the transport adds the CORS headers).
EXPOSE = ("Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, Stream-Expires-At, "
           "Producer-Epoch, Producer-Seq, Producer-Expected-Seq, Producer-Received-Seq, ETag, Content-Type, "
           "Location, Stream-SSE-Data-Encoding")
_ALLOW = ("Content-Type, Authorization, If-None-Match, Stream-Seq, Stream-TTL, Stream-Expires-At, Stream-Closed, "
          "Producer-Id, Producer-Epoch, Producer-Seq, X-Signed")
CATCH_UP_CACHE = "public, max-age=60, stale-while-revalidate=300"


@dataclass(slots=True)
class DSRequest:
    """One HTTP request for a stream. ``headers`` have lower-case names."""

    method: str
    stream: str
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    url: str = ""
    remote_addr: str = ""

    def param(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class DSResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    #: SSE: the body, chunk by chunk, until the iterator ends (the transport then closes).
    events: AsyncIterator[bytes] | None = None

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclass(slots=True)
class DSOptions:
    poll_interval: float = 10.0
    sse_ttl: float = 60.0
    skip_auth: bool = False
    #: Writes need ``Authorization: Bearer <key>``; with no key they are refused unless
    #: ``public`` (``--public``).
    write_key: str = ""
    public: bool = False
    #: Largest accepted append or initial PUT body (413 beyond).
    max_append: int = 16 << 20
    #: ``--ds_path``: ``Stream-Forked-From`` may name the source with it.
    mount: str = "/ds"


def _error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> DSResponse:
    return DSResponse(status, [("content-type", "text/plain; charset=utf-8"), *(headers or [])], message.encode())


class Waiters:
    """Readers waiting for a stream's next message, closure or deletion.

    :meth:`wait` registers before the reader re-checks the history, so a message that lands
    in between is never missed: the reader sees it in history, or is woken by it.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.events: dict[str, asyncio.Event] = {}
        self.counts: dict[str, int] = {}

    async def enter(self, stream: str) -> asyncio.Event:
        event = self.events.get(stream)
        if event is None:
            event = self.events[stream] = asyncio.Event()
            self.counts[stream] = 0
            await self.node.watch(stream, lambda msg: self.wake(msg.stream))
        self.counts[stream] += 1
        return event

    async def leave(self, stream: str) -> None:
        n = self.counts.get(stream, 0) - 1
        if n > 0:
            self.counts[stream] = n
            return
        self.counts.pop(stream, None)
        if self.events.pop(stream, None) is not None:
            await self.node.unwatch(stream)

    def wake(self, stream: str) -> None:
        """Wake every reader of *stream*; later waits use a fresh event."""
        event = self.events.get(stream)
        if event is not None:
            event.set()
            self.events[stream] = asyncio.Event()

    def current(self, stream: str) -> asyncio.Event | None:
        return self.events.get(stream)


class DurableStreams:
    """Serves DS requests for one node. ``clock`` and ``jitter`` are injectable for tests."""

    def __init__(
        self,
        node: Node,
        broker: DurableBroker,
        options: DSOptions | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], int] = lambda: random.randint(1, p.MAX_JITTER),
    ) -> None:
        self.node = node
        self.broker = broker
        self.options = options or DSOptions()
        self.clock = clock
        self.jitter = jitter
        self.waiters = Waiters(node)
        self.locks: dict[str, asyncio.Lock] = {}
        self.stats = {"requests": 0, "polls": 0, "sse": 0, "appends": 0}

    # -- entry point -----------------------------------------------------------------------

    async def handle(self, req: DSRequest) -> DSResponse:
        self.stats["requests"] += 1
        try:
            resp = await self._dispatch(req)
        except BrokerFullError as exc:
            resp = _error(507, str(exc))
        except BrokerError as exc:
            log.warning("durable streams: broker failure: %s", exc)
            resp = _error(503, "the broker is unavailable")
        except RPCError as exc:
            log.warning("durable streams: authentication failed: %s", exc)
            resp = _error(503, "authentication is unavailable")
        resp.headers.extend(_SECURITY)
        return resp

    async def _dispatch(self, req: DSRequest) -> DSResponse:
        method = req.method.upper()
        if method == "OPTIONS":
            return DSResponse(204, [
                ("access-control-allow-methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS"),
                ("access-control-allow-headers", _ALLOW),
                ("access-control-max-age", "86400"),
            ])
        if not req.stream or len(req.stream) > 1024:
            return _error(400, "a stream name (1 to 1024 characters) is required in the path")
        if method in ("GET", "HEAD"):
            denied = await self._authorize_read(req)
            if denied is not None:
                return denied
            return await (self._read(req) if method == "GET" else self._head(req))
        if method in ("PUT", "POST", "DELETE"):
            denied = self.write_denied(req.headers.get("authorization", ""))
            if denied is not None:
                return denied
            lock = self.locks.setdefault(req.stream, asyncio.Lock())
            try:
                async with lock:
                    if method == "PUT":
                        return await self._create(req)
                    if method == "POST":
                        return await self._append(req)
                    return await self._delete(req)
            finally:
                if not lock.locked() and not lock._waiters:
                    self.locks.pop(req.stream, None)
        return _error(405, f"method {method} is not allowed on a stream",
                      [("allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS")])

    # -- authorization ---------------------------------------------------------------------

    async def _authorize_read(self, req: DSRequest) -> DSResponse | None:
        """As AnyCable: the client authenticates (JWT, or the application) unless
        ``--ds_skip_auth``, then the stream is authorized as a ``$pubsub`` subscription:
        a signed name (``?signed=``/``X-Signed``) or a public stream."""
        from pycable.node.node import new_sid

        controller = self.node.controller
        env = Env(url=req.url, headers=req.headers, sid=new_sid(), remote_addr=req.remote_addr,
                  query=dict(req.query))
        identifiers = ""
        if not self.options.skip_auth:
            result = await controller.connect(env)
            if result.status != SUCCESS:
                return _error(401, "unauthorized: authenticate with a token (?jid= or the X-JID header)")
            identifiers = result.identifiers
        signed = req.param("signed") or req.headers.get("x-signed")
        ident: dict[str, str] = {"channel": c.PUBSUB_CHANNEL, "stream_name": req.stream}
        if signed:
            ident["signed_stream_name"] = signed
        verdict = await controller.command(c.SUBSCRIBE, orjson.dumps(ident).decode(), identifiers, "", env)
        if verdict.status != SUCCESS or req.stream not in verdict.streams:
            return _error(401, "unauthorized stream: sign its name (?signed= or X-Signed) or enable public streams")
        return None

    def write_denied(self, authorization: str) -> DSResponse | None:
        """Writes need the broadcast key (``Authorization: Bearer <key>``), or ``--public``."""
        key = self.options.write_key
        if key:
            if authorization.startswith("Bearer ") and hmac.compare_digest(
                authorization[7:].strip().encode(), key.encode()
            ):
                return None
            return _error(401, "writes need the broadcast key: Authorization: Bearer <key>")
        if self.options.public:
            return None
        return _error(403, "writes are disabled: set a broadcast key (--broadcast_key or --secret) or use --public")

    # -- stream state ----------------------------------------------------------------------

    async def _meta(self, stream: str, now: float) -> p.StreamMeta | None:
        """The stream's metadata; an expired stream is deleted here (and is gone); a stream
        with history only reads as an open JSON stream."""
        raw = await self.broker.ds_load(stream)
        if raw is not None:
            meta = p.StreamMeta.loads(raw)
            if meta.gone or not meta.expired(now):
                return meta
            self.waiters.wake(stream)
            if meta.refs:  # forks still read it: soft-deleted
                meta.gone = True
                await self.broker.ds_store(stream, meta.dumps())
                return meta
            await self.broker.ds_delete(stream)
            await forks.release(self, meta)
            return None
        # A stream with history but no metadata (broadcasts by the application) reads as an
        # open JSON stream while it holds messages.
        if await self.broker.tail(stream) is None or not await self.broker.history_since(stream, 0):
            return None
        return p.StreamMeta(JSON, now, now)

    async def _touch(self, stream: str, meta: p.StreamMeta, now: float) -> None:
        """Reads and writes restart a sliding TTL (HEAD does not)."""
        if meta.ttl is not None:
            meta.accessed = now
            await self.broker.ds_store(stream, meta.dumps())

    async def _tail(self, stream: str) -> int:
        tail = await self.broker.tail(stream)
        return tail or 0

    def _token(self, offset: int) -> str:
        return p.encode_offset(self.broker.epoch, offset)

    # -- reads -----------------------------------------------------------------------------

    async def _head(self, req: DSRequest) -> DSResponse:
        now = self.clock()
        meta = await self._meta(req.stream, now)
        if meta is None or meta.gone:
            return DSResponse(410 if meta else 404, [("cache-control", "no-store")])
        tail = self._token(await self._tail(req.stream))
        headers = [("content-type", meta.content_type), ("stream-next-offset", tail), ("cache-control", "no-store"),
                   ("etag", p.etag(req.stream, p.START, tail, meta.closed))]
        if meta.closed:
            headers.append(("stream-closed", "true"))
        if meta.ttl is not None:
            headers.append(("stream-ttl", str(meta.ttl)))
        if meta.expires_at:
            headers.append(("stream-expires-at", meta.expires_at))
        return DSResponse(200, headers)

    async def _history(self, stream: str, start: p.Offset | str) -> tuple[list[StreamMessage], int] | DSResponse:
        """Messages after *start* and the tail, or the error response."""
        tail = await self._tail(stream)
        if start == p.START:
            return await self.broker.history_since(stream, 0), tail
        if start == p.NOW:
            return [], tail
        assert isinstance(start, p.Offset)
        if start.epoch != self.broker.epoch:
            return _error(410, "the offset belongs to an earlier history of this stream (epoch changed): read from -1")
        if start.offset > tail:
            return _error(400, "the offset is past the end of the stream")
        if start.offset == tail:
            return [], tail
        try:
            return await self.broker.history_from(stream, start.epoch, start.offset), tail
        except HistoryError as exc:
            return _error(410, f"the offset is no longer in the stream's history: {exc}")

    def _parse_read(self, req: DSRequest) -> tuple[p.Offset | str, str, str | None] | DSResponse:
        offsets = [v for k, v in req.query if k == "offset"]
        if len(offsets) > 1:
            return _error(400, "give one offset")
        live = req.param("live") or ""
        if live not in ("", "long-poll", "sse"):
            return _error(400, "live must be long-poll or sse")
        if not offsets:
            if live:
                return _error(400, f"live={live} needs an offset (-1, now, or a Stream-Next-Offset)")
            return p.START, live, req.param("cursor")
        try:
            start = p.parse_offset(offsets[0])
        except p.OffsetError as exc:
            return _error(400, str(exc))
        return start, live, req.param("cursor")

    async def _read(self, req: DSRequest) -> DSResponse:
        parsed = self._parse_read(req)
        if isinstance(parsed, DSResponse):
            return parsed
        start, live, cursor = parsed
        now = self.clock()
        meta = await self._meta(req.stream, now)
        if meta is None or meta.gone:
            return _gone() if meta else _error(404, "stream not found")
        await self._touch(req.stream, meta, now)
        if live == "sse":
            return await self._sse(req, meta, start, cursor)
        ct = meta.content_type
        if start == p.NOW and live != "long-poll":
            headers = [("content-type", ct), ("stream-next-offset", self._token(await self._tail(req.stream))),
                       ("stream-up-to-date", "true"), ("cache-control", "no-store")]
            if meta.closed:
                headers.append(("stream-closed", "true"))
            return DSResponse(200, headers, b"[]" if p.is_json(ct) else b"")
        if live == "long-poll":
            self.stats["polls"] += 1
            await self.waiters.enter(req.stream)
            try:
                return await self._long_poll(req, meta, start, cursor)
            finally:
                await self.waiters.leave(req.stream)
        found = await self._history(req.stream, start)
        if isinstance(found, DSResponse):
            return found
        return self._data_response(req, meta, start, found[0], found[1], None)

    async def _long_poll(self, req: DSRequest, meta: p.StreamMeta, start: p.Offset | str,
                         cursor: str | None) -> DSResponse:
        deadline = self.clock() + self.options.poll_interval
        if start == p.NOW:
            start = p.Offset(await self._tail(req.stream), self.broker.epoch)
        while True:
            event = self.waiters.current(req.stream)
            found = await self._history(req.stream, start)
            if isinstance(found, DSResponse):
                return found
            msgs, tail = found
            if msgs:
                return self._data_response(req, meta, start, msgs, tail, self._cursor(cursor))
            fresh = await self._meta(req.stream, self.clock())
            if fresh is None:
                return _error(404, "stream not found")
            meta = fresh
            at = start.offset if isinstance(start, p.Offset) else tail
            headers = [("stream-next-offset", self._token(at)), ("stream-up-to-date", "true")]
            if meta.closed:
                return DSResponse(204, [*headers, ("stream-closed", "true")])
            left = deadline - self.clock()
            if left <= 0 or event is None:
                return DSResponse(204, [*headers, ("stream-cursor", self._cursor(cursor))])
            try:
                await asyncio.wait_for(event.wait(), left)
            except TimeoutError:
                pass
            if self.node.shutting_down:
                return _error(503, "the server is shutting down")

    def _cursor(self, client: str | None) -> str:
        return p.response_cursor(client, self.clock(), self.jitter())

    def _payload(self, meta: p.StreamMeta, msgs: list[StreamMessage]) -> bytes:
        ct = meta.content_type
        if p.is_json(ct):
            return p.json_body([p.as_json_text(m.data) for m in msgs])
        return b"".join(p.from_stored(m.data, ct) for m in msgs)

    def _chunk(self, msgs: list[StreamMessage]) -> tuple[list[StreamMessage], bool]:
        """At most about :data:`MAX_CHUNK` bytes of messages (at least one); True when all fit."""
        size = 0
        for i, m in enumerate(msgs):
            size += len(m.data)
            if size > MAX_CHUNK and i > 0:
                return msgs[:i], False
        return msgs, True

    def _data_response(self, req: DSRequest, meta: p.StreamMeta, start: p.Offset | str, msgs: list[StreamMessage],
                       tail: int, cursor: str | None) -> DSResponse:
        msgs, complete = self._chunk(msgs)
        end = msgs[-1].offset if msgs else (start.offset if isinstance(start, p.Offset) else tail)
        next_offset = self._token(end)
        up_to_date = complete and end >= tail
        closed = meta.closed and up_to_date
        start_token = start if isinstance(start, str) else self._token(start.offset)
        tag = p.etag(req.stream, start_token, next_offset, closed)
        if req.headers.get("if-none-match") == tag:
            return DSResponse(304, [("etag", tag)])
        headers = [("content-type", meta.content_type), ("stream-next-offset", next_offset), ("etag", tag),
                   ("cache-control", CATCH_UP_CACHE)]
        if up_to_date:
            headers.append(("stream-up-to-date", "true"))
        if closed:
            headers.append(("stream-closed", "true"))
        elif cursor is not None:
            headers.append(("stream-cursor", cursor))
        return DSResponse(200, headers, self._payload(meta, msgs))

    # -- SSE -------------------------------------------------------------------------------

    async def _sse(self, req: DSRequest, meta: p.StreamMeta, start: p.Offset | str, cursor: str | None) -> DSResponse:
        if start == p.NOW:
            start = p.Offset(await self._tail(req.stream), self.broker.epoch)
        found = await self._history(req.stream, start)  # errors before the stream starts
        if isinstance(found, DSResponse):
            return found
        self.stats["sse"] += 1
        headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("x-accel-buffering", "no")]
        binary = not p.is_text(meta.content_type)
        if binary:
            headers.append(("stream-sse-data-encoding", "base64"))
        return DSResponse(200, headers, events=self._sse_events(req, meta, start, cursor, binary))

    async def _sse_events(self, req: DSRequest, meta: p.StreamMeta, start: p.Offset | str, cursor: str | None,
                          binary: bool) -> AsyncIterator[bytes]:
        """The SSE body. It registers as a waiter when the transport starts it (a response
        never started holds nothing), then reads the history: nothing is missed in between."""
        import base64

        stream = req.stream
        deadline = self.clock() + self.options.sse_ttl
        await self.waiters.enter(stream)
        try:
            # The wake-up event is taken before each history read: a message registered after
            # the read sets it.
            event = self.waiters.current(stream)
            found = await self._history(stream, start)
            while True:
                if isinstance(found, DSResponse):
                    return  # the history moved past us (a new epoch): the client reconnects
                msgs, tail = found
                fresh = await self._meta(stream, self.clock())
                if fresh is None:
                    return
                meta = fresh
                out = b""
                if msgs:
                    msgs, complete = self._chunk(msgs)
                    payload = self._payload(meta, msgs)
                    text = base64.b64encode(payload).decode() if binary else payload.decode("utf-8", "replace")
                    out += p.sse_event("data", text)
                    end = msgs[-1].offset
                else:
                    complete = True
                    end = start.offset if isinstance(start, p.Offset) else tail
                up_to_date = complete and end >= tail
                closed = meta.closed and up_to_date
                out += p.control_event(self._token(end), None if closed else self._cursor(cursor), up_to_date, closed)
                yield out
                if closed:
                    return
                start = p.Offset(end, self.broker.epoch)
                if up_to_date:
                    left = deadline - self.clock()
                    if left <= 0 or event is None:
                        return
                    try:
                        await asyncio.wait_for(event.wait(), min(left, self.options.poll_interval))
                    except TimeoutError:
                        pass
                    if self.node.shutting_down:
                        return
                event = self.waiters.current(stream)
                found = await self._history(stream, start)
        finally:
            await self.waiters.leave(stream)

    # -- writes ----------------------------------------------------------------------------

    async def _create(self, req: DSRequest) -> DSResponse:
        h = req.headers
        raw_ct = h.get("content-type")
        given_ct = raw_ct.strip() if raw_ct and p.valid_content_type(raw_ct) else None
        ct = given_ct or OCTET
        ttl_raw, exp_raw = h.get("stream-ttl"), h.get("stream-expires-at")
        if ttl_raw is not None and exp_raw is not None:
            return _error(400, "give Stream-TTL or Stream-Expires-At, not both")
        try:
            ttl = p.parse_ttl(ttl_raw) if ttl_raw is not None else None
            deadline = p.parse_expires_at(exp_raw) if exp_raw is not None else None
        except ValueError as exc:
            return _error(400, str(exc))
        closed = p.is_closed_header(h.get("stream-closed"))
        if len(req.body) > self.options.max_append:
            return _error(413, f"the body is larger than {self.options.max_append} bytes")
        if any(k in h for k in ("stream-forked-from", "stream-fork-offset", "stream-fork-sub-offset")):
            return await forks.create_fork(self, req, given_ct, ttl, exp_raw, deadline, closed)
        now = self.clock()
        meta = await self._meta(req.stream, now)
        if meta is not None and meta.gone:
            return _error(409, "the stream was deleted but still has forks: the name cannot be reused yet")
        if meta is not None and await self.broker.ds_load(req.stream) is not None:
            if meta.forked_from is not None or not meta.same_config(ct, ttl, exp_raw, closed):
                return _error(409, "the stream exists with another configuration")
            return DSResponse(200, self._write_headers(meta, await self._tail(req.stream)))
        try:
            datas = self._messages(req.body, ct, create=True)
        except ValueError as exc:
            return _error(400, str(exc))
        meta = p.StreamMeta(ct, now, now, ttl, exp_raw, deadline)
        if not await self.broker.ds_create(req.stream, meta.dumps()):
            return _error(409, "the stream was created concurrently")
        tail = await self._publish(req.stream, datas)
        if closed:
            meta.closed = True
            await self.broker.ds_store(req.stream, meta.dumps())
            self.waiters.wake(req.stream)
        headers = self._write_headers(meta, tail if tail is not None else await self._tail(req.stream))
        headers.append(("location", req.url or req.stream))
        return DSResponse(201, headers)

    def _write_headers(self, meta: p.StreamMeta, tail: int) -> list[tuple[str, str]]:
        headers = [("content-type", meta.content_type), ("stream-next-offset", self._token(tail))]
        if meta.closed:
            headers.append(("stream-closed", "true"))
        return headers

    def _messages(self, body: bytes, ct: str, create: bool = False) -> list[str]:
        if not body:
            return []
        if p.is_json(ct):
            return p.split_json_append(body, allow_empty=create)
        return [p.to_stored(body, ct)]

    async def _publish(self, stream: str, datas: list[str]) -> int | None:
        """Broadcast the messages through the node (registered by the broker, fanned out to
        every subscriber); the offset of the last one."""
        if not datas:
            return None
        last = 0
        for data in datas:
            last = (await self.node.publish(StreamMessage(stream, data))).offset
        self.stats["appends"] += 1
        return last

    async def _append(self, req: DSRequest) -> DSResponse:
        h = req.headers
        try:
            producer = p.parse_producer(h.get("producer-id"), h.get("producer-epoch"), h.get("producer-seq"))
        except ValueError as exc:
            return _error(400, str(exc))
        if len(req.body) > self.options.max_append:
            return _error(413, f"the body is larger than {self.options.max_append} bytes")
        close = p.is_closed_header(h.get("stream-closed"))
        now = self.clock()
        meta = await self._meta(req.stream, now)
        if meta is None or meta.gone:
            return _gone() if meta else _error(404, "stream not found")
        stored = await self.broker.ds_load(req.stream) is not None
        tail = await self._tail(req.stream)
        closed_headers = [("stream-closed", "true"), ("stream-next-offset", self._token(tail))]
        if not req.body and not close:
            return _error(400, "an append needs a body (an empty one only with Stream-Closed: true)")
        meta.forget_producers(now)
        if meta.closed:
            if producer is not None and meta.closed_by == (producer.id, producer.epoch, producer.seq):
                return DSResponse(204, [*closed_headers, *_producer_headers(producer.epoch, producer.seq)])
            state = meta.producers.get(producer.id) if producer is not None else None
            if producer is not None and state is not None and producer.epoch < state.epoch:
                return _error(403, "stale producer epoch", [("producer-epoch", str(state.epoch))])
            if not req.body and producer is None:
                return DSResponse(204, closed_headers)
            return _error(409, "the stream is closed", closed_headers)
        if req.body:
            given = h.get("content-type")
            if not given:
                return _error(400, "Content-Type is required with a body")
            if p.media_type(given) != p.media_type(meta.content_type):
                return _error(409, f"Content-Type {p.media_type(given)!r} does not match the stream's "
                                   f"{p.media_type(meta.content_type)!r}")
        verdict = None
        if producer is not None:
            verdict = p.check_producer(meta.producers.get(producer.id), producer, now)
            refused = _refusal(verdict)
            if refused is not None:
                return refused
        seq = h.get("stream-seq")
        if seq is not None and meta.stream_seq is not None and seq <= meta.stream_seq:
            return _error(409, f"Stream-Seq {seq[:64]!r} is not above the last one")
        try:
            datas = self._messages(req.body, meta.content_type)
        except ValueError as exc:
            return _error(400, str(exc))
        last = await self._publish(req.stream, datas)
        if verdict is not None and verdict.state is not None and producer is not None:
            meta.producers[producer.id] = verdict.state
        if seq is not None:
            meta.stream_seq = seq
        if close:
            meta.closed = True
            meta.closed_by = (producer.id, producer.epoch, producer.seq) if producer is not None else None
        meta.accessed = now
        if stored or producer is not None or seq is not None or close:
            if not stored:
                await self.broker.ds_create(req.stream, meta.dumps())
            await self.broker.ds_store(req.stream, meta.dumps())
        if close:
            self.waiters.wake(req.stream)
        headers = [("stream-next-offset", self._token(last if last is not None else tail))]
        if close:
            headers.append(("stream-closed", "true"))
        if producer is not None:
            headers.extend(_producer_headers(producer.epoch, producer.seq))
            return DSResponse(200 if datas else 204, headers)
        return DSResponse(204, headers)

    async def _delete(self, req: DSRequest) -> DSResponse:
        meta = await self._meta(req.stream, self.clock())
        if meta is None or meta.gone:
            return _gone() if meta else _error(404, "stream not found")
        self.waiters.wake(req.stream)
        if meta.refs:  # forks still read it: soft-deleted until the last one goes
            meta.gone = True
            await self.broker.ds_store(req.stream, meta.dumps())
            return DSResponse(204)
        await self.broker.ds_delete(req.stream)
        await forks.release(self, meta)
        return DSResponse(204)


_GONE_BODY = "the stream was deleted (its forks still read it)"


def _gone() -> DSResponse:
    return _error(410, _GONE_BODY)


def _producer_headers(epoch: int, seq: int) -> list[tuple[str, str]]:
    return [("producer-epoch", str(epoch)), ("producer-seq", str(seq))]


def _refusal(v: p.ProducerVerdict) -> DSResponse | None:
    if v.status == "accepted":
        return None
    if v.status == "duplicate":
        return DSResponse(204, _producer_headers(v.epoch, v.seq))
    if v.status == "stale_epoch":
        return _error(403, "stale producer epoch", [("producer-epoch", str(v.epoch))])
    if v.status == "bad_epoch_seq":
        return _error(400, "a new producer epoch must start at Producer-Seq 0")
    return _error(409, "producer sequence gap",
                  [("producer-expected-seq", str(v.expected)), ("producer-received-seq", str(v.seq))])


def from_config(config: Config, node: Node) -> DurableStreams:
    """The service for ``--ds``; the broker must keep Durable Streams metadata.

    Raises:
        ConfigError: the broker cannot serve Durable Streams.
    """
    broker = node.broker
    if not broker.supports_history or not hasattr(broker, "ds_create"):
        raise ConfigError(f"--ds needs a broker that keeps history (memory, redis, nats), not {config.broker!r}")
    options = DSOptions(
        poll_interval=config.ds_poll_interval,
        sse_ttl=config.ds_sse_ttl,
        skip_auth=config.ds_skip_auth,
        write_key=config.effective_broadcast_key,
        mount=config.ds_path,
        public=config.public,
    )
    return DurableStreams(node, cast("DurableBroker", broker), options)
