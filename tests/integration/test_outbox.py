"""The outbox relay: every stored status change reaches the rider and Kafka, whatever died or
was down when it was stored (real MongoDB, Redis and Kafka)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from shared.bus import NotificationBus, connect_redis
from shared.model import PaymentStatus
from shared.outbox import OutboxRelay
from shared.status_events import STATUS_EVENTS_TOPIC
from shared.store import Payment, PaymentStore, StatusChange
from tests.conftest import RunningPart
from tests.helpers import eventually, read_topic
from tests.integration.test_notifier_resilience import own_redis as own_redis


async def stored_change(store: PaymentStore, ride: str, *targets: PaymentStatus) -> Payment:
    """A payment moved through `targets` by a process that died before announcing anything."""
    reserved = await store.reserve(ride, f"user-{ride}", 1250, "usd")
    payment = await store.attach_session(reserved, f"cs_{ride}", f"https://pay/{ride}")
    for number, target in enumerate(targets):
        changed = await store.apply(
            {"rideId": ride}, StatusChange(target, f"evt_{ride}_{number}", "test")
        )
        assert changed is not None
        payment = changed
    return payment


async def told(bus: NotificationBus, user: str) -> list[dict[str, Any]]:
    return [
        stored.message
        for stored in await bus.history(user)
        if stored.message["type"] == "payment_status_update"
    ]


async def status_events(kafka: RunningPart, ride: str, count: int) -> list[dict[str, Any]]:
    records = await read_topic(
        kafka.url,
        STATUS_EVENTS_TOPIC,
        lambda rs: sum(r.key == ride.encode() for r in rs) >= count,
    )
    return [json.loads(r.value) for r in records if r.key == ride.encode()]


def outbox_backlog() -> float:
    value = REGISTRY.get_sample_value("payments_outbox_backlog")
    assert value is not None, "payments_outbox_backlog is not exported"
    return value


@pytest.fixture
async def relay(
    store: PaymentStore, bus: NotificationBus, kafka: RunningPart
) -> AsyncIterator[OutboxRelay]:
    outbox = OutboxRelay(store, bus, kafka.url, grace_s=0)
    yield outbox
    await outbox.close()


async def test_a_change_whose_process_died_before_announcing_reaches_rider_and_kafka(
    store: PaymentStore, bus: NotificationBus, relay: OutboxRelay, kafka: RunningPart, unique: str
) -> None:
    ride = f"orphaned-{unique}"
    await stored_change(store, ride, PaymentStatus.FAILED, PaymentStatus.SUCCEEDED)

    assert await relay.scan_once() == 2

    messages = await told(bus, f"user-{ride}")
    assert [(m["status"], m["amount"], m["currency"]) for m in messages] == [
        ("failed", 1250, "usd"),
        ("succeeded", 1250, "usd"),
    ]
    events = await status_events(kafka, ride, count=2)
    assert [(e["status"], e["version"]) for e in events] == [("failed", 3), ("succeeded", 4)]
    document = await store.find_document(ride)
    assert document is not None and document["outbox"] == []

    await relay.scan_once()
    assert len(await told(bus, f"user-{ride}")) == 2, "announced once, however often relayed"


async def test_changes_stored_while_redis_is_down_are_announced_once_when_it_returns(
    store: PaymentStore, own_redis: RunningPart, kafka: RunningPart, unique: str
) -> None:
    bus = NotificationBus(connect_redis(own_redis.url))
    relay = OutboxRelay(store, bus, kafka.url, grace_s=0)
    rides = [f"outage-{unique}-{i}" for i in range(3)]
    try:
        await asyncio.to_thread(own_redis.process.stop)
        for ride in rides:
            relay.publish_soon(await stored_change(store, ride, PaymentStatus.SUCCEEDED))
        await relay.scan_once()
        for ride in rides:
            document = await store.find_document(ride)
            assert document is not None and len(document["outbox"]) == 1, "kept for later"
        assert outbox_backlog() >= len(rides), "what the PaymentsOutboxNotDraining alert reads"

        await asyncio.to_thread(own_redis.process.start)

        async def all_told() -> bool:
            await relay.scan_once()
            return all([await told(bus, f"user-{ride}") for ride in rides])

        await eventually(all_told, timeout_s=30, what="every rider told after Redis returned")
        left = await relay.scan_once()
        assert outbox_backlog() == left < len(rides)
        for ride in rides:
            assert [m["status"] for m in await told(bus, f"user-{ride}")] == ["succeeded"]
            document = await store.find_document(ride)
            assert document is not None and document["outbox"] == []
    finally:
        await relay.close()
        await bus.close()


@pytest.fixture
async def silent_broker() -> AsyncIterator[str]:
    """An address that accepts connections and never answers, as a hung broker does."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_hung_broker_holds_up_no_rider_and_no_scan_for_long(
    store: PaymentStore, bus: NotificationBus, silent_broker: str, unique: str
) -> None:
    relay = OutboxRelay(store, bus, silent_broker, grace_s=0, attempt_timeout_s=1)
    rides = [f"hung-{unique}-{i}" for i in range(5)]
    try:
        for ride in rides:
            await stored_change(store, ride, PaymentStatus.SUCCEEDED)
        async with asyncio.timeout(5):  # a Kafka request alone waits 40 s before failing
            assert await relay.scan_once() == len(rides)
        for ride in rides:
            assert [m["status"] for m in await told(bus, f"user-{ride}")] == ["succeeded"]
            document = await store.find_document(ride)
            assert document is not None and len(document["outbox"]) == 1, "kept for Kafka"
    finally:
        async with asyncio.timeout(10):
            await relay.close()


async def test_status_events_carry_the_version_of_their_change(
    store: PaymentStore, relay: OutboxRelay, kafka: RunningPart, unique: str
) -> None:
    """A consumer keeping the highest version per ride ends on the final status, whatever order
    and number of copies it reads (two relays send every event here)."""
    ride = f"versions-{unique}"
    payment = await stored_change(store, ride, PaymentStatus.FAILED, PaymentStatus.SUCCEEDED)
    unreachable = NotificationBus(connect_redis("redis://127.0.0.1:1/0"))
    second = OutboxRelay(store, unreachable, kafka.url, grace_s=0)
    try:
        relay.publish_soon(payment)
        await second.scan_once()  # its rider announcements fail; Kafka still gets the events
    finally:
        await second.close()
        await unreachable.close()
    await relay.scan_once()
    events = await status_events(kafka, ride, count=4)
    latest = max(reversed(events), key=lambda event: event["version"])
    assert latest["status"] == "succeeded" and latest["version"] == payment.version
    assert {(event["status"], event["version"]) for event in events} == {
        ("failed", 3),
        ("succeeded", 4),
    }, "each event carries the version its own change produced"
    assert len({event["eventId"] for event in events}) == 2, "a re-sent event keeps its id"
