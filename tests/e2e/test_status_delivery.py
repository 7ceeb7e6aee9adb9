"""Every stored status change reaches the rider and `payment-status-events`: when Redis was down
as it was stored, when the process that stored it died before announcing it, and when several
webhook replicas relay at once (the webhook and notifier as processes, real parts)."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devstack import servers
from shared.status_events import STATUS_EVENTS_TOPIC
from shared.store import PaymentStore
from tests.conftest import RunningPart
from tests.e2e.conftest import service_environment
from tests.e2e.test_status_events import deliver
from tests.helpers import NotEnoughRecords, eventually, http_status, read_topic
from tests.integration.test_notifier_resilience import own_redis as own_redis
from tests.integration.test_webhook import CURRENCY, FARE, intent_event, session_event

OUTAGE_S = 30  # how long Redis stays down while changes are stored

Start = Callable[..., servers.ChildProcess]


@pytest.fixture
async def start(logs_dir: Path, unique: str) -> AsyncIterator[Start]:
    """Starts our processes on free ports; stops whatever is left at the end."""
    started: list[servers.ChildProcess] = []

    def start_process(service: str, env: dict[str, str]) -> servers.ChildProcess:
        port = servers.free_port()
        ports = {"PORT": str(port), "INTERNAL_PORT": str(servers.free_port())}
        process = servers.python_module(
            f"{service}-{unique}-{len(started)}",
            f"services.{service}",
            port,
            logs_dir,
            {**env, **ports},
        )
        process.start(timeout_s=60)
        started.append(process)
        return process

    yield start_process
    for process in started:
        process.stop()


async def seed(store: PaymentStore, user: str, rides: list[str]) -> None:
    for ride in rides:
        reserved = await store.reserve(ride, user, FARE, CURRENCY)
        await store.attach_session(reserved, f"cs_{ride}", f"https://pay/{ride}")


async def stored_state(store: PaymentStore, ride: str) -> dict[str, Any] | None:
    """What a failure report needs of a payment: its status, version and outbox."""
    document = await store.find_document(ride)
    if document is None:
        return None
    return {key: document.get(key) for key in ("status", "version", "outbox", "updatedAt")}


def completed(ride: str) -> bytes:
    return json.dumps(session_event("checkout.session.completed", ride, f"cs_{ride}")).encode()


def payment_failed(ride: str) -> bytes:
    return json.dumps(intent_event("payment_intent.payment_failed", ride)).encode()


class Rider:
    """A connected app: it reads all the time (answering the server's pings, as apps do) and
    keeps what it receives."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, http: aiohttp.ClientSession, notifier: servers.ChildProcess, user: str
    ) -> Rider:
        url = f"ws://127.0.0.1:{notifier.port}/payment-ws?userId={user}"
        rider = cls(await http.ws_connect(url, heartbeat=None))
        assert (await rider.next())["type"] == "registration_success"
        return rider

    async def _read(self) -> None:
        async for frame in self._socket:
            if frame.type is aiohttp.WSMsgType.TEXT:
                self._received.put_nowait(json.loads(frame.data))

    async def next(self, timeout_s: float = 60) -> dict[str, Any]:
        return await asyncio.wait_for(self._received.get(), timeout_s)

    async def status_updates(self, count: int) -> list[tuple[str, str]]:
        """The next `count` status updates, as (rideId, status)."""
        updates: list[tuple[str, str]] = []
        while len(updates) < count:
            message = await self.next()
            if message["type"] == "payment_status_update":
                updates.append((message["rideId"], message["status"]))
        return updates

    async def nothing_more(self) -> bool:
        try:
            message = await self.next(timeout_s=3)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected message: {message}")

    async def close(self) -> None:
        await self._socket.close()
        await self._reader


async def ready(process: servers.ChildProcess) -> bool:
    return await http_status(f"http://127.0.0.1:{process.port}/readyz") == 200


async def test_changes_stored_while_redis_is_down_reach_every_rider_once(
    own_redis: RunningPart,
    kafka: RunningPart,
    mongo: RunningPart,
    stripe_simulator: RunningPart,
    start: Start,
    unique: str,
) -> None:
    database, user = f"outage-{unique}", f"rider-{unique}"
    rides = [f"outage-{unique}-{i}" for i in range(5)]
    store = PaymentStore.connect(mongo.url, database, "payments")
    await seed(store, user, rides)
    env = service_environment(kafka, mongo, own_redis, stripe_simulator, database)
    webhook, notifier = start("webhook", env), start("notifier", env)
    await eventually(lambda: ready(notifier), timeout_s=60, what="notifier ready")
    async with aiohttp.ClientSession() as http:
        connected = await Rider.connect(http, notifier, user)
        await asyncio.to_thread(own_redis.process.stop)
        assert [await deliver(webhook.port, completed(ride)) for ride in rides] == [200] * 5
        await asyncio.sleep(OUTAGE_S)  # the outage itself, not a wait for a condition
        await asyncio.to_thread(own_redis.process.start)

        paid = sorted((ride, "succeeded") for ride in rides)
        assert sorted(await connected.status_updates(len(rides))) == paid
        late = await Rider.connect(http, notifier, user)
        assert sorted(await late.status_updates(len(rides))) == paid
        assert await connected.nothing_more() and await late.nothing_more(), "each update once"
        await connected.close()
        await late.close()
    await store.close()


async def test_a_change_whose_webhook_died_before_announcing_reaches_the_rider(
    kafka: RunningPart,
    mongo: RunningPart,
    redis_server: RunningPart,
    stripe_simulator: RunningPart,
    start: Start,
    unique: str,
) -> None:
    database, user = f"died-{unique}", f"rider-{unique}"
    rides = [f"died-{unique}-{i}" for i in range(3)]
    store = PaymentStore.connect(mongo.url, database, "payments")
    await seed(store, user, rides)
    env = service_environment(kafka, mongo, redis_server, stripe_simulator, database)
    # Redis and Kafka out of its reach: it stores each change, then dies announcing nothing.
    unreachable = f"127.0.0.1:{servers.free_port()}"
    doomed = start(
        "webhook",
        {**env, "REDIS_URL": f"redis://{unreachable}/0", "KAFKA_BOOTSTRAP_SERVERS": unreachable},
    )
    assert [await deliver(doomed.port, completed(ride)) for ride in rides] == [200] * 3
    doomed.signal(signal.SIGKILL)

    notifier = start("notifier", env)
    await eventually(lambda: ready(notifier), timeout_s=60, what="notifier ready")
    async with aiohttp.ClientSession() as http:
        rider = await Rider.connect(http, notifier, user)
        successor = start("webhook", env)
        paid = sorted((ride, "succeeded") for ride in rides)
        assert sorted(await rider.status_updates(len(rides))) == paid
        assert [await deliver(successor.port, completed(ride)) for ride in rides] == [200] * 3
        assert await rider.nothing_more(), "Stripe's redelivery announces nothing twice"
        await rider.close()
    await store.close()


async def test_two_replicas_relaying_leave_the_highest_version_on_the_final_status(
    kafka: RunningPart,
    mongo: RunningPart,
    redis_server: RunningPart,
    stripe_simulator: RunningPart,
    start: Start,
    unique: str,
) -> None:
    database = f"replicas-{unique}"
    rides = [f"replicas-{unique}-{i}" for i in range(20)]
    store = PaymentStore.connect(mongo.url, database, "payments")
    for ride in rides:
        await seed(store, f"user-{ride}", [ride])
    env = service_environment(kafka, mongo, redis_server, stripe_simulator, database)
    first, second = start("webhook", env), start("webhook", env)

    async def race(ride: str) -> list[int]:
        return list(
            await asyncio.gather(
                deliver(first.port, payment_failed(ride)), deliver(second.port, completed(ride))
            )
        )

    assert await asyncio.gather(*(race(ride) for ride in rides)) == [[200, 200]] * len(rides)

    def latest(records: list[Any]) -> dict[str, dict[str, Any]]:
        """What a consumer keeping the highest version per ride holds."""
        state: dict[str, dict[str, Any]] = {}
        for record in records:
            event = json.loads(record.value)
            if (
                event["rideId"] in rides
                and event["version"] > state.get(event["rideId"], {"version": 0})["version"]
            ):
                state[event["rideId"]] = event
        return state

    def settled(records: list[Any]) -> bool:
        state = latest(records)
        return len(state) == len(rides) and all(e["status"] == "succeeded" for e in state.values())

    try:
        records = await read_topic(kafka.url, STATUS_EVENTS_TOPIC, settled, timeout_s=90)
    except NotEnoughRecords as error:
        heard = {ride: (e["status"], e["version"]) for ride, e in latest(error.records).items()}
        unsettled = [ride for ride in rides if heard.get(ride, ("",))[0] != "succeeded"]
        stored = {ride: await stored_state(store, ride) for ride in unsettled}
        raise AssertionError(
            f"{error}; highest version heard per ride: {heard}; in MongoDB: {stored}"
        ) from None
    for ride, event in latest(records).items():
        document = await store.find_document(ride)
        assert document is not None and event["version"] == document["version"]
    await store.close()
