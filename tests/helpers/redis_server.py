"""A Redis for the tests: ``REDIS_URL`` or 127.0.0.1:6379 when one answers, else our own
``redis-server`` on a free port (never a silent skip). :class:`RedisServer` runs a private
server that a test may kill and restart."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time

import redis

from helpers.server import free_port

__all__ = ["redis_url", "RedisServer"]

_url: str | None = None


def _answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def redis_url() -> str:
    """The URL of a Redis that answers (started here if needed, for the whole session)."""
    global _url
    if _url is None:
        url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
        if not _answers(url):
            server = RedisServer().start()
            atexit.register(server.stop)
            url = server.url
        _url = url
    return _url


class RedisServer:
    """``redis-server --port P --save ''`` in a temporary directory; :meth:`restart` keeps P.

    With ``tls=True`` it listens for TLS only, with a throw-away CA and a certificate for
    127.0.0.1 (``ca_file``); :attr:`url` is then ``rediss://127.0.0.1:P?ssl_ca_certs=<ca>``.
    """

    def __init__(self, port: int | None = None, tls: bool = False) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("no Redis answers at REDIS_URL / 127.0.0.1:6379 and redis-server is not installed")
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="pycable-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls = tls
        self.ca_file = os.path.join(self.dir, "ca.pem")
        if tls:
            self._make_certificates()

    def _make_certificates(self) -> None:
        d = self.dir

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=pycable test CA",
                "-keyout", f"{d}/ca.key", "-out", self.ca_file)  # fmt: skip
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                "-keyout", f"{d}/server.key", "-out", f"{d}/server.csr")  # fmt: skip
        with open(f"{d}/ext.cnf", "w") as fh:
            fh.write("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", f"{d}/server.csr", "-CA", self.ca_file, "-CAkey", f"{d}/ca.key",
                "-CAcreateserial", "-days", "1", "-extfile", f"{d}/ext.cnf", "-out", f"{d}/server.pem")  # fmt: skip

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}?ssl_ca_certs={self.ca_file}"
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        listen = ["--port", str(self.port)]
        if self.tls:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", f"{self.dir}/server.pem",
                      "--tls-key-file", f"{self.dir}/server.key", "--tls-ca-cert-file", self.ca_file,
                      "--tls-auth-clients", "no"]  # fmt: skip
        self.proc = subprocess.Popen(
            ["redis-server", *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        # Readiness: PING answers (bounded poll across the process boundary).
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if _answers(self.url):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer")

    def stop(self) -> None:
        """Kill it (its data is lost: it never saves)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
