"""Backends by name: ``"module:factory"`` strings imported only when selected, so the
``redis``, ``nats`` and ``grpc`` extras stay optional.

Every factory takes the :class:`~pycable.config.Config` and returns the component.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pycable.exceptions import ConfigError

if TYPE_CHECKING:
    from pycable.config import Config

__all__ = ["BROKERS", "PRESENCES", "PUBSUBS", "BROADCASTERS", "CONTROLLERS", "check", "build"]

BROKERS = {
    "none": "pycable.broker.base:null_from_config",
    "memory": "pycable.broker.memory:from_config",
    "redis": "pycable.broker.redis:from_config",
    "nats": "pycable.broker.nats:from_config",
}
#: Presence follows the broker: the same backend keeps both (``--broker``).
PRESENCES = {
    "none": "pycable.presence.base:null_from_config",
    "memory": "pycable.presence.memory:from_config",
    "redis": "pycable.presence.redis:from_config",
    "nats": "pycable.presence.nats:from_config",
}
PUBSUBS = {
    "none": "pycable.pubsub.base:local_from_config",
    "redis": "pycable.pubsub.redis:from_config",
    "nats": "pycable.pubsub.nats:from_config",
}
BROADCASTERS = {
    "http": "pycable.broadcast.http:from_config",
    "redisx": "pycable.broadcast.redis_stream:from_config",
    "redis": "pycable.broadcast.redis_pubsub:from_config",
    "nats": "pycable.broadcast.nats:from_config",
}
CONTROLLERS = {
    "grpc": "pycable.rpc.grpc:from_config",
    "http": "pycable.rpc.http:from_config",
}


def _load(kind: str, table: dict[str, str], name: str) -> Any:
    target = table.get(name)
    if target is None:
        raise ConfigError(f"unknown {kind} {name!r} (available: {', '.join(sorted(table))})")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("pycable"):
            raise ConfigError(f"{kind} {name!r} is not available in this version of pycable") from None
        raise ConfigError(
            f"{kind} {name!r} needs the Python package {exc.name!r}: pip install 'pycable[{_extra(name)}]'"
        ) from None
    return getattr(module, attr)


def _extra(name: str) -> str:
    return {"redisx": "redis", "http": "grpc"}.get(name, name)


def check(kind: str, table: dict[str, str], name: str) -> None:
    """Fail at startup (not mid-message) if *name* is unknown or its module cannot load."""
    _load(kind, table, name)


def build(kind: str, table: dict[str, str], name: str, config: Config) -> Any:
    return _load(kind, table, name)(config)
