"""The connection policy, sans-I/O: no event loop, the clock passed in."""

from __future__ import annotations

from pycable.protocol.connection import INVALID_REQUEST_CLOSE, NO_PONG_CLOSE, ConnectionPolicy

SUB = b'{"command":"subscribe","identifier":"x"}'


def policy(now: float = 0.0, interval: float = 3.0, pong_timeout: float = 0.0, **kw: int) -> ConnectionPolicy:
    return ConnectionPolicy(interval, pong_timeout, now, first_delay=interval, **kw)


def test_commands_wait_for_authentication_and_come_out_in_order():
    p = policy()
    for ident in ("a", "b"):
        assert p.receive_text(b'{"command":"subscribe","identifier":"%s"}' % ident.encode(), 0.0) is None
    assert not p.runnable and p.next_command() is None  # the auth gate
    p.authenticated()
    assert p.runnable
    first, second = p.next_command(), p.next_command()
    assert first is not None and second is not None
    assert (first.identifier, second.identifier) == ("a", "b")
    assert p.next_command() is None and p.commands is None  # the drained queue is dropped


def test_a_pong_is_only_a_keepalive():
    p = policy(pong_timeout=1.0)
    p.authenticated()
    assert p.receive_text(b'{"command":"pong"}', 0.5) is None
    assert not p.runnable


def test_malformed_messages_are_counted_and_a_flood_closes():
    p = policy()
    for i in range(10):
        bad = p.receive_text(b"not json", float(i) * 0.1)
        assert bad is not None and bad.close is None and "invalid JSON" in bad.why
    bad = p.receive_text(b'{"command":"fly"}', 1.0)
    assert bad is not None and bad.close is INVALID_REQUEST_CLOSE
    assert (bad.close.reason, bad.close.reconnect, bad.close.code) == ("invalid_request", False, 1007)


def test_the_flood_window_slides():
    p = policy()
    for i in range(30):  # one a second: never more than 10 in 10 s
        bad = p.receive_text(b"[]", float(i))
        assert bad is not None and bad.close is None


def test_the_queue_is_capped():
    p = policy(max_queued=3)
    for _ in range(3):
        assert p.receive_text(SUB, 0.0) is None
    bad = p.receive_text(SUB, 0.0)
    assert bad is not None and bad.why == "too many commands in flight"
    assert len(p.commands or ()) == 3


def test_a_refused_command_counts_toward_the_flood():
    p = policy()
    results = [p.malformed("'data' must be a string", 0.0) for _ in range(11)]
    assert [r.close for r in results[:10]] == [None] * 10 and results[10].close is INVALID_REQUEST_CLOSE


def test_pings_only_once_authenticated():
    p = policy(interval=3.0)
    assert p.next_wakeup() == 3.0
    assert p.tick(3.0) == (False, None)  # due, but not authenticated yet
    p.authenticated()
    assert p.tick(6.0) == (True, None)


def test_a_missing_pong_closes_and_any_message_counts_as_one():
    p = policy(interval=3.0, pong_timeout=2.0)
    p.authenticated()
    assert p.tick(3.0) == (True, None)
    p.receive_text(b'{"command":"pong"}', 4.0)
    assert p.tick(6.0) == (True, None)
    assert p.tick(8.0) == (False, NO_PONG_CLOSE)
    assert (NO_PONG_CLOSE.reason, NO_PONG_CLOSE.reconnect) == ("no_pong", True)


def test_the_first_ping_is_jittered():
    delays = {ConnectionPolicy(2.0, 0.0, 100.0).next_wakeup() - 100.0 for _ in range(50)}
    assert all(1.0 <= d < 3.0 for d in delays) and len(delays) > 1
