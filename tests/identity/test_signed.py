"""Signed stream names in the Rails MessageVerifier format (spec §7.3)."""

import base64
import hashlib
import hmac
import json

from pycable.identity.signed import derive_key, sign_stream, verify_stream


def test_round_trip():
    assert verify_stream(sign_stream("chat/2023", "s3Krit"), "s3Krit") == "chat/2023"


def test_known_vector():
    encoded = base64.b64encode(json.dumps("chat/2023").encode()).decode()
    digest = hmac.new(b"s3Krit", encoded.encode(), hashlib.sha256).hexdigest()
    assert verify_stream(f"{encoded}--{digest}", "s3Krit") == "chat/2023"


def test_urlsafe_alphabet_is_accepted():
    name = "ü??>>"  # its base64 contains + and /
    encoded = base64.urlsafe_b64encode(json.dumps(name).encode()).decode()
    assert "-" in encoded or "_" in encoded
    digest = hmac.new(b"k", encoded.encode(), hashlib.sha256).hexdigest()
    assert verify_stream(f"{encoded}--{digest}", "k") == name


def test_bad_signatures():
    good = sign_stream("a", "k")
    assert verify_stream(good, "other") is None
    assert verify_stream(good[:-1] + "0", "k") is None
    assert verify_stream("nodashes", "k") is None
    assert verify_stream("--abc", "k") is None
    payload = base64.b64encode(b"42").decode()
    assert verify_stream(f"{payload}--{derive_key('k', payload)}", "k") is None  # not a string


def test_derived_keys():
    assert derive_key("s", "broadcast-cable") == hmac.new(b"s", b"broadcast-cable", hashlib.sha256).hexdigest()


def test_non_ascii_signatures_are_rejected_not_raised():
    """compare_digest refuses non-ASCII str: such input must be a plain rejection."""
    good = sign_stream("room", "secret")
    encoded, _, digest = good.rpartition("--")
    for bad in ("abc--é", "é--abc", f"{encoded}--{digest[:-1]}é", f"{encoded}é--{digest}", "ünï--✓"):
        assert verify_stream(bad, "secret") is None
