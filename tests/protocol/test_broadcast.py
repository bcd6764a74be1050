"""Publication parsing (spec §4.1, §5; preface decision 3). No event loop."""

import orjson
import pytest

from pycable.exceptions import BroadcastError, BroadcastFormatError
from pycable.protocol.broadcast import (
    RemoteCommand,
    StreamMessage,
    encode_pubsub,
    parse_broadcast,
    parse_pubsub,
)


def test_single_publication_with_meta():
    body = b'{"stream":"chat","data":"{\\"a\\":1}","meta":{"exclude_socket":"s1","transient":true,"x":1}}'
    assert parse_broadcast(body) == [StreamMessage("chat", '{"a":1}', "s1", True)]


def test_batch_in_order():
    got = parse_broadcast(b'[{"stream":"a","data":"1"},{"stream":"b","data":"2","meta":{"transient":true}}]')
    assert [(m.stream, m.data, m.transient) for m in got] == [("a", "1", False), ("b", "2", True)]


def test_remote_disconnect_command():
    got = parse_broadcast(b'{"command":"disconnect","payload":{"identifier":"{\\"u\\":1}","reconnect":false}}')
    assert got == [RemoteCommand("disconnect", '{"u":1}', False)]


def test_unparsable_json_is_a_broadcast_error():
    with pytest.raises(BroadcastError) as info:
        parse_broadcast(b'{"stream":')
    assert not isinstance(info.value, BroadcastFormatError)


@pytest.mark.parametrize(
    "body",
    [
        b"42",
        b"[]",
        b'{"stream":"","data":"x"}',
        b'{"stream":"a"}',
        b'{"stream":"a","data":{"obj":1}}',
        b'{"stream":1,"data":"x"}',
        b'{"stream":"a","data":"x","meta":[]}',
        b'{"stream":"a","data":"x","meta":{"transient":"yes"}}',
        b'{"stream":"a","data":"x","meta":{"exclude_socket":5}}',
        b'[{"stream":"a","data":"1"},{"stream":"b"}]',
        b'{"command":"explode"}',
        b'{"command":"disconnect","payload":{"identifier":5}}',
        b'{"hello":"world"}',
    ],
)
def test_wrong_shapes_are_format_errors(body):
    with pytest.raises(BroadcastFormatError):
        parse_broadcast(body)


def test_pubsub_accepts_both_key_spellings_and_emits_lower_case():
    new = parse_pubsub(b'{"stream":"a","data":"1","offset":4,"epoch":"e"}')[0]
    old = parse_pubsub(b'{"stream":"a","data":"1","Offset":4,"Epoch":"e"}')[0]
    assert new == old and new.offset == 4 and new.epoch == "e"
    assert orjson.loads(encode_pubsub(new)) == {"stream": "a", "data": "1", "offset": 4, "epoch": "e"}


def test_pubsub_round_trip_keeps_meta_and_commands():
    msg = StreamMessage("a", "x", exclude_socket="s", transient=True, broadcast_type="presence")
    assert parse_pubsub(encode_pubsub(msg)) == [msg]
    cmd = RemoteCommand("disconnect", "ids", True)
    assert parse_pubsub(encode_pubsub(cmd)) == [cmd]
