"""Money taken twice for one ride is given back: a success on another attempt of a ride already
paid is recorded, refunded in full at Stripe (key `refund-duplicate-<paymentIntentId>`, reason
`duplicate`), counted, and told to the rider; the record says the refund is owed until Stripe
has it, so a crash in between leaves it to the sweep. The webhook app in-process against real
MongoDB and Redis, paying through the Stripe simulator (tests/integration/test_checkout_links.py's,
which delivers no webhook: the test hands the webhook the simulator's own events)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from services.webhook.app import create_app
from services.webhook.duplicate_refunds import DuplicateRefunds
from services.webhook.events import StripeEvent, interpret
from services.webhook.status_changes import Result, apply_update
from shared.bus import NotificationBus
from shared.store import PaymentStore
from shared.stripe_gateway import StripeGateway, expires_at_of
from tests.conftest import TEST_STRIPE_KEY, RunningPart
from tests.helpers import eventually
from tests.integration.test_checkout_links import (
    Sim,
    checkout_request,
    gateway,
    open_payment,
    simulator,
)
from tests.integration.test_webhook import Client, deliver, settings_for
from tests.integration.test_webhook_hostile_input import counted

__all__ = ["gateway", "simulator"]  # the fixtures this module uses

DUPLICATES = "payments_duplicate_charges_total"
MISMATCHED = "payments_webhook_mismatched_events_total"
FARE = 1500  # what checkout_request charges
Event = dict[str, Any]


@pytest.fixture
async def client(
    kafka: RunningPart,
    mongo: RunningPart,
    redis_server: RunningPart,
    simulator: Sim,
    unique: str,
) -> AsyncIterator[Client]:
    """The webhook app, its Stripe the simulator, its database the `store` fixture's."""
    settings = settings_for(kafka.url, mongo.url, redis_server.url, f"test-{unique}").model_copy(
        update={"stripe_secret_key": SecretStr(TEST_STRIPE_KEY), "stripe_api_base": simulator.url}
    )
    async with TestClient(TestServer(create_app(settings))) as test_client:
        yield test_client


async def two_open_sessions(store: PaymentStore, gateway: StripeGateway, ride: str) -> list[str]:
    """A ride on attempt 2 whose attempt-1 session is still open at Stripe: the rider holds
    both links (the API never makes this; a late PaymentIntent or an early expiry can)."""
    first = await open_payment(store, gateway, ride)
    second = await gateway.create_checkout_session(checkout_request(ride, attempt=2))
    assert second.url is not None and first.stripe_session_id is not None
    assert await store.start_attempt(first, second.id, second.url, expires_at_of(second))
    return [first.stripe_session_id, second.id]


async def pay(simulator: Sim, session_id: str) -> list[Event]:
    """The rider pays `session_id` at Stripe: the events Stripe sends about it."""
    async with aiohttp.ClientSession() as http:
        url = f"{simulator.url}/_sim/sessions/{session_id}/pay"
        async with http.post(url, json={"deliver": False}) as response:
            assert response.status == 200, await response.text()
            events: list[Event] = (await response.json())["events"]
            return events


async def deliver_all(client: Client, events: list[Event]) -> dict[str, str]:
    """Each event to the webhook: its type -> the webhook's answer."""
    answers = {}
    for event in events:
        status, body = await deliver(client, event)
        assert status == 200, body
        answers[event["type"]] = body["result"]
    return answers


def intent_of(events: list[Event]) -> str:
    [intent] = {
        e["data"]["object"]["id"] for e in events if e["type"] == "payment_intent.succeeded"
    }
    return str(intent)


def refunds_of(simulator: Sim, intent: str) -> list[dict[str, Any]]:
    return [r for r in simulator.simulator.state.refunds.values() if r["payment_intent"] == intent]


async def record(store: PaymentStore, ride: str) -> dict[str, Any]:
    document = await store.find_document(ride)
    assert document is not None
    return document


async def told(bus: NotificationBus, user: str) -> list[dict[str, Any]]:
    return [
        stored.message
        for stored in await bus.history(user)
        if stored.message["type"] == "duplicate_charge_refunded"
    ]


async def assert_given_back(
    store: PaymentStore, bus: NotificationBus, simulator: Sim, ride: str, intent: str
) -> dict[str, Any]:
    """The second charge refunded in full at Stripe, once, as the contract says; the record
    and the rider say so. Returns the refund."""
    [refund] = await eventually(
        lambda: _listed(refunds_of(simulator, intent)), what=f"a refund of {intent}"
    )
    assert (refund["amount"], refund["reason"]) == (FARE, "duplicate")
    assert refund["metadata"]["rideId"] == ride
    [created] = [
        r.event
        for r in simulator.simulator.state.events
        if r.event["type"] == "refund.created" and r.event["data"]["object"]["id"] == refund["id"]
    ]
    assert created["request"]["idempotency_key"] == f"refund-duplicate-{intent}"

    async def settled() -> list[dict[str, Any]] | None:
        entries = (await record(store, ride)).get("duplicateCharges", [])
        return entries if entries and entries[0]["refundStatus"] != "owed" else None

    [entry] = await eventually(settled, what="the duplicate's refund on the record")
    assert (entry["paymentIntentId"], entry["amount"], entry["currency"]) == (intent, FARE, "usd")
    assert (entry["refundStatus"], entry["stripeRefundId"]) == ("succeeded", refund["id"])
    [message] = await eventually(lambda: told(bus, f"user-{ride}"), what="the rider told")
    assert message | {"id": None} == {
        "type": "duplicate_charge_refunded",
        "id": None,
        "rideId": ride,
        "amount": FARE,
        "currency": "usd",
        "paymentIntentId": intent,
    }
    return refund


async def _listed(refunds: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    return refunds or None


async def test_the_old_link_paid_after_the_new_one_is_refunded_at_once(
    client: Client,
    store: PaymentStore,
    gateway: StripeGateway,
    bus: NotificationBus,
    simulator: Sim,
) -> None:
    """The finding: the success on attempt 1 of a ride paid on attempt 2 was answered
    `unchanged`: no history, no refund, no alert; the rider was charged twice."""
    ride = f"twice-{time.time_ns()}"
    old, new = await two_open_sessions(store, gateway, ride)
    paid = await pay(simulator, new)
    assert "applied" in (await deliver_all(client, paid)).values()
    count = counted(DUPLICATES)

    again = await pay(simulator, old)  # the old link, in another tab
    answers = await deliver_all(client, again)

    assert answers["payment_intent.succeeded"] == "duplicate_charge"
    assert answers["checkout.session.completed"] == "duplicate_charge"
    intent = intent_of(again)
    await assert_given_back(store, bus, simulator, ride, intent)
    assert counted(DUPLICATES) == count + 1  # one charge, whatever number of events say so
    document = await record(store, ride)
    assert (document["status"], document["attempt"]) == ("succeeded", 2)
    assert document["paymentIntentId"] == intent_of(paid)
    successes = {e["id"] for e in again if answers[e["type"]] == "duplicate_charge"}
    noted = {e["eventId"]: e["status"] for e in document["history"] if e.get("attempt") == 1}
    assert successes <= set(noted) and {noted[event] for event in successes} == {"succeeded"}


async def test_the_new_link_paid_after_the_old_one_settled_the_ride_is_refunded(
    client: Client,
    store: PaymentStore,
    gateway: StripeGateway,
    bus: NotificationBus,
    simulator: Sim,
) -> None:
    """Paid on attempt 1 first (which settles the ride), then on attempt 2 before its session
    was expired: that success was refused as `mismatched` (another PaymentIntent than the
    ride's), and the money kept."""
    ride = f"twice-late-{time.time_ns()}"
    old, new = await two_open_sessions(store, gateway, ride)
    first, second = await pay(simulator, old), await pay(simulator, new)
    assert "applied" in (await deliver_all(client, first)).values()

    answers = await deliver_all(client, second)

    assert answers["checkout.session.completed"] == "duplicate_charge"
    await assert_given_back(store, bus, simulator, ride, intent_of(second))
    assert (await record(store, ride))["paymentIntentId"] == intent_of(first)


async def test_the_refunds_events_are_the_duplicates_not_mismatches(
    client: Client,
    store: PaymentStore,
    gateway: StripeGateway,
    bus: NotificationBus,
    simulator: Sim,
) -> None:
    """Stripe then tells of the refund (refund.created, charge.refunded): about the second
    charge's PaymentIntent, so not the ride's; they are the duplicate's, not forgeries."""
    ride = f"twice-refunded-{time.time_ns()}"
    old, new = await two_open_sessions(store, gateway, ride)
    await deliver_all(client, await pay(simulator, new))
    again = await pay(simulator, old)
    await deliver_all(client, again)
    intent = intent_of(again)
    refund = await assert_given_back(store, bus, simulator, ride, intent)
    mismatched = {
        kind: counted(MISMATCHED, type=kind) for kind in ("refund.created", "charge.refunded")
    }
    told_about = [
        r.event
        for r in simulator.simulator.state.events
        if r.event["type"] in mismatched and r.event["data"]["object"]["payment_intent"] == intent
    ]
    assert {e["type"] for e in told_about} == set(mismatched)

    answers = await deliver_all(client, told_about)

    assert set(answers.values()) <= {"applied", "unchanged"}, answers
    assert {kind: counted(MISMATCHED, type=kind) for kind in mismatched} == mismatched
    document = await record(store, ride)
    assert (document["status"], document.get("amountRefunded", 0)) == ("succeeded", 0)
    assert document["duplicateCharges"][0]["stripeRefundId"] == refund["id"]


async def test_a_duplicate_recorded_but_not_refunded_is_refunded_by_the_sweep(
    store: PaymentStore,
    gateway: StripeGateway,
    bus: NotificationBus,
    simulator: Sim,
) -> None:
    """The webhook died between recording the duplicate and refunding it: the record still
    says the refund is owed, and the sweep (every webhook replica runs it; one at a time does
    the work) gives the money back."""
    ride = f"twice-crashed-{time.time_ns()}"
    old, new = await two_open_sessions(store, gateway, ride)
    for events in (await pay(simulator, new), await pay(simulator, old)):
        for event in events:
            update = interpret(StripeEvent.parse(event))
            if update is not None:  # applied as the webhook applies it, then the process died
                await apply_update(store, update, source=f"webhook:{event['type']}")
    [owed] = (await record(store, ride))["duplicateCharges"]
    assert (owed["refundStatus"], owed["stripeRefundId"]) == ("owed", None)
    assert refunds_of(simulator, owed["paymentIntentId"]) == []

    sweep = DuplicateRefunds(
        store, gateway, bus, store.lease("duplicate-refunds", "test", ttl_s=60), owed_for_s=0
    )
    await sweep.run_once()

    await assert_given_back(store, bus, simulator, ride, owed["paymentIntentId"])
    await sweep.run_once()  # nothing owed any more: nothing refunded twice
    assert len(refunds_of(simulator, owed["paymentIntentId"])) == 1
    assert len(await told(bus, f"user-{ride}")) == 1


async def test_the_same_intent_again_on_a_paid_attempt_is_no_duplicate(
    store: PaymentStore, gateway: StripeGateway, simulator: Sim
) -> None:
    """Stripe repeats itself (the session's and the PaymentIntent's events about one charge):
    the ride's own charge is never taken for a second one."""
    ride = f"once-{time.time_ns()}"
    _, new = await two_open_sessions(store, gateway, ride)
    results: list[Result] = []
    for event in await pay(simulator, new) * 2:
        update = interpret(StripeEvent.parse(event | {"id": f"{event['id']}-{len(results)}"}))
        if update is not None:
            results.append((await apply_update(store, update, source="test")).result)
    assert Result.APPLIED in results and Result.DUPLICATE_CHARGE not in results
    assert "duplicateCharges" not in await record(store, ride)
