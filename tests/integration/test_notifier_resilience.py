"""The notifier through a Redis restart, a dropped subscriber connection and a shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as redis
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from devstack import servers
from services.notifier.app import DrainPolicy
from shared import messages
from shared.bus import NotificationBus, connect_redis, user_channel
from shared.observability import readiness_failures
from tests.conftest import RunningPart
from tests.helpers import eventually, http_status, next_message, status_update
from tests.integration.test_notifier import (
    expect_close,
    notifier_settings,
    registered,
    send,
    start_notifier,
    until,
)
from tests.integration.test_notifier import session as session

REDIS_CONNECTED = "payments_notifier_redis_connected"


@pytest.fixture
async def own_redis(logs_dir: Path) -> AsyncIterator[RunningPart]:
    """A Redis of this test's own, so it can be stopped and started again."""
    part = servers.redis(servers.free_port(), None, logs_dir)
    await asyncio.to_thread(part.start)
    yield RunningPart(part, f"redis://127.0.0.1:{part.port}/0")
    await asyncio.to_thread(part.stop)


async def test_a_redis_restart_turns_readiness_off_then_delivery_resumes(
    own_redis: RunningPart, session: aiohttp.ClientSession, unique: str
) -> None:
    running = await start_notifier(notifier_settings(own_redis.url))
    user = f"user-{unique}"
    try:
        socket = await registered(session, running, user)
        before = NotificationBus(connect_redis(own_redis.url))
        first = await before.publish(user, messages.payment_url("r1", "https://pay/1"), version=1)
        assert (await next_message(socket))["id"] == first
        await before.close()

        await asyncio.to_thread(own_redis.process.stop)

        async def unready() -> bool:
            return await http_status(running.url("/readyz")) == 503

        await eventually(unready, timeout_s=15, every_s=0.05, what="/readyz to turn 503")
        assert await http_status(running.url("/healthz")) == 200

        await asyncio.to_thread(own_redis.process.start)

        async def ready() -> bool:
            return await http_status(running.url("/readyz")) == 200

        await eventually(ready, timeout_s=15, every_s=0.05, what="/readyz to turn 200 again")
        assert running.notifier.subscriber.reconnects >= 1
        after = NotificationBus(connect_redis(own_redis.url))
        status = status_update("r1", "succeeded", "cs_1")
        second = await after.publish(user, status, version=2)
        received = await next_message(socket)
        assert received == {**status, "id": second}
        await after.close()
        await socket.close()
    finally:
        await running.runner.cleanup()


async def test_messages_published_while_the_subscriber_reconnects_arrive_once(
    own_redis: RunningPart, session: aiohttp.ClientSession, unique: str
) -> None:
    running = await start_notifier(notifier_settings(own_redis.url))
    bus = NotificationBus(connect_redis(own_redis.url))
    admin = redis.Redis.from_url(own_redis.url)
    user = f"user-{unique}"
    try:
        socket = await registered(session, running, user)
        first = await bus.publish(user, messages.payment_url("r0", "https://pay/0"), version=1)
        assert (await next_message(socket))["id"] == first
        subscriber = running.notifier.subscriber
        reconnects = subscriber.reconnects
        replayed = _replayed()
        assert await admin.client_kill_filter(_type="pubsub") == 1
        # Published before the subscriber is back (its backoff is at least 50 ms): these
        # reach the socket from history, after the reconnect.
        gap = [
            await bus.publish(user, messages.payment_url(f"r{i}", f"https://pay/{i}"), version=1)
            for i in range(1, 6)
        ]
        await until(lambda: subscriber.reconnects > reconnects, "the connection loss")
        await until(subscriber.connected.is_set, "the subscriber to reconnect")
        after = await bus.publish(user, messages.payment_url("r6", "https://pay/6"), version=1)
        received = [(await next_message(socket))["id"] for _ in range(6)]
        assert received == [*gap, after]
        assert _replayed() > replayed, "the gap was not replayed from history"
        await socket.close()
    finally:
        await admin.aclose()
        await bus.close()
        await running.runner.cleanup()


async def test_delivery_survives_a_stray_message_on_the_subscriber_channel(
    own_redis: RunningPart, session: aiohttp.ClientSession, unique: str
) -> None:
    running = await start_notifier(notifier_settings(own_redis.url))
    bus = NotificationBus(connect_redis(own_redis.url))
    admin = redis.Redis.from_url(own_redis.url)
    user = f"user-{unique}"
    try:
        socket = await registered(session, running, user)
        await admin.publish("payments:subscriber-keepalive", "stray")
        await admin.publish(user_channel(user), "not an envelope")
        link = messages.payment_url("r1", "https://pay/1")
        message_id = await bus.publish(user, link, version=1)
        assert await next_message(socket) == {**link, "id": message_id}
        await socket.close()
    finally:
        await admin.aclose()
        await bus.close()
        await running.runner.cleanup()


def _replayed() -> float:
    return REGISTRY.get_sample_value("payments_notifier_messages_replayed_total") or 0.0


async def test_shutdown_turns_unready_and_closes_every_socket_with_1001(
    redis_server: RunningPart, session: aiohttp.ClientSession, unique: str
) -> None:
    running = await start_notifier(
        notifier_settings(redis_server.url), drain=DrainPolicy(batch_size=2, pause_s=0.05)
    )
    sockets = [await registered(session, running, f"user-{unique}-{i}") for i in range(3)]
    sockets.append(await session.ws_connect(running.socket_url()))
    await send(sockets[-1], {"type": "register"})
    assert (await next_message(sockets[-1]))["type"] == "error"
    sockets.append(await session.ws_connect(running.socket_url()))
    await until(lambda: len(running.notifier.sockets) == 5, "five sockets")

    shutdown = asyncio.create_task(running.runner.cleanup())
    await until(lambda: running.notifier.draining, "draining")
    failed = await readiness_failures(running.notifier.readiness_checks())
    assert failed == {"accepting": "draining for shutdown"}
    for socket in sockets:
        await expect_close(socket, aiohttp.WSCloseCode.GOING_AWAY)
    await shutdown
    assert not running.notifier.sockets


async def test_metrics_say_whether_the_subscriber_has_redis(
    own_redis: RunningPart, session: aiohttp.ClientSession
) -> None:
    """What the PaymentsNotifierWithoutRedis alert reads: 0 while Redis is away, 1 again after."""
    running = await start_notifier(notifier_settings(own_redis.url))

    async def redis_connected() -> float | None:
        async with session.get(running.url("/metrics")) as response:
            families = text_string_to_metric_families(await response.text())
        samples = [s for f in families for s in f.samples]
        return next((s.value for s in samples if s.name == REDIS_CONNECTED), None)

    async def connected_is(value: float) -> bool:
        return await redis_connected() == value

    try:
        assert await redis_connected() == 1
        await asyncio.to_thread(own_redis.process.stop)
        await eventually(lambda: connected_is(0), timeout_s=15, what="the gauge to say 0")
        await asyncio.to_thread(own_redis.process.start)
        await eventually(lambda: connected_is(1), timeout_s=15, what="the gauge to say 1 again")
    finally:
        await running.runner.cleanup()
