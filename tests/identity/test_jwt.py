"""JWT identification (spec §7.2). Pure: the clock is passed in."""

import base64
import hashlib
import hmac
import json

from pycable.identity.jwt import EXPIRED, INVALID, encode_jwt, verify_jwt

LEEWAY = 5  # pycable.identity.jwt.LEEWAY


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


# -- issue 14 item 8: time claims and strict base64url --------------------------------------


def _signed(claims: dict, secret: str = "k", header: dict | None = None) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def test_nbf_in_the_future_is_rejected_within_the_leeway_accepted():
    now = 10_000
    assert verify_jwt(_signed({"ext": "{}", "nbf": now + 3600}), "k", now=now).error == INVALID
    assert verify_jwt(_signed({"ext": "{}", "nbf": now + LEEWAY + 1}), "k", now=now).error == INVALID
    assert verify_jwt(_signed({"ext": "{}", "nbf": now + LEEWAY - 1}), "k", now=now).identifiers == "{}"
    assert verify_jwt(_signed({"ext": "{}", "nbf": now - 60}), "k", now=now).identifiers == "{}"


def test_iat_in_the_future_is_rejected_within_the_leeway_accepted():
    now = 10_000
    assert verify_jwt(_signed({"ext": "{}", "exp": now + 7200, "iat": now + 3600}), "k", now=now).error == INVALID
    assert verify_jwt(_signed({"ext": "{}", "iat": now + LEEWAY - 1}), "k", now=now).identifiers == "{}"
    assert verify_jwt(_signed({"ext": "{}", "iat": now - 60}), "k", now=now).identifiers == "{}"


def test_time_claims_must_be_finite_numbers():
    for claim in ("exp", "nbf", "iat"):
        for bad in ("2000", None, True, [1], {"at": 1}):
            assert verify_jwt(_signed({"ext": "{}", claim: bad}), "k", now=1000).error == INVALID, (claim, bad)
    # Python's json (PyJWT's parser) reads NaN/Infinity: an exp of NaN must not mean "never".
    head, body, _ = _signed({"ext": "{}"}).split(".")
    for raw in (b'{"ext":"{}","exp":NaN}', b'{"ext":"{}","exp":Infinity}', b'{"ext":"{}","nbf":-Infinity}'):
        body = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        sig = base64.urlsafe_b64encode(hmac.new(b"k", f"{head}.{body}".encode(), hashlib.sha256).digest())
        assert verify_jwt(f"{head}.{body}.{sig.rstrip(b'=').decode()}", "k", now=1000).error == INVALID, raw


def test_junk_in_any_part_is_rejected():
    token = encode_jwt("{}", "k", exp=2000)
    assert verify_jwt(token, "k", now=0).identifiers == "{}"
    head, body, sig = token.split(".")
    for junk in ("!", "*", " ", "=", "+", "/", "\n", "é"):
        for i in (0, 5, None):
            def spoil(part: str, i=i, junk=junk) -> str:
                return part + junk if i is None else part[:i] + junk + part[i:]

            for bad in (f"{spoil(head)}.{body}.{sig}", f"{head}.{spoil(body)}.{sig}", f"{head}.{body}.{spoil(sig)}"):
                assert verify_jwt(bad, "k", now=0).error == INVALID, repr(bad)


def test_padding_and_non_canonical_trailing_bits_are_rejected():
    token = encode_jwt("{}", "k", exp=2000)
    head, body, sig = token.split(".")
    # A 32-byte HS256 signature is 43 base64url characters: the last one carries 2 unused bits.
    assert len(sig) == 43
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    twins = [c for c in alphabet if alphabet.index(c) >> 2 == last >> 2 and c != sig[-1]]
    assert twins
    for twin in twins:
        assert verify_jwt(f"{head}.{body}.{sig[:-1]}{twin}", "k", now=0).error == INVALID
    assert verify_jwt(f"{head}.{body}.{sig}=", "k", now=0).error == INVALID
    assert verify_jwt(f"{head}.{body}.{sig}A", "k", now=0).error == INVALID


def test_more_or_fewer_parts_are_rejected():
    token = encode_jwt("{}", "k")
    assert verify_jwt(token + ".", "k", now=0).error == INVALID
    assert verify_jwt(token.rsplit(".", 1)[0], "k", now=0).error == INVALID


def test_encode_jwt_extra_claims_round_trip():
    token = encode_jwt("{}", "k", exp=2000, nbf=900, iat=900)
    assert verify_jwt(token, "k", now=1000).identifiers == "{}"
    assert verify_jwt(token, "k", now=800).error == INVALID


def test_leeway_constant():
    from pycable.identity import jwt

    assert jwt.LEEWAY == LEEWAY
