"""RPC-less identification (JWT) and signed stream names: pure functions, no I/O."""
