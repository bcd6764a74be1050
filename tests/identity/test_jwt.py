"""JWT identification (spec §7.2). Pure: the clock is passed in."""

import base64
import hashlib
import hmac
import json

from pycable.identity.jwt import EXPIRED, INVALID, encode_jwt, verify_jwt


def test_round_trip():
    token = encode_jwt('{"user":1}', "s3cr3t", exp=2000)
    assert verify_jwt(token, "s3cr3t", now=1000).identifiers == '{"user":1}'


def test_expired():
    token = encode_jwt("{}", "k", exp=1000)
    assert verify_jwt(token, "k", now=1000).error == EXPIRED


def test_wrong_secret_and_garbage():
    token = encode_jwt("{}", "k", exp=2000)
    assert verify_jwt(token, "other", now=0).error == INVALID
    for bad in ["", "a.b", "a.b.c", token + "x", "x" + token]:
        assert verify_jwt(bad, "k", now=0).error == INVALID


def test_non_hmac_algorithms_are_rejected():
    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    head, body = b64({"alg": "none"}), b64({"ext": "{}"})
    assert verify_jwt(f"{head}.{body}.", "k", now=0).error == INVALID
    head = b64({"alg": "RS256"})
    sig = base64.urlsafe_b64encode(hmac.new(b"k", f"{head}.{body}".encode(), hashlib.sha256).digest()).rstrip(b"=")
    assert verify_jwt(f"{head}.{body}.{sig.decode()}", "k", now=0).error == INVALID


def test_ext_must_be_a_string():
    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    head, body = b64({"alg": "HS256"}), b64({"ext": {"user": 1}})
    sig = base64.urlsafe_b64encode(hmac.new(b"k", f"{head}.{body}".encode(), hashlib.sha256).digest()).rstrip(b"=")
    assert verify_jwt(f"{head}.{body}.{sig.decode()}", "k", now=0).error == INVALID


def test_hs512():
    token = encode_jwt("{}", "k", alg="HS512")
    assert verify_jwt(token, "k", now=0).identifiers == "{}"
