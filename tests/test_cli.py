"""The ``pycable`` command line: errors in one line first, no abbreviations, one default per
option, choices shown, ``--version``."""

from __future__ import annotations

import re

import pytest

from pycable import __version__
from pycable.cli import build_parser, main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_an_unknown_flag_is_one_line_with_a_suggestion(capsys):
    code, out, err = run(capsys, "--brokr=memory")
    assert code == 2 and out == ""
    assert err == "pycable: unknown option: --brokr (did you mean --broker?); see pycable --help\n"


def test_abbreviated_flags_are_refused(capsys):
    code, _, err = run(capsys, "--brok=memory")
    assert code == 2 and err.startswith("pycable: unknown option: --brok (did you mean --broker?)")
    assert err.count("\n") == 1


def test_other_argument_errors_are_one_line_too(capsys):
    code, _, err = run(capsys, "--port")
    assert code == 2 and err.count("\n") == 1 and err.startswith("pycable: argument --port")


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"pycable {__version__}\n"


def test_help_shows_one_default_per_option_and_the_choices():
    text = build_parser().format_help()
    entries = re.split(r"\n  (?=--)", text)
    options = [e for e in entries if e.startswith("--") and not e.startswith("--version")]
    assert len(options) > 50
    for entry in options:
        flat = " ".join(entry.split())
        assert flat.count("(default:") == 1, flat
    flat = " ".join(text.split())
    assert "--broker {none,memory,redis,nats}" in flat
    assert "--log_level {debug,info,warn,warning,error}" in flat
    assert "--disconnect_mode {auto,always,never}" in flat
    assert "Secret for JWT identification (default: --secret; env: ANYCABLE_JWT_SECRET)" in flat
    assert text.startswith("usage: pycable [OPTIONS]\n")
