"""Outage logging: the first failure, then at most one line per interval, then the recovery."""

from __future__ import annotations

import logging

from pycable.log import Outage


def test_an_outage_is_logged_at_a_bounded_rate_and_its_recovery_once(caplog):
    caplog.set_level(logging.INFO, logger="pycable.test")
    now = [100.0]
    outage = Outage(logging.getLogger("pycable.test"), "Redis broker at h:1", interval=30.0, clock=lambda: now[0])
    assert outage.health() == "" and not outage.down
    outage.recovered()  # up: nothing to say
    for _ in range(50):  # a retry every 0.2 s for 10 s
        outage.failed("ConnectionError: refused")
        now[0] += 0.2
    assert [r.getMessage() for r in caplog.records] == [
        "Redis broker at h:1 is unreachable: ConnectionError: refused; retrying"
    ]
    assert outage.health() == "Redis broker at h:1 is unreachable: ConnectionError: refused"
    now[0] = 130.0
    outage.failed("TimeoutError: late")
    now[0] = 131.0
    outage.failed("TimeoutError: late")
    assert caplog.records[-1].getMessage() == (
        "Redis broker at h:1 is still unreachable after 51 attempts in 30s: TimeoutError: late; retrying"
    )
    assert len(caplog.records) == 2
    now[0] = 140.0
    outage.recovered()
    outage.recovered()
    assert caplog.records[-1].getMessage() == "Redis broker at h:1 is reachable again after 40.0s"
    assert caplog.records[-1].levelno == logging.INFO and len(caplog.records) == 3
    assert outage.health() == "" and outage.attempts == 0
