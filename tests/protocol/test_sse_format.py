"""The SSE event format and request parameters (AnyCable's), sans-I/O."""

from __future__ import annotations

import json

import orjson
import pytest

from pycable.exceptions import ProtocolError
from pycable.protocol import messages
from pycable.protocol.broadcast import StreamMessage
from pycable.protocol.sse import (
    SSE_GET,
    SSE_GET_RAW,
    SSE_POST,
    event,
    parse_last_event_id,
    ping_event,
    subscribe_command,
)

IDENT = '{"channel":"$pubsub","stream_name":"chat"}'


def test_typed_messages_are_named_events_with_the_full_payload():
    assert SSE_GET.message(messages.welcome("sid1", [])) .startswith(b"event: welcome\ndata: {")
    confirm = SSE_GET.message(messages.confirm_subscription(IDENT))
    assert confirm == b"event: confirm_subscription\ndata: " + messages.confirm_subscription(IDENT) + b"\n\n"
    assert ping_event(1700000000) == b'event: ping\ndata: {"type":"ping","message":1700000000}\n\n'


def test_a_disconnect_without_reconnect_tells_eventsource_not_to_come_back():
    assert SSE_GET.message(messages.disconnect("unauthorized", False)).endswith(b"\nretry: 31536000000\n\n")
    assert b"retry:" not in SSE_GET.message(messages.disconnect("server_restart", True))


def test_get_data_is_the_message_part_post_data_the_full_payload():
    msg = StreamMessage("chat", '{"text":"hi"}', offset=3, epoch="ep")
    assert SSE_GET.stream(msg, IDENT) == b'data: {"text":"hi"}\nid: 3/ep/chat\n\n'
    post = SSE_POST.stream(msg, IDENT)
    data = json.loads(post.split(b"\n")[0].removeprefix(b"data: "))
    assert data == {"identifier": IDENT, "message": {"text": "hi"}, "stream_id": "chat", "epoch": "ep", "offset": 3}
    assert post.endswith(b"\nid: 3/ep/chat\n\n")


def test_string_messages_go_out_as_they_are_and_lines_are_split():
    assert SSE_GET.stream(StreamMessage("s", "plain text"), IDENT) == b"data: plain text\n\n"
    assert SSE_GET.stream(StreamMessage("s", '"a\\nb"'), IDENT) == b"data: a\ndata: b\n\n"
    assert SSE_GET.stream(StreamMessage("s", "null"), IDENT) == b"data: null\n\n"


def test_no_id_without_a_position_and_the_stream_may_contain_slashes():
    assert b"id:" not in SSE_GET.stream(StreamMessage("s", "1"), IDENT)
    assert SSE_GET.stream(StreamMessage("a/b", "1", offset=1, epoch="e"), IDENT).endswith(b"id: 1/e/a/b\n\n")
    assert parse_last_event_id("1/e/a/b") == ("a/b", "e", 1)


def test_transmissions_without_a_type_are_data():
    payload = orjson.dumps({"identifier": IDENT, "message": {"x": 1}})
    assert SSE_GET.message(payload) == b'data: {"x":1}\n\n'
    assert SSE_POST.message(payload) == b"data: " + payload + b"\n\n"


def test_raw_drops_typed_messages():
    assert SSE_GET_RAW.message(messages.welcome("sid1", [])) == b""
    assert ping_event(1, raw=True) == b""
    assert SSE_GET_RAW.stream(StreamMessage("s", "1"), IDENT) == b"data: 1\n\n"


def test_event_builder():
    assert event(b"x", "k", "1/e/s", 5) == b"event: k\ndata: x\nid: 1/e/s\nretry: 5\n\n"


def test_last_event_id():
    assert parse_last_event_id("42/ep/chat") == ("chat", "ep", 42)
    assert parse_last_event_id("something-else") is None
    with pytest.raises(Exception, match="bad offset"):
        parse_last_event_id("x/ep/chat")


@pytest.mark.parametrize(
    ("params", "identifier"),
    [
        ({"identifier": IDENT, "channel": "Other"}, IDENT),
        ({"channel": "ChatChannel"}, '{"channel":"ChatChannel"}'),
        ({"stream": "chat"}, IDENT),
        ({"signed_stream": "abc--123"}, '{"channel":"$pubsub","signed_stream_name":"abc--123"}'),
        ({"turbo_signed_stream_name": "t--1"}, '{"channel":"Turbo::StreamsChannel","signed_stream_name":"t--1"}'),
    ],
)
def test_subscribe_command_from_get_parameters(params, identifier):
    cmd = orjson.loads(subscribe_command(params) or b"null")
    assert cmd == {"command": "subscribe", "identifier": identifier}


def test_subscribe_command_with_history():
    cmd = orjson.loads(subscribe_command({"stream": "chat", "history_since": "100"}, "7/ep/chat") or b"null")
    assert cmd["history"] == {"streams": {"chat": {"offset": 7, "epoch": "ep"}}, "since": 100}
    assert subscribe_command({}) is None
    with pytest.raises(ProtocolError):
        subscribe_command({"stream": "chat", "history_since": "soon"})
    with pytest.raises(ProtocolError):
        subscribe_command({"stream": "chat"}, "x/ep/chat")
