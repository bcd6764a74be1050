"""The broker contract suite runs over every backend module in ``contract/backends``."""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from contract import backends
from contract.backends.handle import BrokerHandle
from pycable.broker.base import HistoryPolicy

BACKENDS = sorted(
    m.name for m in pkgutil.iter_modules(backends.__path__) if m.name not in ("handle",) and not m.name.startswith("_")
)

MakeBroker = Callable[..., Awaitable[BrokerHandle]]


@pytest.fixture(params=BACKENDS)
async def make_broker(request: pytest.FixtureRequest) -> AsyncIterator[MakeBroker]:
    module = importlib.import_module(f"contract.backends.{request.param}")
    handles: list[BrokerHandle] = []

    async def make(
        limit: int = 100, ttl: float = 300.0, sessions_ttl: float = 300.0, rules: tuple = (), **options: int
    ) -> BrokerHandle:
        """*options* go to the broker's constructor (``session_max_size``)."""
        name = f"t{uuid.uuid4().hex[:10]}"
        handle = await module.make(HistoryPolicy(limit, ttl, rules), sessions_ttl, name, **options)
        handles.append(handle)
        return handle

    make.backend = request.param  # type: ignore[attr-defined]
    yield make
    for handle in handles:
        await handle.close()
