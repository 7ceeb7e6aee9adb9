"""Stripe's rate limit shared by three consumers: the code with the shared budget against the
code before it, in the same run, each with fresh parts.

The simulator answers in --latency-ms and allows --limit requests a second (as Stripe does,
429 beyond). Two loads:
- a burst: --burst rides produced at once. Session creates per second achieved (rides over
  produce .. last link), the share of calls answered 429, and the time until the last rider
  has a link;
- a steady load below the limit: --rate rides a second for --seconds. p50 / p99 from produce
  to the `payment_url` on the rider's WebSocket (a notifier and one socket per user).

The code before is the parent of the commit that added shared/stripe_budget.py, unpacked with
`git archive` into a temporary folder and run from there (--before REV to choose another).

    .venv/bin/python bench/stripe_rate_limit.py [--burst 300] [--rate 15] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from aiokafka import AIOKafkaProducer

from bench import harness
from devstack import servers

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "bench"
CONSUMERS = 3
USERS = 30
TARGET_RATE_SHARE = 0.95
TARGET_REFUSED = 0.01
TARGET_P99_EXTRA_MS = 150


@dataclass(frozen=True, slots=True)
class Code:
    label: str
    tree: Path  # where the services are run from


@dataclass(frozen=True, slots=True)
class BurstResult:
    code: str
    rides: int
    seconds_to_last_link: float
    accepted: int
    refused: int

    @property
    def creates_per_s(self) -> float:
        return self.rides / self.seconds_to_last_link

    @property
    def refused_share(self) -> float:
        return self.refused / max(1, self.accepted + self.refused)


@dataclass(frozen=True, slots=True)
class SteadyResult:
    code: str
    rides: int
    linked: int
    p50_ms: float
    p99_ms: float
    refused: int
    budget_wait: BudgetWait | None  # None: the code has no budget


@dataclass(frozen=True, slots=True)
class BudgetWait:
    """Riders' waits for a turn, from the consumers' histogram (summed over the three)."""

    calls: int
    mean_ms: float
    within_50_ms: float  # share of calls
    within_100_ms: float


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--limit", type=float, default=25, help="the simulator's rate limit, requests/s")
    add("--latency-ms", type=int, default=100, help="the simulator's latency per call")
    add("--burst", type=int, default=300, help="rides produced at once")
    add("--rate", type=float, default=15, help="rides a second in the steady load")
    add("--seconds", type=float, default=60, help="length of the steady load")
    add("--before", help="the code to compare with (default: before the shared budget)")
    add("--timeout-s", type=float, default=300, help="give up a load after this long")
    add(
        "--fetch-wait-ms",
        type=int,
        default=100,
        help="the consumers' Kafka fetch max wait (0: Faust's 1,500 ms, which tansu holds "
        "in full; see bench/short_fetch_consumer.py)",
    )
    return parser.parse_args()


def code_before(rev: str | None, into: Path) -> Code:
    if rev is None:
        added = _git("log", "--diff-filter=A", "--format=%H", "--", "shared/stripe_budget.py")
        rev = f"{added.splitlines()[-1]}^"
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return Code(f"before ({_git('rev-parse', '--short', rev)})", into)


def _git(*args: str) -> str:
    command = ["git", "-C", str(ROOT), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


class Stack:
    """Fresh parts for one load, three consumers and a notifier from `code`."""

    def __init__(self, parts: harness.Parts, code: Code, args: argparse.Namespace) -> None:
        self.parts = parts
        self.code = code
        self.args = args
        self.kafka = self.mongo = self.redis = self.stripe = ""
        self.notifier_port = 0
        self.consumer_ports: list[int] = []

    async def start(self) -> None:
        self.kafka = self.parts.kafka()
        await servers.ensure_topics(self.kafka)
        self.mongo, self.redis = self.parts.mongo(), self.parts.redis()
        self.stripe = self._limited_stripe()
        consumers = [self._consumer(f"consumer-{n}") for n in range(CONSUMERS)]
        notifier = self._service("notifier", [sys.executable, "-m", "services.notifier"])
        self.notifier_port = notifier.port
        self.consumer_ports = [consumer.port for consumer in consumers]
        for process in [*consumers, notifier]:
            await harness.wait_ready(process)

    async def budget_wait(self) -> BudgetWait | None:
        samples: dict[str, float] = {}
        async with aiohttp.ClientSession() as http:
            for port in self.consumer_ports:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    for line in (await response.text()).splitlines():
                        if line.startswith("payments_stripe_budget_wait_seconds_") and (
                            'priority="rider"' in line
                        ):
                            name, value = line.rsplit(" ", 1)
                            samples[name] = samples.get(name, 0.0) + float(value)
        prefix = "payments_stripe_budget_wait_seconds"
        calls = samples.get(f'{prefix}_count{{priority="rider"}}', 0.0)
        if not calls:
            return None
        total_s = samples[f'{prefix}_sum{{priority="rider"}}']

        def within(le: str) -> float:
            return samples[f'{prefix}_bucket{{le="{le}",priority="rider"}}'] / calls

        return BudgetWait(int(calls), total_s * 1000 / calls, within("0.05"), within("0.1"))

    async def rate_limit_counts(self) -> tuple[int, int]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.stripe}/_sim/rate_limits") as response:
                body = await response.json()
        return body["accepted"], body["refused"]

    def _limited_stripe(self) -> str:
        port = servers.free_port()
        args = ["--api-key", harness.STRIPE_KEY, "--port", str(port)]
        args += ["--latency-ms", str(self.args.latency_ms), "--rate-limit", str(self.args.limit)]
        args += ["--log-level", "WARNING"]
        simulator = servers.python_module(
            "stripe-sim", "devstack.stripe_simulator", port, self.parts.logs, {}, args
        )
        self.parts.start("stripe-sim", simulator)
        return f"http://127.0.0.1:{port}"

    def _consumer(self, role: str) -> servers.ChildProcess:
        if self.args.fetch_wait_ms == 0:
            return self._service(role, [sys.executable, "-m", "services.consumer"])
        shim = str(ROOT / "bench" / "short_fetch_consumer.py")
        env = {"BENCH_FETCH_MAX_WAIT_MS": str(self.args.fetch_wait_ms)}
        return self._service(role, [sys.executable, shim], env)

    def _service(
        self, role: str, command: list[str], extra_env: dict[str, str] | None = None
    ) -> servers.ChildProcess:
        port = servers.free_port()
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka,
            "MONGODB_URI": self.mongo,
            "MONGODB_DATABASE": DATABASE,
            "REDIS_URL": self.redis,
            "STRIPE_SECRET_KEY": harness.STRIPE_KEY,
            "STRIPE_API_BASE": self.stripe,
            "STRIPE_MAX_REQUESTS_PER_S": str(self.args.limit),
            "STRIPE_BUDGET_PROCESSES": str(CONSUMERS),
            "KAFKA_SESSION_TIMEOUT_S": "4",
            "LOG_LEVEL": "WARNING",
            "PORT": str(port),
            "PYTHONPATH": str(self.code.tree),
            "PYTHONUNBUFFERED": "1",
            "PAYMENTS_ENVIRONMENT": "local",  # its notifier asks no token
            **(extra_env or {}),
        }
        log = self.parts.logs / f"{self.code.tree.name}-{role}-{port}.log"
        process = servers.ChildProcess(role, command, port, log, env=env, cwd=self.code.tree)
        self.parts.start(role, process)
        return process


class Riders:
    """One WebSocket per user; notes when each ride's `payment_url` arrives."""

    def __init__(self, notifier_port: int) -> None:
        self._url = f"ws://127.0.0.1:{notifier_port}/payment-ws"
        self._http = aiohttp.ClientSession()
        self._tasks: list[asyncio.Task[None]] = []
        self.linked: dict[str, float] = {}
        self._wanted = 0
        self._enough = asyncio.Event()

    async def connect(self, users: list[str]) -> None:
        for user in users:
            socket = await self._http.ws_connect(f"{self._url}?userId={user}")
            await socket.receive_json()  # registration_success
            self._tasks.append(asyncio.create_task(self._listen(socket)))

    async def wait_for(self, rides: int, timeout_s: float) -> None:
        """Until `rides` links arrived, or the timeout (the results say how many did)."""
        self._wanted = rides
        self._enough.clear()
        if len(self.linked) < rides:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._enough.wait(), timeout_s)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.close()

    async def _listen(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in socket:
            message = json.loads(frame.data)
            if message.get("type") == "payment_url":
                self.linked.setdefault(message["rideId"], time.perf_counter())
                if len(self.linked) >= self._wanted:
                    self._enough.set()


def ride_event(ride: str, user: str) -> tuple[bytes, bytes]:
    value = {"rideId": ride, "userId": user, "fare": "25.50"}
    return user.encode(), json.dumps(value).encode()


async def burst(stack: Stack, args: argparse.Namespace) -> BurstResult:
    users = [f"burst-user-{n}" for n in range(USERS)]
    riders = Riders(stack.notifier_port)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka, acks="all", linger_ms=5)
    await riders.connect(users)
    await producer.start()
    try:
        started = time.perf_counter()
        sent = []
        for n in range(args.burst):
            key, value = ride_event(f"burst-{n:05d}", users[n % USERS])
            sent.append(await producer.send("payment-events", value, key=key))
        await asyncio.gather(*sent)
        await riders.wait_for(args.burst, args.timeout_s)
    finally:
        await producer.stop()
        await riders.close()
    last = max(riders.linked.values(), default=time.perf_counter())
    accepted, refused = await stack.rate_limit_counts()
    return BurstResult(stack.code.label, len(riders.linked), last - started, accepted, refused)


async def steady(stack: Stack, args: argparse.Namespace) -> SteadyResult:
    users = [f"steady-user-{n}" for n in range(USERS)]
    riders = Riders(stack.notifier_port)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka, acks="all", linger_ms=0)
    await riders.connect(users)
    await producer.start()
    produced: dict[str, float] = {}
    try:
        rides = int(args.rate * args.seconds)
        started = time.perf_counter()
        for n in range(rides):
            await asyncio.sleep(max(0.0, started + n / args.rate - time.perf_counter()))
            ride = f"steady-{n:05d}"
            key, value = ride_event(ride, users[n % USERS])
            produced[ride] = time.perf_counter()
            await producer.send("payment-events", value, key=key)
        await riders.wait_for(rides, args.timeout_s)
    finally:
        await producer.stop()
        await riders.close()
    latencies = [(riders.linked[r] - at) * 1000 for r, at in produced.items() if r in riders.linked]
    _, refused = await stack.rate_limit_counts()
    return SteadyResult(
        stack.code.label,
        len(produced),
        len(latencies),
        harness.percentile(latencies, 0.50),
        harness.percentile(latencies, 0.99),
        refused,
        await stack.budget_wait(),
    )


async def measure(
    code: Code, args: argparse.Namespace, logs: Path
) -> tuple[BurstResult, SteadyResult]:
    with harness.running_parts(logs) as parts:
        stack = Stack(parts, code, args)
        await stack.start()
        burst_result = await burst(stack, args)
    print(f"  burst: {burst_result.creates_per_s:.1f} creates/s", flush=True)
    with harness.running_parts(logs) as parts:
        stack = Stack(parts, code, args)
        await stack.start()
        steady_result = await steady(stack, args)
    print(f"  steady: p99 {steady_result.p99_ms:.0f} ms", flush=True)
    return burst_result, steady_result


def print_results(
    bursts: list[BurstResult], steadies: list[SteadyResult], args: argparse.Namespace
) -> None:
    print(f"\nBurst: {args.burst} rides at once, limit {args.limit:g}/s, {args.latency_ms} ms")
    harness.print_table(
        ["code", "linked", "creates/s", "% of limit", "429 share", "429s", "last link s"],
        [
            [
                r.code,
                f"{r.rides}/{args.burst}",
                f"{r.creates_per_s:.1f}",
                f"{r.creates_per_s * 100 / args.limit:.0f}%",
                f"{r.refused_share * 100:.1f}%",
                str(r.refused),
                f"{r.seconds_to_last_link:.1f}",
            ]
            for r in bursts
        ],
    )
    fetch = f"Kafka fetch wait {args.fetch_wait_ms or 1500} ms"
    print(
        f"\nSteady: {args.rate:g} rides/s for {args.seconds:g} s, produce -> WebSocket link "
        f"({fetch})"
    )
    harness.print_table(
        ["code", "linked", "p50 ms", "p99 ms", "429s", "turn wait: mean ms", "<=50 ms", "<=100 ms"],
        [
            [
                r.code,
                f"{r.linked}/{r.rides}",
                f"{r.p50_ms:.0f}",
                f"{r.p99_ms:.0f}",
                str(r.refused),
                *(_wait_cells(r.budget_wait)),
            ]
            for r in steadies
        ],
    )
    ours_burst, ours_steady = bursts[-1], steadies[-1]
    print()
    rate_ok = ours_burst.creates_per_s >= TARGET_RATE_SHARE * args.limit
    print(f"creates/s >= {TARGET_RATE_SHARE:.0%} of the limit: {harness.verdict(rate_ok)}")
    refused_ok = ours_burst.refused_share < TARGET_REFUSED
    print(f"429 share < {TARGET_REFUSED:.0%}: {harness.verdict(refused_ok)}")
    p99_target = args.latency_ms + TARGET_P99_EXTRA_MS
    p99_ok = ours_steady.p99_ms <= p99_target
    print(f"steady p99 <= {p99_target} ms: {harness.verdict(p99_ok)}")


def _wait_cells(wait: BudgetWait | None) -> list[str]:
    if wait is None:
        return ["-", "-", "-"]
    return [f"{wait.mean_ms:.1f}", f"{wait.within_50_ms:.1%}", f"{wait.within_100_ms:.1%}"]


async def main() -> None:
    args = parse_args()
    logs = harness.logs_dir("stripe-rate-limit")
    harness.print_preamble("Stripe rate limit, three consumers")
    print(f"logs in {logs}")
    bursts: list[BurstResult] = []
    steadies: list[SteadyResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-before-") as before_tree:
        for code in (code_before(args.before, Path(before_tree)), Code("this change", ROOT)):
            print(f"running {code.label} ...", flush=True)
            burst_result, steady_result = await measure(code, args, logs)
            bursts.append(burst_result)
            steadies.append(steady_result)
    print_results(bursts, steadies, args)


if __name__ == "__main__":
    asyncio.run(main())
