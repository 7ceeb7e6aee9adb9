"""Telling a rider about their payment: the record's state as a bus message, versioned."""

from __future__ import annotations

from shared import messages
from shared.bus import NotificationBus
from shared.store import Payment


async def announce_payment_url(bus: NotificationBus, payment: Payment) -> str | None:
    if payment.payment_url is None:
        raise ValueError(f"payment for ride {payment.ride_id} has no payment url yet")
    message = messages.payment_url(payment.ride_id, payment.payment_url)
    return await bus.publish(payment.user_id, message, version=payment.version)


async def announce_status(bus: NotificationBus, payment: Payment) -> str | None:
    message = messages.payment_status_update(
        payment.ride_id, payment.status.value, payment.stripe_session_id
    )
    return await bus.publish(payment.user_id, message, version=payment.version)
