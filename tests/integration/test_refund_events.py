"""Refund and dispute events through the webhook app in-process, against real MongoDB and
Redis: applied once, in any order, each visible change told to the rider."""

from __future__ import annotations

import asyncio
import json
import random
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import REGISTRY

from shared.bus import NotificationBus
from shared.refund_model import RefundRequest, RefundStatus
from shared.refunds import RefundBook, RefundUpdate
from shared.status_events import STATUS_EVENTS_TOPIC
from shared.store import PaymentStore
from tests.conftest import RunningPart
from tests.helpers import eventually, read_topic
from tests.integration.test_webhook import (
    CURRENCY,
    FARE,
    Client,
    client,
    deliver,
    seed,
    session_event,
    webhook_store,
)
from tests.stripe_shapes import charge_as_sent, stripe_event, stripe_object

__all__ = ["client", "webhook_store"]  # the fixtures this module uses

CHARGE = FARE
EVENTS = "payments_webhook_events_total"


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def paid_ride(client: Client, store: PaymentStore, ride: str) -> None:
    session_id = await seed(store, ride)
    completed = session_event("checkout.session.completed", ride, session_id)
    assert (await deliver(client, completed))[1]["result"] == "applied"


async def reserve(store: PaymentStore, ride: str, refund_id: str, amount: str) -> None:
    await RefundBook(store).reserve(
        RefundRequest(refund_id, ride, Decimal(amount), "requested_by_customer")
    )


def refund_object(ride: str, refund_id: str, amount: int, status: str) -> dict[str, Any]:
    """Stripe's Refund of `amount` from the ride's charge, made by this system (`refundId`)."""
    return stripe_object(
        "refund",
        id=f"re_{refund_id}",
        amount=amount,
        currency=CURRENCY,
        charge=f"ch_{ride}",
        payment_intent=f"pi_{ride}",
        metadata={"rideId": ride, "refundId": refund_id},
        status=status,
        failure_reason="lost_or_stolen_card" if status == "failed" else None,
    )


def charge_refunded(ride: str, refunds: list[dict[str, Any]]) -> dict[str, Any]:
    """Stripe's `charge.refunded` about the ride's charge, listing `refunds`."""
    refunded = sum(r["amount"] for r in refunds if r["status"] == "succeeded")
    charge = stripe_object(
        "charge",
        id=f"ch_{ride}",
        amount=CHARGE,
        amount_captured=CHARGE,
        amount_refunded=refunded,
        currency=CURRENCY,
        payment_intent=f"pi_{ride}",
        metadata={"rideId": ride},
        refunded=refunded == CHARGE,
        refunds={"object": "list", "data": refunds, "has_more": False, "url": "/v1/refunds"},
    )
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
    """Stripe's Dispute of the ride's whole charge."""
    return stripe_object(
        "dispute",
        id=dispute_id,
        amount=CHARGE,
        currency=CURRENCY,
        charge=f"ch_{ride}",
        payment_intent=f"pi_{ride}",
        metadata={},
        status=status,
    )


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


async def test_no_refund_takes_amount_refunded_past_the_charge_whoever_settles_it(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    """The record's own rule, whatever the caller (the webhook refuses such an event before;
    this holds for a race it lost, the consumer and the reconciler too)."""
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    book = RefundBook(webhook_store)
    for amount in (CHARGE * 10, 0):
        outside = RefundUpdate(
            RefundStatus.SUCCEEDED, "test", stripe_refund_id=f"re_{amount}", amount=amount
        )
        assert await book.settle([{"rideId": ride}], outside) is None
    half = RefundUpdate(RefundStatus.SUCCEEDED, "test", stripe_refund_id="re_a", amount=CHARGE // 2)
    assert await book.settle([{"rideId": ride}], half) is not None
    rest = RefundUpdate(RefundStatus.SUCCEEDED, "test", stripe_refund_id="re_b", amount=CHARGE)
    assert await book.settle([{"rideId": ride}], rest) is None
    document = await record(webhook_store, ride)
    assert (document["status"], document["amountRefunded"]) == ("partially_refunded", CHARGE // 2)
    assert [r["stripeRefundId"] for r in document["refunds"]] == ["re_a"]


# Stripe's dispute statuses: an inquiry (`warning_*`) never moves money; a chargeback does.
OPEN_STATUSES = ["warning_needs_response", "warning_under_review", "needs_response", "under_review"]


@pytest.mark.parametrize(
    ("opened_as", "closed_as", "final"),
    [
        ("warning_needs_response", "warning_closed", "succeeded"),
        ("warning_under_review", "warning_closed", "succeeded"),
        ("needs_response", "won", "succeeded"),
        ("under_review", "prevented", "succeeded"),
        ("needs_response", "lost", "dispute_lost"),
    ],
)
async def test_every_dispute_status_disputes_the_ride_while_open_and_settles_it_when_closed(
    client: Client,
    webhook_store: PaymentStore,
    bus: NotificationBus,
    unique: str,
    opened_as: str,
    closed_as: str,
    final: str,
) -> None:
    """An inquiry closed (`warning_closed`) gives the ride back its status, as a dispute won or
    prevented does; only a chargeback lost is `dispute_lost`. Every answer is 200."""
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    opened = stripe_event("charge.dispute.created", dispute(ride, "dp_1", opened_as))
    assert await deliver(client, opened) == (200, {"received": True, "result": "applied"})
    assert (await record(webhook_store, ride))["status"] == "disputed"
    closed = stripe_event("charge.dispute.closed", dispute(ride, "dp_1", closed_as))
    assert await deliver(client, closed) == (200, {"received": True, "result": "applied"})
    document = await record(webhook_store, ride)
    assert document["status"] == final
    assert [(d["disputeId"], d["status"]) for d in document["disputes"]] == [("dp_1", closed_as)]

    async def told() -> list[str]:
        statuses = [str(m.message.get("status")) for m in await bus.history(f"user-{ride}")]
        return statuses if statuses[-1:] == [final] else []

    statuses = await eventually(told, timeout_s=10, what=f"the rider told {final}")
    assert statuses[-2:] == ["disputed", final]


async def test_an_inquiry_closed_before_it_opened_leaves_the_ride_paid(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    closed = stripe_event("charge.dispute.closed", dispute(ride, "dp_1", "warning_closed"))
    opened = stripe_event("charge.dispute.created", dispute(ride, "dp_1", "warning_needs_response"))
    assert (await deliver(client, closed))[0] == 200
    assert (await deliver(client, opened))[1]["result"] == "unchanged"
    assert (await record(webhook_store, ride))["status"] == "succeeded"


async def test_a_ride_stays_disputed_while_another_of_its_disputes_is_open(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    """An inquiry and a chargeback of one charge: closing the inquiry settles nothing yet."""
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    for dispute_id, status in (("dp_1", "warning_needs_response"), ("dp_2", "needs_response")):
        opened = stripe_event("charge.dispute.created", dispute(ride, dispute_id, status))
        assert (await deliver(client, opened))[0] == 200
    closed = stripe_event("charge.dispute.closed", dispute(ride, "dp_1", "warning_closed"))
    assert (await deliver(client, closed))[1]["result"] == "applied"
    assert (await record(webhook_store, ride))["status"] == "disputed"
    won = stripe_event("charge.dispute.closed", dispute(ride, "dp_2", "won"))
    assert (await deliver(client, won))[1]["result"] == "applied"
    assert (await record(webhook_store, ride))["status"] == "succeeded"


@pytest.mark.parametrize("kind", ["charge.dispute.created", "charge.dispute.closed"])
@pytest.mark.parametrize("status", [*OPEN_STATUSES, "warning_closed", "won", "lost", "prevented"])
async def test_a_dispute_of_a_charge_this_system_never_made_is_acknowledged_and_counted(
    client: Client, kind: str, status: str
) -> None:
    """Stripe's own example dispute: no PaymentIntent, empty metadata. Never a 400, so Stripe
    does not retry it for days."""
    unknown = stripe_event(kind, stripe_object("dispute", status=status))
    count = counted(EVENTS, type=kind, outcome="unknown_payment")
    assert await deliver(client, unknown) == (
        200,
        {"received": True, "result": "unknown_payment"},
    )
    assert counted(EVENTS, type=kind, outcome="unknown_payment") == count + 1
    elsewhere = dispute("elsewhere", f"dp_{status}", status) | {"payment_intent": "pi_not_ours"}
    assert (await deliver(client, stripe_event(kind, elsewhere)))[1] == {
        "received": True,
        "result": "unknown_payment",
    }


async def test_a_dispute_status_stripe_adds_later_is_acknowledged_and_changes_nothing(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    newer = stripe_event("charge.dispute.closed", dispute(ride, "dp_1", "some_new_status"))
    assert (await deliver(client, newer))[0] == 200
    assert (await record(webhook_store, ride))["status"] == "succeeded"


def dashboard_refund(ride: str, amount: int, status: str = "succeeded") -> dict[str, Any]:
    """Stripe's Refund as one made in the Dashboard: none of our metadata."""
    return stripe_object(
        "refund",
        id=f"re_dashboard_{ride}",
        amount=amount,
        currency=CURRENCY,
        charge=f"ch_{ride}",
        payment_intent=f"pi_{ride}",
        metadata={},
        status=status,
    )


def charge_refunded_as_sent(ride: str, amount_refunded: int) -> dict[str, Any]:
    """`charge.refunded` as Stripe sends it since API version 2022-11-15: the Charge says how
    much went back in all (`amount_refunded`) and lists no refunds."""
    charge = charge_as_sent(
        id=f"ch_{ride}",
        amount=CHARGE,
        amount_captured=CHARGE,
        amount_refunded=amount_refunded,
        currency=CURRENCY,
        payment_intent=f"pi_{ride}",
        metadata={"rideId": ride},
        refunded=amount_refunded == CHARGE,
    )
    return stripe_event("charge.refunded", charge)


@pytest.mark.parametrize("order", ["charge only", "refund, then charge", "charge, then refund"])
async def test_a_refund_made_in_the_dashboard_is_recorded_on_the_ride(
    client: Client, webhook_store: PaymentStore, bus: NotificationBus, unique: str, order: str
) -> None:
    """Stripe's shapes: `refund.created` with empty metadata, `charge.refunded` without a list.
    In any order, the ride records the refund once, with Stripe's id once an event names it."""
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    created = stripe_event("refund.created", dashboard_refund(ride, 500))
    charged = charge_refunded_as_sent(ride, 500)
    events = {
        "charge only": [charged],
        "refund, then charge": [created, charged],
        "charge, then refund": [charged, created],
    }[order]
    answers = [await deliver(client, event) for event in events]
    assert [status for status, _ in answers] == [200] * len(events)
    assert answers[0][1]["result"] == "applied"

    document = await record(webhook_store, ride)
    assert (document["status"], document["amountRefunded"]) == ("partially_refunded", 500)
    [refund] = document["refunds"]
    named = order != "charge only"
    assert refund["stripeRefundId"] == (f"re_dashboard_{ride}" if named else None)
    assert (refund["amount"], refund["status"], refund["reason"]) == (500, "succeeded", None)
    assert refund["refundId"].startswith("stripe:"), "a refund made elsewhere has no id of ours"

    async def told() -> list[dict[str, Any]]:
        updates = [m.message for m in await bus.history(f"user-{ride}")]
        return [m for m in updates if m.get("amountRefunded") == 500]

    [message] = await eventually(told, timeout_s=10, what="the rider told of the refund")
    assert message["status"] == "partially_refunded"


async def test_charge_refunded_without_a_list_settles_the_one_refund_of_ours_it_can_be(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    await reserve(webhook_store, ride, "a", "10.00")
    pending = stripe_event("refund.created", refund_object(ride, "a", 1000, "pending"))
    assert (await deliver(client, pending))[1]["result"] == "applied"  # Stripe's id recorded
    assert (await deliver(client, charge_refunded_as_sent(ride, 1000)))[1]["result"] == "applied"
    document = await record(webhook_store, ride)
    assert (document["status"], document["amountRefunded"]) == ("partially_refunded", 1000)
    assert [(r["refundId"], r["status"]) for r in document["refunds"]] == [("a", "succeeded")]
    late = stripe_event("refund.updated", refund_object(ride, "a", 1000, "succeeded"))
    assert (await deliver(client, late))[1]["result"] == "unchanged"


@pytest.mark.parametrize("kind", ["refund.updated", "refund.failed"])
async def test_a_refund_that_fails_after_succeeding_gives_the_money_back(
    client: Client,
    webhook_store: PaymentStore,
    bus: NotificationBus,
    kafka: RunningPart,
    unique: str,
    kind: str,
) -> None:
    """The money came back to the account: `amountRefunded` goes down, the ride goes back
    (`refunded` -> `partially_refunded`), and the rider and the platform are told."""
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    await reserve(webhook_store, ride, "a", "10.00")
    await reserve(webhook_store, ride, "b", "15.50")
    for refund_id, amount in (("a", 1000), ("b", 1550)):
        made = stripe_event("refund.updated", refund_object(ride, refund_id, amount, "succeeded"))
        assert (await deliver(client, made))[1]["result"] == "applied"
    assert (await record(webhook_store, ride))["status"] == "refunded"

    failed = stripe_event(
        kind,
        refund_object(ride, "b", 1550, "failed"),
        **({"previous_attributes": {"status": "succeeded"}} if kind == "refund.updated" else {}),
    )
    assert await deliver(client, failed) == (200, {"received": True, "result": "applied"})
    again = stripe_event("refund.failed", refund_object(ride, "b", 1550, "failed"))
    assert (await deliver(client, again))[1]["result"] == "unchanged"
    document = await record(webhook_store, ride)
    assert (document["status"], document["amountRefunded"]) == ("partially_refunded", 1000)
    refunds = {r["refundId"]: (r["status"], r["failureReason"]) for r in document["refunds"]}
    assert refunds == {"a": ("succeeded", None), "b": ("failed", "lost_or_stolen_card")}

    async def told() -> list[dict[str, Any]]:
        updates = [m.message for m in await bus.history(f"user-{ride}")]
        return updates if updates[-1].get("status") == "partially_refunded" else []

    assert (await eventually(told, timeout_s=10, what="the rider told"))[-1][
        "amountRefunded"
    ] == 1000

    def mine(records: list[Any]) -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in records if r.key == ride.encode()]

    def back(records: list[Any]) -> bool:
        return any(e["version"] == document["version"] for e in mine(records))

    events = sorted(
        mine(await read_topic(kafka.url, STATUS_EVENTS_TOPIC, back)), key=lambda e: e["version"]
    )
    assert [(e["status"], e["amountRefunded"]) for e in events][-2:] == [
        ("refunded", CHARGE),
        ("partially_refunded", 1000),
    ]
