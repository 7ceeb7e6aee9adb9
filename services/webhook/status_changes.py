"""The use case: apply what a Stripe event means to its payment, once and atomically."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import StrEnum

from services.webhook.events import PaymentUpdate
from shared.model import UNPAID_STATUSES, PaymentStatus
from shared.processed_events import ProcessedEvents
from shared.retry import is_transient
from shared.store import Payment, PaymentStore, StatusChange

logger = logging.getLogger(__name__)


class Result(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this event id was handled before
    UNCHANGED = "unchanged"  # a transition the rules refuse, or a repeat not yet recorded
    UNKNOWN_PAYMENT = "unknown_payment"


@dataclass(frozen=True, slots=True)
class Applied:
    result: Result
    payment: Payment | None
    # The ride was paid on this attempt, not its current one: other sessions may be open.
    paid_on_earlier_attempt: int | None = None


async def apply_event(
    store: PaymentStore, processed: ProcessedEvents, update: PaymentUpdate, *, source: str
) -> Applied:
    """A Stripe event, applied once: a repeat of a handled event id changes nothing."""
    if await processed.contains(update.event_id):
        return Applied(Result.DUPLICATE, None)
    applied = await apply_update(store, update, source=source)
    if applied.payment is not None:
        # Unknown rides are not recorded: a redelivery may find the payment stored by then.
        await _record(processed, update, applied.payment, applied.result)
    return applied


async def _record(
    processed: ProcessedEvents, update: PaymentUpdate, payment: Payment, result: Result
) -> None:
    """Best effort: the change is stored by now and must be answered and announced as such;
    without the record, a repeat is still refused by the payment's history."""
    try:
        await processed.add(update.event_id, update.event_type, payment.ride_id, result.value)
    except Exception as error:
        if not is_transient(error):
            raise
        logger.warning(
            "could not record the handled event",
            extra={"rideId": payment.ride_id, "eventId": update.event_id, "error": str(error)},
        )


async def apply_update(store: PaymentStore, update: PaymentUpdate, *, source: str) -> Applied:
    change = StatusChange(
        update.target,
        update.event_id,
        source,
        update.payment_intent_id,
        attempt=update.attempt,
        stripe_session_id=update.session_id,
    )
    for selector in update.selectors:  # each finds the ride only while on the event's attempt
        payment = await store.apply(selector, change)
        if payment is not None:
            return Applied(Result.APPLIED, payment)
    earlier = await _earlier_attempt(store, update)
    if earlier is not None:
        payment, attempt = earlier
        session_id = next(
            (a.stripe_session_id for a in payment.attempts if a.attempt == attempt),
            change.stripe_session_id,
        )
        return await _apply_to_earlier_attempt(
            store, payment, replace(change, attempt=attempt, stripe_session_id=session_id)
        )
    for selector in update.selectors:
        existing = await store.find(selector)
        if existing is not None:
            if update.payment_intent_id and existing.payment_intent_id is None:
                await store.remember_payment_intent(selector, update.payment_intent_id)
            return Applied(Result.UNCHANGED, existing)
    return Applied(Result.UNKNOWN_PAYMENT, None)


async def _earlier_attempt(
    store: PaymentStore, update: PaymentUpdate
) -> tuple[Payment, int] | None:
    """The ride and attempt number when the event is about an attempt that is not current."""
    if update.session_id is not None:
        payment = await store.find({"attempts.stripeSessionId": update.session_id})
        attempt = payment.attempt_of_session(update.session_id) if payment else None
    elif update.ride_id is not None and update.attempt is not None:
        payment, attempt = await store.find({"rideId": update.ride_id}), update.attempt
    else:
        return None
    if payment is None or attempt is None or attempt == payment.attempt:
        return None
    return payment, attempt


async def _apply_to_earlier_attempt(
    store: PaymentStore, payment: Payment, change: StatusChange
) -> Applied:
    """A success on any attempt settles the ride; anything else about an earlier attempt is
    only noted in its entry and the history."""
    if change.target is PaymentStatus.SUCCEEDED:
        settling = replace(change, settles_earlier_attempt=True)
        paid = await store.apply(
            {"rideId": payment.ride_id}, settling, allowed_from=UNPAID_STATUSES
        )
        if paid is not None:
            logger.warning(
                "an earlier attempt was paid; the ride's other sessions are to be expired",
                extra={"rideId": payment.ride_id, "attempt": change.attempt},
            )
            return Applied(Result.APPLIED, paid, paid_on_earlier_attempt=change.attempt)
        return Applied(Result.UNCHANGED, payment)
    noted = await store.note_earlier_attempt(payment.ride_id, change)
    return Applied(Result.UNCHANGED, noted or payment)
