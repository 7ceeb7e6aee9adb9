"""After a stored status change: tell the rider (Redis bus) and the platform (Kafka outbox).

Both happen after Stripe has its answer: a Redis or Kafka hiccup must not turn a stored
change into a 5xx. The notification is retried a few times; the status event stays in the
outbox until Kafka has it.
"""

from __future__ import annotations

import asyncio
import logging

from shared.announcements import announce_status
from shared.bus import NotificationBus
from shared.outbox import OutboxRelay
from shared.retry import Backoff, until_done
from shared.store import Payment

logger = logging.getLogger(__name__)

NOTIFY_ATTEMPTS = 6


class ChangeFanout:
    def __init__(self, bus: NotificationBus, relay: OutboxRelay) -> None:
        self._bus = bus
        self._relay = relay
        self._notifying: set[asyncio.Task[None]] = set()

    def changed(self, payment: Payment) -> None:
        task = asyncio.create_task(self._notify(payment))
        self._notifying.add(task)
        task.add_done_callback(self._notifying.discard)
        self._relay.publish_soon(payment)

    async def drain(self, timeout_s: float = 10.0) -> None:
        if self._notifying:
            await asyncio.wait(self._notifying, timeout=timeout_s)

    async def _notify(self, payment: Payment) -> None:
        try:
            await until_done(
                lambda: announce_status(self._bus, payment),
                what="status notification",
                backoff=Backoff(first_s=0.1, max_s=2.0),
                log_extra={"rideId": payment.ride_id},
                attempts=NOTIFY_ATTEMPTS,
            )
        except Exception as error:
            logger.error(
                "status notification given up",
                extra={"rideId": payment.ride_id, "error": str(error)},
            )
