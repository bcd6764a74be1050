"""``redisx`` broadcaster: publications from a Redis Stream, read by a consumer group
(spec §4.3, preface decision 5).

The application appends ``XADD <--redisx_stream> * payload '<publication JSON>'``. Every
node reads the stream in the consumer group ``--redisx_group`` under a random consumer
name, so each entry goes to ONE node, which registers it with the broker once and
publishes it through pub/sub.

Loop (one task per node):

1. ``XGROUP CREATE <stream> <group> $ MKSTREAM`` (``BUSYGROUP`` ignored) and ``XGROUP
   CREATECONSUMER``, again after every reconnect (the stream may have been lost with a
   Redis restart).
2. Every block interval: ``XAUTOCLAIM <stream> <group> <me> <block ms> 0-0``, which takes over
   entries pending longer than that (their consumer died, or failed to handle them), and
   handles them first; and drop consumers of the group that have nothing pending and have
   not been seen for :data:`STALE_CONSUMER_IDLE_MS` (one small script,
   :data:`CLEANUP_SCRIPT`, checks and deletes atomically).
3. ``XREADGROUP GROUP <group> <me> COUNT 100 BLOCK <block ms> STREAMS <stream> >``.
4. Per entry, in order: parse ``payload``; ``await handler.handle_broadcast(...)``. The
   entries handled are then acknowledged and deleted (``XACK`` + ``XDEL``, one round trip
   per batch). If the handler raises (broker down) that entry and the rest of the batch
   stay pending; this consumer retries its own pending entries first, in order, and other
   nodes claim them after the block interval (at-least-once). An entry that can never
   succeed (no ``payload`` field, not a publication) is logged, acknowledged and deleted.
5. Shutdown: ``XGROUP DELCONSUMER`` unless the consumer still has pending entries (deleting
   it would drop them from the group's pending list; a live node claims them instead).

Redis errors are logged and retried with exponential backoff (0.05 s doubling to 5 s,
forever); entries read but not acknowledged when the connection broke stay pending and
are claimed later, so none is lost.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from pycable._redis import REDIS_ERRORS, Backoff, address, close, connect, stop_task
from pycable.broadcast.base import Broadcaster, BroadcastHandler
from pycable.exceptions import BroadcastError, BrokerError
from pycable.log import Outage
from pycable.protocol.broadcast import parse_broadcast

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

    from pycable.config import Config

__all__ = ["RedisStreamBroadcaster", "from_config", "CLEANUP_SCRIPT"]

log = logging.getLogger("pycable.broadcast")

#: Entries read per XREADGROUP / XAUTOCLAIM call.
BATCH = 100
#: A consumer with nothing pending and unseen for this long (ms) belonged to a dead node.
#: A live consumer is seen at least every block interval.
STALE_CONSUMER_IDLE_MS = 60_000

#: Deletes the group's consumers with no pending entries that have been idle longer than
#: ARGV[2] ms, except ARGV[1] (ourselves). Atomic, so a consumer cannot read entries between
#: the check and the delete. Returns the number deleted.
CLEANUP_SCRIPT = """
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[3])
if not ok then return 0 end
local deleted = 0
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] ~= ARGV[1] and tonumber(info['pending']) == 0 and tonumber(info['idle']) > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[3], info['name'])
    deleted = deleted + 1
  end
end
return deleted
"""


def new_consumer_name() -> str:
    """A random 6-character consumer name (AnyCable uses ``nanoid(6)``)."""
    return secrets.token_urlsafe(6)[:6]


class RedisStreamBroadcaster:
    """Consumer-group reader of the broadcast stream (see the module docstring).

    Args:
        client: a client whose socket timeout exceeds the block interval.
        stream: ``--redisx_stream``.
        group: ``--redisx_group``.
        block_ms: ``--redisx_read_block_milliseconds``; also the claim idle time.
        consumer: this node's consumer name (random by default).
        where: ``host:port`` for log lines.
    """

    is_fanout = False

    def __init__(
        self,
        client: aioredis.Redis,
        stream: str = "__anycable__",
        group: str = "bx",
        block_ms: int = 2000,
        consumer: str | None = None,
        where: str = "localhost:6379",
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.block_ms = max(1, block_ms)
        self.consumer = consumer or new_consumer_name()
        self.where = where
        self.handler: BroadcastHandler | None = None
        self.stats = {"received": 0, "malformed": 0, "failed": 0, "claimed": 0}
        self._cleanup: AsyncScript = client.register_script(CLEANUP_SCRIPT)
        self._task: asyncio.Task[None] | None = None
        #: Set when the loop is reading (tests wait for it).
        self.ready = asyncio.Event()
        self.outage = Outage(log, f"redisx: Redis at {where}")

    def health(self) -> str:
        return self.outage.health()  # down from a failed attempt until one succeeds

    def describe(self) -> str:
        return (
            f"Starting Redis broadcaster at {self.where} "
            f"provider=redisx stream={self.stream} group={self.group} consumer={self.consumer}"
        )

    async def start(self, handler: BroadcastHandler) -> None:
        self.handler = handler
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def shutdown(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        await stop_task(task)
        try:
            pending = await self.client.xpending_range(self.stream, self.group, "-", "+", 1, consumername=self.consumer)
            if pending:
                log.info("redisx consumer %s keeps pending entries for another node to claim", self.consumer)
            else:
                await self.client.xgroup_delconsumer(self.stream, self.group, self.consumer)
        except REDIS_ERRORS as exc:
            log.warning("redisx: could not remove consumer %s: %s", self.consumer, exc)
        await close(self.client)

    # -- loop ------------------------------------------------------------------------------

    async def _ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(self.stream, self.group, id="$", mkstream=True)
        except REDIS_ERRORS as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        await self.client.xgroup_createconsumer(self.stream, self.group, self.consumer)

    async def _run(self) -> None:
        backoff = Backoff()
        # After a failure, this consumer's own pending entries are retried first, in order,
        # before anything new is read.
        retry_own = False
        while True:
            try:
                await self._ensure_group()
                self.outage.recovered()
                next_claim = 0.0
                while True:
                    if retry_own:
                        own = await self.client.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=BATCH)
                        entries = _entries(own)
                        if not await self._handle_all(entries):
                            raise BrokerError("handler failed")
                        retry_own = len(entries) == BATCH
                        continue
                    now = time.monotonic()
                    if now >= next_claim:
                        next_claim = now + self.block_ms / 1000
                        if not await self._claim():
                            raise BrokerError("handler failed")
                        await self._cleanup(
                            keys=[self.stream], args=[self.consumer, STALE_CONSUMER_IDLE_MS, self.group]
                        )
                    self.ready.set()
                    new = await self.client.xreadgroup(
                        self.group, self.consumer, {self.stream: ">"}, count=BATCH, block=self.block_ms
                    )
                    if not await self._handle_all(_entries(new)):
                        raise BrokerError("handler failed")
                    backoff.reset()
            except BrokerError:
                retry_own = True  # logged by _handle; the entries stay pending
            except REDIS_ERRORS as exc:
                if "NOGROUP" in str(exc):
                    continue  # the stream or group was deleted: create it again at once
                self.outage.failed(f"{type(exc).__name__}: {exc}")
                retry_own = True
            except Exception:  # a bug must not stop ingestion: pending entries are retried
                log.exception("redisx: the consumer loop failed; restarting it")
                retry_own = True
            self.ready.clear()
            await backoff.wait()

    async def _claim(self) -> bool:
        """Take over entries pending longer than the block interval; False if one failed."""
        start = "0-0"
        while True:
            reply = await self.client.xautoclaim(
                self.stream, self.group, self.consumer, self.block_ms, start_id=start, count=BATCH
            )
            start = reply[0]
            entries = reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:  # deleted from the stream but still pending: nothing left to do
                await self.client.xack(self.stream, self.group, *deleted)
            if entries:
                self.stats["claimed"] += len(entries)
                log.info("redisx: claimed %d pending entries", len(entries))
                if not await self._handle_all(entries):
                    return False
            if start in (b"0-0", "0-0"):
                return True

    async def _handle_all(self, entries: list[Any]) -> bool:
        """Handle a batch in order; acknowledge what succeeded (one round trip per batch,
        also when an entry fails: the entries before it are done, it and the rest stay
        pending). False if an entry failed."""
        done: list[bytes] = []
        try:
            for entry_id, fields in entries:
                if fields is None:  # Redis 6.2: a pending entry deleted from the stream
                    if entry_id is not None:
                        done.append(entry_id)
                    continue
                if not await self._handle(entry_id, fields):
                    return False
                done.append(entry_id)
            return True
        finally:
            if done:
                await self._done(*done)

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> bool:
        self.stats["received"] += 1
        payload = fields.get(b"payload")
        try:
            if payload is None:
                raise BroadcastError(
                    f"no 'payload' field (fields: {sorted(k.decode(errors='replace') for k in fields)})"
                )
            publications = parse_broadcast(payload)
        except BroadcastError as exc:
            # It would never succeed: acknowledge and drop it, loudly.
            self.stats["malformed"] += 1
            log.error("redisx: dropped entry %s: %s", entry_id.decode(), exc)
            return True
        handler = self.handler
        if handler is None:
            return False
        try:
            await handler.handle_broadcast(publications)
        except BrokerError as exc:
            self.stats["failed"] += 1
            log.error("redisx: entry %s not registered (%s); it stays pending and is retried", entry_id.decode(), exc)
            return False
        except Exception:  # a bug must not stop ingestion; the entry is retried
            self.stats["failed"] += 1
            log.exception("redisx: entry %s failed; it stays pending and is retried", entry_id.decode())
            return False
        return True

    async def _done(self, *entry_ids: bytes) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, self.group, *entry_ids)
            pipe.xdel(self.stream, *entry_ids)
            await pipe.execute()


def _entries(reply: Any) -> list[Any]:
    """The ``(id, fields)`` entries of an XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    batches = reply.values() if isinstance(reply, dict) else (batch for _, batch in reply)
    return [entry for batch in batches for entry in batch]


if TYPE_CHECKING:
    _: type[Broadcaster] = RedisStreamBroadcaster


def from_config(config: Config) -> RedisStreamBroadcaster:
    block_ms = config.redisx_read_block_milliseconds
    consumer = new_consumer_name()
    client = connect(config, name=f"pycable:redisx:{consumer}", socket_timeout=block_ms / 1000 + 5.0)
    return RedisStreamBroadcaster(
        client, config.redisx_stream, config.redisx_group, block_ms, consumer, where=address(config)
    )
