"""Publications as the server reads them, and the clear errors for bad ones (the transports
run end to end in test_sdk_e2e.py)."""

from __future__ import annotations

import importlib

import pytest

from pycable.protocol.broadcast import parse_broadcast
from pycable.sdk import HTTPBroadcaster, Settings, abroadcast, broadcast, broadcast_batch, disconnect

broadcasting = importlib.import_module("pycable.sdk.broadcast")


def test_publications_are_what_the_server_parses():
    pub = broadcasting.publication("s", {"a": 1}, exclude_socket="sid", transient=True)
    assert pub == {"stream": "s", "data": '{"a":1}', "meta": {"exclude_socket": "sid", "transient": True}}
    assert broadcasting.publication("s", "raw") == {"stream": "s", "data": "raw"}
    parsed = parse_broadcast(broadcasting._encode(pub))
    assert parsed[0].stream == "s" and parsed[0].data == '{"a":1}'


def test_remote_disconnect_command():
    cmd = broadcasting.disconnect_command({"user": "ann", "org": 1}, reconnect=False)
    assert cmd == {"command": "disconnect", "payload": {"identifier": '{"org":1,"user":"ann"}', "reconnect": False}}


class Recorder:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def publish(self, payload: bytes) -> None:
        self.sent.append(payload)

    async def apublish(self, payload: bytes) -> None:
        self.sent.append(payload)


def test_bad_input_is_a_clear_error_and_nothing_is_sent(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(broadcasting, "_default", rec)
    with pytest.raises(ValueError, match="stream name"):
        broadcast("", "x")
    with pytest.raises(TypeError):
        broadcast("s", {"not": object()})
    with pytest.raises(ValueError, match="empty batch"):
        broadcast_batch([])
    with pytest.raises(ValueError, match="identifiers"):
        disconnect()
    with pytest.raises(RuntimeError, match="to_others"):
        broadcast("s", "x", to_others=True)
    assert rec.sent == []
    disconnect({"user": "ann"}, org=2)
    assert rec.sent == [
        b'{"command":"disconnect","payload":{"identifier":"{\\"org\\":2,\\"user\\":\\"ann\\"}","reconnect":true}}'
    ]


async def test_async_goes_through_the_same_publication(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(broadcasting, "_default", rec)
    await abroadcast("s", [1, 2], exclude_socket="x")
    assert rec.sent == [b'{"stream":"s","data":"[1,2]","meta":{"exclude_socket":"x"}}']


def test_configure_and_urls():
    assert isinstance(broadcasting.configure(Settings(secret="k")), HTTPBroadcaster)
    b = broadcasting.get_broadcaster()
    assert b.url == "http://127.0.0.1:8080/_broadcast", "a key in effect: the server's main port"
    assert b.headers["Authorization"].startswith("Bearer ")
    broadcasting.configure(Settings())
    for bad in ("ftp://x/_broadcast", "/_broadcast", "http:///x"):
        with pytest.raises(ValueError, match="broadcast URL"):
            HTTPBroadcaster(bad)
