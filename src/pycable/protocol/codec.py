"""Decoding of client commands (spec §1.2) with the field-type checks of preface decision 1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from pycable.exceptions import ProtocolError
from pycable.protocol.constants import COMMANDS

__all__ = ["Command", "decode_command"]


@dataclass(frozen=True, slots=True)
class Command:
    """One decoded client command.

    Attributes:
        command: the command name (one of :data:`~pycable.protocol.constants.COMMANDS`).
        identifier: the channel identifier, an opaque string echoed byte for byte (§1.4);
            empty for commands without one (``pong``, ``ping``).
        data: ``data`` as sent: a JSON-encoded string for ``message``, any JSON for ``whisper``.
        history: the raw ``history`` object (parsed by :mod:`pycable.protocol.history`).
        presence: the raw ``presence`` object.
    """

    command: str
    identifier: str = ""
    data: Any = None
    history: Any = None
    presence: Any = None


def decode_command(frame: str | bytes) -> Command:
    """Decode one text frame into a :class:`Command`.

    Raises:
        ProtocolError: not JSON, not an object, a missing or unknown ``command``, or an
            ``identifier`` that is not a string.
    """
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("a command must be a JSON object")
    command = obj.get("command")
    if not isinstance(command, str):
        raise ProtocolError("missing or non-string 'command'")
    if command not in COMMANDS:
        raise ProtocolError(f"unknown command {command[:64]!r}")
    identifier = obj.get("identifier", "")
    if not isinstance(identifier, str):
        raise ProtocolError("'identifier' must be a string")
    return Command(command, identifier, obj.get("data"), obj.get("history"), obj.get("presence"))
