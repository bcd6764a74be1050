"""Exactly-once, in-order cursors (preface decision 6). No event loop."""

from dataclasses import dataclass

from pycable.protocol.delivery import DROP, HOLD, MAX_HELD, SEND, StreamCursor


@dataclass(frozen=True)
class M:
    offset: int
    epoch: str = "e"


def offsets(ms):
    return [m.offset for m in ms]


def test_live_messages_advance_and_duplicates_drop():
    c = StreamCursor()
    assert [c.admit(M(1)), c.admit(M(2)), c.admit(M(2)), c.admit(M(1)), c.admit(M(3))] == [SEND, SEND, DROP, DROP, SEND]


def test_messages_without_offset_always_pass():
    c = StreamCursor()
    c.admit(M(5))
    assert c.admit(M(0, "")) == SEND


def test_new_epoch_resets():
    c = StreamCursor()
    c.admit(M(9, "old"))
    assert c.admit(M(1, "new")) == SEND
    assert (c.epoch, c.offset) == ("new", 1)


def test_restore_example_from_the_docstring():
    """Client saw 4; live 7, 8 held; replay 5, 6, 7; release sends 8 only."""
    c = StreamCursor()
    c.hold()
    assert c.admit(M(7)) == HOLD and c.admit(M(8)) == HOLD
    assert offsets(c.replay([M(5), M(6), M(7)])) == [5, 6, 7]
    assert offsets(c.release()) == [8]
    assert not c.holding
    assert c.admit(M(8)) == DROP and c.admit(M(9)) == SEND


def test_replay_never_resends_live_messages():
    c = StreamCursor()
    c.admit(M(1))
    c.admit(M(2))
    assert offsets(c.replay([M(1), M(2), M(3)])) == [3]


def test_held_messages_keep_arrival_order_and_transients():
    c = StreamCursor()
    c.hold()
    c.admit(M(2))
    c.admit(M(0, ""))
    c.admit(M(3))
    assert [m.offset for m in c.release()] == [2, 0, 3]


def test_release_without_hold_is_empty():
    assert StreamCursor().release() == []


def test_hold_is_bounded():
    c = StreamCursor()
    c.hold()
    for i in range(1, MAX_HELD + 11):
        c.admit(M(i))
    assert c.overflowed
    out = c.release()
    assert len(out) == MAX_HELD and out[0].offset == 11 and out[-1].offset == MAX_HELD + 10


def test_start_is_the_first_offset_delivered_in_the_epoch():
    c = StreamCursor()
    assert c.start == 0 and not c.missed([M(1), M(2)])
    c.admit(M(4))
    c.admit(M(5))
    assert c.start == 4
    assert c.missed([M(2), M(3), M(4)]), "2 and 3 were never sent and cannot follow 4"
    assert not c.missed([M(4), M(5), M(6)])
    assert not c.missed([M(2, "other")]), "another epoch is the broker's business (reject by epoch)"
    assert not c.missed([M(0, "")]), "transient messages have no position"
    c.admit(M(1, "new"))
    assert (c.start, c.epoch) == (1, "new")


def test_start_follows_a_replay():
    c = StreamCursor()
    c.hold()
    assert offsets(c.replay([M(3), M(4)])) == [3, 4]
    assert c.start == 3


def test_replay_since_moves_a_fresh_cursor_to_the_clients_position():
    """A restored session's cursor is fresh: the client's position (epoch e, offset 4) tells it
    what the client already has, even when the backlog is empty."""
    c = StreamCursor()
    c.hold()
    assert c.replay([], ("e", 4)) == []
    assert c.release() == []
    assert c.admit(M(3)) == DROP and c.admit(M(4)) == DROP and c.admit(M(5)) == SEND


def test_replay_since_never_moves_a_cursor_back():
    c = StreamCursor()
    for i in (1, 2, 3):
        c.admit(M(i))
    assert offsets(c.replay([M(2), M(3), M(4)], ("e", 1))) == [4]
    assert c.offset == 4 and c.start == 1
