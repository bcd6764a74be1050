"""Build step: the gRPC code (``pycable.rpc._pb``) is generated from
``src/pycable/rpc/anycable.proto`` when a wheel, an sdist or an editable install is built.

Why generated at build time and not committed: protoc marks its output "NO CHECKED-IN
PROTOBUF GENCODE", and the output checks at import that the installed ``protobuf`` and
``grpcio`` are at least the versions that generated it. The build requirement pins
``grpcio-tools`` to one release (pyproject.toml ``[build-system]``), so those versions are
known, and the ``grpc`` extra requires exactly them: whatever builds the package (pip from
the sdist, ``python -m build``, ``pip install -e``) produces the same code, and a
``pip install 'pycable[grpc]'`` installs a runtime that accepts it.
Everything else about the package is declared in pyproject.toml.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

PROTO = os.path.join("src", "pycable", "rpc", "anycable.proto")


def generate(out_root: str) -> None:
    """Write ``pycable/rpc/_pb/`` (messages, stubs, type stubs) under *out_root*."""
    from grpc_tools import protoc

    pb_dir = os.path.join(out_root, "pycable", "rpc", "_pb")
    os.makedirs(pb_dir, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        # the generated modules import each other as pycable.rpc._pb.*
        f"-Ipycable/rpc/_pb={os.path.dirname(PROTO)}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--pyi_out={out_root}",
        PROTO,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    with open(os.path.join(pb_dir, "__init__.py"), "w") as fh:
        fh.write('"""Generated from anycable.proto at build time (setup.py); do not edit."""\n')


class BuildPyWithProto(build_py):
    """``build_py`` plus the generated package (into the source tree for editable installs)."""

    def run(self) -> None:
        super().run()
        generate("src" if self.editable_mode else self.build_lib)


class SdistWithProto(sdist):
    """The sdist carries the generated code too (building a wheel from it generates it again)."""

    def make_release_tree(self, base_dir: str, files: Any) -> None:
        super().make_release_tree(base_dir, files)
        generate(os.path.join(base_dir, "src"))


if __name__ == "__main__":  # as setuptools runs it (``make proto`` imports generate() only)
    setup(cmdclass={"build_py": BuildPyWithProto, "sdist": SdistWithProto})
