"""A child process that reports JSON lines on stdout and takes JSON-line commands on stdin
(the Node drivers of the real ``@anycable/core`` client)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Event = dict[str, Any]
Pred = Callable[[Event], bool] | dict[str, Any]


def matches(event: Event, pred: Pred) -> bool:
    """*pred* is a predicate, or a dict of values the event must have."""
    return bool(pred(event)) if callable(pred) else all(event.get(k) == v for k, v in pred.items())


class JsonLinesProcess:
    """``events`` collects every line the process prints; :meth:`wait` awaits one."""

    def __init__(self, argv: list[str], cwd: Path, name: str = "") -> None:
        self.name = name or Path(argv[1]).name
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for raw in self.proc.stdout:
                with self._cond:
                    self.events.append(json.loads(raw))
                    self._cond.notify_all()

    def mark(self) -> int:
        """The number of events so far (pass it as ``after`` to look at later ones only)."""
        with self._cond:
            return len(self.events)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    async def wait(self, pred: Pred, timeout: float = 10.0, after: int = 0) -> Event:
        """The first event from index *after* that matches *pred*."""

        def wait() -> Event:
            with self._cond:
                found: list[Event] = []

                def ready() -> bool:
                    found[:] = [e for e in self.events[after:] if matches(e, pred)]
                    return bool(found)

                if not self._cond.wait_for(ready, timeout):
                    raise TimeoutError(f"{self.name}: no event matching {pred}; got {self.events[after:]}")
                return found[0]

        return await asyncio.to_thread(wait)

    def close(self) -> None:
        """Ask the process to exit (``{"cmd": "exit"}``), else kill it."""
        if self.proc.poll() is None:
            try:
                self.send(cmd="exit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self._reader.join(5)
