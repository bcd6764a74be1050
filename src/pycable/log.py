"""Logging in AnyCable's text format (``YYYY-MM-DD HH:MM:SS.mmm INF msg key=val``) or JSON."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import orjson

__all__ = ["setup_logging", "Outage", "OUTAGE_LOG_INTERVAL"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
           "error": logging.ERROR}
_SHORT = {logging.DEBUG: "DBG", logging.INFO: "INF", logging.WARNING: "WRN", logging.ERROR: "ERR",
          logging.CRITICAL: "ERR"}


def _stamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"


class TextFormatter(logging.Formatter):
    def __init__(self, worker: str = "") -> None:
        super().__init__()
        self.suffix = f" worker={worker}" if worker else ""

    def format(self, record: logging.LogRecord) -> str:
        context = record.name.rpartition(".")[2]
        line = (f"{_stamp(record)} {_SHORT.get(record.levelno, 'INF')} {record.getMessage()} context={context}"
                f"{self.suffix}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: str = "") -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": _stamp(record), "level": logging.getLevelName(record.levelno), "msg": record.getMessage(),
               "context": record.name.rpartition(".")[2]}
        if self.worker:
            out["worker"] = self.worker
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def setup_logging(level: str = "info", fmt: str = "text", worker: str = "") -> None:
    """*worker*: this process's worker number under ``--workers`` (every line then says it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(worker) if fmt == "json" else TextFormatter(worker))
    root = logging.getLogger("pycable")
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.INFO))
    root.propagate = False


#: Seconds between two "still unreachable" lines about the same dependency.
OUTAGE_LOG_INTERVAL = 30.0


class Outage:
    """The state of a dependency (Redis, NATS) as a component sees it, logged at a bounded rate.

    :meth:`failed` after each failed attempt: the first one logs a warning, later ones at
    most one line every *interval* seconds (with the attempts so far). :meth:`recovered`
    after a success: logs once how long it was down. :meth:`health` is ``""`` while up,
    else the reason (what ``/health`` reports).

    Args:
        logger: where the lines go.
        what: the dependency as the lines name it (``Redis broker at 127.0.0.1:6379``).
        interval: seconds between "still unreachable" lines.
        clock: monotonic seconds (tests pass their own).
    """

    __slots__ = ("log", "what", "interval", "clock", "since", "attempts", "error", "_logged")

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        interval: float = OUTAGE_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = logger
        self.what = what
        self.interval = interval
        self.clock = clock
        #: When the outage began (``None``: up).
        self.since: float | None = None
        self.attempts = 0
        self.error = ""
        self._logged = 0.0

    @property
    def down(self) -> bool:
        return self.since is not None

    def health(self) -> str:
        return f"{self.what} is unreachable: {self.error}" if self.since is not None else ""

    def failed(self, error: str) -> None:
        now = self.clock()
        self.error = error
        self.attempts += 1
        if self.since is None:
            self.since, self._logged = now, now
            self.log.warning("%s is unreachable: %s; retrying", self.what, error)
        elif now - self._logged >= self.interval:
            self._logged = now
            self.log.warning(
                "%s is still unreachable after %d attempts in %.0fs: %s; retrying",
                self.what, self.attempts, now - self.since, error,
            )

    def recovered(self, detail: str = "") -> None:
        if self.since is None:
            return
        down_for = self.clock() - self.since
        self.since, self.attempts, self.error = None, 0, ""
        self.log.info("%s is reachable again after %.1fs%s", self.what, down_for, f" ({detail})" if detail else "")
