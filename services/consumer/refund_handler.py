"""One `refund-requests` record in, one finished outcome out: validation, retries and dead
letters, with the same guarantees and dead-letter format as ride events (handler.py)."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Counter

from services.consumer.handler import SendDeadLetter, dead_letter, named_ride_id
from services.consumer.process import Outcome
from services.consumer.records import IncomingRecord
from services.consumer.refunds import RefundIssuer
from shared.model import InvalidRideEvent
from shared.refund_model import RefundRefused, RefundRequest, parse_refund_request
from shared.retry import until_done
from shared.stripe_gateway import PermanentStripeError

logger = logging.getLogger(__name__)

REFUND_REQUESTS = Counter(
    "payments_consumer_refund_requests_total", "Refund requests handled, by outcome", ["outcome"]
)
RETRIES = Counter("payments_consumer_refund_retries_total", "Transient failures retried", ["error"])


class RefundRequestHandler:
    def __init__(
        self,
        issuer: RefundIssuer,
        send_dead_letter: SendDeadLetter,
        stop_retrying: asyncio.Event | None = None,
    ) -> None:
        self._issuer = issuer
        self._send_dead_letter = send_dead_letter
        self._stop_retrying = stop_retrying

    async def handle(self, record: IncomingRecord) -> Outcome:
        outcome = await self._handle(record)
        REFUND_REQUESTS.labels(outcome.value).inc()
        return outcome

    async def _handle(self, record: IncomingRecord) -> Outcome:
        """Never raises for a record: what cannot be carried out goes to the dead-letter topic
        with the reason (unknown ride, not paid, over what remains, malformed, ...)."""
        ride_id: str | None = None
        try:
            request = parse_refund_request(record.value or b"")
            ride_id = request.ride_id
            return await self._refund(request, record)
        except (InvalidRideEvent, RefundRefused) as error:
            reason = error.reason
            ride_id = ride_id or named_ride_id(record.value or b"")
        except PermanentStripeError as error:
            reason = str(error)
        except Exception as error:
            logger.exception(
                "unexpected error handling a refund request",
                extra={"rideId": ride_id, "source": record.position},
            )
            reason = f"unexpected error: {type(error).__name__}: {error}"
        return await self._dead_letter(record, reason, ride_id)

    async def _refund(self, request: RefundRequest, record: IncomingRecord) -> Outcome:
        log = {"rideId": request.ride_id, "refundId": request.refund_id, "source": record.position}
        outcome = await until_done(
            lambda: self._issuer.refund(request),
            what="refund",
            on_retry=lambda error: RETRIES.labels(type(error).__name__).inc(),
            log_extra=log,
            stop=self._stop_retrying,
        )
        logger.info("refund request handled", extra={**log, "outcome": outcome.value})
        return outcome

    async def _dead_letter(
        self, record: IncomingRecord, reason: str, ride_id: str | None
    ) -> Outcome:
        return await dead_letter(
            self._send_dead_letter, record, reason, ride_id, kind="refund request"
        )
