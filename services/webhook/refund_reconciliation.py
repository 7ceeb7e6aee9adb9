"""Reconciliation of refunds: ask Stripe about refunds still `pending` on a quiet record.

A refund's outcome reaches us by webhook; when that webhook is lost, the refund would stay
pending (and its amount reserved) for ever. In each reconciliation run (under the reconciler's
lease) payments with a pending refund Stripe knows of, unchanged for RECONCILE_AFTER_S, are
looked up at Stripe and settled through the same conditional update as a webhook. The run
also counts the open disputes for the `payments_disputes_open` gauge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from prometheus_client import Counter, Gauge

from shared.model import PaymentStatus
from shared.refund_model import RefundStatus
from shared.refunds import RefundBook, RefundUpdate, refunds_of
from shared.store import Payment
from shared.stripe_gateway import StripeGateway

logger = logging.getLogger(__name__)

REFUNDS_SETTLED = Counter(
    "payments_reconciler_refunds_settled_total", "Pending refunds settled by asking Stripe"
)
OPEN_DISPUTES = Gauge("payments_disputes_open", "Payments disputed now, awaiting the outcome")


class RefundSettler:
    def __init__(
        self,
        book: RefundBook,
        gateway: StripeGateway,
        on_change: Callable[[Payment], None],
        *,
        settle_after_s: float,
        batch: int,
    ) -> None:
        self._book = book
        self._gateway = gateway
        self._on_change = on_change
        self._quiet_for = timedelta(seconds=settle_after_s)
        self._batch = batch

    async def run_once(self) -> int:
        """Settle what Stripe has decided; returns how many refunds were settled."""
        settled = 0
        for document in await self._book.with_pending_refunds(self._quiet_for, self._batch):
            ride_id = document["rideId"]
            for refund in refunds_of(document):
                if refund.status is not RefundStatus.PENDING or refund.stripe_refund_id is None:
                    continue
                try:
                    settled += await self._settle(
                        ride_id, refund.refund_id, refund.stripe_refund_id
                    )
                except Exception as error:
                    logger.warning(
                        "could not reconcile refund",
                        extra={
                            "rideId": ride_id,
                            "refundId": refund.refund_id,
                            "error": str(error),
                        },
                    )
        OPEN_DISPUTES.set(await self._book.count_with_status(PaymentStatus.DISPUTED))
        return settled

    async def _settle(self, ride_id: str, refund_id: str, stripe_refund_id: str) -> int:
        at_stripe = await self._gateway.retrieve_refund(stripe_refund_id)
        status = RefundStatus.from_stripe(at_stripe.status)
        if status is RefundStatus.PENDING:
            return 0
        payment = await self._book.settle(
            [{"rideId": ride_id}],
            RefundUpdate(
                status=status,
                source="reconciler",
                refund_id=refund_id,
                stripe_refund_id=stripe_refund_id,
                failure_reason=at_stripe.failure_reason,
                event_id=f"reconcile:{stripe_refund_id}:{status.value}",
            ),
        )
        if payment is None:
            return 0
        REFUNDS_SETTLED.inc()
        logger.info(
            "refund reconciled",
            extra={"rideId": ride_id, "refundId": refund_id, "status": status.value},
        )
        self._on_change(payment)
        return 1
