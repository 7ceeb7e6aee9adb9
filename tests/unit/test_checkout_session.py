from __future__ import annotations

from typing import Any

import pytest
import stripe

from shared.stripe_gateway import CheckoutSession

OPEN = {"id": "cs_1", "object": "checkout.session", "url": "https://pay/cs_1", "status": "open"}
DECLINED = {
    **OPEN,
    "status": "open",
    "payment_status": "unpaid",
    "expires_at": 1_800_000_000,
    "payment_intent": {
        "id": "pi_1",
        "object": "payment_intent",
        "status": "requires_payment_method",
        "last_payment_error": {"code": "card_declined"},
    },
}


def as_sdk(data: dict[str, Any]) -> Any:
    return stripe.StripeObject.construct_from(data, "sk_test")


@pytest.mark.parametrize("wrap", [dict, as_sdk], ids=["dict", "StripeObject"])
def test_reads_a_session_with_its_payment_intent_expanded(wrap: Any) -> None:
    assert CheckoutSession.from_stripe(wrap(DECLINED)) == CheckoutSession(
        id="cs_1",
        url="https://pay/cs_1",
        status="open",
        payment_status="unpaid",
        payment_intent_id="pi_1",
        expires_at=1_800_000_000,
        payment_intent_status="requires_payment_method",
        payment_failed=True,
    )


@pytest.mark.parametrize("wrap", [dict, as_sdk], ids=["dict", "StripeObject"])
def test_absent_fields_read_as_none_or_their_default(wrap: Any) -> None:
    session = CheckoutSession.from_stripe(wrap({**OPEN, "payment_intent": "pi_2"}))
    assert (session.payment_intent_id, session.payment_status, session.expires_at) == (
        "pi_2",
        "unpaid",
        None,
    )
    assert (session.payment_intent_status, session.payment_failed) == (None, False)
