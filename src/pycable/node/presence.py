"""Presence for the node's sessions: the ``join``/``leave``/``presence`` commands, joins on
subscribe and from the application's RPC, keepalive and expiry.

The presence stream of a subscription is its channel state ``$p`` (set by the ``$pubsub``
router when ``--streams_presence`` is on, or by the application). Join and leave events go
out as transient publications with ``broadcast_type="presence"`` through the normal
broadcast path (broker, then pub/sub), so every node's subscribers of the stream get them.

Every refused command gets an error reply (:func:`~pycable.protocol.presence.error_message`)
and is logged at debug; nothing a client sends can raise out of here.

Keepalive: every ``ttl/2`` seconds the deadlines of the connected sessions that are present
somewhere are moved on (all protocols: unlike AnyCable, a plain ``actioncable-v1-json``
client does not lapse while connected). A disconnected session is no longer touched, so
its records go ``ttl`` seconds after it left unless it comes back (the JS client joins
again on a restored session). Expiry runs every ``min(ttl/4, 1)`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pycable.exceptions import BrokerError, PresenceError
from pycable.node.session import Session
from pycable.presence.base import Presence
from pycable.protocol import constants as c
from pycable.protocol.broadcast import StreamMessage
from pycable.protocol.presence import (
    Member,
    PresenceEvent,
    error_message,
    event_data,
    info_message,
    parse_member,
    parse_rpc_presence,
)
from pycable.protocol.session import redact_sid

__all__ = ["PresenceTracker"]

log = logging.getLogger("pycable.node")

Publish = Callable[[Sequence[StreamMessage]], Awaitable[None]]


class PresenceTracker:
    """The node's side of presence, over the :class:`~pycable.presence.base.Presence` role.

    Args:
        presence: the backend (it follows ``--broker``).
        publish: broadcasts publications (the node's ``handle_broadcast``).
    """

    def __init__(self, presence: Presence, publish: Publish) -> None:
        self.presence = presence
        self.publish = publish
        #: Connected sessions that joined somewhere (touched by the keepalive).
        self.present: dict[str, Session] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.presence.start()
        if self.presence.enabled:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.presence.shutdown()

    def describe(self) -> str:
        return self.presence.describe()

    # -- commands ----------------------------------------------------------------------------

    def _stream(self, session: Session, identifier: str) -> str:
        if identifier not in session.subscriptions:
            raise PresenceError("unknown subscription")
        stream = session.istate.get(identifier, {}).get(c.PRESENCE_STREAM_STATE)
        if not stream:
            raise PresenceError("presence is not enabled for this channel")
        return stream

    def _refuse(self, session: Session, identifier: str, command: str, exc: Exception) -> None:
        reason = str(exc) if isinstance(exc, PresenceError) else "presence is unavailable, try again later"
        log.debug("presence %s refused sid=%s: %s", command, redact_sid(session.sid), exc)
        session.send(error_message(identifier, reason, command))

    async def join(self, session: Session, identifier: str, raw: Any) -> None:
        """A ``join`` command, or the ``presence`` field of a confirmed ``subscribe``."""
        try:
            stream = self._stream(session, identifier)
            member = parse_member(raw, self.presence.limits.max_info_size)
            await self._join(session, stream, member)
        except (PresenceError, BrokerError) as exc:
            self._refuse(session, identifier, c.JOIN, exc)

    async def _join(self, session: Session, stream: str, member: Member) -> None:
        event = await self.presence.join(stream, session.sid, member)
        if not session.closed:
            self.present[session.sid] = session
        await self._broadcast([event])

    async def leave(self, session: Session, identifier: str) -> None:
        """A ``leave`` command."""
        try:
            stream = self._stream(session, identifier)
            await self._broadcast([await self.presence.leave(stream, session.sid)])
        except (PresenceError, BrokerError) as exc:
            self._refuse(session, identifier, c.LEAVE, exc)

    async def info(self, session: Session, identifier: str, data: Any) -> None:
        """A ``presence`` command: the stream's records (only ``total`` with
        ``{"return_records": false}``)."""
        try:
            stream = self._stream(session, identifier)
            records = await self.presence.info(stream)
        except (PresenceError, BrokerError) as exc:
            self._refuse(session, identifier, c.PRESENCE, exc)
            return
        with_records = not (isinstance(data, dict) and data.get("return_records") is False)
        session.send(info_message(identifier, len(records), records if with_records else ()))

    async def apply_rpc(self, session: Session, identifier: str, change: tuple[str, str, str]) -> None:
        """The application's ``CommandResponse.presence``: ``(type, id, info)``."""
        try:
            stream = self._stream(session, identifier)
            _, member = parse_rpc_presence(*change, max_info_size=self.presence.limits.max_info_size)
            if member is not None:
                await self._join(session, stream, member)
            else:
                await self._broadcast([await self.presence.leave(stream, session.sid)])
        except (PresenceError, BrokerError) as exc:
            log.warning("presence from RPC refused sid=%s identifier=%s: %s", redact_sid(session.sid), identifier, exc)

    async def unsubscribed(self, session: Session, identifier: str) -> None:
        """Leave the subscription's presence stream (before its channel state is dropped)."""
        stream = session.istate.get(identifier, {}).get(c.PRESENCE_STREAM_STATE)
        if not stream or session.sid not in self.present:
            return
        try:
            await self._broadcast([await self.presence.leave(stream, session.sid)])
        except BrokerError as exc:
            log.warning("presence leave on unsubscribe failed sid=%s: %s", redact_sid(session.sid), exc)

    async def disconnected(self, session: Session) -> None:
        """Stop the keepalive; the records go ``ttl`` seconds from now unless it comes back."""
        if self.present.pop(session.sid, None) is None:
            return
        try:
            await self.presence.touch([session.sid])
        except BrokerError as exc:
            log.warning("presence touch failed sid=%s: %s", redact_sid(session.sid), exc)

    # -- events, keepalive, expiry -------------------------------------------------------------

    async def _broadcast(self, events: Sequence[PresenceEvent | None]) -> None:
        messages = [
            StreamMessage(e.stream, event_data(e), transient=True, broadcast_type=c.PRESENCE)
            for e in events
            if e is not None
        ]
        if messages:
            try:
                await self.publish(messages)
            except BrokerError as exc:
                log.warning("presence event not broadcast: %s", exc)

    async def keepalive(self) -> None:
        """Move on the deadlines of the connected sessions that are present somewhere."""
        await self.presence.touch([sid for sid, s in self.present.items() if not s.closed])

    async def sweep(self) -> None:
        """Expire what is past its deadline and broadcast the ``leave`` events."""
        await self._broadcast(await self.presence.expire())

    async def _loop(self) -> None:
        ttl = self.presence.limits.ttl
        loop = asyncio.get_running_loop()
        touched = loop.time()
        while True:
            await asyncio.sleep(min(ttl / 4, 1.0))
            try:
                if loop.time() - touched >= ttl / 2:
                    touched = loop.time()
                    await self.keepalive()
                await self.sweep()
            except BrokerError as exc:
                log.warning("presence keepalive/expiry failed: %s", exc)
