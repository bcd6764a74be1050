"""Fixtures shared by the examples' tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sink import BroadcastSink


@pytest.fixture(scope="module")
def sink() -> Iterator[BroadcastSink]:
    """A stand-in broadcast endpoint recording what the app under test broadcasts."""
    s = BroadcastSink()
    yield s
    s.close()
