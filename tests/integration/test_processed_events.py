from __future__ import annotations

import asyncio
from datetime import timedelta

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
