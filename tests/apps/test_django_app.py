"""examples/django_app and pycable.contrib.django, end to end: the project under uvicorn (sqlite
in a temporary directory), a real pycable process calling its HTTP RPC, the real
@anycable/core client sending the browser's session cookie, and Django's own login, views,
ORM and signals."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stack import AppProcess, ChannelClient

from helpers.server import ROOT, ServerProcess, free_port
from pycable.contrib.django import settings_from

pytestmark = pytest.mark.js

PROJECT = ROOT / "examples" / "django_app"
SECRET = "django-test-secret"
GENERAL = {"room": "general"}


class Browser:
    """A cookie-keeping HTTP client that logs in through Django's login form (with its CSRF)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        data = None
        if form is not None:
            data = urllib.parse.urlencode({**form, "csrfmiddlewaretoken": self.cookie("csrftoken") or ""}).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            with self.opener.open(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            body = err.read().decode(errors="replace")
            err.close()
            return err.code, body

    def login(self, user: str, password: str) -> str:
        status, page = self.request("GET", "/accounts/login/")
        assert status == 200 and re.search(r'name="csrfmiddlewaretoken"', page)
        status, _ = self.request("POST", "/accounts/login/", {"username": user, "password": password})
        assert status == 200, "login should redirect to the room's messages"
        session = self.cookie("sessionid")
        assert session
        return session


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.server = ServerProcess("--secret", SECRET)
        env = {
            "ANYCABLE_SECRET": SECRET,
            "ANYCABLE_BROADCAST_URL": f"http://127.0.0.1:{self.server.bport}/_broadcast",
            "DJANGO_DB_PATH": str(tmp / "db.sqlite3"),
            "DJANGO_SETTINGS_MODULE": "project.settings",
        }
        self.env = env
        self.manage("migrate", "-v0")
        self.manage("shell", "-c", "from django.contrib.auth.models import User\n"
                    "User.objects.create_user('ann', password='ann-pw'); User.objects.create_user('bob', password='bob-pw')")  # fmt: skip
        self.app = AppProcess("project.asgi:application", env, cwd=PROJECT)
        self.server.args += ["--rpc_host", f"{self.app.url}/_anycable"]
        self.clients: list[ChannelClient] = []

    def manage(self, *args: str) -> None:
        out = subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT, env={**os.environ, **self.env},
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr

    def start(self) -> Stack:
        self.app.start()
        self.server.start()
        return self

    def client(
        self, params: dict[str, Any], session: str | None = None, name: str = "c", url: str = ""
    ) -> ChannelClient:
        headers = {"Cookie": f"sessionid={session}; other=1"} if session else {}
        c = ChannelClient(url or self.server.url, "RoomChannel", params, headers, name=name)
        self.clients.append(c)
        return c

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        self.server.stop()
        self.app.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("django"))
    try:
        yield s.start()
    except Exception:
        print(s.server.log(), s.app.log())
        raise
    finally:
        s.stop()


def message_event(text: str):
    return lambda e: e["event"] == "message" and e["data"].get("message", {}).get("text") == text


async def test_no_or_a_bad_session_cookie_is_unauthorized(stack):
    for session in (None, "not-a-session-key"):
        c = stack.client(GENERAL, session, name=f"anon-{session}")
        assert (await c.event("close"))["reason"] == "unauthorized"


async def test_a_logged_in_browser_subscribes_and_an_unknown_room_is_rejected(stack):
    session = Browser(stack.app.url).login("ann", "ann-pw")
    c = stack.client(GENERAL, session, name="ann")
    await c.event("subscribed")
    assert (await c.wait(lambda e: e["event"] == "message"))["data"] == {"joined": "general", "as": "ann"}
    nowhere = stack.client({"room": "nowhere"}, session, name="ann-nowhere")
    await nowhere.event("subscribe_failed")
    assert not [e for e in nowhere.events if e["event"] == "subscribed"]
    assert [e["frame"]["type"] for e in nowhere.events if e["event"] == "frame"][-1] == "reject_subscription"


async def test_an_action_writes_with_the_orm_and_the_signal_broadcasts_it(stack):
    ann_browser, bob_browser = Browser(stack.app.url), Browser(stack.app.url)
    ann = stack.client(GENERAL, ann_browser.login("ann", "ann-pw"), name="ann")
    bob = stack.client(GENERAL, bob_browser.login("bob", "bob-pw"), name="bob")
    await ann.event("subscribed")
    await bob.event("subscribed")

    ann.perform("post", text="")
    assert (await ann.wait(lambda e: e["event"] == "message" and "error" in e["data"]))["data"] == {
        "error": "a message is 1 to 1000 characters"
    }
    ann.perform("post", text="hello from the cable")
    got = (await bob.wait(message_event("hello from the cable")))["data"]["message"]
    assert got["user"] == "ann"
    await ann.wait(message_event("hello from the cable"))

    # ...and from a view: Django's session, CSRF and ORM; the same signal broadcasts it.
    status, body = bob_browser.request("POST", "/rooms/general/messages", {"text": "hello from a view"})
    assert status == 201, body
    assert (await ann.wait(message_event("hello from a view")))["data"]["message"] == json.loads(body)

    status, body = ann_browser.request("GET", "/rooms/general/messages")
    texts = [(m["user"], m["text"]) for m in json.loads(body)["messages"]]
    assert texts[-2:] == [("ann", "hello from the cable"), ("bob", "hello from a view")]
    assert not [
        e for e in bob.events if e["event"] == "message" and "error" in e["data"]
    ]  # errors go to the sender only


async def test_after_logout_the_session_cookie_no_longer_connects(stack):
    browser = Browser(stack.app.url)
    session = browser.login("bob", "bob-pw")
    await stack.client(GENERAL, session, name="bob-before").event("subscribed")
    status, _ = browser.request("POST", "/accounts/logout/", {})
    assert status in (200, 302)
    after = stack.client(GENERAL, session, name="bob-after")
    assert (await after.event("close"))["reason"] == "unauthorized"


async def test_the_same_project_over_grpc(stack):
    """``manage.py pycable_grpc`` serves the same application over gRPC to a second pycable."""
    port = free_port()
    argv = [sys.executable, "manage.py", "pycable_grpc", "board.cable:cable", "--address", f"127.0.0.1:{port}"]
    server = ServerProcess("--secret", SECRET, "--rpc_host", f"127.0.0.1:{port}")
    env = {**os.environ, **stack.env, "ANYCABLE_BROADCAST_URL": f"http://127.0.0.1:{server.bport}/_broadcast"}
    rpc = subprocess.Popen(argv, cwd=PROJECT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert rpc.stdout is not None
        assert rpc.stdout.readline().startswith(f"Serving anycable.RPC on 127.0.0.1:{port}")
        server.start()
        session = Browser(stack.app.url).login("ann", "ann-pw")
        c = stack.client(GENERAL, session, name="ann-grpc", url=server.url)
        assert (await c.wait(lambda e: e["event"] == "message"))["data"] == {"joined": "general", "as": "ann"}
        c.perform("post", text="over grpc")
        await c.wait(message_event("over grpc"))
    finally:
        server.stop()
        rpc.send_signal(signal.SIGTERM)
        assert rpc.wait(20) == 0
        rpc.stdout.close()


class TestSettings:
    def test_pycable_settings_override_the_environment(self):
        s = settings_from(
            {"SECRET": "s", "broadcast_url": "http://h:1/b"}, {"ANYCABLE_SECRET": "env", "ANYCABLE_BROADCAST_KEY": "k"}
        )
        assert (s.secret, s.broadcast_url, s.broadcast_key) == ("s", "http://h:1/b", "k")

    def test_an_unknown_key_is_a_clear_error(self):
        with pytest.raises(ValueError, match=r"unknown key 'SECRT' \(known: .*SECRET"):
            settings_from({"SECRT": "x"}, {})
