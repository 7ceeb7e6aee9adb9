"""Verifies the `Stripe-Signature` header on the raw request body, as Stripe specifies.

The header is `t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>[,v1=...]`. Several
`v1` entries and several secrets (during rotation) are accepted. Unlike the SDK's helper, a
timestamp too far in the future is refused as well as a stale one, and the header is parsed
strictly (bounded length, ASCII digits, hex signatures), so no header can raise anything but
SignatureError.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence

TOLERANCE_S = 300
# Stripe's header is about 150 characters; a few more v1 entries during a secret roll.
MAX_HEADER_CHARS = 2048
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


class SignatureError(Exception):
    """The delivery is not provably from Stripe; the message says why (safe to return)."""


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance_s: int = TOLERANCE_S,
    now: float | None = None,
) -> None:
    if not header:
        raise SignatureError("missing Stripe-Signature header")
    timestamp, signatures = _parse(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError("signature timestamp is outside the tolerance window")
    expected = [sign(payload, secret, timestamp) for secret in secrets]
    if not any(hmac.compare_digest(e, s) for e in expected for s in signatures):
        raise SignatureError("no signature matches the payload")


def _parse(header: str) -> tuple[int, list[str]]:
    if len(header) > MAX_HEADER_CHARS:
        raise SignatureError("Stripe-Signature header is too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and _TIMESTAMP.fullmatch(value):
            timestamp = int(value)
        elif key == "v1" and _SIGNATURE.fullmatch(value):
            signatures.append(value)
    if timestamp is None:
        raise SignatureError("Stripe-Signature header has no timestamp")
    if not signatures:
        raise SignatureError("Stripe-Signature header has no v1 signature")
    return timestamp, signatures
