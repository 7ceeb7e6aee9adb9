"""Stripe event ids already handled, so a repeated delivery is answered without touching its
payment. Each record expires after a retention period (a TTL index): Stripe stops retrying an
event after three days, so the default of thirty leaves a wide margin.

The record is written after the change it stands for. A crash between the two leaves no
record, and the redelivery is still applied once: the payment's history holds the event id and
`PaymentStore.apply` refuses an id it already holds.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.store import utcnow

TTL_INDEX = "processedAt_ttl"


class ProcessedEvents:
    def __init__(self, records: AsyncCollection[dict[str, Any]], retention: timedelta) -> None:
        self._records = records
        self._retention = retention

    async def ensure_indexes(self) -> None:
        await self._records.create_index(
            [("processedAt", ASCENDING)],
            name=TTL_INDEX,
            expireAfterSeconds=int(self._retention.total_seconds()),
        )

    async def contains(self, event_id: str) -> bool:
        return await self._records.find_one({"_id": event_id}, projection={"_id": 1}) is not None

    async def add(self, event_id: str, event_type: str, ride_id: str, result: str) -> None:
        record = {
            "_id": event_id,
            "type": event_type,
            "rideId": ride_id,
            "result": result,
            "processedAt": utcnow(),
        }
        try:
            await self._records.insert_one(record)
        except DuplicateKeyError:
            pass  # a concurrent delivery of the same event recorded it first
