"""The consumer SIGKILLed at random moments while it works through 200 refund requests: each
request is refunded once at Stripe, and recorded."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp

from devstack import servers
from shared.store import PaymentStore, utcnow
from shared.stripe_gateway import CheckoutRequest, StripeGateway
from tests.conftest import TEST_STRIPE_KEY, RunningPart
from tests.e2e.test_consumer import start_consumer
from tests.e2e.test_refunds import request_refunds
from tests.helpers import eventually

__all__ = ["start_consumer"]  # the fixture this module uses

RIDES = 50
REFUNDS_PER_RIDE = 4  # of 5.00 each: together exactly the 20.00 charge, so a double would fail
CHARGE = 2000


async def paid_rides(stripe: RunningPart, store: PaymentStore, prefix: str) -> list[str]:
    """Rides paid at the simulator and stored `succeeded` with their PaymentIntent."""
    gateway = StripeGateway(TEST_STRIPE_KEY, stripe.url)
    rides = [f"{prefix}{i:03d}" for i in range(RIDES)]
    documents = []
    try:
        async with aiohttp.ClientSession() as http:
            for ride in rides:
                session = await gateway.create_checkout_session(
                    CheckoutRequest(ride, f"user-{ride}", CHARGE, "usd", "http://s", "http://c")
                )
                async with http.post(f"{stripe.url}/_sim/sessions/{session.id}/pay") as answer:
                    assert answer.status == 200, await answer.text()
                paid = await gateway.retrieve_checkout_session(session.id)
                documents.append(paid_record(ride, session.id, paid.payment_intent_id))
    finally:
        await gateway.close()
    await store.collection.insert_many(documents)
    return rides


def paid_record(ride: str, session_id: str, payment_intent_id: str | None) -> dict[str, Any]:
    now = utcnow()
    return {
        "rideId": ride,
        "userId": f"user-{ride}",
        "amount": CHARGE,
        "currency": "usd",
        "status": "succeeded",
        "version": 3,
        "stripeSessionId": session_id,
        "paymentUrl": None,
        "paymentIntentId": payment_intent_id,
        "history": [],
        "createdAt": now,
        "updatedAt": now,
    }


async def refunds_at_stripe(stripe: RunningPart, prefix: str) -> Counter[str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stripe.url}/_sim/refunds") as response:
            refunds = (await response.json())["data"]
    return Counter(
        r["metadata"]["refundId"]
        for r in refunds
        if r["metadata"].get("rideId", "").startswith(prefix)
    )


async def all_recorded(store: PaymentStore, prefix: str, expected: int) -> bool:
    cursor = store.collection.find({"rideId": {"$regex": f"^{prefix}"}})
    recorded = [r async for d in cursor for r in d.get("refunds", []) if r["stripeRefundId"]]
    return len(recorded) == expected


async def test_consumer_killed_at_random_refunds_every_request_once(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    stripe_simulator: RunningPart,
    store: PaymentStore,
    unique: str,
) -> None:
    prefix = f"rk-{unique}-"
    rides = await paid_rides(stripe_simulator, store, prefix)
    requests = [
        {"refundId": f"{ride}-{n}", "rideId": ride, "amount": "5.00"}
        for n in range(REFUNDS_PER_RIDE)
        for ride in rides
    ]
    await request_refunds(own_kafka, requests)
    chance = random.Random(unique)
    for _ in range(4):
        consumer = start_consumer()
        await asyncio.sleep(chance.uniform(1.0, 6.0))  # the kill is meant to land anywhere
        consumer.signal(signal.SIGKILL)
        consumer.kill()
    start_consumer()
    await eventually(
        lambda: all_recorded(store, prefix, len(requests)),
        timeout_s=240,
        every_s=1,
        what="every refund recorded with its Stripe id",
    )
    at_stripe = await refunds_at_stripe(stripe_simulator, prefix)
    assert set(at_stripe) == {r["refundId"] for r in requests}
    assert set(at_stripe.values()) == {1}, "a request was refunded twice"
