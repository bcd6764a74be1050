"""The NATS broker beyond the shared contract: name mapping, several nodes on one JetStream,
the local snapshot, epoch changes, and NATS going away and coming back.

Real NATS: the machine's server (``NATS_URL``) for the cluster-free tests, embedded
``nats-server`` processes on free ports for the ones that stop or restart it.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable

import nats
import pytest

from contract.backends._nats import delete_prefixed, free_port, nats_url
from pycable._nats import jetstream_name, stream_subject
from pycable.broker.base import HistoryPolicy
from pycable.broker.nats import EPOCH_KEY, NatsBroker
from pycable.enats import EmbeddedNats
from pycable.exceptions import BrokerError, HistoryError
from pycable.protocol.broadcast import StreamMessage

pytestmark = pytest.mark.nats

#: Stream names NATS cannot take as they are (spec §3.5, §10), and a few that look like
#: NATS internals.
AWKWARD = [
    "chat.1",
    "a b",
    "*",
    ">",
    "a.*.>",
    "..",
    ".lead",
    "trail.",
    "tab\there",
    "new\nline",
    "ünïcødé ✓",
    "slash/and\\back",
    "$JS.API.STREAM.DELETE.x",
    "_INBOX.abc",
    "_ac_chat",
    "x" * 5000,
    "Chat",
    "chat",
]


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for *cond* (state owned by another task or process), polling at 20 ms."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def msg(stream: str, data: str = "{}") -> StreamMessage:
    return StreamMessage(stream, data)


@pytest.fixture
async def cluster() -> AsyncIterator[Callable[..., NatsBroker]]:
    """Brokers ("nodes") sharing one JetStream under a per-test prefix."""
    url = await nats_url()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    made: list[NatsBroker] = []

    async def node(**kw: object) -> NatsBroker:
        kw.setdefault("policy", HistoryPolicy(100, 300))
        b = NatsBroker([url], prefix=prefix, ready_timeout=10, **kw)  # type: ignore[arg-type]
        await b.start()
        assert b.ready
        made.append(b)
        return b

    yield node  # type: ignore[misc]
    for b in made:
        await b.shutdown()
    await delete_prefixed(url, prefix)


def test_names_map_to_valid_distinct_subjects_and_stream_names():
    subjects = {stream_subject("", s) for s in AWKWARD}
    streams = {jetstream_name("", s) for s in AWKWARD}
    assert len(subjects) == len(streams) == len(AWKWARD)
    for name in streams:
        assert re.fullmatch(r"_ac_[A-Za-z0-9_-]{1,32}_[a-z2-7]{24}", name), name
    for subject in subjects:
        assert not re.search(r"\s", subject) and ".." not in subject
        assert all(tok and tok not in ("*", ">") for tok in subject.split("."))
        assert not subject.startswith(("$", "_INBOX", "_ac_")), subject
    # AnyCable compatibility where possible: a plain name is its own subject.
    assert stream_subject("", "chat.1") == "chat.1"
    assert stream_subject("", "chat_42") == "chat_42"
    assert stream_subject("p.", "chat_42") == "p.chat_42"
    assert stream_subject("", "a b").startswith("_pcs.")


async def test_awkward_stream_names_round_trip(cluster):
    a = await cluster()
    for i, stream in enumerate(AWKWARD):
        out = [await a.register(msg(stream, f'{{"i":{i},"n":{n}}}')) for n in (1, 2)]
        assert [m.offset for m in out] == [1, 2], stream
        got = await a.history_from(stream, a.epoch, 0)
        assert [(m.stream, m.data, m.offset) for m in got] == [(stream, m.data, m.offset) for m in out]
        assert [m.offset for m in await a.history_since(stream, 0)] == [1, 2]
    # The internals-looking names did not reach JetStream's API or anyone's inbox.
    assert [m.offset for m in await a.history_from("chat", a.epoch, 0)] == [1, 2]


async def test_nodes_share_the_epoch_history_and_sessions(cluster):
    a, b = await cluster(), await cluster()
    assert a.epoch and a.epoch == b.epoch
    for m in [await a.register(msg("s", f'"{i}"')) for i in range(3)]:
        assert m.epoch == a.epoch
    assert [m.data for m in await b.history_from("s", b.epoch, 0)] == ['"0"', '"1"', '"2"']
    await a.commit_session("sid-1", b'{"ids":"x"}')
    assert await b.restore_session("sid-1") == b'{"ids":"x"}'
    await b.touch_session("sid-1")
    assert await a.restore_session("sid-1") == b'{"ids":"x"}'
    # A sid that is not a valid KV key is stored all the same.
    await a.commit_session("we ird.*>sid", b"w")
    assert await b.restore_session("we ird.*>sid") == b"w"


async def test_concurrent_registrations_on_two_nodes_get_one_sequence(cluster):
    a, b = await cluster(), await cluster()
    out = await asyncio.gather(*(n.register(msg("race", f'"{i}"')) for i in range(40) for n in (a, b)))
    assert sorted(m.offset for m in out) == list(range(1, 81))
    by_offset = {m.offset: m.data for m in out}
    for node in (a, b):
        got = await node.history_from("race", node.epoch, 0)
        assert [m.offset for m in got] == list(range(1, 81))
        assert all(by_offset[m.offset] == m.data for m in got)


async def test_a_node_reads_an_offset_it_has_not_received_yet(cluster):
    """A client saw offset N live (pub/sub can be faster than this node's consumer): asking
    from N on another node must wait for or fetch N, not reject N as "ahead"."""
    a, b = await cluster(), await cluster()
    await b.subscribe("live")
    for i in range(20):
        m = await a.register(msg("live", f'"{i}"'))
        assert await b.history_from("live", b.epoch, m.offset) == []
        got = await b.history_from("live", b.epoch, m.offset - 1)
        assert [(x.offset, x.data) for x in got] == [(m.offset, f'"{i}"')]
    with pytest.raises(HistoryError):  # really ahead: rejected after asking JetStream
        await b.history_from("live", b.epoch, m.offset + 1)


async def test_first_read_after_a_subscription_sees_everything_registered_before(cluster):
    """The first read after a local subscription began checks the last offset with
    JetStream: a message registered elsewhere just before the subscription (too early to
    reach this subscriber live) is in the replay even though this node's consumer has not
    delivered it (here: cannot, it is gone)."""
    a, b = await cluster(), await cluster()
    first = await a.register(msg("s", '"1"'))
    await b.subscribe("s")
    assert [m.offset for m in await b.history_from("s", b.epoch, 0)] == [first.offset]
    await b.unsubscribe("s")  # the snapshot stays (idle), its consumer too
    snap = b._snapshots["s"]
    assert snap.sub is not None
    await b.conn.nc.jetstream().delete_consumer(snap.jsname, snap.sub._consumer)
    second = await a.register(msg("s", '"2"'))
    await b.subscribe("s")
    got = await b.history_from("s", b.epoch, 0)
    assert [(m.offset, m.data) for m in got] == [(first.offset, '"1"'), (second.offset, '"2"')]
    # Same for a second local subscriber (the node's pub/sub subscription is older than the
    # message, but this subscriber's hub subscription is not).
    snap = b._snapshots["s"]
    assert snap.sub is not None
    await b.conn.nc.jetstream().delete_consumer(snap.jsname, snap.sub._consumer)
    third = await a.register(msg("s", '"3"'))
    await b.subscribe("s")
    got = await b.history_from("s", b.epoch, second.offset)
    assert [(m.offset, m.data) for m in got] == [(third.offset, '"3"')]
    # A later read (no new subscription) is served from memory: no round trip.
    stats = b.conn.nc.stats
    before = stats["out_msgs"]
    assert len(await b.history_from("s", b.epoch, 0)) == 3
    assert stats["out_msgs"] == before


async def test_snapshot_reads_do_not_touch_nats(cluster):
    a = await cluster()
    await a.subscribe("hot")
    for i in range(10):
        await a.register(msg("hot", f'"{i}"'))
    await a.history_from("hot", a.epoch, 0)  # warm
    stats = a.conn.nc.stats
    before = (stats["out_msgs"], stats["in_msgs"])
    t0 = time.perf_counter()
    for _ in range(200):
        assert len(await a.history_from("hot", a.epoch, 5)) == 5
        assert len(await a.history_since("hot", 0)) == 10
    elapsed = time.perf_counter() - t0
    assert (stats["out_msgs"], stats["in_msgs"]) == before, "a snapshot read went to NATS"
    assert elapsed < 1.0


async def test_a_lost_consumer_is_bypassed_then_replaced(cluster):
    """The consumer feeding the snapshot vanished (its server died): the next read that
    needs newer messages fetches them directly and starts a new consumer."""
    a, b = await cluster(), await cluster()
    await b.subscribe("lost")
    first = await a.register(msg("lost", '"1"'))
    assert [m.offset for m in await b.history_from("lost", b.epoch, 0)] == [first.offset]
    snap = b._snapshots["lost"]
    assert snap.sub is not None
    js = b.conn.nc.jetstream()
    await js.delete_consumer(snap.jsname, snap.sub._consumer)
    second = await a.register(msg("lost", '"2"'))
    # A client that saw offset 2 live asks from there: the snapshot must get 2 without the
    # consumer, then serve it.
    assert await b.history_from("lost", b.epoch, second.offset) == []
    got = await b.history_from("lost", b.epoch, first.offset)
    assert [m.data for m in got] == ['"2"'] and got[0].offset == second.offset
    # The replacement consumer keeps the snapshot current again.
    third = await a.register(msg("lost", '"3"'))
    await until(lambda: snap.mem.offset >= third.offset)


async def test_the_epoch_change_is_followed_by_every_node(cluster):
    a, b = await cluster(), await cluster()
    await a.register(msg("e"))
    old = a.epoch
    nc = await nats.connect(a.servers[0])
    try:
        kv = await nc.jetstream().key_value(a.epoch_bucket)
        await kv.delete(EPOCH_KEY)
    finally:
        await nc.close()
    await until(lambda: a.epoch != old and b.epoch != old)
    await until(lambda: a.epoch == b.epoch)
    with pytest.raises(HistoryError):
        await a.history_from("e", old, 0)
    # Offsets keep growing: a new epoch never means positions going back under it.
    assert (await a.register(msg("e"))).offset == 2


async def test_transient_and_history_messages(cluster):
    """Per-stream rules become JetStream limits, and a transient message stays out."""
    from pycable.broker.base import StreamRule

    a = await cluster(policy=HistoryPolicy(2, 300, (StreamRule("big.*", limit=5),)))
    for i in range(6):
        await a.register(msg("big.1", f'"{i}"'))
        await a.register(msg("small", f'"{i}"'))
    t = await a.register(StreamMessage("small", "t", transient=True))
    assert t.offset == 0
    assert [m.offset for m in await a.history_from("big.1", a.epoch, 1)] == [2, 3, 4, 5, 6]
    assert [m.offset for m in await a.history_from("small", a.epoch, 4)] == [5, 6]
    js = a.conn.nc.jetstream()
    info = await js.stream_info(jetstream_name(a.prefix, "big.1"))
    assert info.config.max_msgs == 5 and info.state.messages == 5


# -- NATS going away -----------------------------------------------------------------------


@pytest.fixture
async def private_nats() -> AsyncIterator[Callable[..., EmbeddedNats]]:
    """Embedded nats-server processes that a test may stop and restart."""
    made: list[EmbeddedNats] = []

    def make(port: int, store: str) -> EmbeddedNats:
        e = EmbeddedNats(f"nats://127.0.0.1:{port}", jetstream=True, store_dir=store)
        made.append(e)
        return e

    yield make
    for e in made:
        await e.shutdown()


async def test_unreachable_at_startup_then_ready_when_nats_comes(private_nats):
    port = free_port()
    b = NatsBroker([f"nats://127.0.0.1:{port}"], connect_wait=0.3, ready_timeout=5, retry_budget=1)
    t0 = time.monotonic()
    await b.start()  # does not fail, does not hang
    try:
        assert time.monotonic() - t0 < 3 and not b.ready
        with pytest.raises(BrokerError):
            await b.register(msg("s"))
        with pytest.raises(BrokerError):
            await b.history_from("s", "", 0)
        with pytest.raises(BrokerError):
            await b.restore_session("x")
        await private_nats(port, tempfile.mkdtemp()).start()
        await until(lambda: b.ready, timeout=15)
        assert (await b.register(msg("s"))).offset == 1
    finally:
        await b.shutdown()


async def test_nats_restart_keeps_epoch_and_history(private_nats):
    """NATS restarts with its store: the broker reconnects by itself; same epoch, history
    kept, offsets continue; while NATS is down it fails cleanly (BrokerError)."""
    port, store = free_port(), tempfile.mkdtemp()
    server = private_nats(port, store)
    await server.start()
    b = NatsBroker([f"nats://127.0.0.1:{port}"], retry_budget=1, timeout=1)
    await b.start()
    try:
        await b.subscribe("kept")
        for i in range(3):
            await b.register(msg("kept", f'"{i}"'))
        epoch = b.epoch
        await server.shutdown()
        await until(lambda: not b.conn.is_connected)
        with pytest.raises(BrokerError):
            await b.register(msg("kept"))
        again = private_nats(port, store)
        await again.start()
        await until(lambda: b.conn.is_connected, timeout=15)

        async def registered() -> StreamMessage | None:
            try:
                return await b.register(msg("kept", '"3"'))
            except BrokerError:
                return None

        deadline = time.monotonic() + 15
        m = await registered()
        while m is None and time.monotonic() < deadline:
            m = await registered()
        assert m is not None and m.offset == 4 and b.epoch == epoch
        got = await b.history_from("kept", epoch, 0)
        assert [x.data for x in got] == ['"0"', '"1"', '"2"', '"3"']
    finally:
        await b.shutdown()


async def test_nats_restarted_without_its_store_gets_a_new_epoch(private_nats):
    """Positions from before are meaningless then: they must be rejected, not confused."""
    port = free_port()
    server = private_nats(port, tempfile.mkdtemp())
    await server.start()
    b = NatsBroker([f"nats://127.0.0.1:{port}"], retry_budget=2, timeout=1)
    await b.start()
    try:
        await b.subscribe("s")
        for _ in range(3):
            await b.register(msg("s"))
        old = b.epoch
        await server.shutdown()
        await private_nats(port, tempfile.mkdtemp()).start()
        await until(lambda: b.epoch != old, timeout=20)
        with pytest.raises(HistoryError):
            await b.history_from("s", old, 2)
        m = await b.register(msg("s", '"new"'))
        assert m.offset == 1 and m.epoch == b.epoch
        assert [x.data for x in await b.history_from("s", b.epoch, 0)] == ['"new"']
    finally:
        await b.shutdown()
