"""The broadcast trigger of the bare peers (websockets, picows): ``POST /_broadcast``.

Neither library serves plain HTTP requests with a body, so the bare floors listen on a second
port with this small HTTP/1.1 keep-alive handler (httptools, as pycable). The body is the one
``bench/loadgen`` sends to every server, ``{"stream": "bench", "data": "<text>"}``; ``publish``
gets the data text, and the reply (201) is written after it returned, as pycable does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httptools
import orjson


class TriggerProtocol(asyncio.Protocol):
    def __init__(self, publish: Callable[[str], None]) -> None:
        self.publish = publish
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._reply(b"400 Bad Request", keep=False)

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status = b"201 Created"
        try:
            msg = orjson.loads(b"".join(self.body))
            self.publish(msg["data"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            status = b"422 Unprocessable Entity"
        self._reply(status, keep=self.parser.should_keep_alive())

    def _reply(self, status: bytes, keep: bool) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n" + (b"" if keep else b"Connection: close\r\n") + b"\r\n"
        )
        if not keep:
            self.transport.close()


async def serve_trigger(host: str, port: int, publish: Callable[[str], None]) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: TriggerProtocol(publish), host, port, backlog=128)
