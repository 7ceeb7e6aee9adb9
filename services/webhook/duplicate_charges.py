"""Money taken twice for one ride: which success is a second charge, and recording it.

A ride is paid once. A success on another attempt of a ride already paid (the old link paid in
another tab, a PaymentIntent confirmed late) took the rider's money a second time: it names
another PaymentIntent than the ride's, on an attempt that is not the one that paid. Such a
success is recorded on the ride, by one conditional update: its event in the history (as any
event about an attempt), and the charge in `duplicateCharges` with `refundStatus: owed`. The
record says the refund is owed until Stripe has it; duplicate_refunds.py gives the money back.

A second PaymentIntent on the attempt that paid is no duplicate: one Checkout Session charges
once, so such an event is not about this ride as it is (matching.py refuses it).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter
from pymongo import ReturnDocument

from services.webhook.events import PaymentUpdate
from services.webhook.matching import charge_mismatch
from shared.model import PaymentStatus
from shared.store import Document, Payment, PaymentStore

logger = logging.getLogger(__name__)

DUPLICATE_CHARGES = Counter(
    "payments_duplicate_charges_total",
    "Successes on another attempt of a ride already paid: money taken twice, to give back",
)
# A ride whose money was taken: a success on another attempt takes it again.
ALREADY_PAID = frozenset(
    {
        PaymentStatus.SUCCEEDED,
        PaymentStatus.PARTIALLY_REFUNDED,
        PaymentStatus.REFUNDED,
        PaymentStatus.DISPUTED,
        PaymentStatus.DISPUTE_LOST,
    }
)
OWED = "owed"  # a duplicate's refundStatus until Stripe has its refund


def is_duplicate_charge(update: PaymentUpdate, payment: Payment, attempt: int) -> bool:
    """Whether the event says the rider paid the ride again: a success, of the ride's amount
    and currency, by another PaymentIntent than the ride's, on an attempt the ride has (and
    the one the event names) that is not the attempt that paid."""
    if update.target is not PaymentStatus.SUCCEEDED or payment.status not in ALREADY_PAID:
        return False
    if update.charged is None or charge_mismatch(update.charged, payment) is not None:
        return False  # Stripe's answer about the ride's own session, or another charge
    if update.payment_intent_id in (None, payment.payment_intent_id):
        return False
    if not 1 <= attempt <= payment.attempt or update.attempt not in (None, attempt):
        return False
    return attempt not in _paid_attempts(payment)


def _paid_attempts(payment: Payment) -> set[int]:
    """The attempts whose success the record holds (records whose events named no attempt:
    the current one)."""
    paid = {a.attempt for a in payment.attempts if a.status is PaymentStatus.SUCCEEDED}
    return paid or {payment.attempt}


async def record_duplicate_charge(
    store: PaymentStore, update: PaymentUpdate, payment: Payment, attempt: int, *, source: str
) -> Payment:
    """The success in the ride's history and, once per PaymentIntent, in `duplicateCharges`
    with its refund owed; an event already in the history changes nothing. The record after."""
    ride = {"rideId": payment.ride_id}
    document = await store.collection.find_one_and_update(
        ride | {"history.eventId": {"$ne": update.event_id}},
        _recorded(update, attempt, source),
        return_document=ReturnDocument.AFTER,
    )
    if document is None:  # a repeat of this event: recorded before
        return await store.find(ride) or payment
    if _first_told_by(document, update):
        DUPLICATE_CHARGES.inc()
        logger.warning(
            "a ride was paid twice: refunding the second charge",
            extra={
                "rideId": payment.ride_id,
                "paymentIntentId": update.payment_intent_id,
                "attempt": attempt,
                "eventId": update.event_id,
            },
        )
    return Payment.from_document(document)


def _first_told_by(document: Document, update: PaymentUpdate) -> bool:
    return any(
        entry["paymentIntentId"] == update.payment_intent_id and entry["eventId"] == update.event_id
        for entry in document.get("duplicateCharges", [])
    )


def _recorded(update: PaymentUpdate, attempt: int, source: str) -> list[Document]:
    """One pipeline stage: the history entry, and the duplicate unless already listed."""
    assert update.charged is not None
    entry = {
        "paymentIntentId": {"$literal": update.payment_intent_id},
        "attempt": attempt,
        "amount": update.charged.amount,
        "currency": {"$literal": update.charged.currency},
        "eventId": {"$literal": update.event_id},
        "at": "$$NOW",
        "refundStatus": OWED,
        "stripeRefundId": None,
    }
    listed = {"$ifNull": ["$duplicateCharges", []]}
    intents = {"$map": {"input": listed, "as": "charge", "in": "$$charge.paymentIntentId"}}
    return [
        {
            "$set": {
                "version": {"$add": ["$version", 1]},
                "updatedAt": "$$NOW",
                "history": _appended(
                    "history",
                    {
                        "status": PaymentStatus.SUCCEEDED.value,
                        "eventId": {"$literal": update.event_id},
                        "source": {"$literal": source},
                        "attempt": attempt,
                        "at": "$$NOW",
                    },
                ),
                "duplicateCharges": {
                    "$cond": [
                        {"$in": [{"$literal": update.payment_intent_id}, intents]},
                        listed,
                        {"$concatArrays": [listed, [entry]]},
                    ]
                },
            }
        }
    ]


def _appended(array: str, entry: Document) -> Document:
    return {"$concatArrays": [{"$ifNull": [f"${array}", []]}, [entry]]}
