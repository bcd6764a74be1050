"""Durable Streams forks: ``PUT`` with ``Stream-Forked-From`` (memory and Redis brokers).

A fork is created by copy: the broker copies the source's messages up to the fork offset
into the new stream *with their offsets*, so the fork and its source share the offset space
up to the divergence point (a token read from the source is valid on the fork), and the
fork's own appends continue above it. ``Stream-Fork-Sub-Offset`` inherits part of the next
append as well: the first N bytes of the next message (binary and text streams) or the next
N JSON messages (JSON streams). The source counts its forks (``refs``): deleting a source
that has forks soft-deletes it (410 to everyone; its name cannot be reused) until the last
fork goes, and expiry does the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pycable.exceptions import HistoryError
from pycable.protocol import ds as p

if TYPE_CHECKING:
    from pycable.ds.service import DSRequest, DSResponse, DurableStreams

__all__ = ["create_fork", "release"]


def source_name(svc: DurableStreams, raw: str) -> str:
    """``Stream-Forked-From`` is the source's path: ``/a/b``, or with the DS mount ``/ds/a/b``."""
    path = raw.strip()
    mount = svc.options.mount.rstrip("/") + "/"
    if mount != "/" and path.startswith(mount):
        path = path[len(mount):]
    return path.lstrip("/")


async def create_fork(
    svc: DurableStreams, req: DSRequest, ct: str | None, ttl: int | None, expires_at: str | None,
    deadline: float | None, closed: bool,
) -> DSResponse:
    from pycable.ds.service import DSResponse, _error

    h = req.headers
    raw_from = h.get("stream-forked-from")
    raw_offset = h.get("stream-fork-offset")
    raw_sub = h.get("stream-fork-sub-offset")
    if raw_from is None:
        return _error(400, "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From")
    fork_ds = getattr(svc.broker, "ds_fork", None)
    if fork_ds is None:
        return _error(501, "stream forks need the memory or Redis broker")
    try:
        sub = p.parse_sub_offset(raw_sub) if raw_sub is not None else 0
    except ValueError as exc:
        return _error(400, str(exc))
    if sub and raw_offset is None:
        return _error(400, "a Stream-Fork-Sub-Offset above 0 needs Stream-Fork-Offset")
    source = source_name(svc, raw_from)
    now = svc.clock()
    existing = await svc._meta(req.stream, now)
    if existing is not None and await svc.broker.ds_load(req.stream) is not None:
        same = (
            existing.forked_from == source
            and (raw_offset is None or existing.fork_offset == raw_offset)
            and existing.fork_sub == sub
            and existing.closed == closed
            and (ct is None or p.media_type(ct) == p.media_type(existing.content_type))
            and (ttl is None or existing.ttl == ttl)
            and (expires_at is None or existing.expires_at == expires_at)
            and not existing.gone
        )
        if not same:
            return _error(409, "the stream exists with another configuration")
        return DSResponse(200, svc._write_headers(existing, await svc._tail(req.stream)))
    src = await svc._meta(source, now)
    if src is None:
        return _error(404, "the source stream (Stream-Forked-From) does not exist")
    if src.gone:
        return _error(409, "the source stream was deleted (it still has forks)")
    if ct is not None and p.media_type(ct) != p.media_type(src.content_type):
        return _error(409, "Content-Type does not match the source stream's")
    tail = await svc._tail(source)
    upto = tail
    if raw_offset is not None:
        try:
            parsed = p.parse_offset(raw_offset)
        except p.OffsetError as exc:
            return _error(400, str(exc))
        if not isinstance(parsed, p.Offset) or (parsed.offset and parsed.epoch != svc.broker.epoch):
            return _error(400, "Stream-Fork-Offset is not an offset of the source stream")
        if parsed.offset > tail:
            return _error(400, "Stream-Fork-Offset is past the end of the source stream")
        upto = parsed.offset
        if upto == 0:  # offset 0 is before any message of any stream: the source's start
            held = await svc.broker.history_since(source, 0)
            upto = held[0].offset - 1 if held else tail
    extra: list[str] = []
    if sub:
        try:
            after = await svc.broker.history_from(source, svc.broker.epoch, upto) if upto < tail else []
        except HistoryError as exc:
            return _error(400, f"Stream-Fork-Offset is no longer in the source's history: {exc}")
        if p.is_json(src.content_type):
            if sub > len(after):
                return _error(400, "Stream-Fork-Sub-Offset is past the source's next messages")
            upto = after[sub - 1].offset
        else:
            if not after:
                return _error(400, "Stream-Fork-Sub-Offset names data the source does not have")
            data = p.from_stored(after[0].data, src.content_type)
            if sub > len(data):
                return _error(400, "Stream-Fork-Sub-Offset is past the end of the source's next append")
            if sub == len(data):
                upto = after[0].offset
            else:
                try:
                    extra = [p.to_stored(data[:sub], src.content_type)]
                except ValueError as exc:
                    return _error(400, str(exc))
    content_type = ct or src.content_type
    try:
        datas = svc._messages(req.body, content_type, create=True)
    except ValueError as exc:
        return _error(400, str(exc))
    if ttl is None and expires_at is None:  # the protocol's inheritance table
        ttl, expires_at, deadline = src.ttl, src.expires_at, src.deadline
    meta = p.StreamMeta(content_type, now, now, ttl, expires_at, deadline, forked_from=source,
                        fork_offset=raw_offset, fork_sub=sub)
    if not await fork_ds(source, req.stream, upto, meta.dumps()):
        return _error(409, "the stream was created concurrently")
    src.refs += 1
    await svc.broker.ds_store(source, src.dumps())
    last = await svc._publish(req.stream, extra + datas)
    if closed:
        meta.closed = True
        await svc.broker.ds_store(req.stream, meta.dumps())
    headers = svc._write_headers(meta, last if last is not None else await svc._tail(req.stream))
    headers.append(("location", req.url or req.stream))
    return DSResponse(201, headers)


async def release(svc: DurableStreams, meta: p.StreamMeta) -> None:
    """A fork was deleted: its source has one fork fewer, and a soft-deleted source without
    forks goes for good (and so on up the chain)."""
    source = meta.forked_from
    while source is not None:
        raw = await svc.broker.ds_load(source)
        if raw is None:
            return
        src = p.StreamMeta.loads(raw)
        src.refs = max(0, src.refs - 1)
        if not (src.gone and src.refs == 0):
            await svc.broker.ds_store(source, src.dumps())
            return
        await svc.broker.ds_delete(source)
        svc.waiters.wake(source)
        source = src.forked_from
