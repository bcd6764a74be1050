"""Outgoing message shapes (spec §1.3, §2.2, §2.5) and pre-framing (RFC 6455 §5.2)."""

import orjson
import pytest
from websockets.frames import Frame, Opcode

from pycable.protocol import messages
from pycable.protocol.framing import close_frame, text_frame


def test_welcome_shapes():
    assert messages.welcome("abc") == b'{"type":"welcome","sid":"abc"}'
    assert orjson.loads(messages.welcome("n", ["i1", "i2"])) == {
        "type": "welcome", "sid": "n", "restored": True, "restored_ids": ["i1", "i2"]}
    assert "restored_ids" not in orjson.loads(messages.welcome("n", []))


def test_disconnect_always_has_reason_and_reconnect():
    assert messages.disconnect("remote", False) == b'{"type":"disconnect","reason":"remote","reconnect":false}'


def test_confirm_and_reject_echo_identifier():
    ident = '{"channel":"$pubsub","stream_name":"x y"}'
    assert orjson.loads(messages.confirm_subscription(ident)) == {"type": "confirm_subscription", "identifier": ident}
    assert orjson.loads(messages.reject_history(ident))["type"] == "reject_history"


def test_ping():
    assert messages.ping(1700000000) == b'{"type":"ping","message":1700000000}'


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"text":"hi"}', {"text": "hi"}),
        ("plain text", "plain text"),
        ('"a json string"', "a json string"),
        ("null", "null"),
        ("42", 42),
        (' [1, 2] ', [1, 2]),
    ],
)
def test_payload_rule(data, expected):
    """JSON data is embedded decoded; non-JSON or null data is sent as the raw string (§1.3)."""
    out = messages.stream_message("id", messages.encode_data(data))
    assert orjson.loads(out) == {"identifier": "id", "message": expected}


def test_stream_message_with_position_and_type():
    out = messages.stream_message("id", b'{"a":1}', "chat", "e1", 7)
    assert out == b'{"identifier":"id","message":{"a":1},"stream_id":"chat","epoch":"e1","offset":7}'
    typed = orjson.loads(messages.stream_message("id", b"1", type_="presence"))
    assert typed == {"type": "presence", "identifier": "id", "message": 1}


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_text_frame_matches_websockets_serialization(size):
    payload = b"x" * size
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


def test_close_frame():
    assert close_frame(1000, "bye") == Frame(Opcode.CLOSE, b"\x03\xe8bye").serialize(mask=False)
