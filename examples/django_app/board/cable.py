"""The cable side: connections authenticated by Django's session, one channel per room."""

from typing import Any

from board.models import Message, Room
from pycable.contrib.django import DjangoApplication, DjangoConnection
from pycable.sdk import Channel


class RoomChannel(Channel):
    """``{"channel": "RoomChannel", "room": "general"}``: the room's messages, live."""

    async def subscribed(self) -> None:
        # The async ORM, in an async callback.
        name = self.params.get("room")
        room = await Room.objects.filter(name=name).afirst() if isinstance(name, str) else None
        if room is None:
            self.reject()
            return
        self.stream_from(room.stream)
        user = await self.connection.aget_user()  # the identified user, by the async ORM
        self.transmit({"joined": room.name, "as": user.get_username()})

    def post(self, data: dict[str, Any]) -> None:
        """``perform("post", {"text": …})``. A plain ``def``: it runs in Django's thread and
        uses the ORM as a view would; the post_save signal broadcasts the new message."""
        text = data.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > Message.MAX_TEXT:
            self.transmit({"error": f"a message is 1 to {Message.MAX_TEXT} characters"})
            return
        room = Room.objects.get(name=self.params["room"])
        Message.objects.create(room=room, user_id=self.connection.identifiers["user_id"], text=text)


cable = DjangoApplication(connection=DjangoConnection, channels=[RoomChannel])
