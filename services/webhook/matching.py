"""Whether a signed event is about the ride it names, as that ride is.

A signature proves who sent an event, not that it belongs to the ride whose id it carries. An
event changes a ride only when what it says was charged is the ride's amount and currency, and
the PaymentIntent it names is the one the ride's current attempt knows (when it knows one). A
mismatch changes nothing and is answered 200 `mismatched`, so that Stripe does not deliver it
again and again; it is counted and logged with the rideId for someone to look at.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from services.webhook.events import Charged, PaymentUpdate, metric_label
from shared.store import Payment

logger = logging.getLogger(__name__)

MISMATCHED = Counter(
    "payments_webhook_mismatched_events_total",
    "Signed events refused because they do not match the payment they name",
    ["type"],
)


def refuse(event_type: str, event_id: str, ride_id: str, reason: str) -> None:
    """Count and log an event refused for not matching its ride."""
    MISMATCHED.labels(metric_label(event_type)).inc()
    logger.warning(
        "webhook event does not match its payment; nothing changed",
        extra={"rideId": ride_id, "eventId": event_id, "eventType": event_type, "reason": reason},
    )


def payment_mismatch(update: PaymentUpdate, payment: Payment, attempt: int) -> str | None:
    """Why the status event cannot be about `payment`, found on `attempt`; None when it can."""
    if update.charged is None:
        return None  # Stripe's answer about the ride's own session
    return (
        charge_mismatch(update.charged, payment)
        or _attempt_mismatch(update.attempt, attempt, payment.attempt)
        or (
            intent_mismatch(update.payment_intent_id, payment.payment_intent_id)
            if attempt == payment.attempt
            else None
        )
    )


def charge_mismatch(charged: Charged, payment: Payment) -> str | None:
    if charged.amount == payment.amount and charged.currency == payment.currency:
        return None
    return (
        f"it charges {_money(charged.amount, charged.currency)}; "
        f"the ride is {_money(payment.amount, payment.currency)}"
    )


def intent_mismatch(named: str | None, known: str | None) -> str | None:
    """A PaymentIntent other than the one the ride knows (either may be unknown)."""
    if named is None or known is None or named == known:
        return None
    return f"it names PaymentIntent {named}; the ride's is {known}"


def _attempt_mismatch(named: int | None, found: int, latest: int) -> str | None:
    if found > latest:
        return f"the ride has no attempt {found} (its latest is {latest})"
    if named is not None and named != found:
        return f"it names attempt {named}; its session is attempt {found}"
    return None


def _money(amount: int | None, currency: str | None) -> str:
    return f"{'no amount' if amount is None else amount} {currency or 'in no currency'}"
