"""Per-connection protocol timing and input policing, sans-I/O (the clock is passed in).

* :class:`Heartbeat`: when to ping (§1.5), when a missing pong ends the session.
* :class:`FloodGuard`: malformed frames are dropped and counted; more than ``limit`` in
  ``window`` seconds ends the session with ``invalid_request`` (preface decision 1).
"""

from __future__ import annotations

import re
from collections import deque
from typing import Literal

__all__ = ["Heartbeat", "FloodGuard", "ping_timestamp", "redact_sid", "redact_url"]

Precision = Literal["s", "ms", "ns"]


def redact_sid(sid: str) -> str:
    """A session id as log lines show it: its first 4 characters. A sid is a bearer secret
    (whoever holds it may restore the session), so it is never logged whole."""
    return sid[:4] + "…" if len(sid) > 4 else "…"


def redact_url(url: str) -> str:
    """*url* with the value of a ``sid`` query parameter redacted (for logs and the RPC env)."""
    return re.sub(r"([?&]sid=)[^&#]*", lambda m: m.group(1) + "[REDACTED]", url)


def ping_timestamp(now: float, precision: str = "s") -> int:
    """The ping's ``message``: unix time in seconds, ms or ns (``?ptp=``)."""
    if precision == "ms":
        return int(now * 1000)
    if precision == "ns":
        return int(now * 1_000_000_000)
    return int(now)


class Heartbeat:
    """Ping schedule and pong deadline of one connection.

    Any incoming client frame counts as a pong. With ``pong_timeout`` of 0 no deadline
    is ever armed. The transport calls :meth:`tick` at :meth:`next_wakeup`.

    Args:
        interval: seconds between pings (``--ping_interval`` or ``?pi=``).
        pong_timeout: seconds a ping may stay unanswered (``--pong_timeout``); 0 = off.
        now: the current time.
        first_delay: delay of the first ping (defaults to *interval*).
    """

    __slots__ = ("interval", "pong_timeout", "next_ping", "pong_deadline")

    def __init__(self, interval: float, pong_timeout: float, now: float, first_delay: float | None = None):
        self.interval = interval
        self.pong_timeout = pong_timeout
        delay = interval if first_delay is None else first_delay
        self.next_ping = now + delay
        self.pong_deadline: float | None = now + delay + pong_timeout if pong_timeout > 0 else None

    def received(self) -> None:
        """A client frame arrived: it counts as a pong."""
        self.pong_deadline = None

    def tick(self, now: float) -> tuple[bool, bool]:
        """Returns ``(send_ping, pong_missed)`` for *now*."""
        if self.pong_deadline is not None and now >= self.pong_deadline:
            return False, True
        if now >= self.next_ping:
            self.next_ping = max(self.next_ping + self.interval, now + self.interval / 2)
            if self.pong_timeout > 0 and self.pong_deadline is None:
                self.pong_deadline = now + self.pong_timeout
            return True, False
        return False, False

    def next_wakeup(self) -> float:
        if self.pong_deadline is not None:
            return min(self.next_ping, self.pong_deadline)
        return self.next_ping


class FloodGuard:
    """Counts malformed frames in a sliding window."""

    __slots__ = ("limit", "window", "times", "total")

    def __init__(self, limit: int = 10, window: float = 10.0):
        self.limit = limit
        self.window = window
        self.times: deque[float] | None = None  # allocated on the first malformed frame
        self.total = 0

    def record(self, now: float) -> bool:
        """Count one malformed frame; True when the connection is over the limit."""
        self.total += 1
        times = self.times
        if times is None:
            times = self.times = deque()
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        return len(times) > self.limit
