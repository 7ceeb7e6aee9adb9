"""Payments in MongoDB: one document per ride, changed only by atomic conditional updates.

Every change bumps `version`; notifications carry it so that the bus can refuse to publish an
older state after a newer one (see shared/bus.py).

Writes are acknowledged by a majority of the replica set, and the scans that act on what they
find (the outbox relay, the reconciler) read majority-committed data, so nothing acted upon can
roll back on a failover. Times that are compared with each other (leases, "quiet for N
minutes") come from one clock, MongoDB's, never from each replica's own.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.read_concern import ReadConcern

from shared.batching import GroupCommit
from shared.model import PaymentStatus, statuses_that_may_become
from shared.status_events import StatusEvent, status_events_of

logger = logging.getLogger(__name__)

Document = dict[str, Any]

DUPLICATE_KEY = 11000


def only_duplicate_keys(error: BulkWriteError) -> bool:
    """Whether every write the bulk request refused was refused as already there."""
    return all(failure["code"] == DUPLICATE_KEY for failure in error.details["writeErrors"])


@dataclass(frozen=True, slots=True)
class Payment:
    ride_id: str
    user_id: str
    amount: int
    currency: str
    status: PaymentStatus
    version: int
    stripe_session_id: str | None
    payment_url: str | None
    payment_intent_id: str | None
    created_at: datetime
    outbox: tuple[StatusEvent, ...] = ()

    @classmethod
    def from_document(cls, document: Document) -> Payment:
        return cls(
            ride_id=document["rideId"],
            user_id=document["userId"],
            amount=document["amount"],
            currency=document["currency"],
            status=PaymentStatus(document["status"]),
            version=document["version"],
            stripe_session_id=document.get("stripeSessionId"),
            payment_url=document.get("paymentUrl"),
            payment_intent_id=document.get("paymentIntentId"),
            created_at=document["createdAt"],
            outbox=tuple(status_events_of(document)),
        )


@dataclass(frozen=True, slots=True)
class StatusChange:
    """Why a status changes: the Stripe event (or reconciliation run) that says so."""

    target: PaymentStatus
    event_id: str
    source: str
    payment_intent_id: str | None = None


def utcnow() -> datetime:
    """Now, at the millisecond precision MongoDB stores, so values read back compare equal."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def public_view(document: Document) -> Document:
    """The record as the HTTP API shows it: JSON-friendly, without internals (`_id`, outbox)."""
    view = {key: value for key, value in document.items() if key not in ("_id", "outbox")}
    for key, value in view.items():
        if isinstance(value, datetime):
            view[key] = value.isoformat()
    view["history"] = [
        {**entry, "at": entry["at"].isoformat()} for entry in document.get("history", [])
    ]
    return view


@dataclass(frozen=True, slots=True)
class _Reservation:
    ride_id: str
    user_id: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class _Attachment:
    reserved: Payment
    session_id: str
    url: str


def _fresh_document(reservation: _Reservation, now: datetime) -> Document:
    return {
        "rideId": reservation.ride_id,
        "userId": reservation.user_id,
        "amount": reservation.amount,
        "currency": reservation.currency,
        "status": PaymentStatus.PENDING.value,
        "version": 1,
        "stripeSessionId": None,
        "paymentUrl": None,
        "paymentIntentId": None,
        "history": [{"status": "pending", "eventId": None, "source": "ride-event", "at": now}],
        "createdAt": now,
        "updatedAt": now,
    }


def _unattached(payment: Payment) -> Document:
    return {"rideId": payment.ride_id, "stripeSessionId": None}


def _attach(attachment: _Attachment) -> Document:
    return {
        "$set": {"stripeSessionId": attachment.session_id, "paymentUrl": attachment.url},
        "$currentDate": {"updatedAt": True},
        "$inc": {"version": 1},
    }


def _attached(attachment: _Attachment) -> Payment:
    return replace(
        attachment.reserved,
        stripe_session_id=attachment.session_id,
        payment_url=attachment.url,
        version=attachment.reserved.version + 1,
    )


def _transition(change: StatusChange) -> list[Document]:
    """The update of a status change, as one pipeline stage: MongoDB's clock stamps it, and its
    status event (written with the change, so that a crash cannot lose it: shared/outbox.py)
    carries the version the change produces."""
    next_version = {"$add": ["$version", 1]}
    assignments: Document = {
        "status": change.target.value,
        "updatedAt": "$$NOW",
        "version": next_version,
        "history": _appended(
            "history",
            {
                "status": change.target.value,
                "eventId": {"$literal": change.event_id},
                "source": {"$literal": change.source},
                "at": "$$NOW",
            },
        ),
        "outbox": _appended(
            "outbox",
            {
                "eventId": f"pst_{uuid.uuid4().hex}",
                "status": change.target.value,
                "version": next_version,
                "at": "$$NOW",
            },
        ),
    }
    if change.payment_intent_id:
        assignments["paymentIntentId"] = {"$literal": change.payment_intent_id}
    return [{"$set": assignments}]


def _appended(array: str, entry: Document) -> Document:
    return {"$concatArrays": [{"$ifNull": [f"${array}", []]}, [entry]]}


class PaymentStore:
    def __init__(self, client: AsyncMongoClient[Document], database: str, collection: str) -> None:
        self._client = client
        self._payments: AsyncCollection[Document] = client[database][collection]
        self._committed = self._payments.with_options(read_concern=ReadConcern("majority"))
        # The consumer reserves and attaches once per ride event: under load, in batches.
        self._reservations = GroupCommit(self._reserve_batch)
        self._attachments = GroupCommit(self._attach_batch)

    @classmethod
    def connect(cls, uri: str, database: str, collection: str) -> PaymentStore:
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            uri, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000, tz_aware=True, w="majority"
        )
        return cls(client, database, collection)

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> None:
        await self._client.admin.command("ping")

    async def ensure_indexes(self) -> None:
        await self._payments.create_index(
            [("rideId", ASCENDING)], unique=True, name="rideId_unique"
        )
        await self._payments.create_index([("stripeSessionId", ASCENDING)], name="stripeSessionId")
        await self._payments.create_index([("paymentIntentId", ASCENDING)], name="paymentIntentId")
        await self._payments.create_index(
            [("status", ASCENDING), ("updatedAt", ASCENDING)], name="status_updatedAt"
        )
        await self._payments.create_index(
            [("status", ASCENDING), ("reconciledAt", ASCENDING)], name="status_reconciledAt"
        )
        await self._payments.create_index(
            [("outbox.eventId", ASCENDING)], name="outbox_eventId", sparse=True
        )

    async def reserve(self, ride_id: str, user_id: str, amount: int, currency: str) -> Payment:
        """The ride's record, created `pending` without a session if it did not exist."""
        return await self._reservations.submit(_Reservation(ride_id, user_id, amount, currency))

    async def attach_session(self, reserved: Payment, session_id: str, url: str) -> Payment:
        """Record the Checkout Session once; a later call returns the record as it is."""
        return await self._attachments.submit(_Attachment(reserved, session_id, url))

    async def _reserve_batch(self, reservations: Sequence[_Reservation]) -> list[Payment]:
        """One upsert request for the batch; only records that existed already are read."""
        now = utcnow()
        fresh = {r.ride_id: _fresh_document(r, now) for r in reservations}
        rides = list(fresh)
        upserts = [
            UpdateOne({"rideId": ride}, {"$setOnInsert": document}, upsert=True)
            for ride, document in fresh.items()
        ]
        try:
            result = await self._payments.bulk_write(upserts, ordered=False)
            inserted = {rides[index] for index in result.upserted_ids or {}}
        except BulkWriteError as error:
            # Another process inserted some of these rides first: they exist, read them.
            if not only_duplicate_keys(error):
                raise
            inserted = {rides[upsert["index"]] for upsert in error.details["upserted"]}
        stored = {ride: Payment.from_document(fresh[ride]) for ride in inserted}
        for ride in fresh.keys() - inserted:
            document = await self._payments.find_one({"rideId": ride})
            if document is None:
                raise LookupError(f"no payment for ride {ride} after reserving it")
            stored[ride] = Payment.from_document(document)
        return [stored[r.ride_id] for r in reservations]

    async def _attach_batch(self, attachments: Sequence[_Attachment]) -> list[Payment]:
        """One request conditional on the versions just read, so the new records are known
        without reading them; a record changed meanwhile takes the slower path alone."""
        updates = [
            UpdateOne(
                _unattached(a.reserved) | {"version": a.reserved.version},
                _attach(a),
            )
            for a in attachments
        ]
        result = await self._payments.bulk_write(updates, ordered=False)
        if result.modified_count == len(updates):
            return [_attached(a) for a in attachments]
        return [await self._attach_changed(a) for a in attachments]

    async def _attach_changed(self, attachment: _Attachment) -> Payment:
        """Attach if still unattached (a no-op when the batch did it), else read the record."""
        ride_id = attachment.reserved.ride_id
        document = await self._payments.find_one_and_update(
            _unattached(attachment.reserved),
            _attach(attachment),
            return_document=ReturnDocument.AFTER,
        ) or await self._payments.find_one({"rideId": ride_id})
        if document is None:
            raise LookupError(f"no payment for ride {ride_id}")
        return Payment.from_document(document)

    async def apply(self, selector: Document, change: StatusChange) -> Payment | None:
        """Move the matching record to `change.target` if the transition is allowed.

        One conditional update: concurrent deliveries cannot both win, an event id already in
        the history is never applied again, and an out-of-order event that is no longer allowed
        changes nothing (all return None).
        """
        allowed_from = [status.value for status in statuses_that_may_become(change.target)]
        document = await self._payments.find_one_and_update(
            {
                **selector,
                "status": {"$in": allowed_from},
                "history.eventId": {"$ne": change.event_id},
            },
            _transition(change),
            return_document=ReturnDocument.AFTER,
        )
        return Payment.from_document(document) if document else None

    async def remember_payment_intent(self, selector: Document, payment_intent_id: str) -> None:
        await self._payments.update_one(
            {**selector, "paymentIntentId": None}, {"$set": {"paymentIntentId": payment_intent_id}}
        )

    async def with_outbox(self, limit: int, quiet_for: timedelta) -> list[Payment]:
        """Payments holding status events not yet relayed, unchanged for `quiet_for` at least,
        oldest change first."""
        quiet_since = await self._ago(quiet_for)
        cursor = self._committed.find(
            {"outbox.eventId": {"$exists": True}, "updatedAt": {"$lte": quiet_since}},
            limit=limit,
            sort=[("updatedAt", ASCENDING)],
        )
        return [Payment.from_document(document) async for document in cursor]

    async def clear_outboxes(self, sent: dict[str, list[str]]) -> None:
        """Remove status events Kafka has acknowledged: ride id -> event ids, in one request."""
        await self._payments.bulk_write(
            [
                UpdateOne({"rideId": ride_id}, {"$pull": {"outbox": {"eventId": {"$in": ids}}}})
                for ride_id, ids in sent.items()
            ],
            ordered=False,
        )

    async def unsettled(self, quiet_for: timedelta, limit: int) -> list[Payment]:
        """Payments still `pending` or `failed` with a session, unchanged for `quiet_for` at
        least; the least recently reconciled first, so that each one gets its turn."""
        cursor = self._committed.find(
            {
                "status": {"$in": [PaymentStatus.PENDING.value, PaymentStatus.FAILED.value]},
                "updatedAt": {"$lte": await self._ago(quiet_for)},
                "stripeSessionId": {"$ne": None},
            },
            limit=limit,
            sort=[("reconciledAt", ASCENDING), ("updatedAt", ASCENDING)],
        )
        return [Payment.from_document(document) async for document in cursor]

    async def mark_reconciled(self, ride_id: str) -> None:
        """Note that the reconciler looked at this payment now (bookkeeping, not a change)."""
        await self._payments.update_one(
            {"rideId": ride_id}, {"$currentDate": {"reconciledAt": True}}
        )

    async def clock(self) -> datetime:
        """MongoDB's time: the one clock that every replica's comparisons use."""
        return await server_time(self._client)

    async def _ago(self, span: timedelta) -> datetime:
        return await self.clock() - span

    async def reserved_without_session(self, changed_before: datetime, limit: int) -> list[Payment]:
        """Payments still `pending` without a Checkout Session, last changed before the cutoff."""
        cursor = self._payments.find(
            {
                "status": PaymentStatus.PENDING.value,
                "updatedAt": {"$lte": changed_before},
                "stripeSessionId": None,
            },
            limit=limit,
            sort=[("updatedAt", ASCENDING)],
        )
        return [Payment.from_document(document) async for document in cursor]

    def lease(self, name: str, owner: str, ttl_s: float) -> Lease:
        return Lease(self._client, self.sibling("leases"), name, owner, ttl_s)

    def sibling(self, name: str) -> AsyncCollection[Document]:
        """Another collection in the payments' database, sharing this store's client."""
        return self._payments.database[name]

    async def find(self, selector: Document) -> Payment | None:
        document = await self._payments.find_one(selector)
        return Payment.from_document(document) if document else None

    async def find_document(self, ride_id: str) -> Document | None:
        return await self._payments.find_one({"rideId": ride_id})


class Lease:
    """A named lease in MongoDB: at most one owner holds it until it expires or is released.

    Expiry is judged by MongoDB's clock, so replicas whose clocks differ still agree.
    """

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        leases: AsyncCollection[Document],
        name: str,
        owner: str,
        ttl_s: float,
    ):
        self._client = client
        self._leases = leases
        self._name = name
        self._owner = owner
        self._ttl = timedelta(seconds=ttl_s)

    async def acquire(self) -> bool:
        """Take the lease if it is free, or extend it if it is ours; False if another holds it."""
        now = await server_time(self._client)
        try:
            held = await self._leases.find_one_and_update(
                {"_id": self._name, "$or": [{"until": {"$lte": now}}, {"owner": self._owner}]},
                {"$set": {"owner": self._owner, "until": now + self._ttl}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False  # another owner holds it: the upsert found no free lease to take
        return held is not None

    async def release(self) -> None:
        await self._leases.update_one(
            {"_id": self._name, "owner": self._owner}, {"$currentDate": {"until": True}}
        )


async def server_time(client: AsyncMongoClient[Document]) -> datetime:
    """The MongoDB server's current time (`hello` reports it)."""
    local_time: datetime = (await client.admin.command("hello"))["localTime"]
    return local_time if local_time.tzinfo else local_time.replace(tzinfo=UTC)
