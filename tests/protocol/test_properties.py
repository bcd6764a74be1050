"""Property-based tests (hypothesis) of the pure protocol layer.

* Decoders: any bytes or text give a value or the decoder's own error, which the caller
  counts as a dropped frame (the transport's ``FloodGuard``) or answers (400/422,
  ``reject_history``); never any other exception.
* Delivery: random interleavings of publications, pub/sub deliveries (any order, duplicates,
  losses), gap fills, restores and history requests, through the per-node
  :class:`Reorderer` and one subscriber's :class:`StreamCursor`, as the node wires them. The
  client never gets an offset twice or out of order, and never misses one silently: every
  offset between two it received was announced as lost (``give_up``), and once everything
  has settled it has every offset after its first.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pycable.exceptions import BroadcastError, HistoryError, ProtocolError
from pycable.node.session import CacheEntry
from pycable.protocol.broadcast import StreamMessage, parse_broadcast, parse_pubsub
from pycable.protocol.codec import Command, decode_command
from pycable.protocol.delivery import HOLD, SEND, StreamCursor
from pycable.protocol.history import HistoryRequest, parse_history
from pycable.protocol.reorder import Reorderer

# -- decoders ----------------------------------------------------------------------------------

KEYS = ["command", "identifier", "data", "history", "presence", "stream", "meta", "offset", "epoch", "since",
        "streams", "payload", "reconnect", "exclude_socket", "transient", "broadcast_type", "ids", "subs",
        "cstate", "istate", "Disconnectable", "Offset", "Epoch"]
COMMANDS = ["subscribe", "unsubscribe", "message", "history", "ping", "pong", "whisper", "join", "disconnect", "x"]

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20), st.sampled_from(COMMANDS),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=6),
    max_leaves=30,
)
# Documents shaped like the real ones, so that the checks past "is it an object" run too.
shaped = st.fixed_dictionaries(
    {}, optional={k: json_values for k in KEYS}
) | st.lists(st.fixed_dictionaries({}, optional={k: json_values for k in KEYS}), max_size=3)


def encodings(value: Any) -> list[bytes]:
    raw = orjson.dumps(value)
    return [raw, raw[: len(raw) // 2], raw + b"x", raw.replace(b'"', b"'", 1)]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_decode_command_any_bytes(frame: bytes) -> None:
    try:
        assert isinstance(decode_command(frame), Command)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_decode_command_any_text(frame: str) -> None:
    """Text frames arrive as ``str``; lone surrogates cannot, but nothing may escape either way."""
    try:
        assert isinstance(decode_command(frame), Command)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shaped | json_values)
def test_every_decoder_on_json_documents(value: Any) -> None:
    for raw in encodings(value):
        try:
            assert isinstance(decode_command(raw), Command)
        except ProtocolError:
            pass
        for parse in (parse_broadcast, parse_pubsub):
            try:
                out = parse(raw)
                assert out and all(hasattr(p, "stream") or hasattr(p, "identifier") for p in out)
            except BroadcastError:  # BroadcastFormatError is one
                pass
        assert CacheEntry.decode(raw) is None or isinstance(CacheEntry.decode(raw), CacheEntry)
    try:
        out = parse_history(value)
        assert out is None or isinstance(out, HistoryRequest)
    except HistoryError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_broadcast_and_cache_decoders_any_bytes(raw: bytes) -> None:
    for parse in (parse_broadcast, parse_pubsub):
        try:
            parse(raw)
        except BroadcastError:
            pass
    assert CacheEntry.decode(raw) is None or isinstance(CacheEntry.decode(raw), CacheEntry)


# -- delivery: reorderer + cursor ------------------------------------------------------------------


def m(offset: int) -> StreamMessage:
    return StreamMessage("s", str(offset), offset=offset, epoch="e")


class Delivery(RuleBasedStateMachine):
    """One stream, one node, one client subscription that comes and goes (restores).

    The broker holds every published offset (history is complete unless a rule says it
    cannot be read); pub/sub delivers any in-flight publication, in any order, possibly
    twice, or loses it.
    """

    @initialize()
    def setup(self) -> None:
        self.published = 0
        self.inflight: list[int] = []
        self.order: Reorderer[StreamMessage] = Reorderer()
        self.cursor: StreamCursor[StreamMessage] | None = StreamCursor()
        self.received: list[int] = []
        self.announced: set[int] = set()  # offsets given up, with a log line
        self.fill: tuple[str, int, list[int]] | None = None  # a history read in flight (gap fill)
        self.history: list[int] | None = None  # a client history request in flight (its backlog)
        self.position = 0  # the offset that request asked from

    # -- plumbing --------------------------------------------------------------------------------

    def deliver(self, msgs: list[StreamMessage]) -> None:
        """The hub: each message the reorderer passes on goes through the cursor."""
        for msg in msgs:
            if self.cursor is not None and self.cursor.admit(msg) == SEND:
                self.received.append(msg.offset)

    def to_client(self, msgs: list[StreamMessage]) -> None:
        """Replayed or released messages (already filtered by the cursor)."""
        self.received.extend(x.offset for x in msgs)

    # -- the world -------------------------------------------------------------------------------

    @rule(n=st.integers(1, 3))
    def publish(self, n: int) -> None:
        for _ in range(n):
            self.published += 1
            self.inflight.append(self.published)

    @precondition(lambda self: self.inflight)
    @rule(i=st.integers(0, 50), keep=st.booleans())
    def pubsub_delivers(self, i: int, keep: bool) -> None:
        """Any in-flight publication arrives (it may stay in flight: a duplicate later)."""
        offset = self.inflight[i % len(self.inflight)]
        if not keep:
            self.inflight.remove(offset)
        self.deliver(self.order.push("s", m(offset)))

    @precondition(lambda self: self.inflight)
    @rule(i=st.integers(0, 50))
    def pubsub_loses(self, i: int) -> None:
        self.inflight.pop(i % len(self.inflight))

    @precondition(lambda self: self.published)
    @rule(i=st.integers(0, 50))
    def pubsub_duplicates_an_old_one(self, i: int) -> None:
        self.deliver(self.order.push("s", m(1 + i % self.published)))

    # -- the gap filler --------------------------------------------------------------------------

    @precondition(lambda self: self.fill is None)
    @rule()
    def window_passes(self) -> None:
        """The gap window ended: settle a new stream, then read history after ``last``."""
        if not self.order.waiting("s"):
            return
        self.deliver(self.order.settle("s"))
        start = self.order.start_fill("s")
        if start is not None:
            epoch, last = start
            self.fill = (epoch, last, list(range(last + 1, self.published + 1)))

    @precondition(lambda self: self.fill is not None)
    @rule()
    def fill_arrives(self) -> None:
        assert self.fill is not None
        epoch, _, backlog = self.fill
        self.fill = None
        self.deliver(self.order.fill("s", epoch, [m(o) for o in backlog]))

    @precondition(lambda self: self.fill is not None)
    @rule()
    def fill_fails(self) -> None:
        """History cannot fill the gap: the held messages pass with it, announced."""
        self.fill = None
        st_ = self.order.streams["s"]
        before, held = st_.last, sorted(st_.held)
        if held:
            self.announced.update(o for o in range(before + 1, held[-1]) if o not in held)
        self.deliver(self.order.give_up("s"))

    # -- the client ------------------------------------------------------------------------------

    @precondition(lambda self: self.cursor is not None and self.history is None)
    @rule()
    def client_drops(self) -> None:
        self.cursor = None

    @precondition(lambda self: self.cursor is None)
    @rule()
    def client_restores(self) -> None:
        """Reconnect with the session: a fresh cursor holds until the history request is answered."""
        self.cursor = StreamCursor()
        self.cursor.hold()
        self.ask_history()

    @precondition(lambda self: self.cursor is not None and self.history is None)
    @rule()
    def client_asks_history(self) -> None:
        """A ``history`` command on a live subscription, from the client's last offset."""
        assert self.cursor is not None
        self.cursor.hold()
        self.ask_history()

    def ask_history(self) -> None:
        """The client asks from its last offset (nothing: a request without positions)."""
        last = self.received[-1] if self.received else 0
        self.position = last
        self.history = list(range(last + 1, self.published + 1)) if last else []

    @precondition(lambda self: self.history is not None)
    @rule()
    def history_answered(self) -> None:
        cursor, backlog = self.cursor, self.history
        assert cursor is not None and backlog is not None
        self.history = None
        msgs = [m(o) for o in backlog]
        if cursor.missed(msgs):
            pass  # reject_history: the client is told; nothing replayed
        else:
            self.to_client(cursor.replay(msgs, ("e", self.position)))
        self.to_client(cursor.release())

    # -- properties ------------------------------------------------------------------------------

    @invariant()
    def never_twice_never_out_of_order(self) -> None:
        got = self.received
        assert all(a < b for a, b in itertools.pairwise(got)), got

    @invariant()
    def never_skipped_silently(self) -> None:
        got = self.received
        for a, b in itertools.pairwise(got):
            missing = set(range(a + 1, b)) - self.announced
            assert not missing, f"{sorted(missing)} skipped silently in {got}"

    @invariant()
    def held_only_while_a_request_is_pending(self) -> None:
        if self.cursor is not None and self.history is None:
            assert not self.cursor.holding

    @rule()
    def everything_settles(self) -> None:
        """Deliver or lose what is in flight, let every window pass, answer the client: it then
        has every offset after its first, unless announced lost."""
        while self.inflight:
            self.deliver(self.order.push("s", m(self.inflight.pop(0))))
        # A lost last message is noticed when the next one arrives (or on the client's next
        # history request): publish one more, delivered.
        self.published += 1
        self.deliver(self.order.push("s", m(self.published)))
        if self.fill is not None:
            self.fill_arrives()
        if self.history is not None:
            self.history_answered()
        if self.cursor is None:
            self.client_restores()
            self.history_answered()
        while self.order.waiting("s"):
            self.window_passes()
            if self.fill is None:
                break
            self.fill_arrives()
        assert not self.order.waiting("s")
        if self.received:
            every = set(range(self.received[0], self.published + 1))
            assert every - self.announced <= set(self.received) <= every, (self.received, self.published, self.announced)


TestDelivery = Delivery.TestCase
TestDelivery.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["live", "hold", "replay", "release"]), st.integers(1, 30)), max_size=60))
def test_cursor_alone_never_repeats_or_reorders(ops: list[tuple[str, int]]) -> None:
    """Whatever the interleaving (live in any order, replays of any range), a cursor sends each
    offset at most once and in increasing order."""
    cursor: StreamCursor[StreamMessage] = StreamCursor()
    sent: list[int] = []
    for op, n in ops:
        if op == "live":
            verdict = cursor.admit(m(n))
            if verdict == SEND:
                sent.append(n)
            else:
                assert verdict == HOLD or n <= cursor.offset
        elif op == "hold":
            cursor.hold()
        elif op == "replay":
            sent.extend(x.offset for x in cursor.replay([m(o) for o in range(n, n + 5)]))
        else:
            sent.extend(x.offset for x in cursor.release())
    assert all(a < b for a, b in itertools.pairwise(sent)), sent
