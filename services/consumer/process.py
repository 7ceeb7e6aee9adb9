"""The use case: given a valid ride event, make sure it has exactly one Checkout Session,
one payment record and a `payment_url` notification.

The order of writes survives a crash between any two steps: the record is reserved first,
the session is created with a deterministic idempotency key (Stripe answers a repeat with the
same session), attached once, and only then announced. A redelivered event resumes wherever
the previous attempt stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from shared.announcements import announce_payment_url
from shared.bus import NotificationBus
from shared.model import PaymentStatus, RideEvent, chargeable_amount
from shared.store import Payment, PaymentStore
from shared.stripe_gateway import CheckoutRequest, StripeGateway, expires_at_of

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    CREATED = "created"
    REPUBLISHED = "republished"
    ALREADY_FINISHED = "already_finished"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True, slots=True)
class CheckoutSettings:
    currency: str
    success_url: str
    cancel_url: str


class PaymentCreator:
    def __init__(
        self,
        store: PaymentStore,
        gateway: StripeGateway,
        bus: NotificationBus,
        checkout: CheckoutSettings,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._bus = bus
        self._checkout = checkout

    async def create(self, event: RideEvent) -> Outcome:
        # A fare Stripe would refuse is refused here, before a record or a session exists.
        amount = chargeable_amount(event.fare, self._checkout.currency)
        payment = await self._store.reserve(
            event.ride_id, event.user_id, amount, self._checkout.currency
        )
        _warn_if_conflicting(event, amount, payment)
        return await self.finish(payment)

    async def finish(self, payment: Payment) -> Outcome:
        """From a reserved record on: its session (opened if it has none yet) and its link."""
        outcome = Outcome.REPUBLISHED
        if payment.stripe_session_id is None:
            payment = await self._open_checkout(payment)
            outcome = Outcome.CREATED
        if payment.status is not PaymentStatus.PENDING:
            return Outcome.ALREADY_FINISHED
        await announce_payment_url(self._bus, payment)
        return outcome

    async def _open_checkout(self, payment: Payment) -> Payment:
        session = await self._gateway.create_checkout_session(
            CheckoutRequest(
                ride_id=payment.ride_id,
                user_id=payment.user_id,
                amount=payment.amount,
                currency=payment.currency,
                success_url=self._checkout.success_url,
                cancel_url=self._checkout.cancel_url,
            )
        )
        if not session.url:
            raise RuntimeError(f"Stripe returned session {session.id} without a url")
        logger.debug(
            "checkout session created",
            extra={"rideId": payment.ride_id, "stripeSessionId": session.id},
        )
        return await self._store.attach_session(
            payment, session.id, session.url, expires_at_of(session)
        )


def _warn_if_conflicting(event: RideEvent, amount: int, payment: Payment) -> None:
    """A repeat of a ride with other data keeps the first; the difference is worth a look."""
    if payment.user_id != event.user_id or payment.amount != amount:
        logger.warning(
            "ride event differs from the stored payment; keeping the stored one",
            extra={
                "rideId": event.ride_id,
                "storedUserId": payment.user_id,
                "eventUserId": event.user_id,
                "storedAmount": payment.amount,
                "eventAmount": amount,
            },
        )
