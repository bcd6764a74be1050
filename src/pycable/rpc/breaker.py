"""A circuit breaker for HTTP RPC (spec §6.6), with the settings anycable-go gives gobreaker.

States:

* **closed**: requests pass. Counts reset every ``interval`` (10 s). The breaker trips
  (→ open) when a window holds at least ``min_requests`` (10) requests of which at least
  ``failure_ratio`` (80 %) failed.
* **open**: every request fails at once (``"http rpc is temporarily unavailable"``) for
  ``open_for`` (5 s), then → half-open.
* **half-open**: at most ``half_open_max`` (5) trial requests pass; that many successes
  in a row close the breaker, any failure opens it again.

As in anycable-go, only transport failures (connection refused or reset) count as failures;
any HTTP answer, whatever its status, is a success for the breaker (the application is
up), and a timeout counts as neither. A result from an earlier generation (a request
started before the last state change) is ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

__all__ = ["CircuitBreaker", "CLOSED", "OPEN", "HALF_OPEN"]

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"


class CircuitBreaker:
    """See the module docstring. Not task-safe across threads; one event loop only."""

    def __init__(
        self,
        *,
        min_requests: int = 10,
        failure_ratio: float = 0.8,
        interval: float = 10.0,
        open_for: float = 5.0,
        half_open_max: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_requests = min_requests
        self.failure_ratio = failure_ratio
        self.interval = interval
        self.open_for = open_for
        self.half_open_max = half_open_max
        self.clock = clock
        self._state = CLOSED
        self._generation = 0
        self._expiry = clock() + interval
        self._requests = 0
        self._failures = 0
        self._successes_in_row = 0

    @property
    def state(self) -> str:
        self._tick(self.clock())
        return self._state

    def allow(self) -> int | None:
        """Admit one request: its generation token, or ``None`` when it must fail fast."""
        self._tick(self.clock())
        if self._state == OPEN:
            return None
        if self._state == HALF_OPEN and self._requests >= self.half_open_max:
            return None
        self._requests += 1
        return self._generation

    def record(self, token: int, success: bool) -> None:
        """Report the outcome of a request admitted with *token*."""
        now = self.clock()
        self._tick(now)
        if token != self._generation:
            return
        if success:
            self._successes_in_row += 1
            if self._state == HALF_OPEN and self._successes_in_row >= self.half_open_max:
                self._switch(CLOSED, now)
            return
        self._failures += 1
        self._successes_in_row = 0
        tripped = self._requests >= self.min_requests and self._failures / self._requests >= self.failure_ratio
        if self._state == HALF_OPEN or tripped:
            self._switch(OPEN, now)

    def _tick(self, now: float) -> None:
        if self._state == CLOSED and now >= self._expiry:
            self._new_generation(now + self.interval)
        elif self._state == OPEN and now >= self._expiry:
            self._switch(HALF_OPEN, now)

    def _switch(self, state: str, now: float) -> None:
        self._state = state
        expiry = {CLOSED: now + self.interval, OPEN: now + self.open_for, HALF_OPEN: float("inf")}[state]
        self._new_generation(expiry)

    def _new_generation(self, expiry: float) -> None:
        self._generation += 1
        self._expiry = expiry
        self._requests = self._failures = self._successes_in_row = 0
