"""The new-link use case and the outstanding query, in-process, against the Stripe simulator
(its own expiry sweep off, so overdue sessions stay open), real MongoDB and Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from devstack import servers
from devstack.stripe_simulator import SimulatorConfig, create_app
from devstack.stripe_simulator.simulator import SIMULATOR, Simulator
from services.webhook.checkout_links import CheckoutLinks, Redirects, RideNotPayable
from services.webhook.events import StripeEvent, interpret
from services.webhook.outstanding import outstanding
from services.webhook.reconciler import Reconciler
from services.webhook.status_changes import apply_update
from shared.bus import NotificationBus
from shared.model import PaymentStatus
from shared.store import OUTSTANDING_INDEX, Payment, PaymentStore, StatusChange
from shared.stripe_gateway import CheckoutRequest, StripeGateway, expires_at_of
from tests.conftest import TEST_STRIPE_KEY
from tests.stripe_shapes import stripe_object

REDIRECTS = Redirects("https://ok", "https://no")


@dataclass
class Sim:
    url: str
    simulator: Simulator


@pytest.fixture
async def simulator() -> AsyncIterator[Sim]:
    app = create_app(SimulatorConfig(api_key=TEST_STRIPE_KEY, expiry_sweep_s=3600))
    runner = web.AppRunner(app)
    await runner.setup()
    port = servers.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield Sim(f"http://127.0.0.1:{port}", app[SIMULATOR])
    await runner.cleanup()


@pytest.fixture
async def gateway(simulator: Sim) -> AsyncIterator[StripeGateway]:
    client = StripeGateway(TEST_STRIPE_KEY, simulator.url)
    yield client
    await client.close()


@pytest.fixture
def links(store: PaymentStore, gateway: StripeGateway, bus: NotificationBus) -> CheckoutLinks:
    return CheckoutLinks(store, gateway, bus, REDIRECTS)


def checkout_request(ride: str, attempt: int = 1) -> CheckoutRequest:
    return CheckoutRequest(
        ride, f"user-{ride}", 1500, "usd", REDIRECTS.success_url, REDIRECTS.cancel_url, attempt
    )


async def open_payment(store: PaymentStore, gateway: StripeGateway, ride: str) -> Payment:
    """A ride as the consumer leaves it: attempt 1, its session open at Stripe."""
    session = await gateway.create_checkout_session(checkout_request(ride))
    reserved = await store.reserve(ride, f"user-{ride}", 1500, "usd")
    assert session.url is not None
    return await store.attach_session(reserved, session.id, session.url, expires_at_of(session))


def sessions_of(simulator: Sim, ride: str) -> list[dict[str, Any]]:
    sessions = simulator.simulator.state.sessions.values()
    return [s.obj for s in sessions if s.obj["metadata"].get("rideId") == ride]


async def test_a_payable_session_is_returned_as_it_is(
    store: PaymentStore, gateway: StripeGateway, links: CheckoutLinks, simulator: Sim
) -> None:
    ride = f"payable-{time.time_ns()}"
    first = await open_payment(store, gateway, ride)
    assert first.attempt == 1 and first.attempts[0].stripe_session_id == first.stripe_session_id

    link = await links.link_for(ride)
    again = await links.link_for(ride)

    assert (link.attempt, link.stripe_session_id) == (1, first.stripe_session_id)
    assert again.stripe_session_id == first.stripe_session_id
    assert len(sessions_of(simulator, ride)) == 1


async def test_an_overdue_open_session_is_expired_at_stripe_before_the_next_attempt(
    store: PaymentStore, gateway: StripeGateway, links: CheckoutLinks, simulator: Sim
) -> None:
    ride = f"overdue-{time.time_ns()}"
    session = await gateway.create_checkout_session(checkout_request(ride))
    assert session.url is not None
    overdue = int(time.time()) - 5
    # Past its `expires_at`, but Stripe has not swept it yet: still `open` there.
    simulator.simulator.state.sessions[session.id].obj["expires_at"] = overdue
    reserved = await store.reserve(ride, f"user-{ride}", 1500, "usd")
    await store.attach_session(
        reserved, session.id, session.url, datetime.fromtimestamp(overdue, UTC)
    )

    link = await links.link_for(ride)

    first, second = sorted(sessions_of(simulator, ride), key=lambda s: s["metadata"]["attempt"])
    assert first["id"] == session.id and first["status"] == "expired"
    assert second["id"] == link.stripe_session_id and second["status"] == "open"
    assert second["metadata"]["attempt"] == "2"
    assert link.attempt == 2 and link.status is PaymentStatus.PENDING
    assert [a.attempt for a in link.attempts] == [1, 2]
    # The key is checkout-<rideId>-2: asking Stripe again with it gives the same session.
    repeat = await gateway.create_checkout_session(checkout_request(ride, attempt=2))
    assert repeat.id == link.stripe_session_id


async def test_a_session_paid_at_stripe_whose_webhook_is_late_gets_no_new_link(
    store: PaymentStore, gateway: StripeGateway, links: CheckoutLinks, simulator: Sim
) -> None:
    ride = f"paid-{time.time_ns()}"
    session = await gateway.create_checkout_session(checkout_request(ride))
    assert session.url is not None
    reserved = await store.reserve(ride, f"user-{ride}", 1500, "usd")
    # The record thinks the link is past its time, so Stripe is asked: it was paid.
    past = datetime.now(UTC) - timedelta(minutes=1)
    await store.attach_session(reserved, session.id, session.url, past)
    async with aiohttp.ClientSession() as http:
        url = f"{simulator.url}/_sim/sessions/{session.id}/pay"
        async with http.post(url, json={"deliver": False}) as response:
            assert response.status == 200

    with pytest.raises(RideNotPayable):
        await links.link_for(ride)

    document = await store.find_document(ride)
    assert document is not None and document["status"] == "succeeded"
    assert len(sessions_of(simulator, ride)) == 1


async def debit(store: PaymentStore, simulator: Sim, session_id: str, action: str) -> None:
    """The bank debit's `action` at Stripe (`debit`, `debit_fails`), its events applied as the
    webhook applies them."""
    async with aiohttp.ClientSession() as http:
        url = f"{simulator.url}/_sim/sessions/{session_id}/{action}"
        async with http.post(url, json={"deliver": False}) as response:
            assert response.status == 200, await response.text()
            events = (await response.json())["events"]
    for event in events:
        update = interpret(StripeEvent.parse(event))
        if update is not None:
            await apply_update(store, update, source=f"webhook:{event['type']}")


async def test_no_link_while_a_debit_is_on_its_way_and_a_new_attempt_once_it_failed(
    store: PaymentStore, gateway: StripeGateway, links: CheckoutLinks, simulator: Sim
) -> None:
    """A session completed by bank debit can never be paid again: while the debit is on its
    way there is nothing to pay (409), once it failed the next attempt is the link."""
    ride = f"debit-{time.time_ns()}"
    first = await open_payment(store, gateway, ride)
    assert first.stripe_session_id is not None
    await debit(store, simulator, first.stripe_session_id, "debit")
    with pytest.raises(RideNotPayable, match="processing"):
        await links.link_for(ride)
    [owed] = (await outstanding(store, first.user_id, datetime.now(UTC)))["rides"]
    assert (owed["status"], owed["paymentUrl"]) == ("processing", None)

    await debit(store, simulator, first.stripe_session_id, "debit_fails")
    [owed] = (await outstanding(store, first.user_id, datetime.now(UTC)))["rides"]
    assert (owed["status"], owed["paymentUrl"]) == ("failed", None)
    link = await links.link_for(ride)
    assert (link.attempt, link.status) == (2, PaymentStatus.PENDING)
    assert link.stripe_session_id != first.stripe_session_id
    by_id = {s["id"]: s["status"] for s in sessions_of(simulator, ride)}
    assert by_id == {first.stripe_session_id: "complete", link.stripe_session_id: "open"}


async def test_outstanding_lists_exactly_the_unpaid_rides_oldest_first_with_totals(
    store: PaymentStore,
) -> None:
    user = f"owes-{time.time_ns()}"
    rides = [
        ("paid", 1000, "usd", PaymentStatus.SUCCEEDED),
        ("pending", 1500, "usd", PaymentStatus.PENDING),
        ("failed", 700, "eur", PaymentStatus.FAILED),
        ("expired", 2500, "usd", PaymentStatus.EXPIRED),
        ("canceled", 300, "eur", PaymentStatus.CANCELED),
        ("paid-eur", 900, "eur", PaymentStatus.SUCCEEDED),
    ]
    future = datetime.now(UTC) + timedelta(hours=1)
    for name, amount, currency, status in rides:
        ride = f"{user}-{name}"
        reserved = await store.reserve(ride, user, amount, currency)
        await store.attach_session(reserved, f"cs_{ride}", f"https://pay/{ride}", future)
        if status is not PaymentStatus.PENDING:
            await store.apply({"rideId": ride}, _change(status, ride))
    await store.reserve(f"other-{user}", f"other-{user}", 5000, "usd")

    owed = await outstanding(store, user, datetime.now(UTC))

    assert [r["rideId"].removeprefix(f"{user}-") for r in owed["rides"]] == [
        "pending",
        "failed",
        "expired",
        "canceled",
    ]
    assert owed["total"] == {"usd": 4000, "eur": 1000}
    by_status = {r["status"]: r for r in owed["rides"]}
    assert by_status["pending"]["paymentUrl"] == f"https://pay/{user}-pending"
    assert by_status["failed"]["paymentUrl"] is not None  # the same Checkout takes a retry
    assert by_status["expired"]["paymentUrl"] is None
    assert by_status["canceled"]["paymentUrl"] is None
    assert by_status["pending"]["attempt"] == 1
    assert (
        by_status["pending"]["expiresAt"]
        == future.replace(microsecond=future.microsecond // 1000 * 1000).isoformat()
    )


async def test_the_outstanding_query_uses_its_index(store: PaymentStore) -> None:
    plan = await store.outstanding("anyone").explain()
    assert OUTSTANDING_INDEX in str(plan["queryPlanner"]["winningPlan"])
    assert "COLLSCAN" not in str(plan["queryPlanner"]["winningPlan"])


def _change(status: PaymentStatus, ride: str) -> StatusChange:
    return StatusChange(status, f"evt_{status.value}_{ride}", "test", attempt=1)


async def test_a_canceled_attempt_whose_session_is_still_open_is_expired_not_handed_out(
    store: PaymentStore, gateway: StripeGateway, links: CheckoutLinks, simulator: Sim
) -> None:
    ride = f"canceled-{time.time_ns()}"
    first = await open_payment(store, gateway, ride)
    await store.apply({"rideId": ride}, _change(PaymentStatus.CANCELED, ride))

    link = await links.link_for(ride)

    sessions = {s["id"]: s for s in sessions_of(simulator, ride)}
    assert sessions[str(first.stripe_session_id)]["status"] == "expired"
    assert link.attempt == 2 and sessions[str(link.stripe_session_id)]["status"] == "open"


async def test_the_reconciler_expires_what_a_success_on_an_earlier_attempt_left_open(
    store: PaymentStore, gateway: StripeGateway, simulator: Sim
) -> None:
    """The webhook that applied the success died before expiring the other session."""
    ride = f"left-open-{time.time_ns()}"
    first = await open_payment(store, gateway, ride)
    second = await gateway.create_checkout_session(checkout_request(ride, attempt=2))
    assert second.url is not None
    assert await store.start_attempt(first, second.id, second.url, expires_at_of(second))
    intent = stripe_object(
        "payment_intent",
        id=f"pi_{ride}",
        amount=1500,
        currency="usd",
        metadata={"rideId": ride, "attempt": "1"},
    )
    succeeded = StripeEvent(f"evt_{ride}", "payment_intent.succeeded", intent)
    update = interpret(succeeded)
    assert update is not None
    applied = await apply_update(store, update, source="test")
    assert applied.payment is not None and applied.payment.sessions_to_expire == (second.id,)

    reconciler = Reconciler(
        store,
        gateway,
        store.lease("reconciler", "test", ttl_s=60),
        lambda _: None,
        settle_after_s=0,
        batch=100,
        rate_per_s=1000,
        renew_every_s=20,
    )
    report = await reconciler.run_once()

    assert ride in report.closed
    sessions = {s["id"]: s["status"] for s in sessions_of(simulator, ride)}
    assert sessions == {str(first.stripe_session_id): "open", second.id: "expired"}
    document = await store.find_document(ride)
    assert document is not None and document["status"] == "succeeded"
    assert "sessionsToExpire" not in document


def stripe_retrievals() -> float:
    """Checkout Sessions this process has read at Stripe so far."""
    return (
        REGISTRY.get_sample_value(
            "payments_stripe_calls_total",
            {"operation": "retrieve_checkout_session", "outcome": "ok"},
        )
        or 0.0
    )


async def test_a_session_expired_at_stripe_without_its_webhook_gets_a_new_attempt(
    store: PaymentStore, gateway: StripeGateway, links: CheckoutLinks, simulator: Sim
) -> None:
    """The finding: the record says the link is good for 24 h, Stripe expired it early (and
    the webhook saying so is lost): every call handed out the dead link."""
    ride = f"dead-{time.time_ns()}"
    first = await open_payment(store, gateway, ride)
    assert first.stripe_session_id is not None
    # Expired at Stripe through its API; this simulator delivers no webhook anywhere.
    await gateway.expire_checkout_session(first.stripe_session_id)

    link = await links.link_for(ride)

    sessions = {s["id"]: s for s in sessions_of(simulator, ride)}
    assert sessions[first.stripe_session_id]["status"] == "expired"
    assert link.attempt == 2 and link.stripe_session_id != first.stripe_session_id
    assert sessions[str(link.stripe_session_id)]["status"] == "open"


async def test_a_link_checked_with_stripe_a_moment_ago_is_not_asked_about_again(
    store: PaymentStore, gateway: StripeGateway, links: CheckoutLinks, simulator: Sim
) -> None:
    ride = f"checked-{time.time_ns()}"
    first = await open_payment(store, gateway, ride)
    checked = await links.link_for(ride)
    read = stripe_retrievals()

    again = [await links.link_for(ride) for _ in range(3)]

    assert stripe_retrievals() == read
    assert {link.stripe_session_id for link in [checked, *again]} == {first.stripe_session_id}


async def test_a_link_not_checked_for_a_minute_is_checked_again(
    store: PaymentStore, gateway: StripeGateway, links: CheckoutLinks, simulator: Sim
) -> None:
    ride = f"stale-check-{time.time_ns()}"
    first = await open_payment(store, gateway, ride)
    assert first.stripe_session_id is not None
    await links.link_for(ride)  # checked with Stripe now: open
    await gateway.expire_checkout_session(first.stripe_session_id)
    # A minute and a bit later, by the record's clock:
    document = await store.find_document(ride)
    assert document is not None and "payableCheck" in document
    await store.collection.update_one(
        {"rideId": ride},
        {"$set": {"payableCheck.at": document["payableCheck"]["at"] - timedelta(seconds=61)}},
    )

    link = await links.link_for(ride)

    assert link.attempt == 2 and link.stripe_session_id != first.stripe_session_id


async def test_a_link_close_to_its_expiry_is_checked_with_stripe_however_recently_checked(
    store: PaymentStore, gateway: StripeGateway, links: CheckoutLinks, simulator: Sim
) -> None:
    ride = f"expiring-{time.time_ns()}"
    session = await gateway.create_checkout_session(checkout_request(ride))
    assert session.url is not None
    reserved = await store.reserve(ride, f"user-{ride}", 1500, "usd")
    # Four minutes left by the record (clocks differ; Stripe may expire it first).
    soon = datetime.now(UTC) + timedelta(minutes=4)
    await store.attach_session(reserved, session.id, session.url, soon)
    assert (await links.link_for(ride)).stripe_session_id == session.id
    await gateway.expire_checkout_session(session.id)

    link = await links.link_for(ride)

    assert link.attempt == 2 and link.stripe_session_id != session.id
