"""What the benchmarks share: the parts on free ports, CPU meters read from the OS, a worker
pool, MongoDB's own write rates, a watcher on the notification bus, and printing.

Everything here runs against child processes on this machine only (127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]
import redis.asyncio as redis
from pymongo import AsyncMongoClient, ReturnDocument

from devstack import servers

STRIPE_KEY = "sk_test_bench"
WEBHOOK_SECRET = "whsec_bench"
PROBE_DATABASE = "bench-probe"
BENCH = "bench"  # the benchmark process itself, in CPU tables

Document = dict[str, Any]


# --- the parts ---------------------------------------------------------------------------


class Parts:
    """The child processes of one measurement, by role; stopped in reverse start order."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._started: dict[str, servers.ChildProcess] = {}

    def start(self, role: str, part: servers.ChildProcess, timeout_s: float = 60) -> None:
        self._started[role] = part  # first: a part that fails to listen is still stopped
        part.start(timeout_s)

    def pids(self) -> dict[str, int]:
        found = {role: p.process.pid for role, p in self._started.items() if p.process}
        return {**found, BENCH: os.getpid()}

    def stop(self, role: str) -> None:
        self._started.pop(role).stop()

    def stop_all(self) -> None:
        for part in reversed(list(self._started.values())):
            part.stop()
        self._started.clear()

    def kafka(self) -> str:
        port = servers.free_port()
        self.start("kafka", servers.tansu(port, self.logs))
        return f"127.0.0.1:{port}"

    def mongo(self) -> str:
        port = servers.free_port()
        self.start("mongodb", servers.secantus(port, self.logs / f"mongo-{port}", self.logs))
        return servers.mongodb_uri(port)

    def redis(self) -> str:
        port = servers.free_port()
        self.start("redis", servers.redis(port, None, self.logs))
        return f"redis://127.0.0.1:{port}/0"

    def stripe(self, latency_ms: int) -> str:
        port = servers.free_port()
        args = ["--api-key", STRIPE_KEY, "--host", "127.0.0.1", "--port", str(port)]
        args += ["--webhook-secret", WEBHOOK_SECRET, "--latency-ms", str(latency_ms)]
        args += ["--log-level", "WARNING"]
        simulator = servers.python_module(
            "stripe-sim", "devstack.stripe_simulator", port, self.logs, {}, args
        )
        self.start("stripe-sim", simulator)
        return f"http://127.0.0.1:{port}"

    def service(
        self, role: str, module: str, env: Mapping[str, str], args: list[str] | None = None
    ) -> servers.ChildProcess:
        """One of our processes (or a bench helper) with PORT set to a free port."""
        port = servers.free_port()
        env = {**env, "PORT": str(port)}
        process = servers.python_module(role, module, port, self.logs, env, args)
        self.start(role, process)
        return process


@contextlib.contextmanager
def running_parts(logs: Path) -> Iterator[Parts]:
    parts = Parts(logs)
    try:
        yield parts
    finally:
        parts.stop_all()


def logs_dir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))


async def wait_ready(
    process: servers.ChildProcess, timeout_s: float = 90, *, port: int | None = None
) -> None:
    """Poll the process's /readyz (on `port` when not its own: the webhook's internal port)
    until it answers 200."""
    url = f"http://127.0.0.1:{port or process.port}/readyz"
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while not await _answers_ok(http, url):
            if not process.running:
                raise RuntimeError(f"{process.name} exited: {process.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{process.name} not ready within {timeout_s} s")
            await asyncio.sleep(0.2)


async def _answers_ok(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


# --- CPU from the OS ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuSample:
    at: float
    per_process: dict[str, float]
    machine_busy: float


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """CPU seconds (user + system) spent between two samples, per process and machine-wide."""

    wall_s: float
    per_process: dict[str, float]
    machine_busy: float

    @property
    def machine_busy_fraction(self) -> float:
        return self.machine_busy / (self.wall_s * (psutil.cpu_count() or 1))

    def ms_per(self, role: str, count: int) -> float:
        return self.per_process[role] * 1000 / count


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    # Linux counts guest time inside user time as well; idle and iowait are not busy.
    not_busy = ("idle", "iowait", "guest", "guest_nice")
    return float(sum(times) - sum(getattr(times, name, 0.0) for name in not_busy))


def sample(pids: Mapping[str, int]) -> CpuSample:
    per_process = {role: cpu_seconds(pid) for role, pid in pids.items()}
    return CpuSample(time.perf_counter(), per_process, _machine_busy_seconds())


def usage(before: CpuSample, after: CpuSample) -> CpuUsage:
    per_process = {
        role: after.per_process[role] - before.per_process[role] for role in before.per_process
    }
    return CpuUsage(after.at - before.at, per_process, after.machine_busy - before.machine_busy)


async def idle_cpu_rate(pid: int, seconds: float) -> float:
    """CPU seconds per wall second the process spends doing nothing asked of it."""
    if seconds <= 0:
        return 0.0
    start = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - start) / seconds


async def wait_quiet(
    pid: int, below: float = 0.05, interval_s: float = 0.5, timeout_s: float = 60
) -> None:
    """Wait until the process uses less than `below` of a core over `interval_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await idle_cpu_rate(pid, interval_s) < below:
            return


# --- load --------------------------------------------------------------------------------


async def run_pool(
    count: int, concurrency: int, operation: Callable[[int], Awaitable[None]]
) -> float:
    """Run operation(0) .. operation(count - 1) on `concurrency` workers; elapsed seconds."""
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:  # one shared iterator: each index is taken once
            await operation(index)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# --- MongoDB's own rates -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """MongoDB alone: one kind of write, its rate, and the server's CPU per write."""

    name: str
    ops: int
    per_s: float
    mongod_ms_per_op: float
    client_ms_per_op: float  # this process: PyMongo's async client (and the pool's loop)


def _probe_client(uri: str) -> AsyncMongoClient[Document]:
    return AsyncMongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)


async def _probe(
    name: str, ops: int, concurrency: int, mongod_pid: int, operation: Callable[[int], Any]
) -> Probe:
    pids = {"mongodb": mongod_pid, BENCH: os.getpid()}
    before = sample(pids)
    elapsed = await run_pool(ops, concurrency, operation)
    cpu = usage(before, sample(pids))
    return Probe(name, ops, ops / elapsed, cpu.ms_per("mongodb", ops), cpu.ms_per(BENCH, ops))


async def mongo_probes(
    uri: str, mongod_pid: int, ops: int, update_ops: int, concurrency: int
) -> list[Probe]:
    """Three shapes of write from a separate client, each `concurrency` at a time:
    upserts of new keys (PaymentStore.reserve), conditional `update_one` on existing
    documents (a status change's condition), and `find_one_and_update` on existing
    documents (PaymentStore.attach_session and .apply)."""
    client = _probe_client(uri)
    try:
        collection = client[PROBE_DATABASE]["payments"]
        await collection.create_index("key", unique=True)
        now = datetime.now(UTC)

        async def upsert(index: int) -> None:
            fresh = {"key": f"k{index}", "status": "pending", "version": 1, "at": now}
            await collection.find_one_and_update(
                {"key": fresh["key"]},
                {"$setOnInsert": fresh},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )

        async def update_one(index: int) -> None:
            await collection.update_one(
                {"key": f"k{index}", "status": {"$in": ["pending", "failed"]}},
                {"$set": {"status": "succeeded"}, "$inc": {"version": 1}},
            )

        async def find_and_modify(index: int) -> None:
            await collection.find_one_and_update(
                {"key": f"k{index}", "version": {"$gte": 1}},
                {"$set": {"touched": True}, "$inc": {"version": 1}},
                return_document=ReturnDocument.AFTER,
            )

        return [
            await _probe("upsert, new key", ops, concurrency, mongod_pid, upsert),
            await _probe("update_one, conditional", ops, concurrency, mongod_pid, update_one),
            await _probe(
                "find_one_and_update, existing doc",
                min(update_ops, ops),
                concurrency,
                mongod_pid,
                find_and_modify,
            ),
        ]
    finally:
        await client.close()


async def count_documents(uri: str, database: str, collection: str, selector: Document) -> int:
    client = _probe_client(uri)
    try:
        return await client[database][collection].count_documents(selector)
    finally:
        await client.close()


def print_probes(probes: Sequence[Probe], concurrency: int) -> None:
    size = probes[0].ops if probes else 0
    print(
        f"MongoDB (SecantusDB) alone: {concurrency} concurrent writes from this process "
        f"into a collection of {size} documents:"
    )
    rows = [_probe_row(probe) for probe in probes]
    print_table(["write", "ops", "ops/s", "mongod CPU ms/op", "client CPU ms/op"], rows)


def _probe_row(probe: Probe) -> list[str]:
    return [
        probe.name,
        str(probe.ops),
        f"{probe.per_s:.0f}",
        f"{probe.mongod_ms_per_op:.2f}",
        f"{probe.client_ms_per_op:.2f}",
    ]


# --- the notification bus ----------------------------------------------------------------


class BusWatcher:
    """Notes when each ride's message of one type is PUBLISHed on the bus (Redis pub/sub)."""

    def __init__(self, redis_url: str, message_type: str) -> None:
        self._client = redis.Redis.from_url(redis_url, socket_timeout=None)
        self._pubsub = self._client.pubsub()
        self._type = message_type
        self._seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._pubsub.psubscribe("payments:*:live")
        self._task = asyncio.create_task(self._listen())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._client.aclose()

    def times(self, prefix: str) -> list[float]:
        return sorted(at for ride, at in self._seen.items() if ride.startswith(prefix))

    async def wait_for(self, prefix: str, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.times(prefix)) < count:
            if time.monotonic() > deadline:
                seen = len(self.times(prefix))
                raise TimeoutError(f"only {seen} of {count} '{self._type}' seen in {timeout_s} s")
            await asyncio.sleep(0.02)

    async def _listen(self) -> None:
        while True:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                self._note(message["data"])

    def _note(self, data: bytes) -> None:
        body = json.loads(data)["message"]
        if body.get("type") == self._type:
            self._seen.setdefault(str(body["rideId"]), time.perf_counter())


# --- printing ----------------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in (headers, ["-" * width for width in widths], *rows):
        print("  ".join(str(cell).rjust(width) for cell, width in zip(line, widths, strict=True)))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def background_load(seconds: float = 2.0) -> float:
    """The machine's busy fraction before we start anything: other work skews rates."""
    before = _machine_busy_seconds()
    time.sleep(seconds)
    return (_machine_busy_seconds() - before) / (seconds * (psutil.cpu_count() or 1))


def code_state() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = _git(root, "rev-parse", "--short", "HEAD")
        changed = _git(root, "status", "--porcelain").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} + {len(changed)} uncommitted paths" if changed else head


def _git(root: Path, *args: str) -> str:
    command = ["git", "-C", str(root), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def print_preamble(title: str) -> None:
    print(title)
    print_machine()
    print(f"code: {code_state()}")
    load = background_load()
    print(f"machine busy before start (not ours): {load * 100:.0f}%", flush=True)
    if load > 0.1:
        print("  warning: other work is running; rates will be lower than on a quiet machine")


def print_machine() -> None:
    memory_gib = psutil.virtual_memory().total / 2**30
    print(
        f"machine: {psutil.cpu_count()} CPUs, {memory_gib:.0f} GiB, "
        f"Python {platform.python_version()} ({sys.executable}), "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}"
    )
