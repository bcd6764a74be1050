"""Bare floor: a broadcast server written as the picows documentation shows it.

``picows.ws_create_server`` with a ``WSListener`` per connection (picows answers pings by
itself); a client whose text frame contains ``"subscribe"`` joins the subscribers and gets a
confirmation; a broadcast calls ``transport.send(WSMsgType.TEXT, data)`` on every subscriber
(picows has no broadcast helper: each send frames the payload). Broadcasts arrive on a second
port (``_trigger.py``). uvloop, as picows recommends.

    python bench/peers/picows_server.py --port 8080 --http_broadcast_port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop
from _trigger import serve_trigger
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

CONFIRM = b'{"type":"confirm_subscription"}'
SUBSCRIBERS: set[WSTransport] = set()


class Listener(WSListener):  # type: ignore[misc]
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            if b'"subscribe"' in frame.get_payload_as_bytes():
                SUBSCRIBERS.add(transport)
                transport.send(WSMsgType.TEXT, CONFIRM)
        elif frame.msg_type == WSMsgType.CLOSE:
            SUBSCRIBERS.discard(transport)
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        SUBSCRIBERS.discard(transport)


def publish(data: str) -> None:
    payload = data.encode()
    for transport in SUBSCRIBERS:
        transport.send(WSMsgType.TEXT, payload)


def listener_factory(request: WSUpgradeRequest) -> Listener:
    return Listener()


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.cancel)
    trigger = await serve_trigger(args.host, args.http_broadcast_port, publish)
    server = await ws_create_server(listener_factory, args.host, args.port, backlog=4096)
    try:
        await stop
    except asyncio.CancelledError:
        pass
    server.close()
    trigger.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--http_broadcast_port", type=int, default=8090)
    uvloop.run(main(ap.parse_args()))
