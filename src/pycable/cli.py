"""The ``pycable`` command: flags generated from :class:`pycable.config.Config`."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from pycable import __version__
from pycable.config import GROUPS, default_of, env_names, flag_names, load_config, option_fields
from pycable.exceptions import ConfigError

__all__ = ["build_parser", "main"]

#: "(default: …)" already in an option's help text: then it is the only default shown.
_OWN_DEFAULT = re.compile(r"\s*\(default: ([^()]*(?:\([^()]*\)[^()]*)*)\)")


class _Parser(argparse.ArgumentParser):
    """Errors in one line, first (no usage dump), with a suggestion for a mistyped flag."""

    def error(self, message: str) -> NoReturn:
        match = re.match(r"unrecognized arguments: (.*)", message)
        if match:
            flags = [a for a in match.group(1).split() if a.startswith("-")]
            known = [s for action in self._actions for s in action.option_strings]
            hints = []
            for flag in flags or match.group(1).split():
                name = flag.partition("=")[0]
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
            message = f"unknown option{'s' if len(hints) > 1 else ''}: {', '.join(hints)}"
        self.exit(2, f"pycable: {message}; see pycable --help\n")


def _help(f: Any) -> str:
    text: str = f.metadata["help"]
    env = ", ".join(env_names(f))
    own = _OWN_DEFAULT.search(text)
    if own:  # the help text says what the default is (e.g. "default: --secret")
        return f"{_OWN_DEFAULT.sub('', text)} (default: {own.group(1)}; env: {env})"
    default = default_of(f)
    if isinstance(default, bool):
        shown = str(default).lower()
    elif isinstance(default, list):
        shown = ",".join(default) or "none"
    else:
        shown = repr(default) if default == "" else str(default)
    return f"{text} (default: {shown}; env: {env})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pycable",
        usage="pycable [OPTIONS]",
        description="Real-time WebSocket server, wire-compatible with AnyCable.",
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"pycable {__version__}")
    groups = {g: parser.add_argument_group(g.upper()) for g in GROUPS}
    for f in option_fields():
        default = default_of(f)
        group = groups[f.metadata["group"]]
        choices = [c for c in (f.metadata.get("choices") or ()) if c]
        if isinstance(default, bool):
            group.add_argument(*flag_names(f), dest=f.name, nargs="?", const="true", metavar="BOOL", help=_help(f))
        else:
            metavar = "{" + ",".join(choices) + "}" if choices else f.name.upper()
            group.add_argument(*flag_names(f), dest=f.name, metavar=metavar, help=_help(f))
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
