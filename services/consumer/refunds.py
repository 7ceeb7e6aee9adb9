"""The use case: given a valid refund request, make sure its refund is reserved on the record,
created at Stripe once, and its Stripe id and status recorded.

The order of writes survives a crash between any two steps: the amount is reserved first (so
no concurrent request can take it too), the Stripe refund is created with the deterministic
idempotency key `refund-<refundId>` (Stripe answers a repeat with the same refund), and its id
and status are recorded. A redelivered request resumes wherever the previous one stopped. Its
success reaches the rider and Kafka when Stripe says so (a webhook, or the reconciler).
"""

from __future__ import annotations

import logging

from services.consumer.process import Outcome
from shared.refund_model import Refund, RefundRefused, RefundRequest, RefundStatus
from shared.refunds import RefundBook, RefundUpdate, Reservation
from shared.stripe_gateway import PermanentStripeError, RefundCall, StripeGateway

logger = logging.getLogger(__name__)


class RefundIssuer:
    def __init__(self, book: RefundBook, gateway: StripeGateway) -> None:
        self._book = book
        self._gateway = gateway

    async def refund(self, request: RefundRequest) -> Outcome:
        reservation = await self._book.reserve(request)
        refund = reservation.refund
        if refund.status is RefundStatus.FAILED and refund.stripe_refund_id is None:
            # Refused by Stripe on an earlier delivery, which may have died before its dead letter.
            raise RefundRefused(f"refund failed: {refund.failure_reason}")
        if refund.stripe_refund_id is not None or refund.status is not RefundStatus.PENDING:
            return Outcome.ALREADY_FINISHED
        await self._create_at_stripe(reservation)
        return Outcome.CREATED

    async def _create_at_stripe(self, reservation: Reservation) -> None:
        payment, refund = reservation.payment, reservation.refund
        selector = [{"rideId": payment.ride_id}]
        try:
            created = await self._gateway.create_refund(
                RefundCall(
                    ride_id=payment.ride_id,
                    refund_id=refund.refund_id,
                    payment_intent_id=await self._payment_intent(reservation),
                    amount=refund.amount,
                    reason=refund.reason,
                )
            )
        except (PermanentStripeError, RefundRefused) as error:
            reason = error.reason if isinstance(error, RefundRefused) else str(error)
            await self._book.settle(selector, _released(refund, reason))
            raise RefundRefused(f"refund not created: {reason}") from error
        await self._book.settle(
            selector,
            RefundUpdate(
                status=RefundStatus.from_stripe(created.status),
                source="refund-request",
                refund_id=refund.refund_id,
                stripe_refund_id=created.id,
                amount=created.amount,
                failure_reason=created.failure_reason,
            ),
            last_seen=reservation.record,
        )
        logger.debug(
            "stripe refund created",
            extra={"rideId": payment.ride_id, "refundId": refund.refund_id, "re": created.id},
        )

    async def _payment_intent(self, reservation: Reservation) -> str:
        """The PaymentIntent to refund: stored by the webhook, else asked of the session."""
        payment = reservation.payment
        if payment.payment_intent_id:
            return payment.payment_intent_id
        if payment.stripe_session_id is not None:
            session = await self._gateway.retrieve_checkout_session(payment.stripe_session_id)
            if session.payment_intent_id:
                return session.payment_intent_id
        raise RefundRefused("the paid ride has no PaymentIntent to refund")


def _released(refund: Refund, reason: str) -> RefundUpdate:
    """Release the reservation: the refund failed before Stripe had it."""
    return RefundUpdate(
        status=RefundStatus.FAILED,
        source="refund-request",
        refund_id=refund.refund_id,
        failure_reason=reason[:500],
    )
