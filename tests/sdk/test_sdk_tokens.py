"""Signed streams, Turbo stream names and JWTs made by the SDK are what the server's own
verifiers accept (end to end against a real server: test_sdk_e2e.py)."""

from __future__ import annotations

import time

import jwt
import pytest

from pycable.identity.jwt import EXPIRED, verify_jwt
from pycable.identity.signed import sign_stream, verify_stream
from pycable.sdk import Settings, jwt_token, signed_stream, turbo_signed_stream_name, verify_signed_stream

# PyJWT warns about HMAC keys under 32 bytes (and warnings are errors here).
K = "k" * 32
JW = "jw" * 16


def test_signed_stream_round_trip():
    signed = signed_stream("chat/1", secret="k")
    assert verify_stream(signed, "k") == "chat/1"
    assert verify_signed_stream(signed, secret="k") == "chat/1"
    assert verify_signed_stream(signed, secret="other") is None
    assert verify_signed_stream(sign_stream("x", "k"), secret="k") == "x"


def test_secrets_from_settings():
    settings = Settings(secret="app", streams_secret="st", turbo_streams_secret="tu", jwt_secret=JW)
    assert verify_stream(signed_stream("a", settings=settings), "st") == "a"
    assert verify_stream(turbo_signed_stream_name("a", settings=settings), "tu") == "a"
    assert verify_jwt(jwt_token({"u": 1}, settings=settings), JW, time.time()).identifiers == '{"u":1}'
    with pytest.raises(ValueError, match="no streams secret"):
        signed_stream("a", settings=Settings())


def test_turbo_names():
    class Model:
        def to_param(self) -> str:
            return "gid://app/Model/7"

    signed = turbo_signed_stream_name("room", 1, [Model(), "x"], secret="k")
    assert verify_stream(signed, "k") == "room:1:gid://app/Model/7:x"


def test_jwt_token():
    token = jwt_token({"user": "ann", "org": 2}, ttl=60, secret=K, now=1000)
    result = verify_jwt(token, K, 1059)
    assert result.identifiers == '{"org":2,"user":"ann"}', "the identifiers string Connect would produce"
    assert verify_jwt(token, K, 1060).error == EXPIRED
    claims = jwt.decode(token, K, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"ext": '{"org":2,"user":"ann"}', "iat": 1000, "exp": 1060}
    forever = jwt_token({"user": "ann"}, ttl=None, secret=K)
    assert verify_jwt(forever, K, 10**12).identifiers == '{"user":"ann"}'
