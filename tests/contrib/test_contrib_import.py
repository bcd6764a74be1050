"""The framework integrations load no server code, and Django's only when imported."""

from __future__ import annotations

import subprocess
import sys


def test_contrib_loads_no_server_code():
    code = (
        "import sys\n"
        "import pycable.contrib.fastapi, pycable.contrib.django\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[:2] in (['pycable', 'node'], ['pycable', 'transport'],"
        " ['pycable', 'broker'], ['pycable', 'pubsub'], ['pycable', 'app']))\n"
        "assert not loaded, loaded\n"
        "assert 'django.db' not in sys.modules, 'django.db is imported only when used'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
