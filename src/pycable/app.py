"""The composition root: a :class:`~pycable.config.Config` becomes running components,
started in dependency order and shut down in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal

from pycable import __version__, registry
from pycable.broadcast.base import Broadcaster
from pycable.broadcast.http import HttpBroadcaster
from pycable.broker.base import Broker
from pycable.config import Config
from pycable.exceptions import ConfigError
from pycable.identity import secrets
from pycable.log import setup_logging
from pycable.node.controller import LocalController
from pycable.node.node import Node, NodeConfig
from pycable.protocol.constants import HEALTH_BODY
from pycable.pubsub.base import Subscriber
from pycable.supervisor import notify_ready, worker_id
from pycable.transport.http import Handler, HeadCheck, HttpOptions, Request, Response, Router, ServerState
from pycable.transport.server import Server
from pycable.transport.sse import SSEHandler, SSEOptions
from pycable.transport.ws import WSOptions

__all__ = ["App", "run", "build_controller"]

log = logging.getLogger("pycable.main")


def build_controller(config: Config) -> LocalController:
    """The RPC-less chain in front of the application's RPC (when RPC is in use)."""
    rpc = registry.build("rpc", registry.CONTROLLERS, config.rpc_kind, config) if config.uses_rpc else None
    secret = config.secret
    return LocalController(
        jwt_secret=secrets.jwt_secret(secret, config.jwt_secret),
        jwt_param=config.jwt_param,
        enforce_jwt=config.enforce_jwt,
        noauth=config.noauth or config.public,
        streams_secret=secrets.streams_secret(secret, config.streams_secret),
        public_streams=config.public_streams or config.public,
        streams_whisper=config.streams_whisper,
        streams_presence=config.streams_presence,
        turbo_secret=secrets.turbo_streams_secret(secret, config.streams_secret, config.turbo_streams_secret)
        if config.turbo_streams
        else "",
        rpc=rpc,
    )


def capability_warnings(broker: Broker, pubsub: Subscriber, broadcasters: list[Broadcaster]) -> list[str]:
    """Combinations that work but do not do what one may expect (style rule 3)."""
    warnings = []
    if pubsub.is_multi_node and broker.supports_history and not broker.is_distributed:
        warnings.append(
            "a multi-node pub/sub with a single-node broker: history and sessions live only on the node "
            "that registered them, so clients resuming on another node get no history; use --broker=redis or nats"
        )
    if broker.supports_history:
        for b in broadcasters:
            if b.is_fanout:
                warnings.append(
                    f"the fan-out broadcaster {type(b).__name__} bypasses the broker: its messages get no offsets "
                    "and no history; use redisx or http for reliable streams"
                )
    return warnings


class App:
    """A configured server: node, broker, broadcasters and listeners."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.presets = config.apply_presets()
        config.validate()
        # Embedded NATS (--embed_nats): started before the broker, stopped after everything.
        self.enats = None
        if config.embed_nats:
            from pycable import enats

            self.enats = enats.from_config(config)
        self.broker: Broker = registry.build("broker", registry.BROKERS, config.broker or "none", config)
        self.pubsub: Subscriber = registry.build("pubsub", registry.PUBSUBS, config.pubsub or "none", config)
        self.controller = build_controller(config)
        # Presence follows the broker: the same backend keeps both.
        presence = registry.build("presence", registry.PRESENCES, config.broker or "none", config)
        self.node = Node(
            self.controller,
            self.broker,
            self.pubsub,
            config=NodeConfig(
                sessions_ttl=config.sessions_ttl,
                disconnect_mode=config.disconnect_mode,
                disconnect_rate=config.disconnect_rate,
                shutdown_timeout=config.shutdown_timeout,
                env_headers=tuple(h.lower() for h in config.headers),
                proxy_cookies=tuple(config.proxy_cookies),
                jwt_header=f"x-{config.jwt_param}".lower() if config.jwt_secret or config.secret_or_empty else "",
            ),
            presence=presence,
        )
        self.state = ServerState(self.node)
        bport = config.effective_broadcast_port
        self.http_broadcaster: HttpBroadcaster | None = None
        self.broadcasters: list[Broadcaster] = []
        for name in config.broadcast_adapter:
            broadcaster = registry.build("broadcast adapter", registry.BROADCASTERS, name, config)
            if isinstance(broadcaster, HttpBroadcaster):
                self.http_broadcaster = broadcaster
            else:
                self.broadcasters.append(broadcaster)
        ws = WSOptions(
            ping_interval=config.ping_interval,
            ping_precision=config.ping_timestamp_precision,
            pong_timeout=config.pong_timeout,
            max_pending=config.ws_max_pending_size,
            write_timeout=config.ws_write_timeout,
            pong_all=config.enable_native_pings,
        )
        main = HttpOptions(
            ws_paths=frozenset(config.path),
            routes=Router().add(config.health_path, self._health, max_body=0),
            allowed_origins=tuple(config.allowed_origins),
            max_conn=config.max_conn,
            max_message_size=config.max_message_size,
            version=__version__,
            ws=ws,
        )
        if config.sse:
            sse = SSEOptions(
                path=config.sse_path,
                allowed_origins=tuple(config.allowed_origins),
                max_conn=config.max_conn,
                ping_interval=config.ping_interval,
                ping_precision=config.ping_timestamp_precision,
                max_pending=config.ws_max_pending_size,
                version=__version__,
            )
            main.routes.add(config.sse_path, SSEHandler(self.state, sse), max_body=sse.max_body)
        extra = None
        if self.http_broadcaster is not None:
            route = self._broadcast_route(self.http_broadcaster)
            check = self._broadcast_check(self.http_broadcaster)
            if bport == config.port:
                main.routes.add(config.http_broadcast_path, route, check=check)
            else:
                routes = (Router().add(config.http_broadcast_path, route, check=check)
                          .add(config.health_path, self._health, max_body=0))
                extra = (bport, HttpOptions(ws_paths=frozenset(), routes=routes))
        self.server = Server(self.state, config.host, config.port, main, extra, reuse_port=bool(worker_id()))
        #: Components whose start began (enats, node, broadcasters, server): what shutdown stops.
        self._begun: set[object] = set()

    def health(self) -> list[str]:
        """Why the server is not ready: one line per configured broker, pub/sub or broadcaster
        that is down (empty: ready)."""
        components: list[Broker | Subscriber | Broadcaster] = [self.broker, self.pubsub, *self.broadcasters]
        return [problem for component in components if (problem := component.health())]

    async def _health(self, req: Request) -> Response:
        """``/health``: 200 when ready, 503 with the reasons while a dependency is down."""
        problems = self.health()
        if not problems:
            return Response(200, HEALTH_BODY)
        return Response(503, ("Not ready: " + "; ".join(problems)).encode())

    @staticmethod
    def _broadcast_check(broadcaster: HttpBroadcaster) -> HeadCheck:
        """The key is checked once the head is complete: a wrong one is answered 401 and the
        body is never read (nor is a 100 Continue sent)."""

        def check(req: Request) -> Response | None:
            if broadcaster.authorized(req.headers.get("authorization")):
                return None
            return Response(401, b'{"error":"missing or invalid broadcast key (Authorization: Bearer <key>)"}')

        return check

    @staticmethod
    def _broadcast_route(broadcaster: HttpBroadcaster) -> Handler:
        async def route(req: Request) -> Response:
            status, body = await broadcaster.handle(req.method, req.headers.get("authorization"), req.body)
            return Response(status, body)

        return route

    async def start(self) -> None:
        cfg = self.config
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.info("Starting pycable %s (pid: %d, open file limit: %d)", __version__, os.getpid(), soft)
        if cfg.loaded_from:
            log.info("Using configuration from file: %s", cfg.loaded_from)
        if self.presets:
            log.info("load presets presets=%s", ",".join(self.presets))
        if cfg.public:
            log.warning("Server is running in the public mode")
        for warning in capability_warnings(self.broker, self.pubsub, self.broadcasters):
            log.warning("%s", warning)
        # What began starting is shut down (in reverse) even if its start failed half-way.
        if self.enats is not None:
            self._begun.add("enats")
            await self.enats.start()
            log.info("%s", self.enats.describe())
        self._begun.add("node")
        await self.node.start()
        broker_line, pubsub_line, *controller_lines = self.node.describe()
        log.info("%s", broker_line)  # context=main, as AnyCable logs it
        _context("pubsub").info("%s", pubsub_line)
        for line in controller_lines:
            log.info("%s", line)
        if self.http_broadcaster is not None:
            self._begun.add("http_broadcaster")
            await self.http_broadcaster.start(self.node)
        for broadcaster in self.broadcasters:
            self._begun.add(id(broadcaster))
            await broadcaster.start(self.node)
            _context("broadcast").info("%s", broadcaster.describe())
        self._begun.add("server")
        await self.server.start()
        if self.http_broadcaster is not None:
            if self.server.extra is not None:
                self.http_broadcaster.url = f"http://{cfg.host}:{self.server.extra[0]}"
            else:
                self.http_broadcaster.url = f"http://{cfg.host}:{self.server.port}"
            _context("broadcast").info("%s provider=http", self.http_broadcaster.describe())
        for path in cfg.path:
            log.info("Handle WebSocket connections at http://%s:%d%s", cfg.host, self.server.port, path)
        if cfg.sse:
            log.info("Handle SSE requests at http://%s:%d%s", cfg.host, self.server.port, cfg.sse_path)
        log.info("Handle health requests at http://%s:%d%s", cfg.host, self.server.port, cfg.health_path)
        for problem in self.health():
            log.warning("not ready: %s (%s answers 503 until it is)", problem, cfg.health_path)

    async def shutdown(self) -> None:
        """Stop what :meth:`start` began, in reverse order (after a failed start: what did start)."""
        begun = self._begun
        if "server" in begun:
            log.info(
                "Shutting down... (hit Ctrl-C to stop immediately or wait for up to %gs for graceful shutdown)",
                self.config.shutdown_timeout,
            )
        if self.http_broadcaster is not None and "http_broadcaster" in begun:
            await self.http_broadcaster.shutdown()
        for broadcaster in reversed(self.broadcasters):
            if id(broadcaster) in begun:
                await broadcaster.shutdown()
        # One budget for the whole shutdown: closing clients, then the Disconnect queue.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_timeout
        if "server" in begun:
            await self.server.shutdown(self.config.shutdown_timeout)
        if "node" in begun:
            await self.node.shutdown(max(deadline - loop.time(), 0.0))
        if self.enats is not None and "enats" in begun:
            await self.enats.shutdown()
        begun.clear()


def _context(name: str) -> logging.Logger:
    """The logger whose lines say ``context=<name>`` (spec §8.3: pubsub, broadcast, …)."""
    return logging.getLogger(f"pycable.{name}")


async def serve(config: Config) -> int:
    """Start, run until SIGTERM/SIGINT, shut down; returns the exit code.

    A failed start (a port in use, embedded NATS that does not come up, …) is logged as one
    clear error, what did start is stopped, and the code is 1. A signal during the start
    stops it there (code 0).
    """
    app = App(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        starting = asyncio.ensure_future(app.start())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if not starting.done():  # a signal while starting: stop there
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        elif (exc := starting.exception()) is not None:
            code = 1
            if isinstance(exc, (OSError, ConfigError)):
                log.error("cannot start: %s", exc)
            else:
                log.error("cannot start", exc_info=exc)
        else:
            notify_ready()  # to the supervisor, when this is one of its workers
            await stopped
        stopped.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    await app.shutdown()  # idempotent: after a failed start, stops what did start
    return code


def run(config: Config) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    setup_logging(config.log_level, config.log_format, worker=worker_id())
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is an optional extra
        runner = asyncio.run  # type: ignore[assignment]
    try:
        return runner(serve(config))
    except ConfigError:
        raise
