"""Run a real pycable server process on free ports for integration tests."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m pycable`` with ``args`` on a free main port and broadcast port.

    Use as a context manager; ``.url`` is the WebSocket URL, ``.broadcast(body)`` posts a
    broadcast and returns ``(status, body)``, ``.log()`` the server's output so far.
    """

    def __init__(
        self,
        *args: str,
        port: int | None = None,
        bport: int | None = None,
        env: dict | None = None,
        command: list[str] | None = None,
        cwd: Path | str = ROOT,
        ready: tuple[int, ...] = (200,),
    ):
        #: The ``/health`` statuses that mean "started" (``(200, 503)``: listening, ready or not).
        self.ready = ready
        #: How the server is started (default: this interpreter's ``-m pycable``, from the tree).
        self.command = command or [sys.executable, "-m", "pycable"]
        self.cwd = cwd
        self.port = port or free_port()
        self.bport = bport or free_port()
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="pycable-", suffix=".log", delete=False)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/cable"

    def start(self, timeout: float = 15.0) -> ServerProcess:
        """Start and wait until ``/health`` answers one of :attr:`ready`."""
        argv = [*self.command, "--host", "127.0.0.1", "--port", str(self.port)]
        if "--http_broadcast_port" not in self.args:
            argv += ["--http_broadcast_port", str(self.bport)]
        self.proc = subprocess.Popen(argv + self.args, cwd=self.cwd, env=self.env, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + timeout
        # Readiness: the health endpoint answers (bounded poll: there is no event to await
        # across the process boundary).
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/health")[0] in self.ready:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def request(
        self, method: str, path: str, body: bytes | str = b"", headers: dict | None = None, port: int | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.bport, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def broadcast(self, body: bytes | str, key: str | None = None, port: int | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return self.request("POST", "/_broadcast", body, headers, port)

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        self._log.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        self._log.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
