"""The use case behind `POST .../payments/{rideId}/checkout`: the link a rider can pay now.

A ride's payment may need several Checkout Sessions (attempts), one after another, never two
payable at once. The current one is returned while it can be paid; once it cannot (expired or
canceled at Stripe; an open one past its `expires_at` is expired at Stripe first), the next
attempt is created with idempotency key `checkout-<rideId>-<n>` and stored with a conditional
update on the attempt it replaces. So concurrent and repeated calls, from any number of
replicas, end with one session per attempt number: calls in one process share one flight,
processes racing for the same attempt get the same session from Stripe, and a call that still
lost (the key forgotten after 24 h, or the ride paid meanwhile) expires its own session.

Also here: after a success on an earlier attempt, the ride's other sessions are expired.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import Counter

from services.webhook.events import PaymentUpdate
from services.webhook.status_changes import apply_update
from shared.announcements import announce_payment_url
from shared.bus import NotificationBus
from shared.model import UNPAID_STATUSES, PaymentStatus
from shared.retry import Backoff, is_transient, until_done
from shared.store import Payment, PaymentStore
from shared.stripe_gateway import (
    CheckoutRequest,
    CheckoutSession,
    PermanentStripeError,
    StripeGateway,
    expires_at_of,
)

logger = logging.getLogger(__name__)

ATTEMPTS_CREATED = Counter("payments_checkout_attempts_created_total", "New attempts stored")
SESSIONS_EXPIRED = Counter(
    "payments_checkout_sessions_expired_total",
    "Sessions expired at Stripe so that a ride has one payable session at most",
    ["why"],
)
STILL_PAYABLE = (PaymentStatus.PENDING, PaymentStatus.FAILED)
# The record alone vouches for a link only this long before its expiry, and only this soon
# after Stripe said it was open (`payableCheck`); otherwise Stripe is asked.
EXPIRY_MARGIN = timedelta(minutes=5)
RECHECK_AFTER = timedelta(seconds=60)


class RideNotFound(LookupError):
    pass


class RideNotPayable(Exception):
    """The ride is paid (or a payment is in progress): no link to give."""


class LinkNotReady(Exception):
    """The ride's first session is still being created by the consumer: retry shortly."""


@dataclass(frozen=True, slots=True)
class Redirects:
    success_url: str
    cancel_url: str


class CheckoutLinks:
    def __init__(
        self,
        store: PaymentStore,
        gateway: StripeGateway,
        bus: NotificationBus,
        redirects: Redirects,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._bus = bus
        self._redirects = redirects
        self._flights: dict[str, asyncio.Task[Payment]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def link_for(self, ride_id: str) -> Payment:
        """The ride's payable attempt; concurrent calls in this process share one flight."""
        flight = self._flights.get(ride_id)
        if flight is None:
            flight = asyncio.create_task(self._payable_attempt(ride_id))
            self._flights[ride_id] = flight
            flight.add_done_callback(lambda _: self._flights.pop(ride_id, None))
        return await asyncio.shield(flight)

    async def _payable_attempt(self, ride_id: str) -> Payment:
        payment = await self._store.find({"rideId": ride_id})
        if payment is None:
            raise RideNotFound(ride_id)
        if payment.status is PaymentStatus.PROCESSING:
            raise RideNotPayable(f"ride {ride_id} is processing: its payment is on its way")
        if payment.status not in UNPAID_STATUSES:
            raise RideNotPayable(f"ride {ride_id} is {payment.status.value}")
        if payment.stripe_session_id is None:
            raise LinkNotReady(f"ride {ride_id} has no Checkout Session yet")
        if _session_completed(payment) or (
            not await self._payable_by_record(payment) and not await self._open_at_stripe(payment)
        ):
            payment = await self._next_attempt(payment)
        await self._announce(payment)
        return payment

    async def _payable_by_record(self, payment: Payment) -> bool:
        """Whether the record alone proves the current session payable: a payable status, at
        least EXPIRY_MARGIN before its `expires_at`, and found open at Stripe within
        RECHECK_AFTER. Stripe may expire a session before the record says (early, or its
        expiry webhook lost); only Stripe can tell then."""
        expires_at = payment.expires_at
        if payment.status not in STILL_PAYABLE or expires_at is None:
            return False
        now = await self._store.clock()
        if expires_at <= now + EXPIRY_MARGIN:
            return False
        checked = await self._store.collection.find_one(
            {
                "rideId": payment.ride_id,
                "payableCheck.stripeSessionId": payment.stripe_session_id,
                "payableCheck.at": {"$gte": now - RECHECK_AFTER},
            },
            projection={"_id": True},
        )
        return checked is not None

    async def _open_at_stripe(self, payment: Payment) -> bool:
        """Whether the current session can still be paid, says Stripe; an overdue one is
        expired there first. Raises RideNotPayable if Stripe says it was paid."""
        if payment.status is PaymentStatus.EXPIRED:
            return False  # Stripe said so itself
        assert payment.stripe_session_id is not None
        session = await self._gateway.retrieve_checkout_session(payment.stripe_session_id)
        # Stripe's `expires_at` against this host's clock, as the reconciler judges it.
        if session.status == "open" and (session.expires_at or 0) <= time.time():
            session = await self._expire(session.id, why="overdue")
        elif session.status == "open" and payment.status is PaymentStatus.CANCELED:
            # Its PaymentIntent was canceled: the attempt has ended, whatever the session says.
            session = await self._expire(session.id, why="canceled")
        if session.status == "complete":
            return await self._completed(payment, session)
        if session.status != "open":
            return False
        await self._note_open(payment)
        return True

    async def _completed(self, payment: Payment, session: CheckoutSession) -> bool:
        """A completed session can never be paid again: paid (its success is recorded), a
        delayed payment on its way (RideNotPayable both), or that payment failed (False: the
        next attempt is the link)."""
        failed = session.payment_intent_status == "requires_payment_method"
        if session.payment_status == "unpaid" and failed:
            return False
        await self._record_success(payment, session)
        raise RideNotPayable(f"ride {payment.ride_id} is paid or its payment in progress")

    async def _note_open(self, payment: Payment) -> None:
        """Stripe says the current session is open now (by MongoDB's clock): bookkeeping, so
        calls in the next RECHECK_AFTER need not ask again."""
        session_id = {"$literal": payment.stripe_session_id}
        await self._store.collection.update_one(
            {"rideId": payment.ride_id, "stripeSessionId": payment.stripe_session_id},
            [{"$set": {"payableCheck": {"stripeSessionId": session_id, "at": "$$NOW"}}}],
        )

    async def _expire(self, session_id: str, *, why: str) -> CheckoutSession:
        """Expire an open session; if Stripe says it is no longer open, what it is now."""
        try:
            session = await self._gateway.expire_checkout_session(session_id)
        except PermanentStripeError:  # paid or expired meanwhile
            return await self._gateway.retrieve_checkout_session(session_id)
        SESSIONS_EXPIRED.labels(why).inc()
        return session

    async def _record_success(self, payment: Payment, session: CheckoutSession) -> None:
        """A paid session whose webhook has not arrived yet: apply it as the reconciler would."""
        if session.payment_status not in ("paid", "no_payment_required"):
            return
        await apply_update(
            self._store,
            PaymentUpdate(
                event_id=f"checkout-link:{session.id}:succeeded",
                event_type="checkout-link",
                target=PaymentStatus.SUCCEEDED,
                selectors=[{"rideId": payment.ride_id, "stripeSessionId": session.id}],
                payment_intent_id=session.payment_intent_id,
                ride_id=payment.ride_id,
                session_id=session.id,
                attempt=payment.attempt,
            ),
            source="checkout-link",
        )

    async def _next_attempt(self, current: Payment) -> Payment:
        number = current.attempt + 1
        session = await self._gateway.create_checkout_session(
            CheckoutRequest(
                ride_id=current.ride_id,
                user_id=current.user_id,
                amount=current.amount,
                currency=current.currency,
                success_url=self._redirects.success_url,
                cancel_url=self._redirects.cancel_url,
                attempt=number,
            )
        )
        if not session.url:
            raise RuntimeError(f"Stripe returned session {session.id} without a url")
        started = await self._store.start_attempt(
            current, session.id, session.url, expires_at_of(session)
        )
        if started is not None:
            ATTEMPTS_CREATED.inc()
            logger.info(
                "new checkout attempt",
                extra={"rideId": current.ride_id, "attempt": number, "stripeSessionId": session.id},
            )
            return started
        return await self._lost_race(current, session)

    async def _lost_race(self, current: Payment, ours: CheckoutSession) -> Payment:
        """Another call stored the next attempt first (usually with this very session), or the
        ride was paid: a session of ours that is not the stored one must not stay payable."""
        stored = await self._store.find({"rideId": current.ride_id})
        if stored is None:
            raise RideNotFound(current.ride_id)
        if stored.stripe_session_id != ours.id:
            logger.warning(
                "expiring a session another call made redundant",
                extra={"rideId": current.ride_id, "stripeSessionId": ours.id},
            )
            await self._expire(ours.id, why="redundant")
        if stored.status not in STILL_PAYABLE:
            raise RideNotPayable(f"ride {current.ride_id} is {stored.status.value}")
        return stored

    async def _announce(self, payment: Payment) -> None:
        """Push the link to the rider; the caller has it either way, so a Redis outage is
        logged rather than failing the call."""
        try:
            await announce_payment_url(self._bus, payment)
        except Exception as error:
            if not is_transient(error):
                raise
            logger.warning(
                "could not push the payment link to the rider",
                extra={"rideId": payment.ride_id, "error": str(error)},
            )

    def expire_other_sessions_soon(self, paid: Payment) -> None:
        """After a success on an earlier attempt: expire the ride's other sessions now, in the
        background. Should this fail or the process die, the reconciler does it later: the
        sessions stay listed in the record (`sessionsToExpire`) until they are expired."""
        task = asyncio.create_task(self._expire_other_sessions_quietly(paid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _expire_other_sessions_quietly(self, paid: Payment) -> None:
        try:
            await until_done(
                functools.partial(expire_other_sessions, self._store, self._gateway, paid),
                what="expiring a paid ride's other sessions",
                backoff=Backoff(first_s=0.5, max_s=10),
                log_extra={"rideId": paid.ride_id},
                attempts=5,
            )
        except Exception as error:
            logger.warning(
                "a paid ride's other sessions are left to the reconciler",
                extra={"rideId": paid.ride_id, "error": str(error)},
            )

    async def close(self) -> None:
        if self._closing:
            await asyncio.wait(self._closing, timeout=10)


def _session_completed(payment: Payment) -> bool:
    """The current session completed with a delayed payment that failed: it can never be paid
    again, whatever its `expires_at`."""
    current = payment.current_attempt
    return current is not None and current.session_completed


async def expire_other_sessions(store: PaymentStore, gateway: StripeGateway, paid: Payment) -> None:
    """Expire at Stripe every session listed in `paid.sessions_to_expire` that is still open,
    then strike the list from the record."""
    for session_id in paid.sessions_to_expire:
        session = await gateway.retrieve_checkout_session(session_id)
        if session.status != "open":
            continue
        try:
            await gateway.expire_checkout_session(session_id)
        except PermanentStripeError:  # no longer open: paid or expired meanwhile
            continue
        SESSIONS_EXPIRED.labels("paid_elsewhere").inc()
        logger.info(
            "expired the open session of a ride paid on another attempt",
            extra={"rideId": paid.ride_id, "stripeSessionId": session_id},
        )
    await store.sessions_expired(paid)
