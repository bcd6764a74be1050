"""The Controller contract (``pycable.rpc.base``), run against both RPC controllers: gRPC (a
Python gRPC app) and HTTP RPC (the real ``@anycable/serverless-js`` app), built from a
``Config`` as the server builds them. The two apps implement the same chat application
(tests/rpc/apps.py).

* Connect: identifiers, connection state and transmissions of an accepted client; a refused
  client is a FAILURE with its transmissions;
* Command: subscribe answers streams, channel state and transmissions (a rejection is a
  FAILURE); a perform sees the channel state it was given;
* Disconnect reaches the application with the session's identifiers and subscriptions;
* an application that does not answer is an ``RPCError`` (never a hang), and so is one that
  answers with an error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from pycable import registry
from pycable.config import Config
from pycable.exceptions import RPCError
from pycable.rpc.base import FAILURE, SUCCESS, Controller, Env
from rpc.apps import RpcApp, node_available, where

KEY = "contract-rpc-key"
IDENT = json.dumps({"channel": "chat", "room": "r1"})


@pytest.fixture(params=["grpc", "http"])
async def rpc(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Controller, RpcApp]]:
    if request.param == "http" and (why := node_available()):
        pytest.fail(f"{why} (the HTTP RPC contract runs a real @anycable/serverless-js app)")
    app = RpcApp(request.param, secret=KEY).start()
    config = Config(rpc_host=app.rpc_host, http_rpc_secret=KEY, rpc_request_timeout=1000, rpc_command_timeout=1000)
    controller: Controller = registry.build("rpc", registry.CONTROLLERS, config.rpc_kind, config)
    await controller.start()
    try:
        yield controller, app
    finally:
        await controller.shutdown()
        app.stop()


def env(user: str = "ann", sid: str = "sid-1", istate: dict[str, str] | None = None) -> Env:
    query = f"?user={user}" if user else ""
    return Env(f"http://test/cable{query}", {"cookie": "a=1"}, sid, "127.0.0.1", istate=istate or {})


async def test_connect_accepts_and_refuses(rpc: tuple[Controller, RpcApp]) -> None:
    controller, app = rpc
    assert controller.describe()
    ok = await controller.connect(env("ann"))
    assert ok.status == SUCCESS and json.loads(ok.identifiers) == {"user": "ann"}
    assert ok.cstate.get("user") == "ann"
    assert json.loads(ok.transmissions[0])["type"] == "welcome"
    refused = await controller.connect(env(""))
    assert refused.status == FAILURE
    refusal = json.loads(refused.transmissions[0])
    assert (refusal["type"], refusal["reason"]) == ("disconnect", "unauthorized")
    call = await app.wait_call(where("connect"))
    assert call["body"]["env"]["url"].startswith("http://test/cable")


async def test_subscribe_and_perform_carry_channel_state(rpc: tuple[Controller, RpcApp]) -> None:
    controller, _ = rpc
    ids = json.dumps({"user": "ann"})
    sub = await controller.command("subscribe", IDENT, ids, "", env())
    assert sub.status == SUCCESS and sub.streams == ["room:r1"]
    assert sub.istate, "the channel's state comes back with the subscription"
    assert json.loads(sub.transmissions[0])["type"] == "confirm_subscription"
    rejected = await controller.command("subscribe", json.dumps({"channel": "chat"}), ids, "", env())
    assert rejected.status == FAILURE
    assert json.loads(rejected.transmissions[0])["type"] == "reject_subscription"
    counted = await controller.command("message", IDENT, ids, json.dumps({"action": "count"}), env(istate=sub.istate))
    assert counted.status == SUCCESS and counted.istate != sub.istate, "the state it was given, updated"
    assert json.loads(counted.transmissions[0])["message"] == {"count": 1}


async def test_disconnect_reaches_the_application(rpc: tuple[Controller, RpcApp]) -> None:
    controller, app = rpc
    await controller.disconnect(json.dumps({"user": "ann"}), [IDENT], env())
    call = await app.wait_call(where("disconnect"))
    assert call["body"]["subscriptions"] == [IDENT]
    assert json.loads(call["body"]["identifiers"]) == {"user": "ann"}


async def test_errors_and_silence_are_rpc_errors(rpc: tuple[Controller, RpcApp]) -> None:
    controller, app = rpc
    await app.erroring()
    with pytest.raises(RPCError):
        await controller.connect(env("ann"))
    await app.normal()
    await app.slow(3000)  # over the 1 s request timeout
    with pytest.raises(RPCError):
        await controller.connect(env("ann"))
    await app.normal()
