"""The real ``@anycable/core`` client, driven through tests/sdk/cable_client.mjs."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
JS_DIR = HERE.parent / "js"
Event = dict[str, Any]


def require_node() -> None:
    if shutil.which("node") is None:
        pytest.fail("`node` is not on PATH: these tests drive the real @anycable/core client (do not skip them)")
    if not (JS_DIR / "node_modules" / "@anycable" / "core").is_dir():
        pytest.fail("tests/js/node_modules lacks @anycable/core: run `make test` (it runs npm install)")


class JsCable:
    """One cable in a Node process; ``events`` collects what it reports."""

    def __init__(self, url: str, name: str = "c", subscribe: list[dict[str, Any]] | None = None) -> None:
        require_node()
        self.name = name
        self.events: list[Event] = []
        self._cond = threading.Condition()
        config = {"url": url, "name": name, "subscribe": subscribe or []}
        self.proc = subprocess.Popen(
            ["node", str(HERE / "cable_client.mjs"), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=HERE,
        )
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
        with self._cond:
            return len(self.events)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def subscribe(self, id: str, **sub: Any) -> None:
        self.send(cmd="subscribe", id=id, **sub)

    def perform(self, id: str, action: str, **data: Any) -> None:
        self.send(cmd="perform", id=id, action=action, data=data)

    async def wait(
        self, pred: Callable[[Event], bool] | dict[str, Any], timeout: float = 10.0, after: int = 0
    ) -> Event:
        def match(e: Event) -> bool:
            return pred(e) if callable(pred) else all(e.get(k) == v for k, v in pred.items())

        def wait() -> Event:
            with self._cond:
                found: list[Event] = []

                def ready() -> bool:
                    found[:] = [e for e in self.events[after:] if match(e)]
                    return bool(found)

                if not self._cond.wait_for(ready, timeout):
                    raise TimeoutError(f"{self.name}: no event matching {pred}; got {self.events[after:]}")
                return found[0]

        return await asyncio.to_thread(wait)

    async def message(self, id: str, data: Any, after: int = 0) -> Event:
        return await self.wait(lambda e: e["event"] == "message" and e["id"] == id and e["data"] == data, after=after)

    def messages(self, id: str) -> list[Any]:
        with self._cond:
            return [e["data"] for e in self.events if e["event"] == "message" and e["id"] == id]

    def errors(self) -> list[Event]:
        with self._cond:
            return [e for e in self.events if e["event"] in ("uncaught", "unhandled", "error")]

    def close(self) -> None:
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
