"""Every new message is broadcast to its room once its transaction commits, wherever it was
created: a view, a channel action, the admin, a management command."""

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from board.models import Message
from pycable.contrib.django import broadcast_on_commit


@receiver(post_save, sender=Message)
def message_created(sender: type[Message], instance: Message, created: bool, **kwargs: Any) -> None:
    if created:
        broadcast_on_commit(instance.room.stream, {"message": instance.as_json()})
