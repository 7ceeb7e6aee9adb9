"""One Kafka record in, one finished outcome out: validation, retries and dead letters.

The handler returns only when the record is fully handled (processed, or safely in the
dead-letter topic), so the caller may acknowledge it then and never earlier.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

from aiokafka.errors import MessageSizeTooLargeError
from prometheus_client import Counter, Gauge

from services.consumer.process import Outcome, PaymentCreator
from services.consumer.records import (
    MAX_DEAD_LETTER_BYTES,
    MAX_REASON_CHARS,
    DeadLetter,
    IncomingRecord,
)
from shared.model import MAX_EVENT_BYTES, InvalidRideEvent, RideEvent, parse_ride_event
from shared.retry import Backoff, until_done
from shared.stripe_gateway import PermanentStripeError

logger = logging.getLogger(__name__)

EVENTS = Counter("payments_consumer_events_total", "Ride events handled, by outcome", ["outcome"])
RETRIES = Counter("payments_consumer_retries_total", "Transient failures retried", ["error"])
DEAD_LETTERS = Counter(
    "payments_consumer_dead_letters_total", "Records sent to the dead-letter topic"
)
TRUNCATED_DEAD_LETTERS = Counter(
    "payments_consumer_dead_letters_truncated_total",
    "Dead letters stored truncated: the record was over the size Kafka takes",
)
IN_FLIGHT = Gauge("payments_consumer_in_flight", "Ride events being handled now")

# A broker whose topic limit is below ours gets a letter of this size instead.
SMALL_DEAD_LETTER_BYTES = 16 * 1024
MAX_ID_CHARS = 200  # an id in a log line; a refused event's may be any length
DEAD_LETTER_BACKOFF = Backoff()

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
        """Never raises for a record: what cannot be processed, for any reason, is parked in
        the dead-letter topic with the reason, and the partition moves on."""
        ride_id: str | None = None
        try:
            event = parse_ride_event(record.value or b"")
            ride_id = event.ride_id
            return await self._create(event, record)
        except InvalidRideEvent as error:
            reason = error.reason
            ride_id = named_ride_id(record.value or b"")
        except PermanentStripeError as error:
            reason = str(error)
        except Exception as error:
            # A bug or an unforeseen answer: park the record where it can be replayed after
            # the fix rather than stall the partition behind it.
            logger.exception(
                "unexpected error handling a ride event",
                extra={"rideId": ride_id, "source": record.position},
            )
            reason = f"unexpected error: {type(error).__name__}: {error}"
        return await self._dead_letter(record, reason, ride_id)

    async def _create(self, event: RideEvent, record: IncomingRecord) -> Outcome:
        log = {"rideId": event.ride_id, "userId": event.user_id, "source": record.position}
        async with self._ride_locks.hold(event.ride_id):
            outcome = await until_done(
                lambda: self._creator.create(event),
                what="payment creation",
                on_retry=_count_retry,
                log_extra=log,
                stop=self._stop_retrying,
            )
        logger.info("ride event handled", extra={**log, "outcome": outcome.value})
        return outcome

    async def _dead_letter(
        self, record: IncomingRecord, reason: str, ride_id: str | None
    ) -> Outcome:
        return await dead_letter(self._send_dead_letter, record, reason, ride_id, kind="ride event")


async def dead_letter(
    send: SendDeadLetter, record: IncomingRecord, reason: str, ride_id: str | None, *, kind: str
) -> Outcome:
    """Park `record` in its dead-letter topic with the reason: counted, and logged as `kind`."""
    log = {"rideId": ride_id, "source": record.position, "reason": reason[:MAX_REASON_CHARS]}
    letter = await store_dead_letter(send, DeadLetter.of(record, reason), log)
    DEAD_LETTERS.inc()
    if letter.truncated:
        TRUNCATED_DEAD_LETTERS.inc()
    logger.warning(
        f"{kind} sent to the dead-letter topic", extra={**log, "truncated": letter.truncated}
    )
    return Outcome.DEAD_LETTERED


async def store_dead_letter(
    send: SendDeadLetter, letter: DeadLetter, log: Mapping[str, object]
) -> DeadLetter:
    """Returns (what was sent) once Kafka holds the letter: only then may the record be
    acknowledged, and there is nowhere else to keep it, so every failure is retried. A
    letter over the size Kafka takes is truncated; smaller still if the broker refuses it."""
    limit, attempt = MAX_DEAD_LETTER_BYTES, 0
    while True:
        fitting = letter.within(limit)
        try:
            await send(fitting)
            return fitting
        except Exception as error:
            _count_retry(error)
            attempt += 1
            if _too_large(error) and limit > SMALL_DEAD_LETTER_BYTES:
                limit = SMALL_DEAD_LETTER_BYTES
                continue
            delay = DEAD_LETTER_BACKOFF.delay(attempt)
            logger.error(
                "dead-letter publish failed; retrying",
                extra={**log, "error": repr(error), "attempt": attempt, "retryInS": delay},
            )
            await asyncio.sleep(delay)


def named_ride_id(raw: bytes) -> str | None:
    """The rideId an event refused as invalid still names, for the log line; None when it
    names none. Only events within the size limit are decoded, and no input raises."""
    if len(raw) > MAX_EVENT_BYTES:
        return None
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    ride_id = document.get("rideId") if isinstance(document, dict) else None
    return ride_id[:MAX_ID_CHARS] if isinstance(ride_id, str) and ride_id else None


def _too_large(error: BaseException) -> bool:
    """Faust wraps the producer's refusal in its own error; the broker's comes as it is."""
    return isinstance(error, MessageSizeTooLargeError) or isinstance(
        error.__cause__, MessageSizeTooLargeError
    )


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
