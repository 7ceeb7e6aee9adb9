"""Telling a rider about their payment: a stored state as a bus message, versioned."""

from __future__ import annotations

from shared import messages
from shared.bus import NotificationBus
from shared.status_events import StatusEvent
from shared.store import Payment


async def announce_payment_url(bus: NotificationBus, payment: Payment) -> str | None:
    if payment.payment_url is None:
        raise ValueError(f"payment for ride {payment.ride_id} has no payment url yet")
    expires_at = payment.expires_at
    message = messages.payment_url(
        payment.ride_id,
        payment.payment_url,
        amount=payment.amount,
        currency=payment.currency,
        attempt=payment.attempt,
        expires_at=expires_at.isoformat() if expires_at else None,
    )
    return await bus.publish(payment.user_id, message, version=payment.version)


async def announce_status(bus: NotificationBus, change: StatusEvent) -> str | None:
    """Tell the rider about one stored status change (None: a newer one was told already)."""
    message = messages.payment_status_update(
        change.rideId,
        change.status,
        change.stripeSessionId,
        amount=change.amount,
        currency=change.currency,
        amount_refunded=change.amountRefunded,
    )
    return await bus.publish(change.userId, message, version=change.version)
