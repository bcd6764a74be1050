"""``--broker=nats``: history and sessions in NATS JetStream, shared by the cluster (spec §3.5).

Layout (``P`` is ``--nats_prefix``, empty by default; ``P'`` the same with unsafe
characters replaced by ``_``):

* KV bucket ``P'_anycable_``, TTL ``sessions_ttl``: session cache entries, key = sid (a
  sid that is not a valid key is stored under ``h.<sha256>``). Values are the §3.4 JSON
  as the node wrote it, so Go and Python nodes could share them.
* KV bucket ``P'_anycable_epoch_``, key ``_epoch_``, TTL ``10·max(history_ttl,
  sessions_ttl)``: the cluster-wide epoch. It is created if absent (one node wins, the
  others read it), watched, and refreshed by running nodes so that it only lapses when the
  whole cluster has been gone for that long.
* One JetStream stream per cable stream, named and subjected
  :func:`~pycable._nats.jetstream_name` (``_ac_<readable>_<hash>``), so any cable stream
  name works: dots, spaces, ``*``, ``>``, unicode, 10 kB. ``MaxMsgs`` = the stream's
  history limit, ``MaxAge`` = its history TTL, file storage, ``allow_direct``, and
  3 replicas in a cluster of 3 or more (1 on a single server). The offset is the
  JetStream stream sequence: JetStream assigns it atomically with the append, and it
  never goes back (empty streams are kept, so a stream whose messages all expired
  continues above its last offset). Each message is
  ``{"stream": <real name>, "data": …, "meta": {…}, "ts": <unix seconds>}``; ``ts`` is
  set by the registering node and is what ``history_since`` and the local TTL compare.

**Local snapshot.** Reads never wait on JetStream in the steady state: every stream in
use on this node (subscribed locally, or read recently) has an ordered push consumer
feeding an in-memory :class:`~pycable.broker._stream.MemStream`, and ``history_from`` /
``history_since`` answer from it with the memory broker's semantics (preface decision 2).
A read waits only when the snapshot is known to be behind: the offset asked for is past
what it has (the client saw a newer message live), or this node registered a message
the consumer has not delivered yet (read-your-writes). If the consumer does not catch up
within ``sync_wait`` seconds, the missing messages are fetched directly from JetStream
(direct get, answered by any replica), so a dead consumer (its server was killed) costs
one slow read rather than a rejected one.

**TTL.** JetStream's ``MaxAge`` has a 100 ms floor; the snapshot also drops messages
older than the stream's TTL by their ``ts``, so TTLs below that floor (tests) are exact
and JetStream only bounds storage.

**Failure.** If NATS is unreachable at startup the broker keeps connecting in the
background; until it has an epoch, :meth:`NatsBroker.register` and reads raise
:class:`~pycable.exceptions.BrokerError` (HTTP 503, ``reject_history``, restore falls
back to connect). After a reconnection it re-checks the buckets and the epoch (a NATS
restarted without its store gets a new epoch, so old positions are rejected rather
than confused with new ones) and restarts every consumer.

Not supported (as in AnyCable): presence.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
import orjson
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import (
    APIError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from pycable._nats import NatsConnection, jetstream_name, safe_token, servers_from_config
from pycable.broker._sessions import EntryLimit, SessionStore
from pycable.broker._stream import MemStream
from pycable.broker.base import Broker, HistoryPolicy
from pycable.exceptions import BrokerError, HistoryError
from pycable.protocol.broadcast import StreamMessage

if TYPE_CHECKING:
    from pycable.config import Config

__all__ = ["NatsBroker", "from_config"]

log = logging.getLogger("pycable.broker")

EPOCH_KEY = "_epoch_"
#: JetStream rejects a MaxAge below 100 ms.
MIN_MAX_AGE = 0.1
#: nats-server error codes (``server/errors.json``).
ERR_STREAM_EXISTS_OTHER_CONFIG = 10058
ERR_REPLICAS_NOT_SUPPORTED = 10074
ERR_INSUFFICIENT_RESOURCES = 10023
ERR_NO_PEERS = 10005
ERR_JETSTREAM_UNAVAILABLE = 10008
_PLACEMENT_ERRORS = (ERR_INSUFFICIENT_RESOURCES, ERR_NO_PEERS)

T = TypeVar("T")

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,200}")

# Errors of a NATS round trip that mean "the backend failed", not "a bug".
_NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError)


def _transient(exc: BaseException) -> bool:
    """Worth retrying: no leader right now (a server of the cluster died and JetStream is
    electing a new one, about 5 s), or a request that timed out."""
    if isinstance(
        exc,
        (
            TimeoutError,
            nats.errors.NoRespondersError,
            NoStreamResponseError,
            ServiceUnavailableError,
            nats.errors.ConnectionReconnectingError,
        ),
    ):
        return True
    return isinstance(exc, APIError) and (exc.code == 503 or exc.err_code == ERR_JETSTREAM_UNAVAILABLE)


def _session_key(sid: str) -> str:
    if _PLAIN_KEY.fullmatch(sid):
        return sid
    import hashlib

    return "h." + hashlib.sha256(sid.encode("utf-8", "surrogatepass")).hexdigest()


def _new_epoch() -> str:
    return secrets.token_urlsafe(6)  # 8 characters: 48 bits (AnyCable's nanoid(4) has 24)


class SnapshotStream(MemStream):
    """A :class:`MemStream` filled with positions assigned elsewhere (by JetStream)."""

    __slots__ = ()

    def store(self, msg: StreamMessage) -> bool:
        """Append *msg* (its offset is set); False if it is not past the last offset.

        A jump (``msg.offset > offset + 1``) means JetStream no longer has the messages in
        between (trimmed or expired, always from the head), so nothing before is kept.
        """
        if msg.offset <= self.offset:
            return False
        if msg.offset != self.offset + 1:
            self.entries.clear()
        self.offset = msg.offset
        self.updated = msg.timestamp
        self.entries.append(msg)
        return True

    def skip_to(self, offset: int) -> None:
        """JetStream holds nothing up to *offset*: drop everything before it."""
        if offset > self.offset:
            self.entries.clear()
            self.offset = offset


class _Snapshot:
    """This node's copy of one cable stream."""

    __slots__ = (
        "stream",
        "jsname",
        "subject",
        "mem",
        "known",
        "refs",
        "used",
        "exists",
        "init",
        "sub",
        "waiters",
        "gen",
        "delivered_at",
        "synced_at",
        "subscribed_at",
        "verified_at",
        "sync_task",
    )

    def __init__(self, stream: str, jsname: str, limit: int, ttl: float) -> None:
        self.stream = stream
        self.jsname = jsname
        self.subject = jsname
        self.mem = SnapshotStream(limit, ttl)
        #: Bumped whenever the consumer is replaced: a late message of an old one is ignored.
        self.gen = 0
        #: When the consumer last delivered a message (monotonic).
        self.delivered_at = 0.0
        #: When the stream's last offset was last asked of JetStream (monotonic; the time
        #: the request was sent).
        self.synced_at = 0.0
        #: When a local subscription to the stream last began (see :meth:`NatsBroker._local`).
        self.subscribed_at = 0.0
        #: ``synced_at`` of the last request a read made for itself (started after the read
        #: began, so after the reader's pub/sub subscription; a background set-up's does not count).
        self.verified_at = 0.0
        #: The JetStream request in flight for the last offset, shared by concurrent reads.
        self.sync_task: asyncio.Task[None] | None = None
        #: The highest offset known to exist (from stream info and local registrations).
        self.known = 0
        self.refs = 0
        self.used = time.monotonic()
        self.exists = False
        self.init: asyncio.Task[None] | None = None
        self.sub: JetStreamContext.PushSubscription | None = None
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    def wake(self) -> None:
        offset, waiters = self.mem.offset, self.waiters
        if waiters:
            keep = []
            for target, fut in waiters:
                if target <= offset:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    keep.append((target, fut))
            self.waiters = keep

    async def wait_for(self, target: int, timeout: float) -> bool:
        """True once the snapshot holds offset *target*, False after *timeout* seconds."""
        if self.mem.offset >= target:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append((target, fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self.waiters = [(t, f) for t, f in self.waiters if f is not fut]


class NatsBroker:
    """JetStream-backed broker. See the module docstring for the layout and behaviour.

    Args:
        servers: NATS URLs.
        policy: history limits (per-stream rules become per-stream JetStream limits).
        sessions_ttl: seconds a session entry lives (0: sessions are not stored).
        prefix: prepended to every bucket, stream and subject (isolation).
        replicas: JetStream replicas; ``None`` picks 3 in a cluster of 3 or more servers
            (so a cluster that loses one server keeps all history), else 1.
        replicas_hint: the expected cluster size when it cannot be observed yet (the
            embedded cluster's routes).
        timeout: seconds for one JetStream request.
        retry_budget: seconds an operation keeps retrying transient failures (a leader
            election after a server died) before it fails with :class:`BrokerError`.
            Registrations are retried with the same ``Nats-Msg-Id``, so a retry never
            stores a message twice.
        sync_wait: seconds a read waits for the local consumer before fetching directly.
        ready_timeout: seconds :meth:`start` waits for JetStream before carrying on in the
            background.
        snapshot_idle: seconds an unsubscribed stream's snapshot is kept after its last read.
        session_max_size: bytes; a larger session entry is not stored (0: no limit).
        sessions_cache_size: bytes of local copies of the entries this node committed (they
            spare a read on touch); the bucket itself is bounded by ``sessions_ttl``.
    """

    supports_history = True
    is_distributed = True

    def __init__(
        self,
        servers: list[str],
        policy: HistoryPolicy | None = None,
        sessions_ttl: float = 300.0,
        prefix: str = "",
        replicas: int | None = None,
        replicas_hint: int = 1,
        timeout: float = 2.0,
        retry_budget: float = 10.0,
        sync_wait: float = 0.1,
        ready_timeout: float = 30.0,
        connect_wait: float = 5.0,
        snapshot_idle: float = 60.0,
        sweep_interval: float = 1.0,
        session_max_size: int = 0,
        sessions_cache_size: int = 0,
    ) -> None:
        self.servers = servers
        self.policy = policy or HistoryPolicy()
        self.sessions_ttl = sessions_ttl
        self.prefix = prefix
        self.replicas = replicas
        self.replicas_hint = replicas_hint
        self.timeout = timeout
        self.retry_budget = retry_budget
        self.sync_wait = sync_wait
        self.ready_timeout = ready_timeout
        self.connect_wait = connect_wait
        self.snapshot_idle = snapshot_idle
        self.sweep_interval = sweep_interval
        bucket = safe_token(prefix)
        self.sessions_bucket = f"{bucket}_anycable_"
        self.epoch_bucket = f"{bucket}_anycable_epoch_"
        self.epoch_ttl = 10 * max(self.policy.max_ttl, sessions_ttl)
        self.conn = NatsConnection(servers, "pycable-broker", log)
        self.conn.on_connect.append(self._setup)
        self.conn.on_reconnect.append(self._resync)
        self._js: JetStreamContext | None = None
        self._sessions: KeyValue | None = None
        self._epochs: KeyValue | None = None
        self._epoch = ""
        self._epoch_rev = 0
        self._ready = asyncio.Event()
        self._setup_lock = asyncio.Lock()
        self._snapshots: dict[str, _Snapshot] = {}
        self._names: OrderedDict[str, str] = OrderedDict()
        self._ensured: set[str] = set()
        self._ensuring: dict[str, asyncio.Future[None]] = {}
        self._local_sessions = SessionStore(sessions_ttl, sessions_cache_size)
        self.session_limit = EntryLimit(session_max_size)
        self._msg_ids = itertools.count(1)
        self._msg_id_prefix = secrets.token_urlsafe(9) + "-"
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: Any = None
        self._loops_started = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def health(self) -> str:
        return self.conn.health() or ("" if self.ready else f"NATS broker: JetStream at {self.conn.url} is not ready")

    async def start(self) -> None:
        """Connect, then set up the buckets and the epoch.

        Waits up to ``ready_timeout`` for JetStream (a forming cluster elects its meta
        leader first); past that, or when NATS is unreachable, it carries on in the
        background and the broker answers with :class:`BrokerError` until it is ready.
        """
        self._spawn(self._sweep_loop())
        if await self.conn.start(self.connect_wait):
            try:
                await asyncio.wait_for(self._ready.wait(), self.ready_timeout)
            except TimeoutError:
                log.error(
                    "NATS broker: JetStream at %s is not ready after %gs; continuing, history and sessions "
                    "are unavailable until it is",
                    self.conn.url,
                    self.ready_timeout,
                )

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for snap in self._snapshots.values():
            if snap.init is not None:
                snap.init.cancel()
            for _, fut in snap.waiters:
                fut.cancel()
        self._snapshots.clear()
        await self.conn.close()

    def describe(self) -> str:
        rules = f", stream rules: {len(self.policy.rules)}" if self.policy.rules else ""
        return (
            f"Using NATS broker: {self.conn.url} (history limit: {self.policy.limit}, "
            f"history ttl: {self.policy.ttl:g}s, sessions ttl: {self.sessions_ttl:g}s{rules})"
        )

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _retry(self, op: Callable[[], Awaitable[T]], what: str, budget: float | None = None) -> T:
        """``await op()``, retrying transient failures for up to *budget* seconds (default
        ``retry_budget``; 0: one attempt), and only while connected: with NATS itself
        unreachable it fails at once.

        Raises:
            BrokerError: a lasting or non-transient failure.
        """
        deadline = time.monotonic() + (self.retry_budget if budget is None else budget)
        delay = 0.05
        while True:
            try:
                return await op()
            except (*_NATS_ERRORS, APIError) as exc:
                if not _transient(exc) or not self.conn.is_connected or time.monotonic() + delay >= deadline:
                    raise BrokerError(f"NATS broker: {what}: {exc!r}") from None
                log.debug("NATS broker: %s: %r; retrying", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _setup(self) -> None:
        """Wait for JetStream, create the buckets, agree on the epoch (retries until done)."""
        async with self._setup_lock:
            nc = self.conn.nc
            js = nc.jetstream(timeout=self.timeout)
            announced = False
            delay = 0.1
            probe = nc.jetstream(timeout=1.0)
            while not self._closed:
                try:
                    await probe.account_info()
                    break
                except (*_NATS_ERRORS, APIError) as exc:
                    if not announced:
                        log.info("NATS broker: waiting for JetStream at %s (%s)", self.conn.url, type(exc).__name__)
                        announced = True
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            self._js = js
            if self.replicas is None:
                self.replicas = self._cluster_replicas()
            while not self._closed:
                try:
                    self._epochs = await self._ensure_kv(self.epoch_bucket, self.epoch_ttl)
                    if self.sessions_ttl > 0:
                        self._sessions = await self._ensure_kv(self.sessions_bucket, self.sessions_ttl)
                    await self._load_epoch()
                    break
                except (*_NATS_ERRORS, APIError, BrokerError) as exc:
                    log.warning("NATS broker: setting up JetStream buckets failed (%r); retrying", exc)
                    await asyncio.sleep(1.0)
            if self._closed:
                return
            if not self._loops_started:
                self._loops_started = True
                self._spawn(self._watch_epoch())
                self._spawn(self._refresh_epoch_loop())
            log.debug("NATS broker ready (epoch: %s, replicas: %s)", self._epoch, self.replicas)
            self._ready.set()

    def _cluster_replicas(self) -> int:
        info = self.conn.server_info()
        if not info.get("cluster"):
            return 1
        size = max(len(set(info.get("connect_urls") or ())), self.replicas_hint)
        return max(1, min(3, size))

    async def _resync(self) -> None:
        """After a reconnection: buckets and epoch again, fresh consumers everywhere."""
        if self._closed:
            return
        self._ensured.clear()
        await self._setup()
        for snap in list(self._snapshots.values()):
            await self._restart_consumer(snap)

    async def _ensure_kv(self, bucket: str, ttl: float) -> KeyValue:
        assert self._js is not None
        js = self._js
        replicas = self.replicas or 1
        while True:
            try:
                # direct: any replica answers a get, also while the leader is being elected.
                return await js.create_key_value(
                    bucket=bucket,
                    ttl=max(ttl, MIN_MAX_AGE),
                    history=1,
                    replicas=replicas,
                    storage=api.StorageType.FILE,
                    direct=True,
                )
            except APIError as exc:
                if exc.err_code == ERR_STREAM_EXISTS_OTHER_CONFIG:
                    # Settings changed since the bucket was made: adjust it in place (AnyCable
                    # deletes and recreates it, which would lose the epoch for everyone).
                    info = await js.stream_info(f"KV_{bucket}")
                    cfg = info.config
                    cfg.max_age = max(ttl, MIN_MAX_AGE)
                    cfg.duplicate_window = min(cfg.max_age, 120.0)
                    cfg.num_replicas = replicas
                    cfg.allow_direct = True
                    try:
                        await js.update_stream(cfg)
                    except APIError as upd:
                        log.warning("NATS broker: cannot update bucket %s settings: %s", bucket, upd)
                    return await js.key_value(bucket)
                if exc.err_code == ERR_REPLICAS_NOT_SUPPORTED and replicas > 1:
                    log.info("NATS broker: JetStream is not clustered; using 1 replica")
                    self.replicas = replicas = 1
                    continue
                if exc.err_code in _PLACEMENT_ERRORS and replicas > 1:
                    raise BrokerError(f"cannot place {replicas} replicas yet: {exc.description}") from None
                raise

    # -- epoch ---------------------------------------------------------------------------

    async def _load_epoch(self) -> None:
        assert self._epochs is not None
        try:
            await self._epochs.create(EPOCH_KEY, _new_epoch().encode())
        except KeyWrongLastSequenceError:
            pass  # another node created it first
        entry = await self._epochs.get(EPOCH_KEY)
        self._set_epoch((entry.value or b"").decode(), entry.revision or 0)

    def _set_epoch(self, epoch: str, revision: int) -> None:
        if not epoch:
            return
        self._epoch_rev = max(self._epoch_rev, revision)
        if epoch == self._epoch:
            return
        old, self._epoch = self._epoch, epoch
        if old:
            # Positions restart with the epoch (e.g. NATS lost its store): every snapshot
            # starts over from what JetStream has now.
            log.warning("NATS broker: the epoch changed from %s to %s; older stream positions are rejected", old, epoch)
            for snap in self._snapshots.values():
                self._reset_snapshot(snap)
        else:
            log.info("NATS broker epoch: %s", epoch)

    async def _watch_epoch(self) -> None:
        """Follow epoch changes made by other nodes (AnyCable's ``watchEpoch``)."""
        while not self._closed:
            try:
                assert self._epochs is not None
                self._watcher = await self._epochs.watch(EPOCH_KEY)
                async for entry in self._watcher:
                    if entry is None:
                        continue
                    if entry.operation in ("DEL", "PURGE") or not entry.value:
                        # The epoch key is gone: make (or adopt) a new one.
                        await self._load_epoch()
                    else:
                        self._set_epoch(entry.value.decode(), entry.revision or 0)
            except asyncio.CancelledError:
                raise
            except (*_NATS_ERRORS, APIError, AssertionError) as exc:
                log.debug("NATS broker: epoch watcher restarting: %s", exc)
            await asyncio.sleep(1.0)

    async def _refresh_epoch_loop(self) -> None:
        """Rewrite the epoch well before its TTL so that it lapses only with the cluster.

        (JetStream expiry leaves no delete marker that a watcher would see, so a lapsed
        epoch is also noticed here.)
        """
        interval = max(self.epoch_ttl / 4, 1.0)
        while not self._closed:
            await asyncio.sleep(interval)
            if self._epochs is None:
                continue
            try:
                try:
                    entry = await self._epochs.get(EPOCH_KEY)
                except KeyNotFoundError:
                    await self._load_epoch()
                    continue
                value = (entry.value or b"").decode()
                if value != self._epoch:
                    self._set_epoch(value, entry.revision or 0)
                    continue
                try:
                    await self._epochs.update(EPOCH_KEY, entry.value or b"", last=entry.revision)
                except KeyWrongLastSequenceError:
                    pass  # another node refreshed it meanwhile
            except (*_NATS_ERRORS, APIError) as exc:
                log.debug("NATS broker: epoch refresh failed: %s", exc)

    # -- names ---------------------------------------------------------------------------

    def _jsname(self, stream: str) -> str:
        names = self._names
        name = names.get(stream)
        if name is None:
            name = names[stream] = jetstream_name(self.prefix, stream)
            if len(names) > 65536:
                names.popitem(last=False)
        return name

    def _stream_config(self, stream: str, jsname: str, replicas: int) -> api.StreamConfig:
        limit, ttl = self.policy.for_stream(stream)
        age = max(ttl, MIN_MAX_AGE)
        return api.StreamConfig(
            name=jsname,
            description=f"pycable stream {stream[:200]!r}",
            subjects=[jsname],
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            max_msgs=max(1, limit),
            max_age=age,
            duplicate_window=min(age, 120.0),
            storage=api.StorageType.FILE,
            num_replicas=replicas,
            allow_direct=True,
        )

    async def _ensure_stream(self, stream: str, jsname: str) -> None:
        """Create the JetStream stream (or bring its limits up to date), once per process."""
        pending = self._ensuring.get(jsname)
        if pending is not None:
            await asyncio.shield(pending)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ensuring[jsname] = fut
        try:
            await self._create_stream(stream, jsname)
            self._ensured.add(jsname)
            if len(self._ensured) > 100_000:
                self._ensured.clear()
            fut.set_result(None)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            del self._ensuring[jsname]

    async def _create_stream(self, stream: str, jsname: str) -> None:
        assert self._js is not None
        js = self._js
        replicas = self.replicas or 1
        while True:
            cfg = self._stream_config(stream, jsname, replicas)
            try:
                await js.add_stream(cfg)
                return
            except APIError as exc:
                if exc.err_code == ERR_STREAM_EXISTS_OTHER_CONFIG:
                    try:
                        await js.update_stream(cfg)
                    except APIError as upd:
                        # E.g. fewer servers than replicas right now: keep the stream as it is.
                        log.debug("NATS broker: stream %s keeps its settings: %s", jsname, upd)
                    return
                if exc.err_code in _PLACEMENT_ERRORS and replicas > 1:
                    # A server of the cluster is down: a new stream gets the replicas we can place.
                    log.warning(
                        "NATS broker: cannot place %d replicas for %s (%s); trying %d",
                        replicas,
                        jsname,
                        exc.description,
                        replicas - 1,
                    )
                    replicas -= 1
                    continue
                raise

    # -- registration ----------------------------------------------------------------------

    def _require_ready(self) -> JetStreamContext:
        if not self._ready.is_set() or self._js is None:
            raise BrokerError(f"NATS broker is not ready (NATS at {self.conn.url})")
        return self._js

    async def register(self, msg: StreamMessage) -> StreamMessage:
        if msg.transient:
            return msg
        js = self._require_ready()
        jsname = self._jsname(msg.stream)
        ts = time.time()
        meta: dict[str, Any] = {}
        if msg.exclude_socket:
            meta["exclude_socket"] = msg.exclude_socket
        if msg.broadcast_type:
            meta["broadcast_type"] = msg.broadcast_type
        body: dict[str, Any] = {"stream": msg.stream, "data": msg.data, "ts": ts}
        if meta:
            body["meta"] = meta
        payload = orjson.dumps(body)
        # JetStream drops a second message with the same id (within the duplicate window)
        # and acks it with the first one's sequence: retrying after a lost ack is safe.
        msg_id = f"{self._msg_id_prefix}{next(self._msg_ids)}"

        async def publish() -> api.PubAck:
            if not self.conn.is_connected:
                # The client would buffer the message and send it after reconnecting: the
                # caller, told it failed, might send it again. Refuse instead.
                raise nats.errors.ConnectionReconnectingError()
            if jsname not in self._ensured:
                await self._ensure_stream(msg.stream, jsname)
            try:
                return await js.publish(jsname, payload, timeout=self.timeout, headers={"Nats-Msg-Id": msg_id})
            except NoStreamResponseError:
                # No stream answered: deleted behind our back, NATS lost its store, or its
                # leader is being elected. Make sure it exists before the retry.
                self._ensured.discard(jsname)
                raise

        ack = await self._retry(publish, f"storing a message of {msg.stream[:64]!r}")
        stored = msg.registered(ack.seq, self._epoch, ts)
        snap = self._snapshots.get(msg.stream)
        if snap is not None:
            if ack.seq > snap.known:
                snap.known = ack.seq
            if snap.exists and ack.seq == snap.mem.offset + 1:
                # Next in line: keep it now (the consumer's copy is then skipped undecoded).
                snap.mem.store(stored)
                snap.wake()
            elif not snap.exists and snap.init is not None and snap.init.done():
                snap.init = None  # it exists now: the next read sets the snapshot up
        return stored

    # -- snapshots -------------------------------------------------------------------------

    async def subscribe(self, stream: str) -> None:
        snap = self._snapshot_for(stream)
        snap.subscribed_at = time.monotonic()
        snap.refs += 1
        if snap.init is None and self._ready.is_set():
            self._kick(snap)

    async def unsubscribe(self, stream: str) -> None:
        snap = self._snapshots.get(stream)
        if snap is not None and snap.refs > 0:
            snap.refs -= 1
            snap.used = time.monotonic()

    def _snapshot_for(self, stream: str) -> _Snapshot:
        snap = self._snapshots.get(stream)
        if snap is None:
            limit, ttl = self.policy.for_stream(stream)
            snap = self._snapshots[stream] = _Snapshot(stream, self._jsname(stream), limit, ttl)
        return snap

    def _decode(self, snap: _Snapshot, data: bytes, seq: int, fallback_ts: float) -> StreamMessage:
        """A stored message; a payload that is not ours (e.g. written by another tool) is
        taken as the data itself."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("data"), str) and isinstance(obj.get("ts"), (int, float)):
            meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
            assert isinstance(meta, dict)
            exclude = meta.get("exclude_socket")
            btype = meta.get("broadcast_type")
            return StreamMessage(
                snap.stream,
                obj["data"],
                exclude if isinstance(exclude, str) else None,
                False,
                btype if isinstance(btype, str) else None,
                seq,
                self._epoch,
                float(obj["ts"]),
            )
        return StreamMessage(
            snap.stream, data.decode("utf-8", "replace"), offset=seq, epoch=self._epoch, timestamp=fallback_ts
        )

    async def _init_snapshot(self, snap: _Snapshot) -> None:
        """Read the stream's state and start its ordered consumer."""
        js = self._require_ready()

        async def info_or_none() -> api.StreamInfo | None:
            try:
                return await js.stream_info(snap.jsname)
            except NotFoundError:
                return None

        synced_at = time.monotonic()
        info = await self._retry(info_or_none, f"reading {snap.stream[:64]!r}")
        snap.synced_at = synced_at
        if info is None:
            snap.exists = False
            return
        snap.exists = True
        state = info.state
        if state.messages == 0:
            snap.mem.skip_to(state.last_seq)
        else:
            snap.mem.skip_to(state.first_seq - 1)
        snap.known = max(snap.known, state.last_seq)
        snap.wake()
        await self._start_consumer(snap, snap.mem.offset + 1)

    def _reset_snapshot(self, snap: _Snapshot) -> None:
        """Forget everything about *snap*; the next read (or now, if subscribed) starts over."""
        limit, ttl = self.policy.for_stream(snap.stream)
        snap.mem = SnapshotStream(limit, ttl)
        snap.known = 0
        snap.gen += 1
        snap.exists = False
        if snap.init is not None and not snap.init.done():
            snap.init.cancel()
        snap.init = None
        sub, snap.sub = snap.sub, None
        if sub is not None:
            self._spawn(self._unsubscribe(sub))
        if snap.refs > 0 and self._ready.is_set():
            self._kick(snap)

    def _kick(self, snap: _Snapshot) -> None:
        """Set the snapshot up in the background."""
        task = snap.init = asyncio.get_running_loop().create_task(self._init_snapshot(snap))
        task.add_done_callback(_log_init_failure)

    async def _start_consumer(self, snap: _Snapshot, start_seq: int) -> None:
        js = self._require_ready()
        snap.gen += 1
        gen = snap.gen

        async def on_msg(msg: Msg) -> None:
            if snap.gen != gen:
                return  # a replaced consumer
            seq, stamp = _position(msg)
            snap.delivered_at = time.monotonic()
            if seq <= snap.mem.offset:
                return  # this node stored it already (its own registration, or a direct fetch)
            if snap.mem.store(self._decode(snap, msg.data, seq, stamp)):
                if seq > snap.known:
                    snap.known = seq
                snap.wake()

        async def subscribe() -> JetStreamContext.PushSubscription:
            return await js.subscribe(
                snap.subject,
                stream=snap.jsname,
                cb=on_msg,
                ordered_consumer=True,
                config=api.ConsumerConfig(
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=max(1, start_seq),
                ),
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            )

        sub = await self._retry(subscribe, f"following {snap.stream[:64]!r}")
        if snap.gen != gen:
            await self._unsubscribe(sub)  # replaced meanwhile
        else:
            snap.sub = sub

    async def _stop_consumer(self, snap: _Snapshot) -> None:
        snap.gen += 1
        sub, snap.sub = snap.sub, None
        if sub is not None:
            await self._unsubscribe(sub)

    @staticmethod
    async def _unsubscribe(sub: JetStreamContext.PushSubscription) -> None:
        try:
            await sub.unsubscribe()
        except (*_NATS_ERRORS, APIError):
            pass

    async def _restart_consumer(self, snap: _Snapshot) -> None:
        await self._stop_consumer(snap)
        if snap.exists:
            try:
                await self._start_consumer(snap, snap.mem.offset + 1)
            except BrokerError as exc:
                log.warning("NATS broker: cannot restart the consumer of %r: %s", snap.stream[:64], exc)
                snap.init = None  # the next read sets it up again

    async def _local(self, stream: str, need: int = 0) -> _Snapshot | None:
        """The snapshot of *stream*, current enough for this read; None when JetStream has
        no such stream.

        "Current enough": it holds every message registered before the reader's live
        subscription began (those after reach the reader live, through pub/sub):

        * offsets this node registered (read-your-writes), and *need*, the offset the
          reader already has (it saw it live; the consumer may lag behind pub/sub);
        * the first read after a local subscription began (a subscribe, or a restore that
          re-attached it), and every read of a stream nobody here subscribes to, asks
          JetStream for the last offset, once, during the read. The node adds the
          subscription to its hub and to pub/sub (flushed) before it reads history, so
          every message older than the subscription is waited for and every newer one
          reaches the reader live. Concurrent such reads share one request. Other reads
          (a later ``history`` command, the gap filler) are served from memory.
        """
        self._require_ready()
        began = time.monotonic()
        snap = self._snapshots.get(stream)
        if snap is None:
            snap = self._snapshot_for(stream)
        snap.used = began
        init = snap.init
        if init is None or not init.done() or init.cancelled() or init.exception() is not None or not snap.exists:
            # Not set up (or not found last time, or failed): set up, or wait for it.
            if init is None or (init.done() and (init.cancelled() or init.exception() is not None or not snap.exists)):
                self._kick(snap)
            assert snap.init is not None
            try:
                await asyncio.wait_for(asyncio.shield(snap.init), self.retry_budget + self.timeout)
            except TimeoutError:
                raise BrokerError(f"NATS broker: reading {stream[:64]!r} timed out") from None
        if not snap.exists:
            if snap.refs == 0:
                self._snapshots.pop(stream, None)
            return None
        if snap.refs == 0 or snap.verified_at < snap.subscribed_at:
            await self._sync_since(snap, began)
            snap.verified_at = max(snap.verified_at, snap.synced_at)
        target = max(snap.known, need)
        if snap.mem.offset < target:
            waited = time.monotonic()
            if not await snap.wait_for(target, self.sync_wait):
                await self._fill(snap, target, waited)
        return snap

    async def _sync_since(self, snap: _Snapshot, began: float) -> None:
        """Make sure the last offset was asked of JetStream after *began*. Concurrent reads
        share the request in flight (a burst of subscriptions costs a couple of round trips,
        not one each)."""
        while snap.synced_at < began:
            task = snap.sync_task
            if task is None or task.done():
                task = snap.sync_task = asyncio.get_running_loop().create_task(self._sync_task(snap))
                task.add_done_callback(_log_init_failure)
            await asyncio.shield(task)

    async def _sync_task(self, snap: _Snapshot) -> None:
        await self._sync(snap)

    async def _sync(self, snap: _Snapshot) -> api.StreamInfo:
        """Ask JetStream for the stream's state now; note what is gone and what exists."""
        js = self._require_ready()
        synced_at = time.monotonic()
        info = await self._retry(lambda: js.stream_info(snap.jsname), f"reading {snap.stream[:64]!r}")
        snap.synced_at = synced_at
        state = info.state
        if state.messages == 0:
            snap.mem.skip_to(state.last_seq)
        elif state.first_seq - 1 > snap.mem.offset:
            snap.mem.skip_to(state.first_seq - 1)
        snap.known = max(snap.known, state.last_seq)
        snap.wake()
        return info

    async def _fill(self, snap: _Snapshot, target: int, began: float) -> None:
        """The consumer is late: fetch what is missing straight from JetStream."""
        js = self._require_ready()
        what = f"reading {snap.stream[:64]!r}"
        state = (await self._sync(snap)).state
        target = min(target, state.last_seq)
        seq = snap.mem.offset + 1
        while seq <= target:

            async def get(n: int = seq) -> api.RawStreamMsg | None:
                try:
                    return await js.get_msg(snap.jsname, seq=n, direct=True)
                except NotFoundError:
                    return None  # expired meanwhile

            raw = await self._retry(get, what)
            if raw is not None and raw.data is not None and seq > snap.mem.offset:
                ts = raw.time.timestamp() if raw.time is not None else time.time()
                snap.mem.store(self._decode(snap, raw.data, seq, ts))
            seq += 1
        snap.wake()
        if snap.sub is None or snap.delivered_at < began:
            # It delivered nothing while we waited: presumably gone with its server.
            log.debug("NATS broker: consumer of %r restarted at %d", snap.stream[:64], snap.mem.offset + 1)
            await self._restart_consumer(snap)

    async def history_from(self, stream: str, epoch: str, offset: int) -> list[StreamMessage]:
        self._require_ready()
        if epoch != self._epoch:
            raise HistoryError(f"unknown epoch {epoch[:32]!r} (current: {self._epoch})")
        snap = await self._local(stream, need=offset)
        if snap is None:
            raise HistoryError(f"stream {stream[:64]!r} has no history")
        return snap.mem.after(offset, time.time())

    async def history_since(self, stream: str, since: float) -> list[StreamMessage]:
        snap = await self._local(stream)
        if snap is None:
            return []
        return snap.mem.since(since, time.time())

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            now, mono = time.time(), time.monotonic()
            for stream, snap in list(self._snapshots.items()):
                snap.mem.expire(now)
                if snap.refs == 0 and mono - snap.used > self.snapshot_idle and not snap.waiters:
                    del self._snapshots[stream]
                    if snap.init is not None and not snap.init.done():
                        snap.init.cancel()
                    await self._stop_consumer(snap)

    def counts(self) -> dict[str, int]:
        """Internal sizes, for tests and metrics."""
        return {
            "snapshots": len(self._snapshots),
            "consumers": sum(1 for s in self._snapshots.values() if s.sub is not None),
            "messages": sum(len(s.mem.entries) for s in self._snapshots.values()),
            "local_sessions": len(self._local_sessions),
        }

    # -- sessions ------------------------------------------------------------------------

    def _require_sessions(self) -> KeyValue | None:
        self._require_ready()
        return self._sessions

    async def commit_session(self, sid: str, entry: bytes) -> None:
        if self.sessions_ttl <= 0:
            return
        kv = self._require_sessions()
        if kv is None:
            return
        key = _session_key(sid)
        if not self.session_limit.fits(entry):
            # The older entry is no longer this session's state: gone too.
            self._local_sessions.discard(sid)
            await self._retry(lambda: kv.delete(key), f"deleting session {sid[:32]!r}", budget=0)
            return
        # One attempt: the node waits for this before the session's next command, and a
        # failed commit only costs resumability until the next one (the node logs it).
        await self._retry(lambda: kv.put(key, entry), f"storing session {sid[:32]!r}", budget=0)
        self._local_sessions.put(sid, entry, time.time())

    async def _get_session(self, kv: KeyValue, sid: str, budget: float = 0) -> bytes | None:
        key = _session_key(sid)

        js = self._js
        assert js is not None
        bucket = self.sessions_bucket

        async def get() -> bytes | None:
            # A direct get rather than kv.get: it carries the entry's timestamp. JetStream
            # removes expired entries on its own sweep (about 0.3 s late on nats-server 2.15),
            # so the TTL is enforced here to the contract's precision.
            try:
                msg = await js.get_msg(f"KV_{bucket}", subject=f"$KV.{bucket}.{key}", direct=True)
            except NotFoundError:
                return None
            if msg.headers and msg.headers.get("KV-Operation") in ("DEL", "PURGE"):
                return None
            stamp = msg.time.timestamp() if msg.time is not None else None
            if stamp is not None and stamp + self.sessions_ttl <= time.time():
                return None
            return msg.data

        return await self._retry(get, f"reading session {sid[:32]!r}", budget)

    async def restore_session(self, sid: str) -> bytes | None:
        if self.sessions_ttl <= 0:
            return None
        kv = self._require_sessions()
        if kv is None:
            return None
        # A client of a server that just died reconnects here while JetStream may still be
        # electing the bucket's leader: worth a short wait rather than a fresh session.
        return await self._get_session(kv, sid, budget=min(self.retry_budget, 5.0))

    async def touch_session(self, sid: str) -> None:
        """Re-put the entry so that it lives another ``sessions_ttl`` (AnyCable does the same).

        Entries this node committed are re-put from a local copy (one round trip); others
        are read first, and an unknown or expired session stays unknown.
        """
        if self.sessions_ttl <= 0:
            return
        kv = self._require_sessions()
        if kv is None:
            return
        value = self._local_sessions.get(sid, time.time())
        if value is None:
            value = await self._get_session(kv, sid)
            if value is None:
                return
        key, entry = _session_key(sid), value
        await self._retry(lambda: kv.put(key, entry), f"touching session {sid[:32]!r}", budget=0)
        self._local_sessions.touch(sid, time.time())


def _position(msg: Msg) -> tuple[int, float]:
    """(stream sequence, timestamp) of a JetStream message, from its reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts ns>.<pending>`` or, with a
    domain, ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>…``
    (nats-py's ``msg.metadata`` does the same with more allocations, on every message).
    """
    tokens = (msg.reply or "").split(".")
    try:
        if len(tokens) == 9:
            return int(tokens[5]), int(tokens[7]) / 1e9
        return int(tokens[7]), int(tokens[9]) / 1e9
    except (IndexError, ValueError):
        md = msg.metadata
        return md.sequence.stream, md.timestamp.timestamp()


def _log_init_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("NATS broker: snapshot set-up failed: %r", task.exception())


if TYPE_CHECKING:
    _: type[Broker] = NatsBroker


def from_config(config: Config) -> NatsBroker:
    policy = HistoryPolicy(config.history_limit, config.history_ttl, config.stream_rules())
    hint = 1
    if config.embed_nats and config.enats_cluster:
        hint = 1 + len(config.enats_cluster_routes)
    return NatsBroker(
        servers_from_config(config),
        policy,
        config.sessions_ttl,
        prefix=config.nats_prefix,
        replicas_hint=hint,
        session_max_size=config.sessions_max_entry_size,
        sessions_cache_size=config.sessions_max_cache_size,
    )
