"""Broker backends for the contract suite: one module per backend, each exporting

    async def make(policy: HistoryPolicy, sessions_ttl: float, name: str) -> BrokerHandle

``name`` is unique per test (use it as a key prefix / DB / bucket namespace so tests
never see each other's data). Backends that need a server use ``REDIS_URL`` /
``NATS_URL`` when set, else the local defaults, and start their own server when none
answers (they never skip silently).
"""
