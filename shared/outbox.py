"""Relays every stored status change to the rider (the bus) and to the platform (Kafka
`payment-status-events`), at least once.

A change and its status event are written in one MongoDB update (the payment's outbox); this
relay announces the event to the rider, publishes it to Kafka, and only when both are done
removes it from the outbox. So neither a process that dies before announcing a change nor a
Redis or Kafka outage of any length can lose it: whatever is left in an outbox is relayed again
by a periodic scan, by any replica. Repeats are harmless: the bus refuses a status it has
already published for that version (or an older one), and Kafka consumers keep the highest
`version`.

Right after a change the relay works at once, from the record the change returned;
acknowledged events are removed in batches; the scan picks up whatever is older than a grace
period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge

from shared.announcements import announce_status
from shared.bus import NotificationBus
from shared.retry import Backoff
from shared.status_events import STATUS_EVENTS_TOPIC, StatusEvent
from shared.store import Payment, PaymentStore

logger = logging.getLogger(__name__)

PUBLISHED = Counter("payments_status_events_published_total", "Status events sent to Kafka")
ANNOUNCED = Counter("payments_status_announced_total", "Status changes announced to riders")
RELAY_ERRORS = Counter("payments_outbox_relay_errors_total", "Outbox relay failures", ["target"])
BACKLOG = Gauge(
    "payments_outbox_backlog",
    "Status changes older than the grace period found by this replica's last outbox scan "
    "(at most one batch of payments): above 0 for long means the relay does not drain",
)


class OutboxRelay:
    def __init__(
        self,
        store: PaymentStore,
        bus: NotificationBus,
        bootstrap_servers: str,
        *,
        scan_every_s: float = 2.0,
        clear_every_s: float = 0.2,
        grace_s: float = 5.0,
        batch: int = 100,
        attempt_timeout_s: float = 15.0,
    ) -> None:
        self._store = store
        self._bus = bus
        self._bootstrap_servers = bootstrap_servers
        self._scan_every_s = scan_every_s
        self._clear_every_s = clear_every_s
        self._grace = timedelta(seconds=grace_s)
        self._batch = batch
        self._attempt_timeout_s = attempt_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._immediate: set[asyncio.Task[None]] = set()
        self._sent: dict[str, list[str]] = {}  # relayed to both, still in MongoDB
        self.running = False

    async def close(self) -> None:
        if self._immediate:
            await asyncio.wait(self._immediate, timeout=10)
        try:
            await self.clear_sent()
        except Exception as error:  # they stay in the outbox and are relayed again: harmless
            logger.warning("could not clear relayed status events", extra={"error": str(error)})
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def publish_soon(self, payment: Payment) -> None:
        """Relay this change's status events now, without holding up the caller."""
        task = asyncio.create_task(self._relay_quietly(payment))
        self._immediate.add(task)
        task.add_done_callback(self._immediate.discard)

    async def run(self) -> None:
        """Clear what was relayed and scan for leftovers, until cancelled."""
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
                    RELAY_ERRORS.labels("mongodb").inc()
                    attempt += 1
                    logger.warning("outbox relay failed; retrying", extra={"error": str(error)})
                    await asyncio.sleep(backoff.delay(attempt))
        finally:
            self.running = False

    async def scan_once(self) -> int:
        """Relay every outbox entry older than the grace period; returns how many were found.
        The payments are relayed side by side: one that cannot be relayed now (its attempt is
        bounded) is left for the next scan and holds up none of the others."""
        payments = await self._store.with_outbox(self._batch, quiet_for=self._grace)
        found = sum(len(payment.outbox) for payment in payments)
        BACKLOG.set(found)
        await asyncio.gather(*(self._relay_quietly(payment) for payment in payments))
        await self.clear_sent()
        return found

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

    async def _relay_quietly(self, payment: Payment) -> None:
        try:
            async with asyncio.timeout(self._attempt_timeout_s):
                await self._relay(payment.ride_id, payment.outbox)
        except Exception as error:  # the outbox keeps it; the scan relays it later
            logger.warning(
                "status change not relayed yet; the outbox keeps it",
                extra={"rideId": payment.ride_id, "error": f"{type(error).__name__}: {error}"},
            )

    async def _relay(self, ride_id: str, events: tuple[StatusEvent, ...]) -> None:
        """Each event to the rider and to Kafka, in order; the two do not wait for each other,
        and an event leaves the outbox only when both have it."""
        announced, announce_error = await _in_order(events, self._announce, "redis")
        published, publish_error = await _in_order(events, self._publish, "kafka")
        for event in events[: min(announced, published)]:
            self._sent.setdefault(ride_id, []).append(event.eventId)
        error = announce_error or publish_error
        if error is not None:
            raise error
        logger.debug(
            "status changes relayed",
            extra={"rideId": ride_id, "eventIds": [event.eventId for event in events]},
        )

    async def _announce(self, event: StatusEvent) -> None:
        if await announce_status(self._bus, event) is not None:
            ANNOUNCED.inc()

    async def _publish(self, event: StatusEvent) -> None:
        producer = await self._started_producer()
        await producer.send_and_wait(STATUS_EVENTS_TOPIC, event.value(), key=event.key)
        PUBLISHED.inc()

    async def _started_producer(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._bootstrap_servers, acks="all", linger_ms=5
                )
                try:
                    await producer.start()
                except BaseException:  # failed, or its attempt ran out of time
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer


async def _in_order(
    events: tuple[StatusEvent, ...],
    deliver: Callable[[StatusEvent], Awaitable[None]],
    target: str,
) -> tuple[int, Exception | None]:
    """Deliver events in order, stopping at the first failure (a later one must not overtake
    it): how many were delivered, and the failure."""
    for done, event in enumerate(events):
        try:
            await deliver(event)
        except Exception as error:
            RELAY_ERRORS.labels(target).inc()
            return done, error
    return len(events), None
