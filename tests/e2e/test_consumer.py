"""The consumer as a subprocess against real Kafka, MongoDB, Redis and the Stripe simulator:
duplicates, bad input, kills and outages end with exactly one session and record per ride."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from devstack import servers
from shared.bus import NotificationBus
from shared.store import PaymentStore
from tests.conftest import TEST_STRIPE_KEY, RunningPart
from tests.e2e.conftest import service_environment
from tests.helpers import eventually, http_status, read_topic

Rides = list[tuple[str, str]]  # (rideId, userId)


@pytest.fixture
def start_consumer(
    own_kafka: RunningPart,
    mongo: RunningPart,
    redis_server: RunningPart,
    stripe_simulator: RunningPart,
    logs_dir: Path,
    unique: str,
) -> Iterator[Callable[..., servers.ChildProcess]]:
    started: list[servers.ChildProcess] = []

    def start(mongo_url: str | None = None, **settings: str) -> servers.ChildProcess:
        env = (
            service_environment(own_kafka, mongo, redis_server, stripe_simulator, f"test-{unique}")
            | settings
        )
        if mongo_url:
            env["MONGODB_URI"] = mongo_url
        port = servers.free_port()
        process = servers.python_module(
            f"consumer-{unique}", "services.consumer", port, logs_dir, {**env, "PORT": str(port)}
        )
        process.start(timeout_s=60)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


async def produce(
    kafka: RunningPart,
    values: list[bytes],
    keys: list[bytes | None] | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> list[RecordMetadata]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.url, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(
                "payment-events", value, key=(keys or [None] * len(values))[i], headers=headers
            )
            for i, value in enumerate(values)
        ]
        return await asyncio.gather(*sent)
    finally:
        await producer.stop()


def ride_events(rides: Rides, fare: str = "12.345") -> list[bytes]:
    return [json.dumps({"rideId": r, "userId": u, "fare": fare}).encode() for r, u in rides]


async def sessions_per_ride(stripe: RunningPart, prefix: str) -> Counter[str]:
    headers = {"Authorization": f"Bearer {TEST_STRIPE_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{stripe.url}/_sim/sessions") as response:
            sessions = (await response.json())["data"]
    return Counter(
        s["client_reference_id"]
        for s in sessions
        if str(s["client_reference_id"]).startswith(prefix)
    )


async def all_pending_with_session(store: PaymentStore, rides: Rides) -> bool:
    for ride_id, _ in rides:
        payment = await store.find({"rideId": ride_id})
        if payment is None or payment.stripe_session_id is None or payment.status != "pending":
            return False
    return True


async def assert_one_session_and_record_each(
    store: PaymentStore, stripe: RunningPart, rides: Rides, prefix: str, timeout_s: float = 120
) -> None:
    await eventually(
        lambda: all_pending_with_session(store, rides),
        timeout_s=timeout_s,
        every_s=0.5,
        what="every ride pending with its session",
    )
    per_ride = await sessions_per_ride(stripe, prefix)
    assert len(per_ride) == len(rides)
    assert set(per_ride.values()) == {1}, "a ride got more than one Checkout Session"
    assert await store._payments.count_documents({"rideId": {"$regex": f"^{prefix}"}}) == len(rides)


async def stripe_fault(stripe: RunningPart, *, status: int, count: int) -> None:
    """The simulator answers the next `count` API calls with `status`."""
    async with aiohttp.ClientSession() as http:
        faults = {"status": status, "count": count}
        async with http.post(f"{stripe.url}/_sim/faults", json=faults) as response:
            assert response.status == 200, await response.text()


def make_rides(prefix: str, count: int, users: int) -> Rides:
    return [(f"{prefix}{i:05d}", f"{prefix}user-{i % users}") for i in range(count)]


async def test_each_ride_sent_three_times_yields_one_session_record_and_link(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    stripe_simulator: RunningPart,
    store: PaymentStore,
    bus: NotificationBus,
    unique: str,
) -> None:
    prefix = f"dup-{unique}-"
    rides = make_rides(prefix, 1000, users=100)
    events = ride_events(rides)
    start_consumer()
    # The first two copies back to back (processed concurrently), the third after a while.
    await produce(own_kafka, [e for event in events for e in (event, event)])
    await eventually(
        lambda: all_pending_with_session(store, rides[:100]),
        timeout_s=120,
        what="the first rides",
    )
    await produce(own_kafka, list(reversed(events)))
    await assert_one_session_and_record_each(store, stripe_simulator, rides, prefix)

    async def links_for_every_ride() -> bool:
        seen: set[str] = set()
        for user in {u for _, u in rides}:
            seen |= {
                m.message["rideId"]
                for m in await bus.history(user)
                if m.message["type"] == "payment_url"
            }
        return len(seen) == len(rides)

    await eventually(links_for_every_ride, timeout_s=60, what="a payment_url for every ride")


async def test_invalid_events_go_to_the_dead_letter_topic_unchanged(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    store: PaymentStore,
    unique: str,
) -> None:
    bad = {
        b"not json": "not valid JSON",
        b"[1,2,3]": "JSON object",
        b'{"userId":"u","fare":"1"}': "rideId",
        b'{"rideId":"","userId":"u","fare":"1"}': "rideId",
        b'{"rideId":"r","fare":"1"}': "userId",
        b'{"rideId":"r","userId":"u","fare":"-3"}': "finite positive",
        b'{"rideId":"r","userId":"u","fare":"NaN"}': "finite positive",
        b'{"rideId":"r","userId":"u","fare":"lots"}': "not a decimal",
        b'{"rideId":"r","userId":"u","fare":"0.001"}': "rounds to zero",
        b'{"rideId":"r","userId":"u","fare":"1","x":"' + b"x" * 70_000 + b'"}': "byte limit",
    }
    good_ride = f"good-{unique}"
    values = [*bad, json.dumps({"rideId": good_ride, "userId": "u", "fare": "9.99"}).encode()]
    start_consumer()
    await produce(
        own_kafka,
        values,
        keys=[b"key-%d" % i for i in range(len(values))],
        headers=[("trace", b"abc")],
    )

    letters = await read_topic(
        own_kafka.url, "payment-events-dlq", lambda records: len(records) >= len(bad)
    )
    assert len(letters) == len(bad)
    by_value = {record.value: record for record in letters}
    for i, (value, reason) in enumerate(bad.items()):
        record = by_value[value]
        headers = {name: data.decode() for name, data in record.headers}
        assert record.key == b"key-%d" % i
        assert headers["trace"] == "abc"
        assert reason in headers["dlq.reason"]
        assert headers["dlq.source.topic"] == "payment-events"
        assert int(headers["dlq.source.partition"]) >= 0 and int(headers["dlq.source.offset"]) >= 0

    payment = await eventually(lambda: store.find({"rideId": good_ride}), what="the good ride")
    assert payment.amount == 999


async def test_a_fare_below_stripes_minimum_charge_is_dead_lettered_before_any_stripe_call(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    store: PaymentStore,
    unique: str,
) -> None:
    """Stripe refuses a Checkout Session under its minimum charge (0.50 USD): the consumer
    says so itself, in words, instead of sending the ride to Stripe and dead-lettering
    Stripe's refusal (with a record left behind for the safety net to retry for ever)."""
    below = {
        "0.01": "fare 0.01 USD is below Stripe's minimum charge of 0.50 USD",
        "0.49": "fare 0.49 USD is below Stripe's minimum charge of 0.50 USD",
    }
    rides = {f"small-{fare}-{unique}": fare for fare in below}
    start_consumer()
    await produce(
        own_kafka,
        [
            json.dumps({"rideId": ride, "userId": "u", "fare": fare}).encode()
            for ride, fare in rides.items()
        ],
    )

    letters = await read_topic(
        own_kafka.url, "payment-events-dlq", lambda records: len(records) >= len(rides)
    )
    reasons = {
        json.loads(letter.value)["rideId"]: dict(letter.headers)["dlq.reason"].decode()
        for letter in letters
    }
    assert reasons == {ride: below[fare] for ride, fare in rides.items()}
    # Refused before anything else: no record was reserved, so no session was asked for.
    for ride in rides:
        assert await store.find({"rideId": ride}) is None


async def test_killed_at_random_moments_then_restarted(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    stripe_simulator: RunningPart,
    store: PaymentStore,
    unique: str,
) -> None:
    prefix = f"kill-{unique}-"
    rides = make_rides(prefix, 500, users=50)
    await produce(own_kafka, ride_events(rides))
    chance = random.Random(unique)
    for _ in range(4):
        consumer = start_consumer()
        await asyncio.sleep(chance.uniform(1.0, 6.0))  # the kill is meant to land anywhere
        consumer.signal(signal.SIGKILL)
        consumer.kill()
    start_consumer()
    await assert_one_session_and_record_each(store, stripe_simulator, rides, prefix, 180)


async def test_mongodb_down_for_twenty_seconds_loses_and_doubles_nothing(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    stripe_simulator: RunningPart,
    logs_dir: Path,
    tmp_path: Path,
    unique: str,
) -> None:
    port = servers.free_port()
    database = servers.secantus(port, tmp_path / "mongo", logs_dir / f"mongo-{unique}")
    database.start()
    prefix = f"mongo-{unique}-"
    rides = make_rides(prefix, 300, users=30)
    consumer = start_consumer(mongo_url=servers.mongodb_uri(port))
    health = f"http://127.0.0.1:{consumer.port}/readyz"
    await eventually(lambda: _ready(health), timeout_s=60, what="consumer ready")
    await produce(own_kafka, ride_events(rides[:150]))
    database.stop()
    await produce(own_kafka, ride_events(rides[150:]))
    await eventually(lambda: _not_ready(health), timeout_s=30, what="readiness to report MongoDB")
    await asyncio.sleep(20)  # the outage itself is what is under test
    database.start()
    store = PaymentStore.connect(servers.mongodb_uri(port), f"test-{unique}", "payments")
    try:
        await assert_one_session_and_record_each(store, stripe_simulator, rides, prefix, 180)
    finally:
        await store.close()
        database.stop()


async def test_stripe_failing_for_a_while_delays_but_loses_nothing(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    stripe_simulator: RunningPart,
    store: PaymentStore,
    unique: str,
) -> None:
    prefix = f"stripe-{unique}-"
    rides = make_rides(prefix, 200, users=20)
    await stripe_fault(stripe_simulator, status=500, count=150)
    start_consumer()
    await produce(own_kafka, ride_events(rides[:100]))
    await stripe_fault(stripe_simulator, status=429, count=150)
    await produce(own_kafka, ride_events(rides[100:]))
    await assert_one_session_and_record_each(store, stripe_simulator, rides, prefix, 180)


async def _ready(url: str) -> bool:
    return await http_status(url) == 200


async def _not_ready(url: str) -> bool:
    return await http_status(url) == 503


async def test_a_dead_letter_replayed_after_the_fix_is_processed(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    stripe_simulator: RunningPart,
    store: PaymentStore,
    unique: str,
) -> None:
    ride = f"replay-{unique}"
    await stripe_fault(stripe_simulator, status=400, count=1)  # refused for good, once
    start_consumer()
    await produce(own_kafka, ride_events([(ride, "u")]), keys=[b"u"])

    async def dead_letters() -> list[dict[str, Any]]:
        listed = await dlq_tool(own_kafka, "list")
        return [letter for letter in listed if ride in letter["value"]]

    [letter] = await eventually(dead_letters, timeout_s=60, what="the dead letter")
    assert "stripe create_checkout_session" in letter["reason"] and "HTTP 400" in letter["reason"]
    assert letter["key"] == "u" and letter["source"].startswith("payment-events[")

    replayed = await dlq_tool(own_kafka, "replay", "--ref", letter["ref"])
    assert replayed == [{"replayed": letter["ref"], "to": "payment-events"}]
    payment = await eventually(
        lambda: _with_session(store, ride), timeout_s=60, what="the replayed ride's payment"
    )
    assert payment.status == "pending"


async def _with_session(store: PaymentStore, ride: str) -> Any:
    payment = await store.find({"rideId": ride})
    return payment if payment and payment.stripe_session_id else None


async def dlq_tool(kafka: RunningPart, *args: str) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.consumer.dlq",
        *args,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]
