"""NATS for the tests: the machine's server (``NATS_URL`` or ``nats://127.0.0.1:4222``) when
it answers with JetStream on, else one ``nats-server`` started for the whole session.
Never a silent skip: if neither works, the tests fail with the reason."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time

import nats
from nats.js.errors import NotFoundError

from pycable._nats import safe_token
from pycable.enats import find_binary

_started: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    """Something listens at *url* (nats-py's connect can retry forever when nothing does)."""
    rest = url.split("://", 1)[-1].rsplit("@", 1)[-1]
    host, _, port = rest.partition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port or 4222)), timeout=1).close()
        return True
    except (OSError, ValueError):
        return False


async def _connect(url: str, timeout: float) -> nats.NATS:
    return await asyncio.wait_for(
        nats.connect(url, connect_timeout=timeout, allow_reconnect=False, max_reconnect_attempts=1), timeout + 1
    )


async def _has_jetstream(url: str) -> bool:
    if not _answers(url):
        return False
    try:
        nc = await _connect(url, 1)
    except Exception:
        return False
    try:
        await nc.jetstream(timeout=2).account_info()
        return True
    except Exception:
        return False
    finally:
        await nc.close()


def _start_server() -> str:
    """A private nats-server with JetStream, stopped at exit."""
    port = free_port()
    store = tempfile.mkdtemp(prefix="pycable-test-nats-")
    proc = subprocess.Popen(
        [find_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(store, ignore_errors=True)

    atexit.register(stop)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # bounded readiness poll of another process's port
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return f"nats://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nats-server did not start")


async def nats_url() -> str:
    """A NATS URL with JetStream for this test session."""
    if "url" in _started:
        return _started["url"]
    url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    if not await _has_jetstream(url):
        url = _start_server()
        assert await _has_jetstream(url), f"no JetStream at {url}"
    _started["url"] = url
    return url


async def delete_prefixed(url: str, prefix: str) -> None:
    """Delete every JetStream stream (and KV bucket) made under ``nats_prefix=prefix``."""
    token = safe_token(prefix)
    nc = await _connect(url, 2)
    try:
        js = nc.jetstream(timeout=5)
        names = [si.config.name for si in await js.streams_info()]
        for name in names:
            if name and (name.startswith(token) or name.startswith(f"KV_{token}")):
                try:
                    await js.delete_stream(name)
                except NotFoundError:
                    pass
    finally:
        await nc.close()
