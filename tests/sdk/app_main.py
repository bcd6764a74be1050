"""Runs the SDK test application (tests/sdk/chat_app.py) as its own process, served over HTTP
RPC (uvicorn) or gRPC (grpc.aio), speaking the stdio protocol of tests/rpc/apps.py:

* stdout: ``{"listening": port}``, then ``{"call": {...}}`` per RPC request and
  ``{"event": {...}}`` per application callback, ``{"ack": n}`` per control command;
* stdin: ``{"cmd": "mode", "delay_ms": N, "status": "ERROR", "http_status": S}``.

The reporting and the failure modes are a thin layer around the SDK's own adapters (an
ASGI middleware, a Servicer subclass): the RPC is answered by ``app.asgi()`` and the SDK's
``Servicer``. ``--quiet`` (benchmarks) serves the bare SDK adapters.

The application's broadcasts go where ``ANYCABLE_*`` says (the tests set it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chat_app

MODE: dict[str, Any] = {}


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def reporting_asgi(inner: Any) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        emit({"call": {
            "method": scope["path"].rstrip("/").rpartition("/")[2],
            "sid": headers.get("x-anycable-meta-sid", ""),
            "protov": headers.get("x-anycable-meta-protov", ""),
            "auth": headers.get("authorization", ""),
            "content_type": headers.get("content-type", ""),
            "body": body,
        }})  # fmt: skip
        if MODE.get("delay_ms"):
            await asyncio.sleep(MODE["delay_ms"] / 1000)
        if MODE.get("http_status", 200) != 200:
            payload = b'{"error":"failing on purpose"}'
            await send({"type": "http.response.start", "status": MODE["http_status"],
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": payload})
            return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await inner(scope, replay, send)

    return app


def reporting_servicer(app: Any) -> Any:
    import grpc
    from google.protobuf import json_format

    from pycable.rpc._pb import anycable_pb2 as pb
    from pycable.sdk.rpc_grpc import Servicer

    errors = {
        "connect": lambda: pb.ConnectionResponse(status=pb.ERROR, error_msg="boom"),
        "command": lambda: pb.CommandResponse(status=pb.ERROR, error_msg="boom"),
        "disconnect": lambda: pb.DisconnectResponse(status=pb.ERROR, error_msg="boom"),
        "restore": lambda: pb.RestoreResponse(status=pb.ERROR, error_msg="boom"),
    }

    class Reporting(Servicer):  # type: ignore[misc]
        async def _enter(self, method: str, request: Any, context: Any) -> Any:
            meta = dict(context.invocation_metadata())
            emit({"call": {
                "method": method,
                "sid": meta.get("sid", ""),
                "protov": meta.get("protov", ""),
                "body": json_format.MessageToDict(request, preserving_proto_field_name=True),
            }})  # fmt: skip
            if MODE.get("delay_ms"):
                await asyncio.sleep(MODE["delay_ms"] / 1000)
            if MODE.get("grpc_code"):
                await context.abort(getattr(grpc.StatusCode, MODE["grpc_code"]), "failing on purpose")
            if MODE.get("status") == "ERROR":
                return errors[method]()
            return None

        async def Connect(self, request: Any, context: Any) -> Any:
            return await self._enter("connect", request, context) or await super().Connect(request, context)

        async def Command(self, request: Any, context: Any) -> Any:
            return await self._enter("command", request, context) or await super().Command(request, context)

        async def Disconnect(self, request: Any, context: Any) -> Any:
            return await self._enter("disconnect", request, context) or await super().Disconnect(request, context)

        async def Restore(self, request: Any, context: Any) -> Any:
            return await self._enter("restore", request, context) or await super().Restore(request, context)

    return Reporting(app)


async def control(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    acks = 0
    while line := await reader.readline():
        msg = json.loads(line)
        if msg.get("cmd") == "mode":
            MODE.clear()
            MODE.update({k: v for k, v in msg.items() if k != "cmd"})
        acks += 1
        emit({"ack": acks})
    stop.set()


async def serve_http(app: Any, port: int, quiet: bool) -> None:
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    asgi = app.asgi() if quiet else reporting_asgi(app.asgi())
    config = uvicorn.Config(asgi, log_level="warning", lifespan="off", access_log=False, timeout_keep_alive=60)
    server = uvicorn.Server(config)
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            return
        await asyncio.sleep(0.01)
    emit({"listening": sock.getsockname()[1]})
    await control(stop)
    server.should_exit = True
    await task


async def serve_grpc(app: Any, port: int, quiet: bool) -> None:
    import grpc.aio

    server = grpc.aio.server()
    if quiet:
        app.add_grpc_service(server)
    else:
        from pycable.rpc._pb import anycable_pb2_grpc as pb_grpc

        pb_grpc.add_RPCServicer_to_server(reporting_servicer(app), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    emit({"listening": bound})
    await control(asyncio.Event())
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=("http", "grpc"), required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no reports (benchmarks)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if not args.quiet:
        chat_app.EVENTS.append(lambda event: emit({"event": event}))
    app = chat_app.build(sync_callbacks=os.environ.get("SDK_SYNC_CALLBACKS", "thread"))
    serve = serve_http if args.transport == "http" else serve_grpc
    try:
        import uvloop

        uvloop.run(serve(app, args.port, args.quiet))
    except ImportError:
        asyncio.run(serve(app, args.port, args.quiet))


if __name__ == "__main__":
    main()
