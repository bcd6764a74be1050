"""Reliable streams and resumable sessions on the memory broker, real server + client."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid

from helpers.client import CableClient, ident
from helpers.server import ServerProcess


def unique() -> str:
    return "r" + uuid.uuid4().hex[:8]


def post(srv: ServerProcess, stream: str, i: int) -> None:
    assert srv.broadcast(json.dumps({"stream": stream, "data": json.dumps({"i": i})}))[0] == 201


def seq(client: CableClient, stream: str) -> list[int]:
    return [m["message"]["i"] for m in client.received if m.get("stream_id") == stream]


async def test_startup_line(public_server):
    assert re.search(
        r"Using in-memory broker \(epoch: \w+, history limit: 100, history ttl: 300s, sessions ttl: 300s\)",
        public_server.log(),
    )


async def test_restore_by_query_and_header_with_traffic_during_reconnect(public_server):
    """Cut, keep broadcasting, resume: every message exactly once, in order, no re-subscribe."""
    srv, stream = public_server, unique()
    c = await CableClient.open(srv.url)
    sid = (await c.welcome())["sid"]
    await c.subscribe(ident(stream), history={"since": 1})
    for i in range(5):
        post(srv, stream, i)
    await c.wait_count(lambda m: m.get("stream_id") == stream, 5)
    last = c.messages(stream)[-1]
    await c.abort()

    stop = threading.Event()
    counter = iter(range(5, 10_000))
    sent: list[int] = []

    def publisher() -> None:  # broadcasts keep flowing during the reconnect itself
        while not stop.is_set() and len(sent) < 200:
            i = next(counter)
            post(srv, stream, i)
            sent.append(i)

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        for attempt, how in enumerate(("query", "header")):
            while len(sent) < 20 * (attempt + 1):
                await asyncio.sleep(0.01)  # let some traffic be missed
            if how == "query":
                d = await CableClient.open(srv.url + f"?sid={sid}")
            else:
                d = await CableClient.open(srv.url, additional_headers={"X-AnyCable-Restore-SID": sid})
            welcome = await d.welcome()
            assert welcome["restored"] is True and welcome["restored_ids"] == [ident(stream)]
            assert welcome["sid"] != sid
            await d.send({"command": "history", "identifier": ident(stream),
                          "history": {"streams": {stream: {"epoch": last["epoch"], "offset": last["offset"]}}}})
            await d.wait_for({"type": "confirm_history"})
            if how == "query":
                await d.wait_for(lambda m: m.get("stream_id") == stream)
                got = seq(d, stream)
                last = d.messages(stream)[-1]
                sid = welcome["sid"]
                await d.abort()
                first_part = seq(c, stream) + got
        stop.set()
        thread.join()
        final = sent[-1]
        await d.wait_for(lambda m: m.get("stream_id") == stream and m["message"]["i"] == final, timeout=10)
        everything = first_part + seq(d, stream)
        assert everything == list(range(final + 1)), "exactly once and in order"
        assert not any(m.get("type") == "confirm_subscription" for m in d.received)
        await d.close()
    finally:
        stop.set()
        thread.join()


async def test_server_restart_rejects_offset_history_and_live_goes_on():
    stream = unique()
    srv = ServerProcess("--public", "--presets", "broker").start()
    port, bport = srv.port, srv.bport
    c = await CableClient.open(srv.url)
    sid = (await c.welcome())["sid"]
    await c.subscribe(ident(stream))
    post(srv, stream, 0)
    first = await c.wait_for(lambda m: m.get("stream_id") == stream)
    srv.stop()
    await c.wait_for({"type": "disconnect", "reason": "server_restart"})
    srv = ServerProcess("--public", "--presets", "broker", port=port, bport=bport).start()
    try:
        d = await CableClient.open(srv.url + f"?sid={sid}")
        assert "restored" not in await d.welcome()
        confirm = await d.subscribe(
            ident(stream), history={"streams": {stream: {"epoch": first["epoch"], "offset": first["offset"]}}}
        )
        assert confirm["type"] == "confirm_subscription"
        await d.wait_for({"type": "reject_history"})
        post(srv, stream, 1)
        live = await d.wait_for(lambda m: m.get("stream_id") == stream)
        assert live["message"] == {"i": 1} and live["epoch"] != first["epoch"]
        await d.close()
    finally:
        srv.stop()


async def test_per_stream_history_settings():
    with ServerProcess("--public", "--broker", "memory", "--history_limit", "2",
                       "--stream_history", "keep/*=limit:50") as srv:
        for stream in ("keep/1", "other"):
            for i in range(10):
                post(srv, stream, i)
        c = await CableClient.open(srv.url)
        await c.welcome()
        await c.subscribe(ident("keep/1"), history={"since": 1})
        await c.wait_for({"type": "confirm_history", "identifier": ident("keep/1")})
        await c.subscribe(ident("other"), history={"since": 1})
        await c.wait_for({"type": "confirm_history", "identifier": ident("other")})
        assert seq(c, "keep/1") == list(range(10))
        assert seq(c, "other") == [8, 9]
        await c.close()
