"""pycable: a real-time WebSocket server wire-compatible with AnyCable.

Reliable streams and resumable sessions: clients that lose their connection get every
missed message back, in order, exactly once, and resume without re-subscribing.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
