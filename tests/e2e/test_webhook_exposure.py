"""The webhook process as the internet meets it: the public port serves Stripe's deliveries and
/healthz only; the internal port wants a bearer token for the payments API; an oversized body
is refused at once and its connection closed; no log line quotes a request."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil  # type: ignore[import-untyped]
import pytest

from devstack import servers
from services.webhook.app import WEBHOOK_PATH
from shared.store import PaymentStore
from tests.conftest import RunningPart
from tests.e2e.conftest import service_environment
from tests.helpers import eventually, http_status
from tests.integration.test_webhook import seed, signed, stripe_event

TOKENS = ("token-old-4f1c", "token-new-9a2e")
DATABASE = f"exposure-{uuid.uuid4().hex[:8]}"


@dataclass
class Webhook:
    process: servers.ChildProcess
    internal_port: int

    def public(self, path: str) -> str:
        return f"http://127.0.0.1:{self.process.port}{path}"

    def internal(self, path: str) -> str:
        return f"http://127.0.0.1:{self.internal_port}{path}"

    def cpu_seconds(self) -> float:
        assert self.process.process is not None
        times = psutil.Process(self.process.process.pid).cpu_times()
        return float(times.user + times.system)


@pytest.fixture(scope="module")
async def webhook(
    kafka: RunningPart,
    mongo: RunningPart,
    redis_server: RunningPart,
    stripe_simulator: RunningPart,
    logs_dir: Path,
) -> AsyncIterator[Webhook]:
    port, internal_port = servers.free_port(), servers.free_port()
    env = {
        **service_environment(kafka, mongo, redis_server, stripe_simulator, DATABASE),
        "PORT": str(port),
        "INTERNAL_PORT": str(internal_port),
        "INTERNAL_API_TOKENS": ",".join(TOKENS),
    }
    process = servers.python_module("webhook-exposure", "services.webhook", port, logs_dir, env)
    process.start(timeout_s=60)
    running = Webhook(process, internal_port)

    async def ready() -> bool:
        return await http_status(running.internal("/readyz")) == 200

    try:
        await eventually(ready, timeout_s=60, what="the webhook's /readyz on the internal port")
        yield running
    finally:
        process.stop()


@pytest.fixture
async def seeded_ride(mongo: RunningPart, unique: str) -> AsyncIterator[str]:
    store = PaymentStore.connect(mongo.url, DATABASE, "payments")
    ride = f"ride-{unique}"
    await seed(store, ride)
    yield ride
    await store.close()


async def status_of(url: str, method: str = "GET", token: str | None = None) -> int:
    headers = {"Authorization": token} if token else {}
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers) as r:
        return r.status


async def test_the_public_port_serves_only_the_webhook_and_healthz(
    webhook: Webhook, seeded_ride: str
) -> None:
    assert await status_of(webhook.public("/healthz")) == 200
    body = json.dumps(stripe_event("customer.created", {"id": "cus_1"})).encode()
    async with aiohttp.ClientSession() as http:
        headers = {"Stripe-Signature": signed(body)}
        async with http.post(webhook.public(WEBHOOK_PATH), data=body, headers=headers) as r:
            assert (r.status, (await r.json())["result"]) == (200, "ignored")
    bearer = f"Bearer {TOKENS[0]}"
    for path in (f"/payment-service/payments/{seeded_ride}", "/readyz", "/metrics", "/"):
        assert await status_of(webhook.public(path)) == 404, path
        assert await status_of(webhook.public(path), token=bearer) == 404, path


async def test_the_internal_port_wants_a_token_for_the_payments_api_only(
    webhook: Webhook, seeded_ride: str
) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert await status_of(webhook.internal(path)) == 200, path
    api = webhook.internal(f"/payment-service/payments/{seeded_ride}")
    for refused in (None, "Bearer", "Bearer wrong", f"Basic {TOKENS[0]}", f"Bearer {TOKENS[0]}x"):
        assert await status_of(api, token=refused) == 401, refused
    for token in TOKENS:
        assert await status_of(api, token=f"Bearer {token}") == 200, token
    unknown = webhook.internal(f"/payment-service/payments/nope-{seeded_ride}")
    assert await status_of(unknown, token=f"Bearer {TOKENS[1]}") == 404
