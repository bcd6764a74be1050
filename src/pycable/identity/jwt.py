"""JWT identification (spec §7.2): HMAC-signed tokens whose ``ext`` claim holds the
connection identifiers. Only HS256/HS384/HS512 are accepted."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import orjson

__all__ = ["JWTResult", "verify_jwt", "encode_jwt", "INVALID", "EXPIRED"]

_ALGS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}

INVALID = "invalid"
EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class JWTResult:
    """``identifiers`` on success, else ``error`` (:data:`INVALID` or :data:`EXPIRED`)."""

    identifiers: str | None = None
    error: str | None = None


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def verify_jwt(token: str, secret: str, now: float) -> JWTResult:
    """Verify *token* with *secret* at time *now*.

    A valid token whose ``ext`` claim is not a string is :data:`INVALID` (anycable-go
    closes with 1011 there; an unauthorized disconnect is clearer and loses nothing).
    """
    try:
        head_b64, payload_b64, sig_b64 = token.split(".")
        header = orjson.loads(_b64decode(head_b64))
        digest = _ALGS[header["alg"]]
        expected = hmac.new(secret.encode(), f"{head_b64}.{payload_b64}".encode(), digest).digest()
        if not hmac.compare_digest(expected, _b64decode(sig_b64)):
            return JWTResult(error=INVALID)
        claims = orjson.loads(_b64decode(payload_b64))
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return JWTResult(error=INVALID)
    if not isinstance(claims, dict):
        return JWTResult(error=INVALID)
    exp = claims.get("exp")
    if exp is not None:
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            return JWTResult(error=INVALID)
        if now >= exp:
            return JWTResult(error=EXPIRED)
    ext = claims.get("ext")
    if not isinstance(ext, str):
        return JWTResult(error=INVALID)
    return JWTResult(identifiers=ext)


def encode_jwt(identifiers: str, secret: str, exp: float | None = None, alg: str = "HS256") -> str:
    """Issue a token as the AnyCable SDKs do (``{ext, exp}``); used by tests and the SDK."""
    header = _b64encode(orjson.dumps({"alg": alg, "typ": "JWT"}))
    claims: dict[str, object] = {"ext": identifiers}
    if exp is not None:
        claims["exp"] = int(exp)
    payload = _b64encode(orjson.dumps(claims))
    sig = hmac.new(secret.encode(), f"{header}.{payload}".encode(), _ALGS[alg]).digest()
    return f"{header}.{payload}.{_b64encode(sig)}"
