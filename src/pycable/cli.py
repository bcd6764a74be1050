"""The ``pycable`` command: flags generated from :class:`pycable.config.Config`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pycable import __version__
from pycable.config import GROUPS, default_of, env_names, flag_names, load_config, option_fields
from pycable.exceptions import ConfigError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pycable",
        description="Real-time WebSocket server, wire-compatible with AnyCable.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--version", action="version", version=f"pycable {__version__}")
    groups = {g: parser.add_argument_group(g.upper()) for g in GROUPS}
    for f in option_fields():
        default = default_of(f)
        env = ", ".join(env_names(f))
        shown = ",".join(default) if isinstance(default, list) else default
        help_text = f"{f.metadata['help']} (default: {shown!r}; env: {env})"
        group = groups[f.metadata["group"]]
        if isinstance(default, bool):
            group.add_argument(*flag_names(f), dest=f.name, nargs="?", const="true", metavar="BOOL",
                               help=help_text)
        else:
            group.add_argument(*flag_names(f), dest=f.name, metavar=f.name.upper(), help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args: dict[str, Any] = vars(build_parser().parse_args(argv))
    try:
        config = load_config(args)
        from pycable import supervisor

        if not supervisor.worker_id() and supervisor.parse_workers(config.workers) > 1:
            code = supervisor.run(config, list(sys.argv[1:] if argv is None else argv))
        else:
            from pycable.app import run

            code = run(config)
    except ConfigError as exc:
        print(f"pycable: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)
