from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from devstack import servers
from shared import messages
from shared.bus import (
    NotificationBus,
    StoredMessage,
    UserSubscriber,
    connect_redis,
    is_after,
    still_relevant,
    user_channel,
)
from tests.conftest import RunningPart
from tests.helpers import eventually, status_update


async def test_publish_stores_history_and_publishes_with_the_same_id(
    bus: NotificationBus, redis_server: RunningPart, unique: str
) -> None:
    user = f"user-{unique}"
    client = redis.Redis.from_url(redis_server.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(user_channel(user))
    message_id = await bus.publish(user, messages.payment_url("r1", "https://pay/r1"), version=2)
    assert message_id is not None
    received = None
    for _ in range(50):
        received = await pubsub.get_message(timeout=0.1)
        if received:
            break
    assert received is not None
    envelope = json.loads(received["data"])
    assert envelope == {"id": message_id, "message": messages.payment_url("r1", "https://pay/r1")}
    history = await bus.history(user)
    assert history == [StoredMessage(message_id, messages.payment_url("r1", "https://pay/r1"))]
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await client.aclose()


async def test_versions_keep_status_order_per_ride(bus: NotificationBus, unique: str) -> None:
    user = f"user-{unique}"
    link = messages.payment_url("r1", "https://pay/r1")
    assert await bus.publish(user, link, version=2)
    assert await bus.publish(user, link, version=2), "a link may be re-sent at its version"
    succeeded = status_update("r1", "succeeded", "cs_1")
    failed = status_update("r1", "failed", "cs_1")
    assert await bus.publish(user, succeeded, version=4)
    assert await bus.publish(user, failed, version=3) is None, "older than what was published"
    assert await bus.publish(user, succeeded, version=4) is None, "the same status twice"
    assert await bus.publish(user, link, version=2) is None, "the link after a newer status"
    types = [stored.message["type"] for stored in await bus.history(user)]
    assert types == ["payment_url", "payment_status_update"], "the repeated link replaced"


async def test_repeated_links_never_push_a_status_out_of_the_history(
    bus: NotificationBus, unique: str
) -> None:
    """Before: each repeat of a link was stored, and 300 repeats (300 new-link calls on a
    payable ride) pushed another ride's `disputed` out of the history kept for resuming."""
    user = f"user-{unique}"
    link = messages.payment_url("r1", "https://pay/r1")
    first = await bus.publish(user, link, version=2)
    assert await bus.publish(user, status_update("r2", "disputed", "cs_2"), version=5)
    for _ in range(300):
        assert await bus.publish(user, link, version=2), "a repeated link is still pushed"
    new_attempt = messages.payment_url("r1", "https://pay/r1-2")
    assert await bus.publish(user, new_attempt, version=3)

    resumed = [stored.message for stored in await bus.history(user, after_id=first)]
    assert resumed == [status_update("r2", "disputed", "cs_2"), new_attempt]
    everything = [stored.message for stored in await bus.history(user)]
    assert everything == resumed, "one link per ride: the latest"


async def test_concurrent_publishers_never_deliver_older_after_newer(
    bus: NotificationBus, unique: str
) -> None:
    user = f"user-{unique}"
    updates = [status_update("r1", f"s{v}", "cs") for v in range(2, 40)]
    await asyncio.gather(
        *(bus.publish(user, m, version=v) for v, m in zip(range(2, 40), updates, strict=True))
    )
    statuses = [int(stored.message["status"][1:]) for stored in await bus.history(user)]
    assert statuses == sorted(statuses) and len(set(statuses)) == len(statuses)


async def test_publications_sent_together_each_get_their_own_answer(
    bus: NotificationBus, unique: str
) -> None:
    users = [f"user-{unique}-{index}" for index in range(20)]
    newer = status_update("r1", "succeeded", "cs_1")
    await bus.publish(users[0], newer, version=5)
    older = status_update("r1", "failed", "cs_1")
    ids = await asyncio.gather(
        bus.publish(users[0], older, version=3),
        *(
            bus.publish(user, messages.payment_url("r1", "https://pay"), version=2)
            for user in users[1:]
        ),
    )
    assert ids[0] is None, "the older status is refused, alone in its batch"
    for user, message_id in zip(users[1:], ids[1:], strict=True):
        [stored] = await bus.history(user)
        assert stored.id == message_id


async def test_history_after_an_id(bus: NotificationBus, unique: str) -> None:
    user = f"user-{unique}"
    ids = [
        await bus.publish(user, messages.payment_url(f"r{i}", "https://p"), version=2)
        for i in range(5)
    ]
    after = await bus.history(user, after_id=ids[1])
    assert [stored.id for stored in after] == ids[2:]
    assert all(is_after(stored.id, ids[1]) for stored in after)


def test_still_relevant_keeps_open_links_and_latest_statuses() -> None:
    def stored(i: int, message: dict[str, object]) -> StoredMessage:
        return StoredMessage(f"{i}-0", message)

    history = [
        stored(1, messages.payment_url("paid", "u1")),
        stored(2, messages.payment_url("open", "u2")),
        stored(3, messages.payment_url("retry", "u3")),
        stored(4, status_update("paid", "succeeded", "cs1")),
        stored(5, status_update("retry", "failed", "cs3")),
    ]
    assert [s.id for s in still_relevant(history)] == ["2-0", "3-0", "4-0", "5-0"]


async def test_subscriber_makes_changes_missed_while_redis_was_away(
    logs_dir: Path, unique: str
) -> None:
    port = servers.free_port()
    server = servers.redis(port, None, logs_dir / f"bus-{unique}")
    server.start()
    client = connect_redis(f"redis://127.0.0.1:{port}/0")
    delivered: list[tuple[str, StoredMessage]] = []

    async def deliver(user_id: str, stored: StoredMessage) -> None:
        delivered.append((user_id, stored))

    async def nothing_to_replay() -> None:
        pass

    subscriber = UserSubscriber(client, deliver, nothing_to_replay, max_backoff_s=0.5)
    listening = asyncio.create_task(subscriber.run())
    try:
        await subscriber.subscribe("stays")
        await subscriber.subscribe("leaves")
        await asyncio.wait_for(subscriber.connected.wait(), 10)
        server.stop()
        await subscriber.subscribe("arrives")
        await subscriber.unsubscribe("leaves")
        server.start()

        async def channels_follow_users() -> bool:
            try:
                counts = dict(
                    await client.pubsub_numsub(*map(user_channel, ["stays", "leaves", "arrives"]))
                )
            except RedisError:
                return False
            return list(counts.values()) == [1, 0, 1]

        await eventually(channels_follow_users, timeout_s=20, what="the subscriptions to follow")
        await client.publish(user_channel("stays"), b"not json")  # dropped, not fatal
        await NotificationBus(client).publish(
            "arrives", messages.payment_url("r1", "https://p"), version=2
        )
        await eventually(lambda: _async(delivered), timeout_s=10, what="a delivery")
        assert [user for user, _ in delivered] == ["arrives"]
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await client.aclose()
        server.stop()


async def _async(value: list[Any]) -> list[Any]:
    return value


async def test_a_command_whose_connection_redis_drops_is_sent_again(
    redis_server: RunningPart, unique: str
) -> None:
    """connect_redis's retries work: a command cut by a dropped connection is sent again on a
    new one (redis.retry.Retry, accepted by the asyncio client too, never retried)."""
    key = f"retried-{unique}"
    client, admin = connect_redis(redis_server.url), connect_redis(redis_server.url)
    waiting = asyncio.ensure_future(client.blpop([key], timeout=4))  # under the socket timeout

    async def blocked_connection(other_than: int | None = None) -> int | None:
        if waiting.done():
            waiting.result()  # raises what ended it
        for connection in await admin.client_list():
            if connection["cmd"] == "blpop" and int(connection["id"]) != other_than:
                return int(connection["id"])
        return None

    try:
        first = await eventually(blocked_connection, timeout_s=10, what="the BLPOP waiting")
        await admin.client_kill_filter(_id=str(first))
        await eventually(
            lambda: blocked_connection(other_than=first), timeout_s=10, what="the BLPOP again"
        )
        await admin.rpush(key, b"arrived")
        assert await waiting == (key.encode(), b"arrived")
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await client.aclose()
        await admin.aclose()


async def test_a_note_neither_waits_for_nor_moves_the_rides_status_order(
    bus: NotificationBus, unique: str
) -> None:
    """A duplicate charge given back is told whatever the ride's published version, and
    changes it not: the ride's next status still goes out, and stays its latest status."""
    user = f"user-{unique}"
    note = messages.duplicate_charge_refunded(
        "r1", amount=1500, currency="usd", payment_intent_id="pi_2"
    )
    assert await bus.publish(user, status_update("r1", "succeeded", "cs_1"), version=4)
    assert await bus.publish(user, note, version=3), "older than the status: told all the same"
    assert await bus.publish(user, note, version=9)
    refunded = status_update("r1", "refunded", "cs_1")
    assert await bus.publish(user, refunded, version=5), "the note moved the version on"

    relevant = [stored.message for stored in still_relevant(await bus.history(user))]
    assert relevant == [note, note, refunded]
