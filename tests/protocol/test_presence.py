"""Presence commands and messages (pure, no event loop)."""

from __future__ import annotations

import orjson
import pytest

from pycable.exceptions import PresenceError
from pycable.protocol.presence import (
    MAX_ID_LENGTH,
    Member,
    PresenceEvent,
    error_message,
    event_data,
    info_message,
    join_data,
    leave_data,
    parse_member,
    parse_rpc_presence,
)


class TestParseMember:
    def test_id_and_info(self):
        assert parse_member({"id": "42", "info": {"name": "Sasha"}}) == Member("42", '{"name":"Sasha"}')

    def test_integer_id_becomes_text_and_info_is_optional(self):
        assert parse_member({"id": 42}) == Member("42", "")

    @pytest.mark.parametrize(
        ("presence", "reason"),
        [
            (None, "missing"),
            ("42", "object"),
            ([], "object"),
            ({}, "string or an integer"),
            ({"id": None}, "string or an integer"),
            ({"id": True}, "string or an integer"),
            ({"id": 1.5}, "string or an integer"),
            ({"id": ""}, "empty"),
            ({"id": "x" * (MAX_ID_LENGTH + 1)}, "longer"),
        ],
    )
    def test_bad_presence_is_refused(self, presence, reason):
        with pytest.raises(PresenceError, match=reason):
            parse_member(presence)

    def test_info_size_is_capped(self):
        parse_member({"id": "1", "info": "x" * 98}, max_info_size=100)
        with pytest.raises(PresenceError, match="larger than 100"):
            parse_member({"id": "1", "info": "x" * 99}, max_info_size=100)


class TestRpcPresence:
    def test_join_with_json_info(self):
        assert parse_rpc_presence("join", "7", '{"a":1}') == ("join", Member("7", '{"a":1}'))

    def test_info_that_is_not_json_is_kept_as_a_string(self):
        assert parse_rpc_presence("join", "7", "Bart") == ("join", Member("7", '"Bart"'))

    def test_leave_needs_nothing_else(self):
        assert parse_rpc_presence("leave", "", "") == ("leave", None)

    def test_unknown_type_and_bad_id_are_refused(self):
        with pytest.raises(PresenceError, match="unknown"):
            parse_rpc_presence("wave", "1", "")
        with pytest.raises(PresenceError):
            parse_rpc_presence("join", "", "")


class TestMessages:
    def test_join_and_leave_data(self):
        assert orjson.loads(join_data(Member("42", '{"name":"Sasha"}'))) == {
            "type": "join",
            "id": "42",
            "info": {"name": "Sasha"},
        }
        assert join_data(Member("42")) == '{"type":"join","id":"42"}'
        assert leave_data(Member("42", '{"x":1}')) == '{"type":"leave","id":"42"}'
        assert event_data(PresenceEvent("leave", "s", Member("1"))) == leave_data(Member("1"))
        assert event_data(PresenceEvent("join", "s", Member("1"))) == join_data(Member("1"))

    def test_info_with_records(self):
        out = info_message("chat_1", 2, [Member("42", '{"name":"Sasha"}'), Member('a"b')])
        assert orjson.loads(out) == {
            "type": "presence",
            "identifier": "chat_1",
            "message": {
                "type": "info",
                "total": 2,
                "records": [{"id": "42", "info": {"name": "Sasha"}}, {"id": 'a"b'}],
            },
        }

    def test_empty_info_has_no_records_key(self):
        assert info_message("chat_1", 0, []) == (
            b'{"type":"presence","identifier":"chat_1","message":{"type":"info","total":0}}'
        )

    def test_errors(self):
        assert orjson.loads(error_message("i", "no presence stream")) == {
            "type": "presence",
            "identifier": "i",
            "message": {"type": "error", "total": 0, "reason": "no presence stream"},
        }
        assert orjson.loads(error_message("i", "presence ID mismatch", "join"))["message"] == {
            "type": "join_failed",
            "reason": "presence ID mismatch",
        }
