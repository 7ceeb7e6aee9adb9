"""Refund requests across the three processes, the Stripe simulator and the real servers: each
refunds once, never more than the charge, and what cannot be refunded goes to the DLQ."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from shared.bus import NotificationBus
from shared.store import PaymentStore
from tests.conftest import RunningPart
from tests.e2e.conftest import System
from tests.e2e.test_consumer import dlq_tool
from tests.e2e.test_payment_flow import publish_ride
from tests.helpers import eventually, read_topic

CHARGE = 2550  # 25.50 USD


@pytest.fixture
async def e2e_store(mongo: RunningPart) -> AsyncIterator[PaymentStore]:
    """The records the `system` fixture's processes keep."""
    store = PaymentStore.connect(mongo.url, "e2e", "payments")
    yield store
    await store.close()


async def record(store: PaymentStore, ride_id: str) -> dict[str, Any] | None:
    return await store.find_document(ride_id)


async def paid_ride(
    system: System, kafka: RunningPart, store: PaymentStore, ride_id: str, fare: str = "25.50"
) -> None:
    await publish_ride(kafka, ride_id, f"user-{ride_id}", fare)
    pending = await eventually(
        lambda: _with(store, ride_id, lambda d: d.get("stripeSessionId") is not None),
        timeout_s=60,
        what="the ride's Checkout Session",
    )
    async with aiohttp.ClientSession() as http:
        url = f"{system.stripe_url}/_sim/sessions/{pending['stripeSessionId']}/pay"
        async with http.post(url) as response:
            assert response.status == 200, await response.text()
    await eventually(
        lambda: _with(store, ride_id, lambda d: bool(d.get("paymentIntentId"))),
        timeout_s=60,
        what="the ride paid",
    )


async def _with(store: PaymentStore, ride_id: str, check: Any) -> dict[str, Any] | None:
    document = await record(store, ride_id)
    return document if document is not None and check(document) else None


async def request_refunds(kafka: RunningPart, requests: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.url, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(
                "refund-requests",
                json.dumps(request).encode(),
                key=str(request.get("rideId", "")).encode(),
            )
            for request in requests
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def stripe_refunds(system: System, payment_intent: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        url = f"{system.stripe_url}/_sim/refunds"
        async with http.get(url, params={"payment_intent": payment_intent}) as response:
            refunds: list[dict[str, Any]] = (await response.json())["data"]
            return refunds


async def dead_letter_reasons(
    kafka: RunningPart, refund_ids: set[str], count: int | None = None
) -> dict[str, str]:
    """The `dlq.reason` of the named requests in refund-requests-dlq, once `count` of them
    (by default all) are there."""
    wanted = len(refund_ids) if count is None else count

    def reasons(records: list[Any]) -> dict[str, str]:
        found = {}
        for r in records:
            refund_id = _refund_id(r.value)
            if refund_id in refund_ids:
                found[refund_id] = dict(r.headers)["dlq.reason"].decode()
        return found

    records = await read_topic(
        kafka.url, "refund-requests-dlq", lambda rs: len(reasons(rs)) >= wanted
    )
    return reasons(records)


def _refund_id(value: bytes) -> str | None:
    try:
        refund_id = json.loads(value).get("refundId")
    except (ValueError, AttributeError):
        return None
    return refund_id if isinstance(refund_id, str) else None


async def settled(store: PaymentStore, ride_id: str, count: int) -> dict[str, Any] | None:
    """The record once `count` refunds are no longer pending."""

    def done(document: dict[str, Any]) -> bool:
        refunds = document.get("refunds", [])
        return len(refunds) == count and all(r["status"] != "pending" for r in refunds)

    return await _with(store, ride_id, done)


async def test_a_full_refund_reaches_stripe_the_record_the_rider_and_kafka(
    system: System, kafka: RunningPart, e2e_store: PaymentStore, bus: NotificationBus, unique: str
) -> None:
    ride = f"full-{unique}"
    await paid_ride(system, kafka, e2e_store, ride)
    await request_refunds(kafka, [{"refundId": f"rf-{unique}", "rideId": ride}])
    document = await eventually(
        lambda: settled(e2e_store, ride, 1), timeout_s=60, what="the refund settled"
    )
    assert (document["status"], document["amountRefunded"]) == ("refunded", CHARGE)
    [refund] = await stripe_refunds(system, document["paymentIntentId"])
    assert (refund["amount"], refund["metadata"]) == (
        CHARGE,
        {"rideId": ride, "refundId": f"rf-{unique}"},
    )

    async def told() -> list[dict[str, Any]]:
        return [
            m.message
            for m in await bus.history(f"user-{ride}")
            if m.message.get("status") == "refunded"
        ]

    [update] = await eventually(told, timeout_s=30, what="the rider told")
    assert update["amountRefunded"] == CHARGE

    def refunded(records: list[Any]) -> list[dict[str, Any]]:
        values = [json.loads(r.value) for r in records if r.key == ride.encode()]
        return [value for value in values if value["status"] == "refunded"]

    events = await read_topic(kafka.url, "payment-status-events", lambda rs: bool(refunded(rs)))
    assert {event["amountRefunded"] for event in refunded(events)} == {CHARGE}


async def test_two_partial_refunds_then_one_over_what_remains(
    system: System, kafka: RunningPart, e2e_store: PaymentStore, unique: str
) -> None:
    ride = f"partial-{unique}"
    await paid_ride(system, kafka, e2e_store, ride)
    await request_refunds(
        kafka,
        [
            {"refundId": f"a-{unique}", "rideId": ride, "amount": "5.00"},
            {"refundId": f"b-{unique}", "rideId": ride, "amount": 10, "reason": "duplicate"},
        ],
    )
    document = await eventually(
        lambda: settled(e2e_store, ride, 2), timeout_s=60, what="both refunds settled"
    )
    assert (document["status"], document["amountRefunded"]) == ("partially_refunded", 1500)
    await request_refunds(kafka, [{"refundId": f"c-{unique}", "rideId": ride, "amount": "10.51"}])
    reasons = await dead_letter_reasons(kafka, {f"c-{unique}"})
    assert "over what remains" in reasons[f"c-{unique}"]
    refunds = await stripe_refunds(system, document["paymentIntentId"])
    assert sorted(r["amount"] for r in refunds) == [500, 1000], "Stripe saw the refused refund"


async def test_refunds_of_unpaid_unknown_and_malformed_go_to_the_dlq(
    system: System, kafka: RunningPart, e2e_store: PaymentStore, unique: str
) -> None:
    ride = f"unpaid-{unique}"
    await publish_ride(kafka, ride, f"user-{ride}", "9.00")
    await eventually(
        lambda: _with(e2e_store, ride, lambda d: d.get("stripeSessionId") is not None),
        timeout_s=60,
        what="the unpaid ride's session",
    )
    await request_refunds(
        kafka,
        [
            {"refundId": f"unpaid-{unique}", "rideId": ride},
            {"refundId": f"unknown-{unique}", "rideId": f"ghost-{unique}"},
            {"refundId": f"bad-{unique}", "rideId": ride, "amount": "-3"},
            {"refundId": f"reason-{unique}", "rideId": ride, "reason": "because"},
        ],
    )
    reasons = await dead_letter_reasons(
        kafka, {f"unpaid-{unique}", f"unknown-{unique}", f"bad-{unique}", f"reason-{unique}"}
    )
    assert "not paid (status pending)" in reasons[f"unpaid-{unique}"]
    assert "unknown ride" in reasons[f"unknown-{unique}"]
    assert "finite positive" in reasons[f"bad-{unique}"]
    assert "reason must be one of" in reasons[f"reason-{unique}"]
    document = await record(e2e_store, ride)
    assert document is not None and "refunds" not in document


async def test_a_request_delivered_three_times_refunds_once(
    system: System, kafka: RunningPart, e2e_store: PaymentStore, unique: str
) -> None:
    ride = f"thrice-{unique}"
    await paid_ride(system, kafka, e2e_store, ride)
    request = {"refundId": f"rf-{unique}", "rideId": ride, "amount": "3.00"}
    await request_refunds(kafka, [request] * 3)
    document = await eventually(
        lambda: settled(e2e_store, ride, 1), timeout_s=60, what="the refund settled"
    )
    assert document["amountRefunded"] == 300
    assert [r["amount"] for r in await stripe_refunds(system, document["paymentIntentId"])] == [300]


async def test_concurrent_partial_refunds_never_exceed_the_charge(
    system: System, kafka: RunningPart, e2e_store: PaymentStore, unique: str
) -> None:
    ride = f"race-{unique}"
    await paid_ride(system, kafka, e2e_store, ride)
    requests = [
        {"refundId": f"r{i:02d}-{unique}", "rideId": ride, "amount": "2.00"} for i in range(20)
    ]
    await request_refunds(kafka, requests)
    fit = CHARGE // 200  # 12 of 2.00 fit into 25.50
    await eventually(
        lambda: settled(e2e_store, ride, fit), timeout_s=120, what="the refunds that fit"
    )
    ids = {r["refundId"] for r in requests}
    refused = await dead_letter_reasons(kafka, ids, count=20 - fit)
    document = await record(e2e_store, ride)
    assert document is not None
    refunded = await stripe_refunds(system, document["paymentIntentId"])
    assert len(refunded) == fit and sum(r["amount"] for r in refunded) <= CHARGE
    assert document["amountRefunded"] == fit * 200
    assert len(refused) == 20 - fit
    assert all("over what remains" in reason or "pending" in reason for reason in refused.values())
    assert ids == set(refused) | {r["metadata"]["refundId"] for r in refunded}


async def test_a_dead_lettered_refund_replayed_once_the_ride_is_paid(
    system: System, kafka: RunningPart, e2e_store: PaymentStore, unique: str
) -> None:
    ride, refund_id = f"later-{unique}", f"rf-later-{unique}"
    await publish_ride(kafka, ride, f"user-{ride}", "25.50")
    await eventually(
        lambda: _with(e2e_store, ride, lambda d: d.get("stripeSessionId") is not None),
        timeout_s=60,
        what="the ride's session",
    )
    await request_refunds(kafka, [{"refundId": refund_id, "rideId": ride}])
    await dead_letter_reasons(kafka, {refund_id})
    await paid_ride(system, kafka, e2e_store, ride)  # the cause, fixed

    listed = await dlq_tool(kafka, "--topic", "refund-requests-dlq", "list")
    [letter] = [letter for letter in listed if refund_id in letter["value"]]
    assert letter["source"].startswith("refund-requests[")
    replayed = await dlq_tool(
        kafka, "--topic", "refund-requests-dlq", "replay", "--ref", letter["ref"]
    )
    assert replayed == [{"replayed": letter["ref"], "to": "refund-requests"}]
    document = await eventually(
        lambda: settled(e2e_store, ride, 1), timeout_s=60, what="the replayed refund settled"
    )
    assert (document["status"], document["amountRefunded"]) == ("refunded", CHARGE)


async def dispute_at_stripe(system: System, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{system.stripe_url}/_sim/disputes{path}", json=body) as response:
            assert response.status == 200, await response.text()
            answer: dict[str, Any] = await response.json()
            return answer


@pytest.mark.parametrize(
    ("outcome", "final"),
    [("won", "succeeded"), ("lost", "dispute_lost"), ("warning_closed", "succeeded")],
)
async def test_a_dispute_opened_and_closed_at_stripe(
    system: System,
    kafka: RunningPart,
    e2e_store: PaymentStore,
    unique: str,
    outcome: str,
    final: str,
) -> None:
    """A chargeback won or lost, and an inquiry (`warning_*`) closed: it gives the ride back."""
    ride = f"dispute-{outcome}-{unique}"
    await paid_ride(system, kafka, e2e_store, ride)
    document = await record(e2e_store, ride)
    assert document is not None
    inquiry = outcome.startswith("warning_")
    opening = {"session": document["stripeSessionId"], "inquiry": inquiry}
    opened = await dispute_at_stripe(system, "", opening)
    await eventually(
        lambda: _with(e2e_store, ride, lambda d: d["status"] == "disputed"),
        timeout_s=30,
        what="the ride disputed",
    )
    await dispute_at_stripe(system, f"/{opened['dispute']['id']}/close", {"outcome": outcome})
    closed = await eventually(
        lambda: _with(e2e_store, ride, lambda d: d["status"] == final),
        timeout_s=30,
        what=f"the dispute {outcome}",
    )
    assert [h["status"] for h in closed["history"]][-2:] == ["disputed", final]


async def test_a_refund_that_fails_after_succeeding_puts_the_ride_back(
    system: System, kafka: RunningPart, e2e_store: PaymentStore, unique: str
) -> None:
    """The card refund succeeded at once, then failed (the card was closed): the money is
    back, so is the ride (`refunded` -> `succeeded`), and the platform hears it."""
    ride = f"bounced-{unique}"
    await paid_ride(system, kafka, e2e_store, ride)
    await request_refunds(kafka, [{"refundId": f"rf-{unique}", "rideId": ride}])
    refunded = await eventually(
        lambda: _with(e2e_store, ride, lambda d: d["status"] == "refunded"),
        timeout_s=60,
        what="the ride refunded",
    )
    [refund] = refunded["refunds"]
    async with aiohttp.ClientSession() as http:
        url = f"{system.stripe_url}/_sim/refunds/{refund['stripeRefundId']}/fail"
        async with http.post(url) as response:
            assert response.status == 200, await response.text()
    back = await eventually(
        lambda: _with(e2e_store, ride, lambda d: d["status"] == "succeeded"),
        timeout_s=60,
        what="the ride paid again",
    )
    assert back["amountRefunded"] == 0 and back["refunds"][0]["status"] == "failed"

    def told(records: list[Any]) -> bool:
        return any(json.loads(r.value)["version"] == back["version"] for r in mine(records))

    def mine(records: list[Any]) -> list[Any]:
        return [r for r in records if r.key == ride.encode()]

    events = [
        json.loads(r.value)
        for r in mine(await read_topic(kafka.url, "payment-status-events", told))
    ]
    latest = max(events, key=lambda event: event["version"])
    assert (latest["status"], latest["amountRefunded"]) == ("succeeded", 0)


async def test_the_payments_api_shows_refunds_and_disputes(
    system: System, kafka: RunningPart, e2e_store: PaymentStore, unique: str
) -> None:
    ride = f"api-{unique}"
    await paid_ride(system, kafka, e2e_store, ride)
    await request_refunds(kafka, [{"refundId": f"rf-{unique}", "rideId": ride, "amount": "1"}])
    await eventually(lambda: settled(e2e_store, ride, 1), timeout_s=60, what="the refund")
    url = system.internal_url(system.webhook, f"/payment-service/payments/{ride}")
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200, await response.text()
        shown = await response.json()
    assert (shown["status"], shown["amountRefunded"]) == ("partially_refunded", 100)
    [refund] = shown["refunds"]
    assert refund["refundId"] == f"rf-{unique}" and refund["stripeRefundId"].startswith("re_")
    assert isinstance(refund["createdAt"], str)
