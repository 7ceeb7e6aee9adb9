"""The WebSocket messages of the contract, built in one place.

Every message is one JSON object with a `type`. Pushed messages (`payment_url`,
`payment_status_update`, `duplicate_charge_refunded`) also get a string `id` when the bus
stores them.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]

REGISTRATION_SUCCESS_TEXT = "Successfully registered for payment notifications"
ALREADY_REGISTERED_TEXT = "User already registered via URL parameter"
DUPLICATE_CHARGE_REFUNDED = "duplicate_charge_refunded"
# Pushed messages that tell of something beside the payment's state: not ordered by the
# record's version, and never taken for a ride's latest status (shared/bus.py).
NOTE_TYPES = frozenset({DUPLICATE_CHARGE_REFUNDED})


def registration_success(user_id: str) -> Message:
    return {"type": "registration_success", "message": REGISTRATION_SUCCESS_TEXT, "userId": user_id}


def info(text: str) -> Message:
    return {"type": "info", "message": text}


def error(text: str) -> Message:
    return {"type": "error", "message": text}


def payment_url(
    ride_id: str,
    url: str,
    status: str = "pending",
    *,
    amount: int | None = None,
    currency: str | None = None,
    attempt: int = 1,
    expires_at: str | None = None,
) -> Message:
    """The link to pay; `expires_at` in ISO 8601. What is not known (None) is left out, never
    sent as null: the contract types `amount`, `currency` and `expiresAt` when present."""
    message: Message = {
        "type": "payment_url",
        "rideId": ride_id,
        "paymentUrl": url,
        "status": status,
        "attempt": attempt,
    }
    known = {"amount": amount, "currency": currency, "expiresAt": expires_at}
    message.update({name: value for name, value in known.items() if value is not None})
    return message


def payment_status_update(
    ride_id: str,
    status: str,
    stripe_session_id: str | None,
    *,
    amount: int,
    currency: str,
    amount_refunded: int = 0,
) -> Message:
    message: Message = {
        "type": "payment_status_update",
        "rideId": ride_id,
        "status": status,
        "stripeSessionId": stripe_session_id,
        "amount": amount,
        "currency": currency,
    }
    if amount_refunded:
        message["amountRefunded"] = amount_refunded
    return message


def duplicate_charge_refunded(
    ride_id: str, *, amount: int, currency: str, payment_intent_id: str
) -> Message:
    """The ride was paid twice: the second charge, `amount`, is given back in full (Stripe has
    the refund; the bank takes some days to show it)."""
    return {
        "type": DUPLICATE_CHARGE_REFUNDED,
        "rideId": ride_id,
        "amount": amount,
        "currency": currency,
        "paymentIntentId": payment_intent_id,
    }
