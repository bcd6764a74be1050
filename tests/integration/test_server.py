"""A real server process and real WebSocket/HTTP clients: handshake, protocol, shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from helpers.client import CableClient, ident
from helpers.server import ServerProcess


def unique() -> str:
    return "s" + uuid.uuid4().hex[:8]


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


class TestHandshake:
    async def test_subprotocol_negotiation_and_version_header(self, public_server):
        for offered, chosen in (
            (["actioncable-v1-ext-json"], "actioncable-v1-ext-json"),
            (["actioncable-v1-json"], "actioncable-v1-json"),
            (["actioncable-v1-json", "actioncable-v1-ext-json"], "actioncable-v1-ext-json"),
        ):
            async with connect(public_server.url, subprotocols=offered) as ws:
                assert ws.subprotocol == chosen
                assert ws.response.headers["X-AnyCable-Version"]
                assert json.loads(await ws.recv())["type"] == "welcome"

    async def test_no_subprotocol_is_plain_v1_json(self, public_server):
        async with connect(public_server.url) as ws:
            assert ws.subprotocol is None
            welcome = json.loads(await ws.recv())
            assert welcome["type"] == "welcome" and welcome["sid"]

    async def test_unknown_path_is_404_and_health_answers(self, public_server):
        with pytest.raises(InvalidStatus) as info:
            async with connect(public_server.url.replace("/cable", "/nope")):
                pass
        assert info.value.response.status_code == 404
        status, body = public_server.get("/health")
        assert status == 200 and b"stayin' alive" in body

    async def test_pings_carry_increasing_integer_timestamps(self, public_server):
        c = await CableClient.open(public_server.url + "?pi=0.2&ptp=ms")
        pings = await c.wait_count({"type": "ping"}, 2, timeout=3)
        assert all(isinstance(p["message"], int) for p in pings)
        assert pings[1]["message"] > pings[0]["message"] > 10**12  # milliseconds
        await c.close()

    async def test_client_ping_gets_pong(self, public_server):
        c = await CableClient.open(public_server.url)
        await c.welcome()
        await c.send({"command": "ping"})
        await c.wait_for({"type": "pong"})
        await c.close()


class TestDelivery:
    async def test_http_broadcasts_arrive_in_order(self, public_server):
        stream = unique()
        c = await CableClient.open(public_server.url)
        await c.welcome()
        assert (await c.subscribe(ident(stream)))["type"] == "confirm_subscription"
        for i in range(10):
            assert public_server.broadcast(json.dumps({"stream": stream, "data": json.dumps({"i": i})}))[0] == 201
        batch = [{"stream": stream, "data": json.dumps({"i": i})} for i in range(10, 15)]
        assert public_server.broadcast(json.dumps(batch))[0] == 201
        got = await c.wait_count(lambda m: m.get("stream_id") == stream, 15)
        assert [m["message"]["i"] for m in got] == list(range(15))
        assert [m["offset"] for m in got] == list(range(1, 16))
        await c.close()

    async def test_transient_and_exclude_socket(self, public_server):
        stream = unique()
        a, b = await CableClient.open(public_server.url), await CableClient.open(public_server.url)
        sid_a = (await a.welcome())["sid"]
        await b.welcome()
        for c in (a, b):
            await c.subscribe(ident(stream))
        public_server.broadcast(json.dumps({"stream": stream, "data": "1", "meta": {"exclude_socket": sid_a}}))
        public_server.broadcast(json.dumps({"stream": stream, "data": "2", "meta": {"transient": True}}))
        public_server.broadcast(json.dumps({"stream": stream, "data": "3"}))
        got_b = await b.wait_count(lambda m: "message" in m and m.get("identifier") == ident(stream), 3)
        assert [m["message"] for m in got_b] == [1, 2, 3]
        assert "offset" not in got_b[1]
        await a.wait_for(lambda m: m.get("message") == 3)
        assert [m["message"] for m in a.messages()] == [2, 3] or [m.get("message") for m in a.received
                                                                     if "message" in m and m.get("type") is None] == [2, 3]
        for c in (a, b):
            await c.close()

    async def test_remote_disconnect_closes_every_session_with_the_identifiers(self):
        with ServerProcess("--noauth", "--public_streams") as srv:
            a, b = await CableClient.open(srv.url), await CableClient.open(srv.url)
            sid_a = (await a.welcome())["sid"]
            await b.welcome()
            body = {"command": "disconnect", "payload": {"identifier": json.dumps({"sid": sid_a}, separators=(",", ":")), "reconnect": True}}
            assert srv.broadcast(json.dumps(body))[0] == 201
            msg = await a.wait_for({"type": "disconnect"})
            assert msg == {"type": "disconnect", "reason": "remote", "reconnect": True}
            await asyncio.wait_for(a.closed.wait(), 5)
            assert a.ws.close_code == 1000
            assert not b.closed.is_set()
            await b.close()


class TestBadInput:
    async def test_malformed_frames_are_dropped_and_the_connection_kept(self, public_server):
        stream = unique()
        c = await CableClient.open(public_server.url)
        await c.welcome()
        for bad in ["nope", "[]", '{"command":"fly"}', '{"command":"subscribe","identifier":{"x":1}}']:
            await c.send(bad)
        await c.ws.send(b"\x00binary")
        assert (await c.subscribe(ident(stream)))["type"] == "confirm_subscription"
        public_server.broadcast(json.dumps({"stream": stream, "data": "1"}))
        await c.wait_for(lambda m: m.get("message") == 1)
        await c.close()

    async def test_a_flood_of_malformed_frames_gets_invalid_request_and_1007(self, public_server):
        c = await CableClient.open(public_server.url)
        await c.welcome()
        for _ in range(11):
            try:
                await c.send("garbage")
            except ConnectionClosed:
                break
        msg = await c.wait_for({"type": "disconnect"})
        assert msg == {"type": "disconnect", "reason": "invalid_request", "reconnect": False}
        await asyncio.wait_for(c.closed.wait(), 5)
        assert c.ws.close_code == 1007

    async def test_oversized_frame_closes_with_1009(self):
        with ServerProcess("--public", "--max_message_size", "1024") as srv:
            c = await CableClient.open(srv.url)
            await c.welcome()
            await c.send(json.dumps({"command": "subscribe", "identifier": "x" * 2000}))
            await asyncio.wait_for(c.closed.wait(), 5)
            assert c.ws.close_code == 1009
            # The server goes on serving others.
            d = await CableClient.open(srv.url)
            await d.welcome()
            await d.close()

    async def test_a_fragmented_message_is_reassembled(self, public_server):
        c = await CableClient.open(public_server.url)
        await c.welcome()
        cmd = json.dumps({"command": "subscribe", "identifier": ident("frag")})
        await c.ws.send([cmd[:10], cmd[10:30], cmd[30:]])  # websockets sends the parts as fragments
        assert (await c.wait_for({"type": "confirm_subscription"}))["identifier"] == ident("frag")
        await c.close()

    async def test_an_oversized_http_body_is_413_without_buffering(self, public_server):
        """A body over 16 MiB is refused as soon as it passes the limit, not read into memory."""
        rss_before = _rss_kb(public_server.proc.pid)
        reader, writer = await asyncio.open_connection("127.0.0.1", public_server.bport)
        writer.write(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 268435456\r\n\r\n")
        chunk = b"x" * (1 << 20)
        sent = 0
        try:
            for _ in range(256):  # up to 256 MiB, stopped by the server
                writer.write(chunk)
                await writer.drain()
                sent += 1
        except (ConnectionError, OSError):
            pass
        try:
            reply = await asyncio.wait_for(reader.read(), 10)
        except ConnectionError:  # closed with our bytes unread: the 413 may be lost to the reset
            reply = b""
        writer.close()
        assert reply.startswith(b"HTTP/1.1 413") or reply == b"", reply[:80]
        assert sent < 200, "the server read on after the limit"
        assert _rss_kb(public_server.proc.pid) - rss_before < 48 * 1024, "the body was buffered"

    async def test_an_oversized_url_is_refused(self, public_server):
        status, _ = public_server.request("GET", "/health?" + "x" * (80 << 10))
        assert status == 414

    @pytest.mark.parametrize(
        ("body", "status"),
        [
            ('{"stream":', 400),
            ("not json at all", 400),
            ("42", 422),
            ('{"stream":"a"}', 422),
            ('{"stream":"a","data":{"x":1}}', 422),
            ('[{"stream":"a","data":"1"},{"oops":1}]', 422),
            ('{"command":"explode"}', 422),
        ],
    )
    async def test_bad_broadcast_bodies_publish_nothing(self, public_server, body, status):
        stream = unique()
        c = await CableClient.open(public_server.url)
        await c.welcome()
        await c.subscribe(ident(stream))
        got_status, got_body = public_server.broadcast(body.replace('"a"', json.dumps(stream)))
        assert got_status == status
        assert "error" in json.loads(got_body)
        public_server.broadcast(json.dumps({"stream": stream, "data": '"marker"'}))
        first = await c.wait_for(lambda m: "message" in m and m.get("type") is None)
        assert first["message"] == "marker", "nothing of the bad body was published"
        await c.close()

    async def test_get_on_broadcast_endpoint_is_422(self, public_server):
        assert public_server.request("GET", "/_broadcast")[0] == 422


class TestBroadcastKey:
    async def test_key_derived_from_secret_on_main_port(self):
        from pycable.identity.signed import derive_key

        with ServerProcess("--secret", "s3Krit", "--noauth", "--public_streams", "--http_broadcast_port", "0") as srv:
            key = derive_key("s3Krit", "broadcast-cable")
            body = json.dumps({"stream": "x", "data": "1"})
            assert srv.broadcast(body, port=srv.port)[0] == 401
            assert srv.broadcast(body, key="wrong", port=srv.port)[0] == 401
            assert srv.broadcast(body, key=key, port=srv.port)[0] == 201

    async def test_explicit_key_and_none(self):
        with ServerProcess("--noauth", "--broadcast_key", "k1") as srv:
            assert srv.broadcast('{"stream":"x","data":"1"}', key="k1")[0] == 201
            assert srv.broadcast('{"stream":"x","data":"1"}')[0] == 401
        with ServerProcess("--noauth", "--secret", "s", "--broadcast_key", "none") as srv:
            assert srv.broadcast('{"stream":"x","data":"1"}')[0] == 201


class TestSlowClient:
    async def test_a_client_that_stops_reading_is_cut_and_others_are_not_delayed(self):
        with ServerProcess("--public", "--ws_max_pending_size", "65536") as srv:
            stream = unique()
            slow = await CableClient.open(srv.url, max_size=None)
            fast = await CableClient.open(srv.url)
            await slow.welcome()
            await fast.welcome()
            await slow.subscribe(ident(stream))
            await fast.subscribe(ident(stream))
            slow.ws.transport.pause_reading()  # the client stops reading
            big = "x" * 32000
            n = 800  # ~25 MB: far over the cap and over the kernel's socket buffers
            for i in range(0, n, 50):
                batch = [{"stream": stream, "data": json.dumps({"i": j, "pad": big})} for j in range(i, i + 50)]
                # From a thread: the fast client's reader runs on this loop meanwhile.
                assert (await asyncio.to_thread(srv.broadcast, json.dumps(batch)))[0] == 201
            got = await fast.wait_count(lambda m: m.get("identifier") == ident(stream) and "message" in m, n, timeout=30)
            assert [m["message"]["i"] for m in got] == list(range(n))
            slow.ws.transport.resume_reading()
            await asyncio.wait_for(slow.closed.wait(), 10)
            assert "too_slow" in srv.log()  # its disconnect message may sit in the unread buffer
            await fast.close()


class TestShutdown:
    async def test_sigterm_sends_server_restart_and_1001(self):
        srv = ServerProcess("--public").start()
        try:
            clients = [await CableClient.open(srv.url) for _ in range(3)]
            for c in clients:
                await c.welcome()
            srv.signal(signal.SIGTERM)
            for c in clients:
                msg = await c.wait_for({"type": "disconnect"})
                assert msg == {"type": "disconnect", "reason": "server_restart", "reconnect": True}
                await asyncio.wait_for(c.closed.wait(), 5)
                assert c.ws.close_code == 1001
            assert await asyncio.to_thread(srv.wait, 10) == 0
        finally:
            srv.kill()


class TestLimits:
    async def test_max_conn_and_allowed_origins(self):
        with ServerProcess("--public", "--max-conn", "1", "--allowed_origins", "*.example.com") as srv:
            a = await CableClient.open(srv.url, origin="https://app.example.com")
            await a.welcome()
            with pytest.raises(InvalidStatus) as info:
                await connect(srv.url, origin="https://app.example.com")
            assert info.value.response.status_code == 503
            await a.close()
            await asyncio.wait_for(a.closed.wait(), 5)
            with pytest.raises(InvalidStatus) as info:
                await connect(srv.url, origin="https://evil.test")
            assert info.value.response.status_code == 403

    async def test_pong_timeout_applies_to_ext_sessions(self):
        with ServerProcess("--public", "--pong_timeout", "0.5") as srv:
            ext = await CableClient.open(srv.url + "?pi=0.3")
            plain = await CableClient.open(srv.url + "?pi=0.3", protocol="actioncable-v1-json")
            msg = await ext.wait_for({"type": "disconnect"}, timeout=5)
            assert msg == {"type": "disconnect", "reason": "no_pong", "reconnect": True}
            await plain.wait_count({"type": "ping"}, 4, timeout=5)
            assert not plain.closed.is_set()
            await plain.close()
