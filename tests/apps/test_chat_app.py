"""examples/chat in process: the page, the login and the app's answers to pycable's HTTP RPC
(docs/rpc.md's JSON), with broadcasts captured by a stand-in endpoint. The whole stack in a real
browser is tests/apps/test_chat_browser.py."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sink import BroadcastSink
from stack import sdk_env
from starlette.testclient import TestClient

from pycable.identity.signed import derive_key

SECRET = "chat-app-test-secret"
RPC_KEY = derive_key(SECRET, "rpc-cable")
BROADCAST_KEY = derive_key(SECRET, "broadcast-cable")
SUCCESS, FAILURE = (1, "SUCCESS"), (2, "FAILURE")
LOBBY = json.dumps({"channel": "ChatChannel", "room": "lobby"})


@pytest.fixture(scope="module")
def chat(sink: BroadcastSink) -> Iterator[Any]:
    with sdk_env(ANYCABLE_SECRET=SECRET, ANYCABLE_BROADCAST_URL=sink.url, CHAT_TEST_MODE="1"):
        yield importlib.import_module("examples.chat.app")


@pytest.fixture
def client(chat: Any) -> Iterator[TestClient]:
    with TestClient(chat.create_app(), base_url="http://127.0.0.1:8000") as c:
        yield c


def login(client: TestClient, name: str) -> str:
    resp = client.post("/login", data={"name": name}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/"
    cookie = resp.cookies["chat_session"]
    assert "HttpOnly" in resp.headers["set-cookie"] and "SameSite=lax" in resp.headers["set-cookie"]
    return str(cookie)


def rpc(client: TestClient, kind: str, body: dict[str, Any], key: str = RPC_KEY) -> dict[str, Any]:
    resp = client.post(f"/_anycable/{kind}", json=body, headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


def env(cookie: str | None) -> dict[str, Any]:
    headers = {"REMOTE_ADDR": "127.0.0.1"}
    if cookie is not None:
        headers["cookie"] = f"chat_session={cookie}; other=1"
    return {"url": "http://127.0.0.1:8080/cable", "headers": headers}


def connect(client: TestClient, cookie: str | None) -> dict[str, Any]:
    return rpc(client, "connect", {"env": env(cookie)})


def command(client: TestClient, ids: str, command: str, identifier: str, **data: Any) -> dict[str, Any]:
    body = {"command": command, "identifier": identifier, "connection_identifiers": ids, "env": env(None)}
    if data:
        body["data"] = json.dumps(data)
    return rpc(client, "command", body)


def transmitted(reply: dict[str, Any]) -> list[Any]:
    return [json.loads(t) for t in reply.get("transmissions", [])]


class TestPage:
    def test_without_a_session_the_page_is_the_login_form(self, client):
        page = client.get("/")
        assert page.status_code == 200
        assert '<form id="login" method="post" action="/login">' in page.text
        assert "/static/chat.js" not in page.text

    def test_login_sets_a_signed_cookie_and_the_page_shows_the_chat(self, client):
        login(client, "  ann  ")
        page = client.get("/?room=dev")
        assert 'data-room="dev" data-user="ann"' in page.text
        assert '<script type="module" src="/static/chat.js"></script>' in page.text
        assert '<meta name="action-cable-url" content="ws://127.0.0.1:8080/cable">' in page.text

    def test_everything_the_page_loads_is_served_by_the_app(self, client):
        login(client, "ann")
        page = client.get("/").text
        assert "http://" not in page.replace("ws://127.0.0.1:8080/cable", "") and "https://" not in page
        bundle = client.get("/static/chat.js")
        assert bundle.status_code == 200 and "javascript" in bundle.headers["content-type"]
        assert "actioncable-v1-ext-json" in bundle.text

    @pytest.mark.parametrize("name", ["", "   ", "x" * 33])
    def test_a_bad_name_is_refused(self, client, name):
        resp = client.post("/login", data={"name": name}, follow_redirects=False)
        assert resp.status_code == 400 and "set-cookie" not in resp.headers
        assert "A name is 1 to 32 characters." in resp.text

    def test_a_bad_room_name_is_refused(self, client):
        login(client, "ann")
        assert client.get("/?room=no%20spaces").status_code == 400

    def test_names_are_escaped(self, client):
        login(client, "<b>x</b>")
        assert "&lt;b&gt;x&lt;/b&gt;" in client.get("/").text and "<b>x</b>" not in client.get("/").text

    def test_logout_clears_the_cookie(self, client):
        login(client, "ann")
        client.post("/logout")
        assert '<form id="login"' in client.get("/").text


class TestCable:
    def test_connect_with_the_session_cookie_identifies_the_user(self, client):
        reply = connect(client, login(client, "ann"))
        assert reply["status"] in SUCCESS
        assert json.loads(reply["identifiers"]) == {"user": "ann"}
        assert transmitted(reply)[0]["type"] == "welcome"

    @pytest.mark.parametrize("cookie", [None, "forged", "eyJuYW1lIjoiYW5uIn0.AAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAA"])
    def test_no_or_a_bad_cookie_is_unauthorized(self, client, cookie):
        reply = connect(client, cookie)
        assert reply["status"] in FAILURE
        assert transmitted(reply) == [{"type": "disconnect", "reason": "unauthorized", "reconnect": False}]

    def test_rpc_calls_need_the_rpc_secret(self, client):
        resp = client.post("/_anycable/connect", json={"env": env(None)}, headers={"Authorization": "Bearer wrong"})
        assert resp.status_code == 401

    def test_subscribe_streams_from_the_room(self, client):
        ids = connect(client, login(client, "ann"))["identifiers"]
        reply = command(client, ids, "subscribe", LOBBY)
        assert reply["status"] in SUCCESS and reply["streams"] == ["chat/lobby"]
        assert transmitted(reply) == [{"identifier": LOBBY, "type": "confirm_subscription"}]
        # the room's presence stream, joined as the user (pycable announces it to the room)
        assert reply["presence"] == {"type": "join", "id": "ann", "info": '{"name":"ann"}'}
        assert reply["env"]["istate"]["$p"] == "chat/lobby"

    @pytest.mark.parametrize("params", [{}, {"room": ""}, {"room": 7}, {"room": "a b"}])
    def test_subscribe_without_a_valid_room_is_rejected(self, client, params):
        ids = connect(client, login(client, "ann"))["identifiers"]
        identifier = json.dumps({"channel": "ChatChannel", **params})
        reply = command(client, ids, "subscribe", identifier)
        assert reply["status"] in FAILURE and not reply.get("streams")
        assert transmitted(reply) == [{"identifier": identifier, "type": "reject_subscription"}]

    def test_speak_broadcasts_to_the_room_and_empty_text_is_refused(self, client, sink):
        ids = connect(client, login(client, "bob"))["identifiers"]
        command(client, ids, "subscribe", LOBBY)
        before = len(sink.posts)
        for text in ["", "   ", 5]:
            reply = command(client, ids, "message", LOBBY, action="speak", text=text)
            assert transmitted(reply) == [{"identifier": LOBBY, "message": {"error": "empty message"}}]
        reply = command(client, ids, "message", LOBBY, action="speak", text="x" * 1001)
        assert transmitted(reply)[0]["message"]["error"].startswith("message longer than")
        assert len(sink.posts) == before  # nothing was broadcast
        reply = command(client, ids, "message", LOBBY, action="speak", text="hello")
        assert reply["status"] in SUCCESS
        sent = [(m["stream"], json.loads(m["data"])) for m in sink.messages()[before:]]
        assert sent == [("chat/lobby", {"user": "bob", "text": "hello"})]
        assert sink.posts[-1]["headers"]["Authorization"] == f"Bearer {BROADCAST_KEY}"

    def test_test_mode_counts_the_rpc_calls(self, client):
        before = client.get("/_test/rpc_calls").json()
        connect(client, None)
        after = client.get("/_test/rpc_calls").json()
        assert after.get("connect", 0) == before.get("connect", 0) + 1
