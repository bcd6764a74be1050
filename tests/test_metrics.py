"""Metrics: the Prometheus endpoint (parsed with prometheus_client's own parser) moves after a
connect, a broadcast, a restore and an RPC error; the stats line shows up in the log."""

from __future__ import annotations

import asyncio
import json
import time

from prometheus_client.parser import text_string_to_metric_families

from helpers.client import CableClient, ident
from helpers.server import ServerProcess, free_port
from pycable.metrics.log import stats_line
from pycable.metrics.stats import METRICS

A = "anycable_go_"


def scrape(srv: ServerProcess, port: int | None = None) -> dict[str, float]:
    status, body = srv.get("/metrics", port)
    assert status == 200, body
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            values[sample.name] = sample.value
    return values


async def moved(srv: ServerProcess, name: str, above: float, timeout: float = 10.0) -> dict[str, float]:
    """Scrape until *name* is above *above* (another process: poll, bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        values = scrape(srv)
        if values[name] > above:
            return values
        assert time.monotonic() < deadline, f"{name} stayed at {values[name]}"
        await asyncio.sleep(0.05)


def test_every_metric_is_exported_with_its_type():
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    for m in METRICS:
        assert m.name.endswith("_total") == (m.kind == "counter"), m


def test_the_stats_line_has_gauges_and_counter_deltas():
    before = {A + "client_msg_total": 3.0}
    now = {A + "clients_num": 2.0, A + "client_msg_total": 10.0, A + "server_msg_total": 4.0}
    line = stats_line(now, before)
    assert line.startswith("clients_num=2 clients_uniq_num=0 broadcast_streams_num=0")
    assert "client_msg_total=+7" in line and "server_msg_total=+4" in line


async def test_counters_move_after_a_connect_a_broadcast_a_restore_and_an_rpc_error():
    rpc = f"127.0.0.1:{free_port()}"  # no application there: every RPC call fails
    with ServerProcess(
        "--noauth", "--public_streams", "--broker=memory", f"--rpc_host={rpc}", "--rpc_command_timeout=300",
        "--metrics_http=/metrics", "--stats_refresh_interval=0.2",
    ) as srv:  # fmt: skip
        start = scrape(srv)
        assert start[A + "clients_num"] == 0 and start[A + "rpc_call_total"] == 0
        assert start[A + "rpc_capacity_num"] == 28

        client = await CableClient.open(srv.url)
        sid = (await client.welcome())["sid"]
        values = scrape(srv)
        assert values[A + "clients_num"] == 1 and values[A + "client_msg_total"] == 0

        stream = ident("metrics-room")
        await client.subscribe(stream)
        assert srv.broadcast(json.dumps({"stream": "metrics-room", "data": '{"n":1}'}))[0] == 201
        await client.wait_for(lambda m: m.get("message") == {"n": 1})
        values = scrape(srv)
        assert values[A + "client_msg_total"] == 1
        assert values[A + "broadcast_msg_total"] == 1 and values["pycable_broadcasts_registered_total"] == 1
        assert values[A + "server_msg_total"] == 1 and values[A + "broadcast_streams_num"] == 1

        await client.send({"command": "subscribe", "identifier": json.dumps({"channel": "ChatChannel"})})
        values = await moved(srv, A + "rpc_error_total", 0)
        assert values[A + "rpc_call_total"] >= 1

        await client.close()
        await moved(srv, A + "disconnect_queue_size", -1)  # a scrape between close and restore
        again = await CableClient.open(srv.url + f"?sid={sid}")
        assert (await again.welcome())["restored"] is True
        values = scrape(srv)
        assert values["pycable_restores_total"] == 1 and values[A + "clients_num"] == 1
        await again.close()

        deadline = time.monotonic() + 10
        while "clients_num=" not in srv.log():  # the stats line, every 0.2 s
            assert time.monotonic() < deadline, srv.log()
            await asyncio.sleep(0.05)
        line = next(x for x in srv.log().splitlines() if "clients_num=" in x)
        assert " INF " in line and line.endswith("context=metrics")


def test_metrics_on_a_port_of_their_own():
    mport = free_port()
    with ServerProcess("--public", "--broker=memory", "--metrics_http=/metrics", f"--metrics_port={mport}") as srv:
        assert scrape(srv, mport)[A + "clients_num"] == 0
        assert srv.get("/metrics")[0] == 404  # not on the main port
        assert f"Serve metrics at http://127.0.0.1:{mport}/metrics" in srv.log()
