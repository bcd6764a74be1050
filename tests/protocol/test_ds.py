"""Durable Streams, the pure rules (pycable.protocol.ds): no event loop, no clock."""

from __future__ import annotations

import base64

import orjson
import pytest

from pycable.protocol import ds as p


class TestOffsets:
    def test_round_trip_and_sentinels(self):
        token = p.encode_offset("63c16a96", 42)
        assert token == "0000000000000042_63c16a96"
        assert p.parse_offset(token) == p.Offset(42, "63c16a96")
        assert p.parse_offset("-1") == p.START
        assert p.parse_offset("now") == p.NOW

    def test_tokens_sort_in_stream_order(self):
        tokens = [p.encode_offset("ab-_9Z", n) for n in (1, 9, 10, 99, 100, 12345)]
        assert sorted(tokens) == tokens

    def test_anycable_form_is_accepted(self):
        assert p.parse_offset("42::abc123") == p.Offset(42, "abc123")

    @pytest.mark.parametrize("bad", [
        "", "0,1", "0 1", "../x", "1/2", "0000000000000042_ep\x00", "42", "0000000000000042_",
        "000000000000042_ep", "0000000000000042_e p", "x::y", "-2", "NOW", "0000000000000042_" + "e" * 65,
        "1e3::ep", "0000000000000042_ep\n",
    ])
    def test_malformed_offsets_are_rejected(self, bad):
        with pytest.raises(p.OffsetError):
            p.parse_offset(bad)


class TestHeaders:
    @pytest.mark.parametrize("raw,expected", [("0", 0), ("3600", 3600)])
    def test_ttl(self, raw, expected):
        assert p.parse_ttl(raw) == expected

    @pytest.mark.parametrize("bad", ["", "-1", "+3600", "03600", "3600.0", "3.6e3", " 1", "abc", "1" * 19])
    def test_bad_ttl(self, bad):
        with pytest.raises(ValueError):
            p.parse_ttl(bad)

    def test_expires_at(self):
        assert p.parse_expires_at("2030-01-01T00:00:00Z") == 1893456000.0
        assert p.parse_expires_at("2030-01-01T02:00:00+02:00") == 1893456000.0
        for bad in ("tomorrow", "2030-01-01T00:00:00", "2030-13-01T00:00:00Z", ""):
            with pytest.raises(ValueError):
                p.parse_expires_at(bad)

    def test_stream_closed_counts_only_when_true(self):
        assert p.is_closed_header("true") and p.is_closed_header("TRUE")
        assert not any(p.is_closed_header(v) for v in (None, "", "false", "yes", "1"))

    def test_content_types(self):
        assert p.media_type("Application/JSON; charset=utf-8") == "application/json"
        assert p.is_json("application/json;charset=utf-8") and not p.is_json("application/ndjson")
        assert p.is_text("text/plain") and p.is_text("application/json")
        assert not p.is_text("application/octet-stream") and not p.is_text("image/png")
        assert p.valid_content_type("text/plain") and not p.valid_content_type("nonsense")
        assert not p.valid_content_type("") and not p.valid_content_type(None)

    def test_producer_headers(self):
        assert p.parse_producer(None, None, None) is None
        assert p.parse_producer("w", "1", "2") == p.ProducerHeaders("w", 1, 2)
        for args in [("w", "1", None), ("", "0", "0"), ("w", "-1", "0"), ("w", "1.5", "0"), ("w", "0", "1e3"),
                     ("w", str(p.MAX_SAFE_INTEGER + 1), "0"), ("w", "0", "")]:
            with pytest.raises(ValueError):
                p.parse_producer(*args)


class TestProducers:
    def test_sequence(self):
        hdr = p.ProducerHeaders
        v = p.check_producer(None, hdr("w", 0, 0), 1.0)
        assert v.status == "accepted" and v.state == p.ProducerState(0, 0, 1.0)
        state = v.state
        assert p.check_producer(state, hdr("w", 0, 1), 2.0).status == "accepted"
        dup = p.check_producer(p.ProducerState(0, 5, 0), hdr("w", 0, 3), 2.0)
        assert (dup.status, dup.seq) == ("duplicate", 5)  # the highest accepted, not the request's
        gap = p.check_producer(p.ProducerState(0, 5, 0), hdr("w", 0, 7), 2.0)
        assert (gap.status, gap.expected, gap.seq) == ("gap", 6, 7)
        stale = p.check_producer(p.ProducerState(3, 0, 0), hdr("w", 2, 9), 2.0)
        assert (stale.status, stale.epoch) == ("stale_epoch", 3)
        assert p.check_producer(p.ProducerState(3, 4, 0), hdr("w", 4, 1), 2.0).status == "bad_epoch_seq"
        bump = p.check_producer(p.ProducerState(3, 4, 0), hdr("w", 4, 0), 2.0)
        assert bump.status == "accepted" and bump.state == p.ProducerState(4, 0, 2.0)
        assert p.check_producer(None, hdr("w", 0, 1), 1.0).status == "gap"

    def test_meta_round_trip_and_expiry(self):
        meta = p.StreamMeta("text/plain", 10.0, 10.0, ttl=5, closed=True, closed_by=("w", 1, 2), stream_seq="09",
                            producers={"w": p.ProducerState(1, 2, 10.0)})
        again = p.StreamMeta.loads(meta.dumps())
        assert again == meta
        assert not meta.expired(14.9) and meta.expired(15.0)
        fixed = p.StreamMeta("x/y", 0, 0, expires_at="2030-01-01T00:00:00Z", deadline=100.0)
        assert not fixed.expired(99.0) and fixed.expired(100.0)
        assert fixed.same_config("X/Y; charset=utf-8", None, "2030-01-01T00:00:00Z", False)
        assert not fixed.same_config("x/y", 5, None, False)
        meta.forget_producers(10.0 + p.PRODUCER_TTL + 1)
        assert meta.producers == {}


class TestJsonMode:
    def test_flattens_one_level(self):
        assert p.split_json_append(b'{"a": 1}') == ['{"a":1}']
        assert p.split_json_append(b'[{"a":1},{"b":2}]') == ['{"a":1}', '{"b":2}']
        assert p.split_json_append(b"[[1,2],[3,4]]") == ["[1,2]", "[3,4]"]
        assert p.split_json_append(b"[[[1,2,3]]]") == ["[[1,2,3]]"]
        assert p.split_json_append(b'"x"') == ['"x"']

    def test_rejects_invalid_and_empty(self):
        for bad in (b"{", b"[1,", b"\xff", b""):
            with pytest.raises(ValueError):
                p.split_json_append(bad)
        with pytest.raises(ValueError):
            p.split_json_append(b"[]")
        assert p.split_json_append(b"[]", allow_empty=True) == []

    def test_body_and_application_data(self):
        assert p.json_body(['{"a":1}', "2"]) == b'[{"a":1},2]'
        assert p.json_body([]) == b"[]"
        assert p.as_json_text('{"a":1}') == '{"a":1}'
        assert orjson.loads(p.as_json_text("plain text")) == "plain text"

    def test_binary_payloads_are_byte_exact(self):
        raw = bytes(range(256))
        stored = p.to_stored(raw, "application/octet-stream")
        assert base64.b64decode(stored) == raw and p.from_stored(stored, "application/octet-stream") == raw
        assert p.to_stored("héllo".encode(), "text/plain") == "héllo"
        with pytest.raises(ValueError):
            p.to_stored(b"\xff", "text/plain")


class TestSseAndCaching:
    def test_lines_cannot_inject_events(self):
        out = p.sse_event("data", "a\r\nevent: control\rdata: x\nb")
        assert out == b"event: data\ndata:a\ndata:event: control\ndata:data: x\ndata:b\n\n"

    def test_control_events(self):
        open_ = orjson.loads(p.control_event("T", "7", True, False).split(b"data:")[1])
        assert open_ == {"streamNextOffset": "T", "streamCursor": "7", "upToDate": True}
        closed = orjson.loads(p.control_event("T", "7", True, True).split(b"data:")[1])
        assert closed == {"streamNextOffset": "T", "streamClosed": True, "upToDate": True}

    def test_cursor_moves_forward(self):
        now = p.CURSOR_EPOCH + 20 * 1000 + 5
        assert p.response_cursor(None, now, 1) == "1000"
        assert p.response_cursor("999", now, 1) == "1000"
        assert p.response_cursor("1000", now, 1) == "1001"
        assert p.response_cursor("1000", now, 3600) == "1180"
        assert p.response_cursor("5000", now, 30) == "5002"
        assert p.response_cursor("garbage", now, 30) == "1000"

    def test_etag_varies_with_range_and_closure(self):
        a = p.etag("s", "-1", "T1", False)
        assert a.startswith('"') and a.endswith('"')
        assert len({a, p.etag("s", "-1", "T2", False), p.etag("s", "-1", "T1", True), p.etag("t", "-1", "T1", False)}) == 4


def test_fork_sub_offset():
    assert p.parse_sub_offset("0") == 0 and p.parse_sub_offset("17") == 17
    for bad in ("", "-1", "01", "1.0", "x"):
        with pytest.raises(ValueError):
            p.parse_sub_offset(bad)
