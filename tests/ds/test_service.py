"""The Durable Streams service over a real node and memory broker, with no sockets."""

from __future__ import annotations

import asyncio
import base64
import json

import orjson
import pytest

from contract.backends.memory import FakeClock
from pycable.broker.base import HistoryPolicy, StreamRule
from pycable.broker.memory import MemoryBroker
from pycable.ds.service import DSOptions, DSRequest, DSResponse, DurableStreams
from pycable.identity.jwt import encode_jwt
from pycable.identity.signed import sign_stream
from pycable.node.controller import LocalController
from pycable.node.node import Node, NodeConfig
from pycable.protocol import ds as p
from pycable.protocol.broadcast import StreamMessage
from pycable.testing import connect_session, send

KEY = "bkey"


@pytest.fixture
async def env():
    clock = FakeClock()
    broker = MemoryBroker(HistoryPolicy(limit=5, ttl=60, rules=(StreamRule("all/*", 0, 0),)), clock=clock,
                          max_bytes=10_000)
    node = Node(LocalController(noauth=True, public_streams=True), broker, config=NodeConfig(sessions_ttl=0))
    await node.start()
    ds = DurableStreams(node, broker, DSOptions(poll_interval=30, sse_ttl=30, write_key=KEY, max_append=4096),
                        clock=clock, jitter=lambda: 1)
    yield ds, node, broker, clock
    await node.shutdown()


async def call(ds: DurableStreams, method: str, stream: str, body: bytes = b"", query=(), **headers: str) -> DSResponse:
    hdrs = {k.replace("_", "-").lower(): v for k, v in headers.items()}
    if method in ("PUT", "POST", "DELETE"):
        hdrs.setdefault("authorization", f"Bearer {KEY}")
    return await ds.handle(DSRequest(method, stream, list(query), hdrs, body, url=f"http://h/ds/{stream}"))


def offset_of(resp: DSResponse) -> p.Offset:
    parsed = p.parse_offset(resp.header("stream-next-offset") or "")
    assert isinstance(parsed, p.Offset)
    return parsed


async def drain(node: Node) -> None:
    while node.hub._worker is not None:
        await asyncio.shield(node.hub._worker)


async def until_waiting(ds: DurableStreams, stream: str) -> None:
    """Yield to the loop until a reader of *stream* is parked on its wake-up event."""
    while stream not in ds.waiters.counts:
        await asyncio.sleep(0)


class TestOneStreamTwoViews:
    async def test_websocket_and_ds_see_the_same_messages_in_order(self, env):
        ds, node, broker, _ = env
        ident = json.dumps({"channel": "$pubsub", "stream_name": "all/chat"})
        session, conn = await connect_session(node, "s1")
        await send(node, session, {"command": "subscribe", "identifier": ident})
        assert (await call(ds, "PUT", "all/chat", b'{"n":1}', content_type="application/json")).status == 201
        await node.handle_broadcast([StreamMessage("all/chat", '{"n":2}')])  # the application broadcasts
        assert (await call(ds, "POST", "all/chat", b'[{"n":3},{"n":4}]', content_type="application/json")).status == 204
        await drain(node)
        ws = [(m["offset"], m["message"]) for m in conn.stream_messages()]
        read = await call(ds, "GET", "all/chat", query=[("offset", "-1")])
        assert orjson.loads(read.body) == [m for _, m in ws] == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
        assert [o for o, _ in ws] == [1, 2, 3, 4]
        assert offset_of(read) == p.Offset(4, broker.epoch)
        # Resuming from any position a WebSocket client saw gives the rest, in order.
        mid = await call(ds, "GET", "all/chat", query=[("offset", p.encode_offset(broker.epoch, 2))])
        assert orjson.loads(mid.body) == [{"n": 3}, {"n": 4}]

    async def test_history_only_streams_read_as_json(self, env):
        ds, node, broker, _ = env
        await node.handle_broadcast([StreamMessage("news", '{"a":1}'), StreamMessage("news", "plain")])
        read = await call(ds, "GET", "news")
        assert read.status == 200 and read.header("content-type") == "application/json"
        assert orjson.loads(read.body) == [{"a": 1}, "plain"]


class TestLive:
    async def test_long_poll_wakes_on_an_append(self, env):
        ds, node, broker, _ = env
        created = await call(ds, "PUT", "all/lp", content_type="text/plain")
        tail = created.header("stream-next-offset")
        poll = asyncio.ensure_future(call(ds, "GET", "all/lp", query=[("offset", tail), ("live", "long-poll")]))
        await until_waiting(ds, "all/lp")
        await call(ds, "POST", "all/lp", b"hello", content_type="text/plain")
        got = await asyncio.wait_for(poll, 10)
        assert got.status == 200 and got.body == b"hello"
        assert got.header("stream-cursor") and got.header("stream-up-to-date") == "true"
        assert ds.waiters.counts == {} and node.hub.watchers == {}  # nothing left behind

    async def test_long_poll_wakes_on_an_application_broadcast_and_on_close(self, env):
        ds, node, broker, _ = env
        await call(ds, "PUT", "all/j", content_type="application/json")
        poll = asyncio.ensure_future(call(ds, "GET", "all/j", query=[("offset", "now"), ("live", "long-poll")]))
        await until_waiting(ds, "all/j")
        await node.handle_broadcast([StreamMessage("all/j", '{"x":1}')])
        got = await asyncio.wait_for(poll, 10)
        assert orjson.loads(got.body) == [{"x": 1}]
        poll = asyncio.ensure_future(call(ds, "GET", "all/j", query=[("offset", got.header("stream-next-offset")),
                                                                     ("live", "long-poll")]))
        await until_waiting(ds, "all/j")
        closed = await call(ds, "POST", "all/j", stream_closed="true")
        assert closed.status == 204 and closed.header("stream-closed") == "true"
        eof = await asyncio.wait_for(poll, 10)
        assert eof.status == 204 and eof.header("stream-closed") == "true"

    async def test_sse_catch_up_live_and_close(self, env):
        ds, node, broker, _ = env
        await call(ds, "PUT", "all/bin", bytes([0, 1, 255]), content_type="application/octet-stream")
        resp = await call(ds, "GET", "all/bin", query=[("offset", "-1"), ("live", "sse")])
        assert resp.header("content-type") == "text/event-stream"
        assert resp.header("stream-sse-data-encoding") == "base64"
        assert resp.events is not None
        events = resp.events.__aiter__()
        first = (await anext(events)).decode()
        assert f"data:{base64.b64encode(bytes([0, 1, 255])).decode()}\n" in first and '"upToDate":true' in first
        nxt = asyncio.ensure_future(anext(events))
        await call(ds, "POST", "all/bin", b"\x02\x03", content_type="application/octet-stream", stream_closed="true")
        live = (await asyncio.wait_for(nxt, 10)).decode()
        assert "data:AgM=" in live and '"streamClosed":true' in live
        with pytest.raises(StopAsyncIteration):
            await anext(events)
        assert ds.waiters.counts == {}


    async def test_an_sse_response_never_started_holds_nothing(self, env):
        ds, node, _, _ = env
        await call(ds, "PUT", "all/idle", content_type="text/plain")
        resp = await call(ds, "GET", "all/idle", query=[("offset", "now"), ("live", "sse")])
        assert resp.status == 200 and resp.events is not None
        assert ds.waiters.counts == {} and node.hub.watchers == {}
        events = resp.events.__aiter__()
        first = await anext(events)
        assert b'"upToDate":true' in first and ds.waiters.counts == {"all/idle": 1}
        await events.aclose()  # the client went away
        assert ds.waiters.counts == {} and node.hub.watchers == {}


class TestBadInput:
    async def test_offsets(self, env):
        ds, node, broker, _ = env
        await call(ds, "PUT", "s", b"[1,2,3,4,5,6,7]", content_type="application/json")  # limit 5: 1, 2 evicted
        for bad in ("0,1", "abc", "", "../x"):
            assert (await call(ds, "GET", "s", query=[("offset", bad)])).status == 400
        assert (await call(ds, "GET", "s", query=[("offset", "-1"), ("offset", "now")])).status == 400
        assert (await call(ds, "GET", "s", query=[("offset", p.encode_offset(broker.epoch, 99))])).status == 400
        assert (await call(ds, "GET", "s", query=[("offset", p.encode_offset("otherep", 3))])).status == 410
        assert (await call(ds, "GET", "s", query=[("offset", p.encode_offset(broker.epoch, 1))])).status == 410
        ok = await call(ds, "GET", "s", query=[("offset", p.encode_offset(broker.epoch, 2))])
        assert orjson.loads(ok.body) == [3, 4, 5, 6, 7]
        assert (await call(ds, "GET", "nope")).status == 404
        assert (await call(ds, "GET", "s", query=[("live", "sse")])).status == 400
        assert (await call(ds, "GET", "s", query=[("offset", "-1"), ("live", "forever")])).status == 400

    async def test_writes_that_fail_lose_nothing(self, env):
        ds, node, broker, _ = env
        await call(ds, "PUT", "all/w", b'{"keep":1}', content_type="application/json")
        checks = [
            (await call(ds, "POST", "all/w", b"x", content_type="text/plain"), 409),
            (await call(ds, "POST", "all/w", b"{oops", content_type="application/json"), 400),
            (await call(ds, "POST", "all/w", b"[]", content_type="application/json"), 400),
            (await call(ds, "POST", "all/w", b"", content_type="application/json"), 400),
            (await call(ds, "POST", "all/w", b"1"), 400),  # no content type
            (await call(ds, "POST", "all/w", b"[" + b"1," * 4000 + b"1]", content_type="application/json"), 413),
            (await call(ds, "POST", "nope", b"1", content_type="application/json"), 404),
            (await call(ds, "PUT", "all/w", content_type="text/plain"), 409),
            (await call(ds, "PUT", "x", stream_ttl="1", stream_expires_at="2030-01-01T00:00:00Z"), 400),
            (await call(ds, "PUT", "x", stream_forked_from="/all/none"), 404),
            (await call(ds, "POST", "all/w", b"1", content_type="application/json", authorization="Bearer no"), 401),
        ]
        assert [r.status for r, _ in checks] == [s for _, s in checks]
        read = await call(ds, "GET", "all/w")
        assert orjson.loads(read.body) == [{"keep": 1}]

    async def test_producer_violations(self, env):
        ds, node, broker, _ = env
        await call(ds, "PUT", "all/p", content_type="text/plain")

        async def post(body: bytes, epoch: int, seq: int) -> DSResponse:
            return await call(ds, "POST", "all/p", body, content_type="text/plain", producer_id="w",
                              producer_epoch=str(epoch), producer_seq=str(seq))

        assert (await post(b"a", 0, 0)).status == 200
        dup = await post(b"a", 0, 0)
        assert (dup.status, dup.header("producer-seq")) == (204, "0")
        gap = await post(b"c", 0, 2)
        assert (gap.status, gap.header("producer-expected-seq"), gap.header("producer-received-seq")) == (409, "1", "2")
        assert (await post(b"b", 1, 0)).status == 200
        stale = await post(b"z", 0, 1)
        assert (stale.status, stale.header("producer-epoch")) == (403, "1")
        assert (await post(b"z", 2, 5)).status == 400
        partial = await call(ds, "POST", "all/p", b"z", content_type="text/plain", producer_id="w")
        assert partial.status == 400
        assert (await call(ds, "GET", "all/p")).body == b"ab"

    async def test_memory_cap_is_a_clear_error(self, env):
        ds, node, broker, _ = env
        await call(ds, "PUT", "all/big", content_type="application/octet-stream")
        for _ in range(2):
            assert (await call(ds, "POST", "all/big", b"x" * 3000, content_type="application/octet-stream")).status == 204
        full = await call(ds, "POST", "all/big", b"x" * 3000, content_type="application/octet-stream")
        assert full.status == 507 and b"--history_max_bytes" in full.body
        assert len((await call(ds, "GET", "all/big")).body) == 6000


class TestAuth:
    async def make(self, env, **options):
        _, node, broker, clock = env
        node.controller = LocalController(jwt_secret="jwts", enforce_jwt=True, streams_secret="sts")
        return DurableStreams(node, broker, DSOptions(**options), clock=clock)

    async def test_reads_need_a_token_and_a_signed_stream(self, env):
        ds = await self.make(env)
        await env[1].handle_broadcast([StreamMessage("secret", "1")])
        token = encode_jwt('{"user":"u"}', "jwts")
        signed = sign_stream("secret", "sts")
        assert (await call(ds, "GET", "secret", query=[("signed", signed)])).status == 401  # no token
        assert (await call(ds, "GET", "secret", query=[("jid", token)])).status == 401  # not signed
        assert (await call(ds, "GET", "secret", query=[("jid", token), ("signed", sign_stream("other", "sts"))])).status == 401
        assert (await call(ds, "GET", "secret", query=[("jid", token), ("signed", signed)])).status == 200
        assert (await call(ds, "GET", "secret", x_jid=token, x_signed=signed)).status == 200
        skip = await self.make(env, skip_auth=True)
        assert (await call(skip, "GET", "secret", x_signed=signed)).status == 200

    async def test_writes_need_the_key_or_public(self, env):
        closed = await self.make(env)
        denied = await closed.handle(DSRequest("PUT", "s", [], {}, b""))
        assert denied.status == 403
        public = await self.make(env, public=True)
        assert (await public.handle(DSRequest("PUT", "s", [], {}, b""))).status == 201


class TestForks:
    async def test_fork_reads_source_then_its_own_appends(self, env):
        ds, node, broker, _ = env
        await call(ds, "PUT", "all/src", b"one", content_type="text/plain")
        mid = (await call(ds, "POST", "all/src", b"two", content_type="text/plain")).header("stream-next-offset")
        await call(ds, "POST", "all/src", b"three", content_type="text/plain")
        made = await call(ds, "PUT", "all/fork", stream_forked_from="/all/src", stream_fork_offset=mid)
        assert made.status == 201 and made.header("content-type") == "text/plain"  # inherited
        assert made.header("stream-next-offset") == mid  # the same offset space up to the fork point
        assert (await call(ds, "POST", "all/fork", b"-own", content_type="text/plain")).status == 204
        assert (await call(ds, "GET", "all/fork")).body == b"onetwo-own"
        assert (await call(ds, "GET", "all/fork", query=[("offset", mid)])).body == b"-own"
        assert (await call(ds, "GET", "all/src")).body == b"onetwothree"
        again = await call(ds, "PUT", "all/fork", stream_forked_from="/ds/all/src", stream_fork_offset=mid)
        assert again.status == 200
        sub = await call(ds, "PUT", "all/sub", stream_forked_from="all/src", stream_fork_offset=mid,
                         stream_fork_sub_offset="3")
        assert sub.status == 201 and (await call(ds, "GET", "all/sub")).body == b"onetwothr"

    async def test_bad_forks(self, env):
        ds, node, broker, _ = env
        await call(ds, "PUT", "all/s", b"[1,2]", content_type="application/json")
        checks = [
            (await call(ds, "PUT", "f1", stream_forked_from="all/none"), 404),
            (await call(ds, "PUT", "f2", stream_forked_from="all/s", content_type="text/plain"), 409),
            (await call(ds, "PUT", "f3", stream_forked_from="all/s", stream_fork_offset=p.encode_offset(broker.epoch, 9)), 400),
            (await call(ds, "PUT", "f4", stream_forked_from="all/s", stream_fork_offset="bad"), 400),
            (await call(ds, "PUT", "f5", stream_fork_sub_offset="1"), 400),
            (await call(ds, "PUT", "f6", stream_forked_from="all/s", stream_fork_sub_offset="1"), 400),
            (await call(ds, "PUT", "f7", stream_forked_from="all/s", stream_fork_offset=p.encode_offset(broker.epoch, 0),
                        stream_fork_sub_offset="3"), 400),
            (await call(ds, "PUT", "f8", stream_forked_from="all/s", stream_fork_sub_offset="-1"), 400),
        ]
        assert [r.status for r, _ in checks] == [s for _, s in checks]
        assert orjson.loads((await call(ds, "GET", "all/s")).body) == [1, 2]
        assert (await broker.ds_load("all/s")) is not None and p.StreamMeta.loads(await broker.ds_load("all/s")).refs == 0

    async def test_deleting_a_source_with_forks_soft_deletes_it(self, env):
        ds, node, broker, _ = env
        await call(ds, "PUT", "all/a", b"x", content_type="text/plain")
        await call(ds, "PUT", "all/b", stream_forked_from="all/a")
        await call(ds, "PUT", "all/c", stream_forked_from="all/b")
        assert (await call(ds, "DELETE", "all/a")).status == 204
        for method in ("GET", "HEAD", "POST", "DELETE"):
            assert (await call(ds, method, "all/a", b"y", content_type="text/plain")).status == 410
        assert (await call(ds, "PUT", "all/a", content_type="text/plain")).status == 409
        assert (await call(ds, "PUT", "all/d", stream_forked_from="all/a")).status == 409
        assert (await call(ds, "GET", "all/c")).body == b"x"  # forks read on
        assert (await call(ds, "DELETE", "all/b")).status == 204  # soft too: c still forks it
        assert (await call(ds, "DELETE", "all/c")).status == 204  # the last one: b and a go for good
        for name in ("all/a", "all/b", "all/c"):
            assert (await call(ds, "GET", name)).status == 404
        assert (await call(ds, "PUT", "all/a", content_type="text/plain")).status == 201
