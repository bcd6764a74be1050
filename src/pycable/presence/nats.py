"""``--broker=nats``: presence sets in a NATS JetStream key-value bucket, shared by every node.

Layout: one bucket, ``<nats_prefix>_anycable_presence_``; one key per (stream, id),
``<hash(stream)>.<hash(id)>``, whose value is
``{"s": stream, "id": id, "info": info, "sids": {sid: deadline_ms}}``.

* Every change is a compare-and-set on that key (``update``/``delete`` with the last
  revision, retried on a conflict), so the key whose last session goes is deleted by
  exactly one node, which alone broadcasts the ``leave``; likewise the node whose
  ``create`` made the key broadcasts the ``join``.
* Each node keeps a copy of the whole bucket, fed by a watcher, and answers ``info`` from
  it without a round trip; its own writes enter the copy at once. Another node's join is
  in the copy as soon as the watcher delivers it (milliseconds).
* Deadlines are each node's wall clock (keep clocks in sync, as for any cluster); every
  node sweeps the copy for sessions past their deadline and removes them with the same
  compare-and-set. The bucket's ``max_age`` (10 x ttl, at least a minute) drops what a
  cluster that went down entirely left behind.
* The per-stream cap is checked against the copy: concurrent joins on several nodes may
  pass it by a few.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import nats.errors
import orjson
from nats.js import api
from nats.js.errors import APIError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from pycable._nats import NatsConnection, name_hash, safe_token, servers_from_config
from pycable.exceptions import BrokerError, PresenceError
from pycable.presence.base import Presence, PresenceLimits, check_caps
from pycable.protocol.presence import JOIN, LEAVE, Member, PresenceEvent

if TYPE_CHECKING:
    from pycable.config import Config

__all__ = ["NatsPresence", "from_config"]

log = logging.getLogger("pycable.broker")

_NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError, APIError)
_CONFLICT_CODES = (10071, 10164)
#: Compare-and-set attempts before an operation gives up with BrokerError.
MAX_ATTEMPTS = 50
#: Keys renewed at once by :meth:`NatsPresence.touch`.
TOUCH_CONCURRENCY = 64

Value = dict[str, Any]


@dataclass(slots=True)
class _Copy:
    """This node's copy of one key."""

    stream: str
    member: Member
    sids: dict[str, int]
    revision: int


@dataclass(slots=True)
class _Replica:
    records: dict[str, _Copy] = field(default_factory=dict)  # key -> copy
    streams: dict[str, dict[str, str]] = field(default_factory=dict)  # stream -> id -> key

    def put(self, key: str, value: Value, revision: int) -> None:
        old = self.records.get(key)
        if old is not None and old.revision > revision:
            return
        stream, pid = value["s"], value["id"]
        self.records[key] = _Copy(stream, Member(pid, value.get("info", "")), dict(value["sids"]), revision)
        self.streams.setdefault(stream, {})[pid] = key

    def drop(self, key: str, revision: int) -> None:
        old = self.records.get(key)
        if old is None or old.revision > revision:
            return
        del self.records[key]
        ids = self.streams.get(old.stream)
        if ids is not None:
            ids.pop(old.member.id, None)
            if not ids:
                del self.streams[old.stream]


def _key(stream: str, pid: str) -> str:
    return f"{name_hash(stream)}.{name_hash(pid)}"


def _conflict(exc: BaseException) -> bool:
    return isinstance(exc, KeyWrongLastSequenceError) or (
        isinstance(exc, APIError) and exc.err_code in _CONFLICT_CODES
    )


class NatsPresence:
    """Presence in a JetStream KV bucket, with a local copy for reads.

    Args:
        servers: NATS URLs.
        limits: ttl and caps.
        prefix: ``--nats_prefix``.
        timeout: seconds for one JetStream request.
        ready_timeout: seconds :meth:`start` waits for the bucket.
        clock: wall-clock source for deadlines.
        replicas_hint: the expected cluster size when it cannot be observed yet (the
            embedded cluster's routes). The bucket gets 3 replicas in a cluster of 3 or
            more servers (so presence survives the loss of one), as the broker's streams.
    """

    enabled = True
    is_distributed = True

    def __init__(
        self,
        servers: list[str],
        limits: PresenceLimits | None = None,
        prefix: str = "",
        timeout: float = 2.0,
        ready_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        replicas_hint: int = 1,
    ) -> None:
        self.servers = servers
        self.replicas_hint = replicas_hint
        self.limits = limits or PresenceLimits()
        self.bucket = f"{safe_token(prefix)}_anycable_presence_"
        self.timeout = timeout
        self.ready_timeout = ready_timeout
        self.clock = clock
        self.conn = NatsConnection(servers, "pycable-presence", log)
        self.conn.on_connect.append(self._setup)
        self.conn.on_reconnect.append(self._setup)
        self.replica = _Replica()
        #: This node's sessions: sid -> stream -> id (authoritative for mismatch and caps).
        self.own: dict[str, dict[str, str]] = {}
        self._kv: KeyValue | None = None
        self._ready = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if await self.conn.start(5.0):
            try:
                await asyncio.wait_for(self._ready.wait(), self.ready_timeout)
            except TimeoutError:
                log.error("NATS presence: the bucket is not ready after %gs; continuing", self.ready_timeout)

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
        await self.conn.close()

    def describe(self) -> str:
        return f"Using NATS presence: {self.conn.url} (presence ttl: {self.limits.ttl:g}s)"

    def _replicas(self) -> int:
        info = self.conn.server_info()
        if not info.get("cluster"):
            return 1
        return max(1, min(3, max(len(set(info.get("connect_urls") or ())), self.replicas_hint)))

    async def _setup(self) -> None:
        js = self.conn.nc.jetstream(timeout=self.timeout)
        replicas = self._replicas()
        while not self._closed:
            try:
                self._kv = await js.create_key_value(
                    bucket=self.bucket,
                    history=1,
                    ttl=max(10 * self.limits.ttl, 60.0),
                    storage=api.StorageType.FILE,
                    replicas=replicas,
                )
                break
            except APIError as exc:
                if exc.err_code == 10058:  # exists with other settings (another ttl): use it
                    self._kv = await js.key_value(self.bucket)
                    break
                if exc.err_code == 10074 and replicas > 1:  # JetStream is not clustered
                    replicas = 1
                    continue
                # Not enough servers to place the replicas yet (a forming cluster): retry.
                log.warning("NATS presence: creating the bucket failed (%r); retrying", exc)
            except _NATS_ERRORS as exc:
                log.warning("NATS presence: creating the bucket failed (%r); retrying", exc)
            await asyncio.sleep(1.0)
        if self._closed:
            return
        if self._watch is not None:
            self._watch.cancel()
        synced = asyncio.get_running_loop().create_future()
        self._watch = asyncio.get_running_loop().create_task(self._follow(synced))
        await asyncio.wait([synced], timeout=self.ready_timeout)
        self._ready.set()

    async def _follow(self, synced: asyncio.Future[None]) -> None:
        """Feed the copy from a watcher of the whole bucket (restarted after failures)."""
        while not self._closed:
            try:
                assert self._kv is not None
                watcher = await self._kv.watchall()
                fresh = _Replica()
                target = fresh
                async for entry in watcher:
                    if entry is None:  # the initial values are in: switch to the fresh copy
                        self.replica, target = fresh, fresh
                        if not synced.done():
                            synced.set_result(None)
                        continue
                    revision = entry.revision or 0
                    if entry.operation in ("DEL", "PURGE") or not entry.value:
                        target.drop(entry.key, revision)
                        continue
                    try:
                        value = orjson.loads(entry.value)
                        target.put(entry.key, value, revision)
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        log.warning("NATS presence: malformed record %s", entry.key)
            except asyncio.CancelledError:
                raise
            except (*_NATS_ERRORS, AssertionError) as exc:
                log.debug("NATS presence: watcher restarting: %r", exc)
            await asyncio.sleep(1.0)

    def _require(self) -> KeyValue:
        if self._kv is None or not self.conn.is_connected:
            raise BrokerError(f"NATS presence: not connected to {self.conn.url}")
        return self._kv

    # -- compare-and-set -------------------------------------------------------------------

    async def _change(
        self, stream: str, pid: str, change: Callable[[Value | None], Value | None]
    ) -> tuple[Value | None, Value | None]:
        """Apply *change* to the key of (stream, id) atomically; ``(before, after)``."""
        kv = self._require()
        key = _key(stream, pid)
        known = self.replica.records.get(key)
        guess: tuple[Value | None, int] | None = None
        if known is not None:
            guess = (
                {"s": known.stream, "id": pid, "info": known.member.info, "sids": dict(known.sids)},
                known.revision,
            )
        try:
            for _ in range(MAX_ATTEMPTS):
                if guess is None:
                    try:
                        entry = await kv.get(key)
                        guess = (orjson.loads(entry.value or b"null"), entry.revision or 0)
                    except (KeyNotFoundError, KeyDeletedError) as exc:
                        deleted = getattr(exc, "entry", None)
                        guess = (None, (deleted.revision or 0) if deleted is not None else 0)
                before, revision = guess
                after = change(None if before is None else {**before, "sids": dict(before["sids"])})
                if after == before:
                    return before, after
                try:
                    if after is None:
                        await kv.delete(key, last=revision)
                        self.replica.drop(key, revision + 1)
                    else:
                        data = orjson.dumps(after)
                        if revision:
                            new_rev = await kv.update(key, data, last=revision)
                        else:
                            new_rev = await kv.create(key, data)
                        self.replica.put(key, after, new_rev)
                    return before, after
                except _NATS_ERRORS as exc:
                    if not _conflict(exc):
                        raise
                    guess = None  # someone else changed it: read and try again
        except _NATS_ERRORS as exc:
            raise BrokerError(f"NATS presence: {type(exc).__name__}: {exc}") from exc
        raise BrokerError(f"NATS presence: too many concurrent changes of {stream[:64]!r}")

    # -- the role --------------------------------------------------------------------------

    def _deadline(self) -> int:
        return int((self.clock() + self.limits.ttl) * 1000)

    async def join(self, stream: str, sid: str, member: Member) -> PresenceEvent | None:
        mine = self.own.get(sid, {})
        current = mine.get(stream)
        if current is not None and current != member.id:
            raise PresenceError("presence ID mismatch")
        ids = self.replica.streams.get(stream, {})
        check_caps(self.limits, len(ids), member.id not in ids, len(mine), current is None)
        deadline = self._deadline()

        def add(value: Value | None) -> Value:
            sids = value["sids"] if value is not None else {}
            sids[sid] = deadline
            return {"s": stream, "id": member.id, "info": member.info, "sids": sids}

        before, _ = await self._change(stream, member.id, add)
        self.own.setdefault(sid, {})[stream] = member.id
        return PresenceEvent(JOIN, stream, member) if before is None else None

    async def leave(self, stream: str, sid: str) -> PresenceEvent | None:
        mine = self.own.get(sid)
        pid = mine.get(stream) if mine is not None else None
        if mine is None or pid is None:
            return None
        before, after = await self._change(stream, pid, lambda v: _without(v, {sid}))
        del mine[stream]
        if not mine:
            del self.own[sid]
        return PresenceEvent(LEAVE, stream, Member(pid)) if before is not None and after is None else None

    async def info(self, stream: str) -> list[Member]:
        self._require()
        records = self.replica.records
        return [records[key].member for key in self.replica.streams.get(stream, {}).values()]

    async def touch(self, sids: Collection[str]) -> None:
        """One compare-and-set per (stream, id) key, for all of this node's sessions in it;
        :data:`TOUCH_CONCURRENCY` keys at a time (a node with many members renews them well
        within ``ttl/2``)."""
        deadline = self._deadline()
        keys: dict[tuple[str, str], set[str]] = {}
        for sid in sids:
            for stream, pid in self.own.get(sid, {}).items():
                keys.setdefault((stream, pid), set()).add(sid)

        async def renew(stream: str, pid: str, mine: set[str]) -> None:
            def refresh(value: Value | None) -> Value | None:
                if value is not None:
                    for sid in mine & value["sids"].keys():
                        value["sids"][sid] = deadline
                return value

            await self._change(stream, pid, refresh)

        items = list(keys.items())
        for i in range(0, len(items), TOUCH_CONCURRENCY):
            batch = items[i : i + TOUCH_CONCURRENCY]
            results = await asyncio.gather(*(renew(s, pid, mine) for (s, pid), mine in batch), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def expire(self) -> list[PresenceEvent]:
        if self._kv is None:
            return []
        now = int(self.clock() * 1000)
        events = []
        for copy in list(self.replica.records.values()):
            stale = {sid for sid, deadline in copy.sids.items() if deadline <= now}
            if not stale:
                continue
            for sid in stale & self.own.keys():
                self.own[sid].pop(copy.stream, None)
                if not self.own[sid]:
                    del self.own[sid]

            def drop(value: Value | None, stale: set[str] = stale) -> Value | None:
                if value is None:
                    return None
                # Only what is still past its deadline (a touch may have come in meanwhile).
                return _without(value, {s for s in stale if value["sids"].get(s, now + 1) <= now})

            before, after = await self._change(copy.stream, copy.member.id, drop)
            if before is not None and after is None:
                events.append(PresenceEvent(LEAVE, copy.stream, Member(copy.member.id)))
        return events


def _without(value: Value | None, sids: set[str]) -> Value | None:
    """*value* without *sids*; ``None`` (delete the key) when no session is left."""
    if value is None:
        return None
    left = {s: d for s, d in value["sids"].items() if s not in sids}
    if not left:
        return None
    return {**value, "sids": left}


if TYPE_CHECKING:
    _: type[Presence] = NatsPresence


def from_config(config: Config) -> NatsPresence:
    hint = 1 + len(config.enats_cluster_routes) if config.embed_nats and config.enats_cluster else 1
    return NatsPresence(
        servers_from_config(config), config.presence_limits(), config.nats_prefix, replicas_hint=hint
    )
