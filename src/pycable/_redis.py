"""Shared Redis plumbing for the Redis broker, pub/sub and broadcasters (``redis.asyncio``).

One place decides how a :class:`~pycable.config.Config` becomes a client: ``--redis_url``
(``redis://``, ``rediss://`` for TLS, ``unix://``), or Sentinel when ``--redis_sentinels``
is set (the URL then gives the credentials, database and TLS of the master). Every
component owns its client, so a blocking read never waits behind a history fetch.

Errors: :data:`REDIS_ERRORS` lists what a Redis call may raise when the server is
unreachable, restarting or refuses a command; callers turn them into
:class:`~pycable.exceptions.BrokerError` or log them and reconnect with :class:`Backoff`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from pycable.exceptions import ConfigError

if TYPE_CHECKING:
    from pycable.config import Config

__all__ = ["REDIS_ERRORS", "Backoff", "address", "connect", "close", "stop_task"]

#: What a call may raise when Redis is down, restarting (``LOADING``) or refuses a command.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)


def address(config: Config) -> str:
    """``host:port`` of ``--redis_url`` (or the Sentinel master) for log lines; no credentials."""
    if config.redis_sentinels:
        return f"sentinel {config.redis_sentinel_master}@{','.join(config.redis_sentinels)}"
    parts = urlsplit(config.redis_url)
    if parts.scheme == "unix":
        return parts.path
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 6379}"


def connect(
    config: Config,
    *,
    name: str,
    socket_timeout: float | None = 5.0,
    retries: int = 1,
    health_check_interval: int = 0,
) -> aioredis.Redis:
    """A client for ``--redis_url`` or Sentinel; connects lazily (no I/O here).

    Args:
        name: the ``CLIENT SETNAME`` of its connections (``pycable:<role>``), so operators
            can tell them apart in ``CLIENT LIST``.
        socket_timeout: seconds a reply may take (``None``: forever, for blocking reads).
        retries: times a command is retried on a *connection* error (a stale pooled
            connection after a Redis restart), never on a timeout: a timed-out script may
            have run, and running it again would register a message twice.
        health_check_interval: seconds of idleness after which a connection is PINGed
            before use (0: never). Pub/sub connections use it to detect a dead peer.

    Raises:
        ConfigError: ``--redis_url`` cannot be parsed.
    """
    retry = Retry(
        ExponentialWithJitterBackoff(base=0.01, cap=0.2) if retries else NoBackoff(),
        retries,
        supported_errors=(RedisConnectionError,),
    )
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 2.0,
        "retry": retry,
        "health_check_interval": health_check_interval,
        "client_name": name,
    }
    if config.redis_url.startswith("rediss://") and not config.redis_tls_verify:
        common["ssl_cert_reqs"] = "none"
        common["ssl_check_hostname"] = False
    try:
        url_kwargs: dict[str, Any] = dict(parse_url(config.redis_url))
        if not config.redis_sentinels:
            client: aioredis.Redis = aioredis.Redis.from_url(config.redis_url, **common)
            return client
    except ValueError as exc:
        raise ConfigError(f"--redis_url {config.redis_url!r}: {exc}") from None
    from redis.asyncio.sentinel import Sentinel, SentinelManagedSSLConnection

    sentinels = []
    for entry in config.redis_sentinels:
        host, sep, port = entry.strip().rpartition(":")
        if not sep:
            host, port = port, "26379"
        try:
            sentinels.append((host or "localhost", int(port)))
        except ValueError:
            raise ConfigError(f"--redis_sentinels: bad address {entry!r} (expected host:port)") from None
    url_kwargs.pop("host", None)
    url_kwargs.pop("port", None)
    if url_kwargs.pop("connection_class", None) is not None and config.redis_url.startswith("rediss://"):
        url_kwargs["connection_class"] = SentinelManagedSSLConnection
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinels,
        sentinel_kwargs={"socket_timeout": 2.0, "socket_connect_timeout": 2.0},
        **common,
    )
    master: aioredis.Redis = sentinel.master_for(config.redis_sentinel_master, **url_kwargs)
    _sentinels[master] = sentinel
    return master


#: The Sentinel behind a client from :func:`connect`, closed with it by :func:`close`.
_sentinels: weakref.WeakKeyDictionary[aioredis.Redis, Any] = weakref.WeakKeyDictionary()


async def close(client: aioredis.Redis) -> None:
    """Close a client from :func:`connect` and, with Sentinel, its connections to the sentinels."""
    await client.aclose()
    sentinel = _sentinels.pop(client, None)
    if sentinel is not None:
        for s in sentinel.sentinels:
            await s.aclose()


class Backoff:
    """Exponential reconnect delays with full jitter: 0.05 s doubling up to *cap*.

    ``await backoff.wait()`` sleeps the next delay; :meth:`reset` after a success.
    """

    __slots__ = ("base", "cap", "attempts")

    def __init__(self, base: float = 0.05, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.attempts = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempts))
        self.attempts = min(self.attempts + 1, 30)
        jittered: float = delay / 2 + random.random() * delay / 2
        return jittered

    def reset(self) -> None:
        self.attempts = 0

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay())


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel *task* and wait until it is done.

    Cancels again while it runs: a cancellation that lands while redis-py is finishing a
    command can be absorbed (the command returns normally), so one ``cancel()`` is not
    enough for a loop around Redis calls.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger("pycable.main").error(
            "background task %s had failed", task.get_name(), exc_info=task.exception()
        )
