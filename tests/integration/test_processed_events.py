from __future__ import annotations

import asyncio
from datetime import timedelta

from pymongo.errors import AutoReconnect

from services.webhook.events import PaymentUpdate
from services.webhook.status_changes import Result, apply_event
from shared.model import PaymentStatus
from shared.processed_events import ProcessedEvents
from shared.store import PaymentStore


def processed_events(store: PaymentStore) -> ProcessedEvents:
    return ProcessedEvents(store.sibling("processed_events"), timedelta(days=1))


async def test_concurrent_records_of_one_event_keep_one(store: PaymentStore) -> None:
    events = processed_events(store)
    await asyncio.gather(
        *(
            events.add(event_id, "payment_intent.succeeded", "ride-1", "applied")
            for event_id in ("evt_1", "evt_1", "evt_2", "evt_1")
        )
    )
    await events.add("evt_1", "payment_intent.succeeded", "ride-1", "applied")  # alone: no error
    records = store.sibling("processed_events")
    assert sorted(await records.distinct("_id")) == ["evt_1", "evt_2"]


async def test_concurrent_lookups_each_get_their_own_answer(store: PaymentStore) -> None:
    events = processed_events(store)
    await events.add("evt_seen", "checkout.session.completed", "ride-1", "applied")
    answers = await asyncio.gather(
        *(events.contains(event_id) for event_id in ("evt_new", "evt_seen", "evt_other"))
    )
    assert answers == [False, True, False]


class UnreachableRecords(ProcessedEvents):
    """The processed-events collection failing between the change and its record."""

    async def add(self, event_id: str, event_type: str, ride_id: str, result: str) -> None:
        raise AutoReconnect("processed_events unreachable")


async def test_a_stored_change_stands_when_its_record_cannot_be_written(
    store: PaymentStore,
) -> None:
    await store.reserve("ride-1", "user-1", 100, "usd")
    update = PaymentUpdate(
        event_id="evt_1",
        event_type="payment_intent.succeeded",
        target=PaymentStatus.SUCCEEDED,
        selectors=[{"rideId": "ride-1"}],
        payment_intent_id="pi_1",
        ride_id="ride-1",
    )
    events = UnreachableRecords(store.sibling("processed_events"), timedelta(days=1))
    applied = await apply_event(store, events, update, source="test")
    # Answered as applied (so the webhook announces it), and a repeat is still refused.
    assert applied.result is Result.APPLIED
    assert applied.payment is not None and applied.payment.status is PaymentStatus.SUCCEEDED
    repeat = await apply_event(store, events, update, source="test")
    assert repeat.result is Result.UNCHANGED
