"""Stripe events matched to their attempt, against real MongoDB: an event about an earlier
attempt is noted in its history and never changes the current one, except a success; the
reconciler's answer about an attempt that is no longer current changes nothing."""

from __future__ import annotations

import time
from typing import Any

from services.webhook.events import StripeEvent, interpret
from services.webhook.reconciler import _update as reconciliation_update
from services.webhook.status_changes import Result, apply_update
from shared.model import PaymentStatus
from shared.store import Payment, PaymentStore
from shared.stripe_gateway import CheckoutSession
from tests.stripe_shapes import stripe_object

FARE = 1800


async def two_attempts(store: PaymentStore, ride: str) -> tuple[Payment, Payment]:
    """A ride whose first session expired and whose second is current."""
    reserved = await store.reserve(ride, f"user-{ride}", FARE, "usd")
    first = await store.attach_session(reserved, f"cs_{ride}_1", f"https://pay/{ride}/1")
    second = await store.start_attempt(first, f"cs_{ride}_2", f"https://pay/{ride}/2", None)
    assert second is not None and second.attempt == 2
    return first, second


def event(kind: str, resource: dict[str, Any]) -> StripeEvent:
    return StripeEvent(f"evt_{time.time_ns()}", kind, resource)


def intent(ride: str, attempt: str, **fields: Any) -> dict[str, Any]:
    """Stripe's PaymentIntent of the ride's attempt."""
    made = {
        "id": f"pi_{ride}_{attempt}",
        "amount": FARE,
        "currency": "usd",
        "metadata": {"rideId": ride, "attempt": attempt},
    }
    return stripe_object("payment_intent", **(made | fields))


def session(session_id: str, **fields: Any) -> dict[str, Any]:
    """Stripe's Checkout Session of the ride's fare."""
    made = {"id": session_id, "amount_subtotal": FARE, "amount_total": FARE, "currency": "usd"}
    return stripe_object("checkout.session", **(made | fields))


async def handle(store: PaymentStore, stripe_event: StripeEvent) -> Result:
    update = interpret(stripe_event)
    assert update is not None
    return (await apply_update(store, update, source="test")).result


async def test_a_late_intent_event_about_attempt_1_leaves_attempt_2_as_it_is(
    store: PaymentStore,
) -> None:
    ride = f"late-{time.time_ns()}"
    await two_attempts(store, ride)

    canceled = event("payment_intent.canceled", intent(ride, "1"))
    assert await handle(store, canceled) is Result.UNCHANGED

    document = await store.find_document(ride)
    assert document is not None
    assert (document["status"], document["attempt"]) == ("pending", 2)
    assert document["history"][-1] | {"at": None} == {
        "status": "canceled",
        "eventId": canceled.id,
        "source": "test",
        "attempt": 1,
        "at": None,
    }
    assert [entry["status"] for entry in document["attempts"]] == ["canceled", "pending"]


async def test_a_late_session_event_about_attempt_1_is_noted_not_applied(
    store: PaymentStore,
) -> None:
    ride = f"late-session-{time.time_ns()}"
    await two_attempts(store, ride)

    expired = event(
        "checkout.session.expired",
        session(f"cs_{ride}_1", status="expired", payment_intent=None, metadata={"rideId": ride}),
    )
    assert await handle(store, expired) is Result.UNCHANGED
    assert await handle(store, expired) is Result.UNCHANGED  # Stripe repeats itself

    document = await store.find_document(ride)
    assert document is not None and document["status"] == "pending"
    assert [entry.get("eventId") for entry in document["history"]].count(expired.id) == 1


async def test_events_about_the_current_attempt_apply_as_before(store: PaymentStore) -> None:
    ride = f"current-{time.time_ns()}"
    await two_attempts(store, ride)

    assert await handle(store, event("payment_intent.payment_failed", intent(ride, "2"))) is (
        Result.APPLIED
    )
    paid = event(
        "checkout.session.completed",
        session(
            f"cs_{ride}_2",
            status="complete",
            payment_status="paid",
            payment_intent=f"pi_{ride}_2",
            metadata={"attempt": "2"},
        ),
    )
    assert await handle(store, paid) is Result.APPLIED

    document = await store.find_document(ride)
    assert document is not None and document["status"] == "succeeded"
    assert [entry["status"] for entry in document["attempts"]] == ["pending", "succeeded"]


async def test_a_success_on_attempt_1_settles_the_ride(store: PaymentStore) -> None:
    ride = f"earlier-{time.time_ns()}"
    await two_attempts(store, ride)

    update = interpret(event("payment_intent.succeeded", intent(ride, "1")))
    assert update is not None
    applied = await apply_update(store, update, source="test")

    assert applied.result is Result.APPLIED and applied.paid_on_earlier_attempt == 1
    assert applied.payment is not None and applied.payment.status is PaymentStatus.SUCCEEDED
    assert applied.payment.attempt == 2  # the record still names the latest attempt
    status_event = applied.payment.outbox[-1]
    assert (status_event.attempt, status_event.status) == (1, "succeeded")


async def test_a_success_on_attempt_1_for_another_amount_settles_nothing(
    store: PaymentStore,
) -> None:
    ride = f"earlier-forged-{time.time_ns()}"
    await two_attempts(store, ride)

    forged = event("payment_intent.succeeded", intent(ride, "1", amount=1, currency="eur"))
    assert await handle(store, forged) is Result.MISMATCHED

    document = await store.find_document(ride)
    assert document is not None and (document["status"], document["attempt"]) == ("pending", 2)
    assert forged.id not in [entry.get("eventId") for entry in document["history"]]


async def test_the_reconcilers_answer_about_a_replaced_attempt_changes_nothing(
    store: PaymentStore,
) -> None:
    ride = f"stale-{time.time_ns()}"
    first, _ = await two_attempts(store, ride)
    assert first.stripe_session_id is not None
    # The reconciler read attempt 1, asked Stripe (expired), and a new attempt started meanwhile.
    session = CheckoutSession(first.stripe_session_id, None, "expired", "unpaid", None, None)
    update = reconciliation_update(first, session, PaymentStatus.EXPIRED)

    assert (await apply_update(store, update, source="reconciler")).result is Result.UNCHANGED
    document = await store.find_document(ride)
    assert document is not None and (document["status"], document["attempt"]) == ("pending", 2)
