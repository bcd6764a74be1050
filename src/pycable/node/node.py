"""The node: connects sessions, runs their commands, registers and fans out broadcasts.

Data flow (spec §5): broadcaster → :meth:`Node.handle_broadcast` → broker (offset, epoch)
→ pub/sub → every node's :meth:`Node.handle_pubsub` → hub → sessions.

Exactly-once and in order per subscription (preface decision 6): every (session,
identifier, stream) has a :class:`~pycable.protocol.delivery.StreamCursor`. A subscription
is added to the hub *before* history is read, holding live messages; the replay and then
the held messages are sent through the cursor, which drops what was already sent. After a
restore the cursors hold until the client's ``history`` command has been answered (or
``restore_hold`` seconds pass).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pycable.broker.base import Broker, NullBroker
from pycable.exceptions import BrokerError, HistoryError, ProtocolError, RPCError
from pycable.node.disconnector import Disconnector, session_env
from pycable.node.gaps import GapFiller
from pycable.node.hub import Hub
from pycable.node.port import Connection, Handshake
from pycable.node.presence import PresenceTracker
from pycable.node.session import CacheEntry, Session, Subscription
from pycable.presence.base import NullPresence, Presence
from pycable.protocol import constants as c
from pycable.protocol import messages
from pycable.protocol.broadcast import Publication, RemoteCommand, StreamMessage
from pycable.protocol.codec import Command
from pycable.protocol.delivery import MAX_HELD, StreamCursor
from pycable.protocol.history import HistoryRequest, parse_history
from pycable.protocol.session import redact_sid, redact_url
from pycable.pubsub.base import LocalSubscriber, Subscriber
from pycable.rpc.base import FAILURE, SUCCESS, CommandResult, Controller, Env

__all__ = ["Node", "NodeConfig", "new_sid"]

log = logging.getLogger("pycable.node")


def new_sid() -> str:
    """A fresh session id (URL-safe, 16 chars)."""
    return secrets.token_urlsafe(12)


@dataclass(slots=True)
class NodeConfig:
    sessions_ttl: float = 300.0
    #: Seconds a restored session holds live messages waiting for the client's history command.
    restore_hold: float = 5.0
    #: disconnect mode: auto / always / never (spec §6.3).
    disconnect_mode: str = "auto"
    #: Disconnect calls started per second (spec §6.5).
    disconnect_rate: int = 100
    #: Seconds the Disconnect queue gets to drain on shutdown.
    shutdown_timeout: float = 30.0
    stats: dict[str, int] = field(default_factory=dict)
    #: Request headers passed to the application's RPC env (``--headers``, lower-cased).
    env_headers: tuple[str, ...] = ("cookie",)
    #: Cookies kept in the env's ``cookie`` header (``--proxy-cookies``); empty keeps all.
    proxy_cookies: tuple[str, ...] = ()
    #: The JWT header (``x-<jwt_param>``), passed to the env as well when JWT is on (§1.1).
    jwt_header: str = ""


class Node:
    """Owns the hub and talks to the broker, pub/sub and controller through their roles."""

    def __init__(
        self,
        controller: Controller,
        broker: Broker | None = None,
        pubsub: Subscriber | None = None,
        config: NodeConfig | None = None,
        clock: Callable[[], float] = time.time,
        presence: Presence | None = None,
    ) -> None:
        self.controller = controller
        self.broker: Broker = broker or NullBroker()
        self.pubsub: Subscriber = pubsub or LocalSubscriber()
        self.config = config or NodeConfig()
        self.clock = clock
        self.hub = Hub()
        # Pub/sub from several nodes (or a shared broker's concurrent registrations) may
        # arrive out of offset order or with gaps: restore the order (pycable.node.gaps).
        self.gaps: GapFiller | None = None
        if self.broker.supports_history and (self.broker.is_distributed or self.pubsub.is_multi_node):
            self.gaps = GapFiller(self.broker, self.hub)
        self.disconnector = Disconnector(controller, self.config.disconnect_rate)
        self.presence = PresenceTracker(presence or NullPresence(), self.handle_broadcast)
        self.stats = {"malformed_frames": 0, "broadcasts": 0, "restores": 0, "history_rejected": 0,
                      "held_overflow": 0, "restores_refused": 0}
        self._touch_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Streams whose pub/sub subscription is in flight: later local subscribers wait for it.
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        self.shutting_down = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start()
        await self.pubsub.start(self)
        await self.presence.start()
        await self.controller.start()
        await self.disconnector.start()
        if self.config.sessions_ttl > 0 and self.broker.supports_history:
            self._touch_task = asyncio.get_running_loop().create_task(self._touch_loop())

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop: queued Disconnect calls get up to *timeout* seconds (default
        ``shutdown_timeout``; the app passes what is left of its own budget)."""
        self.shutting_down = True
        if self._touch_task is not None:
            self._touch_task.cancel()
        # Sessions the transport closed whose disconnect() has not run yet still get
        # their Disconnect call (spec §6.5); then the queue drains.
        for session in list(self.hub.sessions.values()):
            if session.connected:
                session.connected = False
                self.hub.remove_session(session)
                self._queue_disconnect(session)
        for task in list(self._tasks):
            task.cancel()
        if self.gaps is not None:
            self.gaps.close()
        await self.disconnector.shutdown(self.config.shutdown_timeout if timeout is None else timeout)
        await self.controller.shutdown()
        await self.presence.shutdown()
        await self.pubsub.shutdown()
        await self.broker.shutdown()

    def describe(self) -> list[str]:
        return [
            self.broker.describe(),
            self.pubsub.describe(),
            *self.controller.describe().splitlines(),
            self.presence.describe(),
        ]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _touch_loop(self) -> None:
        interval = max(self.config.sessions_ttl / 2, 0.5)
        while True:
            await asyncio.sleep(interval)
            for session in list(self.hub.sessions.values()):
                if session.resumable and not session.closed:
                    try:
                        await self.broker.touch_session(session.sid)
                    except BrokerError as exc:
                        log.warning("session touch failed: %s", exc)
                        break

    # -- the port for transports (pycable.node.port.NodePort) --------------------------------

    def open(self, conn: Connection, handshake: Handshake) -> Session:
        """Accept a client: build its session (a fresh sid, always chosen here: a client's
        ``X-Request-ID`` never becomes one, and its RPC env), then run Restore-or-Connect in
        the background. On success
        ``conn.ready()`` is called; a rejected client's connection is closed (the
        controller's transmissions sent first), and a crash closes it with 1011."""
        headers = handshake.headers
        sid = new_sid()
        session = Session(sid, conn, self._env(handshake, sid), ext=handshake.ext, resumable=self.resumable(handshake.ext))
        prev_sid = headers.get("x-anycable-restore-sid") or handshake.query.get("sid", "")
        session.auth_task = self._spawn(self._open(session, prev_sid))
        return session

    async def _open(self, session: Session, prev_sid: str) -> None:
        try:
            ok = await self.authenticate(session, prev_sid)
        except Exception:
            log.exception("authentication crashed sid=%s", redact_sid(session.sid))
            session.conn.close(c.CLOSE_INTERNAL_ERROR, "Auth Error")
            return
        finally:
            session.auth_task = None  # nothing to cancel any more; do not keep the task
        if ok:
            session.conn.ready()

    def _env(self, handshake: Handshake, sid: str) -> Env:
        cfg = self.config
        picked: dict[str, str] = {}
        for name in cfg.env_headers:
            value = handshake.headers.get(name)
            if value is not None:
                if name == "cookie" and cfg.proxy_cookies:
                    value = _filter_cookies(value, cfg.proxy_cookies)
                picked[name] = value
        picked["REMOTE_ADDR"] = handshake.remote
        if cfg.jwt_header:  # spec §1.1: plus the JWT header, if JWT is enabled
            token = handshake.headers.get(cfg.jwt_header)
            if token is not None:
                picked[cfg.jwt_header] = token
        query = {k: v for k, v in handshake.query.items() if k != "sid"}  # a bearer secret: not passed on
        return Env(redact_url(handshake.url), picked, sid, handshake.remote, {}, {}, query, handshake.subprotocols)

    async def run(self, session: Session, cmd: Command) -> str | None:
        """Run one command of *session* (the transport runs them one at a time, in order);
        returns why it was refused as malformed, else ``None``. A bug is logged, not raised:
        it must not end the connection's command loop."""
        try:
            await self.handle_command(session, cmd)
        except ProtocolError as exc:
            return str(exc)
        except Exception:
            log.exception("command %s failed sid=%s", cmd.command, redact_sid(session.sid))
        return None

    def closing(self, session: Session) -> None:
        """The transport is closing the connection: nothing more is sent or fanned out to it."""
        session.closed = True
        self.hub.mute(session)

    def closed(self, session: Session) -> None:
        """The connection is gone: a Connect still running is cancelled (§6.7), the session's
        streams are released and the application told (in the background)."""
        self.closing(session)
        auth = session.auth_task
        if auth is not None and not auth.done() and not session.connected:
            auth.cancel()
        self._spawn(self.disconnect(session))

    def rewire(self, session: Session) -> None:
        """The connection's ``frame_writer`` changed: the fan-out uses the new one."""
        if not session.closed:
            self.hub.rewire(session)

    def count_malformed(self) -> None:
        self.stats["malformed_frames"] += 1

    # -- connect / restore -----------------------------------------------------------------

    def resumable(self, ext: bool) -> bool:
        return ext and self.config.sessions_ttl > 0 and self.broker.supports_history

    async def authenticate(self, session: Session, prev_sid: str = "") -> bool:
        """Restore *prev_sid* or Connect; True when the session is connected.

        A failed Connect sends the controller's transmissions and closes with 1000; an RPC
        error closes with 1011 and sends nothing (spec §1.1).
        """
        if prev_sid and session.resumable:
            try:
                if await self._restore(session, prev_sid):
                    return True
            except BrokerError as exc:
                log.warning("session restore failed, falling back to connect: %s", exc)
        if session.closed:  # the client left during the restore lookup: nobody to connect
            return False
        try:
            result = await self.controller.connect(session.env)
        except RPCError as exc:
            log.error("connect failed sid=%s: %s", redact_sid(session.sid), exc)
            session.close(c.CLOSE_INTERNAL_ERROR, "Auth Error")
            return False
        if session.closed:
            return False
        if result.status != SUCCESS:
            for t in result.transmissions:
                session.send(t.encode())
            session.close(c.CLOSE_NORMAL, result.error or "Auth Failed")
            return False
        session.identifiers = result.identifiers
        _merge(session.env.cstate, result.cstate)
        session.disconnect_interest = result.disconnect_interest
        session.connected = True
        self.hub.add_session(session)
        for t in result.transmissions:
            session.send(t.encode())
        await self._commit(session)
        return True

    async def _restore(self, session: Session, prev_sid: str) -> bool:
        raw = await self.broker.restore_session(prev_sid)
        if raw is None:
            return False
        entry = CacheEntry.decode(raw)
        if entry is None:
            log.warning("malformed session cache entry for sid=%s", redact_sid(prev_sid))
            return False
        # The session is bound to its owner: a request that identifies itself (a JWT) must be
        # the session's identifiers, else it is an ordinary connect, not a restore.
        claimed = getattr(self.controller, "claimed_identity", None)
        if claimed is not None:
            carries, ids = claimed(session.env)
            if carries and ids != entry.ids:
                self.stats["restores_refused"] += 1
                log.info("restore of sid=%s refused: the request identifies someone else", redact_sid(prev_sid))
                return False
        if session.closed:
            return False
        session.identifiers = entry.ids
        _merge(session.env.cstate, entry.cstate)
        session.istate = entry.istate
        session.disconnect_interest = entry.disconnectable
        session.connected = True
        self.hub.add_session(session)
        for identifier, streams in entry.subs.items():
            sub = session.subscriptions[identifier] = Subscription(identifier)
            for stream in streams:
                await self._attach(session, sub, stream, hold=True)
        session.send(messages.welcome(session.sid, list(entry.subs)))
        self.stats["restores"] += 1
        await self._commit(session)
        if entry.subs:
            loop = asyncio.get_running_loop()
            session.hold_timer = loop.call_later(self.config.restore_hold, self._release_all, session)
        await self._notify_restore(session, prev_sid)
        return True

    async def _notify_restore(self, session: Session, prev_sid: str) -> None:
        """Tell the application about the restore (opt-in ``--rpc_restore``, docs/rpc.md).

        Awaited before the session's commands run, so the app hears of the restore before
        any Command of the new session; a failure is logged only.
        """
        notify = getattr(self.controller, "restore", None)
        if notify is None:
            return
        try:
            await notify(session.identifiers, list(session.subscriptions), session_env(session), prev_sid)
        except RPCError as exc:
            log.error("restore RPC failed sid=%s: %s", redact_sid(session.sid), exc)

    def _release_all(self, session: Session) -> None:
        """The client sent no history command after a restore in time: stop holding."""
        session.hold_timer = None
        for sub in session.subscriptions.values():
            self._release(session, sub)

    def _release(self, session: Session, sub: Subscription) -> None:
        for stream, cursor in sub.streams.items():
            if cursor.overflowed:
                cursor.overflowed = False
                self.stats["held_overflow"] += 1
                log.warning(
                    "more than %d messages held for sid=%s stream=%s: the oldest were dropped",
                    MAX_HELD, redact_sid(session.sid), stream,
                )
            self.hub.deliver(session, sub.identifier, cursor, cursor.release())

    # -- commands --------------------------------------------------------------------------

    async def handle_command(self, session: Session, cmd: Command) -> None:
        """Run one decoded client command (the transport serialises them per session)."""
        handler = getattr(self, "handle_" + cmd.command)
        await handler(session, cmd)

    async def handle_pong(self, session: Session, cmd: Command) -> None:
        pass  # the transport already counted it as a keepalive

    async def handle_ping(self, session: Session, cmd: Command) -> None:
        session.send(messages.pong())

    async def handle_subscribe(self, session: Session, cmd: Command) -> None:
        identifier = cmd.identifier
        if not identifier:
            raise ProtocolError("subscribe without an identifier")
        if identifier in session.subscriptions or identifier in session.pending:
            # Idempotent: the first subscribe's answer stands (a second confirm would make the
            # JS client unsubscribe, js-client.md §3).
            log.debug("already subscribed sid=%s identifier=%s", redact_sid(session.sid), identifier)
            return
        try:
            history = parse_history(cmd.history)
            history_error = ""
        except HistoryError as exc:
            history, history_error = None, str(exc)
        session.pending.add(identifier)
        try:
            result = await self.controller.command(
                c.SUBSCRIBE, identifier, session.identifiers, "", self._env_for(session, identifier)
            )
        except RPCError as exc:
            log.error("subscribe failed sid=%s identifier=%s: %s", redact_sid(session.sid), identifier, exc)
            return
        finally:
            session.pending.discard(identifier)
        if session.closed:
            return
        wants_history = history is not None and not history.empty
        if result.status == SUCCESS:
            sub = session.subscriptions[identifier] = Subscription(identifier)
            await self._apply(session, sub, result, hold=wants_history)
            if history_error:
                session.send(messages.reject_history(identifier))
            elif wants_history:
                assert history is not None
                await self._history(session, sub, history)
            await self._commit(session)
            if cmd.presence is not None:
                await self.presence.join(session, identifier, cmd.presence)
        else:  # FAILURE: no subscription, but the reply's connection state and transmissions count
            if result.cstate:
                _merge(session.env.cstate, result.cstate)
                await self._commit(session)
            for t in result.transmissions:
                session.send(t.encode())
        if result.disconnect:
            session.close(c.CLOSE_NORMAL, "Command Failed")

    async def handle_unsubscribe(self, session: Session, cmd: Command) -> None:
        sub = session.subscriptions.get(cmd.identifier)
        if sub is None:
            log.debug("unsubscribe from unknown identifier sid=%s", redact_sid(session.sid))
            return
        try:
            result = await self.controller.command(
                c.UNSUBSCRIBE, cmd.identifier, session.identifiers, "", self._env_for(session, cmd.identifier)
            )
        except RPCError as exc:
            log.error("unsubscribe failed sid=%s: %s", redact_sid(session.sid), exc)
            result = CommandResult(FAILURE)
        # Always stop streams and drop the subscription, its presence and state (spec §1.2).
        await self.presence.unsubscribed(session, cmd.identifier)
        await self._detach_all(session, sub)
        session.subscriptions.pop(cmd.identifier, None)
        session.istate.pop(cmd.identifier, None)
        _merge(session.env.cstate, result.cstate)  # §6.3 step 5 applies to unsubscribe too
        for t in result.transmissions:
            session.send(t.encode())
        await self._commit(session)
        if result.disconnect:
            session.close(c.CLOSE_NORMAL, "Command Failed")

    async def handle_message(self, session: Session, cmd: Command) -> None:
        sub = session.subscriptions.get(cmd.identifier)
        if sub is None:
            log.debug("message for unknown identifier sid=%s", redact_sid(session.sid))
            return
        if not isinstance(cmd.data, str):
            raise ProtocolError("'data' of a message must be a JSON-encoded string")
        try:
            result = await self.controller.command(
                c.MESSAGE, cmd.identifier, session.identifiers, cmd.data, self._env_for(session, cmd.identifier)
            )
        except RPCError as exc:
            log.error("perform failed sid=%s: %s", redact_sid(session.sid), exc)
            return
        if session.closed:
            return
        dirty = await self._apply(session, sub, result, hold=False)
        if dirty:
            await self._commit(session)
        if result.disconnect:
            session.close(c.CLOSE_NORMAL, "Command Failed")

    async def handle_history(self, session: Session, cmd: Command) -> None:
        sub = session.subscriptions.get(cmd.identifier)
        if sub is None:
            log.debug("history for unknown identifier sid=%s", redact_sid(session.sid))
            return
        self._cancel_hold_timer_if_done(session, cmd.identifier)
        try:
            request = parse_history(cmd.history)
        except HistoryError as exc:
            log.debug("bad history request sid=%s: %s", redact_sid(session.sid), exc)
            self.stats["history_rejected"] += 1
            session.send(messages.reject_history(cmd.identifier))
            self._release(session, sub)
            return
        if request is None or request.empty:
            # Nothing to replay (a restored JS client with no positions and `since` off).
            self._release(session, sub)
            return
        for cursor in sub.streams.values():
            cursor.hold()
        await self._history(session, sub, request)

    def _cancel_hold_timer_if_done(self, session: Session, identifier: str) -> None:
        timer = session.hold_timer
        if timer is None:
            return
        others_holding = any(
            cur.holding for ident, s in session.subscriptions.items() if ident != identifier for cur in s.streams.values()
        )
        if not others_holding:
            timer.cancel()
            session.hold_timer = None

    async def handle_whisper(self, session: Session, cmd: Command) -> None:
        if cmd.identifier not in session.subscriptions:
            return
        stream = session.istate.get(cmd.identifier, {}).get(c.WHISPER_STREAM_STATE)
        if not stream:
            log.debug("whisper not allowed sid=%s identifier=%s", redact_sid(session.sid), cmd.identifier)
            return
        msg = StreamMessage(stream, orjson.dumps(cmd.data).decode(), exclude_socket=session.sid, transient=True)
        try:
            await self.handle_broadcast([msg])
        except BrokerError as exc:
            log.warning("whisper dropped sid=%s: %s", redact_sid(session.sid), exc)

    async def handle_join(self, session: Session, cmd: Command) -> None:
        await self.presence.join(session, cmd.identifier, cmd.presence)

    async def handle_leave(self, session: Session, cmd: Command) -> None:
        await self.presence.leave(session, cmd.identifier)

    async def handle_presence(self, session: Session, cmd: Command) -> None:
        await self.presence.info(session, cmd.identifier, cmd.data)

    # -- history ---------------------------------------------------------------------------

    async def _history(self, session: Session, sub: Subscription, request: HistoryRequest) -> None:
        """Replay history for every stream of *sub* (all or nothing, spec §2.4), then release."""
        identifier = sub.identifier
        backlogs = []
        try:
            for stream, cursor in list(sub.streams.items()):
                since: tuple[str, int] | None = None
                if request.streams is not None and stream in request.streams:
                    pos = request.streams[stream]
                    since = (pos.epoch, pos.offset)
                    backlog = await self.broker.history_from(stream, pos.epoch, pos.offset)
                elif request.since > 0:
                    backlog = await self.broker.history_since(stream, request.since)
                else:
                    continue
                if cursor.missed(backlog):
                    raise HistoryError(f"{stream}: messages before offset {cursor.start} were not delivered in order")
                backlogs.append((cursor, backlog, since))
        except (HistoryError, BrokerError) as exc:
            log.debug("history rejected sid=%s identifier=%s: %s", redact_sid(session.sid), identifier, exc)
            self.stats["history_rejected"] += 1
            session.send(messages.reject_history(identifier))
            self._release(session, sub)
            return
        if session.closed:
            return
        for cursor, backlog, since in backlogs:
            self.hub.deliver(session, identifier, cursor, cursor.replay(backlog, since))
        session.send(messages.confirm_history(identifier))
        self._release(session, sub)

    # -- command results -------------------------------------------------------------------

    def _env_for(self, session: Session, identifier: str) -> Env:
        env = session.env
        return Env(
            env.url,
            env.headers,
            env.sid,
            env.remote_addr,
            env.cstate,
            session.istate.get(identifier, {}),
            env.query,
            env.subprotocols,
        )

    async def _attach(self, session: Session, sub: Subscription, stream: str, hold: bool) -> None:
        if stream in sub.streams:
            return
        cursor: StreamCursor[StreamMessage] = StreamCursor()
        if hold:
            cursor.hold()
        sub.streams[stream] = cursor
        self.hub.subscribe(session, sub.identifier, stream, cursor)
        await self._interest(stream, +1)

    async def _detach(self, session: Session, sub: Subscription, stream: str) -> None:
        if sub.streams.pop(stream, None) is not None:
            self.hub.unsubscribe(session, sub.identifier, stream)
            await self._interest(stream, -1)

    async def _detach_all(self, session: Session, sub: Subscription) -> None:
        for stream in list(sub.streams):
            await self._detach(session, sub, stream)

    async def _interest(self, stream: str, delta: int) -> None:
        """Reference-count a stream with the broker and pub/sub (first and last subscriber)."""
        try:
            if delta > 0:
                await self.broker.subscribe(stream)
                pending = self._subscribing.get(stream)
                if pending is not None:
                    # Not subscribed to pub/sub yet: a history read now could miss a message
                    # published before the subscription is live, and it would never arrive.
                    await asyncio.shield(pending)
                elif len(self.hub.streams.get(stream, ())) == 1:
                    done = self._subscribing[stream] = asyncio.get_running_loop().create_future()
                    try:
                        await self.pubsub.subscribe(stream)
                    finally:
                        del self._subscribing[stream]
                        done.set_result(None)
            else:
                if self.gaps is not None and stream not in self.hub.streams:
                    self.gaps.forget(stream)
                await self.broker.unsubscribe(stream)
                if stream not in self.hub.streams:
                    await self.pubsub.unsubscribe(stream)
        except BrokerError as exc:
            log.warning("stream interest update failed for %r: %s", stream, exc)

    async def _apply(self, session: Session, sub: Subscription, result: CommandResult, hold: bool) -> bool:
        """Apply a command result (spec §6.3 order); True when state changed."""
        dirty = False
        if result.stop_streams:
            dirty = bool(sub.streams)
            await self._detach_all(session, sub)
        else:
            for stream in result.stopped_streams:
                dirty = True
                await self._detach(session, sub, stream)
        for stream in result.streams:
            dirty = True
            await self._attach(session, sub, stream, hold)
        if result.istate:
            dirty = True
            _merge(session.istate.setdefault(sub.identifier, {}), result.istate)
        if result.cstate:
            dirty = True
            _merge(session.env.cstate, result.cstate)
        if result.disconnect_interest:
            session.disconnect_interest = True
        for t in result.transmissions:
            session.send(t.encode())
        if result.presence is not None:
            await self.presence.apply_rpc(session, sub.identifier, result.presence)
        return dirty

    async def _commit(self, session: Session) -> None:
        if not session.resumable or not session.connected:
            return
        try:
            await self.broker.commit_session(session.sid, session.to_cache_entry())
        except BrokerError as exc:
            log.warning("session commit failed sid=%s: %s", redact_sid(session.sid), exc)

    # -- disconnect ------------------------------------------------------------------------

    async def disconnect(self, session: Session) -> None:
        """The connection is gone: release its streams, keep its cache entry alive, tell the app."""
        if session.hold_timer is not None:
            session.hold_timer.cancel()
            session.hold_timer = None
        session.closed = True
        if not session.connected:
            return
        session.connected = False
        streams = self.hub.remove_session(session)
        self._queue_disconnect(session)  # before any await: a shutdown may cancel this task
        for stream in streams:
            await self._interest(stream, -1)
        await self.presence.disconnected(session)
        if session.resumable:
            try:
                await self.broker.touch_session(session.sid)
            except BrokerError as exc:
                log.warning("session touch failed sid=%s: %s", redact_sid(session.sid), exc)

    def _queue_disconnect(self, session: Session) -> None:
        """One Disconnect call per closed session, through the rate-limited queue (§6.5)."""
        mode = self.config.disconnect_mode
        if mode == "always" or (mode == "auto" and session.disconnect_interest):
            self.disconnector.enqueue(session.identifiers, list(session.subscriptions), session_env(session))

    # -- broadcasts ------------------------------------------------------------------------

    async def handle_broadcast(self, publications: Sequence[Publication]) -> None:
        """Register each publication with the broker, then publish it through pub/sub.

        Raises:
            BrokerError: the broker failed; publications before the failing one were sent.
        """
        for pub in publications:
            if isinstance(pub, RemoteCommand):
                await self.pubsub.broadcast_command(pub)
                continue
            msg = await self.broker.register(pub)
            self.stats["broadcasts"] += 1
            await self.pubsub.broadcast(msg)  # never raises (the Subscriber contract)

    def handle_fanout(self, publications: Sequence[Publication]) -> None:
        """Fan-out broadcasters: deliver locally, bypassing the broker (spec §4.4)."""
        for pub in publications:
            if isinstance(pub, RemoteCommand):
                self.handle_remote_command(pub)
            else:
                self.hub.broadcast(pub)

    def handle_pubsub(self, msg: StreamMessage) -> None:
        if self.gaps is not None:
            self.gaps.push(msg)
        else:
            self.hub.broadcast(msg)

    def handle_remote_command(self, cmd: RemoteCommand) -> None:
        """Remote disconnect: every session with these identifiers (preface decision 4)."""
        if cmd.command != "disconnect":
            return
        for session in self.hub.sessions_with_identifiers(cmd.identifier):
            session.send(messages.disconnect(c.REMOTE, cmd.reconnect))
            session.close(c.CLOSE_NORMAL, "Closed remotely")

    def disconnect_all(self, reason: str, reconnect: bool, code: int) -> None:
        """Tell every session to go (graceful shutdown)."""
        payload = messages.disconnect(reason, reconnect)
        for session in list(self.hub.sessions.values()):
            session.send(payload)
            session.close(code, reason)


def _filter_cookies(cookie: str, keep: tuple[str, ...]) -> str:
    parts = [p.strip() for p in cookie.split(";")]
    return "; ".join(p for p in parts if p.split("=", 1)[0] in keep)


def _merge(target: dict[str, str], changes: dict[str, str]) -> None:
    """Merge state; an empty string deletes the key (spec §6.3)."""
    for key, value in changes.items():
        if value == "":
            target.pop(key, None)
        else:
            target[key] = value
