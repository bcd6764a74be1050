"""A small Action Cable test client over the ``websockets`` library."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


def ident(stream: str, **extra: Any) -> str:
    return json.dumps({"channel": "$pubsub", "stream_name": stream, **extra}, separators=(",", ":"))


class CableClient:
    """Connects, keeps every received message, and waits for the ones a test expects."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self._cond = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.closed = asyncio.Event()

    @classmethod
    async def open(cls, url: str, protocol: str = "actioncable-v1-ext-json", **kw: Any) -> CableClient:
        ws = await connect(url, subprotocols=[protocol] if protocol else None, **kw)  # type: ignore[list-item]
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                async with self._cond:
                    self.received.append(msg)
                    self._cond.notify_all()
        except Exception:
            pass
        finally:
            self.closed.set()
            async with self._cond:
                self._cond.notify_all()

    async def send(self, obj: Any) -> None:
        await self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    async def wait_for(self, pred: Any, timeout: float = 5.0, after: int = 0) -> dict[str, Any]:
        """The first message (from index *after*) matching *pred* (a callable or a dict subset)."""
        check = pred if callable(pred) else (lambda m: all(m.get(k) == v for k, v in pred.items()))

        async def find() -> dict[str, Any]:
            async with self._cond:
                while True:
                    for m in self.received[after:]:
                        if check(m):
                            return m
                    if self.closed.is_set():
                        raise ConnectionError(f"closed before a match; got {self.received}")
                    await self._cond.wait()

        return await asyncio.wait_for(find(), timeout)

    async def wait_count(self, pred: Any, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        check = pred if callable(pred) else (lambda m: all(m.get(k) == v for k, v in pred.items()))

        async def find() -> list[dict[str, Any]]:
            async with self._cond:
                while True:
                    got = [m for m in self.received if check(m)]
                    if len(got) >= n:
                        return got
                    if self.closed.is_set():
                        raise ConnectionError(f"closed with {len(got)}/{n}; got {self.received}")
                    await self._cond.wait()

        return await asyncio.wait_for(find(), timeout)

    def messages(self, stream: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.received if "message" in m and "type" not in m and (stream is None or m.get("stream_id") == stream)]

    async def welcome(self) -> dict[str, Any]:
        return await self.wait_for({"type": "welcome"})

    async def subscribe(self, identifier: str, history: Any = None) -> dict[str, Any]:
        cmd: dict[str, Any] = {"command": "subscribe", "identifier": identifier}
        if history is not None:
            cmd["history"] = history
        n = len(self.received)
        await self.send(cmd)
        return await self.wait_for(
            lambda m: m.get("identifier") == identifier and m.get("type") in ("confirm_subscription", "reject_subscription"),
            after=n,
        )

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()

    async def abort(self) -> None:
        """Cut the TCP connection without a close handshake."""
        self.ws.transport.abort()
        await self.closed.wait()
