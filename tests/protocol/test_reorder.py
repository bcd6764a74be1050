"""The per-stream reorder stage (sans-I/O): offsets pass in order; gaps are held, filled or given up."""

from __future__ import annotations

from pycable.protocol.broadcast import StreamMessage
from pycable.protocol.reorder import MAX_HELD, Reorderer


def m(offset: int, epoch: str = "e", data: str = "") -> StreamMessage:
    return StreamMessage("s", data or str(offset), offset=offset, epoch=epoch)


def offsets(msgs: list[StreamMessage]) -> list[int]:
    return [x.offset for x in msgs]


def anchored(last: int) -> Reorderer[StreamMessage]:
    """A reorderer that has passed offsets 1..last of stream "s"."""
    r: Reorderer[StreamMessage] = Reorderer()
    for i in range(1, last + 1):
        assert offsets(r.push("s", m(i))) == [i]
    return r


class TestPush:
    def test_in_order_messages_pass_at_once(self):
        r = anchored(2)
        assert offsets(r.push("s", m(3))) == [3]
        assert not r.waiting("s")

    def test_a_first_message_above_one_waits_for_the_window(self):
        """Nothing is known before it: a predecessor published concurrently may still come."""
        r: Reorderer[StreamMessage] = Reorderer()
        assert r.push("s", m(7)) == [] and r.waiting("s")
        assert r.start_fill("s") is None, "no history read before the stream is anchored"
        assert r.push("s", m(6)) == []
        assert offsets(r.settle("s")) == [6, 7]
        assert not r.waiting("s")
        assert offsets(r.push("s", m(8))) == [8]
        assert offsets(r.push("s", m(5))) == [], "too late: 6 and 7 passed, so 5 can only be a gap before them"
        assert r.stale == 1

    def test_settle_leaves_gaps_between_held_messages_to_history(self):
        r: Reorderer[StreamMessage] = Reorderer()
        r.push("s", m(4))
        r.push("s", m(6))
        assert offsets(r.settle("s")) == [4]
        assert r.start_fill("s") == ("e", 4)

    def test_a_message_ahead_is_held_until_its_predecessor_arrives(self):
        r = anchored(3)
        assert r.push("s", m(5)) == [] and r.push("s", m(6)) == []
        assert r.waiting("s")
        assert offsets(r.push("s", m(4))) == [4, 5, 6]
        assert not r.waiting("s")

    def test_late_and_duplicate_messages_are_dropped(self):
        r = anchored(3)
        assert offsets(r.push("s", m(2))) == []
        assert offsets(r.push("s", m(3))) == []
        assert r.stale == 2
        assert offsets(r.push("s", m(4))) == [4]

    def test_a_fresh_cursor_never_gets_a_stale_duplicate(self):
        """A subscriber that got nothing yet (restored without positions) would take a late
        copy of 1 after 2 had passed, then 3: a silent gap. Found by test_properties.py."""
        from pycable.protocol.delivery import SEND, StreamCursor

        r = anchored(2)
        cursor: StreamCursor[StreamMessage] = StreamCursor()
        got = [x.offset for x in r.push("s", m(1)) + r.push("s", m(3)) if cursor.admit(x) == SEND]
        assert got == [3]

    def test_unpositioned_messages_pass(self):
        r = anchored(3)
        r.push("s", m(5))
        t = StreamMessage("s", "t", transient=True)
        assert r.push("s", t) == [t]

    def test_a_new_epoch_releases_the_held_and_resets(self):
        r = anchored(3)
        r.push("s", m(5))
        out = r.push("s", m(1, epoch="f"))
        assert [(x.epoch, x.offset) for x in out] == [("e", 5), ("f", 1)]
        assert offsets(r.push("s", m(2, epoch="f"))) == [2]

    def test_streams_are_independent(self):
        r: Reorderer[StreamMessage] = Reorderer()
        r.push("a", m(1))
        r.push("a", m(3))
        assert offsets(r.push("b", m(1))) == [1]
        assert r.waiting("a") and not r.waiting("b")


class TestFill:
    def test_history_fills_the_gap_and_releases_the_held(self):
        r = anchored(3)
        r.push("s", m(6))
        assert r.start_fill("s") == ("e", 3)
        assert r.start_fill("s") is None, "one fill at a time"
        assert offsets(r.fill("s", "e", [m(4), m(5), m(6), m(7)])) == [4, 5, 6, 7]
        assert not r.waiting("s")
        assert offsets(r.push("s", m(7))) == [], "7 arrives live later: passed already, dropped"
        assert offsets(r.push("s", m(8))) == [8]

    def test_messages_that_arrived_during_the_fill_are_not_passed_twice(self):
        r = anchored(3)
        r.push("s", m(6))
        r.start_fill("s")
        assert offsets(r.push("s", m(4))) == [4]
        assert offsets(r.fill("s", "e", [m(4), m(5), m(6)])) == [5, 6]

    def test_a_fill_for_an_old_epoch_or_forgotten_stream_passes_nothing(self):
        r = anchored(3)
        r.push("s", m(5))
        r.start_fill("s")
        assert r.fill("s", "other", [m(4, "other")]) == []
        assert offsets(r.forget("s")) == [5]
        assert r.fill("s", "e", [m(4)]) == []

    def test_giving_up_passes_the_held_in_order_and_moves_on(self):
        r = anchored(3)
        r.push("s", m(7))
        r.push("s", m(5))
        r.start_fill("s")
        assert offsets(r.give_up("s")) == [5, 7]
        assert offsets(r.push("s", m(8))) == [8]

    def test_overflow_is_reported(self):
        r: Reorderer[StreamMessage] = Reorderer()
        r.push("s", m(1))
        for i in range(3, 3 + MAX_HELD):
            r.push("s", m(i))
        assert r.overflowing("s")
