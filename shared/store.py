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
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.read_concern import ReadConcern

from shared.batching import GroupCommit
from shared.model import OWED_STATUSES, UNPAID_STATUSES, PaymentStatus, statuses_that_may_become
from shared.status_events import StatusEvent, status_events_of

logger = logging.getLogger(__name__)

Document = dict[str, Any]

DUPLICATE_KEY = 11000

OUTSTANDING_INDEX = "userId_status_createdAt"
OUTSTANDING_FIELDS = {
    "_id": False,
    **{
        field: True
        for field in (
            "rideId", "amount", "currency", "status", "attempt", "attempts", "paymentUrl",
            "createdAt",
        )
    },
}  # fmt: skip


def only_duplicate_keys(error: BulkWriteError) -> bool:
    """Whether every write the bulk request refused was refused as already there."""
    return all(failure["code"] == DUPLICATE_KEY for failure in error.details["writeErrors"])


@dataclass(frozen=True, slots=True)
class Attempt:
    """One Checkout Session of a ride's payment; a ride may need several, one after another."""

    attempt: int
    stripe_session_id: str
    payment_url: str | None
    expires_at: datetime | None
    status: PaymentStatus
    created_at: datetime
    # A delayed payment method (a bank debit) completed the session: `processing`, then how it
    # ended. Such a session can never be paid again.
    async_payment: PaymentStatus | None = None

    @classmethod
    def from_entry(cls, entry: Document) -> Attempt:
        async_payment = entry.get("asyncPayment")
        return cls(
            attempt=entry["attempt"],
            stripe_session_id=entry["stripeSessionId"],
            payment_url=entry.get("paymentUrl"),
            expires_at=entry.get("expiresAt"),
            status=PaymentStatus(entry["status"]),
            created_at=entry["createdAt"],
            async_payment=PaymentStatus(async_payment) if async_payment else None,
        )

    @property
    def session_completed(self) -> bool:
        """Whether its session completed without the money (a delayed payment): it cannot be
        paid again, whatever its `expires_at`."""
        return self.async_payment is not None


def attempt_entry(
    number: int, session_id: str, url: str, expires_at: datetime | None, now: datetime
) -> Document:
    return {
        "attempt": number,
        "stripeSessionId": session_id,
        "paymentUrl": url,
        "expiresAt": expires_at,
        "status": PaymentStatus.PENDING.value,
        "createdAt": now,
    }


# What Stripe may say of a delayed payment, and what each may follow on an attempt: its
# outcome is kept once known, so a late completion never makes it `processing` again.
ASYNC_PAYMENT_FOLLOWS: dict[PaymentStatus, list[PaymentStatus | None]] = {
    PaymentStatus.PROCESSING: [None],
    PaymentStatus.SUCCEEDED: [None, PaymentStatus.PROCESSING],
    PaymentStatus.FAILED: [None, PaymentStatus.PROCESSING],
}


def async_payment_unsettled(session_id: str) -> Document:
    """Records whose attempt of `session_id` has no known delayed-payment outcome (a filter)."""
    settled = [PaymentStatus.SUCCEEDED.value, PaymentStatus.FAILED.value]
    return {
        "attempts": {
            "$not": {
                "$elemMatch": {"stripeSessionId": session_id, "asyncPayment": {"$in": settled}}
            }
        }
    }


def _may_precede(state: PaymentStatus) -> list[str | None]:
    return [None if value is None else value.value for value in ASYNC_PAYMENT_FOLLOWS[state]]


def _async_payment_noted(session_id: str, state: PaymentStatus) -> list[Document]:
    """The attempt of `session_id` with `asyncPayment` set to `state`, where it may follow."""
    return [
        {
            "$set": {
                "attempts": {
                    "$map": {
                        "input": {"$ifNull": ["$attempts", []]},
                        "as": "entry",
                        "in": {
                            "$cond": [
                                {
                                    "$and": [
                                        {
                                            "$eq": [
                                                "$$entry.stripeSessionId",
                                                {"$literal": session_id},
                                            ]
                                        },
                                        {
                                            "$in": [
                                                {"$ifNull": ["$$entry.asyncPayment", None]},
                                                _may_precede(state),
                                            ]
                                        },
                                    ]
                                },
                                {"$mergeObjects": ["$$entry", {"asyncPayment": state.value}]},
                                "$$entry",
                            ]
                        },
                    }
                },
            }
        }
    ]


def attempt_selector(number: int) -> Document:
    """Records whose current attempt is `number` (records written before attempts were
    numbered are on their first)."""
    return {"attempt": number if number > 1 else {"$in": [1, None]}}


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
    attempt: int = 1
    attempts: tuple[Attempt, ...] = ()
    sessions_to_expire: tuple[str, ...] = ()

    @property
    def current_attempt(self) -> Attempt | None:
        return next((a for a in self.attempts if a.attempt == self.attempt), None)

    @property
    def expires_at(self) -> datetime | None:
        current = self.current_attempt
        return current.expires_at if current else None

    def attempt_of_session(self, session_id: str) -> int | None:
        return next((a.attempt for a in self.attempts if a.stripe_session_id == session_id), None)

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
            attempt=document.get("attempt") or 1,
            attempts=tuple(Attempt.from_entry(entry) for entry in document.get("attempts", [])),
            sessions_to_expire=tuple(document.get("sessionsToExpire", [])),
        )


@dataclass(frozen=True, slots=True)
class StatusChange:
    """Why a status changes: the Stripe event (or reconciliation run) that says so."""

    target: PaymentStatus
    event_id: str
    source: str
    payment_intent_id: str | None = None
    attempt: int | None = None  # the attempt the event is about, when known
    stripe_session_id: str | None = None  # that attempt's session, when known
    # A success on an earlier attempt: the ride's other open sessions are to be expired.
    settles_earlier_attempt: bool = False


def utcnow() -> datetime:
    """Now, at the millisecond precision MongoDB stores, so values read back compare equal."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# What a record holds for the service's own work, never shown (contracts/openapi.yaml).
INTERNAL_FIELDS = frozenset(
    {"_id", "outbox", "sessionsToExpire", "reconciledAt", "sweptAt", "payableCheck"}
)


def public_view(document: Document) -> Document:
    """The record as the HTTP API shows it: JSON-friendly, without internals.
    What a document gains only with its first refund shows its empty value, as the contract
    has every record carry it."""
    view = {key: value for key, value in document.items() if key not in INTERNAL_FIELDS}
    return {"history": [], "amountRefunded": 0, "refunds": [], **_json_friendly(view)}


def _json_friendly(value: Any) -> Any:
    """Times as ISO 8601 strings, however deep (history, refunds, disputes)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _json_friendly(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_friendly(item) for item in value]
    return value


def _iso_or_same(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


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
    expires_at: datetime | None = None


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
        "attempt": 1,
        "attempts": [],
        "history": [{"status": "pending", "eventId": None, "source": "ride-event", "at": now}],
        "createdAt": now,
        "updatedAt": now,
    }


def _unattached(payment: Payment) -> Document:
    return {"rideId": payment.ride_id, "stripeSessionId": None}


def _first_attempt(attachment: _Attachment) -> Document:
    return attempt_entry(
        1,
        attachment.session_id,
        attachment.url,
        attachment.expires_at,
        attachment.reserved.created_at,
    )


def _attach(attachment: _Attachment) -> Document:
    return {
        "$set": {
            "stripeSessionId": attachment.session_id,
            "paymentUrl": attachment.url,
            "attempt": 1,
        },
        "$push": {"attempts": _first_attempt(attachment)},
        "$currentDate": {"updatedAt": True},
        "$inc": {"version": 1},
    }


def _attached(attachment: _Attachment) -> Payment:
    return replace(
        attachment.reserved,
        stripe_session_id=attachment.session_id,
        payment_url=attachment.url,
        version=attachment.reserved.version + 1,
        attempt=1,
        attempts=(Attempt.from_entry(_first_attempt(attachment)),),
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
        "history": _appended("history", _history_entry(change)),
        "outbox": _appended(
            "outbox",
            {
                "eventId": f"pst_{uuid.uuid4().hex}",
                "status": change.target.value,
                "version": next_version,
                "at": "$$NOW",
                **_session_of(change),
            },
        ),
    }
    if change.attempt is not None:
        assignments["attempts"] = _attempt_status_set(change.attempt, change.target)
        if change.settles_earlier_attempt:
            assignments["sessionsToExpire"] = _other_open_sessions(change.attempt)
    if change.payment_intent_id:
        assignments["paymentIntentId"] = {"$literal": change.payment_intent_id}
    return [{"$set": assignments}]


def _history_entry(change: StatusChange) -> Document:
    entry: Document = {
        "status": change.target.value,
        "eventId": {"$literal": change.event_id},
        "source": {"$literal": change.source},
        "at": "$$NOW",
    }
    if change.attempt is not None:
        entry["attempt"] = change.attempt
    return entry


def _session_of(change: StatusChange) -> Document:
    """The session and attempt a status event is about, when the change says (a success on an
    earlier attempt is not about the current session)."""
    named: Document = {}
    if change.stripe_session_id is not None:
        named["stripeSessionId"] = {"$literal": change.stripe_session_id}
    if change.attempt is not None:
        named["attempt"] = change.attempt
    return named


def _attempt_status_set(number: int, status: PaymentStatus) -> Document:
    """`attempts` with attempt `number`'s status set to `status` (an update pipeline value)."""
    return {
        "$map": {
            "input": {"$ifNull": ["$attempts", []]},
            "as": "entry",
            "in": {
                "$cond": [
                    {"$eq": ["$$entry.attempt", number]},
                    {"$mergeObjects": ["$$entry", {"status": status.value}]},
                    "$$entry",
                ]
            },
        }
    }


def _other_open_sessions(paid_attempt: int) -> Document:
    """The sessions of every attempt but `paid_attempt` that may still be open (a pipeline
    value, computed in the same update as the success, so no attempt started meanwhile is
    missed)."""
    may_be_open = [PaymentStatus.PENDING.value, PaymentStatus.FAILED.value]
    return {
        "$map": {
            "input": {
                "$filter": {
                    "input": {"$ifNull": ["$attempts", []]},
                    "as": "entry",
                    "cond": {
                        "$and": [
                            {"$ne": ["$$entry.attempt", paid_attempt]},
                            {"$in": ["$$entry.status", may_be_open]},
                        ]
                    },
                }
            },
            "as": "entry",
            "in": "$$entry.stripeSessionId",
        }
    }


def _next_attempt(
    current: Payment, session_id: str, url: str, expires_at: datetime | None
) -> list[Document]:
    """The update that makes a new Checkout Session the ride's current attempt, `pending`
    again, with its status event in the outbox."""
    number = current.attempt + 1
    next_version = {"$add": ["$version", 1]}
    entry = attempt_entry(number, session_id, url, expires_at, utcnow())
    return [
        {
            "$set": {
                "attempt": number,
                "stripeSessionId": {"$literal": session_id},
                "paymentUrl": {"$literal": url},
                "paymentIntentId": None,
                "status": PaymentStatus.PENDING.value,
                "updatedAt": "$$NOW",
                "version": next_version,
                "attempts": {
                    "$concatArrays": [{"$ifNull": ["$attempts", []]}, [{"$literal": entry}]]
                },
                "history": _appended(
                    "history",
                    {
                        "status": PaymentStatus.PENDING.value,
                        "eventId": None,
                        "source": "checkout-link",
                        "attempt": number,
                        "at": "$$NOW",
                    },
                ),
                "outbox": _appended(
                    "outbox",
                    {
                        "eventId": f"pst_{uuid.uuid4().hex}",
                        "status": PaymentStatus.PENDING.value,
                        "version": next_version,
                        "at": "$$NOW",
                        "stripeSessionId": {"$literal": session_id},
                        "attempt": number,
                    },
                ),
            }
        }
    ]


def _earlier_attempt_noted(change: StatusChange) -> list[Document]:
    """An event about an earlier attempt: its entry and the history say so, nothing else."""
    assert change.attempt is not None
    return [
        {
            "$set": {
                "version": {"$add": ["$version", 1]},
                "updatedAt": "$$NOW",
                "attempts": _attempt_status_set(change.attempt, change.target),
                "history": _appended("history", _history_entry(change)),
            }
        }
    ]


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
        await self._payments.create_index(
            [("attempts.stripeSessionId", ASCENDING)], name="attempts_stripeSessionId"
        )
        await self._payments.create_index(
            [("sessionsToExpire", ASCENDING)], name="sessionsToExpire", sparse=True
        )
        await self._payments.create_index(
            [("userId", ASCENDING), ("status", ASCENDING), ("createdAt", ASCENDING)],
            name=OUTSTANDING_INDEX,
        )

    async def reserve(self, ride_id: str, user_id: str, amount: int, currency: str) -> Payment:
        """The ride's record, created `pending` without a session if it did not exist."""
        return await self._reservations.submit(_Reservation(ride_id, user_id, amount, currency))

    async def attach_session(
        self, reserved: Payment, session_id: str, url: str, expires_at: datetime | None = None
    ) -> Payment:
        """Record the first Checkout Session (attempt 1) once; a later call returns the record
        as it is."""
        return await self._attachments.submit(_Attachment(reserved, session_id, url, expires_at))

    async def start_attempt(
        self, current: Payment, session_id: str, url: str, expires_at: datetime | None
    ) -> Payment | None:
        """Make this session attempt `current.attempt + 1`, if the record is still on `current`'s
        attempt and unpaid; None when another call (or a payment) got there first."""
        document = await self._payments.find_one_and_update(
            {
                "rideId": current.ride_id,
                "stripeSessionId": current.stripe_session_id,
                "status": {"$in": [status.value for status in UNPAID_STATUSES]},
                **attempt_selector(current.attempt),
            },
            _next_attempt(current, session_id, url, expires_at),
            return_document=ReturnDocument.AFTER,
        )
        return Payment.from_document(document) if document else None

    async def note_earlier_attempt(self, ride_id: str, change: StatusChange) -> Payment | None:
        """Record an event about an earlier attempt in its entry and the history, once,
        leaving the current attempt as it is."""
        document = await self._payments.find_one_and_update(
            {"rideId": ride_id, "history.eventId": {"$ne": change.event_id}},
            _earlier_attempt_noted(change),
            return_document=ReturnDocument.AFTER,
        )
        return Payment.from_document(document) if document else None

    async def note_async_payment(
        self, selector: Document, session_id: str, state: PaymentStatus
    ) -> None:
        """Record on the attempt of `session_id` what Stripe says of its delayed payment: on its
        way (`processing`), `succeeded` or `failed`; an outcome once known stays. Written before
        the status change it goes with, so that a late completion racing with the outcome finds
        the outcome. Bookkeeping, like the PaymentIntent's id: the status change that follows
        bumps `version` and tells the rider."""
        await self._payments.update_one(
            {
                "$and": [
                    selector,
                    {
                        "attempts": {
                            "$elemMatch": {
                                "stripeSessionId": session_id,
                                "asyncPayment": {"$in": _may_precede(state)},
                            }
                        }
                    },
                ]
            },
            _async_payment_noted(session_id, state),
        )

    async def with_sessions_to_expire(self, limit: int) -> list[Payment]:
        """Rides paid on an earlier attempt whose other sessions are not known expired yet."""
        cursor = self._committed.find({"sessionsToExpire": {"$exists": True}}, limit=limit)
        return [Payment.from_document(document) async for document in cursor]

    async def sessions_expired(self, payment: Payment) -> None:
        """Every session in `payment.sessions_to_expire` is expired at Stripe."""
        await self._payments.update_one(
            {"rideId": payment.ride_id, "sessionsToExpire": list(payment.sessions_to_expire)},
            {"$unset": {"sessionsToExpire": ""}},
        )

    def outstanding(self, user_id: str) -> AsyncCursor[Document]:
        """The user's rides not paid yet (a delayed payment on its way included), oldest first
        (served by the userId+status+createdAt index)."""
        return self._payments.find(
            {"userId": user_id, "status": {"$in": [s.value for s in OWED_STATUSES]}},
            projection=OUTSTANDING_FIELDS,
            sort=[("createdAt", ASCENDING)],
        )

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

    async def apply(
        self,
        selector: Document,
        change: StatusChange,
        allowed_from: Sequence[PaymentStatus] | None = None,
    ) -> Payment | None:
        """Move the matching record to `change.target` if the transition is allowed (from
        `allowed_from` when given, else by the model's rules).

        One conditional update: concurrent deliveries cannot both win, an event id already in
        the history is never applied again, and an out-of-order event that is no longer allowed
        changes nothing (all return None).
        """
        if allowed_from is None:
            allowed_from = statuses_that_may_become(change.target)
        document = await self._payments.find_one_and_update(
            {
                **selector,
                "status": {"$in": [status.value for status in allowed_from]},
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

    async def unsettled(
        self, quiet_for: timedelta, limit: int, processing_every: timedelta = timedelta(0)
    ) -> list[Payment]:
        """Payments still `pending` or `failed` with a session, unchanged for `quiet_for` at
        least, and `processing` ones not reconciled for `processing_every` (a bank debit takes
        days); the least recently reconciled first, so that each one gets its turn."""
        now = await self.clock()
        cursor = self._committed.find(
            {
                "$or": [
                    {"status": {"$in": [PaymentStatus.PENDING.value, PaymentStatus.FAILED.value]}},
                    {
                        "status": PaymentStatus.PROCESSING.value,
                        "$or": [
                            {"reconciledAt": None},
                            {"reconciledAt": {"$lte": now - processing_every}},
                        ],
                    },
                ],
                "updatedAt": {"$lte": now - quiet_for},
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
        """Payments still `pending` without a Checkout Session, last changed before the cutoff;
        the least recently swept first, so that those the sweep could not finish (Stripe
        refused them) take their turn behind the others instead of every turn."""
        cursor = self._payments.find(
            {
                "status": PaymentStatus.PENDING.value,
                "updatedAt": {"$lte": changed_before},
                "stripeSessionId": None,
            },
            limit=limit,
            sort=[("sweptAt", ASCENDING), ("updatedAt", ASCENDING)],
        )
        return [Payment.from_document(document) async for document in cursor]

    async def mark_swept(self, ride_id: str) -> None:
        """Note that the safety net tried this payment now (bookkeeping, not a change)."""
        await self._payments.update_one({"rideId": ride_id}, {"$currentDate": {"sweptAt": True}})

    def lease(self, name: str, owner: str, ttl_s: float) -> Lease:
        return Lease(self._client, self.sibling("leases"), name, owner, ttl_s)

    @property
    def collection(self) -> AsyncCollection[Document]:
        """The payments themselves, for modules that change them in their own ways
        (shared/refunds.py)."""
        return self._payments

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
