"""JWT identification, as AnyCable does it: HMAC-signed tokens whose ``ext`` claim holds
the connection identifiers. Only HS256/HS384/HS512 are accepted.

PyJWT checks the structure, the algorithm and the signature. Two checks are ours:

* **Strict base64url.** PyJWT's decoder drops characters outside the alphabet, so
  ``<sig>!!`` would verify like ``<sig>``. Every part must be canonical unpadded base64url
  (only ``A-Z a-z 0-9 - _``, no padding, no stray trailing bits).
* **Time claims, against the ``now`` passed in** (the caller owns the clock): ``exp`` is
  checked strictly (``now >= exp`` is expired, as in AnyCable); ``nbf`` and ``iat`` may be
  up to :data:`LEEWAY` seconds in the future (the issuer's clock may run a little ahead),
  no more. Each present time claim must be a finite number.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
from jwt.warnings import InsecureKeyLengthWarning

__all__ = ["JWTResult", "verify_jwt", "encode_jwt", "INVALID", "EXPIRED", "LEEWAY"]

ALGORITHMS = ["HS256", "HS384", "HS512"]

#: Seconds ``nbf`` and ``iat`` may lie in the future.
LEEWAY = 5.0

INVALID = "invalid"
EXPIRED = "expired"

_B64URL = re.compile(r"[A-Za-z0-9_-]*")

# PyJWT only checks the time claims against its own clock; ours are checked below.
_OPTIONS: Any = {"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False,
                 "verify_iss": False}


@dataclass(frozen=True, slots=True)
class JWTResult:
    """``identifiers`` on success, else ``error`` (:data:`INVALID` or :data:`EXPIRED`)."""

    identifiers: str | None = None
    error: str | None = None


def _canonical_b64url(part: str) -> bool:
    """True if *part* is unpadded base64url that re-encodes to itself."""
    if len(part) % 4 == 1 or _B64URL.fullmatch(part) is None:
        return False
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        return False
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == part


def _number(value: object) -> bool:
    """A finite JSON number (PyJWT's parser accepts ``NaN`` and ``Infinity``)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def verify_jwt(token: str, secret: str, now: float) -> JWTResult:
    """Verify *token* with *secret* at time *now* (unix seconds).

    Args:
        token: the compact JWS (``header.payload.signature``).
        secret: the HMAC secret.
        now: the current time; nothing here reads a clock.

    Returns:
        The ``ext`` claim as ``identifiers``, or ``error``: :data:`EXPIRED` for a token past
        its ``exp``, :data:`INVALID` for everything else (bad format, algorithm or signature,
        ``nbf``/``iat`` in the future, a time claim that is not a number, an ``ext`` that is
        not a string: anycable-go closes with 1011 there; an unauthorized disconnect is
        clearer and loses nothing).
    """
    parts = token.split(".")
    if len(parts) != 3 or not all(_canonical_b64url(p) for p in parts):
        return JWTResult(error=INVALID)
    try:
        with warnings.catch_warnings():
            # AnyCable secrets may be short; refusing them is the operator's call, not ours.
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            claims = pyjwt.decode(token, secret, algorithms=ALGORITHMS, options=_OPTIONS)
    except (pyjwt.InvalidTokenError, ValueError, TypeError):
        return JWTResult(error=INVALID)
    for name in ("exp", "nbf", "iat"):
        if name in claims and not _number(claims[name]):
            return JWTResult(error=INVALID)
    if "exp" in claims and now >= claims["exp"]:
        return JWTResult(error=EXPIRED)
    if any(name in claims and claims[name] > now + LEEWAY for name in ("nbf", "iat")):
        return JWTResult(error=INVALID)
    ext = claims.get("ext")
    if not isinstance(ext, str):
        return JWTResult(error=INVALID)
    return JWTResult(identifiers=ext)


def encode_jwt(
    identifiers: str, secret: str, exp: float | None = None, alg: str = "HS256", **claims: float
) -> str:
    """Issue a token as the AnyCable SDKs do (``{ext, exp}``); used by tests and the SDK.

    Extra numeric claims (``nbf``, ``iat``) go into the payload as given.
    """
    payload: dict[str, object] = {"ext": identifiers, **claims}
    if exp is not None:
        payload["exp"] = int(exp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return pyjwt.encode(payload, secret, algorithm=alg)
