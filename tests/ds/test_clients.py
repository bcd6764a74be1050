"""Real Durable Streams clients against a real pycable server: the official Node client
(``@durable-streams/client``) in catch-up, long-poll and SSE modes, the Python client
(``durable-streams`` on PyPI), and one stream seen through WebSocket and DS at once."""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import uuid
from pathlib import Path

import pytest

from helpers.client import CableClient, ident
from helpers.server import ServerProcess

HERE = Path(__file__).resolve().parent
pytestmark = [pytest.mark.js]


@pytest.fixture(scope="module")
def server():
    with ServerProcess("--broker", "memory", "--public", "--ds", "--ds_poll_interval", "5",
                       "--stream_history", "ds/*=limit:0,ttl:0") as srv:
        yield srv


def name() -> str:
    return f"ds/{uuid.uuid4().hex[:10]}"


def ds(srv: ServerProcess, method: str, stream: str, body: bytes = b"", **headers: str) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request(method, f"/ds/{stream}", body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def broadcast(srv: ServerProcess, stream: str, data: object) -> None:
    status, _ = srv.broadcast(json.dumps({"stream": stream, "data": json.dumps(data)}))
    assert status == 201


class NodeReader:
    """``node client.mjs``: prints "ready", then one JSON line per batch."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, mode: str, n: int) -> NodeReader:
        node = shutil.which("node")
        if node is None:
            pytest.fail("`node` is not on PATH: the Durable Streams client tests need Node")
        proc = await asyncio.create_subprocess_exec(
            node, str(HERE / "client.mjs"), url, mode, str(n), cwd=HERE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        reader = cls(proc)
        assert await reader.line() == "ready"
        return reader

    async def line(self) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not raw:
            err = await self.proc.stderr.read() if self.proc.stderr else b""
            raise AssertionError(f"the Node client ended early: {err.decode()[-2000:]}")
        return raw.decode().strip()

    async def items(self, n: int) -> list[object]:
        got: list[object] = []
        while len(got) < n:
            batch = json.loads(await self.line())
            assert "error" not in batch, batch
            got.extend(batch["items"])
        assert await asyncio.wait_for(self.proc.wait(), 30) == 0
        return got


@pytest.mark.parametrize("mode", ["catch-up", "long-poll", "sse"])
async def test_node_client(server, mode):
    stream = name()
    url = f"http://127.0.0.1:{server.port}/ds/{stream}"
    assert ds(server, "PUT", stream, b'[{"n":1},{"n":2}]', content_type="application/json")[0] == 201
    if mode == "catch-up":
        reader = await NodeReader.start(url, mode, 2)
        assert await reader.items(2) == [{"n": 1}, {"n": 2}]
        return
    reader = await NodeReader.start(url, mode, 4)
    # Live: a DS append and an application broadcast reach the reader, in order.
    assert ds(server, "POST", stream, b'{"n":3}', content_type="application/json")[0] == 204
    broadcast(server, stream, {"n": 4})
    assert await reader.items(4) == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]


async def test_python_client(server):
    durable_streams = pytest.importorskip("durable_streams")
    stream = name()
    url = f"http://127.0.0.1:{server.port}/ds/{stream}"

    def write_and_read() -> tuple[list[object], bytes, str]:
        handle = durable_streams.DurableStream.create(url, content_type="application/json")
        try:
            handle.append({"a": 1})
            handle.append({"b": 2})
        finally:
            handle.close()
        with durable_streams.stream(url, offset="-1", live=False) as res:
            items = res.read_json()
            offset = res.offset
        binary = f"{url}-bin"
        bhandle = durable_streams.DurableStream.create(binary, content_type="application/octet-stream",
                                                       body=bytes(range(256)))
        bhandle.close()
        with durable_streams.stream(binary, offset="-1", live=False) as res:
            raw = res.read_bytes()
        return items, raw, offset

    items, raw, offset = await asyncio.to_thread(write_and_read)
    assert items == [{"a": 1}, {"b": 2}]
    assert raw == bytes(range(256))

    def long_poll() -> list[object]:
        with durable_streams.stream(url, offset=offset, live="long-poll") as res:
            for item in res.iter_json():
                return [item]
        return []

    poll = asyncio.ensure_future(asyncio.to_thread(long_poll))
    assert ds(server, "POST", stream, b'{"c":3}', content_type="application/json")[0] == 204
    assert await asyncio.wait_for(poll, 30) == [{"c": 3}]


async def test_one_stream_two_views(server):
    """WebSocket subscribers and DS readers see the same messages, offsets and order."""
    stream = name()
    assert ds(server, "PUT", stream, content_type="application/json")[0] == 201
    client = await CableClient.open(server.url)
    try:
        await client.welcome()
        await client.subscribe(ident(stream))
        for i in range(10):
            if i % 2:
                broadcast(server, stream, {"i": i})
            else:
                assert ds(server, "POST", stream, json.dumps({"i": i}).encode(), content_type="application/json")[0] == 204
        await client.wait_count(lambda m: m.get("stream_id") == stream, 10)
        ws = [(m["offset"], m["message"]) for m in client.messages(stream)]
    finally:
        await client.close()
    status, headers, body = ds(server, "GET", stream)
    assert status == 200 and json.loads(body) == [m for _, m in ws] == [{"i": i} for i in range(10)]
    assert headers["stream-next-offset"].startswith(f"{ws[-1][0]:016d}_")
    # A DS reader resuming after the 4th message a WebSocket client saw gets the other 6.
    fourth = headers["stream-next-offset"].replace(f"{ws[-1][0]:016d}", f"{ws[3][0]:016d}")
    status, _, rest = ds(server, "GET", f"{stream}?offset={fourth}")
    assert json.loads(rest) == [m for _, m in ws[4:]]
