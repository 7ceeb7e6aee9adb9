"""Reconciliation: ask Stripe about payments that have been quiet too long.

Webhooks get lost (an endpoint down longer than Stripe retries, a wrong secret). Every
interval, the replica holding the lease takes payments still `pending` or `failed` whose last
change is older than RECONCILE_AFTER_S, and `processing` ones (a bank debit on its way, which
takes days) not asked about for RECHECK_PROCESSING_AFTER_S, the least recently reconciled first
(so every one gets its turn, whatever the backlog), reads their Checkout Session, and applies
what Stripe says through the same transition rules and notification path as a webhook. A
session complete but unpaid is a delayed payment: `processing` while its PaymentIntent is,
`failed` once it asks for another payment method. An open session past its
`expires_at` is expired at Stripe first; so are the other sessions of a ride paid on an earlier
attempt, when the webhook that saw the payment could not expire them. The lease is renewed
while the run works, and a run that finds it lost stops touching payments.

It lives in the webhook service because it is the same job seen from the other side (Stripe
tells us / we ask Stripe): it shares the status-change use case, the outbox and the
notifications, and needs no Kafka consumer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import Counter

from services.webhook.checkout_links import expire_other_sessions
from services.webhook.events import PaymentUpdate
from services.webhook.refund_reconciliation import RefundSettler
from services.webhook.status_changes import Result, apply_update
from shared.model import PaymentStatus
from shared.periodic import PeriodicJob
from shared.store import ASYNC_PAYMENT_FOLLOWS, Lease, Payment, PaymentStore
from shared.stripe_gateway import CheckoutSession, PermanentStripeError, StripeGateway

logger = logging.getLogger(__name__)

CHECKED = Counter("payments_reconciler_checked_total", "Payments checked against Stripe")
FIXED = Counter(
    "payments_reconciler_fixed_total", "Statuses corrected by reconciliation", ["status"]
)
EXPIRED_AT_STRIPE = Counter("payments_reconciler_expired_total", "Overdue sessions expired")
ERRORS = Counter("payments_reconciler_errors_total", "Payments that could not be reconciled")
LEASES_LOST = Counter("payments_reconciler_leases_lost_total", "Runs stopped by a lost lease")
UNKNOWN_SESSIONS = Counter(
    "payments_reconciler_unknown_sessions_total",
    "Checks of a Checkout Session Stripe does not know (404: keys of another mode or account?)",
)


# A bank debit takes days: a `processing` ride is asked about hourly, not every run.
RECHECK_PROCESSING_AFTER_S = 3600.0


def stripe_says(session: CheckoutSession) -> PaymentStatus | None:
    """The status a Checkout Session shows, or None when it is still undecided."""
    if session.status == "complete" and session.payment_status in ("paid", "no_payment_required"):
        return PaymentStatus.SUCCEEDED
    if session.status == "expired":
        return PaymentStatus.EXPIRED
    if session.payment_intent_status == "canceled":
        return PaymentStatus.CANCELED
    if session.status == "complete":  # unpaid: a delayed payment method
        if session.payment_intent_status == "requires_payment_method":
            return PaymentStatus.FAILED
        return PaymentStatus.PROCESSING
    if session.payment_failed and session.payment_intent_status == "requires_payment_method":
        return PaymentStatus.FAILED
    return None


def async_payment_of(
    payment: Payment, session: CheckoutSession, target: PaymentStatus
) -> PaymentStatus | None:
    """What a session says of a delayed payment: one that completed unpaid is one, and so is
    one the record knows as one (paid since). A cancellation says nothing of it."""
    current = payment.current_attempt
    delayed = session.payment_status == "unpaid" or (
        current is not None and current.session_completed
    )
    if session.status != "complete" or not delayed or target not in ASYNC_PAYMENT_FOLLOWS:
        return None
    return target


class UnknownSessions:
    """Sessions Stripe answered 404 for, and when to ask again.

    Such a session was made with other keys (test instead of live, another account): asking
    every run would not make it known, so it is asked about after 1 h, then 2 h, ... up to a
    day, and logged only the first time. Kept in memory: a restarted replica logs it once more.
    """

    FIRST_WAIT_S = 3600.0
    MAX_WAIT_S = 24 * 3600.0

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._next_check: dict[str, tuple[int, float]] = {}  # session id -> (misses, when)

    def due(self, session_id: str) -> bool:
        known = self._next_check.get(session_id)
        return known is None or self._clock() >= known[1]

    def missed(self, session_id: str) -> bool:
        """Note another 404; True the first time, when it deserves a log line."""
        misses = self._next_check.get(session_id, (0, 0.0))[0] + 1
        wait = min(self.FIRST_WAIT_S * 2 ** (misses - 1), self.MAX_WAIT_S)
        self._next_check[session_id] = (misses, self._clock() + wait)
        return misses == 1

    def found(self, session_id: str) -> None:
        self._next_check.pop(session_id, None)


def is_unknown_session(error: Exception) -> bool:
    """Stripe answered 404: it has no such session under these keys."""
    return isinstance(error, PermanentStripeError) and (
        getattr(error.__cause__, "http_status", None) == 404
    )


def is_overdue(session: CheckoutSession, now: float) -> bool:
    return session.status == "open" and session.expires_at is not None and session.expires_at <= now


@dataclass
class RunReport:
    ran: bool
    checked: int = 0
    fixed: list[str] = field(default_factory=list)
    lost_lease: bool = False
    closed: list[str] = field(default_factory=list)  # rides whose other sessions were expired


class Reconciler(PeriodicJob):
    name = "reconciliation"

    def __init__(
        self,
        store: PaymentStore,
        gateway: StripeGateway,
        lease: Lease,
        on_change: Callable[[Payment], None],
        *,
        settle_after_s: float,
        batch: int,
        rate_per_s: float,
        renew_every_s: float,
        clock: Callable[[], float] = time.time,
        refunds: RefundSettler | None = None,
        recheck_processing_after_s: float = RECHECK_PROCESSING_AFTER_S,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._lease = lease
        self._on_change = on_change
        self._settle_after = timedelta(seconds=settle_after_s)
        self._batch = batch
        self._pause_s = 1.0 / rate_per_s
        self._renew_every_s = renew_every_s
        self._clock = clock
        self._refunds = refunds
        self._unknown = UnknownSessions(clock)
        self._recheck_processing = timedelta(seconds=recheck_processing_after_s)

    async def run_once(self) -> RunReport:
        if not await self._lease.acquire():
            return RunReport(ran=False)
        report = RunReport(ran=True)
        try:
            await self._reconcile(report)
            if not report.lost_lease:
                await self._expire_other_sessions(report)
        finally:
            await self._lease.release()
        if report.checked:
            logger.info(
                "reconciliation run",
                extra={
                    "checked": report.checked,
                    "fixed": len(report.fixed),
                    "lostLease": report.lost_lease,
                },
            )
        return report

    async def _reconcile(self, report: RunReport) -> None:
        renewed = time.monotonic()
        unsettled = await self._store.unsettled(
            self._settle_after, self._batch, self._recheck_processing
        )
        for payment in unsettled:
            if time.monotonic() - renewed >= self._renew_every_s:
                if not await self._lease.acquire():
                    LEASES_LOST.inc()
                    logger.warning("reconciler lease lost; stopping this run")
                    report.lost_lease = True
                    return
                renewed = time.monotonic()
            assert payment.stripe_session_id is not None
            if not self._unknown.due(payment.stripe_session_id) or _failed_for_good(payment):
                await self._store.mark_reconciled(payment.ride_id)  # to the back of the queue
                continue
            report.checked += 1
            if await self._reconcile_one(payment):
                report.fixed.append(payment.ride_id)
            await self._store.mark_reconciled(payment.ride_id)
            await asyncio.sleep(self._pause_s)
        if self._refunds is not None:
            await self._refunds.run_once()

    async def _expire_other_sessions(self, report: RunReport) -> None:
        """Rides paid on an earlier attempt whose other sessions the webhook could not expire."""
        for paid in await self._store.with_sessions_to_expire(self._batch):
            try:
                await expire_other_sessions(self._store, self._gateway, paid)
            except Exception as error:
                ERRORS.inc()
                logger.warning(
                    "could not expire a paid ride's other sessions",
                    extra={"rideId": paid.ride_id, "error": str(error)},
                )
                continue
            report.closed.append(paid.ride_id)
            await asyncio.sleep(self._pause_s)

    async def _reconcile_one(self, payment: Payment) -> bool:
        CHECKED.inc()
        assert payment.stripe_session_id is not None
        try:
            session = await self._gateway.retrieve_checkout_session(payment.stripe_session_id)
            self._unknown.found(session.id)
            if is_overdue(session, self._clock()):
                session = await self._gateway.expire_checkout_session(session.id)
                EXPIRED_AT_STRIPE.inc()
            target = stripe_says(session)
            if target is None:
                return False
            update = _update(payment, session, target)
            if target is payment.status and not _news_of_async_payment(payment, update):
                return False
            applied = await apply_update(self._store, update, source="reconciler")
        except Exception as error:
            if is_unknown_session(error):
                self._note_unknown(payment, error)
                return False
            ERRORS.inc()
            logger.warning(
                "could not reconcile payment",
                extra={"rideId": payment.ride_id, "error": str(error)},
            )
            return False
        if applied.result is not Result.APPLIED or applied.payment is None:
            return False
        FIXED.labels(target.value).inc()
        logger.info(
            "payment reconciled",
            extra={"rideId": payment.ride_id, "from": payment.status.value, "status": target.value},
        )
        self._on_change(applied.payment)
        return True

    def _note_unknown(self, payment: Payment, error: Exception) -> None:
        assert payment.stripe_session_id is not None
        UNKNOWN_SESSIONS.inc()
        log = {"rideId": payment.ride_id, "sessionId": payment.stripe_session_id}
        if self._unknown.missed(payment.stripe_session_id):
            logger.warning(
                "Stripe does not know this payment's session (HTTP 404): made with other keys "
                "(test instead of live)? Asking again ever more rarely, up to once a day",
                extra={**log, "error": str(error)},
            )
        else:
            logger.debug("session still unknown to Stripe", extra=log)


def _failed_for_good(payment: Payment) -> bool:
    """A ride whose bank debit failed: its session is complete and nothing more will happen to
    it at Stripe; only a new attempt (the payments API) moves the ride on."""
    current = payment.current_attempt
    return (
        payment.status is PaymentStatus.FAILED
        and current is not None
        and current.async_payment is PaymentStatus.FAILED
    )


def _news_of_async_payment(payment: Payment, update: PaymentUpdate) -> bool:
    """The status is right, but the record does not know yet what Stripe says of its delayed
    payment (the outcome of a debit whose ride failed by another event)."""
    current = payment.current_attempt
    known = current.async_payment if current is not None else None
    return update.async_payment is not None and update.async_payment is not known


def _update(payment: Payment, session: CheckoutSession, target: PaymentStatus) -> PaymentUpdate:
    return PaymentUpdate(
        event_id=f"reconcile:{session.id}:{target.value}",
        event_type="reconciliation",
        target=target,
        # The current attempt only: if a new one started meanwhile, this answer is stale.
        selectors=[{"rideId": payment.ride_id, "stripeSessionId": session.id}],
        payment_intent_id=session.payment_intent_id,
        ride_id=payment.ride_id,
        session_id=session.id,
        attempt=payment.attempt,
        async_payment=async_payment_of(payment, session, target),
    )
