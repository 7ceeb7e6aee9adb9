"""Stripe's refusal of an amount it will not charge, in Stripe's words (shared/currencies.py has
the rules)."""

from __future__ import annotations

from typing import Any

from shared import currencies

from .errors import StripeApiError, invalid_param

# How Stripe writes the minimum in its messages: `$0.50 usd`, `£0.30 gbp`, `175.00 huf`.
_SYMBOLS = {
    "usd": "$", "aud": "$", "cad": "$", "hkd": "$", "mxn": "$", "nzd": "$", "sgd": "$",
    "brl": "R$", "eur": "€", "gbp": "£", "jpy": "¥", "inr": "₹", "thb": "฿",
}  # fmt: skip

CHECKOUT_TOTAL = "The Checkout Session's total amount due"


def whole_amount(raw: Any, *, below_one: str) -> int:
    """An `amount` parameter as Stripe reads it: a whole number of minor units, 1 at least
    (`below_one` is Stripe's message for less, which differs by resource)."""
    try:
        amount = int(str(raw), 10)
    except ValueError:
        raise invalid_param("amount", f"Invalid integer: {raw}") from None
    if amount < 1:
        raise invalid_param("amount", below_one)
    return amount


def check_amount(amount: int, currency: str, *, param: str | None, subject: str) -> None:
    """Raise Stripe's 400 when it would refuse to charge `amount` of `currency`. `subject` is
    what the message names: `Amount` for a PaymentIntent, CHECKOUT_TOTAL for a session."""
    refusal = currencies.charge_refusal(amount, currency)
    if refusal is None:
        return
    if refusal.reason == "too_small":
        minimum = _in_stripes_words(refusal.minimum or 1, currency)
        verb = "must add up to" if subject == CHECKOUT_TOTAL else "must be"
        raise StripeApiError(
            400,
            f"{subject} {verb} at least {minimum}",
            code="amount_too_small",
            param=param,
            replayable=False,
        )
    raise StripeApiError(
        400,
        f"Invalid amount: amounts in {currency.lower()} must be a multiple of {refusal.step} "
        f"(Stripe's payment partners take {currency.upper()} only rounded that way).",
        code="invalid_charge_amount",
        param=param,
        replayable=False,
    )


def _in_stripes_words(amount: int, currency: str) -> str:
    code = currency.lower()
    return f"{_SYMBOLS.get(code, '')}{currencies.to_major(amount, code)} {code}"
