"""What pycable measures: the catalogue of metrics and :class:`Stats`, which reads them from
the running components' integer counters.

AnyCable's names are kept where AnyCable has the metric (with its ``anycable_go_`` prefix,
so that AnyCable's Grafana dashboards work unchanged); pycable's own metrics are
``pycable_*``. See docs/operations.md for what each one means.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pycable.metrics.base import Metric, Snapshot

__all__ = ["METRICS", "ANYCABLE_PREFIX", "Stats"]

ANYCABLE_PREFIX = "anycable_go_"
_A, _P = ANYCABLE_PREFIX, "pycable_"

METRICS: tuple[Metric, ...] = (
    # -- AnyCable's ---------------------------------------------------------------------------
    Metric(_A + "clients_num", "gauge", "The number of active clients"),
    Metric(_A + "clients_uniq_num", "gauge", "The number of unique clients (with respect to connection identifiers)"),
    Metric(_A + "broadcast_streams_num", "gauge", "The number of active broadcasting streams"),
    Metric(_A + "disconnect_queue_size", "gauge", "The size of delayed disconnect"),
    Metric(_A + "rpc_pending_num", "gauge", "The number of pending RPC calls"),
    Metric(_A + "rpc_capacity_num", "gauge", "The max number of concurrent RPC calls allowed"),
    Metric(_A + "failed_auths_total", "counter", "The total number of failed authentication attempts"),
    Metric(_A + "client_msg_total", "counter", "The total number of received messages from clients"),
    Metric(_A + "failed_client_msg_total", "counter", "The total number of unrecognized messages received from clients"),
    Metric(_A + "broadcast_msg_total", "counter", "The total number of messages received through PubSub (for broadcast)"),
    Metric(_A + "failed_broadcast_msg_total", "counter", "The total number of unrecognized messages received through PubSub"),
    Metric(_A + "server_msg_total", "counter", "The total number of messages sent to clients"),
    Metric(_A + "failed_server_msg_total", "counter", "The total number of messages failed to send to clients"),
    Metric(_A + "rpc_call_total", "counter", "The total number of RPC calls"),
    Metric(_A + "rpc_retries_total", "counter", "The total number of RPC call retries"),
    Metric(_A + "rpc_error_total", "counter", "The total number of failed RPC calls"),
    # -- pycable's ------------------------------------------------------------------------------
    Metric(_P + "broadcasts_registered_total", "counter", "Publications registered with the broker by this node"),
    Metric(_P + "restores_total", "counter", "Sessions restored (resumed without a new Connect)"),
    Metric(_P + "history_served_total", "counter", "History requests answered with confirm_history"),
    Metric(_P + "history_rejected_total", "counter", "History requests answered with reject_history"),
    Metric(_P + "too_slow_total", "counter", "Clients disconnected for not reading (too_slow)"),
    Metric(_P + "evictions_total", "counter", "Clients the server closed: too slow, a flood of malformed frames, no pong"),
    Metric(_P + "malformed_frames_total", "counter", "Malformed client frames dropped"),
    Metric(_P + "held_overflow_total", "counter", "Subscriptions whose held messages overflowed during a restore"),
    Metric(_P + "gaps_lost_total", "counter", "Out-of-order gaps that history could not fill (messages skipped)"),
    Metric(_P + "broker_errors_total", "counter", "Failed broker calls (the broker was unreachable or refused)"),
    Metric(_P + "pubsub_errors_total", "counter", "Pub/sub failures: messages not sent to other nodes, lost connections"),
    Metric(_P + "disconnect_calls_total", "counter", "Disconnect RPC calls made"),
    Metric(_P + "disconnect_failures_total", "counter", "Disconnect RPC calls that failed"),
)


def _stat(component: object, key: str) -> int:
    stats: dict[str, int] | None = getattr(component, "stats", None)
    return stats.get(key, 0) if stats else 0


def _failures(component: object) -> int:
    """Failed attempts counted by a component's :class:`~pycable.log.Outage`, if it has one."""
    outage = getattr(component, "outage", None)
    return int(getattr(outage, "failures", 0))


class Stats:
    """Reads the metrics from the node and the broadcasters (and their backends).

    Args:
        node: the :class:`~pycable.node.node.Node`.
        broadcasters: every broadcaster in use (HTTP included).
    """

    def __init__(self, node: Any, broadcasters: Iterable[object] = ()) -> None:
        self.node = node
        self.broadcasters = list(broadcasters)

    def read(self) -> Snapshot:
        node, hub = self.node, self.node.hub
        ns, hs = node.stats, hub.stats
        rpc = getattr(getattr(node.controller, "rpc", None), "barrier", None)
        gaps = node.gaps
        bcast = self.broadcasters
        return {
            _A + "clients_num": len(hub.sessions),
            _A + "clients_uniq_num": len(hub.by_identifiers),
            _A + "broadcast_streams_num": len(hub.streams),
            _A + "disconnect_queue_size": node.disconnector.pending,
            _A + "rpc_pending_num": rpc.waiting if rpc is not None else 0,
            _A + "rpc_capacity_num": rpc.concurrency if rpc is not None else 0,
            _A + "failed_auths_total": ns.get("failed_auths", 0),
            _A + "client_msg_total": ns.get("client_msgs", 0),
            _A + "failed_client_msg_total": ns.get("malformed_frames", 0),
            _A + "broadcast_msg_total": ns.get("pubsub_received", 0),
            _A + "failed_broadcast_msg_total": sum(_stat(b, "malformed") for b in bcast),
            _A + "server_msg_total": hs.get("sent", 0),
            _A + "failed_server_msg_total": hs.get("send_failed", 0),
            _A + "rpc_call_total": _stat(rpc, "calls"),
            _A + "rpc_retries_total": _stat(rpc, "retries"),
            _A + "rpc_error_total": _stat(rpc, "failures"),
            _P + "broadcasts_registered_total": ns.get("broadcasts", 0),
            _P + "restores_total": ns.get("restores", 0),
            _P + "history_served_total": ns.get("history_served", 0),
            _P + "history_rejected_total": ns.get("history_rejected", 0),
            _P + "too_slow_total": ns.get("too_slow", 0),
            _P + "evictions_total": ns.get("evictions", 0),
            _P + "malformed_frames_total": ns.get("malformed_frames", 0),
            _P + "held_overflow_total": ns.get("held_overflow", 0),
            _P + "gaps_lost_total": _stat(gaps, "gaps_lost"),
            _P + "broker_errors_total": _failures(node.broker),
            _P + "pubsub_errors_total": _stat(node.pubsub, "dropped") + _failures(node.pubsub),
            _P + "disconnect_calls_total": _stat(node.disconnector, "called"),
            _P + "disconnect_failures_total": _stat(node.disconnector, "failed"),
        }
