"""A new payment link after expiry, across the three processes and the Stripe simulator: the
rider is told, the new attempt is paid, late events about the old one change nothing but its
history; concurrent calls from two webhook processes make one session."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devstack import servers
from devstack.cli import _outstanding
from services.webhook.app import WEBHOOK_PATH
from shared.store import PaymentStore
from shared.stripe_gateway import CheckoutRequest, StripeGateway, expires_at_of
from tests.conftest import TEST_STRIPE_KEY, RunningPart
from tests.e2e.conftest import System
from tests.e2e.test_payment_flow import publish_ride
from tests.helpers import eventually, http_status, next_message
from tests.integration.test_webhook import signed
from tests.stripe_shapes import stripe_event, stripe_object

TOKEN = "attempts-token-7d1e"
Socket = aiohttp.ClientWebSocketResponse


def payments(system: System, path: str) -> str:
    return system.internal_url(system.webhook, f"/payment-service{path}")


async def record(http: aiohttp.ClientSession, system: System, ride: str) -> dict[str, Any]:
    async with http.get(payments(system, f"/payments/{ride}")) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def ask_for_link(
    http: aiohttp.ClientSession, url: str, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(url, headers=headers) as response:
        return response.status, await response.json()


async def next_of_type(socket: Socket, kind: str, ride: str) -> dict[str, Any]:
    """The next message of `kind` about `ride` (a `pending` status update may come between)."""
    while True:
        message = await next_message(socket, timeout_s=60)
        if message["type"] == kind and message.get("rideId") == ride:
            return message


async def sim(http: aiohttp.ClientSession, system: System, action: str, session: str) -> None:
    async with http.post(f"{system.stripe_url}/_sim/sessions/{session}/{action}") as response:
        assert response.status == 200, await response.text()


async def status_becomes(
    http: aiohttp.ClientSession, system: System, ride: str, status: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        current = await record(http, system, ride)
        return current if current["status"] == status else None

    return await eventually(probe, timeout_s=60, what=f"ride {ride} {status}")


async def simulator_sessions(http: aiohttp.ClientSession, system: System, ride: str) -> list[Any]:
    async with http.get(f"{system.stripe_url}/_sim/sessions") as response:
        sessions = (await response.json())["data"]
    return [s for s in sessions if s["metadata"].get("rideId") == ride]


async def expired_ride(
    http: aiohttp.ClientSession, system: System, kafka: RunningPart, ride: str, user: str
) -> dict[str, Any]:
    """A ride whose first session expired at the simulator, as the record shows it."""
    await publish_ride(kafka, ride, user, "12.40")

    async def attached() -> dict[str, Any] | None:
        async with http.get(payments(system, f"/payments/{ride}")) as response:
            if response.status != 200:
                return None
            body: dict[str, Any] = await response.json()
            return body if body["stripeSessionId"] else None

    first = await eventually(attached, timeout_s=60, what=f"ride {ride}'s first session")
    await sim(http, system, "expire", first["stripeSessionId"])
    return await status_becomes(http, system, ride, "expired")


async def deliver_late(http: aiohttp.ClientSession, system: System, event: dict[str, Any]) -> Any:
    body = json.dumps(event).encode()
    url = system.url(system.webhook, WEBHOOK_PATH)
    async with http.post(url, data=body, headers={"Stripe-Signature": signed(body)}) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["result"]


async def test_an_expired_ride_gets_a_new_link_the_rider_pays_it_and_late_events_change_nothing(
    system: System, kafka: RunningPart, unique: str
) -> None:
    ride, user = f"again-{unique}", f"rider-{unique}"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(system.websocket_url, params={"userId": user}) as socket:
            assert (await next_message(socket))["type"] == "registration_success"
            first = await expired_ride(http, system, kafka, ride, user)
            link_1 = await next_of_type(socket, "payment_url", ride)
            assert (link_1["attempt"], link_1["amount"], link_1["currency"]) == (1, 1240, "usd")
            assert link_1["expiresAt"] is not None
            assert (await next_of_type(socket, "payment_status_update", ride))["status"] == (
                "expired"
            )

            status, link = await ask_for_link(http, payments(system, f"/payments/{ride}/checkout"))
            assert status == 200, link
            assert link["attempt"] == 2 and link["status"] == "pending"
            assert link["stripeSessionId"] != first["stripeSessionId"]

            pushed = await next_of_type(socket, "payment_url", ride)
            assert pushed["paymentUrl"] == link["paymentUrl"]
            assert (pushed["attempt"], pushed["amount"], pushed["currency"]) == (2, 1240, "usd")
            assert pushed["expiresAt"] == link["expiresAt"]

            # Attempt 2's key is checkout-<rideId>-2: Stripe answers it with the same session.
            gateway = StripeGateway(TEST_STRIPE_KEY, system.stripe_url)
            try:
                request = CheckoutRequest(ride, user, 1240, "usd", *_redirects(), attempt=2)
                assert (await gateway.create_checkout_session(request)).id == link[
                    "stripeSessionId"
                ]
            finally:
                await gateway.close()

            # A late event about attempt 1: noted in its history, the current attempt untouched.
            late = stripe_event(
                "checkout.session.expired",
                stripe_object(
                    "checkout.session",
                    id=first["stripeSessionId"],
                    status="expired",
                    payment_intent=None,
                    amount_subtotal=1240,
                    amount_total=1240,
                    currency="usd",
                    metadata={"rideId": ride, "userId": user, "attempt": "1"},
                ),
            )
            assert await deliver_late(http, system, late) == "unchanged"
            current = await record(http, system, ride)
            assert (current["status"], current["attempt"]) == ("pending", 2)
            assert late["id"] in [entry["eventId"] for entry in current["history"]]

            await sim(http, system, "pay", link["stripeSessionId"])
            update = await next_of_type(socket, "payment_status_update", ride)
            while update["status"] == "pending":
                update = await next_of_type(socket, "payment_status_update", ride)
            assert update["status"] == "succeeded"
            assert update["stripeSessionId"] == link["stripeSessionId"]

        paid = await status_becomes(http, system, ride, "succeeded")
        assert [(a["attempt"], a["status"]) for a in paid["attempts"]] == [
            (1, "expired"),
            (2, "succeeded"),
        ]
        # A paid ride gets no link, and another late event about attempt 1 changes nothing.
        status, refusal = await ask_for_link(http, payments(system, f"/payments/{ride}/checkout"))
        assert status == 409, refusal
        failed_1 = stripe_event(
            "payment_intent.payment_failed",
            stripe_object(
                "payment_intent",
                id="pi_late",
                amount=1240,
                currency="usd",
                status="requires_payment_method",
                metadata={"rideId": ride, "userId": user, "attempt": "1"},
            ),
        )
        assert await deliver_late(http, system, failed_1) == "unchanged"
        assert (await record(http, system, ride))["status"] == "succeeded"


def _redirects() -> tuple[str, str]:
    return "http://localhost:3000/success", "http://localhost:3000/cancel"


async def test_a_bank_debit_is_processing_and_once_it_failed_the_rider_gets_a_new_link(
    system: System, kafka: RunningPart, unique: str
) -> None:
    """The rider pays by bank debit: told `processing`, no link to give (409) while it is on
    its way; the debit fails days later: `failed`, and the next link is a new attempt (the
    completed session can never be paid again)."""
    ride, user = f"debit-{unique}", f"rider-{unique}"
    checkout = payments(system, f"/payments/{ride}/checkout")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(system.websocket_url, params={"userId": user}) as socket:
            assert (await next_message(socket))["type"] == "registration_success"
            await publish_ride(kafka, ride, user, "18.20")
            first = await eventually(
                lambda: _attached(http, system, ride), timeout_s=60, what="the first session"
            )
            assert (await next_of_type(socket, "payment_url", ride))["attempt"] == 1
            await sim(http, system, "debit", first["stripeSessionId"])
            update = await next_of_type(socket, "payment_status_update", ride)
            assert update["status"] == "processing"
            processing = await status_becomes(http, system, ride, "processing")
            assert processing["attempts"][0]["asyncPayment"] == "processing"
            status, refusal = await ask_for_link(http, checkout)
            assert status == 409 and "processing" in refusal["error"]

            await sim(http, system, "debit_fails", first["stripeSessionId"])
            assert (await next_of_type(socket, "payment_status_update", ride))["status"] == (
                "failed"
            )
            await status_becomes(http, system, ride, "failed")
            status, link = await ask_for_link(http, checkout)
            assert status == 200, link
            assert link["attempt"] == 2 and link["stripeSessionId"] != first["stripeSessionId"]
            assert (await next_of_type(socket, "payment_url", ride))["attempt"] == 2
        sessions = {s["id"]: s["status"] for s in await simulator_sessions(http, system, ride)}
        assert sessions == {first["stripeSessionId"]: "complete", link["stripeSessionId"]: "open"}


async def test_a_payable_link_comes_back_unchanged_and_an_unknown_ride_is_404(
    system: System, kafka: RunningPart, unique: str
) -> None:
    ride, user = f"payable-{unique}", f"rider-{unique}"
    async with aiohttp.ClientSession() as http:
        await publish_ride(kafka, ride, user, "9.99")
        current = await eventually(
            lambda: _attached(http, system, ride), timeout_s=60, what="the first session"
        )
        status, link = await ask_for_link(http, payments(system, f"/payments/{ride}/checkout"))
        assert status == 200, link
        assert (link["attempt"], link["stripeSessionId"]) == (1, current["stripeSessionId"])
        assert len(await simulator_sessions(http, system, ride)) == 1

        status, _ = await ask_for_link(http, payments(system, f"/payments/nope-{unique}/checkout"))
        assert status == 404


async def _attached(
    http: aiohttp.ClientSession, system: System, ride: str
) -> dict[str, Any] | None:
    async with http.get(payments(system, f"/payments/{ride}")) as response:
        if response.status != 200:
            return None
        body: dict[str, Any] = await response.json()
        return body if body["stripeSessionId"] else None


@pytest.fixture
async def second_webhook(
    system: System, kafka: RunningPart, logs_dir: Path
) -> AsyncIterator[tuple[str, str]]:
    """Another webhook process on the same stores, asking for a bearer token: its public and
    internal base URLs."""
    port, internal_port = servers.free_port(), servers.free_port()
    env = {
        **system.env,
        "PORT": str(port),
        "INTERNAL_PORT": str(internal_port),
        "INTERNAL_API_TOKENS": TOKEN,
    }
    process = servers.python_module("webhook-2", "services.webhook", port, logs_dir, env)
    process.start(timeout_s=60)
    internal = f"http://127.0.0.1:{internal_port}"

    async def ready() -> bool:
        return await http_status(f"{internal}/readyz") == 200

    try:
        await eventually(ready, timeout_s=60, what="the second webhook's /readyz")
        yield f"http://127.0.0.1:{port}", internal
    finally:
        process.stop()


async def test_fifty_concurrent_calls_from_two_webhook_processes_make_one_new_session(
    system: System, kafka: RunningPart, second_webhook: tuple[str, str], unique: str
) -> None:
    ride, user = f"race-{unique}", f"rider-{unique}"
    _, second_internal = second_webhook
    async with aiohttp.ClientSession() as http:
        first = await expired_ride(http, system, kafka, ride, user)
        path = f"/payment-service/payments/{ride}/checkout"
        status, _ = await ask_for_link(http, second_internal + path)
        assert status == 401  # tokens are set on this one

        calls = [
            ask_for_link(http, payments(system, f"/payments/{ride}/checkout"))
            if n % 2
            else ask_for_link(http, second_internal + path, TOKEN)
            for n in range(50)
        ]
        answers = await asyncio.gather(*calls)

        assert {status for status, _ in answers} == {200}
        assert {(link["attempt"], link["stripeSessionId"]) for _, link in answers} == {
            (2, (await record(http, system, ride))["stripeSessionId"])
        }
        sessions = await simulator_sessions(http, system, ride)
        assert sorted(s["metadata"]["attempt"] for s in sessions) == ["1", "2"]
        assert [s["id"] for s in sessions if s["status"] == "open"] == [
            answers[0][1]["stripeSessionId"]
        ]
        assert first["stripeSessionId"] in {s["id"] for s in sessions}


async def test_a_success_on_an_earlier_attempt_settles_the_ride_and_expires_the_other_session(
    system: System, kafka: RunningPart, mongo: RunningPart, unique: str
) -> None:
    """Two sessions open at once cannot arise from the API; it is made here by hand, to show
    the webhook's safety net."""
    ride, user = f"earlier-{unique}", f"rider-{unique}"
    async with aiohttp.ClientSession() as http:
        await publish_ride(kafka, ride, user, "30.00")
        first = await eventually(
            lambda: _attached(http, system, ride), timeout_s=60, what="the first session"
        )
        second_id = await second_attempt_by_hand(mongo, system, ride, user, 3000)

        await sim(http, system, "pay", first["stripeSessionId"])

        paid = await status_becomes(http, system, ride, "succeeded")
        assert paid["attempt"] == 2 and paid["stripeSessionId"] == second_id

        async def second_expired() -> bool:
            sessions = {s["id"]: s for s in await simulator_sessions(http, system, ride)}
            return bool(sessions[second_id]["status"] == "expired")

        await eventually(second_expired, timeout_s=60, what="the other session expired")
        assert (await record(http, system, ride))["status"] == "succeeded"


async def second_attempt_by_hand(
    mongo: RunningPart, system: System, ride: str, user: str, amount: int
) -> str:
    """Attempt 2, its session open while attempt 1's still is (the API never leaves two open;
    a late PaymentIntent, or an expiry that did not reach Stripe, can): its session id."""
    store = PaymentStore.connect(mongo.url, "e2e", "payments")
    gateway = StripeGateway(TEST_STRIPE_KEY, system.stripe_url)
    try:
        current = await store.find({"rideId": ride})
        assert current is not None
        second = await gateway.create_checkout_session(
            CheckoutRequest(ride, user, amount, "usd", *_redirects(), attempt=2)
        )
        assert second.url is not None
        started = await store.start_attempt(current, second.id, second.url, expires_at_of(second))
        assert started is not None and started.attempt == 2
        return second.id
    finally:
        await gateway.close()
        await store.close()


async def test_outstanding_through_the_api_and_the_devstack_command(
    system: System, kafka: RunningPart, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    user = f"owes-{unique}"
    async with aiohttp.ClientSession() as http:
        expired = await expired_ride(http, system, kafka, f"old-{unique}", user)
        await publish_ride(kafka, f"new-{unique}", user, "3.10")
        await eventually(
            lambda: _attached(http, system, f"new-{unique}"), timeout_s=60, what="second ride"
        )
        async with http.get(payments(system, f"/users/{user}/outstanding")) as response:
            assert response.status == 200
            owed = await response.json()

    assert [(r["rideId"], r["status"]) for r in owed["rides"]] == [
        (expired["rideId"], "expired"),
        (f"new-{unique}", "pending"),
    ]
    assert owed["total"] == {"usd": 1240 + 310}
    assert owed["rides"][0]["paymentUrl"] is None and owed["rides"][1]["paymentUrl"]

    api = system.internal_url(system.webhook, "/payment-service")
    await _outstanding(argparse.Namespace(user=user, api=api, token=None))
    printed = capsys.readouterr().out
    assert f"old-{unique}  1240 usd  expired" in printed
    assert "total owed (minor units): 1550 usd" in printed


async def test_a_session_expired_at_stripe_whose_webhook_is_lost_is_never_handed_out(
    system: System, kafka: RunningPart, unique: str
) -> None:
    """The finding: Stripe expired the session (early, or its expiry webhook was lost) while
    the record still gives it hours: every new-link call returned the dead link."""
    ride, user = f"dead-link-{unique}", f"rider-{unique}"
    async with aiohttp.ClientSession() as http:
        await publish_ride(kafka, ride, user, "7.70")
        first = await eventually(
            lambda: _attached(http, system, ride), timeout_s=60, what="the first session"
        )
        url = f"{system.stripe_url}/_sim/sessions/{first['stripeSessionId']}/expire"
        async with http.post(url, json={"deliver": False}) as response:
            assert response.status == 200, await response.text()
        assert (await record(http, system, ride))["status"] == "pending"

        answers = await asyncio.gather(
            *(ask_for_link(http, payments(system, f"/payments/{ride}/checkout")) for _ in range(8))
        )

        assert {status for status, _ in answers} == {200}
        assert {(link["attempt"], link["stripeSessionId"]) for _, link in answers} == {
            (2, (await record(http, system, ride))["stripeSessionId"])
        }
        sessions = {s["id"]: s["status"] for s in await simulator_sessions(http, system, ride)}
        assert sessions == {
            first["stripeSessionId"]: "expired",
            answers[0][1]["stripeSessionId"]: "open",
        }
