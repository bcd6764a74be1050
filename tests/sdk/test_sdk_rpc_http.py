"""The ASGI adapter, called directly (no server): routing, the secret, bad bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pycable.sdk import Application, Connection

SECRET = "rpc-secret"


class Anyone(Connection):
    async def connect(self) -> None:
        self.identified_by(sid=self.sid)


async def call(
    app: Any, path: str, body: bytes = b"{}", *, method: str = "POST", auth: str | None = f"Bearer {SECRET}",
    chunks: int = 1,
) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    headers = [(b"content-type", b"application/json"), (b"x-anycable-meta-sid", b"sid-7")]
    if auth is not None:
        headers.append((b"authorization", auth.encode()))
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": headers}
    size = max(1, len(body) // chunks)
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, out = sent[0], sent[1]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, out["body"]


@pytest.fixture
def asgi() -> Any:
    return Application(Anyone).asgi(secret=SECRET, max_body_size=1000)


async def test_connect_wherever_mounted(asgi):
    for path in ("/connect", "/_anycable/connect", "/a/b/connect/"):
        status, headers, body = await call(asgi, path, b'{"env":{"url":"http://h/cable"}}', chunks=3)
        assert status == 200 and headers["content-type"] == "application/json"
        answer = json.loads(body)
        assert answer["status"] == 1 and answer["identifiers"] == '{"sid":"sid-7"}'


@pytest.mark.parametrize("auth", [None, "Bearer wrong", SECRET, f"bearer {SECRET}"])
async def test_the_secret_is_required(asgi, auth):
    status, _, _ = await call(asgi, "/connect", auth=auth)
    assert status == 401


async def test_no_secret_no_check():
    status, _, _ = await call(Application().asgi(secret=""), "/connect", auth=None)
    assert status == 200


async def test_secret_from_the_environment(monkeypatch):
    monkeypatch.setenv("ANYCABLE_SECRET", "from-env")
    from pycable.identity.signed import derive_key

    asgi = Application().asgi()
    assert (await call(asgi, "/connect", auth=f"Bearer {derive_key('from-env', 'rpc-cable')}"))[0] == 200
    assert (await call(asgi, "/connect", auth="Bearer from-env"))[0] == 401


@pytest.mark.parametrize(
    ("path", "method", "body", "status"),
    [
        ("/nope", "POST", b"{}", 404),
        ("/connect", "GET", b"", 405),
        ("/connect", "POST", b"{not json", 400),
        ("/connect", "POST", b"[1]", 400),
        ("/connect", "POST", b"x" * 1001, 413),
    ],
)
async def test_bad_requests(asgi, path, method, body, status):
    assert (await call(asgi, path, body, method=method, chunks=2))[0] == status


async def test_empty_body_is_an_empty_request(asgi):
    status, _, body = await call(asgi, "/disconnect", b"")
    assert status == 200 and json.loads(body) == {"status": 1}


async def test_lifespan(asgi):
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
