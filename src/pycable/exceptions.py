"""pycable's exception tree.

::

    CableError
    ├── ProtocolError        a client frame that cannot be understood (dropped, counted)
    ├── BroadcastError       a broadcast body that cannot be published (HTTP 400/422)
    │   └── BroadcastFormatError  valid JSON of the wrong shape (HTTP 422)
    ├── HistoryError         history cannot be served for a stream (reject_history)
    ├── BrokerError          the broker backend failed (HTTP 503, logged)
    ├── PresenceError        a presence join/leave/info refused (bad data, ID mismatch, a cap)
    ├── RPCError             the application RPC failed
    └── ConfigError          bad configuration, reported at startup
"""

from __future__ import annotations

__all__ = [
    "CableError",
    "ProtocolError",
    "BroadcastError",
    "BroadcastFormatError",
    "HistoryError",
    "BrokerError",
    "PresenceError",
    "RPCError",
    "ConfigError",
]


class CableError(Exception):
    """Base class of every pycable error."""


class ProtocolError(CableError):
    """A client frame is malformed: bad JSON, wrong field types, binary on a JSON protocol."""


class BroadcastError(CableError):
    """A broadcast body is not valid JSON."""


class BroadcastFormatError(BroadcastError):
    """A broadcast body is valid JSON but not a publication, batch or remote command."""


class HistoryError(CableError):
    """History cannot be served: unknown epoch, evicted or future offset, unknown stream."""


class BrokerError(CableError):
    """The broker backend failed (unreachable, timed out, refused)."""


class PresenceError(CableError):
    """A presence command is refused: bad data, an ID mismatch, or a cap reached."""


class RPCError(CableError):
    """The application RPC failed (transport error or an ERROR status)."""


class ConfigError(CableError):
    """Configuration is invalid; raised before the server listens."""
