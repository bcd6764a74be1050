"""``--workers N``: one supervisor process running N pycable worker processes.

The supervisor never imports the node: it works out what the workers share
(:func:`plan`, pure), then starts ``python -m pycable`` N times with the same command line
plus a few overrides, and looks after them (:class:`Supervisor`):

* **Shared ports.** Every worker listens on the same WebSocket and broadcast ports with
  ``SO_REUSEPORT``; the kernel spreads new connections over them.
* **A shared broker.** Workers share history, sessions and pub/sub through the configured
  Redis or NATS. With neither and ``--presets=broker`` (or with ``--embed_nats``) the
  supervisor runs one embedded NATS with JetStream (:mod:`pycable.enats`) and points every
  worker at it. A configuration whose broker or pub/sub would stay inside one process (the
  ``memory`` broker, no pub/sub) is refused with a clear error: a broadcast taken by one worker
  would miss the clients of the others.
* **--max-conn for the whole server.** It is divided between the workers (the remainder to
  the first ones), so the total never exceeds it; see docs/workers.md for the trade-off.
* **Readiness.** Each worker writes one byte to a pipe once it listens (``PYCABLE_READY_FD``);
  the supervisor logs ``worker N ready pid=…`` and ``all N workers ready``.
* **Restarts.** A worker that exits on its own is started again, after 0.5 s doubling to
  10 s while it keeps dying young (reset once it has lived 30 s). A worker that exits with
  code 2 (configuration error), or whose first start never got to listen, stops the whole
  server (exit code 2, or 1).
* **Signals.** SIGTERM/SIGINT are forwarded to every worker, which drain gracefully
  (``server_restart`` to their clients, as a single process does); the supervisor exits when
  all have, then stops the embedded NATS. A second signal is forwarded too (a worker then
  stops at once). Workers die with the supervisor (``PR_SET_PDEATHSIG``), even on SIGKILL.
* **Logs.** Each worker's lines carry ``worker=N`` (``"worker"`` in JSON); the supervisor's
  own lines say ``context=supervisor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pycable.exceptions import ConfigError

if TYPE_CHECKING:
    from pycable.config import Config

__all__ = ["Plan", "Supervisor", "WORKER_ENV", "READY_FD_ENV", "notify_ready", "plan", "run", "worker_id"]

log = logging.getLogger("pycable.supervisor")

#: Set in a worker's environment to its number (1..N); its presence makes ``pycable`` a worker.
WORKER_ENV = "PYCABLE_WORKER"
#: The write end of the readiness pipe, in a worker's environment.
READY_FD_ENV = "PYCABLE_READY_FD"

RESTART_MIN = 0.5
RESTART_MAX = 10.0
HEALTHY_AFTER = 30.0  # a worker that lived this long restarts after RESTART_MIN again


def worker_id() -> str:
    """This process's worker number ("" outside a supervisor)."""
    return os.environ.get(WORKER_ENV, "")


def notify_ready() -> None:
    """In a worker: tell the supervisor that this worker listens (no-op elsewhere)."""
    fd = os.environ.pop(READY_FD_ENV, "")
    if fd:
        with contextlib.suppress(OSError, ValueError):
            os.write(int(fd), b"1")
            os.close(int(fd))


def parse_workers(value: str, cpus: int | None = None) -> int:
    """``auto`` → the CPUs this process may run on; else a positive integer."""
    text = value.strip().lower()
    if text == "auto":
        return cpus if cpus is not None else len(os.sched_getaffinity(0))
    try:
        n = int(text)
    except ValueError:
        raise ConfigError(f"--workers must be a number or 'auto', not {value!r}") from None
    if n < 1:
        raise ConfigError("--workers must be at least 1")
    return n


@dataclass
class Plan:
    """What the supervisor runs: N workers, each with these extra flags."""

    workers: int
    #: Flags appended to every worker's command line (they win over the user's).
    common: list[str] = field(default_factory=list)
    #: Per worker (index 0..N-1): --max-conn share.
    max_conn: list[int] = field(default_factory=list)
    #: Run an embedded NATS here, on this address ("" = none).
    enats_addr: str = ""
    #: One line for the log: what the workers share.
    shared: str = ""

    def worker_flags(self, index: int) -> list[str]:
        flags = [*self.common, "--workers", "1"]
        if self.max_conn:
            flags += ["--max-conn", str(self.max_conn[index])]
        return flags


def split(total: int, parts: int) -> list[int]:
    """*total* divided into *parts* shares differing by at most one, largest first."""
    base, rem = divmod(total, parts)
    return [base + (1 if i < rem else 0) for i in range(parts)]


def plan(config: Config, workers: int, free_addr: str = "") -> Plan:
    """Work out the workers' shared broker and flags. Pure: no I/O.

    Args:
        config: the loaded configuration (not modified; presets are applied to a copy).
        workers: how many workers (> 1).
        free_addr: the address for an embedded NATS when the configuration gives none
            (``nats://127.0.0.1:<free port>``, chosen by the caller).

    Raises:
        ConfigError: the configuration cannot be shared by several processes.
    """
    cfg = copy.deepcopy(config)
    cfg.apply_presets()
    if cfg.port == 0:
        raise ConfigError("--workers needs a fixed --port: each worker binds it with SO_REUSEPORT")
    p = Plan(workers=workers)
    if config.max_conn:
        if config.max_conn < workers:
            raise ConfigError(f"--max-conn {config.max_conn} is less than --workers {workers}: each worker needs one")
        p.max_conn = split(config.max_conn, workers)
    wants_broker = "broker" in config.presets
    uses_redis = "redis_url" in config.explicit or cfg.broker == "redis"
    nats_given = "nats_servers" in config.explicit or cfg.broker == "nats" or cfg.pubsub == "nats"
    if cfg.embed_nats or (wants_broker and not uses_redis and not nats_given):
        # One NATS for all: the supervisor runs it, the workers are its clients.
        addr = config.enats_addr if "enats_addr" in config.explicit or cfg.embed_nats else free_addr
        if not addr:
            raise ConfigError("no address for the embedded NATS")
        p.enats_addr = addr
        p.common += ["--embed_nats", "false", "--nats_servers", _client_url(addr)]
        if cfg.embed_nats and "broadcast_adapter" not in config.explicit:
            p.common += ["--broadcast_adapter", ",".join(cfg.broadcast_adapter)]  # as the preset set them
        if "broker" not in config.explicit:
            cfg.broker = "nats"
            p.common += ["--broker", "nats"]
    elif wants_broker and nats_given and not uses_redis and "broker" not in config.explicit:
        cfg.broker = "nats"  # --presets=broker with a NATS given: that NATS is the broker
        p.common += ["--broker", "nats"]
    if "pubsub" not in config.explicit and cfg.pubsub in ("", "none") and cfg.broker in ("redis", "nats"):
        cfg.pubsub = cfg.broker  # the workers reach each other through the broker's server
        p.common += ["--pubsub", cfg.broker]
    if cfg.broker not in ("", "none", "redis", "nats"):
        raise ConfigError(
            f"--workers {workers} with --broker={cfg.broker}: each worker would keep its own history and sessions. "
            "Use --presets=broker (an embedded NATS shared by the workers), --broker=redis or --broker=nats"
        )
    if cfg.pubsub not in ("redis", "nats"):
        raise ConfigError(
            f"--workers {workers} needs a pub/sub shared by the workers (--pubsub=redis or nats, or "
            "--presets=broker): otherwise a broadcast taken by one worker misses the clients of the others"
        )
    p.shared = f"broker={cfg.broker or 'none'} pubsub={cfg.pubsub}" + (
        f" embedded_nats={p.enats_addr}" if p.enats_addr else ""
    )
    return p


def _client_url(addr: str) -> str:
    """The URL a worker dials for an embedded NATS listening on *addr* (0.0.0.0 → 127.0.0.1)."""
    url = addr if "://" in addr else f"nats://{addr}"
    return url.replace("://0.0.0.0:", "://127.0.0.1:")


def free_nats_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"nats://127.0.0.1:{s.getsockname()[1]}"


class Worker:
    """One worker slot: its process (restarted when it dies) and its readiness."""

    def __init__(self, index: int, argv: list[str]) -> None:
        self.index = index
        self.number = index + 1
        self.argv = argv
        self.proc: asyncio.subprocess.Process | None = None
        self.started = 0.0
        self.ready = asyncio.Event()
        self.ever_ready = False

    async def spawn(self) -> None:
        from pycable.enats import pdeathsig

        loop = asyncio.get_running_loop()
        rfd, wfd = os.pipe()
        env = dict(os.environ, **{WORKER_ENV: str(self.number), READY_FD_ENV: str(wfd)})
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, env=env, pass_fds=(wfd,), preexec_fn=pdeathsig, start_new_session=True
            )
        finally:
            os.close(wfd)
        self.started = loop.time()
        self.ready.clear()
        reader = os.fdopen(rfd, "rb", buffering=0)
        pid = self.proc.pid

        def on_readable() -> None:
            data = reader.read(1)
            loop.remove_reader(rfd)
            reader.close()
            if data:
                log.info("worker %d ready pid=%d", self.number, pid)
                self.ready.set()
                self.ever_ready = True

        loop.add_reader(rfd, on_readable)
        log.info("worker %d started pid=%d", self.number, pid)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


class Supervisor:
    def __init__(self, p: Plan, argv: Sequence[str], enats: object | None = None) -> None:
        self.plan = p
        base = [sys.executable, "-m", "pycable", *argv]
        self.workers = [Worker(i, [*base, *p.worker_flags(i)]) for i in range(p.workers)]
        self.enats = enats
        self.stopping = asyncio.Event()
        self.exit_code = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal(sig: int) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                log.info("got %s: stopping %d workers gracefully", signal.Signals(sig).name, len(self.workers))
            self.stopping.set()
            for w in self.workers:
                w.signal(sig)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            if self.enats is not None:
                await self.enats.start()  # type: ignore[attr-defined]
                log.info("%s", self.enats.describe())  # type: ignore[attr-defined]
            log.info("starting %d workers (%s)", len(self.workers), self.plan.shared)
            tasks = [loop.create_task(self._keep(w)) for w in self.workers]
            ready = loop.create_task(self._all_ready())
            await asyncio.gather(*tasks)
            ready.cancel()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if self.enats is not None:
                await self.enats.shutdown()  # type: ignore[attr-defined]
        log.info("all workers stopped")
        return self.exit_code

    async def _all_ready(self) -> None:
        await asyncio.gather(*(w.ready.wait() for w in self.workers))
        log.info("all %d workers ready", len(self.workers))

    async def _keep(self, w: Worker) -> None:
        """Run worker *w* until the supervisor stops, restarting it when it dies."""
        delay = RESTART_MIN
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            await w.spawn()
            assert w.proc is not None
            code = await w.proc.wait()
            if self.stopping.is_set():
                if code not in (0, -signal.SIGTERM, -signal.SIGINT):
                    log.warning("worker %d pid=%d exited with %s while stopping", w.number, w.proc.pid, code)
                break
            if code == 2 or not w.ever_ready:
                # A configuration error, or a first start that never listened (a port taken
                # without SO_REUSEPORT, a broker that refuses us...): restarting would not help.
                why = "a configuration error" if code == 2 else f"{code} before it was ever ready"
                log.error("worker %d pid=%d exited with %s: stopping", w.number, w.proc.pid, why)
                self.exit_code = 2 if code == 2 else 1
                self._stop_all()
                break
            if loop.time() - w.started >= HEALTHY_AFTER:
                delay = RESTART_MIN
            log.error("worker %d pid=%d exited with %s: restarting in %gs", w.number, w.proc.pid, code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, RESTART_MAX)

    def _stop_all(self) -> None:
        self.stopping.set()
        for w in self.workers:
            w.signal(signal.SIGTERM)


def run(config: Config, argv: Sequence[str]) -> int:
    """Supervise ``config``'s workers; *argv* is the command line they all get. Returns the exit code."""
    from pycable.log import setup_logging

    setup_logging(config.log_level, config.log_format)
    workers = parse_workers(config.workers)
    p = plan(config, workers, free_nats_addr())
    enats = None
    if p.enats_addr:
        from pycable import enats as enats_mod

        cfg = copy.deepcopy(config)
        cfg.enats_addr = p.enats_addr
        cfg.broker = "nats"  # JetStream on: history and sessions live there
        enats = enats_mod.from_config(cfg)
    started = time.monotonic()
    code = asyncio.run(Supervisor(p, argv, enats).run())
    log.info("supervisor exiting after %.1fs with %d", time.monotonic() - started, code)
    return code
