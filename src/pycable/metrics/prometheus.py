"""Prometheus exposition (``--metrics_http``), with ``prometheus_client`` (the
``prometheus`` extra).

A custom collector turns a :data:`~pycable.metrics.base.Reader` snapshot into metric
families at scrape time, in a registry of its own (not the process-global one): nothing is
updated between scrapes. The HTTP side is one route handler; the application mounts it on
the main port or on a listener of its own (``--metrics_port``).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from pycable.metrics.base import Instrumenter, Reader
from pycable.metrics.stats import METRICS

__all__ = ["PrometheusInstrumenter", "CONTENT_TYPE"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _SnapshotCollector(Collector):
    def __init__(self, read: Reader) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        values = self.read()
        for m in METRICS:
            family = CounterMetricFamily if m.kind == "counter" else GaugeMetricFamily
            yield family(m.name, m.help, value=values.get(m.name, 0))


class PrometheusInstrumenter:
    """Renders the metrics in the Prometheus text format.

    Args:
        url: where it is served, for the startup line.
    """

    def __init__(self, url: str = "") -> None:
        self.url = url
        self.registry: CollectorRegistry | None = None

    async def start(self, read: Reader) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(read))

    async def shutdown(self) -> None:
        self.registry = None

    def describe(self) -> str:
        return f"Serve metrics at {self.url} (Prometheus)"

    def render(self) -> bytes:
        """The current metrics (empty before :meth:`start`)."""
        return generate_latest(self.registry) if self.registry is not None else b""


if __debug__:
    from typing import TYPE_CHECKING

    if TYPE_CHECKING:
        _: type[Instrumenter] = PrometheusInstrumenter
