"""Sessions bound to their owner (issue 14 item 10): the server chooses every sid, a restore
whose request identifies someone else is a fresh connection, sids are redacted in logs and
in the URL the application sees."""

from __future__ import annotations

import json
import logging

import pytest

from contract.backends.memory import FakeClock
from pycable.broker.base import HistoryPolicy
from pycable.broker.memory import MemoryBroker
from pycable.identity.jwt import encode_jwt
from pycable.node.controller import LocalController
from pycable.node.node import Node, NodeConfig
from pycable.node.port import Handshake
from pycable.testing import RecordingConnection, connect_session, send

SECRET = "s" * 32
IDENT = json.dumps({"channel": "$pubsub", "stream_name": "chat"})


def token(user: int, exp: float = 4e9) -> str:
    return encode_jwt(json.dumps({"user": user}), SECRET, exp=exp)


@pytest.fixture
async def node():
    clock = FakeClock()
    broker = MemoryBroker(HistoryPolicy(limit=5, ttl=60), sessions_ttl=60, clock=clock)
    controller = LocalController(jwt_secret=SECRET, enforce_jwt=True, public_streams=True, clock=clock)
    node = Node(controller, broker, config=NodeConfig(sessions_ttl=60))
    await node.start()
    yield node
    await node.shutdown()


async def opened(node: Node, headers: dict[str, str], url: str = "ws://x/cable") -> RecordingConnection:
    conn = RecordingConnection()
    session = node.open(conn, Handshake(url=url, headers=headers, remote="127.0.0.1",
                                        query={"jid": token(1)}, ext=True))
    assert session.auth_task is not None
    await session.auth_task
    return conn


async def test_the_server_chooses_every_sid(node):
    conn = await opened(node, {"x-request-id": "victims-sid"})
    welcome = conn.messages[0]
    assert welcome["type"] == "welcome"
    assert welcome["sid"] != "victims-sid"
    assert len(welcome["sid"]) == 16, "96 random bits, URL-safe base64"
    assert await node.broker.restore_session("victims-sid") is None, "nothing written under the client's id"


async def test_the_sid_is_redacted_in_the_url_the_application_sees(node):
    conn = RecordingConnection()
    session = node.open(conn, Handshake(url="ws://x/cable?sid=SECRETSID123&a=1", headers={}, remote="1.2.3.4",
                                        query={"sid": "SECRETSID123", "a": "1", "jid": token(1)}, ext=True))
    await session.auth_task
    assert "SECRETSID123" not in session.env.url and "a=1" in session.env.url
    assert "sid" not in session.env.query


async def test_a_restore_must_be_made_by_its_owner(node, caplog):
    owner, _ = await connect_session(node, "owner-sid-0001", query={"jid": token(1)})
    await send(node, owner, {"command": "subscribe", "identifier": IDENT})
    await node.disconnect(owner)

    # Someone else, with a valid token of their own and the stolen sid: a fresh connection.
    with caplog.at_level(logging.INFO, logger="pycable.node"):
        thief, conn = await connect_session(node, "thief-sid-0002", prev_sid="owner-sid-0001", query={"jid": token(2)})
    welcome = conn.messages[0]
    assert welcome["type"] == "welcome" and not welcome.get("restored")
    assert json.loads(thief.identifiers) == {"user": 2}
    assert not thief.subscriptions
    assert node.stats["restores_refused"] == 1
    assert "owner-sid-0001" not in caplog.text, "sids are redacted in logs"
    assert "owne…" in caplog.text

    # An invalid (expired) token is not the owner either.
    _, conn = await connect_session(node, "late-sid-0003", prev_sid="owner-sid-0001", query={"jid": token(1, exp=1)})
    assert not conn.messages[0].get("restored")

    # The owner, with their own token: restored.
    back, conn = await connect_session(node, "owner-sid-0004", prev_sid="owner-sid-0001", query={"jid": token(1)})
    assert conn.messages[0].get("restored") is True and list(back.subscriptions) == [IDENT]

    # A request that carries no identification restores as before (AnyCable's behaviour).
    await node.disconnect(back)
    anon, conn = await connect_session(node, "anon-sid-0005", prev_sid="owner-sid-0004")
    assert conn.messages[0].get("restored") is True
    await node.disconnect(anon)
