"""The walking skeleton: a ride event crosses all three processes and reaches the rider."""

from __future__ import annotations

import json

import aiohttp
from aiokafka import AIOKafkaProducer

from shared.bus import is_after
from tests.conftest import RunningPart
from tests.e2e.conftest import System
from tests.helpers import next_message


async def publish_ride(kafka: RunningPart, ride_id: str, user_id: str, fare: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.url, acks="all")
    await producer.start()
    try:
        value = json.dumps({"rideId": ride_id, "userId": user_id, "fare": fare}).encode()
        await producer.send_and_wait("payment-events", value, key=user_id.encode())
    finally:
        await producer.stop()


async def test_ride_is_paid_and_the_rider_told_live(
    system: System, kafka: RunningPart, unique: str
) -> None:
    ride_id, user_id = f"ride-{unique}", f"user-{unique}"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(system.websocket_url, params={"userId": user_id}) as socket:
            registered = await next_message(socket)
            assert registered["type"] == "registration_success"
            assert registered["userId"] == user_id

            await publish_ride(kafka, ride_id, user_id, "25.505")
            link = await next_message(socket)
            assert link["type"] == "payment_url"
            assert (link["rideId"], link["status"]) == (ride_id, "pending")
            assert link["paymentUrl"].startswith(system.stripe_url + "/checkout/cs_")
            assert isinstance(link["id"], str)

            async with http.get(
                system.internal_url(system.webhook, f"/payment-service/payments/{ride_id}")
            ) as r:
                record = await r.json()
            assert record["status"] == "pending"
            assert record["amount"] == 2551 and record["currency"] == "usd"
            session_id = record["stripeSessionId"]

            # The simulator completes the Checkout and sends Stripe's signed webhooks.
            async with http.post(f"{system.stripe_url}/_sim/sessions/{session_id}/pay") as r:
                assert r.status == 200, await r.text()

            update = await next_message(socket)
            assert update["type"] == "payment_status_update"
            assert (update["rideId"], update["status"]) == (ride_id, "succeeded")
            assert update["stripeSessionId"] == session_id
            assert is_after(update["id"], link["id"])

        async with http.get(
            system.internal_url(system.webhook, f"/payment-service/payments/{ride_id}")
        ) as r:
            record = await r.json()
        assert record["status"] == "succeeded"
        assert record["paymentIntentId"].startswith("pi_")
