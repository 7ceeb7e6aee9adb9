"""The HTTP answers the running processes give, held to contracts/openapi.yaml: health,
readiness and metrics of every process, a refused webhook delivery, and the payments API."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp

from devstack import servers
from services.webhook.app import WEBHOOK_PATH
from tests.conftest import RunningPart
from tests.contracts import check_http_answer
from tests.e2e.conftest import System
from tests.e2e.test_payment_flow import publish_ride
from tests.e2e.test_refunds import request_refunds
from tests.helpers import eventually
from tests.integration.test_webhook import signed
from tests.stripe_shapes import stripe_event

PAYMENT = "/payment-service/payments/{rideId}"
CHECKOUT = "/payment-service/payments/{rideId}/checkout"
OUTSTANDING = "/payment-service/users/{userId}/outstanding"


async def answer(method: str, url: str, **request: Any) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **request) as response:
        return response.status, await response.read()


async def checked(system: System, process: servers.ChildProcess, method: str, path: str) -> int:
    """Ask `process` (on its internal port) `method path`, hold the answer to the contract."""
    status, body = await answer(method, system.internal_url(process, path))
    check_http_answer(method, path, status, body)
    return status


async def test_health_readiness_and_metrics_follow_the_contract(system: System) -> None:
    for process in (system.consumer, system.webhook, system.notifier):
        for path in ("/healthz", "/readyz", "/metrics"):
            assert await checked(system, process, "GET", path) == 200, (process.name, path)
    status, body = await answer("GET", system.url(system.webhook, "/healthz"))
    check_http_answer("GET", "/healthz", status, body)


async def test_a_refused_webhook_delivery_follows_the_contract(system: System) -> None:
    body = json.dumps(stripe_event("checkout.session.expired", {"id": "cs_nope"})).encode()
    for signature in ("", "t=1,v1=00", signed(body, secret="whsec_someone_else")):
        status, answered = await answer(
            "POST",
            system.url(system.webhook, WEBHOOK_PATH),
            data=body,
            headers={"Stripe-Signature": signature},
        )
        assert status == 400
        check_http_answer("POST", WEBHOOK_PATH, status, answered)


async def test_an_unknown_ride_follows_the_contract(system: System, unique: str) -> None:
    path = PAYMENT.replace("{rideId}", f"nope-{unique}")
    status, body = await answer("GET", system.internal_url(system.webhook, path))
    assert status == 404
    check_http_answer("GET", PAYMENT, status, body)


Record = dict[str, Any]


async def record_once(
    system: System, ride_id: str, what: str, done: Callable[[Record], bool]
) -> Record:
    """The ride's record, once `done` says it is (`what` names that state)."""
    url = system.internal_url(system.webhook, PAYMENT.replace("{rideId}", ride_id))

    async def reached() -> Record | None:
        status, body = await answer("GET", url)
        found: Record = json.loads(body) if status == 200 else {}
        return found if found and done(found) else None

    return await eventually(reached, timeout_s=60, what=f"the payment of {ride_id} {what}")


async def paid_for_later(system: System, kafka: RunningPart, unique: str) -> str:
    """A ride whose payment is pending with its link out; its rideId."""
    ride_id = f"ride-{unique}"
    await publish_ride(kafka, ride_id, f"user-{unique}", "12.40")
    await record_once(system, ride_id, "with its link", lambda r: r["paymentUrl"] is not None)
    return ride_id


async def test_the_payment_record_follows_the_contract(
    system: System, kafka: RunningPart, unique: str
) -> None:
    ride_id = await paid_for_later(system, kafka, unique)
    path = PAYMENT.replace("{rideId}", ride_id)
    status, body = await answer("GET", system.internal_url(system.webhook, path))
    check_http_answer("GET", PAYMENT, status, body)


async def test_checkout_and_outstanding_follow_the_contract(
    system: System, kafka: RunningPart, unique: str
) -> None:
    ride_id = await paid_for_later(system, kafka, unique)
    checkout = CHECKOUT.replace("{rideId}", ride_id)
    status, body = await answer("POST", system.internal_url(system.webhook, checkout))
    assert status == 200, body
    check_http_answer("POST", CHECKOUT, status, body)
    outstanding = OUTSTANDING.replace("{userId}", f"user-{unique}")
    status, body = await answer("GET", system.internal_url(system.webhook, outstanding))
    assert status == 200, body
    check_http_answer("GET", OUTSTANDING, status, body)


async def test_a_refunded_payment_record_follows_the_contract(
    system: System, kafka: RunningPart, unique: str
) -> None:
    ride_id = await paid_for_later(system, kafka, unique)
    pending = await record_once(system, ride_id, "pending", lambda r: r["status"] == "pending")
    pay = f"{system.stripe_url}/_sim/sessions/{pending['stripeSessionId']}/pay"
    status, body = await answer("POST", pay)
    assert status == 200, body
    await record_once(system, ride_id, "paid", lambda r: r["status"] == "succeeded")
    refund = {"refundId": f"rf-{unique}", "rideId": ride_id, "amount": "5.00"}
    await request_refunds(kafka, [{**refund, "reason": "requested_by_customer"}])
    await record_once(system, ride_id, "partly refunded", lambda r: r["amountRefunded"] == 500)
    path = PAYMENT.replace("{rideId}", ride_id)
    status, body = await answer("GET", system.internal_url(system.webhook, path))
    check_http_answer("GET", PAYMENT, status, body)
