"""``import pycable.sdk`` loads no server code and starts nothing."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys, threading
import pycable.sdk
from pycable.sdk import Application, Connection, Channel
app = Application(Connection, [type("C", (Channel,), {})])
app.asgi()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("pycable", "grpc", "redis", "jwt"))
server = [m for m in loaded if m.startswith(("pycable.node", "pycable.transport", "pycable.broker",
          "pycable.pubsub", "pycable.app", "pycable.config", "pycable.rpc", "pycable.broadcast."))]
assert not server, server
assert not [m for m in loaded if m.split(".")[0] in ("grpc", "redis", "jwt")], loaded
assert threading.active_count() == 1, threading.enumerate()
print("ok")
"""


def test_import_loads_no_server_code():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
