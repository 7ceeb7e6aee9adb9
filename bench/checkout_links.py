"""The payments API's new-link call and the outstanding query, against a webhook process.

New link: `POST /payment-service/payments/{rideId}/checkout` from --callers concurrent callers,
each call for its own ride whose first session expired, so every call creates attempt 2 at
the Stripe simulator (answering after --latency-ms) and stores it; then the same rides again,
whose link is now payable and comes back as it is. Reported: p50/p99 latency and the webhook
process's own CPU per call (the window ends once the process is quiet again, so pushing the
link to the rider is counted).

Outstanding: one user with --user-rides rides (one in --unpaid-every unpaid, the rest paid),
`GET /payment-service/users/{userId}/outstanding` sequentially; p50/p99, and MongoDB's
`explain` of the query (winning plan, keys and documents examined).

    .venv/bin/python bench/checkout_links.py [--rides 200] [--callers 20] [--user-rides 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from pymongo import AsyncMongoClient

from bench import harness
from devstack import servers
from shared.model import PaymentStatus
from shared.store import PaymentStore, StatusChange

DATABASE = "bench"
WEBHOOK = "webhook"
CPU_ROLES = [WEBHOOK, "mongodb", "stripe-sim", "redis", harness.BENCH]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--rides", type=int, default=200, help="expired rides asked for a new link")
    add("--callers", type=int, default=20, help="concurrent callers (default 20)")
    add("--latency-ms", type=int, default=100, help="Stripe simulator latency per call")
    add("--user-rides", type=int, default=10_000, help="rides of the outstanding user")
    add("--unpaid-every", type=int, default=50, help="one ride in this many is unpaid")
    add("--queries", type=int, default=200, help="outstanding queries")
    add("--log-level", default="WARNING", help="the webhook's LOG_LEVEL")
    return parser.parse_args()


async def seed_expired(mongo: str, rides: list[str]) -> None:
    """Rides as the consumer and Stripe's expiry webhook leave them: attempt 1 expired."""
    store = PaymentStore.connect(mongo, DATABASE, "payments")
    try:
        await store.ensure_indexes()

        async def one(index: int) -> None:
            ride = rides[index]
            reserved = await store.reserve(ride, f"user-{index}", 2550, "usd")
            past = datetime.now(UTC) - timedelta(minutes=1)
            attached = await store.attach_session(reserved, f"cs_{ride}", "https://pay/x", past)
            change = StatusChange(PaymentStatus.EXPIRED, f"evt_{ride}", "bench", attempt=1)
            await store.apply({"rideId": attached.ride_id}, change)

        await harness.run_pool(len(rides), 20, one)
    finally:
        await store.close()


async def seed_user(mongo: str, user: str, count: int, unpaid_every: int) -> int:
    """`count` rides of one user, inserted in batches; returns how many are unpaid."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo, tz_aware=True)
    payments = client[DATABASE]["payments"]
    start = datetime.now(UTC) - timedelta(days=365)
    unpaid_statuses = ["pending", "failed", "expired", "canceled"]
    documents = []
    for index in range(count):
        unpaid = index % unpaid_every == 0
        status = unpaid_statuses[index // unpaid_every % 4] if unpaid else "succeeded"
        created = start + timedelta(minutes=index)
        documents.append(
            {
                "rideId": f"{user}-{index:06d}",
                "userId": user,
                "amount": 1000 + index % 500,
                "currency": "usd" if index % 3 else "eur",
                "status": status,
                "version": 3,
                "attempt": 1,
                "attempts": [],
                "stripeSessionId": f"cs_{user}_{index}",
                "paymentUrl": f"https://pay/{user}/{index}",
                "createdAt": created,
                "updatedAt": created,
            }
        )
    for batch in range(0, count, 1000):
        await payments.insert_many(documents[batch : batch + 1000], ordered=False)
    await client.close()
    return sum(1 for document in documents if document["status"] != "succeeded")


async def call_all(
    http: aiohttp.ClientSession, base: str, rides: list[str], callers: int
) -> tuple[float, list[float], Counter[str]]:
    latencies = [0.0] * len(rides)
    outcomes: Counter[str] = Counter()

    async def call(index: int) -> None:
        started = time.perf_counter()
        url = f"{base}/payment-service/payments/{rides[index]}/checkout"
        async with http.post(url) as response:
            body = await response.json()
        latencies[index] = time.perf_counter() - started
        outcomes[f"{response.status} attempt {body.get('attempt')}"] += 1

    elapsed = await harness.run_pool(len(rides), callers, call)
    return elapsed, latencies, outcomes


async def measured_calls(
    http: aiohttp.ClientSession,
    parts: harness.Parts,
    base: str,
    rides: list[str],
    callers: int,
    label: str,
) -> list[str]:
    pids = {role: pid for role, pid in parts.pids().items() if role in CPU_ROLES}
    await harness.wait_quiet(pids[WEBHOOK])
    before = harness.sample(pids)
    elapsed, latencies, outcomes = await call_all(http, base, rides, callers)
    await harness.wait_quiet(pids[WEBHOOK])
    cpu = harness.usage(before, harness.sample(pids))
    print(f"{label}: {dict(outcomes)}")
    return [
        label,
        str(len(rides)),
        f"{len(rides) / elapsed:.0f}",
        f"{harness.percentile(latencies, 0.5) * 1000:.0f}",
        f"{harness.percentile(latencies, 0.99) * 1000:.0f}",
        f"{cpu.ms_per(WEBHOOK, len(rides)):.1f}",
        f"{cpu.ms_per('mongodb', len(rides)):.1f}",
    ]


async def outstanding_queries(
    http: aiohttp.ClientSession, base: str, user: str, queries: int
) -> tuple[list[float], int]:
    latencies = []
    rides = 0
    for _ in range(queries):
        started = time.perf_counter()
        async with http.get(f"{base}/payment-service/users/{user}/outstanding") as response:
            body = await response.json()
        latencies.append(time.perf_counter() - started)
        rides = len(body["rides"])
    return latencies, rides


async def explain(mongo: str, user: str) -> dict[str, Any]:
    store = PaymentStore.connect(mongo, DATABASE, "payments")
    try:
        plan: dict[str, Any] = await store.outstanding(user).explain()
        return plan
    finally:
        await store.close()


async def main() -> None:
    args = parse_args()
    harness.print_preamble("new payment link and outstanding")
    with harness.running_parts(harness.logs_dir("checkout-links")) as parts:
        kafka, mongo, redis_url = parts.kafka(), parts.mongo(), parts.redis()
        stripe = parts.stripe(args.latency_ms)
        internal_port = servers.free_port()
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "MONGODB_URI": mongo,
            "MONGODB_DATABASE": DATABASE,
            "REDIS_URL": redis_url,
            "STRIPE_SECRET_KEY": harness.STRIPE_KEY,
            "STRIPE_API_BASE": stripe,
            "STRIPE_WEBHOOK_SECRET": harness.WEBHOOK_SECRET,
            "INTERNAL_PORT": str(internal_port),
            "LOG_LEVEL": args.log_level,
            "RECONCILE_INTERVAL_S": "3600",
        }
        webhook = parts.service(WEBHOOK, "services.webhook", env)
        await harness.wait_ready(webhook, port=internal_port)
        base = f"http://127.0.0.1:{internal_port}"

        warm, rides = [f"warm-{i}" for i in range(20)], [f"ride-{i:05d}" for i in range(args.rides)]
        await seed_expired(mongo, warm + rides)
        timeout = aiohttp.ClientTimeout(total=120)
        connector = aiohttp.TCPConnector(limit=args.callers + 5)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            await call_all(http, base, warm, args.callers)
            rows = [
                await measured_calls(
                    http, parts, base, rides, args.callers, "new attempt (Stripe create)"
                ),
                await measured_calls(http, parts, base, rides, args.callers, "payable: as it is"),
            ]
            print(f"\n{args.callers} concurrent callers, Stripe simulator at {args.latency_ms} ms")
            harness.print_table(
                [
                    "call",
                    "n",
                    "calls/s",
                    "p50 ms",
                    "p99 ms",
                    "webhook CPU ms/call",
                    "mongo ms/call",
                ],
                rows,
            )

            user = "heavy-user"
            unpaid = await seed_user(mongo, user, args.user_rides, args.unpaid_every)
            latencies, listed = await outstanding_queries(http, base, user, args.queries)
        plan = await explain(mongo, user)
        stats = plan.get("executionStats", {})
        print(
            f"\noutstanding for a user with {args.user_rides} rides ({unpaid} unpaid, "
            f"{listed} listed): p50 {harness.percentile(latencies, 0.5) * 1000:.1f} ms, "
            f"p99 {harness.percentile(latencies, 0.99) * 1000:.1f} ms over {args.queries} queries"
        )
        print(f"explain winning plan: {plan['queryPlanner']['winningPlan']}")
        print(
            f"keys examined {stats.get('totalKeysExamined')}, "
            f"documents examined {stats.get('totalDocsExamined')}, "
            f"returned {stats.get('nReturned')}"
        )


if __name__ == "__main__":
    asyncio.run(main())
