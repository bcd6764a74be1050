"""GrpcController against in-process grpc.aio servers: messages, metadata, retries (§6.7),
concurrency, round-robin over hosts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from pycable.config import Config
from pycable.exceptions import ConfigError, RPCError
from pycable.rpc._pb import anycable_pb2 as pb
from pycable.rpc._pb import anycable_pb2_grpc as pb_grpc
from pycable.rpc.barrier import UNAVAILABLE, Barrier, CallError
from pycable.rpc.base import FAILURE, SUCCESS, Env
from pycable.rpc.grpc import GrpcController, from_config, parse_targets


class FakeApp(pb_grpc.RPCServicer):
    """Records (method, request, metadata); ``fail`` aborts the next calls with codes."""

    def __init__(self, name: str = "app") -> None:
        self.name = name
        self.calls: list[tuple[str, Any, dict[str, str]]] = []
        self.fail: list[grpc.StatusCode] = []
        self.gate: asyncio.Event | None = None
        self.in_flight = self.peak = 0
        #: Set when ``in_flight`` reaches ``watch``.
        self.watch = 0
        self.reached = asyncio.Event()
        self.reply: Callable[[str, Any], Any] | None = None

    async def _handle(self, method: str, request: Any, context: grpc.aio.ServicerContext, default: Any) -> Any:
        self.calls.append((method, request, dict(context.invocation_metadata())))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.watch and self.in_flight >= self.watch:
            self.reached.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail:
                await context.abort(self.fail.pop(0), "scripted")
            return self.reply(method, request) if self.reply else default
        finally:
            self.in_flight -= 1

    async def Connect(self, request, context):
        return await self._handle("Connect", request, context, pb.ConnectionResponse(status=pb.SUCCESS))

    async def Command(self, request, context):
        return await self._handle("Command", request, context, pb.CommandResponse(status=pb.SUCCESS))

    async def Disconnect(self, request, context):
        return await self._handle("Disconnect", request, context, pb.DisconnectResponse(status=pb.SUCCESS))

    async def Restore(self, request, context):
        return await self._handle("Restore", request, context, pb.RestoreResponse(status=pb.SUCCESS))


@pytest.fixture
async def serve():
    servers: list[grpc.aio.Server] = []
    controllers: list[GrpcController] = []

    async def start_app(app: FakeApp) -> str:
        server = grpc.aio.server()
        pb_grpc.add_RPCServicer_to_server(app, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    async def factory(*apps: FakeApp, **kw) -> GrpcController:
        targets = [await start_app(app) for app in apps]
        ctl = GrpcController(targets, **kw)
        await ctl.start()
        controllers.append(ctl)
        return ctl

    yield factory
    for ctl in controllers:
        await ctl.shutdown()
    for server in servers:
        await server.stop(0)


def env(**kw) -> Env:
    base = dict(url="ws://example.com/cable", headers={"cookie": "a=1"}, sid="sid-7")
    base.update(kw)
    return Env(**base)


class TestMessages:
    async def test_connect_request_metadata_and_result(self, serve):
        app = FakeApp()
        app.reply = lambda m, r: pb.ConnectionResponse(
            status=pb.SUCCESS, identifiers="ids", transmissions=["w"], env=pb.EnvResponse(cstate={"k": "v"})
        )
        ctl = await serve(app)
        result = await ctl.connect(env(cstate={"c": "1"}, istate={"ignored": "x"}))
        method, request, meta = app.calls[0]
        assert method == "Connect"
        assert (request.env.url, dict(request.env.headers), dict(request.env.cstate)) == (
            "ws://example.com/cable",
            {"cookie": "a=1"},
            {"c": "1"},
        )
        assert dict(request.env.istate) == {}, "Connect carries no istate (§6.2)"
        assert (meta["sid"], meta["protov"]) == ("sid-7", "v1")
        assert (result.status, result.identifiers, result.transmissions, result.cstate) == (
            SUCCESS,
            "ids",
            ["w"],
            {"k": "v"},
        )

    async def test_command_request_and_result(self, serve):
        app = FakeApp()
        app.reply = lambda m, r: pb.CommandResponse(
            status=pb.SUCCESS,
            disconnect=True,
            stop_streams=False,
            streams=["s1"],
            stopped_streams=["s0"],
            transmissions=["t"],
            env=pb.EnvResponse(istate={"a": ""}, cstate={"b": "2"}),
            presence=pb.PresenceResponse(type="leave", id="7"),
        )
        ctl = await serve(app)
        r = await ctl.command("message", "ident", "ids", '{"action":"go"}', env(istate={"a": "1"}))
        _, request, _ = app.calls[0]
        assert (request.command, request.identifier, request.connection_identifiers, request.data) == (
            "message",
            "ident",
            "ids",
            '{"action":"go"}',
        )
        assert dict(request.env.istate) == {"a": "1"}
        assert (r.disconnect, r.streams, r.stopped_streams, r.transmissions, r.istate, r.cstate) == (
            True,
            ["s1"],
            ["s0"],
            ["t"],
            {"a": ""},
            {"b": "2"},
        )
        assert r.presence == ("leave", "7", "")

    async def test_failure_and_error_statuses(self, serve):
        app = FakeApp()
        ctl = await serve(app)
        app.reply = lambda m, r: pb.CommandResponse(status=pb.FAILURE, transmissions=["reject"])
        r = await ctl.command("subscribe", "ident", "ids", "", env())
        assert (r.status, r.transmissions) == (FAILURE, ["reject"])
        app.reply = lambda m, r: pb.CommandResponse(status=pb.ERROR, error_msg="boom", transmissions=["dropped"])
        with pytest.raises(RPCError, match="Application error: boom"):
            await ctl.command("subscribe", "ident", "ids", "", env())
        app.reply = lambda m, r: pb.DisconnectResponse(status=pb.ERROR, error_msg="bad")
        with pytest.raises(RPCError, match="bad"):
            await ctl.disconnect("ids", [], env())

    async def test_disconnect_and_restore(self, serve):
        app = FakeApp()
        ctl = await serve(app, restore=True)
        await ctl.disconnect("ids", ["a", "b"], env(istate={"a": '{"x":"1"}'}))
        await ctl.restore("ids", ["a"], env(istate={"a": '{"x":"1"}'}), "old-sid")
        (_, d, _), (_, r, meta) = app.calls
        assert (d.identifiers, list(d.subscriptions), dict(d.env.istate)) == ("ids", ["a", "b"], {"a": '{"x":"1"}'})
        assert (r.identifiers, list(r.subscriptions), r.sid, r.restored_sid) == ("ids", ["a"], "sid-7", "old-sid")
        assert dict(r.env.istate) == {"a": '{"x":"1"}'} and meta["sid"] == "sid-7"

    async def test_restore_is_off_without_the_flag(self, serve):
        app = FakeApp()
        ctl = await serve(app)
        await ctl.restore("ids", [], env(), "old")
        assert app.calls == []


class TestFailures:
    async def test_unavailable_is_retried(self, serve):
        app = FakeApp()
        app.fail = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED]
        ctl = await serve(app)
        assert (await ctl.connect(env())).status == SUCCESS
        assert len(app.calls) == 3

    async def test_other_codes_fail_at_once(self, serve):
        app = FakeApp()
        app.fail = [grpc.StatusCode.INTERNAL]
        ctl = await serve(app)
        with pytest.raises(CallError) as err:
            await ctl.connect(env())
        assert err.value.code == "INTERNAL"
        assert len(app.calls) == 1

    async def test_unimplemented_restore_is_an_error(self, serve):
        """An app without the Restore extension answers UNIMPLEMENTED: not retried."""
        app = FakeApp()
        app.fail = [grpc.StatusCode.UNIMPLEMENTED]
        ctl = await serve(app, restore=True)
        with pytest.raises(CallError) as err:
            await ctl.restore("ids", [], env(), "old")
        assert err.value.code == "UNIMPLEMENTED"

    async def test_app_down_fails_with_unavailable_after_retries(self):
        ctl = GrpcController(["127.0.0.1:1"], barrier=Barrier(4, None, 0.4))
        await ctl.start()
        try:
            with pytest.raises(CallError) as err:
                await ctl.connect(env())
        finally:
            await ctl.shutdown()
        assert err.value.code == UNAVAILABLE
        assert ctl.barrier.stats["retries"] >= 2

    async def test_deadline_per_attempt(self, serve):
        app = FakeApp()
        app.gate = asyncio.Event()
        ctl = await serve(app, barrier=Barrier(4, 0.1, 3.0))
        try:
            with pytest.raises(CallError) as err:
                await ctl.command("message", "i", "ids", "{}", env())
            assert err.value.code == "DEADLINE_EXCEEDED"
        finally:
            app.gate.set()

    async def test_concurrency_is_bounded(self, serve):
        app = FakeApp()
        app.gate, app.watch = asyncio.Event(), 3
        ctl = await serve(app, barrier=Barrier(3, None, 3.0))
        tasks = [asyncio.create_task(ctl.command("message", "i", "ids", "{}", env())) for _ in range(8)]
        await asyncio.wait_for(app.reached.wait(), 5)
        assert (app.peak, ctl.barrier.busy, ctl.barrier.waiting) == (3, 3, 5)
        app.gate.set()
        await asyncio.gather(*tasks)
        assert app.peak == 3 and len(app.calls) == 8


class TestTargets:
    async def test_grpc_list_round_robin(self, serve):
        a, b = FakeApp("a"), FakeApp("b")
        ctl = await serve(a, b)
        for _ in range(6):
            await ctl.command("message", "i", "ids", "{}", env())
        assert (len(a.calls), len(b.calls)) == (3, 3)

    def test_parse_targets(self):
        assert parse_targets("localhost:50051") == ["localhost:50051"]
        assert parse_targets("dns:///rpc:50051") == ["dns:///rpc:50051"]
        assert parse_targets("grpc-list://h1:1, h2:2") == ["h1:1", "h2:2"]
        with pytest.raises(ConfigError):
            parse_targets("grpc-list://")
        with pytest.raises(ConfigError):
            parse_targets("http://app/_anycable")

    def test_from_config(self):
        ctl = from_config(Config(rpc_host="grpc-list://a:1,b:2", rpc_concurrency=7, rpc_restore=True))
        assert ctl.targets == ["a:1", "b:2"] and ctl.restore_enabled
        assert (ctl.barrier.concurrency, ctl.barrier.request_timeout, ctl.barrier.command_timeout) == (7, None, 3.0)
        ctl = from_config(Config(rpc_request_timeout=250))
        assert ctl.barrier.request_timeout == 0.25
