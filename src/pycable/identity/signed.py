"""Signed stream names in the Rails MessageVerifier format (spec §7.3), and key derivation.

``signed = base64(JSON(name)) + "--" + hex(HMAC-SHA256(secret, base64 part))``. Both the
standard and the URL-safe base64 alphabets are accepted (the Ruby SDK signs URL-safe).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import orjson

__all__ = ["sign_stream", "verify_stream", "derive_key"]


def derive_key(secret: str, purpose: str) -> str:
    """``hex(HMAC-SHA256(secret, purpose))``: ``broadcast-cable``, ``rpc-cable``, ``api-cable``."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def sign_stream(name: str, secret: str) -> str:
    encoded = base64.b64encode(orjson.dumps(name)).decode()
    return f"{encoded}--{derive_key(secret, encoded)}"


def verify_stream(signed: str, secret: str) -> str | None:
    """The stream name if *signed* carries a valid signature, else ``None``."""
    encoded, sep, digest = signed.rpartition("--")
    if not sep or not encoded or not signed.isascii():  # a valid one is base64 + hex
        return None
    if not hmac.compare_digest(derive_key(secret, encoded), digest):
        return None
    try:
        raw = base64.b64decode(encoded.replace("-", "+").replace("_", "/") + "=" * (-len(encoded) % 4))
        name = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    return name if isinstance(name, str) else None
