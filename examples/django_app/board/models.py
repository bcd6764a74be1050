from typing import Any

from django.conf import settings
from django.db import models


class Room(models.Model):
    name = models.SlugField(max_length=64, unique=True)

    def __str__(self) -> str:
        return self.name

    @property
    def stream(self) -> str:
        return f"room/{self.name}"


class Message(models.Model):
    MAX_TEXT = 1000

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    text = models.TextField(max_length=MAX_TEXT)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.pk, "user": self.user.get_username(), "text": self.text}
