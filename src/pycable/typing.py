"""Domain types shared by every layer."""

from __future__ import annotations

from typing import NewType

__all__ = ["StreamName", "Identifier", "SessionId", "Epoch", "Offset"]

#: A broadcast stream name (``stream_id`` on the wire).
StreamName = NewType("StreamName", str)
#: A channel identifier: an opaque string echoed byte for byte.
Identifier = NewType("Identifier", str)
#: A session id (``sid`` in the welcome message).
SessionId = NewType("SessionId", str)
#: A broker epoch: offsets are only comparable within one epoch.
Epoch = NewType("Epoch", str)
#: A per-stream offset, starting at 1.
Offset = NewType("Offset", int)
