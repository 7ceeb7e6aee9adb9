from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import stripe

from services.webhook.signature import SignatureError, sign, verify

SECRET = "whsec_unit"
BODY = b'{"id":"evt_1","type":"checkout.session.completed"}'


def header(body: bytes = BODY, secret: str = SECRET, at: float | None = None) -> str:
    timestamp = int(time.time() if at is None else at)
    return f"t={timestamp},v1={sign(body, secret, timestamp)}"


def test_accepts_what_the_stripe_sdk_signs() -> None:
    sdk_header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET)
    verify(BODY, sdk_header, [SECRET])


def test_accepts_any_of_several_signatures_and_secrets() -> None:
    now = int(time.time())
    several = f"t={now},v1={'0' * 64},v1={sign(BODY, SECRET, now)},v0=ignored"
    verify(BODY, several, ["whsec_other", SECRET])


@pytest.mark.parametrize(
    ("make_header", "reason"),
    [
        (lambda: None, "missing"),
        (lambda: "", "missing"),
        (lambda: "garbage", "no timestamp"),
        (lambda: f"t={int(time.time())}", "no v1"),
        (lambda: header(secret="whsec_wrong"), "no signature matches"),
        (lambda: header(body=BODY + b" "), "no signature matches"),
        (lambda: header(at=time.time() - 301), "tolerance"),
        (lambda: header(at=time.time() + 301), "tolerance"),
        (lambda: f"t={'9' * 400},v1=0", "no timestamp"),
        (lambda: "t=²,v1=0", "no timestamp"),
        (lambda: f"t={int(time.time())},v1=é", "no v1"),
        (lambda: header() + ",v1=00" * 400, "too long"),
    ],
)
def test_refuses_what_is_not_provably_from_stripe(
    make_header: Callable[[], str | None], reason: str
) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify(BODY, make_header(), [SECRET])


def test_no_secrets_configured_matches_nothing() -> None:
    with pytest.raises(SignatureError):
        verify(BODY, header(), [])
