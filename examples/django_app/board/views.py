from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_http_methods

from board.models import Message, Room


@login_required
@require_http_methods(["GET", "POST"])
def messages(request: HttpRequest, name: str) -> HttpResponse:
    """GET: the room's last 50 messages. POST (form field ``text``): a new message, which the
    post_save signal broadcasts to the room's subscribers."""
    room = get_object_or_404(Room, name=name)
    if request.method == "POST":
        text = request.POST.get("text", "")
        if not text.strip() or len(text) > Message.MAX_TEXT:
            return JsonResponse({"error": f"a message is 1 to {Message.MAX_TEXT} characters"}, status=400)
        message = Message.objects.create(room=room, user=request.user, text=text)
        return JsonResponse(message.as_json(), status=201)
    last = list(room.messages.select_related("user").order_by("-id")[:50])
    return JsonResponse({"room": room.name, "messages": [m.as_json() for m in reversed(last)]})
