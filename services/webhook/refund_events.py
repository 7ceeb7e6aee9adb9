"""Money going back: what Stripe's refund and dispute events mean for a payment, and applying
them once.

`refund.created`, `refund.updated`, `refund.failed` carry one Refund; `charge.refunded` carries
the Charge with its refunds. Each refund moves from pending to succeeded, failed or canceled
only (shared/refunds.py), so events in any order and any number of copies end in the same
record. `charge.dispute.created` makes a paid ride `disputed`; `charge.dispute.closed` returns
it to the status before the dispute when won, and makes it `dispute_lost` when lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.webhook.events import (
    DISPUTE_EVENT_TYPES,
    REFUND_EVENT_TYPES,
    MalformedEvent,
    StripeEvent,
    _required_string,
    _ride_id,
    _string,
)
from services.webhook.status_changes import Applied, Result
from shared.processed_events import ProcessedEvents
from shared.refund_model import RefundStatus
from shared.refunds import RefundBook, RefundUpdate
from shared.retry import is_transient
from shared.store import Document, Payment, PaymentStore


@dataclass(frozen=True, slots=True)
class MoneyBackChange:
    """What one refund or dispute event asks of a payment, and the ways to find it."""

    event_id: str
    event_type: str
    ride_id: str | None
    selectors: list[Document]
    refunds: tuple[RefundUpdate, ...] = ()
    dispute_id: str | None = None
    dispute_status: str | None = None  # `open`, `won` or `lost`


def interpret_money_back(event: StripeEvent) -> MoneyBackChange | None:
    """The change a refund or dispute event means; None for any other event type, and for
    one that names neither a ride nor a PaymentIntent (a charge this system did not make)."""
    if event.type in REFUND_EVENT_TYPES:
        change = _refund_change(event)
    elif event.type in DISPUTE_EVENT_TYPES:
        change = _dispute_change(event)
    else:
        return None
    return change if change.selectors else None


def _refund_change(event: StripeEvent) -> MoneyBackChange:
    source = f"webhook:{event.type}"
    if event.type == "charge.refunded":
        listed = event.resource.get("refunds")
        data = listed.get("data") if isinstance(listed, dict) else None
        refunds = [_refund_update(r, event.id, source) for r in data or [] if isinstance(r, dict)]
    else:
        refunds = [_refund_update(event.resource, event.id, source)]
    ride_id = _ride_id(event.resource)
    return MoneyBackChange(
        event.id, event.type, ride_id, _selectors(event.resource, ride_id), tuple(refunds)
    )


def _refund_update(refund: dict[str, Any], event_id: str, source: str) -> RefundUpdate:
    amount = refund.get("amount")
    metadata = refund.get("metadata")
    return RefundUpdate(
        status=RefundStatus.from_stripe(str(refund.get("status"))),
        source=source,
        refund_id=_string(metadata.get("refundId")) if isinstance(metadata, dict) else None,
        stripe_refund_id=_required_string(refund, "id"),
        amount=amount if isinstance(amount, int) and not isinstance(amount, bool) else None,
        failure_reason=_string(refund.get("failure_reason")),
        event_id=event_id,
    )


def _dispute_change(event: StripeEvent) -> MoneyBackChange:
    dispute = event.resource
    status = "open"
    if event.type == "charge.dispute.closed":
        status = str(dispute.get("status"))
        if status not in ("won", "lost"):
            raise MalformedEvent(f"a closed dispute is won or lost, not {status[:40]!r}")
    ride_id = _ride_id(dispute)
    return MoneyBackChange(
        event.id,
        event.type,
        ride_id,
        _selectors(dispute, ride_id),
        dispute_id=_required_string(dispute, "id"),
        dispute_status=status,
    )


def _selectors(resource: dict[str, Any], ride_id: str | None) -> list[Document]:
    selectors: list[Document] = [{"rideId": ride_id}] if ride_id else []
    intent_id = _string(resource.get("payment_intent"))
    if intent_id:
        selectors.append({"paymentIntentId": intent_id})
    return selectors


async def apply_money_back(
    store: PaymentStore, processed: ProcessedEvents, change: MoneyBackChange
) -> Applied:
    """The event, applied once: a repeat of a handled event id changes nothing."""
    if await processed.contains(change.event_id):
        return Applied(Result.DUPLICATE, None)
    existing = await _find(store, change.selectors)
    if existing is None:
        return Applied(Result.UNKNOWN_PAYMENT, None)
    changed = await _apply(RefundBook(store), change)
    applied = Applied(Result.APPLIED, changed) if changed else Applied(Result.UNCHANGED, existing)
    try:
        await processed.add(
            change.event_id, change.event_type, existing.ride_id, applied.result.value
        )
    except Exception as error:  # best effort, as for status events: the record is stored
        if not is_transient(error):
            raise
    return applied


async def _apply(book: RefundBook, change: MoneyBackChange) -> Payment | None:
    source = f"webhook:{change.event_type}"
    if change.dispute_id is not None and change.dispute_status == "open":
        return await book.open_dispute(change.selectors, change.dispute_id, change.event_id, source)
    if change.dispute_id is not None and change.dispute_status is not None:
        return await book.close_dispute(
            change.selectors, change.dispute_id, change.dispute_status, change.event_id, source
        )
    changed: Payment | None = None
    for refund in change.refunds:
        changed = await book.settle(change.selectors, refund) or changed
    return changed


async def _find(store: PaymentStore, selectors: list[Document]) -> Payment | None:
    for selector in selectors:
        payment = await store.find(selector)
        if payment is not None:
            return payment
    return None
