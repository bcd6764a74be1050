"""The official Durable Streams conformance suite against pycable (memory broker), in Node."""

from __future__ import annotations

import shutil

import pytest

from ds.conformance import SERVER_ARGS, UNSUPPORTED, required_failures, run_suite, table
from helpers.server import ServerProcess

pytestmark = [
    pytest.mark.js,
    pytest.mark.slow,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(shutil.which("npx") is None, reason="needs Node (npx)"),
]


def test_conformance_suite_passes():
    with ServerProcess(*SERVER_ARGS) as srv:
        groups = run_suite(f"http://127.0.0.1:{srv.port}/ds")
    print(table(groups))
    supported = sum(c["passed"] for g, c in groups.items() if not g.startswith(UNSUPPORTED))
    assert required_failures(groups) == 0, table(groups)
    assert supported >= 332, f"too few tests ran:\n{table(groups)}"
