"""A bare WebSocket broadcast server: the floor that bench/fanout.py compares pycable against.

Same library stack as pycable: an asyncio.Protocol of our own, httptools for the HTTP upgrade,
websockets' sans-I/O ``ServerProtocol`` for inbound frames and the close handshake, uvloop, and
outbound text frames built once per broadcast and written as the same bytes to every transport.
No Action Cable logic: the upgrade is accepted whatever the path (the first offered subprotocol
is echoed), a fixed welcome frame is sent, any text frame containing ``"subscribe"`` is answered
with a fixed confirmation, and ``POST /_broadcast`` on the second port wraps each publication's
``data`` (spliced as is, no decoding) in ``{"identifier":...,"message":<data>}`` and writes that
frame to every client, then answers 201. Batches (JSON arrays) are handled too.

    python bench/bare_server.py --host 127.0.0.1 --port 8080 --http_broadcast_port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import httptools
import orjson
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.utils import accept_key

IDENTIFIER = '{"channel":"$pubsub","stream_name":"bench"}'
IDENTIFIER_JSON = orjson.dumps(IDENTIFIER)


def text_frame(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


WELCOME = text_frame(b'{"type":"welcome","sid":"bare"}')
CONFIRM = text_frame(b'{"identifier":' + IDENTIFIER_JSON + b',"type":"confirm_subscription"}')

clients: set[asyncio.Transport] = set()


class WebSocketConnection(asyncio.Protocol):
    __slots__ = ("transport", "parser", "headers", "ws")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.headers: dict[bytes, bytes] = {}
        self.ws: ServerProtocol | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            clients.discard(self.transport)
        if self.ws is not None:
            self.ws.receive_eof()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        if ws is not None:
            ws.receive_data(data)
            self._process()
            return
        assert self.parser is not None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[exc.args[0] :])
        except httptools.HttpParserError:
            self._reject(b"400 Bad Request")
        else:
            # A complete request that is not an upgrade.
            if self.ws is None and self.headers.get(b"__complete__"):
                self._reject(b"426 Upgrade Required")

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_message_complete(self) -> None:
        self.headers[b"__complete__"] = b"1"

    # -- helpers
    def _reject(self, status: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.transport.close()

    def _upgrade(self, rest: bytes) -> None:
        assert self.transport is not None
        key = self.headers.get(b"sec-websocket-key")
        if not key or self.headers.get(b"upgrade", b"").lower() != b"websocket":
            self._reject(b"400 Bad Request")
            return
        accept = accept_key(key.decode()).encode()
        response = [
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n"
        ]
        offered = self.headers.get(b"sec-websocket-protocol")
        if offered:
            response.append(b"Sec-WebSocket-Protocol: " + offered.split(b",")[0].strip() + b"\r\n")
        response.append(b"\r\n")
        response.append(WELCOME)
        self.transport.write(b"".join(response))
        self.parser = None
        self.headers = {}
        self.ws = ServerProtocol(state=State.OPEN, max_size=65536)
        clients.add(self.transport)
        if rest:
            self.ws.receive_data(rest)
            self._process()

    def _process(self) -> None:
        ws = self.ws
        transport = self.transport
        assert ws is not None and transport is not None
        for event in ws.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT and b'"subscribe"' in event.data:
                transport.write(CONFIRM)
        for chunk in ws.data_to_send():
            if chunk:
                transport.write(chunk)
            else:  # the protocol asks for a TCP half-close: we just close
                transport.close()
        if ws.close_expected() or ws.state is State.CLOSED:
            clients.discard(transport)
            transport.close()


def fan_out(publication: object) -> int:
    if isinstance(publication, dict):
        publication = [publication]
    if not isinstance(publication, list):
        return 0
    sent = 0
    for msg in publication:
        if not isinstance(msg, dict) or not isinstance(msg.get("data"), str):
            continue
        frame = text_frame(b'{"identifier":' + IDENTIFIER_JSON + b',"message":' + msg["data"].encode() + b"}")
        for transport in clients:
            transport.write(frame)
        sent += len(clients)
    return sent


class BroadcastConnection(asyncio.Protocol):
    __slots__ = ("transport", "parser", "body", "method")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.parser.get_method() != b"POST":
            status = b"422 Unprocessable Entity"
        else:
            try:
                fan_out(orjson.loads(b"".join(self.body)))
            except orjson.JSONDecodeError:
                pass
            status = b"201 Created"
        keep = self.parser.should_keep_alive()
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n" + (b"" if keep else b"Connection: close\r\n") + b"\r\n"
        )
        if not keep:
            self.transport.close()


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    ws_server = await loop.create_server(WebSocketConnection, args.host, args.port, backlog=4096)
    http_server = await loop.create_server(BroadcastConnection, args.host, args.http_broadcast_port, backlog=128)
    print(
        f"bare server: ws://{args.host}:{args.port}/ broadcast http://{args.host}:{args.http_broadcast_port}/_broadcast",
        flush=True,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    ws_server.close()
    http_server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--http_broadcast_port", type=int, default=8090)
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    ns = parser.parse_args()
    if ns.no_uvloop:
        asyncio.run(main(ns))
    else:
        import uvloop

        uvloop.run(main(ns))
    sys.exit(0)
