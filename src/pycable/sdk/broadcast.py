"""Broadcasting to pycable from anywhere in an application: sync (views, tasks, scripts) and
async, over HTTP or redisx.

* **HTTP** (``ANYCABLE_BROADCAST_ADAPTER=http``, the default): ``POST`` the publication to
  ``ANYCABLE_BROADCAST_URL`` with ``Authorization: Bearer <broadcast key>``, over kept-alive
  connections (one per thread for sync calls, a pool per event loop for async ones).
  Anything but a 2xx answer raises :class:`~pycable.exceptions.BroadcastError` with the
  server's reason. A connection error is retried once (on a fresh connection), then raised.
* **redisx**: ``XADD <ANYCABLE_REDISX_STREAM> * payload <publication>``, the Redis Stream
  the server's ``redisx`` broadcaster reads (needs the ``redis`` extra). A Redis error
  raises :class:`~pycable.exceptions.BroadcastError`.

A broadcast that cannot be handed to pycable always raises: it is never dropped silently.

Publications are the server's format (docs/broadcasting.md): ``{"stream", "data",
"meta"}``; ``data`` that is not a string is sent JSON-encoded. ``exclude_socket`` (or
``to_others=True`` inside an RPC call, which uses :func:`~pycable.sdk.current_socket`) keeps
the message from that one client.
"""

from __future__ import annotations

import http.client
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import orjson

from pycable.exceptions import BroadcastError
from pycable.sdk.application import current_socket, encode_identifiers

if TYPE_CHECKING:
    import asyncio

    from pycable.sdk.config import Settings

__all__ = [
    "Broadcaster",
    "HTTPBroadcaster",
    "RedisXBroadcaster",
    "BroadcastError",
    "publication",
    "disconnect_command",
    "configure",
    "get_broadcaster",
    "broadcast",
    "abroadcast",
    "broadcast_batch",
    "abroadcast_batch",
    "disconnect",
    "adisconnect",
]

# -- publications (pure) -------------------------------------------------------------------


def _exclude(exclude_socket: str | None, to_others: bool) -> str | None:
    if not to_others:
        return exclude_socket
    sid = current_socket()
    if sid is None:
        raise RuntimeError("to_others=True needs an RPC call being handled (there is no current socket)")
    return sid


def publication(
    stream: str, data: Any, *, exclude_socket: str | None = None, transient: bool = False
) -> dict[str, Any]:
    """One publication: ``{"stream", "data", "meta"?}``.

    Raises:
        ValueError: an empty or non-string stream name.
        TypeError: *data* cannot be JSON-encoded.
    """
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"a stream name is a non-empty string, got {stream!r}")
    pub: dict[str, Any] = {"stream": stream, "data": data if isinstance(data, str) else orjson.dumps(data).decode()}
    meta: dict[str, Any] = {}
    if exclude_socket:
        meta["exclude_socket"] = exclude_socket
    if transient:
        meta["transient"] = True
    if meta:
        pub["meta"] = meta
    return pub


def disconnect_command(identifiers: Mapping[str, Any], reconnect: bool = True) -> dict[str, Any]:
    """The remote-disconnect command for every connection with these identifiers."""
    if not identifiers:
        raise ValueError("a remote disconnect needs the connection identifiers")
    return {"command": "disconnect", "payload": {"identifier": encode_identifiers(identifiers), "reconnect": reconnect}}


# -- transports ------------------------------------------------------------------------------


class Broadcaster(Protocol):
    """**Protocol:** hands an encoded publication (or batch, or command) to pycable.

    Both methods raise :class:`~pycable.exceptions.BroadcastError` when pycable did not
    take it.
    """

    def publish(self, payload: bytes) -> None: ...

    async def apublish(self, payload: bytes) -> None: ...

    def describe(self) -> str: ...


class HTTPBroadcaster:
    """``POST`` to pycable's HTTP broadcast endpoint.

    Args:
        url: the endpoint (``http://127.0.0.1:8090/_broadcast``).
        key: the broadcast key (empty: no ``Authorization`` header).
        timeout: seconds for one request.
    """

    def __init__(self, url: str, key: str = "", timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the broadcast URL must be http(s)://host[:port]/path, got {url!r}")
        self.url = url
        self.key = key
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        base_path, _, self._name = (parts.path or "/").rpartition("/")
        self._base = f"{parts.scheme}://{parts.netloc}{base_path}" + (f"?{parts.query}" if parts.query else "")
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self._local = threading.local()
        self._conns: set[http.client.HTTPConnection] = set()  # every thread's, for close()
        self._conns_lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def describe(self) -> str:
        return f"http broadcaster {self.url} ({'with' if self.key else 'no'} key)"

    # sync: one keep-alive connection per thread

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.add(conn)
        return conn

    def publish(self, payload: bytes) -> None:
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", self._path, body=payload, headers=self.headers)
                response = conn.getresponse()
                body = response.read()
            except TimeoutError:
                self._drop()
                raise BroadcastError(
                    f"pycable did not answer the broadcast at {self.url} within {self.timeout}s"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                if attempt == 2:
                    raise BroadcastError(
                        f"cannot broadcast to pycable at {self.url}: {exc or type(exc).__name__}"
                    ) from exc
                continue
            if response.will_close:
                self._drop()
            self._check(response.status, body)
            return

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._conns_lock:
                self._conns.discard(conn)
            conn.close()

    def _check(self, status: int, body: bytes) -> None:
        if not 200 <= status < 300:
            reason = body[:500].decode("utf-8", "replace").strip()
            hint = (
                " (wrong or missing broadcast key: check ANYCABLE_SECRET / ANYCABLE_BROADCAST_KEY)"
                if status == 401
                else ""
            )
            raise BroadcastError(f"pycable refused the broadcast at {self.url}: HTTP {status} {reason}{hint}")

    # async: a connection pool per event loop

    def _client(self) -> Any:
        import asyncio

        from pycable.rpc._http11 import HttpClient

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = HttpClient(self._base)
        return client

    async def apublish(self, payload: bytes) -> None:
        from pycable.rpc._http11 import HttpProtocolError

        client = self._client()
        for attempt in (1, 2):
            try:
                response = await client.post(self._name, payload, self.headers, self.timeout)
            except TimeoutError:
                raise BroadcastError(
                    f"pycable did not answer the broadcast at {self.url} within {self.timeout}s"
                ) from None
            except (OSError, HttpProtocolError) as exc:
                if attempt == 2:
                    raise BroadcastError(
                        f"cannot broadcast to pycable at {self.url}: {exc or type(exc).__name__}"
                    ) from exc
                continue
            self._check(response.status, response.body)
            return

    async def aclose(self) -> None:
        """Close this event loop's connections."""
        import asyncio

        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def close(self) -> None:
        """Close the sync connections of every thread (call it when no broadcast is running)."""
        with self._conns_lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            conn.close()
        self._local = threading.local()


class RedisXBroadcaster:
    """``XADD`` to the Redis Stream that pycable's ``redisx`` broadcaster reads.

    Args:
        url: the Redis URL (``redis://`` or ``rediss://``).
        stream: the stream (``--redisx_stream``, default ``__anycable__``).
    """

    def __init__(self, url: str, stream: str = "__anycable__") -> None:
        try:
            import redis  # noqa: F401
        except ImportError:
            raise BroadcastError(
                "the redisx broadcast adapter needs the redis package (pip install 'pycable[redis]')"
            ) from None
        self.url = url
        self.stream = stream
        self._sync: Any = None
        self._lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def describe(self) -> str:
        return f"redisx broadcaster {self.stream!r} at {urlsplit(self.url).hostname}"

    def publish(self, payload: bytes) -> None:
        import redis

        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    self._sync = redis.Redis.from_url(self.url)
        try:
            self._sync.xadd(self.stream, {"payload": payload})
        except (redis.RedisError, OSError) as exc:
            raise BroadcastError(f"cannot broadcast through Redis stream {self.stream!r}: {exc}") from exc

    async def apublish(self, payload: bytes) -> None:
        import asyncio

        import redis
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = aioredis.Redis.from_url(self.url)
        try:
            await client.xadd(self.stream, {"payload": payload})
        except (redis.RedisError, OSError) as exc:
            raise BroadcastError(f"cannot broadcast through Redis stream {self.stream!r}: {exc}") from exc

    async def aclose(self) -> None:
        import asyncio

        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None


def from_settings(settings: Settings) -> HTTPBroadcaster | RedisXBroadcaster:
    """The broadcaster the settings ask for."""
    if settings.broadcast_adapter == "redisx":
        return RedisXBroadcaster(settings.redis_url, settings.redisx_stream)
    return HTTPBroadcaster(
        settings.effective_broadcast_url, settings.effective_broadcast_key, settings.broadcast_timeout
    )


# -- the process-wide default ----------------------------------------------------------------

_default: HTTPBroadcaster | RedisXBroadcaster | None = None
_default_lock = threading.Lock()


def configure(settings: Settings | None = None, **overrides: Any) -> HTTPBroadcaster | RedisXBroadcaster:
    """Set the broadcaster of the module-level functions: from *settings* (default: the
    environment) with *overrides*. Returns it."""
    global _default
    from pycable.sdk.config import Settings

    if settings is None:
        settings = Settings.from_env(**overrides)
    elif overrides:
        settings = settings.with_(**overrides)
    broadcaster = from_settings(settings)
    with _default_lock:
        old, _default = _default, broadcaster
    if old is not None:
        old.close()
    return broadcaster


def get_broadcaster() -> HTTPBroadcaster | RedisXBroadcaster:
    """The default broadcaster (configured from the environment on first use)."""
    if _default is None:
        with _default_lock:
            if _default is None:
                from pycable.sdk.config import Settings

                globals()["_default"] = from_settings(Settings.from_env())
    assert _default is not None
    return _default


def _encode(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _batch(items: Iterable[tuple[str, Any]], exclude: str | None, transient: bool) -> list[dict[str, Any]]:
    pubs = [publication(stream, data, exclude_socket=exclude, transient=transient) for stream, data in items]
    if not pubs:
        raise ValueError("an empty batch")
    return pubs


def broadcast(
    stream: str, data: Any, *, exclude_socket: str | None = None, to_others: bool = False, transient: bool = False
) -> None:
    """Publish *data* on *stream* (blocking; from async code use :func:`abroadcast`).

    Args:
        stream: the stream name.
        data: a string (sent as is) or anything JSON-serialisable.
        exclude_socket: a session id that must not get it.
        to_others: exclude the client whose RPC call is being handled.
        transient: not stored in the stream's history.

    Raises:
        BroadcastError: pycable did not take it.
    """
    pub = publication(stream, data, exclude_socket=_exclude(exclude_socket, to_others), transient=transient)
    get_broadcaster().publish(_encode(pub))


async def abroadcast(
    stream: str, data: Any, *, exclude_socket: str | None = None, to_others: bool = False, transient: bool = False
) -> None:
    """:func:`broadcast` for async code."""
    payload = _encode(
        publication(stream, data, exclude_socket=_exclude(exclude_socket, to_others), transient=transient)
    )
    await get_broadcaster().apublish(payload)


def broadcast_batch(
    items: Iterable[tuple[str, Any]],
    *,
    exclude_socket: str | None = None,
    to_others: bool = False,
    transient: bool = False,
) -> None:
    """Publish ``(stream, data)`` pairs in one request; pycable publishes them in order."""
    get_broadcaster().publish(_encode(_batch(items, _exclude(exclude_socket, to_others), transient)))


async def abroadcast_batch(
    items: Iterable[tuple[str, Any]],
    *,
    exclude_socket: str | None = None,
    to_others: bool = False,
    transient: bool = False,
) -> None:
    """:func:`broadcast_batch` for async code."""
    await get_broadcaster().apublish(_encode(_batch(items, _exclude(exclude_socket, to_others), transient)))


def disconnect(identifiers: Mapping[str, Any] | None = None, *, reconnect: bool = True, **kw: Any) -> None:
    """Close every connection identified by these identifiers (on every node):
    ``disconnect(user="ann")``. The clients get ``{"type":"disconnect","reason":"remote",
    "reconnect":...}``."""
    get_broadcaster().publish(_encode(disconnect_command({**(identifiers or {}), **kw}, reconnect)))


async def adisconnect(identifiers: Mapping[str, Any] | None = None, *, reconnect: bool = True, **kw: Any) -> None:
    """:func:`disconnect` for async code."""
    await get_broadcaster().apublish(_encode(disconnect_command({**(identifiers or {}), **kw}, reconnect)))
