"""What an attacker can send the webhook: crafted signature headers, signed bodies of hostile
shape, made-up event types. Each is refused (or ignored) with a clear answer and counted; none
raises past the handler. The webhook app in-process against real MongoDB and Redis."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from services.webhook.app import WEBHOOK_PATH, create_app
from tests.conftest import RunningPart
from tests.integration.test_webhook import Client, settings_for, signed, stripe_event


@pytest.fixture
async def client(
    kafka: RunningPart, mongo: RunningPart, redis_server: RunningPart, unique: str
) -> AsyncIterator[Client]:
    app = create_app(settings_for(kafka.url, mongo.url, redis_server.url, f"test-{unique}"))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


SIGNATURE_FAILURES = "payments_webhook_signature_failures_total"
EVENTS = "payments_webhook_events_total"
BODY = json.dumps(stripe_event("checkout.session.completed", {"id": "cs_x"})).encode()


def now() -> int:
    return int(time.time())


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda: f"t={'9' * 400},v1=0", id="timestamp-of-400-digits"),
        pytest.param(lambda: "t=²,v1=0", id="superscript-digit"),
        pytest.param(lambda: "t=١٢٣,v1=0", id="arabic-indic-digits"),
        pytest.param(lambda: f"t={now()},v1=é", id="non-ascii-signature"),
        pytest.param(lambda: f"t={now()},v1={'a' * 64}é", id="non-ascii-after-hex"),
        pytest.param(lambda: f"t={now()}," + "v1=00," * 1_000, id="header-of-6-kb"),
        pytest.param(lambda: f"t=-{now()},v1=0", id="negative-timestamp"),
        pytest.param(lambda: "t=1e9,v1=0", id="exponent"),
    ],
)
async def test_crafted_signature_headers_get_400_and_are_counted(
    client: Client, header: Any
) -> None:
    before = counted(SIGNATURE_FAILURES)
    response = await client.post(WEBHOOK_PATH, data=BODY, headers={"Stripe-Signature": header()})
    assert response.status == 400, await response.text()
    assert "invalid signature" in (await response.json())["error"]
    assert counted(SIGNATURE_FAILURES) == before + 1


def nested(depth: int) -> bytes:
    brackets = b"[" * depth + b"]" * depth
    return b'{"id": "evt_deep", "type": "x", "data": {"object": ' + brackets + b"}}"


@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_a_signed_body_nested_deep_is_malformed_and_counted(
    client: Client, depth: int
) -> None:
    body = nested(depth)
    before = counted(EVENTS, type="unknown", outcome="malformed")
    response = await client.post(
        WEBHOOK_PATH, data=body, headers={"Stripe-Signature": signed(body)}
    )
    assert response.status == 400
    assert "malformed event" in (await response.json())["error"]
    assert counted(EVENTS, type="unknown", outcome="malformed") == before + 1


async def test_a_signed_body_of_modest_depth_with_brackets_in_strings_is_read(
    client: Client,
) -> None:
    resource = {"id": "cs_x", "metadata": {"note": "[[[{{{" * 200 + '\\"'}}
    body = json.dumps(stripe_event("customer.created", resource)).encode()
    response = await client.post(
        WEBHOOK_PATH, data=body, headers={"Stripe-Signature": signed(body)}
    )
    assert (response.status, (await response.json())["result"]) == (200, "ignored")


async def test_unknown_event_types_share_one_metric_label(client: Client, unique: str) -> None:
    made_up = f"attacker.made.up.{unique}"
    before = counted(EVENTS, type="other", outcome="ignored")
    for kind in (made_up, f"{made_up}.again"):
        body = json.dumps(stripe_event(kind, {"id": "x"})).encode()
        response = await client.post(
            WEBHOOK_PATH, data=body, headers={"Stripe-Signature": signed(body)}
        )
        assert response.status == 200
    assert counted(EVENTS, type="other", outcome="ignored") == before + 2
    assert counted(EVENTS, type=made_up, outcome="ignored") == 0
    known = json.dumps(stripe_event("checkout.session.completed", {"id": "cs_unpaid"})).encode()
    before_known = counted(EVENTS, type="checkout.session.completed", outcome="ignored")
    await client.post(WEBHOOK_PATH, data=known, headers={"Stripe-Signature": signed(known)})
    assert counted(EVENTS, type="checkout.session.completed", outcome="ignored") == before_known + 1


async def test_an_oversized_body_is_refused_with_its_connection(client: Client) -> None:
    before = counted("payments_webhook_oversized_bodies_total")
    huge = b"x" * (512 * 1024 + 1)
    response = await client.post(WEBHOOK_PATH, data=huge, headers={"Stripe-Signature": "t=1"})
    assert response.status == 413
    assert response.headers["Connection"] == "close"
    assert counted("payments_webhook_oversized_bodies_total") == before + 1
