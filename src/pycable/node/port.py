"""The node's port: everything a transport may use of the node, and what the node needs from
a transport's connection. Transports (``pycable.transport``) import this module only.

A transport accepts a client, describes it (:class:`Handshake`) and calls
:meth:`NodePort.open` with its :class:`Connection`; the node builds the session (its sid and
RPC env) and runs Restore-or-Connect in the background, then calls ``conn.ready()`` (commands
may run) or closes the connection (``conn.close``). The transport runs the session's commands
one at a time (:meth:`NodePort.run`), tells the node when it starts closing
(:meth:`NodePort.closing`: nothing more is fanned out to it) and when the client is gone
(:meth:`NodePort.closed`: its streams are released and the app gets its Disconnect).

How bytes look on the wire is the connection's :attr:`Connection.encoding`: the node and its
hub never assume WebSocket framing. A broadcast is encoded once per (identifier, encoding) and
the same bytes are written to every subscriber with that encoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pycable.node.session import Connection, Session
from pycable.protocol.codec import Command
from pycable.protocol.encoding import Encoding

__all__ = ["Connection", "Encoding", "Handshake", "NodePort", "Session"]


@dataclass(frozen=True, slots=True)
class Handshake:
    """A client as a transport accepted it.

    Attributes:
        url: the request URL (``http(s)://host/path?query``), for the RPC env.
        headers: the request headers, names lower-cased.
        remote: the peer's address.
        query: query parameters (the first value of each).
        subprotocols: the WebSocket subprotocols the client offered.
        ext: the session speaks the extended protocol (``actioncable-v1-ext-json``).
    """

    url: str
    headers: Mapping[str, str]
    remote: str
    query: Mapping[str, str]
    subprotocols: tuple[str, ...] = ()
    ext: bool = False


class NodePort(Protocol):
    """The node as transports see it."""

    def open(self, conn: Connection, handshake: Handshake) -> Session:
        """Accept a client: build its session and start Restore-or-Connect in the background."""
        ...

    async def run(self, session: Session, cmd: Command) -> str | None:
        """Run one command; returns why it was refused as malformed (else ``None``)."""
        ...

    def closing(self, session: Session) -> None:
        """The connection is closing: send nothing more to it."""
        ...

    def closed(self, session: Session) -> None:
        """The connection is gone: release its streams, tell the application (background)."""
        ...

    def rewire(self, session: Session) -> None:
        """The connection's ``frame_writer`` changed (e.g. a stream that starts after its
        subscriptions were made): the fan-out uses the new one."""
        ...

    def count_malformed(self) -> None:
        """A client message was dropped as malformed (for stats)."""
        ...
