"""``make demo``: pycable and the chat app together, one command; Ctrl-C stops both.

    python -m examples.chat.demo [--host 127.0.0.1] [--app-port 8000] [--cable-port 8080]

Both processes read the same environment, as any SDK application and its pycable do:
``ANYCABLE_SECRET`` (a development default is set when missing) and ``ANYCABLE_BROADCAST_URL``
(default: pycable's main port, ``http://127.0.0.1:8080/_broadcast``, where pycable takes
broadcasts when a secret is set; given another URL, pycable's broadcast endpoint is started
on that URL's port and path). pycable runs with ``--presets=broker`` (stream history and session
restore) and ``--rpc_restore``, calling the app's HTTP RPC at ``/_anycable``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
DEV_SECRET = "pycable-demo-secret-change-me"


def _ready(url: str, proc: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    # Readiness across a process boundary: poll the endpoint (bounded), fail if the process died.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer at {url} within {timeout:.0f} s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--app-port", type=int, default=8000)
    parser.add_argument("--cable-port", type=int, default=8080)
    args = parser.parse_args(argv)

    env = dict(os.environ)
    env.setdefault("ANYCABLE_SECRET", DEV_SECRET)
    env.setdefault("ANYCABLE_BROADCAST_URL", f"http://{args.host}:{args.cable_port}/_broadcast")
    env["ANYCABLE_PORT"] = str(args.cable_port)
    broadcast = urlsplit(env["ANYCABLE_BROADCAST_URL"])
    if broadcast.port is None:
        raise SystemExit(f"ANYCABLE_BROADCAST_URL needs an explicit port: {env['ANYCABLE_BROADCAST_URL']}")
    app_url = f"http://{args.host}:{args.app_port}"

    pycable = [
        sys.executable, "-m", "pycable", "--presets=broker",
        "--host", args.host, "--port", str(args.cable_port),
        "--http_broadcast_port", str(broadcast.port), "--http_broadcast_path", broadcast.path or "/_broadcast",
        "--rpc_host", f"{app_url}/_anycable", "--rpc_restore",
    ]  # fmt: skip
    uvicorn = [
        sys.executable, "-m", "uvicorn", "examples.chat.app:app",
        "--host", args.host, "--port", str(args.app_port), "--no-access-log",
    ]  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    # The children run in their own sessions, so Ctrl-C (SIGINT) reaches only this process, which
    # stops them in order; SIGTERM does the same.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (a background job)
    try:
        procs.append(subprocess.Popen(uvicorn, cwd=ROOT, env=env, start_new_session=True))
        _ready(f"{app_url}/", procs[0], "the chat app", 30)
        procs.append(subprocess.Popen(pycable, cwd=ROOT, env=env, start_new_session=True))
        _ready(f"http://{args.host}:{args.cable_port}/health", procs[1], "pycable", 30)
        print(f"\nChat demo: open {app_url}/ (Ctrl-C stops it)\n", flush=True)
        os.wait()  # until either child exits (or a signal interrupts)
        print("a demo process exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping the chat demo", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        _stop(procs)


if __name__ == "__main__":
    sys.exit(main())
