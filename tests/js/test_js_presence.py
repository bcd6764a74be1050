"""Presence with the real ``@anycable/core`` client: ``channel.presence.join/leave/info`` and
the channel's ``presence`` events, against a real pycable process (memory broker).

Waits are on the client's events; timeouts only bound a failure.
"""

from __future__ import annotations

import pytest
from test_js_client import Harness, env  # noqa: F401  (the env fixture)

pytestmark = pytest.mark.js

ROOM = '{"channel":"$pubsub","stream_name":"room"}'


def is_event(e: dict) -> bool:
    """A join/leave on the channel (the client also emits its info replies as ``presence``)."""
    return e.get("event") == "presence" and e.get("id") == "room" and e["data"].get("type") in ("join", "leave")


def presence_events(proc, start: int = 0) -> list[dict]:
    return [e["data"] for e in proc.find(is_event, start)]


def info_of(proc) -> dict:
    mark = proc.mark()
    proc.send(cmd="presence_info", id="room")
    ev = proc.wait_for(
        lambda e: e.get("event") in ("presence_info", "presence_info_failed") and e.get("id") == "room", start=mark
    )
    assert ev["event"] == "presence_info", ev
    return ev["info"]


def test_join_info_leave_and_expiry(env: Harness) -> None:  # noqa: F811
    srv = env.server("--presets", "broker", "--public", "--presence_ttl", "2")
    a = env.client(srv.ws_url, "a", connect=True, subscribe=[{"id": "room", "stream": "room"}])
    b = env.client(srv.ws_url, "b", connect=True, subscribe=[{"id": "room", "stream": "room"}])
    for c in (a, b):
        c.wait_for({"event": "subscribed", "id": "room"})

    a.send(cmd="presence_join", id="room", pid=1, info={"name": "Alice"})
    b.wait_for(is_event, what="a's join")
    assert presence_events(b) == [{"type": "join", "id": "1", "info": {"name": "Alice"}}]
    a.wait_for(lambda e: e.get("event") == "sent" and e["msg"].get("command") == "join", what="a's join sent")
    assert a.sent("join") == [{"command": "join", "identifier": ROOM, "presence": {"id": "1", "info": {"name": "Alice"}}}]
    assert info_of(b) == {"1": {"name": "Alice"}}

    b.send(cmd="presence_join", id="room", pid="2", info={"name": "Bob"})
    for c in (a, b):
        c.wait_count(is_event, 2, what="both joins (its own too)")
    assert info_of(a) == {"1": {"name": "Alice"}, "2": {"name": "Bob"}}

    mark = b.mark()
    a.send(cmd="presence_leave", id="room")
    b.wait_for(is_event, start=mark, what="a's leave")
    assert presence_events(b, mark) == [{"type": "leave", "id": "1"}]
    assert info_of(b) == {"2": {"name": "Bob"}}, "the client's state follows the events"

    # b goes away without leaving: its record expires after --presence_ttl, and a hears of it.
    mark = a.mark()
    b.send(cmd="exit")
    a.wait_for(is_event, start=mark, timeout=30, what="b's expiry")
    assert presence_events(a, mark) == [{"type": "leave", "id": "2"}]
    assert a.error_logs() == []


def test_presence_without_a_broker_rejects_info(env: Harness) -> None:  # noqa: F811
    srv = env.server("--public")
    a = env.client(srv.ws_url, "a", connect=True, subscribe=[{"id": "room", "stream": "room"}])
    a.wait_for({"event": "subscribed", "id": "room"})
    mark = a.mark()
    a.send(cmd="presence_info", id="room")
    ev = a.wait_for(lambda e: e.get("event", "").startswith("presence_info"), start=mark)
    assert ev == {"event": "presence_info_failed", "client": "a", "id": "room", "message": "failed to retrieve presence"}
