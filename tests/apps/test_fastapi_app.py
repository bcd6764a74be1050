"""examples/fastapi_app and pycable.contrib.fastapi: in process (routes, the mounted RPC,
broadcasts captured), then end to end: a real pycable process calling the app under uvicorn, and
the real @anycable/core client receiving what a route broadcast."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from sink import BroadcastSink
from stack import AppProcess, ChannelClient, sdk_env
from starlette.testclient import TestClient

from helpers.server import ServerProcess
from pycable.contrib.fastapi import Broadcast, lifespan, mount
from pycable.identity.signed import derive_key
from pycable.sdk import Application

SECRET = "fastapi-test-secret"
RPC_KEY = derive_key(SECRET, "rpc-cable")


@pytest.fixture(scope="module")
def example(sink: BroadcastSink) -> Iterator[Any]:
    with sdk_env(ANYCABLE_SECRET=SECRET, ANYCABLE_BROADCAST_URL=sink.url):
        yield importlib.import_module("examples.fastapi_app.app")


@pytest.fixture
def client(example: Any) -> Iterator[TestClient]:
    with TestClient(example.api) as c:
        yield c


def token(client: TestClient, user: str) -> str:
    resp = client.post("/tokens", json={"user": user})
    assert resp.status_code == 200
    return str(resp.json()["token"])


class TestMount:
    def test_mount_serves_the_rpc_under_the_path_with_the_secret(self):
        api = FastAPI()
        mount(api, Application(), "/cable-rpc", secret="s3")
        with TestClient(api) as c:
            ok = c.post(
                "/cable-rpc/connect", json={"env": {"url": "http://x/cable"}}, headers={"Authorization": "Bearer s3"}
            )
            assert ok.status_code == 200 and ok.json()["status"] in (1, "SUCCESS")
            assert c.post("/cable-rpc/connect", json={}, headers={"Authorization": "Bearer no"}).status_code == 401

    @pytest.mark.parametrize("path", ["", "_anycable", "/_anycable/"])
    def test_a_bad_mount_path_is_refused(self, path):
        with pytest.raises(ValueError, match="mount path"):
            mount(FastAPI(), Application(), path)

    def test_broadcast_dependency_sends_to_others_from_the_socket_id_header(self, sink):
        api = FastAPI(lifespan=lifespan)

        @api.post("/ping")
        async def ping(broadcast: Broadcast = Depends()) -> dict[str, bool]:  # noqa: B008
            await broadcast("pings", {"n": 1}, to_others=True)
            await broadcast("pings", "raw")
            return {"ok": True}

        with sdk_env(ANYCABLE_BROADCAST_URL=sink.url), TestClient(api) as c:
            before = len(sink.messages())
            assert c.post("/ping", headers={"X-Socket-ID": "sid-1"}).status_code == 200
            assert c.post("/ping").status_code == 200
        assert sink.messages()[before:] == [
            {"stream": "pings", "data": '{"n":1}', "meta": {"exclude_socket": "sid-1"}},
            {"stream": "pings", "data": "raw"},
            {"stream": "pings", "data": '{"n":1}'},
            {"stream": "pings", "data": "raw"},
        ]


class TestExampleInProcess:
    def test_notes_need_a_valid_token(self, client):
        assert client.post("/boards/b1/notes", json={"text": "x"}).status_code == 401
        bad = {"Authorization": "Bearer ann.0000"}
        assert client.post("/boards/b1/notes", json={"text": "x"}, headers=bad).status_code == 401

    def test_bad_input_is_refused(self, client):
        auth = {"Authorization": f"Bearer {token(client, 'ann')}"}
        assert client.post("/boards/b1/notes", json={"text": ""}, headers=auth).status_code == 422
        assert client.post("/boards/b%20c/notes", json={"text": "x"}, headers=auth).status_code == 404
        assert client.post("/tokens", json={"user": "a.b"}).status_code == 422

    def test_a_note_is_stored_and_broadcast(self, client, sink):
        auth = {"Authorization": f"Bearer {token(client, 'ann')}", "X-Socket-ID": "s1"}
        before = len(sink.messages())
        resp = client.post("/boards/b2/notes", json={"text": "hello"}, headers=auth)
        assert resp.status_code == 201
        note = resp.json()
        assert note["user"] == "ann" and note["text"] == "hello"
        assert client.get("/boards/b2/notes").json() == [note]
        [sent] = sink.messages()[before:]
        assert sent["stream"] == "board/b2" and json.loads(sent["data"]) == {"note": note}
        assert sent["meta"] == {"exclude_socket": "s1"}

    def test_connect_authenticates_with_the_token(self, client):
        def connect(query: str) -> dict[str, Any]:
            body = {"env": {"url": f"http://127.0.0.1:8080/cable{query}", "headers": {"REMOTE_ADDR": "127.0.0.1"}}}
            resp = client.post("/_anycable/connect", json=body, headers={"Authorization": f"Bearer {RPC_KEY}"})
            return dict(resp.json())

        assert json.loads(connect(f"?token={token(client, 'bob')}")["identifiers"]) == {"user": "bob"}
        assert connect("?token=bob.forged")["status"] in (2, "FAILURE")
        assert connect("")["status"] in (2, "FAILURE")


@pytest.mark.js
async def test_end_to_end_a_route_broadcast_reaches_the_real_clients_but_not_its_sender():
    """pycable → HTTP RPC → the app; the app's route → HTTP broadcast → pycable → the clients."""
    server = ServerProcess("--secret", SECRET)
    app = AppProcess(
        "examples.fastapi_app.app:api",
        {"ANYCABLE_SECRET": SECRET, "ANYCABLE_BROADCAST_URL": f"http://127.0.0.1:{server.bport}/_broadcast"},
    )
    server.args += ["--rpc_host", f"{app.url}/_anycable"]
    clients: list[ChannelClient] = []
    try:
        app.start()
        server.start()
        tokens = {user: app.request("POST", "/tokens", {"user": user})[1]["token"] for user in ("ann", "bob")}
        for user in ("ann", "bob"):
            clients.append(
                ChannelClient(f"{server.url}?token={tokens[user]}", "BoardChannel", {"board": "e2e"}, name=user)
            )
        ann, bob = clients
        ann_sid = (await ann.event("session"))["sid"]
        await ann.event("subscribed")
        await bob.event("subscribed")

        auth = {"Authorization": f"Bearer {tokens['ann']}"}
        status, first = app.request("POST", "/boards/e2e/notes", {"text": "from ann"}, {**auth, "X-Socket-ID": ann_sid})
        assert status == 201, first
        status, second = app.request("POST", "/boards/e2e/notes", {"text": "to all"}, auth)
        assert status == 201, second
        await bob.wait(lambda e: e["event"] == "message" and e["data"] == {"note": second})
        await ann.wait(lambda e: e["event"] == "message" and e["data"] == {"note": second})
        assert bob.messages() == [{"note": first}, {"note": second}]
        assert ann.messages() == [{"note": second}]  # the first was sent "to others"

        stranger = ChannelClient(f"{server.url}?token=ann.forged", "BoardChannel", {"board": "e2e"}, name="x")
        clients.append(stranger)
        assert (await stranger.event("close"))["reason"] == "unauthorized"
    except Exception:
        print(server.log(), app.log())
        raise
    finally:
        for c in clients:
            c.close()
        server.stop()
        app.stop()
