"""The safety net against real MongoDB and Redis and the Stripe simulator: payments reserved
without a session for too long get their session, link and notification, once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest

from services.consumer.orphans import OrphanSweeper
from services.consumer.process import CheckoutSettings, PaymentCreator
from shared.bus import NotificationBus
from shared.store import PaymentStore, utcnow
from shared.stripe_gateway import StripeGateway
from tests.conftest import TEST_STRIPE_KEY, RunningPart

ORPHAN_AFTER_S = 300.0


@pytest.fixture
async def gateway(stripe_simulator: RunningPart) -> AsyncIterator[StripeGateway]:
    client = StripeGateway(TEST_STRIPE_KEY, stripe_simulator.url)
    yield client
    await client.close()


@pytest.fixture
def creator(store: PaymentStore, gateway: StripeGateway, bus: NotificationBus) -> PaymentCreator:
    return PaymentCreator(store, gateway, bus, CheckoutSettings("usd", "https://ok", "https://no"))


def sweeper(
    store: PaymentStore, creator: PaymentCreator, owner: str, batch: int = 100
) -> OrphanSweeper:
    lease = store.lease("orphan-sweeper", owner, ttl_s=60)
    return OrphanSweeper(store, creator, lease, orphan_after_s=ORPHAN_AFTER_S, batch=batch)


async def reserved_long_ago(
    store: PaymentStore, ride_id: str, user_id: str, currency: str = "usd", minutes: int = 1
) -> None:
    """A payment reserved (no session yet) longer ago than the threshold."""
    await store.reserve(ride_id, user_id, 1250, currency)
    long_ago = utcnow() - timedelta(seconds=ORPHAN_AFTER_S + 60 * minutes)
    await store._payments.update_one({"rideId": ride_id}, {"$set": {"updatedAt": long_ago}})


async def sessions_of(stripe: RunningPart, ride_id: str) -> list[str]:
    headers = {"Authorization": f"Bearer {TEST_STRIPE_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{stripe.url}/_sim/sessions") as response:
            sessions = (await response.json())["data"]
    return [s["id"] for s in sessions if s["client_reference_id"] == ride_id]


async def test_a_payment_reserved_without_a_session_too_long_is_finished_once(
    store: PaymentStore,
    creator: PaymentCreator,
    bus: NotificationBus,
    stripe_simulator: RunningPart,
    unique: str,
) -> None:
    orphan, recent = f"orphan-{unique}", f"recent-{unique}"
    await reserved_long_ago(store, orphan, f"user-{unique}")
    await store.reserve(recent, f"user-{unique}", 990, "usd")

    assert await sweeper(store, creator, "one").run_once() == [orphan]

    payment = await store.find({"rideId": orphan})
    assert payment is not None and payment.stripe_session_id is not None
    assert await sessions_of(stripe_simulator, orphan) == [payment.stripe_session_id]
    [link] = [
        m.message for m in await bus.history(f"user-{unique}") if m.message["type"] == "payment_url"
    ]
    assert link["rideId"] == orphan and link["paymentUrl"] == payment.payment_url
    untouched = await store.find({"rideId": recent})
    assert untouched is not None and untouched.stripe_session_id is None
    assert await sweeper(store, creator, "one").run_once() == []


async def test_one_replica_at_a_time(
    store: PaymentStore, creator: PaymentCreator, unique: str
) -> None:
    await reserved_long_ago(store, f"orphan-{unique}", f"user-{unique}")
    holder = store.lease("orphan-sweeper", "another replica", ttl_s=60)
    assert await holder.acquire()
    assert await sweeper(store, creator, "one").run_once() == []
    await holder.release()
    assert await sweeper(store, creator, "one").run_once() == [f"orphan-{unique}"]


async def test_payments_stripe_refuses_take_their_turn_behind_the_others(
    store: PaymentStore, creator: PaymentCreator, unique: str
) -> None:
    refused = [f"refused-{unique}-{i}" for i in range(3)]
    for i, ride in enumerate(refused):  # older than the finishable one, which comes last
        await reserved_long_ago(store, ride, f"user-{unique}", currency="x1y", minutes=10 - i)
    finishable = f"finishable-{unique}"
    await reserved_long_ago(store, finishable, f"user-{unique}")
    sweep = sweeper(store, creator, "one", batch=2)

    assert await sweep.run_once() == [], "Stripe refuses the two oldest: an invalid currency"
    assert await sweep.run_once() == [finishable], "the third refused one and then the rest"
    for ride in refused:
        payment = await store.find({"rideId": ride})
        assert payment is not None and payment.stripe_session_id is None
