"""Metrics: Prometheus (``--metrics_http``) and the periodic stats line in the log
(``--stats_refresh_interval``).

The hot path makes no call per message: the node, hub, transport and backends keep plain
integer counters (their ``stats`` dicts), and :class:`~pycable.metrics.stats.Stats` reads
them when a scrape or a log tick asks (:mod:`pycable.metrics.base`).
"""
