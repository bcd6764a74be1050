"""``--broker=redis``: history and sessions in Redis, shared by every node (spec §3.6).

Key layout (every key starts with ``--redis_prefix``, empty by default):

=====================  ===========  ==========================================================
key                    type         contents
=====================  ===========  ==========================================================
``$ac:e``              string       the epoch; TTL 10 x max(history ttl, sessions ttl), renewed
                                    by every registration and by every running node
``$ac:s:<stream>``     stream       messages: entry id ``<offset>-0``, fields ``d`` (data),
                                    ``t`` (ms timestamp), ``b`` (broadcast type, if any);
                                    ``MAXLEN`` limit; TTL = history ttl after the last message
``$ac:spos:<stream>``  string       the last offset of the stream
``$ac:sts:<stream>``   stream       timestamp index (auto id, field ``pos``) for ``since``
``$ac:se:<sid>``       string       a session cache entry (spec §3.4), TTL sessions ttl
``$ac:live``           sorted set   stream -> deadline (10 x ttl after its last message)
``$ac:meta``           hash         ``floor`` (new streams start above it), ``hw`` (highest
                                    offset ever assigned)
=====================  ===========  ==========================================================

The first five are AnyCable Pro's layout (a Pro node reading the same Redis understands
the history); ``$ac:live`` and ``$ac:meta`` are ours, for the contract's "offsets never
go back within an epoch" (see :mod:`pycable.broker.base`): a stream idle for 10 TTLs is
forgotten and its last offset folded into ``floor``, which a stream created later starts
above, exactly like the memory broker's ``offset_floor``.

Registration is one Lua script (``broker/lua/add.lua``): offset, append, index, TTLs,
epoch, in one atomic step. History reads are Lua scripts too, one round trip each, and
unlike AnyCable Pro they detect gaps: an offset whose successor was evicted or expired is
rejected instead of silently skipping messages. Messages older than the stream's TTL are
treated as expired even while newer ones keep the stream key alive, so the Redis and
memory brokers answer alike.

Every Redis failure becomes :class:`~pycable.exceptions.BrokerError` (the HTTP broadcast
answers 503, history is rejected, restore falls back to connect); nothing crashes, and a
background task keeps retrying the epoch with backoff until Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from pycable._redis import REDIS_ERRORS, Backoff, address, close, connect, stop_task
from pycable.broker._sessions import EntryLimit
from pycable.broker.base import Broker, HistoryPolicy
from pycable.exceptions import BrokerError, HistoryError
from pycable.log import Outage
from pycable.protocol.broadcast import StreamMessage

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

    from pycable.config import Config

__all__ = ["RedisBroker", "from_config", "load_script"]

log = logging.getLogger("pycable.broker")

#: Why ``history.lua`` refused (its status codes).
_REFUSALS = {
    1: "unknown epoch {given!r} (current: {detail})",
    2: "stream {stream!r} has no history",
    3: "offset {offset} is ahead of the stream (last: {detail})",
    4: "the stream's history has expired (last offset: {detail})",
    5: "offset {offset} is no longer in the history (oldest: {detail})",
    6: "offset {offset} is no longer in the history (expired; oldest: {detail})",
}


def load_script(name: str) -> str:
    """The source of ``broker/lua/<name>.lua`` with ``common.lua`` prepended."""
    lua = resources.files("pycable.broker") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisBroker:
    """History in Redis Streams and sessions in Redis strings, shared by the cluster.

    Args:
        client: a ``redis.asyncio`` client (see :func:`pycable._redis.connect`); the broker
            closes it on shutdown.
        policy: history limits with per-stream overrides.
        sessions_ttl: seconds a session entry lives after its last commit or touch.
        prefix: prepended to every key (``--redis_prefix``).
        where: ``host:port`` for log lines.
        refresh_interval: seconds between the epoch keep-alive / idle-stream passes.
        session_max_size: bytes; a larger session entry is not stored (0: no limit). The
            cache as a whole is bounded by ``sessions_ttl`` (and Redis's own ``maxmemory``).
    """

    supports_history = True
    is_distributed = True

    def __init__(
        self,
        client: aioredis.Redis,
        policy: HistoryPolicy | None = None,
        sessions_ttl: float = 300.0,
        prefix: str = "",
        where: str = "localhost:6379",
        refresh_interval: float = 5.0,
        session_max_size: int = 0,
    ) -> None:
        self.client = client
        self.policy = policy or HistoryPolicy()
        self.sessions_ttl = sessions_ttl
        self.prefix = prefix
        self.where = where
        self.refresh_interval = refresh_interval
        self.session_limit = EntryLimit(session_max_size)
        self._epoch = ""
        self._epoch_key = f"{prefix}$ac:e"
        self._live_key = f"{prefix}$ac:live"
        self._meta_key = f"{prefix}$ac:meta"
        self._spos_prefix = f"{prefix}$ac:spos:"
        self._epoch_ttl_ms = _ms(10 * max(self.policy.max_ttl, sessions_ttl))
        self._add: AsyncScript = client.register_script(load_script("add"))
        self._history: AsyncScript = client.register_script(load_script("history"))
        self._since: AsyncScript = client.register_script(load_script("since"))
        self._refresh: AsyncScript = client.register_script(load_script("refresh"))
        self._task: asyncio.Task[None] | None = None
        #: Down since a call failed, up again at the next call that succeeds (``/health``).
        self.outage = Outage(log, f"Redis broker at {where}")

    @property
    def epoch(self) -> str:
        """The epoch last seen in Redis ("" until Redis first answered)."""
        return self._epoch

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Read (or create) the shared epoch; if Redis is down, keep trying in the background."""
        if self._task is not None:
            return
        with contextlib.suppress(BrokerError):  # logged by the outage; retried in the background
            await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def shutdown(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        await stop_task(task)
        await close(self.client)

    def health(self) -> str:
        return self.outage.health()

    def describe(self) -> str:
        rules = f", stream rules: {len(self.policy.rules)}" if self.policy.rules else ""
        return (
            f"Using Redis broker at {self.where} (history limit: {self.policy.limit}, "
            f"history ttl: {self.policy.ttl:g}s, sessions ttl: {self.sessions_ttl:g}s{rules})"
        )

    async def refresh(self) -> str:
        """Keep the epoch alive (creating a new one if Redis lost it), forget idle streams."""
        epoch = await self._call(
            self._refresh,
            [self._epoch_key, self._live_key, self._meta_key],
            [secrets.token_hex(4), self._epoch_ttl_ms, self._spos_prefix],
        )
        self._set_epoch(epoch.decode())
        return self._epoch

    async def _refresh_loop(self) -> None:
        backoff = Backoff(base=0.2, cap=self.refresh_interval)
        while True:
            try:
                await self.refresh()
            except BrokerError:  # logged by the outage, at a bounded rate
                await backoff.wait()
                continue
            backoff.reset()
            await asyncio.sleep(self.refresh_interval)

    def _set_epoch(self, epoch: str) -> None:
        if epoch != self._epoch:
            if self._epoch:
                log.warning(
                    "the Redis broker epoch changed from %s to %s: earlier positions are void", self._epoch, epoch
                )
            self._epoch = epoch

    async def _call(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._run(script(keys=keys, args=args))

    async def _run(self, coro: Any) -> Any:
        try:
            result = await coro
        except REDIS_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.outage.failed(error)
            raise BrokerError(f"Redis broker at {self.where}: {error}") from exc
        if self.outage.since is not None:
            self.outage.recovered()
        return result

    # -- history ---------------------------------------------------------------------------

    def _keys(self, stream: str) -> tuple[str, str, str]:
        p = self.prefix
        return f"{p}$ac:s:{stream}", f"{p}$ac:spos:{stream}", f"{p}$ac:sts:{stream}"

    async def register(self, msg: StreamMessage) -> StreamMessage:
        """Store *msg* (unless transient) and return it with its offset, epoch and timestamp.

        Raises:
            BrokerError: Redis is unreachable or refused the script; nothing was stored.
        """
        if msg.transient:
            return msg
        limit, ttl = self.policy.for_stream(msg.stream)
        data_key, spos_key, ts_key = self._keys(msg.stream)
        offset, epoch, ts = await self._call(
            self._add,
            [self._epoch_key, data_key, spos_key, ts_key, self._live_key, self._meta_key],
            [
                msg.data,
                max(1, limit),
                _ms(ttl),
                secrets.token_hex(4),
                self._epoch_ttl_ms,
                msg.stream,
                self._spos_prefix,
                msg.broadcast_type or "",
            ],
        )
        epoch = epoch.decode()
        self._set_epoch(epoch)
        return msg.registered(int(offset), epoch, int(ts) / 1000)

    async def subscribe(self, stream: str) -> None:
        """Nothing to do: every node reads the shared history directly."""

    async def unsubscribe(self, stream: str) -> None:
        """Nothing to do (see :meth:`subscribe`)."""

    async def history_from(self, stream: str, epoch: str, offset: int) -> list[StreamMessage]:
        """Messages after *offset* in *epoch*, oldest first (see the broker contract).

        Raises:
            HistoryError: the history cannot be complete (other epoch, unknown stream, offset
                ahead, or a message after it evicted or expired).
            BrokerError: Redis failed.
        """
        if offset < 0:
            raise HistoryError(f"offset {offset} is negative")
        _, ttl = self.policy.for_stream(stream)
        data_key, spos_key, _ = self._keys(stream)
        reply = await self._call(self._history, [self._epoch_key, data_key, spos_key], [epoch, offset, _ms(ttl)])
        code = int(reply[0])
        if code != 0:
            detail = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
            raise HistoryError(
                _REFUSALS.get(code, "history refused ({detail})").format(
                    given=epoch[:32], detail=detail, stream=stream[:64], offset=offset
                )
            )
        return self._decode(stream, epoch, reply[1])

    async def history_since(self, stream: str, since: float) -> list[StreamMessage]:
        """Messages with ``timestamp >= since`` (seconds, inclusive) still in the history.

        Raises:
            BrokerError: Redis failed.
        """
        _, ttl = self.policy.for_stream(stream)
        data_key, _, ts_key = self._keys(stream)
        since_ms = max(0, math.ceil(round(since * 1000, 3)))
        epoch, entries = await self._call(self._since, [self._epoch_key, data_key, ts_key], [since_ms, _ms(ttl)])
        return self._decode(stream, epoch.decode(), entries)

    @staticmethod
    def _decode(stream: str, epoch: str, encoded: bytes) -> list[StreamMessage]:
        """Entries as ``encode_entries`` (common.lua) packs them: ``[offset, ms, data, type, ...]``."""
        flat = orjson.loads(encoded)
        return [
            StreamMessage(
                stream,
                flat[i + 2],
                broadcast_type=flat[i + 3] or None,
                offset=int(flat[i]),
                epoch=epoch,
                timestamp=int(flat[i + 1]) / 1000,
            )
            for i in range(0, len(flat), 4)
        ]

    # -- sessions --------------------------------------------------------------------------

    def _session_key(self, sid: str) -> str:
        return f"{self.prefix}$ac:se:{sid}"

    async def commit_session(self, sid: str, entry: bytes) -> None:
        if self.sessions_ttl <= 0:
            return
        if not self.session_limit.fits(entry):
            # The older entry is no longer this session's state: gone too.
            await self._run(self.client.delete(self._session_key(sid)))
            return
        await self._run(self.client.set(self._session_key(sid), entry, px=_ms(self.sessions_ttl)))

    async def restore_session(self, sid: str) -> bytes | None:
        if self.sessions_ttl <= 0:
            return None
        value: bytes | None = await self._run(self.client.get(self._session_key(sid)))
        return value

    async def touch_session(self, sid: str) -> None:
        if self.sessions_ttl <= 0:
            return
        await self._run(self.client.pexpire(self._session_key(sid), _ms(self.sessions_ttl)))


if TYPE_CHECKING:
    _: type[Broker] = RedisBroker


def from_config(config: Config) -> RedisBroker:
    policy = HistoryPolicy(config.history_limit, config.history_ttl, config.stream_rules())
    client = connect(config, name="pycable:broker", socket_timeout=2.0)
    return RedisBroker(
        client,
        policy,
        config.sessions_ttl,
        config.redis_prefix,
        address(config),
        session_max_size=config.sessions_max_entry_size,
    )
