"""Listening sockets and graceful shutdown (spec §1.6 ``server_restart``)."""

from __future__ import annotations

import asyncio
import logging

from pycable.transport.http import HttpOptions, HttpProtocol, ServerState

__all__ = ["Server"]

log = logging.getLogger("pycable.server")


class Server:
    """Serves one node on the main port and, optionally, a separate HTTP port.

    Args:
        state: the shared :class:`ServerState`.
        host, port: the main listener (WebSocket, health, routes).
        options: main-port options.
        extra: ``(port, options)`` for a second HTTP-only listener (the broadcast port).
        reuse_port: bind with ``SO_REUSEPORT`` (``--workers``: the workers share the ports).
    """

    def __init__(
        self,
        state: ServerState,
        host: str,
        port: int,
        options: HttpOptions,
        extra: tuple[int, HttpOptions] | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.state = state
        self.host = host
        self.port = port
        self.options = options
        self.extra = extra
        self.reuse_port = reuse_port or None
        self.servers: list[asyncio.Server] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        main = await loop.create_server(
            lambda: HttpProtocol(self.state, self.options), self.host, self.port, backlog=4096, reuse_address=True,
            reuse_port=self.reuse_port,
        )
        self.servers.append(main)
        self.port = main.sockets[0].getsockname()[1]
        if self.extra is not None:
            port, opts = self.extra
            srv = await loop.create_server(
                lambda: HttpProtocol(self.state, opts), self.host, port, backlog=1024, reuse_address=True,
                reuse_port=self.reuse_port,
            )
            self.servers.append(srv)
            self.extra = (srv.sockets[0].getsockname()[1], opts)

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, tell every client ``server_restart``, close with 1001, wait."""
        self.state.shutting_down = True
        for srv in self.servers:
            srv.close()
        for conn in list(self.state.connections):
            conn.going_away()
        for proto in list(self.state.http):
            if proto.writer is not None:  # a streaming response: its own goodbye, or closed
                proto.writer.going_away()
            elif proto.transport is not None and not proto.busy:
                proto.transport.close()
        if self.state.connections:
            try:
                await asyncio.wait_for(self.state.drained.wait(), timeout)
            except TimeoutError:
                log.warning("%d connections still open after %gs: aborting", len(self.state.connections), timeout)
        for conn in list(self.state.connections):
            conn.abort()
        for srv in self.servers:
            try:
                await asyncio.wait_for(srv.wait_closed(), 1.0)
            except TimeoutError:
                pass
