"""Heartbeat and flood guard, with the clock passed in (spec §1.5, preface decision 1)."""

from pycable.protocol.session import FloodGuard, Heartbeat, ping_timestamp


def test_pings_every_interval():
    hb = Heartbeat(3, 0, now=100)
    assert hb.next_wakeup() == 103
    assert hb.tick(102.9) == (False, False)
    assert hb.tick(103) == (True, False)
    assert hb.next_wakeup() == 106
    assert hb.tick(106.5) == (True, False)


def test_late_tick_does_not_burst():
    hb = Heartbeat(1, 0, now=0)
    assert hb.tick(10) == (True, False)
    assert hb.tick(10.1) == (False, False)


def test_pong_deadline():
    hb = Heartbeat(1, 2, now=0)
    assert hb.next_wakeup() == 1
    assert hb.tick(1) == (True, False)
    hb.received()
    assert hb.tick(2) == (True, False)  # re-armed after the ping: deadline 4
    assert hb.tick(3.9) == (True, False)
    assert hb.tick(4.0) == (False, True)


def test_any_frame_clears_the_deadline():
    hb = Heartbeat(1, 0.5, now=0)
    hb.received()
    assert hb.pong_deadline is None
    assert hb.tick(1.0) == (True, False)
    assert hb.tick(1.6) == (False, True)


def test_ping_precision():
    assert ping_timestamp(1.5, "s") == 1
    assert ping_timestamp(1.5, "ms") == 1500
    assert ping_timestamp(1.5, "ns") == 1_500_000_000


def test_flood_guard_window():
    g = FloodGuard(limit=3, window=10)
    assert [g.record(t) for t in (0, 1, 2)] == [False, False, False]
    assert g.record(3) is True
    g2 = FloodGuard(limit=3, window=10)
    assert not any(g2.record(t) for t in (0, 5, 11, 16, 22, 27))
    assert g2.total == 6
