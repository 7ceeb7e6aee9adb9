"""Status events reach `payment-status-events` even when the webhook dies before sending them."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from devstack import servers
from services.webhook.signature import sign
from shared.status_events import STATUS_EVENTS_TOPIC
from shared.store import PaymentStore
from tests.conftest import TEST_WEBHOOK_SECRET, RunningPart
from tests.e2e.conftest import service_environment
from tests.helpers import eventually, http_status, read_topic
from tests.stripe_shapes import stripe_event, stripe_object

FARE = 700


def completed(ride: str) -> bytes:
    session = stripe_object(
        "checkout.session",
        id=f"cs_{ride}",
        payment_status="paid",
        status="complete",
        payment_intent=f"pi_{ride}",
        amount_subtotal=FARE,
        amount_total=FARE,
        currency="usd",
        metadata={"rideId": ride, "userId": "u"},
    )
    return json.dumps(
        stripe_event("checkout.session.completed", session, id=f"evt_{ride}")
    ).encode()


async def deliver(port: int, body: bytes) -> int:
    now = int(time.time())
    headers = {"Stripe-Signature": f"t={now},v1={sign(body, TEST_WEBHOOK_SECRET, now)}"}
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{port}/payment-service/webhook"
        async with http.post(url, data=body, headers=headers) as response:
            return response.status


async def test_webhook_killed_before_publishing_still_publishes_each_event_once(
    own_kafka: RunningPart,
    mongo: RunningPart,
    redis_server: RunningPart,
    stripe_simulator: RunningPart,
    logs_dir: Path,
    unique: str,
) -> None:
    database = f"events-{unique}"
    store = PaymentStore.connect(mongo.url, database, "payments")
    rides = [f"ride-{unique}-{i}" for i in range(10)]
    for ride in rides:
        reserved = await store.reserve(ride, "u", FARE, "usd")
        await store.attach_session(reserved, f"cs_{ride}", "https://pay")
    env = service_environment(own_kafka, mongo, redis_server, stripe_simulator, database)
    port, internal_port = servers.free_port(), servers.free_port()

    def webhook(kafka_url: str) -> servers.ChildProcess:
        process = servers.python_module(
            f"webhook-{unique}",
            "services.webhook",
            port,
            logs_dir,
            {
                **env,
                "PORT": str(port),
                "INTERNAL_PORT": str(internal_port),
                "KAFKA_BOOTSTRAP_SERVERS": kafka_url,
            },
        )
        process.start(timeout_s=60)
        return process

    # Kafka unreachable: every change is stored, no status event can leave.
    first = webhook(f"127.0.0.1:{servers.free_port()}")
    try:
        assert [await deliver(port, completed(ride)) for ride in rides] == [200] * 10
        first.signal(signal.SIGKILL)
    finally:
        first.kill()
    pending = await store._payments.count_documents({"outbox.eventId": {"$exists": True}})
    assert pending == 10

    second = webhook(own_kafka.url)
    try:
        await eventually(lambda: _ready(internal_port), timeout_s=30, what="webhook ready")
        events = await read_status_events(own_kafka, expected=10)
        unique_events = {event["eventId"]: event for event in events}
        assert sorted(e["rideId"] for e in unique_events.values()) == sorted(rides)
        assert {e["status"] for e in unique_events.values()} == {"succeeded"}

        async def outbox_empty() -> bool:
            remaining = await store._payments.count_documents({"outbox.eventId": {"$exists": True}})
            return remaining == 0

        await eventually(outbox_empty, timeout_s=30, what="the outbox to drain")
    finally:
        second.stop()
        await store.close()


async def _ready(port: int) -> bool:
    return await http_status(f"http://127.0.0.1:{port}/readyz") == 200


async def read_status_events(kafka: RunningPart, expected: int) -> list[dict[str, Any]]:
    """Read as a deduplicating consumer would: until `expected` distinct eventIds arrived."""

    def distinct(records: list[Any]) -> bool:
        return len({json.loads(record.value)["eventId"] for record in records}) >= expected

    records = await read_topic(kafka.url, STATUS_EVENTS_TOPIC, distinct)
    return [json.loads(record.value) for record in records]
