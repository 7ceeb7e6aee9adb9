"""Stripe's rate limit shared by every replica: three consumer processes and a webhook (its
reconciler running) against a simulator that allows 20 requests a second, as Stripe would."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devstack import servers
from shared.store import PaymentStore
from tests.conftest import TEST_STRIPE_KEY, TEST_WEBHOOK_SECRET, RunningPart
from tests.e2e.conftest import configure_simulator, service_environment
from tests.e2e.test_consumer import make_rides, produce, ride_events
from tests.helpers import eventually, http_status, metric_sum

LIMIT_PER_S = 20
# 75 s of creates at the limit (measured 75.4 s, 2 refused of 1,522, busiest second 21).
BURST_RIDES = 1500
OUTAGE_RIDES = 240
# The simulator's bucket saves up a tenth of a second, so a window edge may show one more.
WINDOW_TOLERANCE = 1


@dataclass
class Limits:
    """What the simulator let through and refused since its limits were set."""

    accepted: int
    refused: int
    busiest_second: int
    by_endpoint: dict[str, int]

    def calls(self, method: str, path_end: str) -> int:
        return sum(
            count
            for endpoint, count in self.by_endpoint.items()
            if endpoint.startswith(method) and endpoint.endswith(path_end)
        )

    @property
    def creates(self) -> int:
        return self.calls("POST", "/checkout/sessions")

    @property
    def retrieves(self) -> int:
        return self.calls("GET", "/checkout/sessions/{id}")


async def limits(stripe_url: str, **settings: Any) -> Limits:
    async with aiohttp.ClientSession() as http:
        if settings:
            async with http.post(f"{stripe_url}/_sim/rate_limits", json=settings) as response:
                assert response.status == 200, await response.text()
        async with http.get(f"{stripe_url}/_sim/rate_limits") as response:
            body = await response.json()
    return Limits(
        body["accepted"], body["refused"], body["busiest_second"], body["accepted_by_endpoint"]
    )


@pytest.fixture(scope="module")
def limited_stripe(logs_dir: Path) -> Iterator[RunningPart]:
    port = servers.free_port()
    part = servers.python_module(
        "stripe-simulator-limited",
        "devstack.stripe_simulator",
        port,
        logs_dir,
        env={},
        args=[
            *("--api-key", TEST_STRIPE_KEY, "--port", str(port)),
            *("--webhook-secret", TEST_WEBHOOK_SECRET, "--latency-ms", "100"),
            *("--rate-limit", str(LIMIT_PER_S)),
        ],
    )
    part.start()
    yield RunningPart(part, f"http://127.0.0.1:{port}")
    part.stop()


StartService = Callable[..., servers.ChildProcess]


def service_starter(
    logs_dir: Path, base_env: dict[str, str], started: list[servers.ChildProcess]
) -> StartService:
    def start(module: str, name: str, **env: str) -> servers.ChildProcess:
        port = servers.free_port()
        process = servers.python_module(
            name, module, port, logs_dir, {**base_env, "PORT": str(port), **env}
        )
        process.start(timeout_s=60)
        started.append(process)
        return process

    return start


@dataclass
class Burst:
    rides: int
    store: PaymentStore
    seconds_to_last_session: float
    during: Limits  # when the last ride had its session
    after: Limits  # once the reconciler had its turn
    highest_lag: float  # the consumers' payments_consumer_lag, summed over partitions
    samples: list[tuple[float, Limits]] = field(default_factory=list)


async def sessions_attached(store: PaymentStore, prefix: str) -> int:
    return await store._payments.count_documents(
        {"rideId": {"$regex": f"^{prefix}"}, "stripeSessionId": {"$ne": None}}
    )


@pytest.fixture(scope="module")
async def burst(
    logs_dir: Path,
    mongo: RunningPart,
    redis_server: RunningPart,
    limited_stripe: RunningPart,
) -> AsyncIterator[Burst]:
    """Three consumers and a webhook whose reconciler looks at every pending payment each
    second; then BURST_RIDES ride events at once."""
    kafka_port = servers.free_port()
    kafka = RunningPart(servers.tansu(kafka_port, logs_dir), f"127.0.0.1:{kafka_port}")
    kafka.process.start()
    await servers.ensure_topics(kafka.url)
    database = "rate-limit-burst"
    env = service_environment(kafka, mongo, redis_server, limited_stripe, database)
    env["STRIPE_MAX_REQUESTS_PER_S"] = str(LIMIT_PER_S)
    started: list[servers.ChildProcess] = []
    start = service_starter(logs_dir, env, started)
    store = PaymentStore.connect(mongo.url, database, "payments")
    try:
        webhook = start(
            "services.webhook",
            "webhook-ratelimit",
            INTERNAL_PORT=str(servers.free_port()),
            RECONCILE_INTERVAL_S="1",
            RECONCILE_AFTER_S="0",
            RECONCILE_RATE_PER_S="50",
        )
        await configure_simulator(
            limited_stripe.url, f"http://127.0.0.1:{webhook.port}/payment-service/webhook"
        )
        consumers = [start("services.consumer", f"consumer-ratelimit-{n}") for n in range(3)]
        for consumer in consumers:
            await eventually(
                functools.partial(_ready, consumer), timeout_s=90, what=f"{consumer.name} /readyz"
            )
        metrics_urls = [f"http://127.0.0.1:{c.port}/metrics" for c in consumers]
        yield await _run_burst(kafka, store, limited_stripe.url, metrics_urls)
    finally:
        for process in started:
            process.stop()
        kafka.process.stop()
        await store.close()


async def _ready(process: servers.ChildProcess) -> bool:
    if not process.running:
        raise AssertionError(f"{process.name} exited: {process.tail()}")
    return await http_status(f"http://127.0.0.1:{process.port}/readyz") == 200


async def _run_burst(
    kafka: RunningPart, store: PaymentStore, stripe_url: str, metrics_urls: list[str]
) -> Burst:
    prefix = "burst-"
    rides = make_rides(prefix, BURST_RIDES, users=50)
    await limits(stripe_url, global_per_s=LIMIT_PER_S)  # counts from zero
    samples: list[tuple[float, Limits]] = []
    lags: list[float] = []
    started = time.monotonic()
    await produce(kafka, ride_events(rides))

    async def all_attached() -> bool:
        samples.append((time.monotonic() - started, await limits(stripe_url)))
        lags.append(await metric_sum(metrics_urls, "payments_consumer_lag"))
        return await sessions_attached(store, prefix) == BURST_RIDES

    await eventually(all_attached, timeout_s=240, every_s=0.5, what="every ride's session")
    seconds = time.monotonic() - started
    during = await limits(stripe_url)

    async def reconciler_had_its_turn() -> Limits | None:
        now = await limits(stripe_url)
        return now if now.retrieves >= during.retrieves + 20 else None

    after = await eventually(reconciler_had_its_turn, timeout_s=60, what="reconciler calls")

    async def lag_gone() -> bool:
        return await metric_sum(metrics_urls, "payments_consumer_lag") == 0

    await eventually(lag_gone, timeout_s=30, what="the consumers' lag back to 0")
    return Burst(BURST_RIDES, store, seconds, during, after, max(lags), samples)


async def test_three_consumers_stay_within_the_limit_and_every_ride_gets_its_session(
    burst: Burst,
) -> None:
    counts = burst.after
    print(
        f"\n{burst.rides} rides: last session after {burst.seconds_to_last_session:.1f} s; "
        f"accepted {counts.accepted}, refused {counts.refused}, "
        f"busiest second {counts.busiest_second}"
    )
    assert counts.busiest_second <= LIMIT_PER_S + WINDOW_TOLERANCE
    assert counts.refused < 0.01 * (counts.accepted + counts.refused)
    assert burst.during.creates >= burst.rides
    # Paced at the limit, not below it: the creates need rides / limit seconds, and no more
    # than a few seconds on top (start-up, the first reservations).
    assert burst.seconds_to_last_session <= burst.rides / LIMIT_PER_S + 15
    # The queue was visible as lag while it lasted (and went back to 0 after).
    assert burst.highest_lag >= 100


async def test_the_reconciler_waits_while_riders_need_the_budget(burst: Burst) -> None:
    # While creates queued, the reconciler's retrieves found no free turn (a few may fall
    # into the burst's first and last moments, when the queue is short).
    assert burst.during.retrieves <= 0.01 * burst.rides + 3
    # It did not give up: once the riders were served it took what was left.
    assert burst.after.retrieves >= burst.during.retrieves + 20


async def test_without_redis_calls_go_on_at_the_local_share_and_nothing_is_lost(
    logs_dir: Path, mongo: RunningPart, own_kafka: RunningPart, limited_stripe: RunningPart
) -> None:
    """Three consumers and a webhook whose reconciler keeps asking Stripe: the consumers'
    events wait for Redis (their links are announced through it), the reconciler does not."""
    redis_port = servers.free_port()
    redis = RunningPart(
        servers.redis(redis_port, None, logs_dir), f"redis://127.0.0.1:{redis_port}/0"
    )
    redis.process.start()
    database = "rate-limit-outage"
    env = service_environment(own_kafka, mongo, redis, limited_stripe, database)
    # Four processes share 20/s: without Redis, each takes a quarter.
    env |= {"STRIPE_MAX_REQUESTS_PER_S": str(LIMIT_PER_S), "STRIPE_BUDGET_PROCESSES": "4"}
    started: list[servers.ChildProcess] = []
    start = service_starter(logs_dir, env, started)
    store = PaymentStore.connect(mongo.url, database, "payments")
    prefix = "outage-"
    try:
        internal_port = servers.free_port()
        start(
            "services.webhook",
            "webhook-outage",
            INTERNAL_PORT=str(internal_port),
            RECONCILE_INTERVAL_S="1",
            RECONCILE_AFTER_S="0",
            RECONCILE_RATE_PER_S="50",
        )
        consumers = [start("services.consumer", f"consumer-outage-{n}") for n in range(3)]
        for consumer in consumers:
            await eventually(functools.partial(_ready, consumer), timeout_s=90, what="ready")
        metrics = [f"http://127.0.0.1:{c.port}/metrics" for c in consumers]
        metrics.append(f"http://127.0.0.1:{internal_port}/metrics")
        await limits(limited_stripe.url, global_per_s=LIMIT_PER_S)  # counts from zero
        await produce(own_kafka, ride_events(make_rides(prefix, OUTAGE_RIDES, users=40)))

        async def creates() -> int:
            return (await limits(limited_stripe.url)).creates

        await eventually(lambda: _at_least(creates, 40), timeout_s=60, what="40 creates")
        redis.process.stop()
        at_outage = await creates()
        await eventually(
            lambda: _at_least(lambda: local_share_calls(metrics), 30),
            timeout_s=60,
            what="calls at the local share",
        )
        during_outage = await limits(limited_stripe.url)
        redis.process.start()
        await eventually(
            lambda: _at_least(functools.partial(sessions_attached, store, prefix), OUTAGE_RIDES),
            timeout_s=180,
            every_s=0.5,
            what="every ride's session after Redis is back",
        )
    finally:
        for process in started:
            process.stop()
        redis.process.stop()
        await store.close()
    counts = await limits(limited_stripe.url)
    print(
        f"\nRedis stopped after {at_outage} creates; calls without it: "
        f"{during_outage.accepted - at_outage} ({during_outage.creates - at_outage} creates); "
        f"busiest second {counts.busiest_second}; refused {counts.refused} of "
        f"{counts.accepted + counts.refused}"
    )
    # The limit holds through the outage and back: every second, at most the budget.
    assert counts.busiest_second <= LIMIT_PER_S + WINDOW_TOLERANCE
    # No share of 429s is asserted here. While processes move onto their local shares and
    # back (each at its own moment) their calls are not in step, and this test also runs the
    # reconciler flat out: against the simulator's bucket, a tenth of a second deep, a share of
    # calls meets a 429 and is sent again in a later turn (measured 1-7 % alone, 23 % once
    # with the whole suite on 2 cores). A process ignoring the budget would show in the
    # busiest second above; the burst test holds the 429 share of the shared budget under 1 %.
    assert counts.creates == OUTAGE_RIDES  # one session per ride, none lost


async def local_share_calls(metrics_urls: list[str]) -> int:
    return int(await metric_sum(metrics_urls, "payments_stripe_budget_local_calls_total"))


async def _at_least(probe: Callable[[], Awaitable[int]], wanted: int) -> bool:
    return await probe() >= wanted
