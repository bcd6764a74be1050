"""Socket helpers shared by the transports."""

from __future__ import annotations

import asyncio
import socket
import struct

__all__ = ["reset"]

_LINGER_RESET = struct.pack("ii", 1, 0)


def reset(transport: asyncio.Transport) -> None:
    """Abort *transport* as a reset: SO_LINGER 0 makes the kernel drop what the peer never
    read instead of holding it (up to the socket buffer, megabytes) until a FIN-WAIT timeout."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
    transport.abort()
