"""Stripe event ids already handled, so a repeated delivery is answered without touching its
payment. Each record expires after a retention period (a TTL index): Stripe stops retrying an
event after three days, so the default of thirty leaves a wide margin.

Both the lookups and the records go to MongoDB in group commits (shared/batching.py): under
load, one request serves the deliveries that arrived during the previous one.

The record is written after the change it stands for. A crash between the two leaves no
record, and the redelivery is still applied once: the payment's history holds the event id and
`PaymentStore.apply` refuses an id it already holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from shared.batching import GroupCommit
from shared.store import only_duplicate_keys, utcnow

TTL_INDEX = "processedAt_ttl"


class ProcessedEvents:
    def __init__(self, records: AsyncCollection[dict[str, Any]], retention: timedelta) -> None:
        self._records = records
        self._retention = retention
        self._lookups = GroupCommit(self._contains_batch)
        self._additions = GroupCommit(self._add_batch)

    async def ensure_indexes(self) -> None:
        await self._records.create_index(
            [("processedAt", ASCENDING)],
            name=TTL_INDEX,
            expireAfterSeconds=int(self._retention.total_seconds()),
        )

    async def contains(self, event_id: str) -> bool:
        return await self._lookups.submit(event_id)

    async def add(self, event_id: str, event_type: str, ride_id: str, result: str) -> None:
        record = {"_id": event_id, "type": event_type, "rideId": ride_id, "result": result}
        await self._additions.submit(record)

    async def _contains_batch(self, event_ids: Sequence[str]) -> list[bool]:
        found = {
            record["_id"]
            async for record in self._records.find(
                {"_id": {"$in": list(event_ids)}}, projection={"_id": 1}
            )
        }
        return [event_id in found for event_id in event_ids]

    async def _add_batch(self, records: Sequence[dict[str, Any]]) -> list[None]:
        now = utcnow()
        try:
            await self._records.insert_many(
                [{**record, "processedAt": now} for record in records], ordered=False
            )
        except BulkWriteError as error:
            # A concurrent delivery of the same event recorded it first: that is fine.
            if not only_duplicate_keys(error):
                raise
        return [None] * len(records)
