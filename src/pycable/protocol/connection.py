"""The policy of one client connection, sans-I/O: what a transport does with what it receives
and when it must ping or close. Every transport (WebSocket, SSE POST bodies) runs it; the
clock is passed in, nothing here reads it or touches a socket.

* **Input**: :meth:`ConnectionPolicy.receive_text` decodes one client message. A ``pong``
  only counts as a keepalive; any other command is queued, in order. A message that cannot
  be decoded is dropped and counted (:class:`Malformed`); more than ``flood_limit`` in
  ``flood_window`` seconds ends the connection with ``invalid_request`` (a :class:`Close`).
* **Queue limit**: more than ``max_queued`` commands waiting counts as malformed ("too many
  commands in flight"): a client cannot grow the server's memory by sending faster than its
  commands run.
* **Auth gate**: queued commands are handed out (:meth:`next_command`) only after
  :meth:`authenticated`; what arrives before waits in the queue.
* **Heartbeat**: :meth:`tick` says when to ping (only once authenticated) and when a missing
  pong ends the connection (``no_pong``); any received message counts as a pong (§1.5).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from pycable.exceptions import ProtocolError
from pycable.protocol import constants as c
from pycable.protocol.codec import Command, decode_command
from pycable.protocol.session import FloodGuard, Heartbeat

__all__ = ["Close", "ConnectionPolicy", "Malformed", "MAX_QUEUED_COMMANDS", "INVALID_REQUEST_CLOSE", "NO_PONG_CLOSE"]

#: Commands queued per connection before the client counts as flooding.
MAX_QUEUED_COMMANDS = 1024


@dataclass(frozen=True, slots=True)
class Close:
    """The connection must end: send ``disconnect`` with *reason* / *reconnect*, then close
    with *code* and *text* (the WebSocket close frame's code and reason)."""

    reason: str
    reconnect: bool
    code: int
    text: str


INVALID_REQUEST_CLOSE = Close(c.INVALID_REQUEST, False, c.CLOSE_INVALID_DATA, "Invalid request")
NO_PONG_CLOSE = Close(c.NO_PONG, True, c.CLOSE_NORMAL, "No Pong")


@dataclass(frozen=True, slots=True)
class Malformed:
    """A client message was dropped (*why*); *close* is set when the client is over the limit."""

    why: str
    close: Close | None = None


class ConnectionPolicy:
    """Flood guard, heartbeat, command queue and auth gate of one connection.

    Args:
        interval: seconds between pings.
        pong_timeout: seconds a ping may stay unanswered; 0 = never enforced.
        now: the current time.
        first_delay: delay of the first ping; by default a random one in
            ``[interval/2, 3·interval/2)`` (spec §1.5), so that clients connected together
            are not pinged together for ever after.
        max_queued: the queue limit.
    """

    __slots__ = ("heartbeat", "flood", "commands", "ready", "max_queued")

    def __init__(
        self,
        interval: float,
        pong_timeout: float,
        now: float,
        first_delay: float | None = None,
        max_queued: int = MAX_QUEUED_COMMANDS,
    ) -> None:
        if first_delay is None:
            first_delay = interval * (0.5 + random.random())
        self.heartbeat = Heartbeat(interval, pong_timeout, now, first_delay=first_delay)
        self.flood = FloodGuard()
        #: Commands waiting to run, in order; created on demand and dropped when drained (an
        #: empty deque costs 0.76 KB, and most connections are idle).
        self.commands: deque[Command] | None = None
        self.ready = False
        self.max_queued = max_queued

    # -- input ----------------------------------------------------------------------------

    def receive_text(self, data: bytes | str, now: float) -> Malformed | None:
        """One client message (a complete text frame, or a line of a POST body)."""
        self.heartbeat.received()
        try:
            cmd = decode_command(data)
        except ProtocolError as exc:
            return self.malformed(str(exc), now)
        if cmd.command == c.PONG:
            return None
        queue = self.commands
        if queue is None:
            queue = self.commands = deque()
        elif len(queue) >= self.max_queued:
            return self.malformed("too many commands in flight", now)
        queue.append(cmd)
        return None

    def activity(self) -> None:
        """Something else arrived (a control frame): it counts as a pong."""
        self.heartbeat.received()

    def malformed(self, why: str, now: float) -> Malformed:
        """Count a message that could not be used (also one a command handler refused)."""
        return Malformed(why, INVALID_REQUEST_CLOSE if self.flood.record(now) else None)

    # -- commands ---------------------------------------------------------------------------

    def authenticated(self) -> None:
        """Connect (or a restore) succeeded: queued commands may run."""
        self.ready = True

    @property
    def runnable(self) -> bool:
        """Authenticated, with commands waiting."""
        return self.ready and bool(self.commands)

    def next_command(self) -> Command | None:
        """The next command to run, or ``None`` (not authenticated, or none waiting)."""
        queue = self.commands
        if not self.ready or not queue:
            return None
        cmd = queue.popleft()
        if not queue:
            self.commands = None
        return cmd

    # -- time -------------------------------------------------------------------------------

    def tick(self, now: float) -> tuple[bool, Close | None]:
        """At :meth:`next_wakeup`: ``(send_ping, close)``."""
        send_ping, missed = self.heartbeat.tick(now)
        if missed:
            return False, NO_PONG_CLOSE
        return send_ping and self.ready, None

    def next_wakeup(self) -> float:
        return self.heartbeat.next_wakeup()
