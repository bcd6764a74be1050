"""anyt-style scenarios (spec §9.3) against real server processes and real RPC applications:
a gRPC app in Python built from ``anycable.proto``, an HTTP RPC app on
``@anycable/serverless-js``, and the same application on ``pycable.sdk`` over gRPC and over
HTTP RPC (tests/sdk/chat_app.py). Every test runs once per backend.

SETUP: ``RpcApp`` (tests/rpc/apps.py) + ``python -m pycable --rpc_host <app>``.
The apps report every RPC request they get; tests wait for those reports.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator

import pytest

from helpers.client import CableClient
from helpers.server import ServerProcess, free_port
from pycable.identity.signed import derive_key
from rpc.apps import JsClient, RpcApp, node_available, where

SECRET = "rpc-e2e-secret"
RPC_KEY = derive_key(SECRET, "rpc-cable")
BROADCAST_KEY = derive_key(SECRET, "broadcast-cable")

SERVER_ARGS = (
    "--broker", "memory",
    "--secret", SECRET,
    "--headers", "cookie,x-api-token",
    "--proxy-cookies", "user_session",
    "--rpc_request_timeout", "1000",
    "--rpc_command_timeout", "1500",
)  # fmt: skip


def chat(room: str) -> str:
    return json.dumps({"channel": "chat", "room": room})


@pytest.fixture(scope="module", params=["grpc", "http", "sdk-grpc", "sdk-http"])
def backend(request) -> str:
    if request.param == "http" and (why := node_available()):
        pytest.fail(f"{why} (the HTTP RPC tests run a real @anycable/serverless-js app: do not skip them)")
    return request.param


class Stack:
    """An RPC app and a pycable server using it."""

    def __init__(self, kind: str, *extra: str) -> None:
        bport = free_port()  # the SDK app broadcasts there, configured as any SDK app: ANYCABLE_*
        env = {"ANYCABLE_SECRET": SECRET, "ANYCABLE_BROADCAST_URL": f"http://127.0.0.1:{bport}/_broadcast"}
        self.app = RpcApp(kind, secret=RPC_KEY, env=env).start()
        try:
            self.server = ServerProcess("--rpc_host", self.app.rpc_host, *SERVER_ARGS, *extra, bport=bport).start()
        except Exception:
            self.app.stop()
            raise

    def url(self, query: str = "") -> str:
        return self.server.url + (f"?{query}" if query else "")

    def broadcast(self, stream: str, data: object) -> None:
        body = json.dumps({"stream": stream, "data": json.dumps(data)})
        status, out = self.server.broadcast(body, key=BROADCAST_KEY)
        assert status == 201, out

    def remote_disconnect(self, identifiers: str, reconnect: bool = True) -> None:
        body = json.dumps({"command": "disconnect", "payload": {"identifier": identifiers, "reconnect": reconnect}})
        status, out = self.server.broadcast(body, key=BROADCAST_KEY)
        assert status == 201, out

    def close(self) -> None:
        self.server.stop()
        self.app.stop()


@pytest.fixture(scope="module")
def stack(backend) -> Iterator[Stack]:
    s = Stack(backend)
    yield s
    s.close()


@pytest.fixture
async def app(stack):
    """The shared app, answering normally again after each test."""
    yield stack.app
    await stack.app.normal()


_opened: list[CableClient] = []


async def open_client(url: str, **kw) -> CableClient:
    client = await CableClient.open(url, **kw)
    _opened.append(client)
    return client


@pytest.fixture(autouse=True)
async def close_clients():
    """Every client a test opened is closed (also those the server closed) before the
    test's event loop ends, so no socket is left for the garbage collector."""
    yield
    while _opened:
        await _opened.pop().close()


async def connect(stack: Stack, user: str, **kw) -> CableClient:
    client = await open_client(stack.url(f"user={user}"), **kw)
    await client.welcome()
    return client


async def perform(client: CableClient, identifier: str, action: str, **data) -> None:
    await client.send({"command": "message", "identifier": identifier,
                       "data": json.dumps({"action": action, **data})})  # fmt: skip


async def closed(client: CableClient, timeout: float = 5.0) -> int | None:
    await asyncio.wait_for(client.closed.wait(), timeout)
    return client.ws.close_code


def message(pred) -> object:
    return lambda m: "message" in m and pred(m["message"])


class TestConnection:
    async def test_url_headers_and_cookies_reach_connect(self, stack, app):
        """URL, the --headers list (cookie filtered by --proxy-cookies), REMOTE_ADDR and sid."""
        mark = app.mark()
        client = await open_client(
            stack.url("user=ann&extra=1"),
            additional_headers={"Cookie": "user_session=abc; tracking=xyz", "X-API-TOKEN": "tok", "X-Other": "no"},
        )
        welcome = await client.welcome()
        call = await app.wait_call(where("connect"), after=mark)
        env = call["body"]["env"]
        # Go sends the request URL with http(s)://, not ws:// (spec §1.1)
        assert env["url"] == stack.url("user=ann&extra=1").replace("ws://", "http://", 1)
        assert env["headers"] == {"cookie": "user_session=abc", "x-api-token": "tok", "REMOTE_ADDR": "127.0.0.1"}
        assert "istate" not in env
        assert call["sid"] == welcome["sid"] and call["protov"] == "v1"
        if app.kind.endswith("http"):
            assert call["auth"] == f"Bearer {RPC_KEY}"
            assert call["content_type"] == "application/json"
        await client.close()

    async def test_a_rejected_connection_gets_unauthorized_then_a_close(self, stack, app):
        client = await open_client(stack.url())
        msg = await client.wait_for({"type": "disconnect"})
        assert msg["reason"] == "unauthorized"
        assert await closed(client) == 1000

    async def test_connect_error_closes_with_1011_and_no_json(self, stack, app):
        await app.erroring()
        client = await open_client(stack.url("user=err"))
        assert await closed(client) == 1011
        assert client.received == []

    async def test_connect_slower_than_the_request_timeout_closes_with_1011(self, stack, app):
        await app.slow(1300)  # --rpc_request_timeout 1000
        client = await open_client(stack.url("user=slow"))
        assert await closed(client) == 1011
        assert client.received == []

    async def test_remote_disconnect(self, stack, app):
        client = await connect(stack, "rita")
        mark = app.mark()
        await client.subscribe(chat("r1"))
        identifiers = (await app.wait_call(where("command"), after=mark))["body"]["connection_identifiers"]
        stack.remote_disconnect(identifiers, reconnect=True)
        msg = await client.wait_for({"type": "disconnect"})
        assert msg == {"type": "disconnect", "reason": "remote", "reconnect": True}
        assert await closed(client) == 1000
        call = await app.wait_call(where("disconnect", identifiers=identifiers), after=mark)
        assert call["body"]["subscriptions"] == [chat("r1")]


class TestChannels:
    async def test_subscribe_transmissions_streams_and_actions(self, stack, app):
        """Confirmation and `subscribed` transmissions come from the app; the room streams; actions answer."""
        client = await connect(stack, "bob")
        ident = chat("c1")
        assert await client.subscribe(ident) == {"identifier": ident, "type": "confirm_subscription"}
        hello = await client.wait_for(message(lambda m: "hello" in m))
        assert hello == {"identifier": ident, "message": {"hello": "c1", "user": "bob"}}
        stack.broadcast("room:c1", {"text": "hi"})
        live = await client.wait_for(message(lambda m: m == {"text": "hi"}))
        assert live["identifier"] == ident and live["stream_id"] == "room:c1"
        await perform(client, ident, "echo", text="pong")
        await client.wait_for(message(lambda m: m == {"echo": "pong"}))
        await client.close()

    async def test_rejected_subscription(self, stack, app):
        client = await connect(stack, "bob")
        ident = json.dumps({"channel": "chat"})
        assert await client.subscribe(ident) == {"identifier": ident, "type": "reject_subscription"}
        await client.close()

    async def test_channel_state_is_kept_and_present_in_unsubscribe(self, stack, app):
        client = await connect(stack, "cara")
        ident = chat("s1")
        await client.subscribe(ident)
        for n in (1, 2, 3):
            await perform(client, ident, "count")
            await client.wait_for(message(lambda m, n=n: m == {"count": n}))
        mark = app.mark()
        await client.send({"command": "unsubscribe", "identifier": ident})
        call = await app.wait_call(where("command", command="unsubscribe"), after=mark)
        state = app.state_in_command(call, ident)
        assert (state["room"], str(state["count"])) == ("s1", "3")
        # Unsubscribed: the room's broadcasts stop (a later broadcast on another
        # subscription is the marker that the first one would have arrived by now).
        await client.subscribe(chat("s1-marker"))
        stack.broadcast("room:s1", "after-unsubscribe")
        stack.broadcast("room:s1-marker", "marker")
        await client.wait_for(message(lambda m: m == "marker"))
        assert not any(m.get("message") == "after-unsubscribe" for m in client.received)
        await client.close()

    async def test_disconnect_carries_identifiers_subscriptions_and_all_state(self, stack, app):
        client = await connect(stack, "dora")
        one, two = chat("d1"), chat("d2")
        await client.subscribe(one)
        await client.subscribe(two)
        await perform(client, two, "count")
        await client.wait_for(message(lambda m: m == {"count": 1}))
        welcome_sid = client.received[0]["sid"]
        await client.close()
        call = await app.wait_call(lambda c: c["method"] == "disconnect" and c["sid"] == welcome_sid)
        body = call["body"]
        assert json.loads(body["identifiers"]) == {"user": "dora"}
        assert sorted(body["subscriptions"]) == sorted([one, two])
        assert body["env"]["cstate"]["user"] == "dora"
        assert all(isinstance(v, str) for v in body["env"]["istate"].values()), "JSON-encoded per identifier"
        assert {k: str(v) for k, v in app.state_in_disconnect(call, two).items()} == {"room": "d2", "count": "1"}
        assert {k: str(v) for k, v in app.state_in_disconnect(call, one).items()} == {"room": "d1", "count": "0"}
        assert len(app.calls(lambda c: c["method"] == "disconnect" and c["sid"] == welcome_sid)) == 1

    async def test_stream_from_stop_stream_and_stop_all(self, stack, app):
        client = await connect(stack, "eve")
        ident, marker = chat("e1"), chat("e-marker")
        await client.subscribe(ident)
        await client.subscribe(marker)
        await perform(client, ident, "follow", stream="extra")
        await perform(client, ident, "echo", text="followed")  # commands run in order
        await client.wait_for(message(lambda m: m == {"echo": "followed"}))
        stack.broadcast("extra", "x1")
        await client.wait_for(message(lambda m: m == "x1"))
        await perform(client, ident, "unfollow", stream="extra")  # stopped_streams
        await perform(client, ident, "echo", text="unfollowed")
        await client.wait_for(message(lambda m: m == {"echo": "unfollowed"}))
        stack.broadcast("extra", "x2")
        stack.broadcast("room:e1", "still")
        await client.wait_for(message(lambda m: m == "still"))
        await perform(client, ident, "leave")  # stop_streams
        await perform(client, ident, "echo", text="left")
        await client.wait_for(message(lambda m: m == {"echo": "left"}))
        stack.broadcast("room:e1", "gone")
        stack.broadcast("room:e-marker", "marker")
        await client.wait_for(message(lambda m: m == "marker"))
        got = [m.get("message") for m in client.received]
        assert "x2" not in got and "gone" not in got
        await client.close()

    async def test_connection_state(self, stack, app):
        client = await connect(stack, "fay")
        ident = chat("f1")
        await client.subscribe(ident)
        await perform(client, ident, "setc", key="theme", value="dark")
        await perform(client, ident, "showc")
        msg = await client.wait_for(message(lambda m: "cstate" in m))
        assert msg["message"]["cstate"]["theme"] == "dark"
        assert msg["message"]["cstate"]["user"] == "fay"
        await client.close()

    async def test_disconnect_true_closes_the_connection(self, stack, app):
        client = await connect(stack, "gus")
        ident = chat("g1")
        await client.subscribe(ident)
        await perform(client, ident, "kick")
        await client.wait_for(message(lambda m: m == {"bye": True}))
        assert await closed(client) == 1000

    async def test_a_failing_command_sends_nothing(self, stack, app):
        client = await connect(stack, "hal")
        ident = chat("h1")
        await client.subscribe(ident)
        await app.erroring()
        mark = app.mark()
        await perform(client, ident, "echo", text="lost")
        await app.wait_call(where("command", command="message"), after=mark)
        await app.normal()
        await perform(client, ident, "echo", text="back")
        await client.wait_for(message(lambda m: m == {"echo": "back"}))
        assert not any(m.get("message") == {"echo": "lost"} for m in client.received)
        assert not client.closed.is_set()
        await client.close()

    async def test_built_in_channels_stay_local(self, stack, app):
        """Signed streams work with RPC on, with no RPC Command."""
        from pycable.identity.signed import sign_stream

        client = await connect(stack, "ivy")
        mark = app.mark()
        ident = json.dumps({"channel": "$pubsub", "signed_stream_name": sign_stream("local", SECRET)})
        assert (await client.subscribe(ident))["type"] == "confirm_subscription"
        stack.broadcast("local", "hello")
        await client.wait_for(message(lambda m: m == "hello"))
        assert not any(c["method"] == "command" for c in app.calls()[mark:])
        await client.close()

    async def test_a_slow_rpc_does_not_delay_broadcasts(self, stack, app):
        """While a Connect and a Command hang in the app, subscribed clients get broadcasts."""
        client = await connect(stack, "jay")
        ident = chat("j1")
        await client.subscribe(ident)
        mark = app.mark()
        await app.slow(600)  # well inside --rpc_request_timeout 1000
        waiting = asyncio.create_task(open_client(stack.url("user=late")))
        await perform(client, ident, "echo", text="slow")
        await app.wait_calls(lambda c: c["method"] in ("connect", "command"), 2, after=mark)
        stack.broadcast("room:j1", "fast")
        await client.wait_for(message(lambda m: m == {"echo": "slow"}))
        got = [m.get("message") for m in client.received]
        assert "fast" in got and got.index("fast") < got.index({"echo": "slow"}), "the broadcast waited for the RPC"
        late = await waiting
        await late.welcome()
        await late.close()
        await client.close()


class TestRPCDown:
    async def test_app_down_then_back(self, backend):
        """Connect fails with 1011 (after retries) while the app is down; connected clients keep
        receiving broadcasts; once the app is back, new connections work again."""
        s = Stack(backend)
        try:
            client = await connect(s, "kim")
            ident = chat("k1")
            await client.subscribe(ident)
            s.app.kill()
            started = time.monotonic()
            refused = await open_client(s.url("user=down"))
            assert await closed(refused) == 1011
            assert refused.received == []
            assert time.monotonic() - started >= 1.0, "retried for --rpc_command_timeout (1500 ms)"
            s.broadcast("room:k1", "still-here")
            await client.wait_for(message(lambda m: m == "still-here"))
            s.app.start()
            back = await connect(s, "back")
            await back.close()
            await client.close()
        finally:
            s.close()


@pytest.fixture(scope="module")
def restore_stack(backend) -> Iterator[Stack]:
    s = Stack(backend, "--rpc_restore")
    yield s
    s.close()


class TestRestore:
    async def _session(self, s: Stack, user: str) -> tuple[str, str]:
        client = await connect(s, user)
        sid = client.received[0]["sid"]
        ident = chat(f"{user}-room")
        await client.subscribe(ident)
        await perform(client, ident, "count")
        await client.wait_for(message(lambda m: m == {"count": 1}))
        await client.close()
        await s.app.wait_call(lambda c: c["method"] == "disconnect" and c["sid"] == sid)
        return sid, ident

    async def test_restore_makes_no_connect_call(self, stack, app):
        old_sid, ident = await self._session(stack, "lea")
        mark = app.mark()
        client = await open_client(stack.url(f"user=lea&sid={old_sid}"))
        welcome = await client.welcome()
        assert welcome["restored"] is True and welcome["restored_ids"] == [ident]
        # As the JS client does after a restore: ask for what was missed (here: nothing),
        # which releases the live messages held for this subscription.
        await client.send({"command": "history", "identifier": ident, "history": {}})
        stack.broadcast("room:lea-room", "after-restore")  # no resubscribe needed
        await client.wait_for(message(lambda m: m == "after-restore"))
        await perform(client, ident, "count")  # the state survived: 1 → 2
        await client.wait_for(message(lambda m: m == {"count": 2}))
        await app.wait_call(where("command"), after=mark)  # its report may trail the answer
        later = app.calls()[mark:]
        assert [c["method"] for c in later] == ["command"], "no Connect, no Restore without --rpc_restore"
        assert later[0]["sid"] == welcome["sid"] != old_sid
        await client.close()

    async def test_rpc_restore_sends_exactly_one_restore(self, restore_stack):
        s = restore_stack
        old_sid, ident = await self._session(s, "max")
        mark = s.app.mark()
        client = await open_client(s.url(f"user=max&sid={old_sid}"))
        welcome = await client.welcome()
        assert welcome["restored"] is True
        # The Restore call precedes any Command of the restored session: once this
        # Command arrives, every Restore for the restore has been made.
        await perform(client, ident, "count")
        await client.wait_for(message(lambda m: m == {"count": 2}))
        await s.app.wait_call(where("command"), after=mark)  # its report may trail the answer
        later = s.app.calls()[mark:]
        assert [c["method"] for c in later] == ["restore", "command"]
        restore = later[0]
        body = restore["body"]
        assert restore["sid"] == welcome["sid"] and body["sid"] == welcome["sid"]
        assert body["restored_sid"] == old_sid
        assert json.loads(body["identifiers"]) == {"user": "max"}
        assert body["subscriptions"] == [ident]
        assert body["env"]["cstate"]["user"] == "max"
        assert {k: str(v) for k, v in s.app.state_in_disconnect(restore, ident).items()} == {
            "room": "max-room",
            "count": "1",
        }
        # The sid is a bearer secret: redacted from the URL the application sees (it gets
        # restored_sid on its own).
        assert body["env"]["url"] == s.url("user=max&sid=[REDACTED]").replace("ws://", "http://", 1)
        await client.close()
        await s.app.wait_call(lambda c: c["method"] == "disconnect" and c["sid"] == welcome["sid"])
        assert len(s.app.calls(where("restore", restored_sid=old_sid))) == 1

    async def test_js_client_restore(self, restore_stack):
        """The real @anycable/core client: its socket is cut, it reconnects with its sid and is
        restored: one Connect in all, one Restore, and its channel keeps working."""
        if why := node_available():
            pytest.fail(why)
        s = restore_stack
        mark = s.app.mark()
        js = JsClient(s.url("user=jsuser"), "js-room")
        try:
            await js.wait_event(lambda e: e["event"] == "subscribed")
            first = await s.app.wait_call(where("connect"), after=mark)
            js.send(cmd="perform", action="count")
            await js.wait_event(lambda e: e["event"] == "message" and e["data"] == {"count": 1})
            n = len(js.events)
            js.send(cmd="cut")
            await js.wait_event(lambda e: e["event"] == "connect" and e["restored"], after=n)
            js.send(cmd="perform", action="count")  # the channel state survived: 1 → 2
            await js.wait_event(lambda e: e["event"] == "message" and e["data"] == {"count": 2})
            await s.app.wait_calls(where("command", command="message"), 2, after=mark)  # reports may trail
            later = s.app.calls()[mark:]
            connects = [c for c in later if c["method"] == "connect"]
            restores = [c for c in later if c["method"] == "restore"]
            assert connects == [first], "the restore made no second Connect call"
            assert len(restores) == 1
            assert restores[0]["body"]["restored_sid"] == first["sid"]
            assert restores[0]["body"]["subscriptions"] == [
                json.dumps({"channel": "chat", "room": "js-room"}, separators=(",", ":"))
            ]
            # No Command for the subscription either: the restored one is reused.
            subscribes = [c for c in later if c["method"] == "command" and c["body"]["command"] == "subscribe"]
            assert len(subscribes) == 1
            assert not [e for e in js.events if e["event"] == "log" and e["level"] == "error"]
        finally:
            js.close()


class TestShutdown:
    async def test_shutdown_makes_one_disconnect_call_per_client(self, backend):
        """features/shutdown.testfile: 3 open clients, --disconnect_mode always and
        --disconnect_rate 1: stopping the server gives exactly 3 Disconnect calls."""
        s = Stack(backend, "--disconnect_mode", "always", "--disconnect_rate", "1", "--shutdown_timeout", "5")
        try:
            clients = [await connect(s, f"user{i}") for i in range(3)]
            sids = {c.received[0]["sid"] for c in clients}
            s.server.signal(signal.SIGTERM)
            assert await asyncio.to_thread(s.server.wait, 15) == 0
            s.app.stop()  # all its reports are read
            calls = s.app.calls(where("disconnect"))
            assert {c["sid"] for c in calls} == sids and len(calls) == 3
            for c in clients:
                msg = await c.wait_for({"type": "disconnect"})
                assert msg == {"type": "disconnect", "reason": "server_restart", "reconnect": True}
        finally:
            s.close()
