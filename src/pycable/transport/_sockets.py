"""Socket helpers shared by the transports."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

from pycable.protocol.connection import ConnectionPolicy

__all__ = ["arm_timer", "rearm", "reset"]

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


def rearm(
    handle: asyncio.TimerHandle | None, delay: float | None = None, callback: Callable[[], None] | None = None
) -> asyncio.TimerHandle | None:
    """Cancel *handle* (if any); with a *delay* and *callback*, return a new timer for them."""
    if handle is not None:
        handle.cancel()
    if delay is None or callback is None:
        return None
    return asyncio.get_running_loop().call_later(delay, callback)


def arm_timer(policy: ConnectionPolicy, now: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
    """Call *callback* at the policy's next wakeup (*now* is the wall clock the policy uses)."""
    loop = asyncio.get_running_loop()
    return loop.call_at(loop.time() + max(0.0, policy.next_wakeup() - now), callback)
