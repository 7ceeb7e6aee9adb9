"""Giving back money taken twice (duplicate_charges.py records each such charge, `owed`).

Each duplicate is refunded in full at Stripe with idempotency key
`refund-duplicate-<paymentIntentId>`, reason `duplicate` and metadata `rideId`; the rider is told
(`duplicate_charge_refunded`), then the entry gets Stripe's refund id and status. The webhook
that recorded it refunds at once, in the background; should that fail or the process die, the
record still says the refund is owed, and the sweep (every interval, in the replica holding
its lease) refunds what has been owed for longer than a minute. A step repeated after a crash
is harmless: Stripe answers a repeated key with the same refund, and at worst the rider hears
twice. Stripe's later word on the refund (refund.created, refund.updated, refund.failed) is
the duplicate's, applied to its entry here rather than refused as another PaymentIntent's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import timedelta
from typing import Any

from prometheus_client import Gauge
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from services.webhook.duplicate_charges import OWED
from services.webhook.refund_events import MoneyBackChange
from services.webhook.status_changes import Applied, Result
from shared import messages
from shared.bus import NotificationBus
from shared.periodic import PeriodicJob
from shared.processed_events import ProcessedEvents
from shared.refunds import RefundUpdate
from shared.retry import Backoff, is_transient, until_done
from shared.store import Document, Lease, Payment, PaymentStore
from shared.stripe_gateway import PermanentStripeError, RefundCall, StripeGateway

logger = logging.getLogger(__name__)

UNSETTLED = Gauge(
    "payments_duplicate_refunds_unsettled",
    "Duplicate charges not given back: refund owed for over a minute, refused or failed",
)
# A refund Stripe refused (the charge disputed, or refunded by other means): a human decides.
REFUSED = "refused"
NOT_GIVEN_BACK = (REFUSED, "failed", "canceled")
TOLD = ("pending", "succeeded")  # the refund's statuses the rider hears of


class DuplicateRefunds(PeriodicJob):
    name = "duplicate-refunds"

    def __init__(
        self,
        store: PaymentStore,
        gateway: StripeGateway,
        bus: NotificationBus,
        lease: Lease,
        *,
        owed_for_s: float = 60.0,
        batch: int = 100,
    ) -> None:
        self._store = store
        self._payments: AsyncCollection[Document] = store.collection
        self._gateway = gateway
        self._bus = bus
        self._lease = lease
        self._owed_for = timedelta(seconds=owed_for_s)
        self._batch = batch
        self._soon: set[asyncio.Task[None]] = set()

    async def ensure_indexes(self) -> None:
        await self._payments.create_index(
            [("duplicateCharges.refundStatus", ASCENDING)],
            name="duplicateCharges_refundStatus",
            sparse=True,
        )

    def refund_soon(self, payment: Payment) -> None:
        """Refund the ride's owed duplicates now, in the background (the sweep does it
        otherwise)."""
        task = asyncio.create_task(self._refund_quietly(payment.ride_id))
        self._soon.add(task)
        task.add_done_callback(self._soon.discard)

    async def close(self) -> None:
        if self._soon:
            await asyncio.wait(self._soon, timeout=10)

    async def run_once(self) -> int:
        """Refund what has been owed too long; returns how many duplicates were refunded."""
        cutoff = await self._store.clock() - self._owed_for
        UNSETTLED.set(await self._unsettled(cutoff))
        if not await self._lease.acquire():
            return 0
        refunded = 0
        try:
            for ride_id in await self._owed(cutoff):
                refunded += await self._refund_logged(ride_id)
            return refunded
        finally:
            await self._lease.release()

    async def refund_owed(self, ride_id: str) -> int:
        """Refund each duplicate of the ride whose refund is owed; how many there were."""
        document = await self._store.find_document(ride_id)
        if document is None:
            return 0
        owed = [entry for entry in _duplicates(document) if entry["refundStatus"] == OWED]
        for entry in owed:
            await self._refund(document, entry)
        return len(owed)

    async def _refund_quietly(self, ride_id: str) -> None:
        try:
            await until_done(
                functools.partial(self.refund_owed, ride_id),
                what="refunding a duplicate charge",
                backoff=Backoff(first_s=0.5, max_s=10),
                log_extra={"rideId": ride_id},
                attempts=5,
            )
        except Exception as error:
            logger.warning(
                "a duplicate charge's refund is left to the sweep",
                extra={"rideId": ride_id, "error": str(error)},
            )

    async def _refund_logged(self, ride_id: str) -> int:
        try:
            return await self.refund_owed(ride_id)
        except Exception as error:
            logger.warning(
                "could not refund a duplicate charge; trying again next run",
                extra={"rideId": ride_id, "error": str(error)},
            )
            return 0

    async def _refund(self, document: Document, entry: Document) -> None:
        ride, intent = document["rideId"], entry["paymentIntentId"]
        call = RefundCall(ride, f"duplicate-{intent}", intent, entry["amount"], "duplicate")
        try:
            refund = await self._gateway.create_refund(call)
        except PermanentStripeError as refusal:
            logger.error(
                "Stripe refused to refund a duplicate charge: the rider is still charged twice",
                extra={"rideId": ride, "paymentIntentId": intent, "error": str(refusal)},
            )
            await self._settle(
                ride, intent, {"refundStatus": REFUSED, "failureReason": str(refusal)}
            )
            return
        if refund.status in TOLD:
            await self._tell(document, entry)
        await self._settle(
            ride, intent, {"refundStatus": refund.status, "stripeRefundId": refund.id}
        )
        logger.info(
            "duplicate charge refunded",
            extra={"rideId": ride, "paymentIntentId": intent, "stripeRefundId": refund.id},
        )

    async def _tell(self, document: Document, entry: Document) -> None:
        message = messages.duplicate_charge_refunded(
            document["rideId"],
            amount=entry["amount"],
            currency=entry["currency"],
            payment_intent_id=entry["paymentIntentId"],
        )
        await self._bus.publish(document["userId"], message, version=document["version"])

    async def _settle(self, ride_id: str, intent: str, fields: Document) -> None:
        """The entry, while still owed, with `fields` (Stripe's word on its refund)."""
        await self._payments.update_one(
            {
                "rideId": ride_id,
                "duplicateCharges": {
                    "$elemMatch": {"paymentIntentId": intent, "refundStatus": OWED}
                },
            },
            _entry_changed(intent, fields),
        )

    async def _owed(self, cutoff: Any) -> list[str]:
        cursor = self._payments.find(
            {"duplicateCharges": {"$elemMatch": {"refundStatus": OWED, "at": {"$lte": cutoff}}}},
            projection={"rideId": True},
            limit=self._batch,
        )
        return [document["rideId"] async for document in cursor]

    async def _unsettled(self, cutoff: Any) -> int:
        owed = await self._payments.count_documents(
            {"duplicateCharges": {"$elemMatch": {"refundStatus": OWED, "at": {"$lte": cutoff}}}}
        )
        lost = await self._payments.count_documents(
            {"duplicateCharges.refundStatus": {"$in": list(NOT_GIVEN_BACK)}}
        )
        return owed + lost


async def apply_duplicate_refund_event(
    store: PaymentStore, processed: ProcessedEvents, change: MoneyBackChange
) -> Applied | None:
    """A refund event about a duplicate charge's PaymentIntent, applied to that duplicate's
    entry; None when it is about no duplicate charge (refund_events.py applies it then)."""
    if change.dispute_id is not None or not change.payment_intents:
        return None
    intents = list(change.payment_intents)
    document = await store.collection.find_one(
        {"duplicateCharges.paymentIntentId": {"$in": intents}}
    )
    if document is None:
        return None
    if await processed.contains(change.event_id):
        return Applied(Result.DUPLICATE, None)
    changed = False
    for update in change.refunds:
        changed = await _note_refund(store, document, update) or changed
    await _record(processed, change, document["rideId"], changed)
    after = await store.find({"rideId": document["rideId"]})
    return Applied(Result.APPLIED if changed else Result.UNCHANGED, after)


async def _note_refund(store: PaymentStore, document: Document, update: RefundUpdate) -> bool:
    """Stripe's status of the duplicate's refund on its entry; whether it changed."""
    entry = next((e for e in _duplicates(document) if _is_refund_of(e, update)), None)
    status = update.status.value
    if entry is None or update.stripe_refund_id is None or entry["refundStatus"] == status:
        return False
    if status == "pending" and entry["refundStatus"] != OWED:
        return False  # an older word than the one the entry holds
    if status in NOT_GIVEN_BACK:
        logger.error(
            "the refund of a duplicate charge failed: the rider is still charged twice",
            extra={"rideId": document["rideId"], "paymentIntentId": entry["paymentIntentId"]},
        )
    result = await store.collection.update_one(
        {
            "rideId": document["rideId"],
            "duplicateCharges": {
                "$elemMatch": {
                    "paymentIntentId": entry["paymentIntentId"],
                    "refundStatus": entry["refundStatus"],
                }
            },
        },
        _entry_changed(
            entry["paymentIntentId"],
            {"refundStatus": status, "stripeRefundId": update.stripe_refund_id},
        ),
    )
    return result.modified_count > 0


def _is_refund_of(entry: Document, update: RefundUpdate) -> bool:
    if entry["stripeRefundId"] is not None:
        return bool(entry["stripeRefundId"] == update.stripe_refund_id)
    return update.refund_id == f"duplicate-{entry['paymentIntentId']}"


async def _record(
    processed: ProcessedEvents, change: MoneyBackChange, ride_id: str, changed: bool
) -> None:
    result = Result.APPLIED if changed else Result.UNCHANGED
    try:
        await processed.add(change.event_id, change.event_type, ride_id, result.value)
    except Exception as error:  # best effort, as for every event: the record is stored
        if not is_transient(error):
            raise


def _duplicates(document: Document | None) -> list[Document]:
    return list(document.get("duplicateCharges", [])) if document else []


def _entry_changed(intent: str, fields: Document) -> list[Document]:
    """One pipeline stage: the duplicate charge of `intent` with `fields`, a new version."""
    literal = {name: {"$literal": value} for name, value in fields.items()}
    return [
        {
            "$set": {
                "version": {"$add": ["$version", 1]},
                "updatedAt": "$$NOW",
                "duplicateCharges": {
                    "$map": {
                        "input": "$duplicateCharges",
                        "as": "charge",
                        "in": {
                            "$cond": [
                                {"$eq": ["$$charge.paymentIntentId", {"$literal": intent}]},
                                {"$mergeObjects": ["$$charge", literal]},
                                "$$charge",
                            ]
                        },
                    }
                },
            }
        }
    ]
