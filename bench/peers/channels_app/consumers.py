"""The consumer: an ``AsyncWebsocketConsumer`` (the Channels docs' choice for performance).

A client sends ``{"subscribe": ...}``; the consumer adds its channel to the group ``bench``
and answers ``{"type":"confirm_subscription"}``. A broadcast is ``group_send("bench",
{"type": "bench.message", "text": ...})``; each consumer's ``bench_message`` writes the text.
"""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

GROUP = "bench"


class BenchConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data and '"subscribe"' in text_data:
            await self.channel_layer.group_add(GROUP, self.channel_name)
            await self.send(text_data='{"type":"confirm_subscription"}')

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def bench_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])
