"""``python manage.py pycable_grpc board.cable:cable [--address 127.0.0.1:50051]``: serve the
application's RPC over gRPC, for projects that run pycable with ``--rpc_host host:port``
instead of mounting the HTTP RPC in their ASGI app. SIGINT/SIGTERM stop it gracefully."""

from __future__ import annotations

import asyncio
import signal
from importlib import import_module
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pycable.sdk import Application


def load_application(path: str) -> Application:
    """``module:attribute`` → the :class:`Application` it names."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise CommandError(f"give the application as module:attribute (e.g. board.cable:cable), got {path!r}")
    try:
        app = getattr(import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise CommandError(f"cannot load {path!r}: {exc}") from exc
    if not isinstance(app, Application):
        raise CommandError(f"{path!r} is a {type(app).__name__}, not a pycable.sdk.Application")
    return app


class Command(BaseCommand):
    help = "Serve a pycable SDK application's RPC over gRPC (pycable --rpc_host <address>)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("application", help="module:attribute of the Application, e.g. board.cable:cable")
        parser.add_argument("--address", default="127.0.0.1:50051", help="host:port to listen on")
        parser.add_argument("--grace", type=float, default=10.0, help="seconds calls in flight get on shutdown")

    def handle(self, *args: Any, **options: Any) -> None:
        app = load_application(options["application"])
        asyncio.run(self.serve(app, options["address"], options["grace"]))

    async def serve(self, app: Application, address: str, grace: float) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = app.grpc_server(address)
        await server.start()
        self.stdout.write(f"Serving anycable.RPC on {address} (pycable --rpc_host {address})")
        self.stdout.flush()
        await stop.wait()
        self.stdout.write("Stopping the gRPC server")
        await server.stop(grace)
