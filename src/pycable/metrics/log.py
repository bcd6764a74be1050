"""The stats line (``--stats_refresh_interval``): every interval, one info line with the
main gauges and how much the main counters grew since the previous line (as AnyCable's
metrics log prints counter deltas)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pycable.metrics.base import Instrumenter, Reader, Snapshot
from pycable.metrics.stats import ANYCABLE_PREFIX

__all__ = ["LogInstrumenter", "stats_line"]

log = logging.getLogger("pycable.metrics")

GAUGES = ("clients_num", "clients_uniq_num", "broadcast_streams_num", "disconnect_queue_size", "rpc_pending_num")
COUNTERS = ("client_msg_total", "broadcast_msg_total", "server_msg_total", "rpc_call_total", "rpc_error_total")


def stats_line(now: Snapshot, before: Snapshot) -> str:
    """``clients_num=3 … client_msg_total=+12 …`` (pure: the two snapshots in, text out)."""
    parts = [f"{name}={now.get(ANYCABLE_PREFIX + name, 0):g}" for name in GAUGES]
    for name in COUNTERS:
        key = ANYCABLE_PREFIX + name
        parts.append(f"{name}=+{now.get(key, 0) - before.get(key, 0):g}")
    return " ".join(parts)


class LogInstrumenter:
    """Logs :func:`stats_line` every *interval* seconds (context=metrics)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self, read: Reader) -> None:
        if self._task is None and self.interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._run(read))

    async def _run(self, read: Reader) -> None:
        before = read()
        while True:
            await asyncio.sleep(self.interval)  # a period, not synchronisation
            now = read()
            log.info("%s", stats_line(now, before))
            before = now

    async def shutdown(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def describe(self) -> str:
        return f"Log stats every {self.interval:g}s"


if __debug__:
    from typing import TYPE_CHECKING

    if TYPE_CHECKING:
        _: type[Instrumenter] = LogInstrumenter
