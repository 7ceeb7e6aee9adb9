"""One Kafka record in, one finished outcome out: validation, retries and dead letters.

The handler returns only when the record is fully handled (processed, or safely in the
dead-letter topic), so the caller may acknowledge it then and never earlier.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from prometheus_client import Counter, Gauge

from services.consumer.process import Outcome, PaymentCreator
from services.consumer.records import DeadLetter, IncomingRecord
from shared.model import InvalidRideEvent, parse_ride_event
from shared.retry import until_done
from shared.stripe_gateway import PermanentStripeError

logger = logging.getLogger(__name__)

EVENTS = Counter("payments_consumer_events_total", "Ride events handled, by outcome", ["outcome"])
RETRIES = Counter("payments_consumer_retries_total", "Transient failures retried", ["error"])
DEAD_LETTERS = Counter(
    "payments_consumer_dead_letters_total", "Records sent to the dead-letter topic"
)
IN_FLIGHT = Gauge("payments_consumer_in_flight", "Ride events being handled now")

SendDeadLetter = Callable[[DeadLetter], Awaitable[None]]


class RideEventHandler:
    def __init__(
        self,
        creator: PaymentCreator,
        send_dead_letter: SendDeadLetter,
        stop_retrying: asyncio.Event | None = None,
    ) -> None:
        self._creator = creator
        self._send_dead_letter = send_dead_letter
        self._stop_retrying = stop_retrying
        self._ride_locks = _KeyedLocks()

    async def handle(self, record: IncomingRecord) -> Outcome:
        with IN_FLIGHT.track_inprogress():
            outcome = await self._handle(record)
        EVENTS.labels(outcome.value).inc()
        return outcome

    async def _handle(self, record: IncomingRecord) -> Outcome:
        try:
            event = parse_ride_event(record.value or b"")
        except InvalidRideEvent as error:
            return await self._dead_letter(record, error.reason, ride_id=None)
        log = {"rideId": event.ride_id, "userId": event.user_id, "source": record.position}
        try:
            async with self._ride_locks.hold(event.ride_id):
                outcome = await until_done(
                    lambda: self._creator.create(event),
                    what="payment creation",
                    on_retry=_count_retry,
                    log_extra=log,
                    stop=self._stop_retrying,
                )
        except InvalidRideEvent as error:
            return await self._dead_letter(record, error.reason, ride_id=event.ride_id)
        except PermanentStripeError as error:
            return await self._dead_letter(record, str(error), ride_id=event.ride_id)
        except Exception as error:
            # A bug or an unforeseen answer: park the record where it can be replayed after
            # the fix rather than stall the partition behind it.
            logger.exception("unexpected error handling a ride event", extra=log)
            reason = f"unexpected error: {type(error).__name__}: {error}"
            return await self._dead_letter(record, reason, ride_id=event.ride_id)
        logger.info("ride event handled", extra={**log, "outcome": outcome.value})
        return outcome

    async def _dead_letter(
        self, record: IncomingRecord, reason: str, ride_id: str | None
    ) -> Outcome:
        letter = DeadLetter.of(record, reason)
        log = {"rideId": ride_id, "source": record.position, "reason": reason}
        await until_done(
            lambda: self._send_dead_letter(letter),
            what="dead-letter publish",
            on_retry=_count_retry,
            log_extra=log,
        )
        DEAD_LETTERS.inc()
        logger.warning("ride event sent to the dead-letter topic", extra=log)
        return Outcome.DEAD_LETTERED


def _count_retry(error: BaseException) -> None:
    RETRIES.labels(type(error).__name__).inc()


class _KeyedLocks:
    """A lock per key that exists only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
