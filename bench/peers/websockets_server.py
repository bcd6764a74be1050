"""Bare floor: a broadcast server written as the websockets documentation shows it.

``websockets.asyncio.server.serve`` with a handler per connection; a client that sends a text
frame containing ``"subscribe"`` joins the set of subscribers and gets a confirmation; a
broadcast goes out with ``websockets.asyncio.server.broadcast`` (the frame is encoded once and
written to every connection). Broadcasts arrive on a second port (``_trigger.py``). Defaults
of websockets otherwise (keepalive pings every 20 s, no compression unless the client asks).

    python bench/peers/websockets_server.py --port 8080 --http_broadcast_port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop
from _trigger import serve_trigger
from websockets.asyncio.server import ServerConnection, broadcast, serve

CONFIRM = '{"type":"confirm_subscription"}'
SUBSCRIBERS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            if isinstance(message, str) and '"subscribe"' in message:
                SUBSCRIBERS.add(ws)
                await ws.send(CONFIRM)
    finally:
        SUBSCRIBERS.discard(ws)


def publish(data: str) -> None:
    broadcast(SUBSCRIBERS, data)


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    trigger = await serve_trigger(args.host, args.http_broadcast_port, publish)
    async with serve(handler, args.host, args.port, backlog=4096):
        try:
            await stop
        except asyncio.CancelledError:
            pass
    trigger.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--http_broadcast_port", type=int, default=8090)
    uvloop.run(main(ap.parse_args()))
