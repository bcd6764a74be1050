"""Client command decoding (spec §1.2, preface decision 1). No event loop."""

import pytest

from pycable.exceptions import ProtocolError
from pycable.protocol.codec import Command, decode_command


class TestDecodeCommand:
    def test_subscribe(self):
        cmd = decode_command(b'{"command":"subscribe","identifier":"{\\"channel\\":\\"A\\"}"}')
        assert cmd == Command("subscribe", '{"channel":"A"}')

    def test_identifier_is_kept_byte_for_byte(self):
        raw = '{"command":"subscribe","identifier":"{ \\"channel\\" :  \\"A\\",\\"x\\":1 }"}'
        assert decode_command(raw).identifier == '{ "channel" :  "A","x":1 }'

    def test_message_keeps_data_and_history(self):
        cmd = decode_command('{"command":"history","identifier":"i","history":{"since":1},"data":"x"}')
        assert cmd.history == {"since": 1} and cmd.data == "x"

    def test_pong_without_identifier(self):
        assert decode_command('{"command":"pong"}') == Command("pong")

    @pytest.mark.parametrize(
        "frame",
        [
            b"not json",
            b"",
            b"[1,2]",
            b'"subscribe"',
            b'{"identifier":"x"}',
            b'{"command":42}',
            b'{"command":"subscribe","identifier":{"channel":"A"}}',
            b'{"command":"explode"}',
            b'{"command":"subscribe"',
        ],
    )
    def test_malformed_frames_raise(self, frame):
        with pytest.raises(ProtocolError):
            decode_command(frame)
