"""The webhook app in-process against real MongoDB and Redis."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from devstack import servers
from services.webhook.app import WEBHOOK_PATH, create_app, create_internal_app
from services.webhook.signature import sign
from shared.bus import NotificationBus
from shared.settings import Settings
from shared.store import PaymentStore
from tests.conftest import TEST_WEBHOOK_SECRET, RunningPart
from tests.helpers import eventually
from tests.stripe_shapes import stripe_event, stripe_object

Client = TestClient[Any, Any]


def settings_for(kafka_url: str, mongo_url: str, redis_url: str, database: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=kafka_url,
        mongodb_uri=mongo_url,
        mongodb_database=database,
        redis_url=redis_url,
        stripe_webhook_secret=SecretStr(TEST_WEBHOOK_SECRET),
    )


@pytest.fixture
async def client(
    kafka: RunningPart, mongo: RunningPart, redis_server: RunningPart, unique: str
) -> AsyncIterator[Client]:
    app = create_app(settings_for(kafka.url, mongo.url, redis_server.url, f"test-{unique}"))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def signed(body: bytes, secret: str = TEST_WEBHOOK_SECRET, at: float | None = None) -> str:
    timestamp = int(time.time() if at is None else at)
    return f"t={timestamp},v1={sign(body, secret, timestamp)}"


async def deliver(client: Client, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = json.dumps(event).encode()
    response = await client.post(
        WEBHOOK_PATH, data=body, headers={"Stripe-Signature": signed(body)}
    )
    return response.status, await response.json()


FARE = 2550  # what seed() charges, in cents
CURRENCY = "usd"


def session_event(kind: str, ride: str, session_id: str, **fields: Any) -> dict[str, Any]:
    """Stripe's Checkout Session of the seeded ride, paid unless `fields` say otherwise."""
    session = {
        "id": session_id,
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "payment_intent": f"pi_{ride}",
        "client_reference_id": ride,
        "metadata": {"rideId": ride, "userId": f"user-{ride}"},
        "amount_subtotal": FARE,
        "amount_total": FARE,
        "currency": CURRENCY,
        "url": None,
    }
    return stripe_event(kind, stripe_object("checkout.session", **(session | fields)))


INTENT_STATUS = {
    "payment_intent.succeeded": "succeeded",
    "payment_intent.payment_failed": "requires_payment_method",
    "payment_intent.canceled": "canceled",
}


def intent_event(kind: str, ride: str, **fields: Any) -> dict[str, Any]:
    """Stripe's PaymentIntent of the seeded ride, in the status the event type says."""
    status = INTENT_STATUS[kind]
    intent = {
        "id": f"pi_{ride}",
        "amount": FARE,
        "amount_received": FARE if status == "succeeded" else 0,
        "currency": CURRENCY,
        "status": status,
        "metadata": {"rideId": ride, "userId": f"user-{ride}"},
    }
    return stripe_event(kind, stripe_object("payment_intent", **(intent | fields)))


async def seed(store: PaymentStore, ride: str) -> str:
    reserved = await store.reserve(ride, f"user-{ride}", FARE, CURRENCY)
    session_id = f"cs_{ride}"
    await store.attach_session(reserved, session_id, f"https://pay/{session_id}")
    return session_id


@pytest.fixture
async def webhook_store(mongo: RunningPart, unique: str) -> AsyncIterator[PaymentStore]:
    store = PaymentStore.connect(mongo.url, f"test-{unique}", "payments")
    await store.ensure_indexes()
    yield store
    await store.close()


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda r, s: session_event("checkout.session.completed", r, s), "succeeded"),
        (lambda r, s: session_event("checkout.session.expired", r, s, status="expired"), "expired"),
        (lambda r, s: session_event("checkout.session.async_payment_succeeded", r, s), "succeeded"),
        (lambda r, s: session_event("checkout.session.async_payment_failed", r, s), "failed"),
        (lambda r, s: intent_event("payment_intent.succeeded", r), "succeeded"),
        (lambda r, s: intent_event("payment_intent.payment_failed", r), "failed"),
        (lambda r, s: intent_event("payment_intent.canceled", r), "canceled"),
    ],
)
async def test_every_event_type_moves_the_status_and_notifies(
    client: Client,
    webhook_store: PaymentStore,
    bus: NotificationBus,
    unique: str,
    make: Callable[[str, str], dict[str, Any]],
    status: str,
) -> None:
    ride = f"ride-{unique}"
    session_id = await seed(webhook_store, ride)
    event = make(ride, session_id)
    assert await deliver(client, event) == (200, {"received": True, "result": "applied"})
    assert await deliver(client, event) == (200, {"received": True, "result": "duplicate"})
    payment = await webhook_store.find({"rideId": ride})
    assert payment is not None and payment.status == status
    assert payment.payment_intent_id == f"pi_{ride}"

    async def notified() -> list[Any]:
        return [m for m in await bus.history(f"user-{ride}") if m.message.get("status") == status]

    [message] = await eventually(notified, timeout_s=10, what="the status notification")
    assert message.message == {
        "type": "payment_status_update",
        "rideId": ride,
        "status": status,
        "stripeSessionId": session_id,
        "amount": 2550,
        "currency": "usd",
    }


async def test_a_completion_with_nothing_to_pay_and_other_types_change_nothing(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    ride = f"ride-{unique}"
    session_id = await seed(webhook_store, ride)
    free = session_event(
        "checkout.session.completed", ride, session_id, payment_status="no_payment_required"
    )
    assert (await deliver(client, free))[1]["result"] == "ignored"
    assert (await deliver(client, stripe_event("charge.refunded", {"id": "ch_1"})))[0] == 200
    payment = await webhook_store.find({"rideId": ride})
    assert payment is not None and payment.status == "pending"


async def test_unknown_ride_is_acknowledged(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    event = session_event("checkout.session.completed", f"ghost-{unique}", f"cs_ghost_{unique}")
    assert await deliver(client, event) == (200, {"received": True, "result": "unknown_payment"})
    # Not recorded as processed: a redelivery once the payment exists is applied.
    assert await webhook_store.sibling("processed_events").find_one({"_id": event["id"]}) is None


async def test_handled_events_are_recorded_with_a_ttl(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    ride = f"ride-{unique}"
    session_id = await seed(webhook_store, ride)
    event = session_event("checkout.session.completed", ride, session_id)
    assert (await deliver(client, event))[1]["result"] == "applied"
    records = webhook_store.sibling("processed_events")
    record = await records.find_one({"_id": event["id"]})
    assert record is not None
    assert (record["type"], record["rideId"], record["result"]) == (
        "checkout.session.completed",
        ride,
        "applied",
    )
    ttl = (await records.index_information())["processedAt_ttl"]
    assert ttl["key"] == [("processedAt", 1)]
    assert ttl["expireAfterSeconds"] == 30 * 24 * 3600


async def test_a_repeat_whose_record_was_lost_is_still_applied_once(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    """A crash after the change and before its record: the payment's history still knows."""
    ride = f"ride-{unique}"
    session_id = await seed(webhook_store, ride)
    failed = session_event("checkout.session.async_payment_failed", ride, session_id)
    assert (await deliver(client, failed))[1]["result"] == "applied"
    await webhook_store.sibling("processed_events").delete_one({"_id": failed["id"]})
    assert (await deliver(client, failed))[1]["result"] == "unchanged"
    document = await webhook_store.find_document(ride)
    assert document is not None
    assert [entry["eventId"] for entry in document["history"]] == [None, failed["id"]]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "t=1,v1=deadbeef",
        "nonsense",
        "stale",
        "future",
        "wrong-secret",
        "tampered",
    ],
)
async def test_bad_signatures_get_400_and_change_nothing(
    client: Client, webhook_store: PaymentStore, unique: str, header: str | None
) -> None:
    ride = f"ride-{unique}"
    session_id = await seed(webhook_store, ride)
    body = json.dumps(session_event("checkout.session.completed", ride, session_id)).encode()
    headers = {
        "stale": signed(body, at=time.time() - 600),
        "future": signed(body, at=time.time() + 600),
        "wrong-secret": signed(body, secret="whsec_wrong"),
        "tampered": signed(body.replace(b"paid", b"PAID")),
    }
    value = headers.get(header or "", header)
    response = await client.post(
        WEBHOOK_PATH, data=body, headers={"Stripe-Signature": value} if value else {}
    )
    assert response.status == 400
    assert "invalid signature" in (await response.json())["error"]
    payment = await webhook_store.find({"rideId": ride})
    assert payment is not None and payment.status == "pending"


async def test_malformed_and_oversized_bodies(client: Client) -> None:
    for body in (b"not json", b"[]", b'{"id": "evt_x"}'):
        response = await client.post(
            WEBHOOK_PATH, data=body, headers={"Stripe-Signature": signed(body)}
        )
        assert response.status == 400
        assert "malformed event" in (await response.json())["error"]
    huge = b'{"pad": "' + b"x" * (600 * 1024) + b'"}'
    response = await client.post(
        WEBHOOK_PATH, data=huge, headers={"Stripe-Signature": signed(huge)}
    )
    assert response.status == 413


async def test_payment_lookup_on_the_internal_app(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    ride = f"ride-{unique}"
    await seed(webhook_store, ride)
    async with TestClient(TestServer(create_internal_app(client.app, []))) as internal:
        response = await internal.get(f"/payment-service/payments/{ride}")
        record = await response.json()
        assert response.status == 200
        assert {k: record[k] for k in ("rideId", "userId", "amount", "currency", "status")} == {
            "rideId": ride,
            "userId": f"user-{ride}",
            "amount": 2550,
            "currency": "usd",
            "status": "pending",
        }
        assert record["stripeSessionId"] == f"cs_{ride}" and record["paymentUrl"]
        assert (await internal.get(f"/payment-service/payments/nope-{unique}")).status == 404


def scenario(ride: str, session_id: str, kind: int) -> tuple[list[dict[str, Any]], str]:
    """Seven distinct events for one ride, and the status they must end in whatever the order.
    A bank debit's unpaid completion comes with every outcome but expiry (a completed session
    never expires)."""
    failed = [intent_event("payment_intent.payment_failed", ride) for _ in range(2)]
    noise = [
        stripe_event("charge.updated", {"id": f"ch_{ride}"}),
        session_event("checkout.session.completed", ride, session_id, payment_status="unpaid")
        if kind != 1
        else stripe_event("payment_intent.created", {"id": f"pi_{ride}"}),
    ]
    if kind == 0:
        ending = [
            intent_event("payment_intent.succeeded", ride),
            session_event("checkout.session.completed", ride, session_id),
            session_event("checkout.session.async_payment_failed", ride, session_id),
        ]
        return failed + noise + ending, "succeeded"
    if kind == 1:
        ending = [
            session_event("checkout.session.expired", ride, session_id, status="expired"),
            session_event("checkout.session.async_payment_failed", ride, session_id),
            intent_event("payment_intent.payment_failed", ride),
        ]
        return failed + noise + ending, "expired"
    if kind == 2:
        ending = [
            intent_event("payment_intent.canceled", ride),
            session_event("checkout.session.async_payment_failed", ride, session_id),
            intent_event("payment_intent.payment_failed", ride),
        ]
        return failed + noise + ending, "canceled"
    ending = [
        session_event("checkout.session.async_payment_failed", ride, session_id),
        intent_event("payment_intent.payment_failed", ride),
        intent_event("payment_intent.payment_failed", ride),
    ]
    return failed + noise + ending, "failed"


async def test_shuffled_duplicated_concurrent_deliveries_end_right(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    chance = random.Random(unique)
    expected: dict[str, str] = {}
    deliveries: list[dict[str, Any]] = []
    for i in range(200):
        ride = f"ride-{unique}-{i:03d}"
        events, final = scenario(ride, await seed(webhook_store, ride), i % 4)
        expected[ride] = final
        deliveries += events
    deliveries += chance.sample(deliveries, 600)  # 30% duplicates
    chance.shuffle(deliveries)
    deliveries = with_conflicts_side_by_side(deliveries)

    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for event in deliveries:
        queue.put_nowait(event)

    async def sender() -> None:
        while not queue.empty():
            status, _ = await deliver(client, queue.get_nowait())
            assert status == 200

    await asyncio.gather(*(sender() for _ in range(50)))
    assert len(deliveries) == 2000

    for ride, final in expected.items():
        document = await webhook_store.find_document(ride)
        assert document is not None
        assert document["status"] == final, ride
        event_ids = [entry["eventId"] for entry in document["history"][1:]]
        assert len(event_ids) == len(set(event_ids)), f"an event applied twice on {ride}"
        assert document["version"] == len(document["history"]) + 1


def with_conflicts_side_by_side(deliveries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each ride's first `succeeded` moved right after one of its `failed`: the 50 senders take
    adjacent deliveries at the same instant, so the two conflicting changes race."""
    first_success: dict[str, int] = {}
    for index, event in enumerate(deliveries):
        if event["type"] == "payment_intent.succeeded":
            first_success.setdefault(ride_of(event), index)
    moved = set(first_success.values())
    ordered: list[dict[str, Any]] = []
    for index, event in enumerate(deliveries):
        if index in moved:
            continue
        ordered.append(event)
        if event["type"] == "payment_intent.payment_failed" and ride_of(event) in first_success:
            ordered.append(deliveries[first_success.pop(ride_of(event))])
    return ordered + [deliveries[index] for index in first_success.values()]


def ride_of(event: dict[str, Any]) -> str:
    ride: str = event["data"]["object"].get("metadata", {}).get("rideId", "")
    return ride


async def test_mongodb_down_gets_5xx_and_the_redelivery_succeeds(
    kafka: RunningPart, redis_server: RunningPart, logs_dir: Path, tmp_path: Path, unique: str
) -> None:
    port = servers.free_port()
    database = servers.secantus(port, tmp_path / "mongo", logs_dir / f"wh-mongo-{unique}")
    database.start()
    url = servers.mongodb_uri(port) + "&serverSelectionTimeoutMS=1500"
    app = create_app(settings_for(kafka.url, url, redis_server.url, "db"))
    store = PaymentStore.connect(url, "db", "payments")
    try:
        async with TestClient(TestServer(app)) as test_client:
            ride = f"ride-{unique}"
            session_id = await seed(store, ride)
            event = session_event("checkout.session.completed", ride, session_id)
            database.stop()
            status, body = await deliver(test_client, event)
            assert status == 503 and "retry" in body["error"]
            database.start()
            status, body = await retry_until_ok(lambda: deliver(test_client, event))
            assert (status, body["result"]) == (200, "applied")
            payment = await store.find({"rideId": ride})
            assert payment is not None and payment.status == "succeeded"
    finally:
        await store.close()
        database.stop()


async def retry_until_ok(
    attempt: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
) -> tuple[int, dict[str, Any]]:
    async def ok() -> tuple[int, dict[str, Any]] | None:
        result = await attempt()
        return result if result[0] == 200 else None

    return await eventually(ok, timeout_s=30, every_s=0.5, what="a successful redelivery")
