"""An application on pycable.sdk with the behaviour of the other RPC test applications
(tests/rpc/grpc_app.py, tests/rpc_app/server.mjs), plus what only an SDK application has
(broadcasts from inside a call, "to others", remote disconnects, an exception in user
code, sync callbacks).

Connections are identified by the ``user`` URL parameter (rejected without it) and keep
``user`` in their state. The channel ``chat`` (param ``room``, rejected without it)
streams from ``room:<room>``, keeps ``{room, count}`` as its state and has the actions:

count, echo, leave (stop all streams), follow / unfollow (``data.stream``), kick (close the
connection), forget (delete a state key), setc / showc (connection state): as the other apps;
speak: ``abroadcast`` ``{"user", "text"}`` to the room (``others``: not to the speaker);
speak_sync: the same from a sync action (a worker thread) with the sync ``broadcast``;
kick_user: remote ``adisconnect`` of every connection of ``data.user``;
boom / boom_sync: raise;
whisper_on: ``stream_from(data.stream, whisper=True)``;
present / absent: join (as the user, info ``{"name"}``) / leave the room's presence.

Every callback reports itself on :data:`EVENTS` (the runner prints them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pycable.sdk import Application, Channel, Connection, abroadcast, adisconnect, broadcast

#: Set by the runner: called with one event dict per callback.
EVENTS: list[Callable[[dict[str, Any]], None]] = []


def report(**event: Any) -> None:
    for sink in EVENTS:
        sink(event)


class ChatConnection(Connection):
    async def connect(self) -> None:
        user = self.request.query.get("user")
        if not user:
            self.reject()
            return
        if user == "explode":
            raise RuntimeError("connect exploded")
        self.identified_by(user=user)
        self.state["user"] = user
        report(callback="connect", sid=self.sid, user=user, cookies=self.request.cookies,
               remote_addr=self.request.remote_addr)  # fmt: skip

    def disconnect(self) -> None:  # a sync override
        report(callback="disconnect", sid=self.sid, user=self.identifiers.get("user"), state=self.state)

    async def restored(self) -> None:
        report(callback="restored", sid=self.sid, restored_sid=self.restored_sid, user=self.user, state=self.state)


class ChatChannel(Channel):
    channel_name = "chat"

    async def subscribed(self) -> None:
        room = self.params.get("room")
        if not room:
            self.reject()
            return
        self.stream_from(f"room:{room}")
        self.state.update(room=room, count="0")
        self.transmit({"hello": room, "user": self.connection.user})

    async def unsubscribed(self) -> None:
        report(callback="unsubscribed", sid=self.connection.sid, identifier=self.identifier, state=self.state)

    async def restored(self) -> None:
        report(callback="channel_restored", sid=self.connection.sid, identifier=self.identifier, state=self.state)

    async def count(self, data: dict[str, Any]) -> None:
        count = int(self.state.get("count", "0")) + 1
        self.state["count"] = str(count)
        self.transmit({"count": count})

    def echo(self, data: dict[str, Any]) -> None:  # sync: runs in a worker thread
        self.transmit({"echo": data["text"]})

    async def leave(self) -> None:  # no data parameter
        self.stop_all_streams()

    async def follow(self, data: dict[str, Any]) -> None:
        self.stream_from(data["stream"])

    async def unfollow(self, data: dict[str, Any]) -> None:
        self.stop_stream_from(data["stream"])

    async def kick(self, data: dict[str, Any]) -> None:
        self.transmit({"bye": True})
        self.connection.close()

    async def forget(self, data: dict[str, Any]) -> None:
        self.state.pop(data["key"], None)

    async def setc(self, data: dict[str, Any]) -> None:
        self.connection.state[data["key"]] = data["value"]

    async def showc(self, data: dict[str, Any]) -> None:
        self.transmit({"cstate": self.connection.state, "istate": self.state})

    async def speak(self, data: dict[str, Any]) -> None:
        message = {"user": self.connection.user, "text": data["text"]}
        await abroadcast(f"room:{self.params['room']}", message, to_others=bool(data.get("others")))

    def speak_sync(self, data: dict[str, Any]) -> None:
        message = {"user": self.connection.user, "text": data["text"]}
        broadcast(f"room:{self.params['room']}", message, to_others=bool(data.get("others")))

    async def kick_user(self, data: dict[str, Any]) -> None:
        await adisconnect(user=data["user"], reconnect=False)

    async def boom(self, data: dict[str, Any]) -> None:
        self.transmit({"never": "sent"})
        self.stream_from("never-streamed")
        raise ValueError("boom in an action")

    def boom_sync(self, data: dict[str, Any]) -> None:
        raise ValueError("boom in a sync action")

    async def whisper_on(self, data: dict[str, Any]) -> None:
        self.stream_from(data["stream"], whisper=True)

    async def present(self, data: dict[str, Any]) -> None:
        self.stream_from(f"room:{self.params['room']}", presence=True)
        self.join_presence(self.connection.user, {"name": self.connection.user.title()})

    async def absent(self, data: dict[str, Any]) -> None:
        self.leave_presence()

    def _hidden(self, data: dict[str, Any]) -> None:  # private: not an action
        raise AssertionError("never called")


def build(**kw: Any) -> Application:
    return Application(ChatConnection, [ChatChannel], **kw)
