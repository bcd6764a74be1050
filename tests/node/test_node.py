"""The node over recording connections: subscribe, history, restore, exactly-once.

These run on an event loop (the broker API is async) but with no network.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from pycable.broker.base import HistoryPolicy
from pycable.broker.memory import MemoryBroker
from pycable.node.controller import LocalController
from pycable.node.node import Node, NodeConfig
from pycable.protocol.broadcast import RemoteCommand, StreamMessage
from pycable.testing import FakeClock, connect_session, send

IDENT = json.dumps({"channel": "$pubsub", "stream_name": "chat"})
IDENT2 = json.dumps({"channel": "$pubsub", "stream_name": "news"})


@pytest.fixture
async def setup():
    clock = FakeClock()
    broker = MemoryBroker(HistoryPolicy(limit=5, ttl=60), sessions_ttl=60, clock=clock)
    node = Node(LocalController(noauth=True, public_streams=True), broker, config=NodeConfig(sessions_ttl=60))
    await node.start()
    yield node, broker, clock
    await node.shutdown()


async def publish(node: Node, stream: str, *datas: str) -> None:
    await node.handle_broadcast([StreamMessage(stream, d) for d in datas])
    await drain(node)


async def drain(node: Node) -> None:
    """Wait until the hub's fan-out worker is idle (an event, not a timer)."""
    while node.hub._worker is not None:
        await asyncio.shield(node.hub._worker)


async def subscribed(node: Node, *sids: str) -> list:
    """Sessions *sids*, each connected and subscribed to ``IDENT``: ``[(session, conn), ...]``."""
    out = []
    for sid in sids:
        session, conn = await connect_session(node, sid)
        await send(node, session, {"command": "subscribe", "identifier": IDENT})
        out.append((session, conn))
    return out


def offsets(conn, stream=None):
    return [m["offset"] for m in conn.stream_messages() if stream is None or m["stream_id"] == stream]


class TestSubscribe:
    async def test_welcome_confirm_and_live_message(self, setup):
        node, broker, _ = setup
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        await publish(node, "chat", '{"a":1}')
        assert conn.messages == [
            {"type": "welcome", "sid": "s1"},
            {"type": "confirm_subscription", "identifier": IDENT},
            {"identifier": IDENT, "message": {"a": 1}, "stream_id": "chat", "epoch": broker.epoch, "offset": 1},
        ]

    async def test_duplicate_subscribe_is_ignored(self, setup):
        node, _, _ = setup
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        await publish(node, "chat", "1")
        types = [m.get("type") for m in conn.messages]
        assert types.count("confirm_subscription") == 1
        assert offsets(conn) == [1], "one copy per (session, identifier)"

    async def test_same_stream_under_two_identifiers_gets_two_copies(self, setup):
        node, _, _ = setup
        s, conn = await connect_session(node, "s1")
        other = json.dumps({"channel": "$pubsub", "stream_name": "chat", "x": 1})
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        await send(node, s, {"command": "subscribe", "identifier": other})
        await publish(node, "chat", "1")
        assert sorted(m["identifier"] for m in conn.stream_messages()) == sorted([IDENT, other])

    async def test_subscribe_with_history_orders_confirm_replay_confirm_history(self, setup):
        node, broker, clock = setup
        await publish(node, "chat", "1", "2")
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": IDENT, "history": {"since": clock.now - 30}})
        types = [m.get("type", "msg") for m in conn.messages]
        assert types == ["welcome", "confirm_subscription", "msg", "msg", "confirm_history"]
        assert offsets(conn) == [1, 2]

    async def test_unsubscribe_stops_delivery(self, setup):
        node, _, _ = setup
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        await send(node, s, {"command": "unsubscribe", "identifier": IDENT})
        await publish(node, "chat", "1")
        assert conn.stream_messages() == []
        assert node.hub.streams == {}

    async def test_rejected_subscription(self, setup):
        node, _, _ = setup
        s, conn = await connect_session(node, "s1")
        bad = json.dumps({"channel": "Unknown"})
        await send(node, s, {"command": "subscribe", "identifier": bad})
        assert conn.messages[-1] == {"type": "reject_subscription", "identifier": bad}
        assert s.subscriptions == {}


class TestHistory:
    async def test_offset_history_and_edge_cases(self, setup):
        """Spec §9.5 cases 1, 2, 4, 5 on one stream (limit 5)."""
        node, broker, clock = setup
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        await publish(node, "chat", *[str(i) for i in range(1, 8)])  # offsets 1..7, low 3
        e = broker.epoch

        async def ask(history):
            conn.clear()
            await send(node, s, {"command": "history", "identifier": IDENT, "history": history})
            return [m.get("type", m.get("offset")) for m in conn.messages]

        # Already delivered live: the cursor never sends an offset twice (decision 6).
        assert await ask({"streams": {"chat": {"epoch": e, "offset": 2}}}) == ["confirm_history"]
        assert await ask({"streams": {"chat": {"epoch": "nope", "offset": 2}}}) == ["reject_history"]
        assert await ask({"streams": {"chat": {"epoch": e, "offset": 1}}}) == ["reject_history"]
        assert await ask({"streams": {"chat": {"epoch": e, "offset": 99}}}) == ["reject_history"]
        assert await ask({"streams": {"chat": {"epoch": e, "offset": 7}}}) == ["confirm_history"]
        assert await ask({"since": "yesterday"}) == ["reject_history"]
        assert await ask({}) == [], "an empty request is ignored"
        s2, conn2 = await connect_session(node, "s2")
        await send(node, s2, {"command": "subscribe", "identifier": IDENT2, "history": {"since": 1}})
        assert [m.get("type") for m in conn2.messages][-1] == "confirm_history"  # unknown stream by since

    async def test_second_client_gets_exactly_the_missing_messages(self, setup):
        node, broker, _ = setup
        await publish(node, "chat", "1", "2", "3")
        s, conn = await connect_session(node, "s2")
        await send(node, s, {"command": "subscribe", "identifier": IDENT,
                             "history": {"streams": {"chat": {"epoch": broker.epoch, "offset": 1}}}})
        assert offsets(conn) == [2, 3]
        assert conn.messages[-1] == {"type": "confirm_history", "identifier": IDENT}

    async def test_history_for_unknown_subscription_is_ignored(self, setup):
        node, _, _ = setup
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "history", "identifier": IDENT, "history": {"since": 1}})
        assert len(conn.messages) == 1

    async def test_transient_messages_are_live_only(self, setup):
        node, broker, clock = setup
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        await node.handle_broadcast([StreamMessage("chat", "1"), StreamMessage("chat", "t", transient=True),
                                     StreamMessage("chat", "2")])
        await drain(node)
        live = conn.stream_messages()
        assert [m.get("offset") for m in live] == [1, None, 2]
        assert [m.offset for m in await broker.history_since("chat", 0)] == [1, 2]


    async def test_history_by_since_replays_and_skips_transient(self, setup):
        node, broker, clock = setup
        await node.handle_broadcast([StreamMessage("chat", "1"), StreamMessage("chat", "t", transient=True)])
        clock.now += 10
        await publish(node, "chat", "2", "3")
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": IDENT,
                             "history": {"since": int(clock.now) - 5}})
        assert offsets(conn) == [2, 3]
        assert conn.messages[-1] == {"type": "confirm_history", "identifier": IDENT}

    async def test_malformed_history_on_subscribe_confirms_then_rejects(self, setup):
        node, _, _ = setup
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": IDENT, "history": {"since": "soon"}})
        assert [m.get("type") for m in conn.messages[1:]] == ["confirm_subscription", "reject_history"]
        await publish(node, "chat", "1")
        assert offsets(conn) == [1], "the subscription works"

    async def test_a_fully_expired_stream_rejects_offset_history(self, setup):
        """Spec §9.5 case 3."""
        node, broker, clock = setup
        await publish(node, "chat", "1", "2")
        epoch = broker.epoch
        clock.now += 61  # past --history_ttl (60) and idle: the stream goes
        broker.expire(clock.now)
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": IDENT,
                             "history": {"streams": {"chat": {"epoch": epoch, "offset": 1}}}})
        assert [m.get("type") for m in conn.messages[1:]] == ["confirm_subscription", "reject_history"]

    async def test_history_before_the_first_live_message_is_rejected(self, setup):
        """Offsets 2, 3 were never sent to this subscription and cannot follow 4 in order."""
        node, broker, _ = setup
        await publish(node, "chat", "1", "2", "3")
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        await publish(node, "chat", "4")
        conn.clear()
        await send(node, s, {"command": "history", "identifier": IDENT,
                             "history": {"streams": {"chat": {"epoch": broker.epoch, "offset": 1}}}})
        assert conn.messages == [{"type": "reject_history", "identifier": IDENT}]
        conn.clear()
        await send(node, s, {"command": "history", "identifier": IDENT,
                             "history": {"streams": {"chat": {"epoch": broker.epoch, "offset": 3}}}})
        assert conn.messages == [{"type": "confirm_history", "identifier": IDENT}], "nothing missed from 3 on"

    async def test_a_resubscribe_during_a_large_fan_out_gets_each_offset_once(self, setup, monkeypatch):
        """The fan-out walks a snapshot and yields; a subscriber removed meanwhile is skipped
        (the same session, subscribed again, has a new cursor)."""
        from pycable.node import hub

        monkeypatch.setattr(hub, "YIELD_EVERY", 2)
        node, broker, _ = setup
        for i in range(6):
            other, _ = await connect_session(node, f"o{i}")
            await send(node, other, {"command": "subscribe", "identifier": IDENT})
        s, conn = await connect_session(node, "target")
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        await publish(node, "chat", "1")
        await node.handle_broadcast([StreamMessage("chat", "2"), StreamMessage("chat", "3")])
        await asyncio.sleep(0)  # let the fan-out of 2 start and stop at its first yield
        assert node.hub._worker is not None and offsets(conn) == [1]
        await send(node, s, {"command": "unsubscribe", "identifier": IDENT})
        await send(node, s, {"command": "subscribe", "identifier": IDENT,
                             "history": {"streams": {"chat": {"epoch": broker.epoch, "offset": 1}}}})
        await drain(node)
        assert offsets(conn) == [1, 2, 3]

class TestRestore:
    async def test_restore_without_resubscribing_and_exactly_once(self, setup):
        """Spec §9.4/§9.5 12: restored welcome, no confirm, held live + replay exactly once."""
        node, broker, _ = setup
        s, conn = await connect_session(node, "old")
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        await send(node, s, {"command": "subscribe", "identifier": IDENT2})
        await publish(node, "chat", "1", "2")
        await node.disconnect(s)
        await publish(node, "chat", "3", "4")  # missed while away
        s2, conn2 = await connect_session(node, "new", prev_sid="old")
        welcome = conn2.messages[0]
        assert welcome["restored"] is True and welcome["sid"] == "new"
        assert sorted(welcome["restored_ids"]) == sorted([IDENT, IDENT2])
        await publish(node, "chat", "5")  # live, before the client's history request: held
        assert conn2.stream_messages() == []
        await send(node, s2, {"command": "history", "identifier": IDENT,
                              "history": {"streams": {"chat": {"epoch": broker.epoch, "offset": 2}}}})
        await publish(node, "chat", "6")
        assert offsets(conn2) == [3, 4, 5, 6]
        assert not any(m.get("type") == "confirm_subscription" for m in conn2.messages)
        # The new sid can itself be restored; the old one still works within the TTL (§9.5 13).
        await node.disconnect(s2)
        s3, conn3 = await connect_session(node, "newer", prev_sid="new")
        assert conn3.messages[0].get("restored") is True
        s4, conn4 = await connect_session(node, "again", prev_sid="old")
        assert conn4.messages[0].get("restored") is True

    async def test_a_late_duplicate_after_an_up_to_date_restore_is_dropped(self, setup):
        """The restored session's cursors are fresh; the client's history position says it has
        1..2 already, so a late pub/sub copy of 1 (passed on by the reorderer, which leaves
        duplicates to the cursors) must not reach it (found by tests/protocol/test_properties.py)."""
        node, broker, _ = setup
        s, conn = await connect_session(node, "old")
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        await publish(node, "chat", "1", "2")
        first = conn.stream_messages()
        await node.disconnect(s)
        s2, conn2 = await connect_session(node, "new", prev_sid="old")
        await send(node, s2, {"command": "history", "identifier": IDENT,
                              "history": {"streams": {"chat": {"epoch": broker.epoch, "offset": 2}}}})
        assert conn2.messages[-1] == {"type": "confirm_history", "identifier": IDENT}
        late = StreamMessage("chat", "1", offset=1, epoch=broker.epoch)
        assert [m["offset"] for m in first] == [1, 2]
        node.handle_pubsub(late)
        await drain(node)
        await publish(node, "chat", "3")
        assert offsets(conn2) == [3]

    async def test_hold_is_released_without_a_history_command(self, setup):
        node, _, _ = setup
        node.config.restore_hold = 0.05
        s, conn = await connect_session(node, "old")
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        await node.disconnect(s)
        s2, conn2 = await connect_session(node, "new", prev_sid="old")
        await publish(node, "chat", "1")
        assert conn2.stream_messages() == []
        await asyncio.sleep(0.1)  # the hold timeout itself is what is tested here
        assert offsets(conn2) == [1]

    async def test_history_after_the_hold_expired_is_rejected_not_confirmed_with_a_gap(self, setup):
        """The client's history command comes after the hold timer released live messages:
        the missed ones can no longer be sent in order, so the reply is reject_history."""
        node, broker, _ = setup
        s, conn = await connect_session(node, "old")
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        await publish(node, "chat", "1")
        await node.disconnect(s)
        await publish(node, "chat", "2", "3")
        s2, conn2 = await connect_session(node, "new", prev_sid="old")
        await publish(node, "chat", "4")
        s2.hold_timer.cancel()
        node._release_all(s2)  # what the timer does after --restore_hold
        assert offsets(conn2) == [4]
        await send(node, s2, {"command": "history", "identifier": IDENT,
                              "history": {"streams": {"chat": {"epoch": broker.epoch, "offset": 1}}}})
        assert conn2.messages[-1] == {"type": "reject_history", "identifier": IDENT}
        assert offsets(conn2) == [4]

    async def test_held_overflow_is_logged_and_counted(self, setup, monkeypatch, caplog):
        from pycable.protocol import delivery

        monkeypatch.setattr(delivery, "MAX_HELD", 2)
        node, broker, _ = setup
        s, conn = await connect_session(node, "old")
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        await node.disconnect(s)
        s2, conn2 = await connect_session(node, "new", prev_sid="old")
        await publish(node, "chat", "1", "2", "3")
        s2.hold_timer.cancel()
        node._release_all(s2)
        assert offsets(conn2) == [2, 3]
        assert node.stats["held_overflow"] == 1
        assert "the oldest were dropped" in caplog.text

    async def test_unknown_expired_or_disabled_sessions_connect_normally(self, setup):
        """Spec §9.5 cases 6, 7, 8."""
        node, broker, clock = setup
        _, conn = await connect_session(node, "a", prev_sid="never-seen")
        assert conn.messages == [{"type": "welcome", "sid": "a"}]
        s, _ = await connect_session(node, "b")
        await node.disconnect(s)
        clock.now += 61
        _, conn = await connect_session(node, "c", prev_sid="b")
        assert "restored" not in conn.messages[0]
        _, conn = await connect_session(node, "d", ext=False, prev_sid="b")
        assert "restored" not in conn.messages[0]

    async def test_malformed_cache_entry_falls_back_to_connect(self, setup):
        node, broker, _ = setup
        await broker.commit_session("bad", b"{not json")
        _, conn = await connect_session(node, "x", prev_sid="bad")
        assert conn.messages == [{"type": "welcome", "sid": "x"}]

    async def test_sessions_ttl_zero_disables_restore(self):
        broker = MemoryBroker(sessions_ttl=0)
        node = Node(LocalController(noauth=True, public_streams=True), broker, config=NodeConfig(sessions_ttl=0))
        await node.start()
        s, _ = await connect_session(node, "a")
        assert not s.resumable
        await node.disconnect(s)
        _, conn = await connect_session(node, "b", prev_sid="a")
        assert "restored" not in conn.messages[0]
        await node.shutdown()


class TestBroadcastFeatures:
    async def test_exclude_socket(self, setup):
        node, _, _ = setup
        (a, ca), (b, cb) = await subscribed(node, "a", "b")
        await node.handle_broadcast([StreamMessage("chat", "1", exclude_socket="a")])
        await drain(node)
        assert ca.stream_messages() == [] and len(cb.stream_messages()) == 1

    async def test_fan_out_broadcasts_bypass_the_broker(self, setup):
        """Spec §9.5 case 11: a legacy redis/nats broadcast is not stored and carries no position."""
        node, broker, _ = setup
        s, conn = await connect_session(node, "s1")
        await send(node, s, {"command": "subscribe", "identifier": IDENT})
        node.handle_fanout([StreamMessage("chat", '"legacy"')])
        await drain(node)
        assert conn.stream_messages() == [{"identifier": IDENT, "message": "legacy"}]
        assert await broker.history_since("chat", 0) == []

    async def test_whisper_reaches_others_only(self, setup):
        node, broker, _ = setup
        (a, ca), (b, cb) = await subscribed(node, "a", "b")
        await send(node, a, {"command": "whisper", "identifier": IDENT, "data": {"typing": True}})
        await drain(node)
        assert ca.stream_messages() == []
        assert cb.stream_messages() == [{"identifier": IDENT, "message": {"typing": True}}]
        assert await broker.history_since("chat", 0) == []

    async def test_remote_disconnect_closes_every_matching_session(self, setup):
        node, _, _ = setup
        node.controller.noauth = False
        node.controller.jwt_secret = ""
        a, ca = await connect_session(node, "a")
        assert ca.closed is not None  # no auth configured now: unauthorized
        node.controller.noauth = True
        a, ca = await connect_session(node, "a")
        b, cb = await connect_session(node, "b")
        a.identifiers = b.identifiers = "same"
        node.hub.by_identifiers = {"same": {a, b}}
        node.handle_remote_command(RemoteCommand("disconnect", "same", True))
        for c in (ca, cb):
            assert c.messages[-1] == {"type": "disconnect", "reason": "remote", "reconnect": True}
            assert c.closed == (1000, "Closed remotely")


class GatedPubSub:
    """A pub/sub whose subscribe waits for a gate (a slow Redis/NATS confirmation)."""

    is_multi_node = True

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.subscribing = asyncio.Event()
        self.subscribed: list[str] = []
        self.handler = None

    async def start(self, handler) -> None:
        self.handler = handler

    async def shutdown(self) -> None:
        pass

    def describe(self) -> str:
        return "gated"

    async def subscribe(self, stream: str) -> None:
        self.subscribing.set()
        await self.gate.wait()
        self.subscribed.append(stream)

    async def unsubscribe(self, stream: str) -> None:
        pass

    async def broadcast(self, msg) -> None:
        self.handler.handle_pubsub(msg)

    async def broadcast_command(self, cmd) -> None:
        self.handler.handle_remote_command(cmd)


async def test_a_second_local_subscriber_waits_for_the_pub_sub_subscription():
    """Until the node's pub/sub subscription is live, no subscriber of that stream is confirmed
    (a history read before it could miss a message that would then never arrive)."""
    pubsub = GatedPubSub()
    broker = MemoryBroker(HistoryPolicy(limit=5, ttl=60), sessions_ttl=60, clock=FakeClock())
    node = Node(LocalController(noauth=True, public_streams=True), broker, pubsub, config=NodeConfig(sessions_ttl=60))
    await node.start()
    try:
        a, conn_a = await connect_session(node, "a")
        b, conn_b = await connect_session(node, "b")
        first = asyncio.create_task(send(node, a, {"command": "subscribe", "identifier": IDENT}))
        await pubsub.subscribing.wait()
        second = asyncio.create_task(send(node, b, {"command": "subscribe", "identifier": IDENT}))
        await asyncio.sleep(0)  # give the second subscribe every chance to run ahead
        await asyncio.sleep(0)
        assert len(node.hub.streams["chat"]) == 2
        assert [m.get("type") for m in conn_b.messages] == ["welcome"], "confirmed before pub/sub was live"
        pubsub.gate.set()
        await asyncio.gather(first, second)
        assert pubsub.subscribed == ["chat"], "one pub/sub subscription per stream per node"
        assert conn_b.messages[-1]["type"] == "confirm_subscription"
    finally:
        await node.shutdown()


class TestBoundedMemory:
    async def test_churn_returns_internal_counts_to_zero(self, setup):
        node, broker, clock = setup
        for round_ in range(5):
            sessions = []
            for i in range(20):
                s, _ = await connect_session(node, f"s{round_}-{i}")
                ident = json.dumps({"channel": "$pubsub", "stream_name": f"room-{i}"})
                await send(node, s, {"command": "subscribe", "identifier": ident})
                sessions.append(s)
                await node.handle_broadcast([StreamMessage(f"room-{i}", "x")])
            await drain(node)
            for s in sessions:
                await node.disconnect(s)
        assert node.hub.counts() == {"streams": 0, "sessions": 0}
        assert broker.counts()["refs"] == 0
        clock.now += 60 * 11  # past the history TTL, the sessions TTL and 10 TTLs of idleness
        broker.expire(clock.now)
        counts = broker.counts()
        assert counts == {"streams": 0, "messages": 0, "sessions": 0, "sessions_bytes": 0, "refs": 0,
                          "sessions_evicted": 0, "sessions_refused": 0}
        again = await broker.register(StreamMessage("room-1", "x"))
        assert again.offset > 1, "offsets never go back within an epoch"


class StatefulController(LocalController):
    """Like an RPC app: sets cstate on connect and istate on subscribe, streams 2 per channel."""

    async def connect(self, env):
        result = await super().connect(env)
        result.cstate = {"city": "Napoli"}
        return result

    async def command(self, command, identifier, identifiers, data, env):
        from pycable.rpc.base import SUCCESS, CommandResult

        if command == "subscribe":
            name = json.loads(identifier)["id"]
            streams = [f"{name}_a", f"{name}_b"] if name == "chat" else [f"{name}_a"]
            return CommandResult(SUCCESS, streams=streams, istate={"locale": "it"},
                                 transmissions=[json.dumps({"type": "confirm_subscription", "identifier": identifier})])
        return CommandResult(SUCCESS)


async def test_restore_keeps_connection_and_channel_state_and_offsets_continue():
    """Spec §9.4 "Restore": 2 channels, 3 streams; cstate and istate survive; offsets continue."""
    broker = MemoryBroker(sessions_ttl=60)
    node = Node(StatefulController(noauth=True), broker, config=NodeConfig(sessions_ttl=60))
    await node.start()
    chat, news = json.dumps({"channel": "X", "id": "chat"}), json.dumps({"channel": "X", "id": "news"})
    s, conn = await connect_session(node, "old")
    await send(node, s, {"command": "subscribe", "identifier": chat})
    await send(node, s, {"command": "subscribe", "identifier": news})
    await publish(node, "chat_a", "1")
    await node.disconnect(s)
    s2, conn2 = await connect_session(node, "new", prev_sid="old")
    assert sorted(conn2.messages[0]["restored_ids"]) == sorted([chat, news])
    assert s2.cstate == {"city": "Napoli"}
    assert s2.istate == {chat: {"locale": "it"}, news: {"locale": "it"}}
    assert {i: sorted(sub.streams) for i, sub in s2.subscriptions.items()} == {
        chat: ["chat_a", "chat_b"], news: ["news_a"]}
    await send(node, s2, {"command": "history", "identifier": chat, "history": {
        "streams": {"chat_a": {"epoch": broker.epoch, "offset": 1}}}})
    await publish(node, "chat_a", "2")
    assert offsets(conn2) == [2]
    await node.shutdown()


async def test_malformed_and_huge_sids_connect_normally(setup):
    node, _, _ = setup
    for bad in ["x" * 10_000, "ü\u0000☃", "../../etc", '{"ids":1}']:
        _, conn = await connect_session(node, "fresh", prev_sid=bad)
        assert conn.messages == [{"type": "welcome", "sid": "fresh"}]


class TestFanOutWriters:
    async def test_a_muted_session_gets_nothing_more_and_others_go_on(self, setup):
        node, _, _ = setup
        (a, conn_a), (b, conn_b) = await subscribed(node, "a", "b")
        node.hub.mute(a)  # what the transport does when it starts closing
        await publish(node, "chat", "1")
        assert offsets(conn_a) == [] and offsets(conn_b) == [1]

    async def test_a_writer_that_raises_is_dropped_without_stopping_the_fan_out(self, setup):
        """A socket gone before the transport heard of it: uvloop's write raises RuntimeError."""
        node, _, _ = setup
        (gone, conn_gone), (ok, conn_ok) = await subscribed(node, "gone", "ok")
        calls = []

        def closed_socket(frame: bytes) -> None:
            calls.append(frame)
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

        node.hub.streams["chat"][(gone, IDENT)].send = closed_socket
        await publish(node, "chat", "1")
        await publish(node, "chat", "2")
        assert len(calls) == 1, "not tried again"
        assert offsets(conn_ok) == [1, 2]
