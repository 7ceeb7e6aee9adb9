"""Relays the status events kept in payment documents' outboxes to Kafka, at least once.

A change and its status event are written in one MongoDB update; this relay publishes the
event and only then removes it from the outbox. A crash in between re-sends it later with the
same `eventId`. Right after a change the relay publishes at once; a periodic scan picks up
whatever a crash or a Kafka outage left behind.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from shared.retry import Backoff
from shared.status_events import STATUS_EVENTS_TOPIC, status_events_of
from shared.store import Document, PaymentStore, utcnow

logger = logging.getLogger(__name__)

PUBLISHED = Counter("payments_status_events_published_total", "Status events sent to Kafka")
RELAY_ERRORS = Counter("payments_outbox_relay_errors_total", "Outbox relay failures")


class OutboxRelay:
    def __init__(
        self,
        store: PaymentStore,
        bootstrap_servers: str,
        *,
        scan_every_s: float = 2.0,
        grace_s: float = 5.0,
        batch: int = 100,
    ) -> None:
        self._store = store
        self._bootstrap_servers = bootstrap_servers
        self._scan_every_s = scan_every_s
        self._grace = timedelta(seconds=grace_s)
        self._batch = batch
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._immediate: set[asyncio.Task[None]] = set()
        self.running = False

    async def close(self) -> None:
        if self._immediate:
            await asyncio.wait(self._immediate, timeout=10)
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def publish_soon(self, ride_id: str) -> None:
        """Publish this ride's pending status events now, without holding up the caller."""
        task = asyncio.create_task(self._publish_ride(ride_id))
        self._immediate.add(task)
        task.add_done_callback(self._immediate.discard)

    async def run(self) -> None:
        """Scan for leftovers until cancelled."""
        backoff, attempt = Backoff(first_s=0.5, max_s=15), 0
        while True:
            try:
                self.running = True
                await self.scan_once()
                attempt = 0
                await asyncio.sleep(self._scan_every_s)
            except asyncio.CancelledError:
                self.running = False
                raise
            except Exception as error:
                RELAY_ERRORS.inc()
                attempt += 1
                logger.warning("outbox scan failed; retrying", extra={"error": str(error)})
                await asyncio.sleep(backoff.delay(attempt))

    async def scan_once(self) -> int:
        """Publish every outbox entry older than the grace period; returns how many."""
        documents = await self._store.with_outbox(self._batch, utcnow() - self._grace)
        sent = 0
        for document in documents:
            sent += await self._publish_document(document)
        return sent

    async def _publish_ride(self, ride_id: str) -> None:
        try:
            document = await self._store.find_document(ride_id)
            if document is not None:
                await self._publish_document(document)
        except Exception as error:  # the scan will send it later
            RELAY_ERRORS.inc()
            logger.warning(
                "status event not sent yet; the outbox keeps it",
                extra={"rideId": ride_id, "error": str(error)},
            )

    async def _publish_document(self, document: Document) -> int:
        events = status_events_of(document)
        if not events:
            return 0
        producer = await self._started_producer()
        for event in events:
            await producer.send_and_wait(STATUS_EVENTS_TOPIC, event.value(), key=event.key)
            PUBLISHED.inc()
        await self._store.clear_outbox(document["rideId"], [event.eventId for event in events])
        logger.info(
            "status events published",
            extra={"rideId": document["rideId"], "eventIds": [e.eventId for e in events]},
        )
        return len(events)

    async def _started_producer(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            return await self._start_producer_once()

    async def _start_producer_once(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap_servers, acks="all", linger_ms=5
            )
            try:
                await producer.start()
            except KafkaError:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer
