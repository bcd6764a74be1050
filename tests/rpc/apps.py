"""RPC applications for the tests, each in its own process: a gRPC app in Python
(tests/rpc/grpc_app.py, compiled from pycable's ``anycable.proto`` by :func:`compile_proto`),
an HTTP RPC app on the real ``@anycable/serverless-js`` (tests/rpc_app/server.mjs), and the
same application written with ``pycable.sdk`` (tests/sdk/chat_app.py), served over gRPC
(``sdk-grpc``) and HTTP RPC (``sdk-http``) by tests/sdk/app_main.py.

Both speak the same stdio protocol (JSON lines): the app reports every RPC request it gets,
and the tests wait for those reports (events, not timers).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers.jsonlines import JsonLinesProcess

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "src" / "pycable" / "rpc" / "anycable.proto"
RPC_APP = ROOT / "tests" / "rpc_app"
GRPC_APP = Path(__file__).with_name("grpc_app.py")
SDK_APP = ROOT / "tests" / "sdk" / "app_main.py"
KINDS = ("grpc", "http", "sdk-grpc", "sdk-http")

Call = dict[str, Any]
Pred = Callable[[Call], bool]


def compile_proto(out_dir: str) -> None:
    """Compile ``anycable.proto`` into *out_dir* as plain ``anycable_pb2`` modules."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO.parent}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO),
        ],
        check=True,
    )


_pb_dir: str | None = None


def pb_dir() -> str:
    global _pb_dir
    if _pb_dir is None:
        _pb_dir = tempfile.mkdtemp(prefix="pycable-grpc-app-")
        compile_proto(_pb_dir)
    return _pb_dir


def node_available() -> str | None:
    """Why the Node app cannot run, or ``None``."""
    if shutil.which("node") is None:
        return "node is not installed"
    for package in ("@anycable/serverless-js", "@anycable/core", "ws"):
        if not (RPC_APP / "node_modules" / package).is_dir():
            return f"tests/rpc_app/node_modules lacks {package}: run `make test` (it runs npm install)"
    return None


def where(method: str | None = None, **body: Any) -> Pred:
    """A predicate on calls: this method, and these top-level body values."""

    def pred(call: Call) -> bool:
        if method is not None and call["method"] != method:
            return False
        return all(call["body"].get(k) == v for k, v in body.items())

    return pred


class RpcApp:
    """One application process. ``kind`` is one of :data:`KINDS`.

    Args:
        kind: which app.
        port: listen on this port (0: any; a restarted app reuses its port).
        secret: the HTTP apps require ``Authorization: Bearer <secret>``.
        quiet: the app reports nothing (benchmarks): :meth:`calls` stays empty.
        env: extra environment (the SDK app reads ``ANYCABLE_*`` to broadcast).
    """

    def __init__(
        self, kind: str, port: int = 0, secret: str = "", quiet: bool = False, env: dict[str, str] | None = None
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown app kind {kind!r}")
        self.kind = kind
        self.port = port
        self.secret = secret
        self.quiet = quiet
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._calls: list[Call] = []
        #: The SDK app's callback reports (``{"callback": "connect", ...}``).
        self._events: list[dict[str, Any]] = []
        self._acks = 0
        self._cond = threading.Condition()
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None
        self._stderr = tempfile.TemporaryFile()

    # -- process ---------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> RpcApp:
        if self.kind == "grpc":
            argv = [sys.executable, str(GRPC_APP), "--pb-dir", pb_dir(), "--port", str(self.port)]
            argv += ["--quiet"] if self.quiet else []
            env = dict(os.environ)
        elif self.kind.startswith("sdk-"):
            argv = [sys.executable, str(SDK_APP), "--transport", self.kind[4:], "--port", str(self.port)]
            argv += ["--quiet"] if self.quiet else []
            env = {k: v for k, v in os.environ.items() if not k.startswith("ANYCABLE_")}
            env["ANYCABLE_HTTP_RPC_SECRET"] = self.secret
        else:
            argv = ["node", str(RPC_APP / "server.mjs")]
            env = {**os.environ, "PORT": str(self.port), "RPC_SECRET": self.secret, "QUIET": "1" if self.quiet else ""}
        self._listening.clear()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env={**env, **self.env}, cwd=ROOT
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        if not self._listening.wait(timeout):
            self.kill()
            raise RuntimeError(f"{self.kind} app did not start: {self.stderr()}")
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                msg = json.loads(raw)
                with self._cond:
                    if "listening" in msg:
                        self.port = msg["listening"]
                        self._listening.set()
                    elif "call" in msg:
                        self._calls.append(msg["call"])
                    elif "ack" in msg:
                        self._acks += 1
                    elif "event" in msg:
                        self._events.append(msg["event"])
                    self._cond.notify_all()

    def stderr(self) -> str:
        if self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def kill(self) -> None:
        """Stop the app at once (the RPC is down until :meth:`start`)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stdin is not None:
            proc.stdin.close()
        if self._reader is not None:
            self._reader.join(5)  # every report the app printed has been read

    def stop(self) -> None:
        """Stop the app for good (closes stdin: the app exits by itself)."""
        proc = self.proc
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            proc.stdin.close()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        self._stderr.close()

    def __enter__(self) -> RpcApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def rpc_host(self) -> str:
        if self.kind.endswith("grpc"):
            return f"127.0.0.1:{self.port}"
        return f"http://127.0.0.1:{self.port}/_anycable"

    # -- calls -----------------------------------------------------------------------------

    def calls(self, pred: Pred | None = None) -> list[Call]:
        with self._cond:
            return [c for c in self._calls if pred is None or pred(c)]

    def mark(self) -> int:
        """The number of calls so far (pass it as ``after`` to look at later calls only)."""
        with self._cond:
            return len(self._calls)

    async def wait_call(self, pred: Pred, timeout: float = 5.0, after: int = 0) -> Call:
        """The first call from index *after* that matches *pred*."""
        return (await self.wait_calls(pred, 1, timeout, after))[0]

    async def wait_calls(self, pred: Pred, n: int, timeout: float = 5.0, after: int = 0) -> list[Call]:
        return await self._wait(self._calls, "calls", pred, n, timeout, after)

    def events(self, pred: Pred | None = None) -> list[dict[str, Any]]:
        """The SDK app's callback reports so far."""
        with self._cond:
            return [e for e in self._events if pred is None or pred(e)]

    def event_mark(self) -> int:
        with self._cond:
            return len(self._events)

    async def wait_event(self, pred: Pred, timeout: float = 5.0, after: int = 0) -> dict[str, Any]:
        """The first SDK callback report from index *after* that matches *pred*."""
        return (await self._wait(self._events, "events", pred, 1, timeout, after))[0]

    async def _wait(self, items: list[Call], what: str, pred: Pred, n: int, timeout: float, after: int) -> list[Call]:
        def wait() -> list[Call]:
            with self._cond:
                found: list[Call] = []

                def ready() -> bool:
                    found[:] = [c for c in items[after:] if pred(c)]
                    return len(found) >= n

                if not self._cond.wait_for(ready, timeout):
                    raise TimeoutError(f"{len(found)}/{n} matching {what}; all {what}: {items[after:]}")
                return found

        return await asyncio.to_thread(wait)

    # -- behaviour -------------------------------------------------------------------------

    async def set_mode(self, **mode: Any) -> None:
        """Change how the app answers; returns once the app acknowledged."""
        assert self.proc is not None and self.proc.stdin is not None
        with self._cond:
            want = self._acks + 1
        self.proc.stdin.write((json.dumps({"cmd": "mode", **mode}) + "\n").encode())
        self.proc.stdin.flush()

        def wait() -> None:
            with self._cond:
                if not self._cond.wait_for(lambda: self._acks >= want, 5.0):
                    raise TimeoutError("the app did not acknowledge")

        await asyncio.to_thread(wait)

    async def normal(self) -> None:
        await self.set_mode()

    async def slow(self, ms: int) -> None:
        await self.set_mode(delay_ms=ms)

    async def erroring(self) -> None:
        """Answer every call with an error: status ERROR (gRPC) or HTTP 500 (HTTP RPC)."""
        if self.kind.endswith("grpc"):
            await self.set_mode(status="ERROR")
        else:
            await self.set_mode(http_status=500)

    # -- how each app keeps channel state --------------------------------------------------

    def state_in_command(self, call: Call, identifier: str) -> dict[str, Any]:
        """The channel state the app received in a Command (the identifier's istate)."""
        istate = call["body"].get("env", {}).get("istate", {})
        if self.kind != "http":
            return dict(istate)
        # serverless-js keeps {identifier: JSON(state)} as the identifier's istate.
        return json.loads(istate[identifier]) if identifier in istate else {}

    def state_in_disconnect(self, call: Call, identifier: str) -> dict[str, Any]:
        """The channel state the app received in a Disconnect: ``istate[identifier]`` is a
        JSON-encoded map (spec §6.2)."""
        encoded = call["body"].get("env", {}).get("istate", {})[identifier]
        state = json.loads(encoded)
        assert isinstance(state, dict), encoded
        if self.kind != "http":
            return state
        return json.loads(state[identifier])


class JsClient(JsonLinesProcess):
    """The real ``@anycable/core`` client (tests/rpc_app/restore_client.mjs): one cable with
    one ``chat`` subscription; its events are collected, commands go to its stdin."""

    def __init__(self, url: str, room: str) -> None:
        super().__init__(["node", str(RPC_APP / "restore_client.mjs"), url, room], RPC_APP, "js-client")

    async def wait_event(self, pred: Pred, timeout: float = 10.0, after: int = 0) -> dict[str, Any]:
        return await self.wait(pred, timeout, after)
