"""At least once, end to end (issue 12): the consumer as a subprocess against real servers.

Kafka offsets move only past fully handled events, whatever order the events of a partition
finish in; a SIGTERM during a Stripe outage exits within its bound and loses nothing.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from devstack import servers
from shared.bus import NotificationBus
from shared.store import PaymentStore
from tests.conftest import RunningPart
from tests.e2e.test_consumer import (
    Rides,
    all_pending_with_session,
    assert_one_session_and_record_each,
    make_rides,
    produce,
    ride_events,
    stripe_fault,
)
from tests.e2e.test_consumer import start_consumer as start_consumer  # a fixture
from tests.helpers import eventually, http_status

GROUP = "payments"
SLOW_STRIPE_MS = 40_000


async def slow_ride(stripe: RunningPart, ride_id: str, delay_ms: int) -> None:
    """The simulator answers calls about `ride_id` `delay_ms` later (0: at once again)."""
    async with aiohttp.ClientSession() as http:
        body = {"slow_rides": {ride_id: delay_ms}}
        async with http.post(f"{stripe.url}/_sim/faults", json=body) as response:
            assert response.status == 200, await response.text()


async def committed_offset(kafka: RunningPart, partition: int) -> int:
    """The group's committed offset on a partition of payment-events (-1: none yet)."""
    # Asked through a consumer that never joins the group (the admin client's OffsetFetch
    # does not decode tansu's answer).
    reader = AIOKafkaConsumer(bootstrap_servers=kafka.url, group_id=GROUP)
    await reader.start()
    try:
        committed = await reader.committed(TopicPartition("payment-events", partition))
    finally:
        await reader.stop()
    return -1 if committed is None else int(committed)


async def holds_for(probe: Callable[[], Awaitable[bool]], *, seconds: float, what: str) -> None:
    """Fail as soon as `probe` is false during the whole window."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert await probe(), what
        await asyncio.sleep(0.5)


async def has_link(bus: NotificationBus, user_id: str, ride_id: str) -> bool:
    return any(
        m.message["type"] == "payment_url" and m.message["rideId"] == ride_id
        for m in await bus.history(user_id)
    )


async def finishes(
    store: PaymentStore, bus: NotificationBus, rides: Rides, timeout_s: float
) -> None:
    await eventually(
        lambda: all_pending_with_session(store, rides),
        timeout_s=timeout_s,
        every_s=0.5,
        what="the rides' sessions",
    )
    for ride_id, user_id in rides:
        await eventually(
            functools.partial(has_link, bus, user_id, ride_id),
            timeout_s=30,
            what=f"{ride_id}'s link",
        )


@pytest.mark.parametrize(
    "history", ["new group", "group with committed offsets", "partitions assigned while running"]
)
async def test_a_slow_ride_is_never_committed_past_and_survives_sigkill(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    stripe_simulator: RunningPart,
    store: PaymentStore,
    bus: NotificationBus,
    unique: str,
    history: str,
) -> None:
    prefix = f"slow-{unique}-"
    user = f"{prefix}user"
    rides = [(f"{prefix}{i:03d}", user) for i in range(34)]
    earlier, before, slow, after = rides[:3], rides[3:23], rides[23], rides[24:]
    consumer = start_consumer()
    if history == "group with committed offsets":
        [*_, last] = await produce(own_kafka, ride_events(earlier), keys=[user.encode()] * 3)
        await finishes(store, bus, earlier, timeout_s=90)
        await eventually(
            lambda: _committed_at_least(own_kafka, last.partition, last.offset + 1),
            timeout_s=30,
            what="the earlier rides' offsets committed",
        )
    if history == "partitions assigned while running":
        # tansu cannot add partitions to a topic (no CreatePartitions), so the running worker
        # gets partitions with nothing committed the other way: a member joins, then leaves.
        await wait_ready(consumer)
        other = start_consumer()
        await wait_ready(other)
        assert other.stop() == 0
    await slow_ride(stripe_simulator, slow[0], SLOW_STRIPE_MS)
    sent = await produce(own_kafka, ride_events([*before, slow, *after]), keys=[user.encode()] * 31)
    partition, slow_offset = int(sent[20].partition), int(sent[20].offset)
    await finishes(store, bus, [*before, *after], timeout_s=120)

    async def not_past_the_slow_ride() -> bool:
        return await committed_offset(own_kafka, partition) <= slow_offset

    # Faust commits every 2.8 s: several commits happen in this window.
    await holds_for(
        not_past_the_slow_ride, seconds=10, what="offset committed past the unfinished ride"
    )
    consumer.signal(signal.SIGKILL)
    consumer.kill()
    await slow_ride(stripe_simulator, slow[0], 0)
    start_consumer()
    await finishes(store, bus, [slow], timeout_s=150)


async def wait_ready(consumer: servers.ChildProcess) -> None:
    url = f"http://127.0.0.1:{consumer.port}/readyz"
    await eventually(lambda: _answers_ok(url), timeout_s=60, what=f"{consumer.name} in the group")


async def _answers_ok(url: str) -> bool:
    return await http_status(url) == 200


async def _committed_at_least(kafka: RunningPart, partition: int, offset: int) -> bool:
    return await committed_offset(kafka, partition) >= offset


GRACE_S = 5
LEAVING_S = 15  # after the grace period: commit, leave the group, close the clients


@pytest.mark.parametrize("outage", ["failing", "hanging"])
async def test_sigterm_during_a_stripe_outage_exits_in_time_and_loses_no_ride(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    stripe_simulator: RunningPart,
    store: PaymentStore,
    bus: NotificationBus,
    unique: str,
    outage: str,
) -> None:
    prefix = f"outage-{unique}-"
    rides = make_rides(prefix, 40, users=8)
    consumer = start_consumer(SHUTDOWN_GRACE_S=str(GRACE_S))
    try:
        # No end in sight: every call fails at once (retried), or hangs past the SDK's timeout.
        if outage == "failing":
            await stripe_fault(stripe_simulator, status=500, count=1_000_000)
        else:
            await stripe_latency(stripe_simulator, 60_000)
        await produce(own_kafka, ride_events(rides), keys=[u.encode() for _, u in rides])
        await eventually(
            lambda: _reserved(store, prefix, at_least=20),
            timeout_s=90,
            what="rides reserved and waiting for Stripe",
        )
        started = time.monotonic()
        exit_code = consumer.stop(timeout_s=GRACE_S + LEAVING_S)
        took = time.monotonic() - started
        assert exit_code == 0, f"exit code {exit_code} after {took:.1f} s: {consumer.tail()}"
    finally:
        await _heal(stripe_simulator)
    start_consumer()
    await assert_one_session_and_record_each(store, stripe_simulator, rides, prefix, 180)
    await finishes(store, bus, rides, timeout_s=60)


async def stripe_latency(stripe: RunningPart, latency_ms: int) -> None:
    async with aiohttp.ClientSession() as http:
        body = {"latency_ms": latency_ms}
        async with http.post(f"{stripe.url}/_sim/faults", json=body) as response:
            assert response.status == 200, await response.text()


async def _reserved(store: PaymentStore, prefix: str, at_least: int) -> bool:
    count = await store._payments.count_documents({"rideId": {"$regex": f"^{prefix}"}})
    return count >= at_least


async def _heal(stripe: RunningPart) -> None:
    async with aiohttp.ClientSession() as http, http.delete(f"{stripe.url}/_sim/faults") as answer:
        assert answer.status == 200, await answer.text()


async def test_a_payment_reserved_without_a_session_too_long_is_finished_by_the_consumer(
    start_consumer: Callable[..., servers.ChildProcess],
    store: PaymentStore,
    bus: NotificationBus,
    unique: str,
) -> None:
    ride = (f"orphan-{unique}", f"orphan-{unique}-user")
    await store.reserve(*ride, 1250, "usd")  # as if its event had been lost after this
    start_consumer(ORPHAN_AFTER_S="3", ORPHAN_CHECK_INTERVAL_S="1")
    await finishes(store, bus, [ride], timeout_s=60)
