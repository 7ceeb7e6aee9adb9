"""A delayed payment method (a bank debit): the Checkout Session completes `unpaid` and the
ride is `processing` until `checkout.session.async_payment_succeeded` or `_failed` says how it
went, days later, in any order. The webhook app in-process against real MongoDB and Redis; the
events are Stripe's own example objects (tests/stripe_shapes.py)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from shared.bus import NotificationBus
from shared.store import PaymentStore
from tests.helpers import eventually
from tests.integration.test_webhook import (
    Client,
    client,
    deliver,
    intent_event,
    seed,
    session_event,
    webhook_store,
)

__all__ = ["client", "webhook_store"]  # the fixtures this module uses

Event = dict[str, Any]


def completed_unpaid(ride: str, session_id: str) -> Event:
    """The session completed by bank debit: Stripe has no money yet."""
    return session_event(
        "checkout.session.completed", ride, session_id, status="complete", payment_status="unpaid"
    )


def debit_outcome(ride: str, session_id: str, succeeded: bool) -> Event:
    if succeeded:
        return session_event("checkout.session.async_payment_succeeded", ride, session_id)
    return session_event(
        "checkout.session.async_payment_failed", ride, session_id, payment_status="unpaid"
    )


async def record(store: PaymentStore, ride: str) -> dict[str, Any]:
    document = await store.find_document(ride)
    assert document is not None
    return document


async def statuses_told(bus: NotificationBus, ride: str, last: str) -> list[str]:
    async def told() -> list[str]:
        statuses = [str(m.message.get("status")) for m in await bus.history(f"user-{ride}")]
        return statuses if statuses[-1:] == [last] else []

    return await eventually(told, timeout_s=10, what=f"the rider told {last}")


@pytest.mark.parametrize(("succeeded", "final"), [(True, "succeeded"), (False, "failed")])
async def test_a_debit_is_processing_until_stripe_says_how_it_went(
    client: Client,
    webhook_store: PaymentStore,
    bus: NotificationBus,
    unique: str,
    succeeded: bool,
    final: str,
) -> None:
    ride = f"ride-{unique}"
    session_id = await seed(webhook_store, ride)
    completed = completed_unpaid(ride, session_id)
    assert await deliver(client, completed) == (200, {"received": True, "result": "applied"})
    document = await record(webhook_store, ride)
    assert document["status"] == "processing"
    assert document["attempts"][0]["asyncPayment"] == "processing"
    assert (await statuses_told(bus, ride, "processing"))[-1] == "processing"

    outcome = debit_outcome(ride, session_id, succeeded)
    assert await deliver(client, outcome) == (200, {"received": True, "result": "applied"})
    document = await record(webhook_store, ride)
    assert (document["status"], document["attempts"][0]["asyncPayment"]) == (final, final)
    assert (await statuses_told(bus, ride, final))[-2:] == ["processing", final]


def debit_that_failed(ride: str, session_id: str) -> list[Event]:
    """Every event a failed bank debit brings, after a card was declined in the same session."""
    return [
        completed_unpaid(ride, session_id),
        intent_event("payment_intent.payment_failed", ride),
        debit_outcome(ride, session_id, succeeded=False),
    ]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_a_failed_debit_ends_failed_in_any_order(
    client: Client, webhook_store: PaymentStore, unique: str, order: tuple[int, ...]
) -> None:
    """A late completion never makes a debit whose failure is known `processing` again."""
    ride = f"ride-{unique}"
    session_id = await seed(webhook_store, ride)
    declined = intent_event("payment_intent.payment_failed", ride)
    assert (await deliver(client, declined))[1]["result"] == "applied"  # the card, first
    events = debit_that_failed(ride, session_id)
    for index in order:
        assert (await deliver(client, events[index]))[0] == 200
    document = await record(webhook_store, ride)
    assert (document["status"], document["attempts"][0]["asyncPayment"]) == ("failed", "failed")


async def test_a_late_completion_does_not_undo_a_debit_that_succeeded(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    ride = f"ride-{unique}"
    session_id = await seed(webhook_store, ride)
    paid = debit_outcome(ride, session_id, succeeded=True)
    assert (await deliver(client, paid))[1]["result"] == "applied"
    late = completed_unpaid(ride, session_id)
    assert (await deliver(client, late))[1]["result"] == "unchanged"
    assert (await record(webhook_store, ride))["status"] == "succeeded"
