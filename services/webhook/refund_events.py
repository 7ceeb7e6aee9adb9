"""Money going back: what Stripe's refund and dispute events mean for a payment, and applying
them once.

`refund.created`, `refund.updated`, `refund.failed` carry one Refund; `charge.refunded` carries
the Charge: since API version 2022-11-15 with only the total refunded (`amount_refunded`),
before that with its refunds. A refund moves from pending to succeeded, failed or canceled, and
from succeeded to failed (the money came back), and no other way (shared/refunds.py), so events
in any order and any number of copies end in the same record.

A dispute's own status says what it means, whichever event carries it: open (an inquiry,
`warning_*`, or a chargeback) makes a paid ride `disputed`; `won`, `prevented` and an inquiry's
`warning_closed` give it back its status before the dispute; `lost` makes it `dispute_lost`.
An event about a charge this system never made is acknowledged (`unknown_payment`), never
refused: 400 is only for a bad signature or body.

An event changes nothing unless it matches the ride (matching.py): its currencies are the
ride's, the PaymentIntent it names is the ride's, a charge is of the ride's amount, a dispute
of no more, and a refund is of the amount reserved for it or, made outside this system, keeps
`amountRefunded` within the charge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from services.webhook.events import (
    DISPUTE_EVENT_TYPES,
    REFUND_EVENT_TYPES,
    Charged,
    StripeEvent,
)
from services.webhook.fields import (
    amount_of,
    currency_of,
    id_of,
    metadata_identifier,
    required_id,
    ride_id_of,
    text_of,
)
from services.webhook.matching import charge_mismatch, intent_mismatch, refuse
from services.webhook.status_changes import Applied, Result
from shared.processed_events import ProcessedEvents
from shared.refund_model import RefundStatus
from shared.refunds import (
    DISPUTE_OUTCOMES,
    ChargeRefunded,
    RefundBook,
    RefundUpdate,
    refund_problem,
)
from shared.retry import is_transient
from shared.store import Document, Payment, PaymentStore

logger = logging.getLogger(__name__)

# Stripe's statuses of a dispute still open: an inquiry's (`warning_*`) and a chargeback's.
DISPUTE_OPEN = frozenset(
    {"warning_needs_response", "warning_under_review", "needs_response", "under_review"}
)


@dataclass(frozen=True, slots=True)
class MoneyBackChange:
    """What one refund or dispute event asks of a payment, and the ways to find it."""

    event_id: str
    event_type: str
    ride_id: str | None
    selectors: list[Document]
    refunds: tuple[RefundUpdate, ...] = ()
    dispute_id: str | None = None
    dispute_status: str | None = None  # Stripe's (`needs_response`, `warning_closed`, ...)
    charge_refunded: ChargeRefunded | None = None  # a charge.refunded without its refunds
    # What it says of the money, held against the ride:
    currencies: tuple[str | None, ...] = ()  # of the charge, refund or dispute
    payment_intents: tuple[str, ...] = ()
    charged: Charged | None = None  # charge.refunded: the charge itself
    disputed: int | None = None


def interpret_money_back(event: StripeEvent) -> MoneyBackChange | None:
    """The change a refund or dispute event means; None for any other event type. One that
    names neither a ride nor a PaymentIntent (a charge this system did not make) has no
    selectors: no payment is found for it."""
    if event.type in REFUND_EVENT_TYPES:
        return _refund_change(event)
    if event.type in DISPUTE_EVENT_TYPES:
        return _dispute_change(event)
    return None


def _refund_change(event: StripeEvent) -> MoneyBackChange:
    source = f"webhook:{event.type}"
    resource = event.resource
    refunds: list[dict[str, Any]] = [resource]
    charged: Charged | None = None
    charge_refunded: ChargeRefunded | None = None
    if event.type == "charge.refunded":
        charged = Charged(amount_of(resource, "amount"), currency_of(resource))
        listed = resource.get("refunds")
        if listed is None:  # as Stripe sends it since API version 2022-11-15
            refunds, charge_refunded = [], _charge_refunded(resource, event.id, source)
        else:
            data = listed.get("data") if isinstance(listed, dict) else None
            refunds = [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []
    ride_id = ride_id_of(resource)
    return MoneyBackChange(
        event.id,
        event.type,
        ride_id,
        _selectors(resource, ride_id),
        tuple(_refund_update(refund, event.id, source) for refund in refunds),
        currencies=tuple(currency_of(item) for item in [resource, *refunds]),
        payment_intents=_payment_intents(resource, *refunds),
        charged=charged,
        charge_refunded=charge_refunded,
    )


def _charge_refunded(charge: dict[str, Any], event_id: str, source: str) -> ChargeRefunded | None:
    total = amount_of(charge, "amount_refunded")
    if total is None:
        return None  # says nothing of the money: nothing to settle
    return ChargeRefunded(required_id(charge, "id"), total, source, event_id)


def _refund_update(refund: dict[str, Any], event_id: str, source: str) -> RefundUpdate:
    status = refund.get("status")
    return RefundUpdate(
        status=RefundStatus.from_stripe(status if isinstance(status, str) else ""),
        source=source,
        refund_id=metadata_identifier(refund, "refundId"),
        stripe_refund_id=required_id(refund, "id"),
        amount=amount_of(refund, "amount"),
        failure_reason=text_of(refund, "failure_reason"),
        event_id=event_id,
    )


def _dispute_change(event: StripeEvent) -> MoneyBackChange:
    dispute = event.resource
    # Read, not judged: what a status means is decided once the ride is found (_apply_dispute).
    status = text_of(dispute, "status")
    ride_id = ride_id_of(dispute)
    return MoneyBackChange(
        event.id,
        event.type,
        ride_id,
        _selectors(dispute, ride_id),
        dispute_id=required_id(dispute, "id"),
        dispute_status=status,
        currencies=(currency_of(dispute),),
        payment_intents=_payment_intents(dispute),
        disputed=amount_of(dispute, "amount"),
    )


def _selectors(resource: dict[str, Any], ride_id: str | None) -> list[Document]:
    selectors: list[Document] = [{"rideId": ride_id}] if ride_id else []
    intent_id = id_of(resource, "payment_intent")
    if intent_id:
        selectors.append({"paymentIntentId": intent_id})
    return selectors


def _payment_intents(*resources: dict[str, Any]) -> tuple[str, ...]:
    named = (id_of(resource, "payment_intent") for resource in resources)
    return tuple(intent for intent in named if intent is not None)


def money_back_mismatch(change: MoneyBackChange, document: Document) -> str | None:
    """Why the event cannot be about this record, None when it can."""
    payment = Payment.from_document(document)
    for currency in change.currencies:
        if currency != payment.currency:
            return f"it is in {currency or 'no currency'}; the ride in {payment.currency}"
    for intent in change.payment_intents:
        if (mismatch := intent_mismatch(intent, payment.payment_intent_id)) is not None:
            return mismatch
    if change.charged is not None and (mismatch := charge_mismatch(change.charged, payment)):
        return mismatch
    if change.dispute_id is not None and not 0 < (change.disputed or 0) <= payment.amount:
        return f"it disputes {change.disputed}; the ride's charge is {payment.amount}"
    return next(filter(None, (refund_problem(document, r) for r in change.refunds)), None)


async def apply_money_back(
    store: PaymentStore, processed: ProcessedEvents, change: MoneyBackChange
) -> Applied:
    """The event, applied once: a repeat of a handled event id changes nothing."""
    if await processed.contains(change.event_id):
        return Applied(Result.DUPLICATE, None)
    document = await _find(store, change.selectors)
    if document is None:
        return Applied(Result.UNKNOWN_PAYMENT, None)
    existing = Payment.from_document(document)
    applied = await _apply_if_it_matches(RefundBook(store), change, document, existing)
    try:
        await processed.add(
            change.event_id, change.event_type, existing.ride_id, applied.result.value
        )
    except Exception as error:  # best effort, as for status events: the record is stored
        if not is_transient(error):
            raise
    return applied


async def _apply_if_it_matches(
    book: RefundBook, change: MoneyBackChange, document: Document, existing: Payment
) -> Applied:
    mismatch = money_back_mismatch(change, document)
    if mismatch is not None:
        refuse(change.event_type, change.event_id, existing.ride_id, mismatch)
        return Applied(Result.MISMATCHED, existing)
    changed = await _apply(book, change)
    return Applied(Result.APPLIED, changed) if changed else Applied(Result.UNCHANGED, existing)


async def _apply(book: RefundBook, change: MoneyBackChange) -> Payment | None:
    if change.dispute_id is not None:
        return await _apply_dispute(book, change, change.dispute_id)
    if change.charge_refunded is not None:
        return await book.settle_charge(change.selectors, change.charge_refunded)
    changed: Payment | None = None
    for refund in change.refunds:
        changed = await book.settle(change.selectors, refund) or changed
    return changed


async def _apply_dispute(
    book: RefundBook, change: MoneyBackChange, dispute_id: str
) -> Payment | None:
    source, status = f"webhook:{change.event_type}", change.dispute_status
    if status in DISPUTE_OUTCOMES:
        return await book.close_dispute(
            change.selectors, dispute_id, status, change.event_id, source
        )
    if status in DISPUTE_OPEN or change.event_type == "charge.dispute.created":
        # A dispute just created is open, whatever status new to us it has.
        return await book.open_dispute(change.selectors, dispute_id, change.event_id, source)
    logger.warning(
        "a dispute closed with a status this system does not know; nothing changed",
        extra={"eventId": change.event_id, "disputeId": dispute_id, "status": status},
    )
    return None


async def _find(store: PaymentStore, selectors: list[Document]) -> Document | None:
    for selector in selectors:
        document = await store.collection.find_one(selector)
        if document is not None:
            return document
    return None
