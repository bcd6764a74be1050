"""Session-cache caps (issue 14 item 5): one entry and the whole cache, in bytes.

Pure tests of :class:`SessionStore` (the clock is passed in), then the memory broker with
the configured defaults.
"""

from __future__ import annotations

import logging

import orjson

from pycable.broker._sessions import SessionStore
from pycable.broker.memory import from_config
from pycable.config import Config


def cost(sid: str, entry: bytes) -> int:
    return SessionStore.cost(sid, entry)


def test_the_oldest_entries_go_first_and_are_counted_and_logged(caplog):
    entry = b"e" * 1000
    one = cost("s0", entry)
    store = SessionStore(ttl=100, max_size=3 * one)
    for i in range(3):
        store.put(f"s{i}", entry, now=i)
    assert store.size == 3 * one and store.evicted == 0
    store.touch("s0", now=3)  # written last now: s1 is the oldest
    with caplog.at_level(logging.WARNING, logger="pycable.broker"):
        store.put("s3", entry, now=4)
    assert store.get("s1", now=4) is None
    assert [s for s in ("s0", "s2", "s3") if store.get(s, now=4) == entry] == ["s0", "s2", "s3"]
    assert store.evicted == 1 and store.size == 3 * one
    assert "evicted 1 oldest" in caplog.text


def test_the_byte_total_never_exceeds_the_cap():
    store = SessionStore(ttl=100, max_size=50_000)
    for i in range(2000):
        store.put(f"sid-{i % 300}", b"x" * (i % 977), now=i / 100)
        assert store.size <= 50_000
        assert store.size == sum(cost(s, e) for s, (e, _) in store.entries.items())
    assert store.evicted > 0


def test_an_entry_larger_than_the_whole_cache_is_not_kept():
    store = SessionStore(ttl=100, max_size=1000)
    store.put("a", b"1" * 100, now=0)
    store.put("a", b"2" * 2000, now=1)
    assert store.get("a", now=1) is None and store.size == 0 and store.evicted == 1


def test_expiry_and_rewrites_keep_the_byte_count():
    store = SessionStore(ttl=10)
    store.put("a", b"1" * 10, now=0)
    store.put("b", b"2" * 20, now=5)
    store.put("a", b"3" * 30, now=6)  # rewrite: counted once
    assert store.size == cost("a", b"3" * 30) + cost("b", b"2" * 20)
    assert not store.touch("zzz", now=7)
    store.expire(now=15)
    assert store.get("b", now=15) is None and store.get("a", now=15) == b"3" * 30
    assert store.size == cost("a", b"3" * 30)
    assert not store.touch("a", now=16) and store.get("a", now=16) is None, "expired: a touch must not revive it"
    store.expire(now=16)
    assert store.size == 0 and len(store) == 0


def _entry(subs: int, ident_size: int) -> bytes:
    """A session-cache entry as the node writes it: *subs* subscriptions with big identifiers."""
    pad = "p" * ident_size
    return orjson.dumps({
        "ids": '{"user":1}',
        "subs": {f'{{"channel":"C","n":{i},"pad":"{pad}"}}': [f"stream-{i}"] for i in range(subs)},
        "cstate": {},
        "istate": {},
        "Disconnectable": False,
    })


async def test_memory_broker_defaults_refuse_huge_sessions_and_bound_the_cache(caplog):
    """The issue's case: 8 sessions of 150 subscriptions with ~60 KB identifiers kept 225 MB."""
    config = Config()
    broker = from_config(config)
    huge = _entry(150, 60_000)
    with caplog.at_level(logging.WARNING, logger="pycable.broker"):
        for i in range(8):
            await broker.commit_session(f"huge-{i}", huge)
    counts = broker.counts()
    assert counts["sessions"] == 0 and counts["sessions_bytes"] == 0 and counts["sessions_refused"] == 8
    assert "over --sessions_max_entry_size" in caplog.text

    # Entries just under the per-entry cap fill the whole cache at most.
    big = _entry(4, 60_000)
    assert len(big) <= config.sessions_max_entry_size
    n = config.sessions_max_cache_size // len(big) + 100
    for i in range(n):
        await broker.commit_session(f"big-{i}", big)
    counts = broker.counts()
    assert counts["sessions_bytes"] <= config.sessions_max_cache_size
    assert counts["sessions_evicted"] >= 100
    assert await broker.restore_session(f"big-{n - 1}") == big
    assert await broker.restore_session("big-0") is None
