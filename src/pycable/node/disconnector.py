"""The Disconnect queue (spec §6.5): one Disconnect call per closed session, rate-limited.

A closed session is queued with a snapshot of what the application needs (identifiers,
subscriptions and the env of :func:`session_env`), so the node can forget the session at
once. A worker starts one call every ``1 / rate`` seconds (``--disconnect_rate``, 100/s);
the calls run concurrently, bounded by the controller's own RPC barrier. A mass
disconnect (a deploy, a network blip) thus reaches the application as a steady stream
instead of a spike.

On shutdown the backlog is started at once (no pacing, as anycable-go's
``DisconnectQueue.Shutdown``) and the calls get until ``--shutdown_timeout``; calls still
running then are cancelled and counted in the log. A failing call is logged only (§6.7).
Calls are never retried here beyond the controller's own retry policy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from pycable.exceptions import RPCError
from pycable.protocol.session import redact_sid
from pycable.rpc.base import Controller, Env

if TYPE_CHECKING:
    from pycable.node.session import Session

__all__ = ["Disconnector", "DisconnectCall", "session_env"]

log = logging.getLogger("pycable.node")

#: Backlog size above which a warning is logged (anycable-go's queue capacity). The queue
#: itself is not capped: dropping a Disconnect would lose an application callback.
BACKLOG_WARNING = 4096


def session_env(session: Session) -> Env:
    """The env of a Disconnect (and Restore) call: url, headers, cstate, and *every*
    channel's state, each JSON-encoded under its identifier (spec §6.2
    ``buildDisconnectEnv``)."""
    env = session.env
    istate = {ident: orjson.dumps(state).decode() for ident, state in session.istate.items()}
    return Env(env.url, env.headers, env.sid, env.remote_addr, dict(env.cstate), istate, env.query, env.subprotocols)


@dataclass(slots=True, frozen=True)
class DisconnectCall:
    identifiers: str
    subscriptions: list[str]
    env: Env


class Disconnector:
    """Paces Disconnect calls to *controller*.

    Args:
        controller: receives ``disconnect(identifiers, subscriptions, env)``.
        rate: calls started per second (``<= 0``: no pacing).
    """

    def __init__(self, controller: Controller, rate: int = 100) -> None:
        self.controller = controller
        self.rate = rate
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._queue: deque[DisconnectCall] = deque()
        self._inflight: set[asyncio.Task[None]] = set()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._draining = False
        self._closed = False
        self._warned = False
        self.stats = {"queued": 0, "called": 0, "failed": 0, "abandoned": 0}

    def describe(self) -> str:
        return f"Disconnect queue: {self.rate}/s" if self.rate > 0 else "Disconnect queue: no rate limit"

    @property
    def pending(self) -> int:
        """Calls queued or in flight."""
        return len(self._queue) + len(self._inflight)

    async def start(self) -> None:
        if self._worker is None and not self._closed:
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run())

    def enqueue(self, identifiers: str, subscriptions: list[str], env: Env) -> None:
        """Queue one Disconnect call (synchronous: safe to call from any callback)."""
        call = DisconnectCall(identifiers, subscriptions, env)
        if self._closed:
            log.warning("disconnect queue is closed: no Disconnect call for sid=%s", redact_sid(env.sid))
            self.stats["abandoned"] += 1
            return
        self.stats["queued"] += 1
        if self._draining or self.interval == 0:
            self._launch(call)
            return
        self._queue.append(call)
        if len(self._queue) > BACKLOG_WARNING and not self._warned:
            self._warned = True
            log.warning("disconnect queue backlog over %d calls (rate %d/s)", BACKLOG_WARNING, self.rate)
        if self._worker is None:
            # Not started (a node used without start()): start lazily.
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        assert self._wakeup is not None
        self._wakeup.set()

    async def _run(self) -> None:
        assert self._wakeup is not None
        queue, wakeup = self._queue, self._wakeup
        while True:
            while not queue:
                self._warned = False
                wakeup.clear()
                await wakeup.wait()
            self._launch(queue.popleft())
            if self.interval:
                # Pacing, not synchronisation: the configured rate is the point.
                await asyncio.sleep(self.interval)

    def _launch(self, call: DisconnectCall) -> None:
        task = asyncio.get_running_loop().create_task(self._call(call))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _call(self, call: DisconnectCall) -> None:
        try:
            await self.controller.disconnect(call.identifiers, call.subscriptions, call.env)
            self.stats["called"] += 1
        except RPCError as exc:
            self.stats["failed"] += 1
            log.error("disconnect RPC failed sid=%s: %s", redact_sid(call.env.sid), exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats["failed"] += 1
            log.exception("disconnect RPC crashed sid=%s", redact_sid(call.env.sid))

    async def shutdown(self, timeout: float) -> None:
        """Start every queued call now and wait for all of them up to *timeout* seconds."""
        if self._closed:
            return
        self._draining = True
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        left = len(self._queue) + len(self._inflight)
        if left:
            log.info("disconnecting remaining sessions num=%d", left)
        while self._queue:
            self._launch(self._queue.popleft())
        deadline = time.monotonic() + timeout
        while self._inflight:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.wait(set(self._inflight), timeout=remaining)
        self._closed = True
        if self._inflight:
            log.warning("%d Disconnect calls did not finish within %gs: cancelled", len(self._inflight), timeout)
            self.stats["abandoned"] += len(self._inflight)
            for task in list(self._inflight):
                task.cancel()
            await asyncio.gather(*self._inflight, return_exceptions=True)
