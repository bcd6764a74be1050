"""Session-wide test settings.

Temporary files: every test and every process it starts (servers, embedded NATS, Redis)
writes under one private directory, removed when the session ends. A process a test kills
with SIGKILL cannot clean up after itself; its leftovers go with that directory instead of
piling up in the machine's ``/tmp``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_TMP = tempfile.mkdtemp(prefix="pycable-tests-")
os.environ["TMPDIR"] = _TMP
tempfile.tempdir = _TMP


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_TMP, ignore_errors=True)
