from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from shared.stripe_gateway import (
    CheckoutRequest,
    PermanentStripeError,
    StripeGateway,
    TransientStripeError,
)
from tests.conftest import TEST_STRIPE_KEY, RunningPart


@pytest.fixture
async def gateway(stripe_simulator: RunningPart) -> AsyncIterator[StripeGateway]:
    client = StripeGateway(TEST_STRIPE_KEY, stripe_simulator.url)
    yield client
    await client.close()


def checkout(ride_id: str, amount: int = 2550) -> CheckoutRequest:
    return CheckoutRequest(ride_id, "user-1", amount, "usd", "https://ok", "https://no")


async def sim(stripe: RunningPart, method: str, path: str, **body: object) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {TEST_STRIPE_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.request(method, f"{stripe.url}{path}", json=body or None) as response:
            assert response.status < 300, await response.text()
            result: dict[str, object] = await response.json()
            return result


async def test_creates_the_contract_session_once_per_ride(
    gateway: StripeGateway, stripe_simulator: RunningPart, unique: str
) -> None:
    ride = f"ride-{unique}"
    sessions = await asyncio.gather(
        *(gateway.create_checkout_session(checkout(ride)) for _ in range(5))
    )
    assert len({session.id for session in sessions}) == 1
    session = sessions[0]
    assert session.url and session.status == "open" and session.payment_status == "unpaid"

    stored = await sim(stripe_simulator, "GET", f"/v1/checkout/sessions/{session.id}")
    # The simulator keeps what the SDK sent; check it is what the contract asks for.
    assert stored["client_reference_id"] == ride
    assert stored["mode"] == "payment"
    assert stored["metadata"] == {"rideId": ride, "userId": "user-1", "attempt": "1"}
    assert stored["amount_total"] == 2550 and stored["currency"] == "usd"


async def test_retrieve_and_expire(gateway: StripeGateway, unique: str) -> None:
    created = await gateway.create_checkout_session(checkout(f"ride-{unique}"))
    assert (await gateway.retrieve_checkout_session(created.id)).status == "open"
    assert (await gateway.expire_checkout_session(created.id)).status == "expired"


async def test_server_errors_are_transient(
    gateway: StripeGateway, stripe_simulator: RunningPart, unique: str
) -> None:
    # (A 429 is retried by the gateway itself: tests/integration/test_stripe_rate_limits.py.)
    for status in (500, 503):
        await sim(stripe_simulator, "POST", "/_sim/faults", status=status, count=1)
        with pytest.raises(TransientStripeError):
            await gateway.create_checkout_session(checkout(f"ride-{unique}-{status}"))
    session = await gateway.create_checkout_session(checkout(f"ride-{unique}-500"))
    assert session.id.startswith("cs_")


async def test_refusals_are_permanent(gateway: StripeGateway, unique: str) -> None:
    await gateway.create_checkout_session(checkout(f"ride-{unique}", amount=100))
    with pytest.raises(PermanentStripeError, match="HTTP 400"):
        # the same idempotency key with other parameters: Stripe refuses for good
        await gateway.create_checkout_session(checkout(f"ride-{unique}", amount=200))
    with pytest.raises(PermanentStripeError):
        await gateway.retrieve_checkout_session("cs_does_not_exist")


async def test_a_bad_key_is_permanent(stripe_simulator: RunningPart, unique: str) -> None:
    wrong = StripeGateway("sk_test_wrong", stripe_simulator.url)
    try:
        with pytest.raises(PermanentStripeError, match="HTTP 401"):
            await wrong.create_checkout_session(checkout(f"ride-{unique}"))
    finally:
        await wrong.close()
