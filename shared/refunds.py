"""Refunds and disputes on the payment record, changed only by atomic conditional updates.

Each change reads the record, decides in pure logic what it becomes, and writes it with one
update conditional on the version it read: a concurrent change makes the update miss, and the
decision is taken again on the newer record. So the amount reserved for a refund is checked
against the charge and every other pending or succeeded refund of the same version: twenty
refunds racing for one ride can never together exceed its charge.

Every change bumps `version`. A change the rider or the platform can see (the status, or
`amountRefunded`) also appends its status event to the payment's outbox in the same update,
exactly as PaymentStore.apply does, so the relay (shared/outbox.py) tells the rider and Kafka.
Bookkeeping (a reservation, a Stripe id, a failed refund's release) changes neither, and is not
announced: a rider never sees the same state twice.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from prometheus_client import Counter
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from shared.model import PAID_STATUSES, PaymentStatus, status_after_refunds
from shared.refund_model import (
    Refund,
    RefundRefused,
    RefundRequest,
    RefundStatus,
    amount_refunded,
    amount_to_refund,
)
from shared.store import Document, Payment, PaymentStore, utcnow

DISPUTE_OUTCOMES = frozenset({"won", "lost"})

REFUNDS = Counter(
    "payments_refunds_total",
    "Refunds settled, by outcome (succeeded, failed, canceled)",
    ["outcome"],
)
REFUNDED = Counter(
    "payments_refunded_minor_units_total", "Money refunded, in minor units", ["currency"]
)
DISPUTES = Counter(
    "payments_disputes_total", "Dispute changes applied (opened, won, lost)", ["event"]
)


@dataclass(frozen=True, slots=True)
class Reservation:
    """A refund's entry on the record, reserved now or by an earlier delivery."""

    payment: Payment
    refund: Refund
    record: Document  # as it was read or written: the next change starts from it


@dataclass(frozen=True, slots=True)
class RefundUpdate:
    """What Stripe says about one refund (an event, an API answer, or the reconciler)."""

    status: RefundStatus
    source: str
    refund_id: str | None = None
    stripe_refund_id: str | None = None
    amount: int | None = None
    failure_reason: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Edit:
    fields: Document
    source: str
    event_id: str | None = None


Decision = Callable[[Document], _Edit | None]


class RefundBook:
    def __init__(self, store: PaymentStore) -> None:
        self._store = store
        self._payments: AsyncCollection[Document] = store.collection

    async def ensure_indexes(self) -> None:
        await self._payments.create_index(
            [("refunds.status", ASCENDING), ("updatedAt", ASCENDING)],
            name="refunds_status_updatedAt",
            sparse=True,
        )

    async def reserve(self, request: RefundRequest) -> Reservation:
        """The request's refund on the record: reserved now (refused with a reason when the
        ride is unknown, not paid, or has not that much left), or as an earlier delivery left it."""

        def reserve(document: Document) -> _Edit | None:
            refunds = refunds_of(document)
            if any(refund.refund_id == request.refund_id for refund in refunds):
                return None
            amount = amount_to_refund(
                PaymentStatus(document["status"]),
                document["amount"],
                document["currency"],
                refunds,
                request.amount,
            )
            now = utcnow()
            entry = Refund(
                request.refund_id, None, amount, request.reason, RefundStatus.PENDING, now, now
            )
            return _Edit(_with_refunds(document, [*refunds, entry]), source="refund-request")

        before, after = await self._change({"rideId": request.ride_id}, reserve)
        document = after or before
        if document is None:
            raise RefundRefused("unknown ride: no payment for it")
        [refund] = [r for r in refunds_of(document) if r.refund_id == request.refund_id]
        return Reservation(Payment.from_document(document), refund, document)

    async def settle(
        self, selectors: list[Document], update: RefundUpdate, last_seen: Document | None = None
    ) -> Payment | None:
        """Apply what Stripe says about a refund; the payment when it changed, else None.
        `last_seen`, a recent read of the record, saves reading it again when still current.

        A refund moves only from pending (to succeeded, failed or canceled): events in any
        order and any number of copies end in the same record.
        """

        def settle(document: Document) -> _Edit | None:
            refunds = _settled(refunds_of(document), update)
            if refunds is None:
                return None
            return _Edit(_with_refunds(document, refunds), update.source, update.event_id)

        for selector in selectors:
            before, after = await self._change(selector, settle, last_seen)
            if before is not None:
                if after is not None:
                    _count_settled(refunds_of(before), refunds_of(after), after["currency"])
                return Payment.from_document(after) if after else None
        return None

    async def open_dispute(
        self, selectors: list[Document], dispute_id: str, event_id: str, source: str
    ) -> Payment | None:
        def open_(document: Document) -> _Edit | None:
            disputes = list(document.get("disputes", []))
            if any(dispute["disputeId"] == dispute_id for dispute in disputes):
                return None  # already open, or closed before this event arrived
            disputes.append({"disputeId": dispute_id, "status": "open", "at": utcnow()})
            fields: Document = {"disputes": disputes}
            status = PaymentStatus(document["status"])
            if status in PAID_STATUSES:
                fields |= {"status": PaymentStatus.DISPUTED, "statusBeforeDispute": status}
            return _Edit(fields, source, event_id)

        payment = await self._first_change(selectors, open_)
        if payment is not None:
            DISPUTES.labels("opened").inc()
        return payment

    async def close_dispute(
        self, selectors: list[Document], dispute_id: str, outcome: str, event_id: str, source: str
    ) -> Payment | None:
        """`won`: back to the status before the dispute (with the refunds since); `lost`:
        dispute_lost. A close that arrives before its open is kept, and the open then ignored."""

        def close(document: Document) -> _Edit | None:
            disputes = list(document.get("disputes", []))
            known = [d for d in disputes if d["disputeId"] == dispute_id]
            if known and known[0]["status"] != "open":
                return None
            disputes = [d for d in disputes if d["disputeId"] != dispute_id]
            disputes.append({"disputeId": dispute_id, "status": outcome, "at": utcnow()})
            fields: Document = {"disputes": disputes}
            status = PaymentStatus(document["status"])
            if outcome == "lost" and status in {*PAID_STATUSES, PaymentStatus.DISPUTED}:
                fields["status"] = PaymentStatus.DISPUTE_LOST
            elif outcome == "won" and status is PaymentStatus.DISPUTED:
                fields["status"] = status_after_refunds(
                    document["amount"], document.get("amountRefunded", 0)
                )
            return _Edit(fields, source, event_id)

        if outcome not in DISPUTE_OUTCOMES:
            raise ValueError(f"a dispute closes won or lost, not {outcome!r}")
        payment = await self._first_change(selectors, close)
        if payment is not None:
            DISPUTES.labels(outcome).inc()
        return payment

    async def with_pending_refunds(self, quiet_for: timedelta, limit: int) -> list[Document]:
        """Payments with a refund Stripe knows of still pending, unchanged for `quiet_for`."""
        cutoff = await self._store.clock() - quiet_for
        cursor = self._payments.find(
            {
                "refunds": {"$elemMatch": {"status": "pending", "stripeRefundId": {"$ne": None}}},
                "updatedAt": {"$lte": cutoff},
            },
            limit=limit,
            sort=[("updatedAt", ASCENDING)],
        )
        return [document async for document in cursor]

    async def count_with_status(self, status: PaymentStatus) -> int:
        return await self._payments.count_documents({"status": status.value})

    async def _first_change(self, selectors: list[Document], decide: Decision) -> Payment | None:
        for selector in selectors:
            before, after = await self._change(selector, decide)
            if before is not None:
                return Payment.from_document(after) if after else None
        return None

    async def _change(
        self, selector: Document, decide: Decision, last_seen: Document | None = None
    ) -> tuple[Document | None, Document | None]:
        """The record `decide` saw (None if no record matches) and the record after its edit
        (None when it decided to change nothing). The edit is written only onto the version
        it was decided on."""
        while True:
            recent, last_seen = last_seen, None
            document = recent or await self._payments.find_one(selector)
            if document is None:
                return None, None
            edit = decide(document)
            if edit is None:
                if recent is not None:
                    continue  # decided on a copy: only the stored record can say "nothing"
                return document, None
            changed = await self._payments.find_one_and_update(
                {"_id": document["_id"], "version": document["version"]},
                _update(document, edit),
                return_document=ReturnDocument.AFTER,
            )
            if changed is not None:
                return document, changed
            await asyncio.sleep(random.uniform(0, 0.05))  # lost a race: decide again


def _count_settled(before: list[Refund], after: list[Refund], currency: str) -> None:
    """Metrics of the refunds one change settled."""
    was = {r.refund_id: r.status for r in before}
    for refund in after:
        if refund.status is not RefundStatus.PENDING and was.get(refund.refund_id) in (
            None,
            RefundStatus.PENDING,
        ):
            REFUNDS.labels(refund.status.value).inc()
            if refund.status is RefundStatus.SUCCEEDED:
                REFUNDED.labels(currency).inc(refund.amount)


def refunds_of(document: Document) -> list[Refund]:
    return [Refund.from_entry(entry) for entry in document.get("refunds", [])]


def _settled(refunds: list[Refund], update: RefundUpdate) -> list[Refund] | None:
    """The refunds with `update` applied, or None when it changes nothing."""
    for index, refund in enumerate(refunds):
        if refund.refund_id == update.refund_id or (
            update.stripe_refund_id and refund.stripe_refund_id == update.stripe_refund_id
        ):
            settled = _moved(refund, update)
            if settled == refund:
                return None
            return [*refunds[:index], settled, *refunds[index + 1 :]]
    if update.stripe_refund_id is None or update.amount is None:
        return None
    # A refund made outside this system (the Dashboard): it counts all the same.
    now = utcnow()
    outside = Refund(
        update.refund_id or f"stripe:{update.stripe_refund_id}",
        update.stripe_refund_id,
        update.amount,
        None,
        update.status,
        now,
        now,
        update.failure_reason,
    )
    return [*refunds, outside]


def _moved(refund: Refund, update: RefundUpdate) -> Refund:
    moved = refund
    if moved.stripe_refund_id is None and update.stripe_refund_id:
        moved = replace(moved, stripe_refund_id=update.stripe_refund_id)
    if moved.status is RefundStatus.PENDING and update.status is not RefundStatus.PENDING:
        moved = replace(moved, status=update.status, failure_reason=update.failure_reason)
    return replace(moved, updated_at=utcnow()) if moved != refund else refund


def _with_refunds(document: Document, refunds: list[Refund]) -> Document:
    """The fields that follow from a new list of refunds: the sum refunded, and the status
    (or, while disputed, the status the ride returns to when the dispute is won)."""
    refunded = amount_refunded(refunds)
    fields: Document = {"refunds": [r.entry() for r in refunds], "amountRefunded": refunded}
    status = PaymentStatus(document["status"])
    if status in PAID_STATUSES:
        fields["status"] = status_after_refunds(document["amount"], refunded)
    elif status is PaymentStatus.DISPUTED:
        fields["statusBeforeDispute"] = status_after_refunds(document["amount"], refunded)
    return fields


def _update(document: Document, edit: _Edit) -> list[Document]:
    """One pipeline stage, as PaymentStore's transitions: MongoDB's clock stamps it, and a
    visible change carries its status event, with the version it produces, in the outbox."""
    version = document["version"] + 1
    fields = {key: _stored(value) for key, value in edit.fields.items()}
    assignments: Document = {
        **{key: {"$literal": value} for key, value in fields.items()},
        "updatedAt": "$$NOW",
        "version": version,
    }
    status = fields.get("status", document["status"])
    refunded = fields.get("amountRefunded", document.get("amountRefunded", 0))
    if status != document["status"] or refunded != document.get("amountRefunded", 0):
        assignments["history"] = _appended(
            "history",
            {
                "status": status,
                "eventId": {"$literal": edit.event_id},
                "source": {"$literal": edit.source},
                "at": "$$NOW",
            },
        )
        assignments["outbox"] = _appended(
            "outbox",
            {
                "eventId": f"pst_{uuid.uuid4().hex}",
                "status": status,
                "version": version,
                "amountRefunded": refunded,
                "at": "$$NOW",
            },
        )
    return [{"$set": assignments}]


def _stored(value: Any) -> Any:
    return value.value if isinstance(value, PaymentStatus) else value


def _appended(array: str, entry: Document) -> Document:
    return {"$concatArrays": [{"$ifNull": [f"${array}", []]}, [entry]]}
