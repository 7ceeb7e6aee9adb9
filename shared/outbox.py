"""Relays the status events kept in payment documents' outboxes to Kafka, at least once.

A change and its status event are written in one MongoDB update; this relay publishes the
event and only then removes it from the outbox. A crash in between re-sends it later with the
same `eventId`. Right after a change the relay publishes at once, from the record the change
returned; acknowledged events are removed in batches; a periodic scan picks up whatever a
crash or a Kafka outage left behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from shared.retry import Backoff
from shared.status_events import STATUS_EVENTS_TOPIC, StatusEvent
from shared.store import Payment, PaymentStore, utcnow

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
        clear_every_s: float = 0.2,
        grace_s: float = 5.0,
        batch: int = 100,
    ) -> None:
        self._store = store
        self._bootstrap_servers = bootstrap_servers
        self._scan_every_s = scan_every_s
        self._clear_every_s = clear_every_s
        self._grace = timedelta(seconds=grace_s)
        self._batch = batch
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._immediate: set[asyncio.Task[None]] = set()
        self._sent: dict[str, list[str]] = {}  # acknowledged by Kafka, still in MongoDB
        self.running = False

    async def close(self) -> None:
        if self._immediate:
            await asyncio.wait(self._immediate, timeout=10)
        try:
            await self.clear_sent()
        except Exception as error:  # they stay in the outbox and are sent again: harmless
            logger.warning("could not clear sent status events", extra={"error": str(error)})
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def publish_soon(self, payment: Payment) -> None:
        """Publish this change's status events now, without holding up the caller."""
        task = asyncio.create_task(self._publish_quietly(payment))
        self._immediate.add(task)
        task.add_done_callback(self._immediate.discard)

    async def run(self) -> None:
        """Clear what was sent and scan for leftovers, until cancelled."""
        backoff, attempt = Backoff(first_s=0.5, max_s=15), 0
        next_scan = 0.0
        self.running = True
        try:
            while True:
                try:
                    await self.clear_sent()
                    if time.monotonic() >= next_scan:
                        await self.scan_once()
                        next_scan = time.monotonic() + self._scan_every_s
                    attempt = 0
                    await asyncio.sleep(self._clear_every_s)
                except Exception as error:
                    RELAY_ERRORS.inc()
                    attempt += 1
                    logger.warning("outbox relay failed; retrying", extra={"error": str(error)})
                    await asyncio.sleep(backoff.delay(attempt))
        finally:
            self.running = False

    async def scan_once(self) -> int:
        """Publish every outbox entry older than the grace period; returns how many."""
        payments = await self._store.with_outbox(self._batch, utcnow() - self._grace)
        for payment in payments:
            await self._publish(payment.ride_id, payment.outbox)
        await self.clear_sent()
        return sum(len(payment.outbox) for payment in payments)

    async def clear_sent(self) -> None:
        if not self._sent:
            return
        sent, self._sent = self._sent, {}
        try:
            await self._store.clear_outboxes(sent)
        except BaseException:
            for ride_id, event_ids in sent.items():
                self._sent.setdefault(ride_id, []).extend(event_ids)
            raise

    async def _publish_quietly(self, payment: Payment) -> None:
        try:
            await self._publish(payment.ride_id, payment.outbox)
        except Exception as error:  # the scan will send it later
            RELAY_ERRORS.inc()
            logger.warning(
                "status event not sent yet; the outbox keeps it",
                extra={"rideId": payment.ride_id, "error": str(error)},
            )

    async def _publish(self, ride_id: str, events: tuple[StatusEvent, ...]) -> None:
        if not events:
            return
        producer = await self._started_producer()
        for event in events:
            await producer.send_and_wait(STATUS_EVENTS_TOPIC, event.value(), key=event.key)
            PUBLISHED.inc()
            self._sent.setdefault(ride_id, []).append(event.eventId)
        logger.debug(
            "status events published",
            extra={"rideId": ride_id, "eventIds": [event.eventId for event in events]},
        )

    async def _started_producer(self) -> AIOKafkaProducer:
        async with self._producer_lock:
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
