"""A gRPC AnyCable application (grpc.aio), run as its own process by tests/rpc/apps.py.

It is built from pycable's ``anycable.proto`` compiled by the tests into a directory of its
own (``--pb-dir``), not from pycable's generated package: it shares no code with the
server under test. Same behaviour and stdio protocol as tests/rpc_app/server.mjs:

* stdout: ``{"listening": port}``, then ``{"call": {...}}`` per RPC, ``{"ack": n}`` per
  control command;
* stdin: ``{"cmd": "mode", "delay_ms": N, "status": "ERROR"|..., "grpc_code": "UNAVAILABLE"}``.

``--quiet`` (benchmarks) drops the call reports and the control commands.

The application keeps channel state the way the Ruby SDK does (one istate key per
value), so the server's per-key merge and its JSON encoding in Disconnect are visible.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from urllib.parse import parse_qs, urlsplit

import grpc
import grpc.aio
from google.protobuf import json_format

MODE: dict = {"delay_ms": 0, "status": "", "grpc_code": ""}


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pb-dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no call reports (benchmarks)")
    args = parser.parse_args()
    sys.path.insert(0, args.pb_dir)
    import anycable_pb2 as pb
    import anycable_pb2_grpc as pb_grpc

    def confirm(identifier: str, kind: str = "confirm_subscription") -> str:
        return json.dumps({"identifier": identifier, "type": kind})

    def transmit(identifier: str, message: dict) -> str:
        return json.dumps({"identifier": identifier, "message": message})

    class App(pb_grpc.RPCServicer):
        async def _enter(self, method: str, request, context) -> None:
            if args.quiet:
                return
            meta = dict(context.invocation_metadata())
            emit(
                {
                    "call": {
                        "method": method,
                        "sid": meta.get("sid", ""),
                        "protov": meta.get("protov", ""),
                        "body": json_format.MessageToDict(request, preserving_proto_field_name=True),
                    }
                }
            )
            if MODE["delay_ms"]:
                await asyncio.sleep(MODE["delay_ms"] / 1000)
            if MODE["grpc_code"]:
                await context.abort(getattr(grpc.StatusCode, MODE["grpc_code"]), "failing on purpose")

        def _error(self) -> bool:
            return MODE["status"] == "ERROR"

        async def Connect(self, request, context):
            await self._enter("connect", request, context)
            if self._error():
                return pb.ConnectionResponse(status=pb.ERROR, error_msg="boom")
            user = parse_qs(urlsplit(request.env.url).query).get("user", [""])[0]
            sid = dict(context.invocation_metadata()).get("sid", "")
            if not user:
                return pb.ConnectionResponse(
                    status=pb.FAILURE,
                    transmissions=[json.dumps({"type": "disconnect", "reason": "unauthorized", "reconnect": False})],
                    error_msg="Auth failed",
                )
            return pb.ConnectionResponse(
                status=pb.SUCCESS,
                identifiers=json.dumps({"user": user}),
                transmissions=[json.dumps({"type": "welcome", "sid": sid})],
                env=pb.EnvResponse(cstate={"user": user}),
            )

        async def Command(self, request, context):
            await self._enter("command", request, context)
            if self._error():
                return pb.CommandResponse(status=pb.ERROR, error_msg="boom")
            ident = request.identifier
            params = json.loads(ident)
            user = json.loads(request.connection_identifiers or "{}").get("user", "")
            istate = dict(request.env.istate)
            if request.command == "subscribe":
                room = params.get("room")
                if not room:
                    return pb.CommandResponse(status=pb.FAILURE, transmissions=[confirm(ident, "reject_subscription")])
                return pb.CommandResponse(
                    status=pb.SUCCESS,
                    streams=[f"room:{room}"],
                    transmissions=[confirm(ident), transmit(ident, {"hello": room, "user": user})],
                    env=pb.EnvResponse(istate={"room": room, "count": "0"}),
                )
            if request.command == "unsubscribe":
                return pb.CommandResponse(status=pb.SUCCESS)
            data = json.loads(request.data)
            action = data.get("action")
            if action == "count":
                count = int(istate.get("count", "0")) + 1
                return pb.CommandResponse(
                    status=pb.SUCCESS,
                    transmissions=[transmit(ident, {"count": count})],
                    env=pb.EnvResponse(istate={"count": str(count)}),
                )
            if action == "echo":
                return pb.CommandResponse(status=pb.SUCCESS, transmissions=[transmit(ident, {"echo": data["text"]})])
            if action == "leave":
                return pb.CommandResponse(status=pb.SUCCESS, stop_streams=True)
            if action == "follow":
                return pb.CommandResponse(status=pb.SUCCESS, streams=[data["stream"]])
            if action == "unfollow":
                return pb.CommandResponse(status=pb.SUCCESS, stopped_streams=[data["stream"]])
            if action == "kick":
                return pb.CommandResponse(
                    status=pb.SUCCESS, disconnect=True, transmissions=[transmit(ident, {"bye": True})]
                )
            if action == "forget":  # "" deletes a key (spec §6.3)
                return pb.CommandResponse(status=pb.SUCCESS, env=pb.EnvResponse(istate={data["key"]: ""}))
            if action == "setc":
                return pb.CommandResponse(status=pb.SUCCESS, env=pb.EnvResponse(cstate={data["key"]: data["value"]}))
            if action == "showc":
                return pb.CommandResponse(
                    status=pb.SUCCESS,
                    transmissions=[transmit(ident, {"cstate": dict(request.env.cstate), "istate": istate})],
                )
            return pb.CommandResponse(status=pb.FAILURE, error_msg=f"unknown action {action}")

        async def Disconnect(self, request, context):
            await self._enter("disconnect", request, context)
            if self._error():
                return pb.DisconnectResponse(status=pb.ERROR, error_msg="boom")
            return pb.DisconnectResponse(status=pb.SUCCESS)

        async def Restore(self, request, context):
            await self._enter("restore", request, context)
            return pb.RestoreResponse(status=pb.SUCCESS)

    async def serve() -> None:
        server = grpc.aio.server()
        pb_grpc.add_RPCServicer_to_server(App(), server)
        port = server.add_insecure_port(f"127.0.0.1:{args.port}")
        await server.start()
        emit({"listening": port})
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        acks = 0
        while line := await reader.readline():
            msg = json.loads(line)
            if msg.get("cmd") == "mode":
                MODE.clear()
                MODE.update(
                    {"delay_ms": 0, "status": "", "grpc_code": ""}, **{k: v for k, v in msg.items() if k != "cmd"}
                )
            acks += 1
            emit({"ack": acks})
        await server.stop(0)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
