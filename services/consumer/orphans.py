"""The safety net: payments reserved but left without a Checkout Session are finished from
their record.

Ride events are acknowledged only once handled, so this should find nothing. It is there for
what slips through anyway (a bug, offsets reset by an operator, a broker losing a record).
Every ORPHAN_CHECK_INTERVAL_S the replica holding the lease takes the payments still
`pending` without a session whose last change is older than ORPHAN_AFTER_S, by MongoDB's
clock, and finishes each through the consumer's own use case: the session (same idempotency
key, so never a second one), attached once, and the link announced. One it cannot finish (Stripe
refused it for good, say) goes to the back of the line, so it never keeps the others waiting.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from prometheus_client import Counter

from services.consumer.process import PaymentCreator
from shared.periodic import PeriodicJob
from shared.store import Lease, Payment, PaymentStore

logger = logging.getLogger(__name__)

FINISHED = Counter(
    "payments_consumer_orphans_finished_total",
    "Payments reserved without a Checkout Session that the safety net finished",
)
ERRORS = Counter(
    "payments_consumer_orphans_errors_total",
    "Payments reserved without a Checkout Session that the safety net could not finish",
)


class OrphanSweeper(PeriodicJob):
    name = "orphan sweep"

    def __init__(
        self,
        store: PaymentStore,
        creator: PaymentCreator,
        lease: Lease,
        *,
        orphan_after_s: float,
        batch: int = 100,
    ) -> None:
        self._store = store
        self._creator = creator
        self._lease = lease
        self._orphan_after = timedelta(seconds=orphan_after_s)
        self._batch = batch

    async def run_once(self) -> list[str]:
        """The rides finished by this run (none when another replica holds the lease)."""
        if not await self._lease.acquire():
            return []
        try:
            cutoff = await self._store.clock() - self._orphan_after
            orphans = await self._store.reserved_without_session(cutoff, self._batch)
            return [payment.ride_id for payment in orphans if await self._finish(payment)]
        finally:
            await self._lease.release()

    async def _finish(self, payment: Payment) -> bool:
        log = {"rideId": payment.ride_id, "userId": payment.user_id}
        try:
            outcome = await self._creator.finish(payment)
        except Exception as error:
            ERRORS.inc()
            logger.warning(
                "could not finish an orphaned payment", extra={**log, "error": str(error)}
            )
            await self._to_the_back(payment)
            return False
        FINISHED.inc()
        logger.warning(
            "orphaned payment finished: reserved without a session for too long",
            extra={**log, "outcome": outcome.value},
        )
        return True

    async def _to_the_back(self, payment: Payment) -> None:
        """The next runs take the others first (a MongoDB that cannot take this note is likely
        why the payment failed: it keeps its place, nothing is lost)."""
        try:
            await self._store.mark_swept(payment.ride_id)
        except Exception as error:
            logger.warning(
                "could not note the orphaned payment's turn",
                extra={"rideId": payment.ride_id, "error": str(error)},
            )
