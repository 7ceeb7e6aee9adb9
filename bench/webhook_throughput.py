"""Webhook throughput: signed `checkout.session.completed` deliveries per second, latency at
--senders concurrent senders, and the webhook process's own CPU per delivery, beside a bare
aiohttp server that only reads the body (bench/bare_server.py) under the same load.

The webhook runs as `python -m services.webhook` on a free port with its own SecantusDB,
Redis and tansu (for the status-event outbox, where the code has one). Payments are seeded
first through PaymentStore (reserve + attach_session). A delivery is done when its status
update is PUBLISHed on the bus; the CPU window ends once the webhook is quiet again, so work
it does after answering (notification, outbox) is counted. After the loads, MongoDB's own
write rates are measured from this process against the same SecantusDB.

    .venv/bin/python bench/webhook_throughput.py [--payments 1000] [--senders 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bench import harness, stacks
from devstack import servers
from services.webhook.signature import sign
from shared.store import PaymentStore

DATABASE = "bench"
WEBHOOK = "webhook"
BARE = "bare"
PATH = "/payment-service/webhook"
PREFIX = "run-"
WARM = "warm-"
TARGET_CPU_MS = 1.0
CPU_ROLES = [WEBHOOK, BARE, "mongodb", "redis", "kafka", harness.BENCH]


@dataclass(frozen=True, slots=True)
class Load:
    """One server under the load: client-side timings and the OS's CPU figures."""

    label: str
    role: str
    count: int
    elapsed_s: float
    latencies_s: list[float]
    outcomes: Counter[str]
    cpu: harness.CpuUsage
    idle_cpu_per_s: float

    @property
    def rate(self) -> float:
        return self.count / self.elapsed_s

    @property
    def cpu_ms(self) -> float:
        return self.cpu.ms_per(self.role, self.count)

    @property
    def cpu_ms_less_idle(self) -> float:
        busy = self.cpu.per_process[self.role] - self.idle_cpu_per_s * self.cpu.wall_s
        return busy * 1000 / self.count


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--payments", type=int, default=1000, help="payments seeded and delivered (default 1000)")
    add("--senders", type=int, default=50, help="concurrent senders (default 50)")
    add("--warmup", type=int, default=50, help="deliveries before measuring")
    add("--idle-s", type=float, default=3.0, help="seconds to measure the idle webhook's CPU")
    add("--mongo-ops", type=int, default=2000, help="writes per MongoDB probe")
    add("--mongo-update-ops", type=int, default=200, help="find_one_and_update probe writes")
    add("--mongo-concurrency", type=int, default=50, help="concurrent writes in the probes")
    add("--log-level", default="INFO", help="the webhook's LOG_LEVEL (default INFO)")
    add("--timeout-s", type=float, default=600, help="give up waiting after this long")
    add("--py-spy", metavar="PATH", help="sample the webhook with this py-spy while measuring")
    return parser.parse_args()


def webhook_env(kafka: str, mongo: str, redis_url: str, log_level: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "MONGODB_URI": mongo,
        "MONGODB_DATABASE": DATABASE,
        "REDIS_URL": redis_url,
        "STRIPE_WEBHOOK_SECRET": harness.WEBHOOK_SECRET,
        "LOG_LEVEL": log_level,
    }


# --- payments and events -----------------------------------------------------------------


def ride_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{index:06d}" for index in range(count)]


async def seed(mongo: str, rides: list[str], concurrency: int) -> float:
    """Reserve and attach a Checkout Session for each ride; returns rides per second."""
    store = PaymentStore.connect(mongo, DATABASE, "payments")
    try:
        await store.ensure_indexes()

        async def one(index: int) -> None:
            ride = rides[index]
            reserved = await store.reserve(ride, f"user-{index % 500}", 2550, "usd")
            await store.attach_session(reserved, f"cs_{ride}", f"https://checkout.test/cs_{ride}")

        return len(rides) / await harness.run_pool(len(rides), concurrency, one)
    finally:
        await store.close()


def completed_event(ride: str) -> bytes:
    """A Stripe-shaped `checkout.session.completed`, paid, for the ride's seeded session."""
    session = {
        "id": f"cs_{ride}",
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "payment_intent": f"pi_{ride}",
        "client_reference_id": ride,
        "metadata": {"rideId": ride, "userId": f"user-{ride}"},
        "amount_total": 2550,
        "currency": "usd",
    }
    event = {
        "id": f"evt_{ride}",
        "object": "event",
        "api_version": "2025-09-30.clover",
        "created": int(time.time()),
        "livemode": False,
        "type": "checkout.session.completed",
        "data": {"object": session},
    }
    return json.dumps(event).encode()


def signature_header(body: bytes) -> str:
    timestamp = int(time.time())
    return f"t={timestamp},v1={sign(body, harness.WEBHOOK_SECRET, timestamp)}"


# --- load --------------------------------------------------------------------------------


async def deliver_all(
    http: aiohttp.ClientSession, url: str, bodies: list[bytes], senders: int
) -> tuple[float, list[float], Counter[str]]:
    """POST every body, signed when sent, from `senders` at a time."""
    latencies = [0.0] * len(bodies)
    outcomes: Counter[str] = Counter()

    async def send(index: int) -> None:
        body = bodies[index]
        headers = {"Stripe-Signature": signature_header(body), "Content-Type": "application/json"}
        started = time.perf_counter()
        async with http.post(url, data=body, headers=headers) as response:
            answer = await response.read()
        latencies[index] = time.perf_counter() - started
        outcomes[_outcome(response.status, answer)] += 1

    elapsed = await harness.run_pool(len(bodies), senders, send)
    return elapsed, latencies, outcomes


def _outcome(status: int, answer: bytes) -> str:
    try:
        result: Any = json.loads(answer).get("result")
    except (ValueError, AttributeError):
        result = None
    return f"{status} {result}" if result else str(status)


@dataclass(frozen=True, slots=True)
class Target:
    label: str
    role: str
    url: str
    watcher: harness.BusWatcher | None  # None: nothing happens after the answer


async def load(
    http: aiohttp.ClientSession,
    target: Target,
    parts: harness.Parts,
    args: argparse.Namespace,
) -> Load:
    warm = [completed_event(ride) for ride in ride_ids(WARM, args.warmup)]
    bodies = [completed_event(ride) for ride in ride_ids(PREFIX, args.payments)]
    await deliver_all(http, target.url, warm, args.senders)
    await _settled(target, parts, WARM, len(warm), args.timeout_s)
    idle = await harness.idle_cpu_rate(parts.pids()[target.role], args.idle_s)
    pids = parts.pids()
    sampler = _sampler(args, pids[target.role], parts.logs / f"py-spy-{target.role}.txt")
    before = harness.sample(pids)
    elapsed, latencies, outcomes = await deliver_all(http, target.url, bodies, args.senders)
    await _settled(target, parts, PREFIX, len(bodies), args.timeout_s)
    cpu = harness.usage(before, harness.sample(pids))
    if sampler is not None:
        sampler.stop()
        stacks.summarise(sampler.output)
    return Load(target.label, target.role, len(bodies), elapsed, latencies, outcomes, cpu, idle)


async def _settled(
    target: Target, parts: harness.Parts, prefix: str, count: int, timeout_s: float
) -> None:
    """Every status update published, then the server quiet (its background work done)."""
    if target.watcher is not None:
        await target.watcher.wait_for(prefix, count, timeout_s)
    await harness.wait_quiet(parts.pids()[target.role])


def _sampler(args: argparse.Namespace, pid: int, output: Path) -> stacks.Sampler | None:
    return stacks.start(args.py_spy, pid, output) if args.py_spy else None


async def count_succeeded(mongo: str, prefix: str) -> int:
    selector = {"rideId": {"$regex": f"^{prefix}"}, "status": "succeeded"}
    return await harness.count_documents(mongo, DATABASE, "payments", selector)


# --- the run -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    seed_per_s: float
    loads: list[Load]
    succeeded: int
    probes: list[harness.Probe]


async def run(args: argparse.Namespace, logs: Path) -> Outcome:
    with harness.running_parts(logs) as parts:
        kafka = parts.kafka()
        await servers.ensure_topics(kafka)
        mongo, redis_url = parts.mongo(), parts.redis()
        internal_port = servers.free_port()
        env = webhook_env(kafka, mongo, redis_url, args.log_level)
        webhook = parts.service(
            WEBHOOK, "services.webhook", {**env, "INTERNAL_PORT": str(internal_port)}
        )
        bare = parts.service(BARE, "bench.bare_server", {})
        await harness.wait_ready(webhook, port=internal_port)
        rides = ride_ids(WARM, args.warmup) + ride_ids(PREFIX, args.payments)
        print(f"seeding {len(rides)} payments ...", flush=True)
        seed_rate = await seed(mongo, rides, args.senders)
        watcher = harness.BusWatcher(redis_url, "payment_status_update")
        await watcher.start()
        try:
            loads = await _both_loads(webhook, bare, watcher, parts, args)
        finally:
            await watcher.close()
        succeeded = await count_succeeded(mongo, PREFIX)
        parts.stop(WEBHOOK)  # the probes measure MongoDB alone
        probes = await harness.mongo_probes(
            mongo,
            parts.pids()["mongodb"],
            args.mongo_ops,
            args.mongo_update_ops,
            args.mongo_concurrency,
        )
        return Outcome(seed_rate, loads, succeeded, probes)


async def _both_loads(
    webhook: servers.ChildProcess,
    bare: servers.ChildProcess,
    watcher: harness.BusWatcher,
    parts: harness.Parts,
    args: argparse.Namespace,
) -> list[Load]:
    targets = [
        Target("webhook", WEBHOOK, f"http://127.0.0.1:{webhook.port}{PATH}", watcher),
        Target("bare aiohttp", BARE, f"http://127.0.0.1:{bare.port}{PATH}", None),
    ]
    connector = aiohttp.TCPConnector(limit=args.senders)
    async with aiohttp.ClientSession(connector=connector) as http:
        loads = []
        for target in targets:
            print(f"delivering {args.payments} events to {target.label} ...", flush=True)
            loads.append(await load(http, target, parts, args))
        return loads


# --- printing ----------------------------------------------------------------------------


def print_outcome(outcome: Outcome, args: argparse.Namespace) -> None:
    print(
        f"seeding (reserve + attach_session, {args.senders} concurrent): "
        f"{outcome.seed_per_s:.0f} payments/s"
    )
    print(f"stored: {outcome.succeeded}/{args.payments} payments succeeded")
    print()
    headers = [
        "server", "deliveries", "deliveries/s", "p50 ms", "p99 ms", "server CPU ms/delivery",
        "less idle", "outcomes",
    ]  # fmt: skip
    harness.print_table(headers, [_row(load) for load in outcome.loads])
    print()
    print("CPU per delivery by process (ms, user+system from the OS, over the measured window):")
    harness.print_table(
        ["server", *CPU_ROLES, "other (not ours)", "machine busy"],
        [_cpu_row(load) for load in outcome.loads],
    )
    print()
    harness.print_probes(outcome.probes, args.mongo_concurrency)


def _row(load: Load) -> list[str]:
    outcomes = ", ".join(f"{name}: {count}" for name, count in sorted(load.outcomes.items()))
    return [
        load.label,
        str(load.count),
        f"{load.rate:.1f}",
        f"{harness.percentile(load.latencies_s, 0.50) * 1000:.1f}",
        f"{harness.percentile(load.latencies_s, 0.99) * 1000:.1f}",
        f"{load.cpu_ms:.2f}",
        f"{load.cpu_ms_less_idle:.2f}",
        outcomes,
    ]


def _cpu_row(load: Load) -> list[str]:
    cpu = load.cpu
    other = (cpu.machine_busy - sum(cpu.per_process.values())) * 1000 / load.count
    cells = [f"{cpu.ms_per(role, load.count):.2f}" for role in CPU_ROLES]
    return [load.label, *cells, f"{other:.2f}", f"{cpu.machine_busy_fraction * 100:.0f}%"]


def print_verdict(outcome: Outcome) -> None:
    webhook, bare = outcome.loads
    ok = webhook.cpu_ms <= TARGET_CPU_MS
    print(
        f"webhook CPU {webhook.cpu_ms:.2f} ms per verified, stored delivery "
        f"(target <= {TARGET_CPU_MS} ms): {harness.verdict(ok)}"
    )
    print(
        f"  of which above the bare aiohttp floor ({bare.cpu_ms:.2f} ms): "
        f"{webhook.cpu_ms - bare.cpu_ms:.2f} ms"
    )


async def main() -> None:
    args = parse_args()
    logs = harness.logs_dir("webhook")
    harness.print_preamble("webhook throughput")
    print(f"{args.senders} concurrent senders; logs in {logs}")
    outcome = await run(args, logs)
    print()
    print_outcome(outcome, args)
    print()
    print_verdict(outcome)


if __name__ == "__main__":
    asyncio.run(main())
