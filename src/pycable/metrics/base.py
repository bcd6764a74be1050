"""The ``Instrumenter`` role: something that reports metrics (a Prometheus endpoint, the log).

Contract: an instrumenter is given a ``read`` function at :meth:`Instrumenter.start` and calls
it when it needs values (a scrape, a timer tick). It is never called by the server's hot
path: counters are plain integers the components increment themselves, read here at
report time. A ``read`` call is cheap (it walks no subscriber list) and happens on the
event loop's thread. :class:`NoopInstrumenter` is the default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Metric", "Snapshot", "Reader", "Instrumenter", "NoopInstrumenter"]

#: Metric name → current value (counters are cumulative).
Snapshot = dict[str, float]
Reader = Callable[[], Snapshot]


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric as it is exported: its full name, type and help text."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str


class Instrumenter(Protocol):
    """**Protocol:** reports metrics read from a :data:`Reader`."""

    async def start(self, read: Reader) -> None: ...

    async def shutdown(self) -> None: ...

    def describe(self) -> str:
        """The startup log line."""
        ...


class NoopInstrumenter:
    """No metrics reported."""

    async def start(self, read: Reader) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    def describe(self) -> str:
        return "Metrics are off"


if __debug__:
    from typing import TYPE_CHECKING

    if TYPE_CHECKING:
        _: type[Instrumenter] = NoopInstrumenter
