"""History requests (spec §2.4) and their validation (preface decision 2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pycable.exceptions import HistoryError

__all__ = ["StreamPosition", "HistoryRequest", "parse_history"]


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """The last position a client saw in a stream: history returns offsets ``> offset``."""

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """``{"since": <unix seconds>, "streams": {<stream>: {"epoch":…, "offset":…}}}``.

    ``since`` of 0 means "not given"; ``streams`` of ``None`` means absent (an empty
    mapping counts as present, as in anycable-go).
    """

    since: float = 0
    streams: dict[str, StreamPosition] | None = None

    @property
    def empty(self) -> bool:
        """True when the request asks for nothing (§2.4 step 2: ignored)."""
        return not self.since and self.streams is None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_history(raw: Any) -> HistoryRequest | None:
    """Validate a raw ``history`` object.

    Returns:
        ``None`` when *raw* is absent (``None``), else the request.

    Raises:
        HistoryError: wrong types, a negative ``since``, a negative offset or a
            non-string epoch: the caller answers ``reject_history``.
    """
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise HistoryError("'history' must be an object")
    since = raw.get("since", 0)
    if since is None:
        since = 0
    if not _number(since) or since < 0:
        raise HistoryError("'history.since' must be a non-negative number of seconds")
    streams_raw = raw.get("streams")
    streams: dict[str, StreamPosition] | None = None
    if streams_raw is not None:
        if not isinstance(streams_raw, dict):
            raise HistoryError("'history.streams' must be an object")
        streams = {}
        for name, pos in streams_raw.items():
            if not isinstance(pos, dict):
                raise HistoryError(f"position of stream {name[:64]!r} must be an object")
            epoch, offset = pos.get("epoch"), pos.get("offset")
            if not isinstance(epoch, str):
                raise HistoryError(f"epoch of stream {name[:64]!r} must be a string")
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise HistoryError(f"offset of stream {name[:64]!r} must be a non-negative integer")
            streams[name] = StreamPosition(epoch, offset)
    return HistoryRequest(float(since), streams)
