"""Real processes for the examples' end-to-end tests: an example app under uvicorn, and the real
``@anycable/core`` client on one channel (tests/js/channel_client.mjs). pycable itself is
``helpers.server.ServerProcess``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from helpers.jsonlines import Event, JsonLinesProcess
from helpers.server import ROOT, free_port

JS = ROOT / "tests" / "js"

#: What the SDK reads; an app process gets only what its test sets.
SDK_VARS = (
    "ANYCABLE_SECRET", "ANYCABLE_BROADCAST_URL", "ANYCABLE_BROADCAST_KEY", "ANYCABLE_HTTP_RPC_SECRET",
    "ANYCABLE_BROADCAST_ADAPTER", "ANYCABLE_PORT", "ANYCABLE_HTTP_BROADCAST_PORT", "ANYCABLE_PUBLIC",
)  # fmt: skip


@contextmanager
def sdk_env(**env: str) -> Iterator[None]:
    """Set the SDK's environment for an in-process test and point the process-wide
    broadcaster at it; both are restored afterwards."""
    from pycable.sdk import configure, get_broadcaster

    with pytest.MonkeyPatch.context() as mp:
        for name in SDK_VARS:
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        configure()
        try:
            yield
        finally:
            mp.undo()
            get_broadcaster().close()
            configure()


class AppProcess:
    """``uvicorn <target>`` on a free port, with *env* on top of a clean SDK environment."""

    def __init__(self, target: str, env: dict[str, str], cwd: Path = ROOT) -> None:
        self.port = free_port()
        base = {k: v for k, v in os.environ.items() if k not in SDK_VARS}
        self._log = tempfile.NamedTemporaryFile(prefix="pycable-app-", suffix=".log", delete=False)
        argv = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(argv, cwd=cwd, env={**base, **env}, stdout=self._log, stderr=self._log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> AppProcess:
        # Readiness across a process boundary: poll until it answers (bounded).
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}:\n{self.log()}")
            try:
                urllib.request.urlopen(self.url + "/", timeout=2).close()
                return self
            except urllib.error.HTTPError:
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the app did not start:\n{self.log()}")

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            err.close()
            return err.code, raw.decode(errors="replace")

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def stop(self) -> None:
        self._log.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def node_or_fail() -> str:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "@anycable" / "core").exists():
        pytest.fail("node and tests/js/node_modules are needed (make test installs them)")
    return node


class ChannelClient(JsonLinesProcess):
    """The real ``@anycable/core`` client subscribed to *channel* with *params*; *headers* go
    with the WebSocket handshake (a browser's Cookie header, say)."""

    def __init__(self, url: str, channel: str, params: dict[str, Any], headers: dict[str, str] | None = None,
                 name: str = "c") -> None:  # fmt: skip
        config = {"url": url, "channel": channel, "params": params, "headers": headers or {}, "name": name}
        super().__init__([node_or_fail(), str(JS / "channel_client.mjs"), json.dumps(config)], JS, name)

    async def event(self, name: str, timeout: float = 15.0) -> Event:
        return await self.wait(lambda e: e["event"] == name, timeout)

    def messages(self) -> list[Any]:
        return [e["data"] for e in list(self.events) if e["event"] == "message"]

    def perform(self, action: str, **data: Any) -> None:
        self.send(cmd="perform", action=action, data=data)
