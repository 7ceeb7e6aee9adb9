"""Reconciliation against the Stripe simulator, real MongoDB, Redis and Kafka."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devstack import servers
from devstack.stripe_simulator import SimulatorConfig, create_app
from services.webhook.reconciler import Reconciler
from shared.bus import NotificationBus
from shared.outbox import OutboxRelay
from shared.status_events import STATUS_EVENTS_TOPIC
from shared.store import PaymentStore
from shared.stripe_gateway import CheckoutRequest, StripeGateway
from tests.conftest import TEST_STRIPE_KEY, RunningPart
from tests.helpers import eventually, read_topic

HOUR = timedelta(hours=1)


@pytest.fixture
async def simulator() -> AsyncIterator[str]:
    """An in-process simulator whose own expiry sweep never runs, so overdue sessions stay open."""
    app = create_app(SimulatorConfig(api_key=TEST_STRIPE_KEY, expiry_sweep_s=3600))
    runner = web.AppRunner(app)
    await runner.setup()
    port = servers.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def gateway(simulator: str) -> AsyncIterator[StripeGateway]:
    client = StripeGateway(TEST_STRIPE_KEY, simulator)
    yield client
    await client.close()


@pytest.fixture
async def relay(
    store: PaymentStore, bus: NotificationBus, kafka: RunningPart
) -> AsyncIterator[OutboxRelay]:
    outbox = OutboxRelay(store, bus, kafka.url)
    yield outbox
    await outbox.close()


@pytest.fixture
def make_reconciler(
    store: PaymentStore, gateway: StripeGateway, relay: OutboxRelay
) -> Callable[..., Reconciler]:
    def make(
        owner: str = "one",
        clock: Callable[[], float] = time.time,
        *,
        ttl_s: float = 60,
        rate_per_s: float = 1000,
        renew_every_s: float = 20,
        recheck_processing_after_s: float = 3600,
    ) -> Reconciler:
        return Reconciler(
            store,
            gateway,
            store.lease("reconciler", owner, ttl_s=ttl_s),
            relay.publish_soon,
            settle_after_s=0,
            batch=100,
            rate_per_s=rate_per_s,
            renew_every_s=renew_every_s,
            clock=clock,
            recheck_processing_after_s=recheck_processing_after_s,
        )

    return make


async def open_payment(store: PaymentStore, gateway: StripeGateway, ride: str) -> str:
    request = CheckoutRequest(ride, f"user-{ride}", 1500, "usd", "https://ok", "https://no")
    session = await gateway.create_checkout_session(request)
    reserved = await store.reserve(ride, request.user_id, request.amount, "usd")
    assert session.url is not None
    await store.attach_session(reserved, session.id, session.url)
    return session.id


async def paid_without_webhook(
    store: PaymentStore, gateway: StripeGateway, simulator: str, rides: list[str]
) -> None:
    """Open payments for `rides` and pay them at Stripe, their webhooks lost."""
    for ride in rides:
        await act_without_webhook(simulator, await open_payment(store, gateway, ride), "pay")


async def act_without_webhook(simulator: str, session_id: str, action: str) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{simulator}/_sim/sessions/{session_id}/{action}"
        async with http.post(url, json={"deliver": False}) as response:
            assert response.status == 200, await response.text()


async def test_a_payment_whose_webhook_was_lost_is_settled_and_the_user_told(
    store: PaymentStore,
    gateway: StripeGateway,
    bus: NotificationBus,
    simulator: str,
    make_reconciler: Callable[..., Reconciler],
    kafka: RunningPart,
    unique: str,
) -> None:
    ride = f"lost-{unique}"
    session_id = await open_payment(store, gateway, ride)
    await act_without_webhook(simulator, session_id, "pay")

    report = await make_reconciler().run_once()
    assert report.ran and report.fixed == [ride]
    document = await store.find_document(ride)
    assert document is not None and document["status"] == "succeeded"
    assert document["history"][-1]["source"] == "reconciler"
    assert document["paymentIntentId"].startswith("pi_")

    async def told() -> list[Any]:
        return [
            m
            for m in await bus.history(f"user-{ride}")
            if m.message
            == {
                "type": "payment_status_update",
                "rideId": ride,
                "status": "succeeded",
                "stripeSessionId": session_id,
                "amount": 1500,
                "currency": "usd",
            }
        ]

    await eventually(told, timeout_s=10, what="the rider's notification")
    [event] = await status_events_for(kafka, ride, count=1)
    assert event["status"] == "succeeded" and event["amount"] == 1500
    assert set(event) == {
        "rideId",
        "userId",
        "status",
        "amount",
        "currency",
        "stripeSessionId",
        "attempt",
        "version",
        "amountRefunded",
        "occurredAt",
        "eventId",
    }
    assert (event["version"], event["attempt"], event["amountRefunded"]) == (3, 1, 0)
    assert (await make_reconciler().run_once()).fixed == [], "a settled payment is left alone"


async def test_a_declined_card_without_webhook_becomes_failed(
    store: PaymentStore,
    gateway: StripeGateway,
    simulator: str,
    make_reconciler: Callable[..., Reconciler],
    unique: str,
) -> None:
    ride = f"declined-{unique}"
    session_id = await open_payment(store, gateway, ride)
    await act_without_webhook(simulator, session_id, "decline")
    assert (await make_reconciler().run_once()).fixed == [ride]
    payment = await store.find({"rideId": ride})
    assert payment is not None and payment.status == "failed"


@pytest.mark.parametrize(
    ("outcome", "final"), [("debit_fails", "failed"), ("debit_succeeds", "succeeded")]
)
async def test_a_debit_whose_webhooks_were_lost_is_processing_then_settled(
    store: PaymentStore,
    gateway: StripeGateway,
    simulator: str,
    make_reconciler: Callable[..., Reconciler],
    unique: str,
    outcome: str,
    final: str,
) -> None:
    """A session complete but unpaid at Stripe is a debit on its way, not a failure."""
    ride = f"debit-{unique}"
    session_id = await open_payment(store, gateway, ride)
    await act_without_webhook(simulator, session_id, "debit")
    reconciler = make_reconciler(recheck_processing_after_s=0)
    assert (await reconciler.run_once()).fixed == [ride]
    document = await store.find_document(ride)
    assert document is not None
    assert (document["status"], document["attempts"][0]["asyncPayment"]) == (
        "processing",
        "processing",
    )
    assert (await reconciler.run_once()).fixed == [], "a debit on its way is left as it is"

    await act_without_webhook(simulator, session_id, outcome)
    assert (await reconciler.run_once()).fixed == [ride]
    document = await store.find_document(ride)
    assert document is not None and document["status"] == final
    assert [h["status"] for h in document["history"]][-2:] == ["processing", final]


async def test_a_debit_on_its_way_is_asked_about_again_only_after_a_while(
    store: PaymentStore,
    gateway: StripeGateway,
    simulator: str,
    make_reconciler: Callable[..., Reconciler],
    unique: str,
) -> None:
    """Bank debits take days: a `processing` ride costs a Stripe call an hour, not a minute."""
    ride = f"debit-{unique}"
    session_id = await open_payment(store, gateway, ride)
    await act_without_webhook(simulator, session_id, "debit")
    reconciler = make_reconciler()
    assert (await reconciler.run_once()).fixed == [ride]
    await act_without_webhook(simulator, session_id, "debit_succeeds")
    assert (await reconciler.run_once()).checked == 0
    payment = await store.find({"rideId": ride})
    assert payment is not None and payment.status == "processing"


async def test_an_open_session_past_its_expiry_is_expired_at_stripe_and_here(
    store: PaymentStore,
    gateway: StripeGateway,
    make_reconciler: Callable[..., Reconciler],
    unique: str,
) -> None:
    ride = f"overdue-{unique}"
    session_id = await open_payment(store, gateway, ride)
    two_days_later = time.time() + 2 * 86400
    assert (await make_reconciler(clock=lambda: two_days_later).run_once()).fixed == [ride]
    assert (await gateway.retrieve_checkout_session(session_id)).status == "expired"
    payment = await store.find({"rideId": ride})
    assert payment is not None and payment.status == "expired"


async def test_two_reconcilers_at_once_reconcile_each_payment_once(
    store: PaymentStore,
    gateway: StripeGateway,
    simulator: str,
    make_reconciler: Callable[..., Reconciler],
    unique: str,
) -> None:
    rides = [f"pair-{unique}-{i}" for i in range(20)]
    await paid_without_webhook(store, gateway, simulator, rides)
    first, second = make_reconciler("first"), make_reconciler("second")
    reports = await asyncio.gather(first.run_once(), second.run_once())
    assert sorted(report.ran for report in reports) == [False, True]
    assert sorted(ride for report in reports for ride in report.fixed) == sorted(rides)
    for ride in rides:
        document = await store.find_document(ride)
        assert document is not None
        assert [h["source"] for h in document["history"]].count("reconciler") == 1


async def test_every_unsettled_payment_gets_its_turn_whatever_the_backlog(
    store: PaymentStore,
    gateway: StripeGateway,
    simulator: str,
    make_reconciler: Callable[..., Reconciler],
    unique: str,
) -> None:
    """130 open payments and a batch of 100: the 3 newest, paid with their webhooks lost, are
    settled within a few runs instead of waiting behind the same 100 every run."""
    rides = [f"backlog-{unique}-{i:03}" for i in range(130)]
    await asyncio.gather(*(open_payment(store, gateway, ride) for ride in rides[:-3]))
    for ride in rides[-3:]:
        await act_without_webhook(simulator, await open_payment(store, gateway, ride), "pay")
    reconciler = make_reconciler()
    fixed = [ride for _ in range(3) for ride in (await reconciler.run_once()).fixed]
    assert sorted(fixed) == rides[-3:]


async def test_a_run_stops_touching_payments_once_its_lease_is_lost(
    store: PaymentStore,
    gateway: StripeGateway,
    simulator: str,
    make_reconciler: Callable[..., Reconciler],
    unique: str,
) -> None:
    rides = [f"stolen-{unique}-{i}" for i in range(20)]
    await paid_without_webhook(store, gateway, simulator, rides)
    run = asyncio.create_task(make_reconciler(rate_per_s=10, renew_every_s=0).run_once())

    async def one_settled() -> bool:
        return (
            await store.sibling("payments").count_documents(
                {"rideId": {"$in": rides}, "status": "succeeded"}
            )
            > 0
        )

    await eventually(one_settled, what="the run to settle a first payment")
    await store.sibling("leases").update_one(
        {"_id": "reconciler"}, {"$set": {"owner": "thief", "until": datetime.now(UTC) + HOUR}}
    )
    report = await run
    assert report.lost_lease and 0 < len(report.fixed) < len(rides)
    untouched = await store.sibling("payments").count_documents(
        {"rideId": {"$in": rides}, "status": "pending"}
    )
    assert untouched == len(rides) - len(report.fixed)


async def test_a_long_run_renews_its_lease_so_no_other_replica_starts(
    store: PaymentStore,
    gateway: StripeGateway,
    simulator: str,
    make_reconciler: Callable[..., Reconciler],
    unique: str,
) -> None:
    """A 1 s lease and a run of about 2 s: the other replica never gets in."""
    rides = [f"renewed-{unique}-{i}" for i in range(20)]
    await paid_without_webhook(store, gateway, simulator, rides)
    first = asyncio.create_task(
        make_reconciler("first", ttl_s=1, rate_per_s=10, renew_every_s=0.3).run_once()
    )
    second = make_reconciler("second", ttl_s=1)

    async def first_holds_the_lease() -> bool:
        lease = await store.sibling("leases").find_one({"_id": "reconciler"})
        return lease is not None and lease["owner"] == "first"

    await eventually(first_holds_the_lease, what="the first run to take the lease")
    others: list[bool] = []
    while not first.done():
        others.append((await second.run_once()).ran)
        await asyncio.sleep(0.1)
    assert (await first).fixed == rides
    assert len(others) > 10 and not any(others)


async def status_events_for(kafka: RunningPart, ride: str, count: int) -> list[dict[str, Any]]:
    def mine(records: list[Any]) -> list[Any]:
        return [record for record in records if record.key == ride.encode()]

    records = await read_topic(kafka.url, STATUS_EVENTS_TOPIC, lambda rs: len(mine(rs)) >= count)
    return [json.loads(record.value) for record in mine(records)]
