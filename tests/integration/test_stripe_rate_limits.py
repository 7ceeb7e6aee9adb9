"""Stripe's rate limit spent on purpose: the simulator's limits, the shared budget in a real
Redis, and the gateway that paces every call through it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from devstack import servers
from devstack.stripe_simulator import SimulatorConfig, create_app
from devstack.stripe_simulator.rate_limits import RateLimitSettings
from shared.stripe_budget import BUDGET_KEY, LOCAL_SHARE, Priority, StripeBudget
from shared.stripe_gateway import (
    CheckoutRequest,
    StripeGateway,
    StripeRateLimited,
)
from tests.conftest import TEST_STRIPE_KEY, RunningPart
from tests.helpers import serve

GatewayFactory = Callable[..., StripeGateway]


@pytest.fixture
async def limited_stripe() -> AsyncIterator[str]:
    """A simulator of the test's own allowing 20 requests a second, as Stripe would."""
    config = SimulatorConfig(
        api_key=TEST_STRIPE_KEY, rate_limits=RateLimitSettings(global_per_s=20)
    )
    runner, url = await serve(create_app(config))
    yield url
    await runner.cleanup()


@pytest.fixture
async def make_gateway(limited_stripe: str) -> AsyncIterator[GatewayFactory]:
    gateways: list[StripeGateway] = []

    def make(**options: Any) -> StripeGateway:
        gateway = StripeGateway(TEST_STRIPE_KEY, limited_stripe, **options)
        gateways.append(gateway)
        return gateway

    yield make
    for gateway in gateways:
        await gateway.close()


@pytest.fixture
async def fresh_budget_key(redis_server: RunningPart) -> AsyncIterator[None]:
    """Each test starts with an empty schedule (the key is shared by design)."""
    budget = StripeBudget.connect(redis_server.url, 1, processes=1)
    await budget._redis.delete(BUDGET_KEY)
    yield
    await budget.close()


async def sim_json(url: str, method: str = "GET", **body: object) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, json=body or None) as response:
            result: dict[str, Any] = await response.json()
            return result


def checkout(ride_id: str) -> CheckoutRequest:
    return CheckoutRequest(ride_id, "user-1", 700, "usd", "https://ok", "https://no")


async def timed(calls: list[Awaitable[object]]) -> float:
    started = time.monotonic()
    await asyncio.gather(*calls)
    return time.monotonic() - started


# --- the simulator ---------------------------------------------------------------------------


async def test_simulator_answers_429_as_stripe_does_and_counts_it(
    make_gateway: GatewayFactory, limited_stripe: str, unique: str
) -> None:
    unpaced = make_gateway(max_in_flight=64)
    raw = unpaced._client  # the SDK as it is, without our pacing
    results = await asyncio.gather(
        *(
            raw.v1.checkout.sessions.create_async(params=checkout(f"r{i}-{unique}").params())  # type: ignore[arg-type]
            for i in range(40)
        ),
        return_exceptions=True,
    )
    refusals = [r for r in results if isinstance(r, Exception)]
    assert refusals, "40 calls at once must overrun 20/s"
    refusal: Any = refusals[0]
    assert refusal.http_status == 429
    assert refusal.json_body["error"]["code"] == "rate_limit"
    headers = {name.lower(): value for name, value in refusal.headers.items()}
    assert headers["stripe-should-retry"] == "true"
    assert headers["stripe-rate-limited-reason"] == "global-rate"

    counts = await sim_json(f"{limited_stripe}/_sim/rate_limits")
    assert counts["refused"] == len(refusals)
    assert counts["refused_by_reason"] == {"global-rate": len(refusals)}
    assert counts["accepted"] == 40 - len(refusals)


async def test_simulator_limits_each_endpoint_when_asked(limited_stripe: str) -> None:
    limits = await sim_json(
        f"{limited_stripe}/_sim/rate_limits", "POST", global_per_s=None, endpoint_per_s=5
    )
    assert limits["endpoint_per_s"] == 5 and limits["global_per_s"] is None
    headers = {"Authorization": f"Bearer {TEST_STRIPE_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        statuses = []
        for path in ["/v1/checkout/sessions/cs_x"] * 8 + ["/v1/payment_intents/pi_x"]:
            async with http.get(limited_stripe + path) as response:
                statuses.append(
                    (response.status, response.headers.get("Stripe-Rate-Limited-Reason"))
                )
    assert (429, "endpoint-rate") in statuses[:8]
    assert statuses[8] == (404, None), "another endpoint has its own budget"


# --- the budget --------------------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_budget_key")
async def test_processes_share_one_rate(redis_server: RunningPart) -> None:
    budgets = [StripeBudget.connect(redis_server.url, 20, processes=3) for _ in range(3)]
    try:
        elapsed = await timed([budget.take() for budget in budgets for _ in range(14)])
    finally:
        for budget in budgets:
            await budget.close()
    # 42 turns at 20/s: the first at once, the last 41 intervals later.
    assert 41 / 20 - 0.1 <= elapsed <= 41 / 20 + 1.0


@pytest.mark.usefixtures("fresh_budget_key")
async def test_housekeeping_takes_only_what_riders_leave(redis_server: RunningPart) -> None:
    budget = StripeBudget.connect(redis_server.url, 20, processes=1)
    finished: list[str] = []

    async def take(priority: Priority, name: str) -> None:
        await budget.take(priority)
        finished.append(name)

    riders = [asyncio.create_task(take(Priority.RIDER, f"rider-{i}")) for i in range(20)]
    await asyncio.sleep(0.01)  # the riders have reserved their turns
    housekeeping = asyncio.create_task(take(Priority.HOUSEKEEPING, "housekeeping"))
    await asyncio.gather(*riders, housekeeping)
    await budget.close()
    assert finished[-1] == "housekeeping"


async def test_without_redis_each_process_takes_its_local_share() -> None:
    dead = f"redis://127.0.0.1:{servers.free_port()}/0"
    budget = StripeBudget.connect(dead, 20, processes=4)  # 5 a second for this process
    try:
        elapsed = await timed([budget.take() for _ in range(5)])
        assert LOCAL_SHARE._value.get() == 1
    finally:
        await budget.close()
    assert 4 / 5 - 0.1 <= elapsed <= 4 / 5 + 0.5


# --- the gateway -------------------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_budget_key")
async def test_paced_calls_all_succeed_within_the_limit(
    make_gateway: GatewayFactory, redis_server: RunningPart, limited_stripe: str, unique: str
) -> None:
    gateways = [
        make_gateway(budget=StripeBudget.connect(redis_server.url, 20, processes=2))
        for _ in range(2)
    ]
    sessions = await asyncio.gather(
        *(gateways[i % 2].create_checkout_session(checkout(f"r{i}-{unique}")) for i in range(50))
    )
    assert len({session.id for session in sessions}) == 50
    counts = await sim_json(f"{limited_stripe}/_sim/rate_limits")
    assert counts["refused"] == 0
    assert counts["busiest_second"] <= 21


async def test_a_429_is_retried_and_lowers_the_in_flight_limit(
    make_gateway: GatewayFactory, limited_stripe: str, unique: str
) -> None:
    gateway = make_gateway(max_in_flight=8)
    await sim_json(f"{limited_stripe}/_sim/faults", "POST", status=429, count=2)
    session = await gateway.create_checkout_session(checkout(f"ride-{unique}"))
    assert session.url
    assert gateway._in_flight.limit == 4  # halved once per burst of refusals


async def test_a_429_that_should_not_be_retried_reaches_the_caller_as_transient(
    make_gateway: GatewayFactory, limited_stripe: str, unique: str
) -> None:
    gateway = make_gateway()
    await sim_json(f"{limited_stripe}/_sim/faults", "POST", status=429, count=1, should_retry=False)
    with pytest.raises(StripeRateLimited):
        await gateway.create_checkout_session(checkout(f"ride-{unique}"))
