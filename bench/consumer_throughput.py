"""Consumer throughput end to end: ride events in Kafka to stored records and `payment_url`
notifications, with the Stripe simulator adding latency to every call.

Each configuration (sequential: CONSUMER_CONCURRENCY=1, then each --concurrency) gets fresh
parts: its own tansu, SecantusDB, Redis, Stripe simulator and consumer subprocess. After
/readyz and a warm-up batch, all events are produced in one batch; an event is done when its
`payment_url` is PUBLISHed on the bus (the last step of the consumer's use case). The rate is
events / (first produce .. last done). CPU is each process's user+system time from the OS
over that window, divided by the events. After the last configuration, MongoDB's own write
rates are measured from this process against the same SecantusDB.

    .venv/bin/python bench/consumer_throughput.py [--concurrency 32 64 128] [--events 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaProducer

from bench import harness, stacks
from devstack import servers

DATABASE = "bench"
CONSUMER = "consumer"
PREFIX = "run-"
TARGET_SPEEDUP = 10.0
TARGET_CPU_MS = 2.0
CPU_ROLES = [CONSUMER, "mongodb", "stripe-sim", "kafka", "redis", harness.BENCH]


@dataclass(frozen=True, slots=True)
class Config:
    label: str
    concurrency: int
    events: int


@dataclass(frozen=True, slots=True)
class Result:
    config: Config
    produce_to_done_s: float
    first_to_last_done_s: float
    cpu: harness.CpuUsage
    idle_cpu_per_s: float
    stored: int

    @property
    def rate(self) -> float:
        return self.config.events / self.produce_to_done_s

    @property
    def cpu_ms(self) -> float:
        return self.cpu.ms_per(CONSUMER, self.config.events)

    @property
    def cpu_ms_less_idle(self) -> float:
        busy = self.cpu.per_process[CONSUMER] - self.idle_cpu_per_s * self.cpu.wall_s
        return busy * 1000 / self.config.events


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--events", type=int, default=2000, help="events per concurrent run (default 2000)")
    add("--sequential-events", type=int, default=100, help="events in the sequential run")
    add("--concurrency", type=int, nargs="+", default=[32], help="CONSUMER_CONCURRENCY values")
    add("--skip-sequential", action="store_true", help="run only the concurrent configurations")
    add("--latency-ms", type=int, default=100, help="Stripe simulator latency per call")
    add("--warmup", type=int, default=20, help="events handled before measuring")
    add("--idle-s", type=float, default=3.0, help="seconds to measure the idle consumer's CPU")
    add("--mongo-ops", type=int, default=2000, help="writes per MongoDB probe")
    add("--mongo-update-ops", type=int, default=200, help="find_one_and_update probe writes")
    add("--mongo-concurrency", type=int, default=50, help="concurrent writes in the probes")
    add("--log-level", default="INFO", help="the consumer's LOG_LEVEL (default INFO)")
    add("--timeout-s", type=float, default=600, help="give up a run after this long")
    add("--py-spy", metavar="PATH", help="sample the consumer with this py-spy while measuring")
    return parser.parse_args()


def configurations(args: argparse.Namespace) -> list[Config]:
    runs = [] if args.skip_sequential else [Config("sequential", 1, args.sequential_events)]
    runs += [Config(f"concurrent {n}", n, args.events) for n in args.concurrency]
    return runs


def consumer_env(
    kafka: str, mongo: str, redis_url: str, stripe: str, concurrency: int, log_level: str
) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "MONGODB_URI": mongo,
        "MONGODB_DATABASE": DATABASE,
        "REDIS_URL": redis_url,
        "STRIPE_SECRET_KEY": harness.STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": harness.WEBHOOK_SECRET,
        "STRIPE_API_BASE": stripe,
        "KAFKA_SESSION_TIMEOUT_S": "4",
        "CONSUMER_CONCURRENCY": str(concurrency),
        "LOG_LEVEL": log_level,
    }


def ride_events(prefix: str, count: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: one ride each, keyed by user as the ride service does."""
    events = []
    for index in range(count):
        user = f"{prefix}user-{index % 500}"
        value = {"rideId": f"{prefix}{index:06d}", "userId": user, "fare": "25.50"}
        events.append((user.encode(), json.dumps(value).encode()))
    return events


async def produce(producer: AIOKafkaProducer, events: list[tuple[bytes, bytes]]) -> None:
    sent = [await producer.send("payment-events", value, key=key) for key, value in events]
    await asyncio.gather(*sent)


async def count_with_session(mongo: str, prefix: str) -> int:
    selector = {"rideId": {"$regex": f"^{prefix}"}, "stripeSessionId": {"$ne": None}}
    return await harness.count_documents(mongo, DATABASE, "payments", selector)


async def handle_batch(
    producer: AIOKafkaProducer,
    watcher: harness.BusWatcher,
    prefix: str,
    count: int,
    timeout_s: float,
) -> float:
    """Produce `count` events in one batch, wait until all are announced; the start time."""
    started = time.perf_counter()
    await produce(producer, ride_events(prefix, count))
    await watcher.wait_for(prefix, count, timeout_s)
    return started


async def measure(
    parts: harness.Parts,
    producer: AIOKafkaProducer,
    watcher: harness.BusWatcher,
    config: Config,
    args: argparse.Namespace,
) -> tuple[float, float, harness.CpuUsage]:
    """(produce..last done, first done..last done, CPU) for the configuration's events."""
    pids = parts.pids()
    sampler = _sampler(args, pids[CONSUMER], parts.logs / f"py-spy-c{config.concurrency}.txt")
    before = harness.sample(pids)
    started = await handle_batch(producer, watcher, PREFIX, config.events, args.timeout_s)
    cpu = harness.usage(before, harness.sample(pids))
    if sampler is not None:
        sampler.stop()
        stacks.summarise(sampler.output)
    done = watcher.times(PREFIX)
    return done[-1] - started, done[-1] - done[0], cpu


def _sampler(args: argparse.Namespace, pid: int, output: Path) -> stacks.Sampler | None:
    return stacks.start(args.py_spy, pid, output) if args.py_spy else None


async def run(
    config: Config, args: argparse.Namespace, logs: Path, probe: bool
) -> tuple[Result, list[harness.Probe]]:
    with harness.running_parts(logs) as parts:
        kafka = parts.kafka()
        await servers.ensure_topics(kafka)
        mongo, redis_url, stripe = parts.mongo(), parts.redis(), parts.stripe(args.latency_ms)
        env = consumer_env(kafka, mongo, redis_url, stripe, config.concurrency, args.log_level)
        consumer = parts.service(CONSUMER, "services.consumer", env)
        await harness.wait_ready(consumer)
        watcher = harness.BusWatcher(redis_url, "payment_url")
        producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
        await watcher.start()
        await producer.start()
        try:
            await handle_batch(producer, watcher, "warm-", args.warmup, args.timeout_s)
            idle = await harness.idle_cpu_rate(parts.pids()[CONSUMER], args.idle_s)
            total_s, spread_s, cpu = await measure(parts, producer, watcher, config, args)
        finally:
            await producer.stop()
            await watcher.close()
        parts.stop(CONSUMER)  # the probes measure MongoDB alone
        stored = await count_with_session(mongo, PREFIX)
        result = Result(config, total_s, spread_s, cpu, idle, stored)
        probes = await _probes(mongo, parts.pids()["mongodb"], args) if probe else []
        return result, probes


async def _probes(mongo: str, mongod_pid: int, args: argparse.Namespace) -> list[harness.Probe]:
    return await harness.mongo_probes(
        mongo, mongod_pid, args.mongo_ops, args.mongo_update_ops, args.mongo_concurrency
    )


def print_results(results: list[Result]) -> None:
    headers = [
        "configuration", "events", "events/s", "events/s 1st..last", "consumer CPU ms/ev",
        "less idle", "idle CPU %", "stored",
    ]  # fmt: skip
    harness.print_table(headers, [_row(result) for result in results])
    print()
    print("CPU per event by process (ms, user+system from the OS, over the measured window):")
    harness.print_table(
        ["configuration", *CPU_ROLES, "other (not ours)", "machine busy"],
        [_cpu_row(result) for result in results],
    )


def _row(result: Result) -> list[str]:
    events = result.config.events
    spread_rate = (events - 1) / result.first_to_last_done_s if events > 1 else 0.0
    return [
        result.config.label,
        str(events),
        f"{result.rate:.1f}",
        f"{spread_rate:.1f}",
        f"{result.cpu_ms:.2f}",
        f"{result.cpu_ms_less_idle:.2f}",
        f"{result.idle_cpu_per_s * 100:.1f}",
        f"{result.stored}/{events}",
    ]


def _cpu_row(result: Result) -> list[str]:
    events, cpu = result.config.events, result.cpu
    other = (cpu.machine_busy - sum(cpu.per_process.values())) * 1000 / events
    cells = [f"{cpu.ms_per(role, events):.2f}" for role in CPU_ROLES]
    busy = f"{cpu.machine_busy_fraction * 100:.0f}%"
    return [result.config.label, *cells, f"{other:.2f}", busy]


def print_verdicts(results: list[Result]) -> None:
    sequential = next((r for r in results if r.config.concurrency == 1), None)
    for result in results:
        if result.config.concurrency == 1:
            continue
        cpu_ok = result.cpu_ms <= TARGET_CPU_MS
        print(
            f"{result.config.label}: consumer CPU {result.cpu_ms:.2f} ms/event "
            f"(target <= {TARGET_CPU_MS} ms): {harness.verdict(cpu_ok)}"
        )
        if sequential is not None:
            speedup = result.rate / sequential.rate
            print(
                f"{result.config.label}: speedup {speedup:.1f}x over sequential "
                f"(target >= {TARGET_SPEEDUP:.0f}x): {harness.verdict(speedup >= TARGET_SPEEDUP)}"
            )


async def main() -> None:
    args = parse_args()
    logs = harness.logs_dir("consumer")
    harness.print_preamble("consumer throughput")
    print(f"Stripe latency {args.latency_ms} ms per call; logs in {logs}")
    results: list[Result] = []
    probes: list[harness.Probe] = []
    runs = configurations(args)
    for index, config in enumerate(runs):
        print(f"running {config.label}: {config.events} events ...", flush=True)
        result, probes_here = await run(config, args, logs, probe=index == len(runs) - 1)
        print(f"  {result.rate:.1f} events/s, consumer {result.cpu_ms:.2f} ms CPU/event")
        results.append(result)
        probes += probes_here
    print()
    print_results(results)
    print()
    harness.print_probes(probes, args.mongo_concurrency)
    print()
    print_verdicts(results)


if __name__ == "__main__":
    asyncio.run(main())
