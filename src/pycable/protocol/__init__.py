"""The Action Cable protocol, sans-I/O: no sockets, no event loop, no clock reads."""
