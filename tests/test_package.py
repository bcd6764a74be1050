"""The package as users get it: ``python -m build`` makes an sdist and, from that sdist, a
wheel; the wheel installed with the ``grpc`` extra into a fresh virtual environment runs a
``pycable`` that serves a gRPC application end to end (no source tree, no ``make proto``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import venv
from pathlib import Path

import pytest

from helpers.client import CableClient
from helpers.server import ROOT, ServerProcess
from rpc.apps import RpcApp

pytestmark = pytest.mark.slow

PB_FILES = ("anycable_pb2.py", "anycable_pb2_grpc.py", "__init__.py")


def _run(*argv: str | Path, cwd: Path) -> None:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` directory of a fresh venv with the built wheel and its grpc extra."""
    tmp = tmp_path_factory.mktemp("package")
    dist = tmp / "dist"
    # What a fresh clone has: the files git tracks (or would), without what was generated
    # or installed in this checkout (src/pycable/rpc/_pb, .venv, node_modules).
    tree = tmp / "tree"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    assert not (tree / "src/pycable/rpc/_pb").exists()
    # The sdist is built from that tree, then the wheel from the sdist (what pip does with an
    # sdist): the wheel proves the sdist is complete.
    _run(sys.executable, "-m", "build", "--outdir", dist, tree, cwd=tmp)
    (sdist,) = dist.glob("pycable-*.tar.gz")
    (wheel,) = dist.glob("pycable-*.whl")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    for f in PB_FILES:
        assert any(n.endswith(f"src/pycable/rpc/_pb/{f}") for n in names), f"sdist lacks {f}"
    venv.create(tmp / "venv", with_pip=True)
    bin_dir = tmp / "venv" / "bin"
    _run(bin_dir / "pip", "install", "--quiet", f"{wheel}[grpc]", cwd=tmp)
    return bin_dir


def test_the_wheel_serves_a_grpc_application(installed: Path, tmp_path: Path) -> None:
    import asyncio

    # The installed package, not the tree: run from elsewhere, with no PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [installed / "python", "-c", "import pycable.rpc._pb.anycable_pb2 as m; print(m.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "site-packages" in where and str(ROOT) not in where

    async def session(url: str) -> None:
        client = await CableClient.open(f"{url}?user=ann")
        try:
            await client.welcome()
            identifier = json.dumps({"channel": "chat", "room": "r1"})
            assert await client.subscribe(identifier) == {"identifier": identifier, "type": "confirm_subscription"}
            hello = await client.wait_for(lambda m: "hello" in m.get("message", {}))
            assert hello["message"] == {"hello": "r1", "user": "ann"}
        finally:
            await client.close()

    with RpcApp("grpc") as app, ServerProcess(
        "--rpc_host", app.rpc_host, "--broker", "memory",
        command=[str(installed / "pycable")], cwd=tmp_path, env=env,
    ) as srv:  # fmt: skip
        asyncio.run(session(srv.url))
