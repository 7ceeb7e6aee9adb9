"""The WebSocket messages of the contract, built in one place.

Every message is one JSON object with a `type`. Pushed messages (`payment_url`,
`payment_status_update`) also get a string `id` when the bus stores them.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]

REGISTRATION_SUCCESS_TEXT = "Successfully registered for payment notifications"
ALREADY_REGISTERED_TEXT = "User already registered via URL parameter"


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
    """The link to pay; `expires_at` in ISO 8601 (None when unknown)."""
    return {
        "type": "payment_url",
        "rideId": ride_id,
        "paymentUrl": url,
        "status": status,
        "amount": amount,
        "currency": currency,
        "attempt": attempt,
        "expiresAt": expires_at,
    }


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
