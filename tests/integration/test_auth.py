"""RPC-less identification and channels against a real server (spec §7)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from helpers.client import CableClient, ident
from helpers.server import ServerProcess
from pycable.identity.jwt import encode_jwt
from pycable.identity.signed import sign_stream

SECRET = "qwerty"


@pytest.fixture(scope="module")
def jwt_server():
    with ServerProcess("--secret", SECRET, "--enforce_jwt", "--streams_whisper", "--broadcast_key", "none") as srv:
        yield srv


def token(exp_in: float = 60) -> str:
    return encode_jwt(json.dumps({"user_id": 42}), SECRET, exp=time.time() + exp_in)


class TestJWT:
    @pytest.mark.parametrize("how", ["query", "header", "subprotocol"])
    async def test_token_accepted(self, jwt_server, how):
        t = token()
        if how == "query":
            c = await CableClient.open(jwt_server.url + f"?jid={t}")
        elif how == "header":
            c = await CableClient.open(jwt_server.url, additional_headers={"X-JID": t})
        else:
            from websockets.asyncio.client import connect

            ws = await connect(jwt_server.url, subprotocols=["actioncable-v1-ext-json", f"anycable-token.{t}"])
            assert ws.subprotocol == "actioncable-v1-ext-json"
            c = CableClient(ws)
        assert (await c.welcome())["sid"]
        await c.close()

    @pytest.mark.parametrize(
        ("suffix", "reason"), [("", "unauthorized"), ("?jid=bad.token.here", "unauthorized"), ("EXPIRED", "token_expired")]
    )
    async def test_rejections(self, jwt_server, suffix, reason):
        if suffix == "EXPIRED":
            suffix = f"?jid={token(-10)}"
        c = await CableClient.open(jwt_server.url + suffix)
        msg = await c.wait_for({"type": "disconnect"})
        assert msg == {"type": "disconnect", "reason": reason, "reconnect": False}
        await asyncio.wait_for(c.closed.wait(), 5)
        assert c.ws.close_code == 1000
        assert not any(m.get("type") == "welcome" for m in c.received)


class TestSignedStreams:
    async def test_signed_stream_whisper_and_public_names_rejected(self, jwt_server):
        signed = json.dumps({"channel": "$pubsub", "signed_stream_name": sign_stream("chat/2023", SECRET)},
                            separators=(",", ":"))
        a = await CableClient.open(jwt_server.url + f"?jid={token()}")
        b = await CableClient.open(jwt_server.url + f"?jid={token()}")
        for c in (a, b):
            await c.welcome()
            assert (await c.subscribe(signed))["type"] == "confirm_subscription"
        assert jwt_server.broadcast(json.dumps({"stream": "chat/2023", "data": '{"t":1}'}))[0] == 201
        await a.wait_for(lambda m: m.get("message") == {"t": 1})
        await a.send({"command": "whisper", "identifier": signed, "data": {"typing": True}})
        await b.wait_for(lambda m: m.get("message") == {"typing": True})
        bad = json.dumps({"channel": "$pubsub", "signed_stream_name": sign_stream("chat/2023", "wrong")})
        assert (await a.subscribe(bad))["type"] == "reject_subscription"
        assert (await a.subscribe(ident("plain")))["type"] == "reject_subscription"
        assert jwt_server.broadcast(json.dumps({"stream": "chat/2023", "data": '{"t":2}'}))[0] == 201
        await a.wait_for(lambda m: m.get("message") == {"t": 2})
        assert not any(m.get("message") == {"typing": True} for m in a.received)
        await a.close()
        await b.close()

    async def test_whisper_on_a_signed_stream_needs_streams_whisper(self):
        with ServerProcess("--secret", SECRET, "--enforce_jwt", "--broadcast_key", "none") as srv:
            signed = json.dumps({"channel": "$pubsub", "signed_stream_name": sign_stream("quiet", SECRET)})
            a = await CableClient.open(srv.url + f"?jid={token()}")
            b = await CableClient.open(srv.url + f"?jid={token()}")
            for c in (a, b):
                await c.welcome()
                assert (await c.subscribe(signed))["type"] == "confirm_subscription"
            await a.send({"command": "whisper", "identifier": signed, "data": {"typing": True}})
            # An event to wait on: a broadcast sent after the whisper arrives after it would have.
            assert srv.broadcast(json.dumps({"stream": "quiet", "data": '"after"'}))[0] == 201
            await b.wait_for(lambda m: m.get("message") == "after")
            assert not any(m.get("message") == {"typing": True} for m in b.received)
            await a.close()
            await b.close()

    async def test_non_ascii_signature_is_rejected_not_a_crash(self, jwt_server):
        c = await CableClient.open(jwt_server.url + f"?jid={token()}")
        await c.welcome()
        bad = json.dumps({"channel": "$pubsub", "signed_stream_name": "abc--é"})
        assert (await c.subscribe(bad))["type"] == "reject_subscription"
        await c.close()


class TestRemoteDisconnect:
    async def test_every_session_with_the_identifiers_is_closed(self, jwt_server):
        """Two connections of one user are closed by one remote disconnect; another user stays."""
        def user_token(uid: int) -> str:
            return encode_jwt(json.dumps({"user_id": uid}), SECRET, exp=time.time() + 60)

        same = [await CableClient.open(jwt_server.url + f"?jid={user_token(7)}") for _ in range(2)]
        other = await CableClient.open(jwt_server.url + f"?jid={user_token(8)}")
        for c in (*same, other):
            await c.welcome()
        body = {"command": "disconnect", "payload": {"identifier": json.dumps({"user_id": 7}), "reconnect": False}}
        assert jwt_server.broadcast(json.dumps(body))[0] == 201
        for c in same:
            assert await c.wait_for({"type": "disconnect"}) == {"type": "disconnect", "reason": "remote",
                                                                 "reconnect": False}
            await asyncio.wait_for(c.closed.wait(), 5)
            assert c.ws.close_code == 1000
        assert (await other.subscribe(json.dumps({"channel": "$pubsub", "signed_stream_name":
                                                  sign_stream("still", SECRET)})))["type"] == "confirm_subscription"
        assert not other.closed.is_set()
        await other.close()
