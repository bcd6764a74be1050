"""History request validation (spec §2.4; issue 3 item 8). No event loop."""

import pytest

from pycable.exceptions import HistoryError
from pycable.protocol.history import HistoryRequest, StreamPosition, parse_history


def test_absent_history_is_none():
    assert parse_history(None) is None


def test_since_and_streams():
    req = parse_history({"since": 1700000000, "streams": {"a": {"epoch": "e", "offset": 3}}})
    assert req == HistoryRequest(1700000000.0, {"a": StreamPosition("e", 3)})
    assert not req.empty


def test_empty_streams_count_as_present():
    assert not parse_history({"streams": {}}).empty
    assert parse_history({}).empty
    assert parse_history({"since": 0}).empty
    assert parse_history({"since": None}).empty


@pytest.mark.parametrize(
    "raw",
    [
        "yesterday",
        [],
        {"since": -5},
        {"since": "100"},
        {"since": True},
        {"streams": []},
        {"streams": {"a": 5}},
        {"streams": {"a": {"epoch": 1, "offset": 1}}},
        {"streams": {"a": {"epoch": "e", "offset": -1}}},
        {"streams": {"a": {"epoch": "e", "offset": "3"}}},
        {"streams": {"a": {"epoch": "e", "offset": 1.5}}},
        {"streams": {"a": {"epoch": "e", "offset": True}}},
        {"streams": {"a": {"epoch": "e"}}},
    ],
)
def test_wrong_types_raise(raw):
    with pytest.raises(HistoryError):
        parse_history(raw)


def test_huge_offsets_are_accepted_for_the_broker_to_judge():
    req = parse_history({"streams": {"a": {"epoch": "e", "offset": 10**30}}})
    assert req.streams["a"].offset == 10**30
