"""NATS plumbing shared by the NATS broker, pub/sub and broadcaster.

* :class:`NatsConnection`: one ``nats-py`` client with pycable's policy: never give up
  reconnecting, log every state change once (not once per attempt), and connect in the
  background when NATS is unreachable at startup instead of failing the process.
* Name mapping. Cable stream names are arbitrary strings (``chat.1``, ``a b``, ``*``,
  ``ünï``, 10 kB long…) while NATS subjects and JetStream names are not (spec §3.5, §10:
  AnyCable breaks on them). :func:`stream_subject` and :func:`jetstream_name` map every
  name safely; the real name always travels inside the message.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client

from pycable.exceptions import ConfigError

if TYPE_CHECKING:
    from pycable.config import Config

__all__ = [
    "NatsConnection",
    "servers_from_config",
    "stream_subject",
    "jetstream_name",
    "name_hash",
    "safe_token",
    "client_url",
]

Callback = Callable[[], Awaitable[None]]


def client_url(url: str) -> str:
    """A URL a client can dial: ``nats://0.0.0.0:4222`` (a listen address) → ``127.0.0.1``."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    port = parts.port or 4222
    auth = ""
    if parts.username:
        auth = parts.username + (f":{parts.password}" if parts.password else "") + "@"
    return f"{parts.scheme or 'nats'}://{auth}{host}:{port}"


def servers_from_config(config: Config) -> list[str]:
    """``--nats_servers`` (comma-separated). With ``--embed_nats`` and no explicit
    ``--nats_servers``, the embedded server's address (spec §8.1)."""
    if config.embed_nats and "nats_servers" not in config.explicit:
        return [client_url(config.enats_addr)]
    servers = [s.strip() for s in config.nats_servers.split(",") if s.strip()]
    if not servers:
        raise ConfigError("--nats_servers is empty")
    return servers


# -- name mapping ---------------------------------------------------------------------------

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")
# A subject token: printable ASCII except the wildcards; '.' separates tokens.
_SUBJECT_TOKEN = re.compile(r"[!-~]+")
_MAX_VERBATIM_SUBJECT = 200


def name_hash(name: str, length: int = 24) -> str:
    """A lower-case base32 digest of *name* (24 chars = 120 bits: collisions are not a concern)."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:length]


def safe_token(text: str) -> str:
    """*text* with every character outside ``[A-Za-z0-9_-]`` replaced by ``_``."""
    return _UNSAFE_NAME.sub("_", text)


def _verbatim_subject_ok(stream: str) -> bool:
    if not stream or len(stream) > _MAX_VERBATIM_SUBJECT or stream[0] in "_$":
        return False
    for token in stream.split("."):
        if not token or "*" in token or ">" in token or not _SUBJECT_TOKEN.fullmatch(token):
            return False
    return True


def stream_subject(prefix: str, stream: str) -> str:
    """The pub/sub subject of a cable stream (spec §5: the stream name itself).

    The name is used verbatim, as AnyCable does (so Go and Python nodes can share a
    cluster), when it is a plain literal subject: printable ASCII, no wildcard, no empty
    token, at most 200 characters, and not starting with ``_`` or ``$`` (which keeps user
    streams off ``$JS.API…``, ``$KV…``, ``_INBOX…`` and pycable's own ``_ac_…`` subjects).
    Any other name gets ``_pcs.<hash>``. The receiving node reads the real name from the
    message, so a hashed subject is never shown to anyone.

    Example: ``chat.1`` → ``chat.1``; ``chat room`` → ``_pcs.k2…``; ``*`` → ``_pcs.…``.
    """
    if _verbatim_subject_ok(stream):
        return prefix + stream
    return f"{prefix}_pcs.{name_hash(stream)}"


def jetstream_name(prefix: str, stream: str) -> str:
    """The JetStream stream name (also its only subject) of a cable stream.

    ``<prefix>_ac_<readable>_<hash>``: *readable* is the first 32 characters of the name
    with unsafe characters replaced (for operators reading ``nats stream ls``); the hash
    of the full name makes the mapping injective. Always a single subject token and a
    valid stream name (no ``.``, ``*``, ``>``, whitespace, slashes or unicode).

    Example: ``chat.1`` → ``_ac_chat_1_<24 chars>``.
    """
    return f"{safe_token(prefix)}_ac_{safe_token(stream[:32])}_{name_hash(stream)}"


# -- connection -------------------------------------------------------------------------------


class NatsConnection:
    """A ``nats-py`` client that keeps trying and says what it is doing.

    Args:
        servers: NATS URLs.
        name: the connection name (shown by NATS monitoring) and the log prefix.
        logger: where state changes go.
        no_echo: do not receive this connection's own publications.

    ``on_connect`` callbacks run after the first successful connection, in order, in one
    background task (:meth:`wait_setup` waits for it); ``on_reconnect`` ones after each
    reconnection. Their errors are logged.
    """

    def __init__(self, servers: list[str], name: str, logger: logging.Logger, no_echo: bool = False) -> None:
        self.servers = servers
        self.name = name
        self.log = logger
        self.no_echo = no_echo
        self.nc = Client()
        self.connected = asyncio.Event()
        self.on_connect: list[Callback] = []
        self.on_reconnect: list[Callback] = []
        self._task: asyncio.Task[None] | None = None
        self._setup: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_error = ""
        self._last_error_at = 0.0
        self._closing = False

    @property
    def url(self) -> str:
        return ",".join(self.servers)

    @property
    def is_connected(self) -> bool:
        return self.nc.is_connected

    def health(self) -> str:
        """``""`` while connected; else why not (``/health``)."""
        if self.nc.is_connected:
            return ""
        return f"{self.name}: NATS at {self.url} is not connected" + (f" ({self._last_error})" if self._last_error else "")

    def server_info(self) -> dict[str, Any]:
        """The INFO of the server we are connected to (``cluster``, ``connect_urls``, …).

        nats-py keeps it in a private attribute and exposes no accessor for it.
        """
        info = getattr(self.nc, "_server_info", None)
        return info if isinstance(info, dict) else {}

    async def start(self, wait: float) -> bool:
        """Connect; True when connected within *wait* seconds, else keep trying in the background."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._connect())
        try:
            await asyncio.wait_for(self.connected.wait(), wait)
            return True
        except TimeoutError:
            self.log.warning("%s: NATS at %s is unreachable; retrying in the background", self.name, self.url)
            return False

    async def _connect(self) -> None:
        await self.nc.connect(
            self.servers,
            name=self.name,
            no_echo=self.no_echo,
            allow_reconnect=True,
            max_reconnect_attempts=-1,  # never give up (the default gives up after 2 minutes)
            reconnect_time_wait=1,
            connect_timeout=2,
            ping_interval=10,
            max_outstanding_pings=3,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
        )
        self.log.debug("%s: connected to %s", self.name, self._current())
        self.connected.set()
        self._setup = self._spawn(self._run_all(self.on_connect))

    async def _run_all(self, callbacks: list[Callback]) -> None:
        for cb in callbacks:
            try:
                await cb()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("%s: NATS connection handler failed", self.name)

    async def wait_setup(self, timeout: float) -> bool:
        """Wait for the ``on_connect`` callbacks of the first connection; False on timeout."""
        setup = self._setup
        if setup is None:
            return False
        try:
            await asyncio.wait_for(asyncio.shield(setup), timeout)
            return True
        except TimeoutError:
            return False

    def _current(self) -> str:
        url = self.nc.connected_url
        return f"{url.scheme}://{url.hostname}:{url.port}" if url is not None else self.url

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("%s: NATS (re)connection handler failed", self.name)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _on_error(self, exc: Exception) -> None:
        # One line per distinct error per 30 s: a down server must not flood the log.
        text = f"{type(exc).__name__}: {exc}".strip()
        now = time.monotonic()
        if text != self._last_error or now - self._last_error_at > 30:
            self._last_error, self._last_error_at = text, now
            self.log.warning("%s: NATS error (%s): %s", self.name, self.url, text or type(exc).__name__)

    async def _on_disconnected(self) -> None:
        if not self._closing:
            self.log.warning("%s: disconnected from NATS; reconnecting", self.name)

    async def _on_reconnected(self) -> None:
        self._last_error = ""
        self.log.info("%s: reconnected to NATS at %s", self.name, self._current())
        for cb in self.on_reconnect:
            self._spawn(cb())

    async def _on_closed(self) -> None:
        if not self._closing:
            self.log.error("%s: NATS connection closed", self.name)

    async def close(self) -> None:
        """Close the connection (idempotent); stops a background connect attempt."""
        self._closing = True
        task, self._task = self._task, None
        if task is None and not self.connected.is_set():
            return  # never started: nats-py's close() asserts that connect() was called
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, nats.errors.Error, OSError):
                pass
        for t in list(self._tasks):
            t.cancel()
        if not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.close(), 5)
            except (TimeoutError, nats.errors.Error, OSError):
                pass
