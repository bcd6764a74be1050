"""The chat demo's application: a Starlette app serving the page, the login and pycable's HTTP RPC.

Run it with ``make demo`` (pycable and this app together), or by hand::

    ANYCABLE_SECRET=dev uvicorn examples.chat.app:app --port 8000
    ANYCABLE_SECRET=dev pycable --presets=broker --rpc_host http://127.0.0.1:8000/_anycable --rpc_restore

Configuration comes from the environment, the same names pycable reads:

- ``ANYCABLE_SECRET`` (required): signs the session cookie (a key derived from it) and, through
  the SDK, the HTTP RPC secret and the broadcast key.
- ``ANYCABLE_BROADCAST_URL``: where ``speak`` broadcasts (read by the SDK).
- ``CHAT_CABLE_URL``: the WebSocket URL the page connects to; default: this page's host name on
  port ``ANYCABLE_PORT`` (8080), path ``/cable``.
- ``CHAT_TEST_MODE=1``: also serve ``GET /_test/rpc_calls``, how many Connect and Restore calls
  this app answered (the browser test checks that a network loss ends in a Restore, not a new
  Connect).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pycable.contrib.fastapi import lifespan, mount
from pycable.sdk import Application, Channel, Connection, abroadcast

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
SESSION_COOKIE = "chat_session"
SESSION_MAX_AGE = 7 * 24 * 3600
MAX_NAME = 32
MAX_TEXT = 1000
ROOM = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _secret() -> str:
    secret = os.environ.get("ANYCABLE_SECRET", "")
    if not secret:
        raise RuntimeError("set ANYCABLE_SECRET (make demo sets a development default)")
    return secret


def _sessions() -> URLSafeTimedSerializer:
    # A key of its own, derived from the shared secret, so the cookie key is never the RPC key.
    key = hmac.new(_secret().encode(), b"chat-session", hashlib.sha256).hexdigest()
    return URLSafeTimedSerializer(key, salt="pycable-chat-session")


def session_cookie(name: str) -> str:
    """The signed cookie value that logs ``name`` in."""
    return _sessions().dumps({"name": name})


def session_name(cookie: str | None) -> str | None:
    """The user name in a session cookie, or None if it is missing, forged or expired."""
    if not cookie:
        return None
    try:
        data = _sessions().loads(cookie, max_age=SESSION_MAX_AGE)
    except BadSignature:
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


# --- the cable side -------------------------------------------------------------------------


#: Connect and Restore calls this process answered (served at /_test/rpc_calls in test mode).
rpc_calls: Counter[str] = Counter()


class ChatConnection(Connection):
    """Identified by the user name in the signed session cookie; no valid cookie: unauthorized."""

    async def connect(self) -> None:
        rpc_calls["connect"] += 1
        name = session_name(self.request.cookies.get(SESSION_COOKIE))
        if name is None:
            self.reject()
            return
        self.identified_by(user=name)

    async def restored(self) -> None:
        # pycable restored the session after a network loss (--rpc_restore): no connect() ran.
        rpc_calls["restore"] += 1


class ChatChannel(Channel):
    """One room: ``{"channel": "ChatChannel", "room": "lobby"}`` streams from ``chat/lobby``,
    whose presence set holds who is in the room (each user once, however many tabs)."""

    async def subscribed(self) -> None:
        room = self.params.get("room")
        if not isinstance(room, str) or not ROOM.fullmatch(room):
            self.reject()
            return
        self.stream_from(f"chat/{room}", presence=True)
        name = self.connection.identifiers["user"]
        self.join_presence(name, {"name": name})

    async def speak(self, data: dict[str, Any]) -> None:
        """Broadcast ``{"user", "text"}`` to the room; an empty or too long text is refused."""
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            self.transmit({"error": "empty message"})
            return
        if len(text) > MAX_TEXT:
            self.transmit({"error": f"message longer than {MAX_TEXT} characters"})
            return
        room = self.params["room"]
        await abroadcast(f"chat/{room}", {"user": self.connection.identifiers["user"], "text": text})


cable = Application(connection=ChatConnection, channels=[ChatChannel])


# --- the web side ---------------------------------------------------------------------------


def cable_url(request: Request) -> str:
    url = os.environ.get("CHAT_CABLE_URL")
    if url:
        return url
    port = os.environ.get("ANYCABLE_PORT", "8080")
    return f"ws://{request.url.hostname}:{port}/cable"


def page(request: Request, body: str, status: int = 200) -> HTMLResponse:
    text = (HERE / "page.html").read_text()
    text = text.replace("{{cable_url}}", html.escape(cable_url(request))).replace("{{body}}", body)
    return HTMLResponse(text, status_code=status, headers={"Cache-Control": "no-store"})


LOGIN_FORM = """<form id="login" method="post" action="/login">
  <label>Your name <input name="name" maxlength="{max}" autofocus required></label>
  <button>Enter</button>{error}
</form>"""


async def index(request: Request) -> Response:
    name = session_name(request.cookies.get(SESSION_COOKIE))
    if name is None:
        return page(request, LOGIN_FORM.format(max=MAX_NAME, error=""))
    room = request.query_params.get("room", "lobby")
    if not ROOM.fullmatch(room):
        return page(request, "<p class=error>A room name is 1 to 64 letters, digits, - or _.</p>", 400)
    chat = (
        f'<div id="chat" data-room="{html.escape(room)}" data-user="{html.escape(name)}">'
        f'<p class="who">{html.escape(name)} in <b>#{html.escape(room)}</b>'
        ' <span id="state" data-state="idle">idle</span></p>'
        '<p class="present">Here: <span id="present"></span></p>'
        '<ol id="messages"></ol>'
        '<form id="speak"><input name="text" maxlength="1000" autocomplete="off" autofocus>'
        "<button>Send</button></form><p id=error></p></div>"
        '<script type="module" src="/static/chat.js"></script>'
    )
    return page(request, chat)


async def login(request: Request) -> Response:
    form = await request.form()
    raw = form.get("name")
    name = raw.strip() if isinstance(raw, str) else ""
    if not name or len(name) > MAX_NAME:
        error = f"<p class=error>A name is 1 to {MAX_NAME} characters.</p>"
        return page(request, LOGIN_FORM.format(max=MAX_NAME, error=error), 400)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, session_cookie(name), max_age=SESSION_MAX_AGE, httponly=True, samesite="lax")
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


async def rpc_calls_view(request: Request) -> Response:
    return JSONResponse(dict(rpc_calls))


def create_app() -> Starlette:
    _secret()  # fail at start-up, not at the first request
    if not (STATIC / "chat.js").exists():
        raise RuntimeError(f"{STATIC / 'chat.js'} is missing: run make install (it bundles @anycable/web)")
    routes = [
        Route("/", index),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    if os.environ.get("CHAT_TEST_MODE") == "1":
        routes.append(Route("/_test/rpc_calls", rpc_calls_view))
    app = Starlette(routes=routes, lifespan=lifespan)  # lifespan: closes the broadcaster's connections
    mount(app, cable)  # HTTP RPC at /_anycable (pycable: --rpc_host http://<app>/_anycable)
    return app


app = create_app()
