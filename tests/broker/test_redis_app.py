"""Wiring: ``--presets=broker`` with a Redis URL (spec §8.2), and the startup warnings for
combinations that do not do what one may expect (style rule 3)."""

from __future__ import annotations

from pycable.app import capability_warnings
from pycable.broadcast.http import HttpBroadcaster
from pycable.broadcast.redis_pubsub import from_config as legacy_from_config
from pycable.broker.base import NullBroker
from pycable.broker.memory import MemoryBroker
from pycable.broker.redis import from_config as broker_from_config
from pycable.config import Config, load_config
from pycable.pubsub.base import LocalSubscriber
from pycable.pubsub.redis import from_config as pubsub_from_config


def preset(*cli: str, environ: dict[str, str] | None = None) -> Config:
    values = {}
    args = list(cli)
    while args:
        name, value = args.pop(0).lstrip("-"), args.pop(0)
        values[name] = value
    cfg = load_config(values, environ={} if environ is None else environ)
    cfg.apply_presets()
    return cfg


class TestBrokerPreset:
    def test_with_an_explicit_redis_url(self):
        cfg = preset("--presets", "broker", "--redis_url", "redis://r:6379/1")
        assert (cfg.broker, cfg.pubsub, cfg.broadcast_adapter) == ("redis", "redis", ["http", "redisx", "redis"])

    def test_redis_url_from_the_environment_counts(self):
        cfg = preset("--presets", "broker", environ={"REDIS_URL": "redis://r:6379"})
        assert (cfg.broker, cfg.pubsub) == ("redis", "redis")

    def test_without_a_redis_url_the_memory_broker(self):
        cfg = preset("--presets", "broker")
        assert (cfg.broker, cfg.pubsub, cfg.broadcast_adapter) == ("memory", "none", ["http"])

    def test_explicit_values_win(self):
        cfg = preset("--presets", "broker", "--redis_url", "redis://r", "--broker", "memory",
                     "--broadcast_adapter", "http", "--pubsub", "none")  # fmt: skip
        assert (cfg.broker, cfg.pubsub, cfg.broadcast_adapter) == ("memory", "none", ["http"])


class TestCapabilityWarnings:
    def test_redis_everywhere_is_quiet(self):
        cfg = Config()
        assert capability_warnings(broker_from_config(cfg), pubsub_from_config(cfg), [HttpBroadcaster()]) == []

    def test_multi_node_pubsub_with_the_memory_broker(self):
        (warning,) = capability_warnings(MemoryBroker(), pubsub_from_config(Config()), [])
        assert "single-node broker" in warning and "--broker=redis" in warning

    def test_fanout_broadcaster_with_a_broker(self):
        legacy = legacy_from_config(Config())
        (warning,) = capability_warnings(MemoryBroker(), LocalSubscriber(), [legacy])
        assert "RedisPubSubBroadcaster bypasses the broker" in warning
        assert capability_warnings(NullBroker(), LocalSubscriber(), [legacy]) == [], "no broker: nothing lost"
