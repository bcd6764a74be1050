"""``POST /_broadcast``: an async Django view that calls ``group_send`` and answers 201."""

from __future__ import annotations

import json

from channels.layers import get_channel_layer
from consumers import GROUP
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt  # type: ignore[misc]
async def broadcast(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponse(status=405)
    try:
        data = json.loads(request.body)["data"]
    except (ValueError, KeyError, TypeError):
        return HttpResponse(status=422)
    await get_channel_layer().group_send(GROUP, {"type": "bench.message", "text": data})
    return HttpResponse(status=201)


urlpatterns = [path("_broadcast", broadcast)]
