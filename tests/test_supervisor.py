"""--workers: the supervisor's plan (pure) — what the workers share and which flags they get."""

from __future__ import annotations

import pytest

from pycable.config import load_config
from pycable.exceptions import ConfigError
from pycable.supervisor import Plan, parse_workers, plan, split

ADDR = "nats://127.0.0.1:4999"


def cfg(**cli: str):  # type: ignore[no-untyped-def]
    return load_config(cli, environ={})


def test_parse_workers() -> None:
    assert parse_workers("1") == 1
    assert parse_workers(" 4 ") == 4
    assert parse_workers("auto", cpus=6) == 6
    assert parse_workers("AUTO") >= 1
    for bad in ("0", "-2", "two", ""):
        with pytest.raises(ConfigError, match="--workers"):
            parse_workers(bad)


def test_bad_workers_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--workers"):
        cfg(workers="many").validate()


def test_split_never_exceeds_the_total() -> None:
    assert split(10, 2) == [5, 5]
    assert split(7, 3) == [3, 2, 2]
    assert split(2, 2) == [1, 1]
    assert sum(split(12345, 7)) == 12345


def test_presets_broker_alone_gets_an_embedded_nats_shared_by_all() -> None:
    p = plan(cfg(presets="broker", port="8080"), 2, ADDR)
    assert p.enats_addr == ADDR
    flags = p.worker_flags(0)
    assert flags[flags.index("--nats_servers") + 1] == ADDR
    assert flags[flags.index("--embed_nats") + 1] == "false"
    assert flags[flags.index("--broker") + 1] == "nats"
    assert flags[flags.index("--pubsub") + 1] == "nats"
    assert flags[-2:] == ["--workers", "1"]
    assert "embedded_nats" in p.shared


def test_embed_nats_keeps_its_address_and_the_presets_adapters() -> None:
    p = plan(cfg(presets="broker", embed_nats="true", enats_addr="nats://0.0.0.0:4333"), 3, ADDR)
    assert p.enats_addr == "nats://0.0.0.0:4333"
    flags = p.worker_flags(2)
    assert flags[flags.index("--nats_servers") + 1] == "nats://127.0.0.1:4333"
    assert flags[flags.index("--broadcast_adapter") + 1] == "http,nats"


def test_a_configured_redis_is_shared_and_no_nats_is_started() -> None:
    p = plan(cfg(presets="broker", redis_url="redis://127.0.0.1:6379/0"), 2, ADDR)
    assert p.enats_addr == ""
    assert "--nats_servers" not in p.worker_flags(0)
    assert p.shared == "broker=redis pubsub=redis"


def test_a_configured_nats_is_the_broker_with_presets() -> None:
    p = plan(cfg(presets="broker", nats_servers="nats://10.0.0.1:4222"), 2, ADDR)
    assert p.enats_addr == ""
    assert p.shared == "broker=nats pubsub=nats"


def test_a_broker_without_pubsub_gets_the_brokers_own() -> None:
    p = plan(cfg(broker="nats"), 2, ADDR)
    flags = p.worker_flags(0)
    assert flags[flags.index("--pubsub") + 1] == "nats"
    # Redis: the workers' own configuration already follows Redis for pub/sub.
    assert plan(cfg(broker="redis"), 2, ADDR).shared == "broker=redis pubsub=redis"


@pytest.mark.parametrize(
    "cli",
    [
        {},  # nothing shared at all
        {"broker": "memory", "pubsub": "redis"},  # history inside each worker
        {"presets": "broker", "broker": "memory"},
    ],
)
def test_unshareable_configurations_are_refused(cli: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="--workers 2"):
        plan(cfg(**cli), 2, ADDR)


def test_fan_out_only_pubsub_without_broker_is_allowed() -> None:
    p = plan(cfg(pubsub="nats"), 2, ADDR)
    assert p.shared == "broker=none pubsub=nats"


def test_max_conn_is_divided_between_workers() -> None:
    p = plan(cfg(presets="broker", max_conn="5"), 2, ADDR)
    assert p.max_conn == [3, 2]
    f0, f1 = p.worker_flags(0), p.worker_flags(1)
    assert f0[f0.index("--max-conn") + 1] == "3" and f1[f1.index("--max-conn") + 1] == "2"
    assert "--max-conn" not in plan(cfg(presets="broker"), 2, ADDR).worker_flags(0)
    with pytest.raises(ConfigError, match="--max-conn 1 is less than --workers 2"):
        plan(cfg(presets="broker", max_conn="1"), 2, ADDR)


def test_port_zero_is_refused() -> None:
    with pytest.raises(ConfigError, match="fixed --port"):
        plan(cfg(presets="broker", port="0"), 2, ADDR)


def test_plan_does_not_touch_the_config() -> None:
    c = cfg(presets="broker")
    plan(c, 2, ADDR)
    assert c.broker == "none" and c.pubsub == "none"
    assert isinstance(Plan(workers=1).worker_flags(0), list)
