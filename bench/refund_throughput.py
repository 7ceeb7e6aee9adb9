"""Refund throughput end to end: refund requests in Kafka to Stripe refunds recorded on the
payment, with the Stripe simulator adding latency to every call (the ride-event method).

Fresh parts (tansu, SecantusDB, Redis, the simulator, the consumer subprocess). Paid rides are
seeded first (sessions paid at the simulator with no latency, records stored `succeeded`), then
the latency is set. After /readyz and a warm-up batch, one full refund per ride is produced in
one batch; a request is done when its refund's Stripe id is recorded on the payment (the last
step of the use case). The rate is requests / (first produce .. all recorded). CPU is each
process's user+system time from the OS over that window, divided by the requests.

    .venv/bin/python bench/refund_throughput.py [--requests 300] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from bench import harness
from bench.consumer_throughput import consumer_env
from devstack import servers
from shared.store import utcnow
from shared.stripe_gateway import CheckoutRequest, StripeGateway

DATABASE = "bench"
CONSUMER = "consumer"
CHARGE = 2550
CPU_ROLES = [CONSUMER, "mongodb", "stripe-sim", "kafka", "redis", harness.BENCH]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--requests", type=int, default=300, help="refund requests measured (default 300)")
    add("--concurrency", type=int, default=32, help="CONSUMER_CONCURRENCY (default 32)")
    add("--latency-ms", type=int, default=100, help="Stripe simulator latency per call")
    add("--warmup", type=int, default=20, help="requests handled before measuring")
    add("--log-level", default="INFO", help="the consumer's LOG_LEVEL (default INFO)")
    add("--timeout-s", type=float, default=900, help="give up after this long")
    return parser.parse_args()


async def seed_paid_rides(stripe: str, mongo: str, prefix: str, count: int) -> None:
    """Rides paid at the simulator and stored `succeeded` with their PaymentIntent."""
    gateway = StripeGateway(harness.STRIPE_KEY, stripe)
    http = aiohttp.ClientSession()
    documents: list[harness.Document] = []

    async def pay(index: int) -> None:
        ride = f"{prefix}{index:06d}"
        session = await gateway.create_checkout_session(
            CheckoutRequest(ride, f"user-{ride}", CHARGE, "usd", "http://s", "http://c")
        )
        async with http.post(f"{stripe}/_sim/sessions/{session.id}/pay") as answer:
            answer.raise_for_status()
        paid = await gateway.retrieve_checkout_session(session.id)
        documents.append(_paid_record(ride, session.id, paid.payment_intent_id))

    try:
        await harness.run_pool(count, 16, pay)
    finally:
        await http.close()
        await gateway.close()
    client: AsyncMongoClient[harness.Document] = AsyncMongoClient(mongo, tz_aware=True)
    try:
        await client[DATABASE]["payments"].insert_many(documents)
    finally:
        await client.close()


def _paid_record(ride: str, session_id: str, intent: str | None) -> harness.Document:
    now = utcnow()
    return {
        "rideId": ride,
        "userId": f"user-{ride}",
        "amount": CHARGE,
        "currency": "usd",
        "status": "succeeded",
        "version": 3,
        "stripeSessionId": session_id,
        "paymentUrl": None,
        "paymentIntentId": intent,
        "history": [],
        "createdAt": now,
        "updatedAt": now,
    }


async def set_latency(stripe: str, latency_ms: int) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{stripe}/_sim/faults", json={"latency_ms": latency_ms}) as answer:
            answer.raise_for_status()
        # Settle refunds only when told: their webhooks go nowhere in this bench anyway.
        settings = {"settle_after_ms": None}
        async with http.post(f"{stripe}/_sim/refunds/settings", json=settings) as answer:
            answer.raise_for_status()


async def refund_all(
    producer: AIOKafkaProducer, mongo: str, prefix: str, count: int, timeout_s: float
) -> float:
    """Produce one full refund per ride in one batch; wait until all are recorded; start."""
    started = time.perf_counter()
    sent = []
    for index in range(count):
        ride = f"{prefix}{index:06d}"
        value = json.dumps({"refundId": f"rf-{ride}", "rideId": ride}).encode()
        sent.append(await producer.send("refund-requests", value, key=ride.encode()))
    await asyncio.gather(*sent)
    selector = {"rideId": {"$regex": f"^{prefix}"}, "refunds.stripeRefundId": {"$type": "string"}}
    deadline = time.monotonic() + timeout_s
    while await harness.count_documents(mongo, DATABASE, "payments", selector) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"refunds of {prefix} not all recorded after {timeout_s} s")
        await asyncio.sleep(0.2)
    return started


async def run(args: argparse.Namespace, logs: Path) -> None:
    with harness.running_parts(logs) as parts:
        kafka = parts.kafka()
        await servers.ensure_topics(kafka)
        mongo, redis_url, stripe = parts.mongo(), parts.redis(), parts.stripe(0)
        await seed_paid_rides(stripe, mongo, "warm-", args.warmup)
        await seed_paid_rides(stripe, mongo, "run-", args.requests)
        await set_latency(stripe, args.latency_ms)
        env = consumer_env(kafka, mongo, redis_url, stripe, args.concurrency, args.log_level)
        consumer = parts.service(CONSUMER, "services.consumer", env)
        await harness.wait_ready(consumer)
        producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
        await producer.start()
        try:
            await refund_all(producer, mongo, "warm-", args.warmup, args.timeout_s)
            pids = parts.pids()
            before = harness.sample(pids)
            started = await refund_all(producer, mongo, "run-", args.requests, args.timeout_s)
            elapsed = time.perf_counter() - started
            cpu = harness.usage(before, harness.sample(pids))
        finally:
            await producer.stop()
    print_results(args, elapsed, cpu)


def print_results(args: argparse.Namespace, elapsed_s: float, cpu: harness.CpuUsage) -> None:
    count = args.requests
    print()
    harness.print_table(
        ["requests", "concurrency", "requests/s", "consumer CPU ms/request", "machine busy"],
        [
            [
                str(count),
                str(args.concurrency),
                f"{count / elapsed_s:.1f}",
                f"{cpu.ms_per(CONSUMER, count):.2f}",
                f"{cpu.machine_busy_fraction * 100:.0f}%",
            ]
        ],
    )
    print()
    print("CPU per request by process (ms, user+system from the OS, over the measured window):")
    harness.print_table(CPU_ROLES, [[f"{cpu.ms_per(role, count):.2f}" for role in CPU_ROLES]])


async def main() -> None:
    args = parse_args()
    logs = harness.logs_dir("refunds")
    harness.print_preamble("refund throughput")
    print(f"Stripe latency {args.latency_ms} ms per call; logs in {logs}", flush=True)
    await run(args, logs)


if __name__ == "__main__":
    asyncio.run(main())
