"""Logging in AnyCable's text format (``YYYY-MM-DD HH:MM:SS.mmm INF msg key=val``) or JSON."""

from __future__ import annotations

import logging
import sys
import time

import orjson

__all__ = ["setup_logging"]

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
