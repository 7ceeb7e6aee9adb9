"""`make refund`: before sending, what the consumer will refuse (as `make ride` warns of a ride
it will dead-letter); after, what became of the request: the ride's new status and
amountRefunded once Stripe settled the refund, or the dead letter and its reason.

The refusals are the consumer's own (shared/refund_model.py), applied to the ride's record as
the payments API serves it now."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from devstack.dead_letters import qualified_ref
from devstack.payments_api import PaymentsApi, PaymentsApiError
from services.consumer.dlq import as_letter
from services.consumer.records import REASON, REFUND_DEAD_LETTER_TOPIC
from shared.model import InvalidRideEvent, PaymentStatus
from shared.refund_model import (
    Refund,
    RefundRefused,
    RefundRequest,
    amount_to_refund,
    parse_refund_request,
)

# Long enough for the consumer and a Stripe refund settling (the simulator: 0.2 s).
OUTCOME_TIMEOUT_S = 20.0
POLL_EVERY_S = 0.3


@dataclass(frozen=True, slots=True)
class Outcome:
    line: str
    refused: bool


async def refusal(api: PaymentsApi, value: bytes) -> str | None:
    """Why the consumer will refuse this request, as far as the ride's record says now."""
    try:
        request = parse_refund_request(value)
    except InvalidRideEvent as error:
        return error.reason
    record = await api.payment(request.ride_id)
    if record is None:
        return f"unknown ride {request.ride_id!r}: no payment for it"
    return _refusal_by_record(record, request)


def _refusal_by_record(record: dict[str, Any], request: RefundRequest) -> str | None:
    if _entry(record, request.refund_id) is not None:
        return None  # a repeat: the consumer answers it as already handled
    try:
        status = PaymentStatus(record["status"])
    except ValueError:
        return f"ride is not paid (status {record['status']})"
    refunds = [_refund(entry) for entry in record.get("refunds", [])]
    try:
        amount_to_refund(status, record["amount"], record["currency"], refunds, request.amount)
    except (RefundRefused, InvalidRideEvent) as error:
        return error.reason
    return None


def _refund(entry: dict[str, Any]) -> Refund:
    """A `refunds` entry as the payments API shows it (times as ISO 8601)."""
    times = {key: datetime.fromisoformat(entry[key]) for key in ("createdAt", "updatedAt")}
    return Refund.from_entry({**entry, **times})


def _entry(record: dict[str, Any], refund_id: str) -> dict[str, Any] | None:
    entries = [e for e in record.get("refunds", []) if e.get("refundId") == refund_id]
    return entries[0] if entries else None


async def outcome(
    api: PaymentsApi,
    bootstrap: str,
    request: dict[str, str],
    value: bytes,
    timeout_s: float = OUTCOME_TIMEOUT_S,
) -> Outcome:
    """What became of the request sent as `value`: settled on the ride's record, or
    dead-lettered; after `timeout_s`, what the record says then."""
    watchers = [
        asyncio.create_task(_settled(api, request["rideId"], request["refundId"])),
        asyncio.create_task(_dead_lettered(bootstrap, value)),
    ]
    try:
        async with asyncio.timeout(timeout_s):
            for finished in asyncio.as_completed(watchers):
                found = await finished
                if found is not None:
                    return found
    except TimeoutError:
        pass
    finally:
        await _cancelled(watchers)
    return await _undecided(api, request, timeout_s)


async def _settled(api: PaymentsApi, ride_id: str, refund_id: str) -> Outcome | None:
    """Once the ride's record shows the refund succeeded, failed or canceled."""
    while True:
        with contextlib.suppress(PaymentsApiError):
            record = await api.payment(ride_id)
            entry = _entry(record, refund_id) if record else None
            if record and entry and entry["status"] != "pending":
                return _settled_outcome(record, entry)
        await asyncio.sleep(POLL_EVERY_S)


def _settled_outcome(record: dict[str, Any], entry: dict[str, Any]) -> Outcome:
    currency = record["currency"].upper()
    now = (
        f"ride {record['rideId']} is {record['status']}, amountRefunded "
        f"{record['amountRefunded']} of {record['amount']} ({currency} minor units)"
    )
    if entry["status"] == "succeeded":
        return Outcome(f"devstack: refund {entry['refundId']} succeeded: {now}", refused=False)
    why = entry.get("failureReason") or "no reason given"
    line = f"devstack: refund {entry['refundId']} {entry['status']} ({why}): {now}"
    return Outcome(line, refused=True)


async def _dead_lettered(bootstrap: str, value: bytes) -> Outcome | None:
    """Once refund-requests-dlq holds this very request (a letter keeps the value's bytes)."""
    consumer = AIOKafkaConsumer(
        REFUND_DEAD_LETTER_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        await consumer.start()
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            letters = [as_letter(record) for part in batch.values() for record in part]
            for letter in letters:
                if letter.value == value:
                    ref = qualified_ref(REFUND_DEAD_LETTER_TOPIC, letter)
                    return _refused(letter.header(REASON), ref)
    except KafkaError:
        return None  # the record's watcher still answers
    finally:
        await consumer.stop()


def _refused(reason: str, ref: str) -> Outcome:
    return Outcome(
        f"devstack: refused: {reason}. The request is dead letter {ref} in "
        f"{REFUND_DEAD_LETTER_TOPIC} (`make dlq TOPIC=refunds` lists it)",
        refused=True,
    )


async def _undecided(api: PaymentsApi, request: dict[str, str], waited_s: float) -> Outcome:
    record = None
    with contextlib.suppress(PaymentsApiError):
        record = await api.payment(request["rideId"])
    entry = _entry(record, request["refundId"]) if record else None
    if entry is not None:
        return Outcome(
            f"devstack: refund {request['refundId']} is still {entry['status']} at Stripe after "
            f"{waited_s:.0f} s; `make watch` shows the rider's update when it settles",
            refused=False,
        )
    return Outcome(
        f"devstack: no word of refund {request['refundId']} after {waited_s:.0f} s, neither on "
        f"the ride's record nor in {REFUND_DEAD_LETTER_TOPIC}: is the consumer running? (see "
        "`make run`'s table and the consumer's log)",
        refused=True,
    )


async def _cancelled(tasks: list[asyncio.Task[Outcome | None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
