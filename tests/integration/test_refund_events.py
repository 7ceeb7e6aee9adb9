"""Refund and dispute events through the webhook app in-process, against real MongoDB and
Redis: applied once, in any order, each visible change told to the rider."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from typing import Any

from shared.bus import NotificationBus
from shared.refund_model import RefundRequest
from shared.refunds import RefundBook
from shared.store import PaymentStore
from tests.helpers import eventually
from tests.integration.test_webhook import (
    Client,
    client,
    deliver,
    seed,
    session_event,
    stripe_event,
    webhook_store,
)

__all__ = ["client", "webhook_store"]  # the fixtures this module uses

CHARGE = 2550


async def paid_ride(client: Client, store: PaymentStore, ride: str) -> None:
    session_id = await seed(store, ride)
    completed = session_event("checkout.session.completed", ride, session_id)
    assert (await deliver(client, completed))[1]["result"] == "applied"


async def reserve(store: PaymentStore, ride: str, refund_id: str, amount: str) -> None:
    await RefundBook(store).reserve(
        RefundRequest(refund_id, ride, Decimal(amount), "requested_by_customer")
    )


def refund_object(ride: str, refund_id: str, amount: int, status: str) -> dict[str, Any]:
    return {
        "id": f"re_{refund_id}",
        "object": "refund",
        "amount": amount,
        "currency": "usd",
        "payment_intent": f"pi_{ride}",
        "metadata": {"rideId": ride, "refundId": refund_id},
        "status": status,
        "failure_reason": "lost_or_stolen_card" if status == "failed" else None,
    }


def charge_refunded(ride: str, refunds: list[dict[str, Any]]) -> dict[str, Any]:
    charge = {
        "id": f"ch_{ride}",
        "object": "charge",
        "payment_intent": f"pi_{ride}",
        "metadata": {"rideId": ride},
        "refunds": {"object": "list", "data": refunds},
    }
    return stripe_event("charge.refunded", charge)


async def record(store: PaymentStore, ride: str) -> dict[str, Any]:
    document = await store.find_document(ride)
    assert document is not None
    return document


async def test_refund_events_shuffled_and_duplicated_end_in_one_state(
    client: Client, webhook_store: PaymentStore, bus: NotificationBus, unique: str
) -> None:
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    await reserve(webhook_store, ride, "a", "10.00")
    await reserve(webhook_store, ride, "b", "5.50")
    events = [
        stripe_event("refund.created", refund_object(ride, "a", 1000, "pending")),
        stripe_event("refund.updated", refund_object(ride, "a", 1000, "succeeded")),
        stripe_event("refund.created", refund_object(ride, "b", 550, "pending")),
        stripe_event("refund.updated", refund_object(ride, "b", 550, "succeeded")),
        charge_refunded(ride, [refund_object(ride, "a", 1000, "succeeded")]),
        charge_refunded(
            ride,
            [refund_object(ride, "a", 1000, "succeeded"), refund_object(ride, "b", 550, "pending")],
        ),
    ]
    shuffled = [*events, *random.sample(events, 3)]
    random.shuffle(shuffled)
    answers = await asyncio.gather(*(deliver(client, event) for event in shuffled))
    assert {status for status, _ in answers} == {200}

    document = await record(webhook_store, ride)
    assert (document["status"], document["amountRefunded"]) == ("partially_refunded", 1550)
    refunds = {r["refundId"]: (r["stripeRefundId"], r["status"]) for r in document["refunds"]}
    assert refunds == {"a": ("re_a", "succeeded"), "b": ("re_b", "succeeded")}

    async def told() -> list[dict[str, Any]]:
        updates = [m.message for m in await bus.history(f"user-{ride}")]
        refunded = [m for m in updates if m.get("amountRefunded")]
        return refunded if any(m["amountRefunded"] == 1550 for m in refunded) else []

    refunded = await eventually(told, timeout_s=20, what="the rider told of both refunds")
    assert all(m["status"] == "partially_refunded" for m in refunded)
    amounts = [m["amountRefunded"] for m in refunded]
    assert amounts == sorted(set(amounts)), "a rider saw a refund twice or out of order"


async def test_a_failed_refund_releases_its_amount(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    await reserve(webhook_store, ride, "a", "25.50")
    failed = stripe_event("refund.failed", refund_object(ride, "a", CHARGE, "failed"))
    assert (await deliver(client, failed))[1]["result"] == "applied"
    late = stripe_event("refund.updated", refund_object(ride, "a", CHARGE, "succeeded"))
    assert (await deliver(client, late))[1]["result"] == "unchanged"  # final stays final
    document = await record(webhook_store, ride)
    assert (document["status"], document["amountRefunded"]) == ("succeeded", 0)
    await reserve(webhook_store, ride, "b", "25.50")  # the whole charge is available again
    document = await record(webhook_store, ride)
    assert [r["status"] for r in document["refunds"]] == ["failed", "pending"]


async def test_a_full_refund_makes_the_ride_refunded(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    await reserve(webhook_store, ride, "a", "25.50")
    succeeded = stripe_event("refund.updated", refund_object(ride, "a", CHARGE, "succeeded"))
    assert (await deliver(client, succeeded))[1]["result"] == "applied"
    document = await record(webhook_store, ride)
    assert (document["status"], document["amountRefunded"]) == ("refunded", CHARGE)
    [event] = [e for e in document["outbox"] if e["status"] == "refunded"]
    assert (event["version"], event["amountRefunded"]) == (document["version"], CHARGE)


def dispute(ride: str, dispute_id: str, status: str) -> dict[str, Any]:
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": CHARGE,
        "charge": f"ch_{ride}",
        "payment_intent": f"pi_{ride}",
        "metadata": {},
        "status": status,
    }


async def test_a_dispute_won_returns_to_the_status_before_it(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    opened = stripe_event("charge.dispute.created", dispute(ride, "dp_1", "needs_response"))
    assert (await deliver(client, opened))[1]["result"] == "applied"
    assert (await record(webhook_store, ride))["status"] == "disputed"
    won = stripe_event("charge.dispute.closed", dispute(ride, "dp_1", "won"))
    assert (await deliver(client, won))[1]["result"] == "applied"
    assert (await deliver(client, opened))[1]["result"] == "duplicate"
    document = await record(webhook_store, ride)
    assert document["status"] == "succeeded"
    assert [h["status"] for h in document["history"]][-2:] == ["disputed", "succeeded"]


async def test_a_dispute_lost_even_when_its_close_comes_first(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    lost = stripe_event("charge.dispute.closed", dispute(ride, "dp_2", "lost"))
    opened = stripe_event("charge.dispute.created", dispute(ride, "dp_2", "needs_response"))
    assert (await deliver(client, lost))[1]["result"] == "applied"
    assert (await deliver(client, opened))[1]["result"] == "unchanged"
    assert (await record(webhook_store, ride))["status"] == "dispute_lost"
