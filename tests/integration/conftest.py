from __future__ import annotations

import pytest

from helpers.server import ServerProcess


@pytest.fixture(scope="module")
def public_server():
    """One public server with the memory broker, shared by a module's tests."""
    with ServerProcess("--public", "--broker", "memory", "--ping_interval", "1") as srv:
        yield srv
