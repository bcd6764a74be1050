"""Starting and stopping the server process: a failed start is one clear error and exit code
1 with nothing left behind; a signal during the start is honoured."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

import pytest

from helpers.server import ROOT, free_port
from pycable import app as app_module
from pycable.config import Config

# Runs the CLI in a child process; with "asyncio" uvloop cannot be imported there.
_LAUNCH = {
    "uvloop": "import sys; from pycable.cli import main; main(sys.argv[1:])",
    "asyncio": "import sys; sys.modules['uvloop'] = None; from pycable.cli import main; main(sys.argv[1:])",
}


@pytest.mark.nats
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_embedded_nats_on_a_taken_port_is_one_error_and_exit_code_1(loop, tmp_path):
    """The README's quick start on a machine that already runs NATS on the port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-c", _LAUNCH[loop], "--presets=broker", "--embed_nats", "--public",
             f"--enats_addr=nats://127.0.0.1:{port}", "--host=127.0.0.1", f"--port={free_port()}",
             f"--http_broadcast_port={free_port()}"],
            cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    err = proc.stderr
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "Event loop is closed" not in err
    cannot = [line for line in err.splitlines() if "cannot start" in line]
    assert len(cannot) == 1 and "address already in use" in cannot[0], err
    assert "starting it again" not in err  # no supervision of a server that never started
    assert list(tmp_path.iterdir()) == [], "left files behind"


async def test_a_signal_during_the_start_stops_the_server(monkeypatch):
    """SIGTERM while a component is still starting (e.g. waiting for a broker) is honoured."""
    started = asyncio.Event()
    shutdowns = []

    async def start_forever(self: app_module.App) -> None:
        started.set()
        await asyncio.Event().wait()

    async def shutdown(self: app_module.App) -> None:
        shutdowns.append(self)

    monkeypatch.setattr(app_module.App, "start", start_forever)
    monkeypatch.setattr(app_module.App, "shutdown", shutdown)
    serving = asyncio.ensure_future(app_module.serve(Config(public=True, port=0)))
    await asyncio.wait_for(started.wait(), 10)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(serving, 10) == 0
    assert len(shutdowns) == 1


async def test_a_failed_start_is_exit_code_1_and_stops_what_started(monkeypatch, caplog):
    shutdowns = []

    async def start_fails(self: app_module.App) -> None:
        raise OSError(98, "address already in use")

    async def shutdown(self: app_module.App) -> None:
        shutdowns.append(self)

    monkeypatch.setattr(app_module.App, "start", start_fails)
    monkeypatch.setattr(app_module.App, "shutdown", shutdown)
    assert await asyncio.wait_for(app_module.serve(Config(public=True, port=0)), 10) == 1
    assert len(shutdowns) == 1
    assert "cannot start: [Errno 98] address already in use" in caplog.text
