"""Concurrency bound, per-attempt deadline and retries for RPC calls (spec §6.7).

Every RPC call of a controller goes through one :class:`Barrier`:

* at most ``concurrency`` attempts are in flight (``--rpc_concurrency``, 28); further
  calls wait for a slot, in arrival order;
* each attempt gets a deadline of ``request_timeout`` seconds when it is set
  (``--rpc_request_timeout``);
* an attempt that fails with ``UNAVAILABLE`` or ``RESOURCE_EXHAUSTED`` is retried after
  ``2**attempt * base`` (base 100 ms for ``UNAVAILABLE``, 10 ms for
  ``RESOURCE_EXHAUSTED``; the attempt counter restarts when the code changes between the
  two, as in anycable-go ``rpc.go`` ``retry``) until ``command_timeout``
  (``--rpc_command_timeout``, 3000 ms) after the first attempt started: the last sleep is
  cut short so that a final attempt is made at that deadline, and none after it. Every
  other failure is final.

The slot is held for one attempt only, not across the backoff sleep, so a down
application does not starve calls that would succeed on another host.

Attempts report failures by raising :class:`CallError` with a gRPC status code name; the
HTTP controller maps its failures onto the same names (§6.6 response mapping), so both
transports share this retry policy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from pycable.exceptions import RPCError

__all__ = [
    "Barrier",
    "CallError",
    "UNAVAILABLE",
    "RESOURCE_EXHAUSTED",
    "DEADLINE_EXCEEDED",
    "UNAUTHENTICATED",
    "INVALID_ARGUMENT",
    "UNKNOWN",
    "UNIMPLEMENTED",
    "RETRY_BASE",
]

log = logging.getLogger("pycable.rpc")

T = TypeVar("T")

# gRPC status code names (``grpc.StatusCode.<NAME>.name``).
UNAVAILABLE: Final = "UNAVAILABLE"
RESOURCE_EXHAUSTED: Final = "RESOURCE_EXHAUSTED"
DEADLINE_EXCEEDED: Final = "DEADLINE_EXCEEDED"
UNAUTHENTICATED: Final = "UNAUTHENTICATED"
INVALID_ARGUMENT: Final = "INVALID_ARGUMENT"
UNKNOWN: Final = "UNKNOWN"
UNIMPLEMENTED: Final = "UNIMPLEMENTED"

#: Retried codes and their backoff base in seconds (spec §6.7).
RETRY_BASE: Final[dict[str, float]] = {UNAVAILABLE: 0.1, RESOURCE_EXHAUSTED: 0.01}


class CallError(RPCError):
    """One RPC attempt failed with a status *code* (a gRPC code name)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class Barrier:
    """Bounds concurrency and applies the retry policy of spec §6.7.

    Args:
        concurrency: attempts in flight at most (``<= 0``: unbounded).
        request_timeout: per-attempt deadline in seconds (``None`` or ``0``: none).
        command_timeout: no retry starts later than this many seconds after the call.
        sleep: the backoff sleep (tests pass a fake that advances a fake *clock*).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        concurrency: int,
        request_timeout: float | None = None,
        command_timeout: float = 3.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.concurrency = concurrency
        self.request_timeout = request_timeout or None
        self.command_timeout = command_timeout
        self._sleep = sleep
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency) if concurrency > 0 else None
        #: Attempts in flight and calls waiting for a slot (for logs, tests, metrics).
        self.busy = 0
        self.waiting = 0
        self.stats = {"calls": 0, "retries": 0, "failures": 0}

    def describe(self) -> str:
        return f"concurrency: {self.concurrency}"

    async def call(self, name: str, attempt: Callable[[float | None], Awaitable[T]]) -> T:
        """Run ``attempt(deadline)`` under the policy; returns its result.

        Args:
            name: the method, for the log.
            attempt: one try; receives the per-attempt deadline in seconds (or ``None``)
                and raises :class:`CallError` on failure.

        Raises:
            CallError: the last attempt's error once retries are exhausted or not allowed.
        """
        self.stats["calls"] += 1
        deadline = self._clock() + self.command_timeout
        tries = 0
        last_code = ""
        while True:
            try:
                return await self._attempt(attempt)
            except CallError as exc:
                base = RETRY_BASE.get(exc.code)
                if base is None:
                    self.stats["failures"] += 1
                    raise
                if exc.code != last_code:
                    tries, last_code = 0, exc.code
                remaining = deadline - self._clock()
                if remaining <= 0:
                    self.stats["failures"] += 1
                    raise
                delay = min((2**tries) * base, remaining)
                log.debug("RPC %s failed with %s; retrying in %.0f ms", name, exc.code, delay * 1000)
                self.stats["retries"] += 1
                tries += 1
                await self._sleep(delay)

    async def _attempt(self, attempt: Callable[[float | None], Awaitable[T]]) -> T:
        # The transports apply the per-attempt deadline themselves (a gRPC deadline, the
        # HTTP client's timeout) and report it as DEADLINE_EXCEEDED.
        slots = self._slots
        if slots is None:
            return await attempt(self.request_timeout)
        self.waiting += 1
        try:
            await slots.acquire()
        finally:
            self.waiting -= 1
        self.busy += 1
        try:
            return await attempt(self.request_timeout)
        finally:
            self.busy -= 1
            slots.release()
