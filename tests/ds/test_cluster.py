"""Durable Streams on two real nodes sharing Redis: metadata, appends and long-poll wake-ups
cross nodes (the append is a broadcast, so pub/sub carries it to the other node's readers)."""

from __future__ import annotations

import asyncio
import http.client
import json
import uuid
from collections.abc import Iterator

import pytest
import redis

from helpers.redis_server import redis_url
from helpers.server import ServerProcess

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def nodes() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    prefix = f"pycable-test:ds{uuid.uuid4().hex[:8]}:"
    args = ["--public", "--broker", "redis", "--pubsub", "redis", "--redis_url", redis_url(), "--redis_prefix", prefix,
            "--ds", "--ds_poll_interval", "60", "--ds_sse_ttl", "120", "--stream_history", "ds/*=limit:0,ttl:0"]
    a = ServerProcess(*args).start()
    try:
        b = ServerProcess(*args).start()
    except BaseException:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()
    client = redis.Redis.from_url(redis_url())
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def call(srv: ServerProcess, method: str, path: str, body: bytes = b"", **headers: str):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request(method, f"/ds/{path}", body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


async def test_write_on_one_node_read_and_wake_on_the_other(nodes):
    a, b = nodes
    stream = f"ds/{uuid.uuid4().hex[:8]}"
    status, headers, _ = call(a, "PUT", stream, b'[{"n":1}]', content_type="application/json")
    assert status == 201
    status, head, _ = call(b, "HEAD", stream)
    assert status == 200 and head["content-type"] == "application/json"
    assert head["stream-next-offset"] == headers["stream-next-offset"]
    # SSE on node B: its first control event comes once B waits for the stream (registered
    # before the response starts), so the append below must reach it through pub/sub.
    reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
    writer.write(f"GET /ds/{stream}?offset={headers['stream-next-offset']}&live=sse HTTP/1.1\r\n"
                 f"Host: x\r\n\r\n".encode())
    seen = b""
    while b"event: control" not in seen:
        seen += await asyncio.wait_for(reader.read(4096), 30)
    status, _, _ = call(a, "POST", stream, b'{"n":2}', content_type="application/json")
    assert status == 204
    live = b""
    while b"event: data" not in live or not live.endswith(b"\n\n"):
        # Well under the poll interval (60 s): only a wake-up through pub/sub delivers in time.
        live += await asyncio.wait_for(reader.read(4096), 20)
    writer.close()
    assert b'data:[{"n":2}]' in live
    status, _, body = call(b, "GET", stream)
    assert json.loads(body) == [{"n": 1}, {"n": 2}]
    # Producers and closure are shared state: node B sees what node A accepted.
    prod = {"content_type": "application/json", "producer_id": "p", "producer_epoch": "0"}
    assert call(a, "POST", stream, b"3", producer_seq="0", **prod)[0] == 200
    assert call(b, "POST", stream, b"3", producer_seq="0", **prod)[0] == 204  # duplicate, seen on B
    assert call(b, "POST", stream, stream_closed="true")[0] == 204
    status, headers, _ = call(a, "POST", stream, b"4", content_type="application/json")
    assert status == 409 and headers["stream-closed"] == "true"
    assert call(a, "DELETE", stream)[0] == 204
    assert call(b, "GET", stream)[0] == 404
