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

# How a dispute closes (Stripe's statuses): `lost` takes the money; the others give the ride
# back its status before the dispute: a chargeback won or prevented (stopped before it was
# filed), an inquiry closed (an inquiry never moves money).
DISPUTE_LOST = "lost"
DISPUTE_OUTCOMES = frozenset({"won", DISPUTE_LOST, "warning_closed", "prevented"})
# A refund made outside this system (the Dashboard) has no refundId of ours: its entry's is
# `stripe:` and Stripe's id, or, known only from a charge's total, the charge's id and total.
OUTSIDE_REFUND_PREFIX = "stripe:"

REFUNDS = Counter(
    "payments_refunds_total",
    "Refunds settled, by outcome (succeeded, failed, canceled, failed_after_success)",
    ["outcome"],
)
REFUNDED = Counter(
    "payments_refunded_minor_units_total", "Money refunded, in minor units", ["currency"]
)
DISPUTES = Counter(
    "payments_disputes_total",
    "Dispute changes applied (opened, won, lost, warning_closed, prevented)",
    ["event"],
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
class ChargeRefunded:
    """What a `charge.refunded` without its list of refunds says (API 2022-11-15 on): how much
    of the charge went back in all."""

    charge_id: str
    amount_refunded: int
    source: str
    event_id: str


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

        A refund moves from pending (to succeeded, failed or canceled) and from succeeded to
        failed, no other way: events in any order and any number of copies end in the same
        record.
        """
        return await self._refunds_changed(
            selectors,
            lambda refunds: _settled(refunds, update),
            _Edit({}, update.source, update.event_id),
            last_seen,
        )

    async def settle_charge(
        self, selectors: list[Document], refunded: ChargeRefunded
    ) -> Payment | None:
        """Make the record's refunds add up to what the charge says went back, where the
        difference can be told: none of ours pending (a refund made outside this system), or
        exactly one of ours pending that Stripe knows, of that amount. Anything else waits for
        the refund events, which name each refund."""
        return await self._refunds_changed(
            selectors,
            lambda refunds: _explained(refunds, refunded),
            _Edit({}, refunded.source, refunded.event_id),
        )

    async def _refunds_changed(
        self,
        selectors: list[Document],
        change: Callable[[list[Refund]], list[Refund] | None],
        why: _Edit,
        last_seen: Document | None = None,
    ) -> Payment | None:
        """The refunds as `change` makes them, kept within the charge, on the first record a
        selector finds; the payment when it changed, else None."""

        def decide(document: Document) -> _Edit | None:
            before = refunds_of(document)
            refunds = change(before)
            if refunds is None or not _within_the_charge(before, refunds, document["amount"]):
                return None
            return replace(why, fields=_with_refunds(document, refunds))

        for selector in selectors:
            before, after = await self._change(selector, decide, last_seen)
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
        """`lost`: dispute_lost; `won`, `prevented`, an inquiry's `warning_closed`: back to the
        status before the dispute (with the refunds since) once no other dispute of the ride is
        open. A close that arrives before its open is kept, and the open then ignored."""

        def close(document: Document) -> _Edit | None:
            disputes = list(document.get("disputes", []))
            known = [d for d in disputes if d["disputeId"] == dispute_id]
            if known and known[0]["status"] != "open":
                return None
            disputes = [d for d in disputes if d["disputeId"] != dispute_id]
            disputes.append({"disputeId": dispute_id, "status": outcome, "at": utcnow()})
            fields: Document = {"disputes": disputes}
            status = PaymentStatus(document["status"])
            still_open = any(d["status"] == "open" for d in disputes)
            if outcome == DISPUTE_LOST and status in {*PAID_STATUSES, PaymentStatus.DISPUTED}:
                fields["status"] = PaymentStatus.DISPUTE_LOST
            elif outcome != DISPUTE_LOST and status is PaymentStatus.DISPUTED and not still_open:
                fields["status"] = status_after_refunds(
                    document["amount"], document.get("amountRefunded", 0)
                )
            return _Edit(fields, source, event_id)

        if outcome not in DISPUTE_OUTCOMES:
            raise ValueError(
                f"a dispute closes {', '.join(sorted(DISPUTE_OUTCOMES))}: not {outcome!r}"
            )
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
        earlier = was.get(refund.refund_id)
        if refund.status is not RefundStatus.PENDING and earlier in (None, RefundStatus.PENDING):
            REFUNDS.labels(refund.status.value).inc()
            if refund.status is RefundStatus.SUCCEEDED:
                REFUNDED.labels(currency).inc(refund.amount)
        elif refund.status is RefundStatus.FAILED and earlier is RefundStatus.SUCCEEDED:
            REFUNDS.labels("failed_after_success").inc()


def refunds_of(document: Document) -> list[Refund]:
    return [Refund.from_entry(entry) for entry in document.get("refunds", [])]


def refund_problem(document: Document, update: RefundUpdate) -> str | None:
    """Why what Stripe says about a refund cannot be true of this record, None when it can be:
    a refund of another amount than the one reserved for it, or one that would take back more
    than was charged."""
    refunds = refunds_of(document)
    known = next((r for r in refunds if _is(r, update)), None)
    if known is not None and update.amount is not None and update.amount != known.amount:
        return f"the refund is of {update.amount}; {known.amount} was reserved for it"
    settled = _settled(refunds, update)
    if settled is not None and not _within_the_charge(refunds, settled, document["amount"]):
        return (
            f"with a refund of {update.amount} the ride's refunds would exceed its charge of "
            f"{document['amount']}"
        )
    return None


def _within_the_charge(before: list[Refund], after: list[Refund], charged: int) -> bool:
    """Whether a change keeps to what the contract allows: no refund it adds outside 1 to the
    charge, and `amountRefunded` (what succeeded) raised no higher than the charge."""
    added = [refund for refund in after if refund not in before]
    refunded = amount_refunded(after)
    return all(0 < r.amount <= charged for r in added) and (
        refunded <= charged or refunded <= amount_refunded(before)
    )


def _is(refund: Refund, update: RefundUpdate) -> bool:
    return refund.refund_id == update.refund_id or (
        update.stripe_refund_id is not None and refund.stripe_refund_id == update.stripe_refund_id
    )


def _index_of(refunds: list[Refund], update: RefundUpdate) -> int | None:
    """Where the refund `update` is about sits in `refunds`: by our id or Stripe's, else, for
    one made outside this system, the entry a charge's total made of its amount, unnamed yet."""
    found = next((i for i, refund in enumerate(refunds) if _is(refund, update)), None)
    if found is None and update.refund_id is None:
        found = next(
            (i for i, r in enumerate(refunds) if _unnamed_outside(r) and r.amount == update.amount),
            None,
        )
    return found


def _unnamed_outside(refund: Refund) -> bool:
    return refund.stripe_refund_id is None and refund.refund_id.startswith(OUTSIDE_REFUND_PREFIX)


def _settled(refunds: list[Refund], update: RefundUpdate) -> list[Refund] | None:
    """The refunds with `update` applied, or None when it changes nothing."""
    index = _index_of(refunds, update)
    if index is not None:
        settled = _moved(refunds[index], update)
        if settled == refunds[index]:
            return None
        return [*refunds[:index], settled, *refunds[index + 1 :]]
    if update.stripe_refund_id is None or update.amount is None:
        return None
    # A refund made outside this system (the Dashboard): it counts all the same.
    refund_id = update.refund_id or f"{OUTSIDE_REFUND_PREFIX}{update.stripe_refund_id}"
    outside = _outside(refund_id, update.stripe_refund_id, update.amount, update.status)
    return [*refunds, replace(outside, failure_reason=update.failure_reason)]


def _outside(
    refund_id: str, stripe_refund_id: str | None, amount: int, status: RefundStatus
) -> Refund:
    now = utcnow()
    return Refund(refund_id, stripe_refund_id, amount, None, status, now, now)


def _explained(refunds: list[Refund], refunded: ChargeRefunded) -> list[Refund] | None:
    """The refunds once they add up to the charge's `amount_refunded`; None when they do
    already, or when the difference cannot be told apart (the refund events will say)."""
    missing = refunded.amount_refunded - amount_refunded(refunds)
    pending = [index for index, r in enumerate(refunds) if r.status is RefundStatus.PENDING]
    if missing <= 0:
        return None
    if not pending:
        refund_id = f"{OUTSIDE_REFUND_PREFIX}{refunded.charge_id}:{refunded.amount_refunded}"
        return [*refunds, _outside(refund_id, None, missing, RefundStatus.SUCCEEDED)]
    if len(pending) != 1:
        return None
    index = pending[0]
    candidate = refunds[index]
    if candidate.stripe_refund_id is None or candidate.amount != missing:
        return None  # not Stripe's yet (ours to create), or not this difference
    settled = replace(candidate, status=RefundStatus.SUCCEEDED, updated_at=utcnow())
    return [*refunds[:index], settled, *refunds[index + 1 :]]


def _moved(refund: Refund, update: RefundUpdate) -> Refund:
    """A refund moves from pending to succeeded, failed or canceled, and from succeeded to
    failed (the money came back to the account); nothing else moves it."""
    moved = refund
    if moved.stripe_refund_id is None and update.stripe_refund_id:
        moved = replace(moved, stripe_refund_id=update.stripe_refund_id)
    if _may_move(moved.status, update.status):
        moved = replace(moved, status=update.status, failure_reason=update.failure_reason)
    return replace(moved, updated_at=utcnow()) if moved != refund else refund


def _may_move(current: RefundStatus, target: RefundStatus) -> bool:
    if current is RefundStatus.PENDING:
        return target is not RefundStatus.PENDING
    return current is RefundStatus.SUCCEEDED and target is RefundStatus.FAILED


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
