"""The Stripe simulator of the local stack keeps its state on disk: after a restart (clean or
kill -9) a pending ride's link still opens and its idempotency key still finds its session.
And its Checkout page can end a payment `canceled`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from devstack import servers
from devstack.stripe_simulator import SimulatorConfig, create_app
from shared.stripe_gateway import CheckoutRequest, RefundCall, StripeGateway
from tests.conftest import TEST_STRIPE_KEY, RunningPart
from tests.helpers import eventually, serve


def simulator(state_file: Path, logs: Path, port: int) -> servers.ChildProcess:
    args = ["--port", str(port), "--api-key", TEST_STRIPE_KEY, "--state-file", str(state_file)]
    return servers.python_module(
        "stripe-simulator", "devstack.stripe_simulator", port, logs, {}, args
    )


async def status_of(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status


async def test_sessions_and_idempotency_keys_survive_restarts(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    port = servers.free_port()
    process = simulator(state_file, tmp_path, port)
    await asyncio.to_thread(process.start)
    gateway = StripeGateway(TEST_STRIPE_KEY, f"http://127.0.0.1:{port}")
    request = CheckoutRequest("ride-kept", "u1", 1250, "usd", "https://ok", "https://no")
    try:
        created = await gateway.create_checkout_session(request)
        assert created.url is not None

        process.stop()  # SIGTERM: written at shutdown
        await asyncio.to_thread(process.start)
        assert await status_of(created.url) == 200
        assert (await gateway.retrieve_checkout_session(created.id)).status == "open"
        assert (await gateway.create_checkout_session(request)).id == created.id

        second = CheckoutRequest("ride-killed", "u1", 990, "usd", "https://ok", "https://no")
        kept = await gateway.create_checkout_session(second)
        await eventually(
            lambda: asyncio.to_thread(lambda: kept.id in state_file.read_text()),
            timeout_s=30,
            what="the state written within a second",
        )
        process.kill()
        await asyncio.to_thread(process.start)
        assert (await gateway.retrieve_checkout_session(kept.id)).id == kept.id
        assert (await gateway.create_checkout_session(second)).id == kept.id
    finally:
        await gateway.close()
        process.stop()


async def test_abandoning_a_payment_cancels_its_intent_before_the_session_expires(
    stripe_simulator: RunningPart,
) -> None:
    gateway = StripeGateway(TEST_STRIPE_KEY, stripe_simulator.url)
    request = CheckoutRequest("ride-abandoned", "u1", 700, "usd", "https://ok", "https://no")
    try:
        session = await gateway.create_checkout_session(request)
    finally:
        await gateway.close()
    async with aiohttp.ClientSession() as http:
        page = f"{stripe_simulator.url}/checkout/{session.id}"
        async with http.get(page) as response:
            assert 'id="abandon"' in await response.text()
        url = f"{stripe_simulator.url}/_sim/sessions/{session.id}/abandon"
        async with http.post(url, json={"deliver": False}) as response:
            body = await response.json()
    assert [event["type"] for event in body["events"]] == [
        "payment_intent.canceled",
        "checkout.session.expired",
    ]
    assert body["events"][0]["data"]["object"]["metadata"]["rideId"] == "ride-abandoned"


async def test_charges_refunds_and_disputes_survive_a_restart(tmp_path: Path) -> None:
    """In process: the state file of one app, read by the next."""
    config = SimulatorConfig(api_key=TEST_STRIPE_KEY, state_file=str(tmp_path / "state.json"))
    runner, url = await serve(create_app(config))
    gateway = StripeGateway(TEST_STRIPE_KEY, url)
    request = CheckoutRequest("ride-refunded", "u1", 1500, "usd", "https://ok", "https://no")
    try:
        session = await gateway.create_checkout_session(request)
        async with aiohttp.ClientSession() as http:
            await http.post(f"{url}/_sim/sessions/{session.id}/pay")
            paid = await gateway.retrieve_checkout_session(session.id)
            assert paid.payment_intent_id is not None
            refund = await gateway.create_refund(
                RefundCall("ride-refunded", "rf-1", paid.payment_intent_id, 500, None)
            )
            async with http.post(f"{url}/_sim/disputes", json={"session": session.id}) as answer:
                dispute = (await answer.json())["dispute"]
    finally:
        await gateway.close()
        await runner.cleanup()  # writes the state file

    runner, url = await serve(create_app(config))
    try:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {TEST_STRIPE_KEY}"}
            for path in (f"refunds/{refund.id}", f"disputes/{dispute['id']}"):
                async with http.get(f"{url}/v1/{path}", headers=headers) as answer:
                    assert answer.status == 200, path
            async with http.get(f"{url}/v1/charges/{dispute['charge']}", headers=headers) as got:
                charge = await got.json()
        assert (charge["amount_refunded"], charge["disputed"]) == (500, True)
    finally:
        await runner.cleanup()
