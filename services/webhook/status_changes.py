"""The use case: apply what a Stripe event means to its payment, once and atomically, and only
when the event matches the payment (matching.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import StrEnum

from services.webhook.duplicate_charges import is_duplicate_charge, record_duplicate_charge
from services.webhook.events import PaymentUpdate
from services.webhook.matching import payment_mismatch, refuse
from shared.model import UNPAID_STATUSES, PaymentStatus
from shared.processed_events import ProcessedEvents
from shared.retry import is_transient
from shared.store import (
    Document,
    Payment,
    PaymentStore,
    StatusChange,
    async_payment_unsettled,
    attempt_selector,
)

logger = logging.getLogger(__name__)


class Result(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this event id was handled before
    UNCHANGED = "unchanged"  # a transition the rules refuse, or a repeat not yet recorded
    UNKNOWN_PAYMENT = "unknown_payment"
    MISMATCHED = "mismatched"  # not about the ride as it is (matching.py): nothing changed
    DUPLICATE_CHARGE = "duplicate_charge"  # paid again on another attempt: to refund


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
    must_hold = _what_the_ride_must_hold(update)
    if must_hold is not None:
        await _note_async_payment(store, update, must_hold)
        must_hold = must_hold | _what_processing_needs(update)
        for selector in update.selectors:  # each finds the ride only while on the event's attempt
            payment = await store.apply(_both(selector, must_hold), change)
            if payment is not None:
                return Applied(Result.APPLIED, payment)
    return await _not_applied(store, update, change)


async def _note_async_payment(
    store: PaymentStore, update: PaymentUpdate, must_hold: Document
) -> None:
    """What the event says of a delayed payment, on the current attempt's entry, before the
    status changes: an outcome recorded first is seen by a completion racing with it."""
    if update.async_payment is None or update.session_id is None:
        return
    current = _both({"stripeSessionId": update.session_id}, must_hold)
    await store.note_async_payment(current, update.session_id, update.async_payment)


def _what_processing_needs(update: PaymentUpdate) -> Document:
    """`processing` only while the delayed payment's outcome is unknown: a completion that
    arrives after it (Stripe's order is not guaranteed) changes nothing."""
    if update.target is not PaymentStatus.PROCESSING or update.session_id is None:
        return {}
    return async_payment_unsettled(update.session_id)


def _what_the_ride_must_hold(update: PaymentUpdate) -> Document | None:
    """The record's fields the event must match to change it, as a filter (so that the check
    and the change are one update); None when no record can match (the event names no amount
    or currency)."""
    if update.charged is None:
        return {}
    if update.charged.amount is None or update.charged.currency is None:
        return None
    must_hold: Document = {"amount": update.charged.amount, "currency": update.charged.currency}
    if update.payment_intent_id:
        must_hold["paymentIntentId"] = {"$in": [None, update.payment_intent_id]}
    if update.attempt is not None:
        must_hold |= attempt_selector(update.attempt)
    return must_hold


def _both(selector: Document, must_hold: Document) -> Document:
    # `$and`, not a merge: a selector's exact paymentIntentId must not become the "$in" of
    # must_hold.
    return {"$and": [selector, must_hold]} if must_hold else selector


async def _not_applied(store: PaymentStore, update: PaymentUpdate, change: StatusChange) -> Applied:
    """An event no selector applied: about no known ride, not matching its ride, about an
    earlier attempt, or a transition the rules refuse."""
    found = await _ride_and_attempt(store, update)
    if found is None:
        return Applied(Result.UNKNOWN_PAYMENT, None)
    payment, attempt = found
    if is_duplicate_charge(update, payment, attempt):
        paid_again = await record_duplicate_charge(
            store, update, payment, attempt, source=change.source
        )
        return Applied(Result.DUPLICATE_CHARGE, paid_again)
    mismatch = payment_mismatch(update, payment, attempt)
    if mismatch is not None:
        refuse(update.event_type, update.event_id, payment.ride_id, mismatch)
        return Applied(Result.MISMATCHED, payment)
    if attempt != payment.attempt:
        session_id = next(
            (a.stripe_session_id for a in payment.attempts if a.attempt == attempt),
            change.stripe_session_id,
        )
        return await _apply_to_earlier_attempt(
            store, payment, replace(change, attempt=attempt, stripe_session_id=session_id)
        )
    if update.payment_intent_id and payment.payment_intent_id is None:
        await store.remember_payment_intent(
            {"rideId": payment.ride_id, **attempt_selector(attempt)}, update.payment_intent_id
        )
    return Applied(Result.UNCHANGED, payment)


async def _ride_and_attempt(
    store: PaymentStore, update: PaymentUpdate
) -> tuple[Payment, int] | None:
    """The ride the event names and the attempt it is about."""
    earlier = await _earlier_attempt(store, update)
    if earlier is not None:
        return earlier
    for selector in update.selectors:
        existing = await store.find(selector)
        if existing is not None:
            return existing, existing.attempt
    return None


async def _earlier_attempt(
    store: PaymentStore, update: PaymentUpdate
) -> tuple[Payment, int] | None:
    """The ride and attempt number when the event is about an attempt that is not current
    (or one the ride never had: matching.py refuses those)."""
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
