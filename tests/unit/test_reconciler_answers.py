"""What the reconciler concludes from a Checkout Session as Stripe answers it (its
PaymentIntent expanded): pure logic."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.webhook.reconciler import async_payment_of, stripe_says
from shared.model import PaymentStatus
from shared.store import Attempt, Payment
from shared.stripe_gateway import CheckoutSession


def session(status: str, paid: str, intent: str | None, failed: bool = False) -> CheckoutSession:
    return CheckoutSession("cs_1", None, status, paid, "pi_1", None, intent, failed)


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (session("complete", "paid", "succeeded"), PaymentStatus.SUCCEEDED),
        (session("complete", "unpaid", "processing"), PaymentStatus.PROCESSING),
        (session("complete", "unpaid", "requires_payment_method", True), PaymentStatus.FAILED),
        (session("complete", "unpaid", "canceled"), PaymentStatus.CANCELED),
        (session("open", "unpaid", "requires_payment_method", True), PaymentStatus.FAILED),
        (session("open", "unpaid", None), None),
        (session("expired", "unpaid", None), PaymentStatus.EXPIRED),
    ],
)
def test_a_session_complete_but_unpaid_is_a_delayed_payment_not_a_failure(
    answer: CheckoutSession, status: PaymentStatus | None
) -> None:
    assert stripe_says(answer) is status


def payment(async_payment: PaymentStatus | None = None) -> Payment:
    now = datetime.now(UTC)
    attempt = Attempt(1, "cs_1", None, None, PaymentStatus.PENDING, now, async_payment)
    return Payment(
        "r", "u", 100, "usd", PaymentStatus.PENDING, 1, "cs_1", None, None, now, attempts=(attempt,)
    )


def test_what_a_session_says_of_a_delayed_payment() -> None:
    debit = session("complete", "unpaid", "processing")
    assert async_payment_of(payment(), debit, PaymentStatus.PROCESSING) is PaymentStatus.PROCESSING
    card = session("complete", "paid", "succeeded")
    assert async_payment_of(payment(), card, PaymentStatus.SUCCEEDED) is None
    arrived = async_payment_of(payment(PaymentStatus.PROCESSING), card, PaymentStatus.SUCCEEDED)
    assert arrived is PaymentStatus.SUCCEEDED
    canceled = session("complete", "unpaid", "canceled")
    assert async_payment_of(payment(), canceled, PaymentStatus.CANCELED) is None
