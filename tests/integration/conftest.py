from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from helpers.client import CableClient
from helpers.server import ServerProcess


@pytest.fixture
async def opened() -> AsyncIterator[list[CableClient]]:
    """Clients a test opened; closed at teardown, also when the test fails."""
    clients: list[CableClient] = []
    yield clients
    for c in clients:
        await c.close()


@pytest.fixture(scope="module")
def public_server():
    """One public server with the memory broker, shared by a module's tests."""
    with ServerProcess("--public", "--broker", "memory", "--ping_interval", "1") as srv:
        yield srv
