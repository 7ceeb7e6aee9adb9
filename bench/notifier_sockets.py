"""Notifier sockets: memory per registered socket, connect-and-register rate, and latency from
a bus publish to the rider's socket, on one notifier process, beside a bare aiohttp WebSocket
server (bench/bare_ws_server.py) holding the same number of idle sockets.

The notifier runs as `python -m services.notifier` (LOG_LEVEL=WARNING) with its own Redis.
The sockets are opened by --clients load-generator processes (bench/socket_clients.py), users
u0 .. u<sockets - 1>, registered in the URL. Memory per socket is the server's RSS once all
sockets are held less its RSS before (after a few warm-up sockets came and went), divided by
the sockets. Then this process publishes `payment_url` messages through
NotificationBus.publish at --rate per second for --seconds, each to a random user, carrying
its time.time_ns(); the clients note when each arrives, and the latency is counted from that
time and from the message id's (Redis's clock when the bus script appended and PUBLISHed it).
Before each phase it waits until no other bench/ process runs and the machine is quiet.

With --collector A B ..., the notifier is measured once per garbage-collector setting (see
bench/collector_settings.py), each a fresh process with fresh sockets, and the settings are
compared side by side, with the collections each one ran (from the notifier's /metrics).

    .venv/bin/python bench/notifier_sockets.py [--sockets 10000] [--rate 2000] [--seconds 15]
    .venv/bin/python bench/notifier_sockets.py --collector young-50000 shared-runtime
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import psutil  # type: ignore[import-untyped]
from redis.exceptions import RedisError

from bench import harness
from bench.collector_settings import EXAMPLES, SHARED_RUNTIME, collector_setting
from bench.socket_clients import FD_MARGIN, GcPauses, freeze_heap, raise_open_files
from devstack import servers
from shared import messages
from shared.bus import NotificationBus, connect_redis
from shared.messages import Message

ROOT = Path(__file__).resolve().parents[1]
NOTIFIER = "notifier"
BARE = "bare"
SOCKET_PATH = "/payment-ws"
CLIENTS = "clients"  # all load-generator processes together, in CPU tables
TARGET_KIB_PER_SOCKET = 20.0
TARGET_P99_MS = 25.0
WARM_SOCKETS = 20
WARM_MESSAGES = 200
PUBLISH_IN_FLIGHT = 64
USER_SEED = 20261127
SERVER_QUIET_BELOW = 0.1  # of a core: 10,000 sockets' heartbeats keep the notifier slightly busy
PIPE_LIMIT = 2**28  # the clients' report is one line of up to a few MB

Reply = dict[str, Any]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--sockets", type=int, default=10_000, help="concurrent sockets (default 10000)")
    add("--rate", type=float, default=2000, help="messages published per second (default 2000)")
    add("--seconds", type=float, default=15, help="seconds of publishing (default 15)")
    add("--clients", type=int, default=2, help="load-generator processes (default 2)")
    add("--connect-concurrency", type=int, default=100, help="handshakes in flight, all clients")
    add("--idle-s", type=float, default=3.0, help="seconds to measure the idle notifier's CPU")
    add("--drain-s", type=float, default=10.0, help="wait this long for the last messages")
    add("--skip-bare", action="store_true", help="do not measure the bare server")
    add(
        "--quiet-below",
        type=float,
        default=0.2,
        help="before each phase, wait until other work uses less of the machine (default 0.2)",
    )
    add("--max-wait-s", type=float, default=1800, help="longest wait for a quiet machine")
    add(
        "--collector",
        nargs="+",
        default=[SHARED_RUNTIME],
        help=f"collector settings to measure in turn (default {SHARED_RUNTIME}; {EXAMPLES})",
    )
    args = parser.parse_args()
    for setting in args.collector:
        collector_setting(setting)  # an unknown name stops here, before anything starts
    return args


# --- other benchmarks on the machine -----------------------------------------------------


def other_benchmarks() -> list[str]:
    """Python processes running something from bench/ that are not this run's."""
    me = psutil.Process()
    ours = {me.pid, *(child.pid for child in me.children(recursive=True))}
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline: list[str] = process.info["cmdline"] or []
        if process.pid in ours or not cmdline or "python" not in Path(cmdline[0]).name:
            continue
        if any(_is_bench(arg) for arg in cmdline[1:]):
            found.append(f"{process.pid} {' '.join(cmdline)[:100]}")
    return found


def _is_bench(arg: str) -> bool:
    return ("bench/" in arg and arg.endswith(".py")) or arg.startswith("bench.")


async def wait_for_quiet_machine(args: argparse.Namespace) -> None:
    """Wait until no other benchmark runs and other work uses less than --quiet-below of the
    machine (at most --max-wait-s), so that the numbers are this run's alone."""
    deadline = time.monotonic() + args.max_wait_s
    waiting = False
    while True:
        others = other_benchmarks()
        busy = await busy_not_ours(2.0)
        if not others and busy < args.quiet_below:
            break
        if time.monotonic() > deadline:
            print(f"  warning: not quiet after {args.max_wait_s:.0f} s; measuring anyway")
            break
        if not waiting:
            what = "; ".join(others) or f"other work at {busy * 100:.0f}% of the machine"
            print(f"waiting for a quiet machine: {what}", flush=True)
            waiting = True
        await asyncio.sleep(5)
    print(f"no other benchmark running; machine busy (not ours): {busy * 100:.0f}%", flush=True)


async def busy_not_ours(seconds: float = 1.0) -> float:
    """The machine's busy fraction over `seconds`, less this run's own processes."""
    me = psutil.Process()
    pids = {str(p.pid): p.pid for p in [me, *me.children(recursive=True)]}
    try:
        before = harness.sample(pids)
        await asyncio.sleep(seconds)
        cpu = harness.usage(before, harness.sample(pids))
    except psutil.NoSuchProcess:  # one of ours ended meanwhile: count all as not ours
        return harness.background_load(seconds)
    return _others_fraction(cpu)


# --- the load-generator processes --------------------------------------------------------


class ClientProcess:
    """One bench/socket_clients.py process, spoken to in JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process, log: IO[bytes]) -> None:
        self.process = process
        self._log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": command}).encode() + b"\n")
        await self.process.stdin.drain()

    async def expect(self, event: str) -> Reply:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator {self.pid} exited; see {self._log.name}")
        reply: Reply = json.loads(line)
        if reply.get("event") != event:
            raise RuntimeError(f"load generator {self.pid}: expected {event}, got {reply}")
        return reply

    async def stop(self, timeout_s: float = 30) -> None:
        try:
            await self.send("close")
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except (OSError, TimeoutError):
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        finally:
            self._log.close()


class Fleet:
    """All the load-generator processes of one server."""

    def __init__(self, processes: Sequence[ClientProcess]) -> None:
        self.processes = list(processes)

    def pids(self) -> dict[str, int]:
        return {f"{CLIENTS}-{index}": p.pid for index, p in enumerate(self.processes)}

    async def ask(self, command: str, event: str) -> list[Reply]:
        await asyncio.gather(*(p.send(command) for p in self.processes))
        return list(await asyncio.gather(*(p.expect(event) for p in self.processes)))

    async def received(self) -> int:
        return sum(reply["received"] for reply in await self.ask("count", "count"))


def shares(total: int, parts: int) -> list[tuple[int, int]]:
    """(first, count) of `total` users split over `parts` processes."""
    base, extra = divmod(total, parts)
    counts = [base + (1 if index < extra else 0) for index in range(parts)]
    return [(sum(counts[:index]), count) for index, count in enumerate(counts)]


async def spawn_client(
    url: str, first: int, count: int, register: bool, concurrency: int, log_path: Path
) -> ClientProcess:
    command = ["-m", "bench.socket_clients", "--url", url, "--first", str(first)]
    command += ["--count", str(count), "--concurrency", str(concurrency)]
    command.append("--register" if register else "--no-register")
    log = log_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        cwd=ROOT,
        limit=PIPE_LIMIT,
    )
    return ClientProcess(process, log)


@contextlib.asynccontextmanager
async def fleet(
    url: str, register: bool, args: argparse.Namespace, logs: Path, label: str
) -> AsyncIterator[Fleet]:
    """Load generators for `url`, started and ready; closed (sockets first) on exit."""
    concurrency = max(1, args.connect_concurrency // args.clients)
    started: list[ClientProcess] = []
    try:
        for index, (first, count) in enumerate(shares(args.sockets, args.clients)):
            log = logs / f"clients-{label}-{index}.log"
            started.append(await spawn_client(url, first, count, register, concurrency, log))
        await asyncio.gather(*(p.expect("ready") for p in started))
        yield Fleet(started)
    finally:
        await asyncio.gather(*(p.stop() for p in started), return_exceptions=True)


# --- holding sockets ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    label: str
    role: str
    url: str
    register: bool


@dataclass(frozen=True, slots=True)
class Holding:
    """One server holding the sockets: how fast they came, and what they cost it."""

    target: Target
    sockets: int
    opened: int
    errors: dict[str, int]
    connect_s: float
    rss_before: int
    rss_after: int
    cpu: harness.CpuUsage

    @property
    def per_s(self) -> float:
        return self.opened / self.connect_s if self.connect_s > 0 else 0.0

    @property
    def kib_per_socket(self) -> float:
        return (self.rss_after - self.rss_before) / 1024 / max(1, self.opened)


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def warm_up(target: Target, count: int) -> None:
    """A few sockets opened (registered) and closed: the server's one-time costs come first."""
    async with aiohttp.ClientSession() as http:
        for index in range(count):
            async with http.ws_connect(f"{target.url}?userId=warm-{index}") as socket:
                if target.register:
                    await socket.receive_json(timeout=10)


async def hold(
    target: Target, clients: Fleet, parts: harness.Parts, args: argparse.Namespace
) -> Holding:
    """Every client connects (and registers); RSS before and after, from the OS."""
    await wait_for_quiet_machine(args)
    pid = parts.pids()[target.role]
    await warm_up(target, WARM_SOCKETS)
    await harness.wait_quiet(pid, below=SERVER_QUIET_BELOW, timeout_s=15)
    rss_before = rss(pid)
    pids = {**parts.pids(), **clients.pids()}
    before = harness.sample(pids)
    print(f"{target.label}: opening {args.sockets} sockets ...", flush=True)
    replies = await clients.ask("connect", "connected")
    cpu = harness.usage(before, harness.sample(pids))
    await harness.wait_quiet(pid, below=SERVER_QUIET_BELOW, timeout_s=15)
    opened = sum(reply["opened"] for reply in replies)
    connect_ns = max(r["doneNs"] for r in replies) - min(r["startNs"] for r in replies)
    errors: dict[str, int] = {}
    for reply in replies:
        for error, count in reply["errors"].items():
            errors[error] = errors.get(error, 0) + count
    connect_s = connect_ns / 1e9
    return Holding(target, args.sockets, opened, errors, connect_s, rss_before, rss(pid), cpu)


# --- latency -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    count: int
    issue_s: float  # first publish call started .. last started
    failed: int
    calls_s: list[float]  # each NotificationBus.publish call, start to return

    @property
    def rate(self) -> float:
        return (self.count - 1) / self.issue_s if self.issue_s > 0 else 0.0


def bench_message(seq: int) -> Message:
    """A `payment_url` carrying its number and the time it is published."""
    ride = f"bench-{seq}"
    link = messages.payment_url(ride, f"https://checkout.test/{ride}")
    return {**link, "seq": seq, "sentNs": time.time_ns()}


async def _publish_one(
    bus: NotificationBus, seq: int, user: str, limit: asyncio.Semaphore, calls: list[float]
) -> bool:
    try:
        message = bench_message(seq)
        started = time.perf_counter()
        published = await bus.publish(user, message, version=1)
        calls.append(time.perf_counter() - started)
        return published is not None
    except RedisError:
        return False
    finally:
        limit.release()


async def publish_paced(
    bus: NotificationBus, users: int, rate: float, count: int, first_seq: int = 0
) -> Published:
    """`count` messages, message i started at i / rate s, each to a random user."""
    chooser = random.Random(USER_SEED + first_seq)
    limit = asyncio.Semaphore(PUBLISH_IN_FLIGHT)
    calls: list[float] = []
    tasks: list[asyncio.Task[bool]] = []
    started = time.perf_counter()
    for index in range(count):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await limit.acquire()
        user = f"u{chooser.randrange(users)}"
        tasks.append(asyncio.create_task(_publish_one(bus, first_seq + index, user, limit, calls)))
    issued = time.perf_counter() - started
    outcomes = await asyncio.gather(*tasks)
    return Published(count, issued, outcomes.count(False), calls)


async def wait_delivered(clients: Fleet, expected: int, timeout_s: float) -> int:
    """Poll the clients until `expected` messages arrived or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    received = await clients.received()
    while received < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        received = await clients.received()
    return received


@dataclass(frozen=True, slots=True)
class Arrival:
    seq: int
    from_call_ms: float  # since the publisher's time.time_ns() just before its publish call
    from_redis_ms: float  # since the message's stream id time: Redis's clock, whole ms


@dataclass(frozen=True, slots=True)
class Latency:
    published: Published
    arrivals: list[Arrival]
    unique: int
    duplicates: int
    unexpected: dict[str, int]
    dropped: int
    still_open: int
    cpu: harness.CpuUsage
    idle_cpu_per_s: float
    rss_after: int
    gc_longest_ms: dict[str, float]  # the load generators' longest GC pause, by process

    @property
    def from_call_ms(self) -> list[float]:
        return [arrival.from_call_ms for arrival in self.arrivals]

    @property
    def from_redis_ms(self) -> list[float]:
        return [arrival.from_redis_ms for arrival in self.arrivals]

    @property
    def lost(self) -> int:
        return self.published.count - self.unique

    @property
    def notifier_ms(self) -> float:
        return self.cpu.ms_per(NOTIFIER, self.published.count)

    @property
    def notifier_ms_less_idle(self) -> float:
        busy = self.cpu.per_process[NOTIFIER] - self.idle_cpu_per_s * self.cpu.wall_s
        return busy * 1000 / self.published.count


async def measure_latency(
    redis_url: str, clients: Fleet, parts: harness.Parts, args: argparse.Namespace
) -> Latency:
    await wait_for_quiet_machine(args)
    bus = NotificationBus(connect_redis(redis_url))
    try:
        pid = parts.pids()[NOTIFIER]
        warm = await publish_paced(bus, args.sockets, args.rate, WARM_MESSAGES, -WARM_MESSAGES)
        await wait_delivered(clients, warm.count, args.drain_s)
        idle = await harness.idle_cpu_rate(pid, args.idle_s)
        pids = {**parts.pids(), **clients.pids()}
        count = round(args.rate * args.seconds)
        print(f"publishing {count} messages at {args.rate:.0f}/s ...", flush=True)
        freeze_heap()
        pauses = GcPauses()
        before = harness.sample(pids)
        published = await publish_paced(bus, args.sockets, args.rate, count)
        await wait_delivered(clients, warm.count + count, args.drain_s)
        cpu = harness.usage(before, harness.sample(pids))
        reports = await clients.ask("report", "report")
        publisher_gc_ms = pauses.longest_s * 1000
        return _latency(published, reports, cpu, idle, rss(pid), publisher_gc_ms)
    finally:
        await bus.close()


def _latency(
    published: Published,
    reports: list[Reply],
    cpu: harness.CpuUsage,
    idle: float,
    rss_now: int,
    publisher_gc_ms: float,
) -> Latency:
    gc_longest = {f"{CLIENTS}-{i}": reply["gcLongestMs"] for i, reply in enumerate(reports)}
    gc_longest["publisher"] = publisher_gc_ms
    arrivals = [
        Arrival(seq, from_call / 1e6, from_redis / 1e6)
        for reply in reports
        for seq, from_call, from_redis in reply["received"]
        if seq >= 0  # the warm-up messages have negative numbers
    ]
    unique = len({arrival.seq for arrival in arrivals})
    unexpected: dict[str, int] = {}
    for reply in reports:
        for kind, count in reply["unexpected"].items():
            unexpected[kind] = unexpected.get(kind, 0) + count
    return Latency(
        published,
        arrivals,
        unique,
        len(arrivals) - unique,
        unexpected,
        sum(r["dropped"] for r in reports),
        sum(r["open"] for r in reports),
        cpu,
        idle,
        rss_now,
        gc_longest,
    )


# --- the run -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Collections:
    """The notifier's garbage collections so far, from its /metrics."""

    full: int  # generation 2, by whatever cause
    on_growth: int  # of those, shared/runtime.py's when resident memory grew

    def __sub__(self, earlier: Collections) -> Collections:
        return Collections(self.full - earlier.full, self.on_growth - earlier.on_growth)


async def collections_so_far(process: servers.ChildProcess) -> Collections:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{process.port}/metrics") as response:
            text = await response.text()
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
    full = samples.get('python_gc_collections_total{generation="2"}', "0")
    on_growth = samples.get("payments_gc_memory_growth_collection_seconds_count", "0")
    return Collections(int(float(full)), int(float(on_growth)))


@dataclass(frozen=True, slots=True)
class Measured:
    """One notifier process, under one collector setting."""

    setting: str
    holding: Holding
    latency: Latency
    while_connecting: Collections
    while_publishing: Collections


@dataclass(frozen=True, slots=True)
class Outcome:
    notifiers: list[Measured]
    bare: Holding | None


def ws_url(process: servers.ChildProcess) -> str:
    return f"ws://127.0.0.1:{process.port}{SOCKET_PATH}"


async def measure_bare(args: argparse.Namespace, parts: harness.Parts, logs: Path) -> Holding:
    bare = parts.service(BARE, "bench.bare_ws_server", {})
    target = Target("bare aiohttp", BARE, ws_url(bare), register=False)
    async with fleet(target.url, False, args, logs, BARE) as clients:
        holding = await hold(target, clients, parts, args)
    parts.stop(BARE)
    return holding


async def measure_notifier(
    setting: str, args: argparse.Namespace, parts: harness.Parts, logs: Path
) -> Measured:
    redis_url = parts.redis()  # its own: the users' histories would be replayed to the next
    env = {"REDIS_URL": redis_url, "LOG_LEVEL": "WARNING"}
    notifier = parts.service(
        NOTIFIER, "bench.collector_settings", env, [setting, "services.notifier"]
    )
    await harness.wait_ready(notifier)
    target = Target(f"notifier ({setting})", NOTIFIER, ws_url(notifier), register=True)
    async with fleet(target.url, True, args, logs, f"{NOTIFIER}-{setting}") as clients:
        at_start = await collections_so_far(notifier)
        holding = await hold(target, clients, parts, args)
        connected = await collections_so_far(notifier)
        latency = await measure_latency(redis_url, clients, parts, args)
        published = await collections_so_far(notifier)
    parts.stop(NOTIFIER)
    parts.stop("redis")
    return Measured(setting, holding, latency, connected - at_start, published - connected)


async def run(args: argparse.Namespace, logs: Path) -> Outcome:
    with harness.running_parts(logs) as parts:
        bare = None if args.skip_bare else await measure_bare(args, parts, logs)
        notifiers = [
            await measure_notifier(setting, args, parts, logs) for setting in args.collector
        ]
        return Outcome(notifiers, bare)


# --- printing ----------------------------------------------------------------------------


def mib(size: int) -> str:
    return f"{size / 2**20:.1f}"


def print_holdings(holdings: Sequence[Holding]) -> None:
    headers = [
        "server", "sockets", "held", "connect s", "sockets/s", "RSS before MiB",
        "RSS after MiB", "KiB/socket", "server CPU ms/socket", "clients CPU ms/socket",
        "other (not ours)", "machine busy",
    ]  # fmt: skip
    harness.print_table(headers, [_holding_row(holding) for holding in holdings])
    for holding in holdings:
        for error, count in holding.errors.items():
            print(f"  {holding.target.label}: {count} x {error}")


def _holding_row(holding: Holding) -> list[str]:
    cpu, count = holding.cpu, max(1, holding.opened)
    return [
        holding.target.label,
        str(holding.sockets),
        str(holding.opened),
        f"{holding.connect_s:.1f}",
        f"{holding.per_s:.0f}",
        mib(holding.rss_before),
        mib(holding.rss_after),
        f"{holding.kib_per_socket:.1f}",
        f"{cpu.ms_per(holding.target.role, count):.2f}",
        f"{_clients_cpu(cpu) * 1000 / count:.2f}",
        f"{_others_fraction(cpu) * 100:.0f}%",
        f"{cpu.machine_busy_fraction * 100:.0f}%",
    ]


def _others_fraction(cpu: harness.CpuUsage) -> float:
    others = max(0.0, cpu.machine_busy - sum(cpu.per_process.values()))
    return others / (cpu.wall_s * (psutil.cpu_count() or 1))


def _clients_cpu(cpu: harness.CpuUsage) -> float:
    return sum(seconds for role, seconds in cpu.per_process.items() if role.startswith(CLIENTS))


def print_latency(latency: Latency, holding: Holding) -> None:
    published = latency.published
    calls = published.calls_s
    print(
        f"published {published.count} messages in {published.issue_s:.1f} s "
        f"({published.rate:.0f}/s), {published.failed} failed; publish call p50 "
        f"{harness.percentile(calls, 0.5) * 1000:.2f} ms, p99 "
        f"{harness.percentile(calls, 0.99) * 1000:.2f} ms"
    )
    print(f"received {latency.unique}, lost {latency.lost}, duplicates {latency.duplicates}")
    headers = ["latency to the client socket, from", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    rows = [
        _spread_row("the publish call (sentNs)", latency.from_call_ms),
        _spread_row("Redis append + PUBLISH (stream id, 1 ms)", latency.from_redis_ms),
    ]
    harness.print_table(headers, rows)
    print("p99 ms from the publish call, by second of publishing:")
    print("  " + " ".join(f"{p99:.0f}" for p99 in p99_by_second(latency)))
    pauses = ", ".join(f"{name} {ms:.1f}" for name, ms in latency.gc_longest_ms.items())
    print(f"load generators' GC pauses in the window, longest (ms; their GC is off): {pauses}")
    print(
        f"sockets still open: {latency.still_open}, closed by the server: {latency.dropped}, "
        f"other frames: {latency.unexpected or 'none'}"
    )
    grown = (latency.rss_after - holding.rss_before) / 1024 / max(1, holding.opened)
    after = mib(latency.rss_after)
    print(f"notifier RSS after the latency phase: {after} MiB ({grown:.1f} KiB/socket)")
    print()
    print("CPU per message by process (ms, user+system from the OS, over the publishing window):")
    cpu, count = latency.cpu, published.count
    roles = [NOTIFIER, "redis", harness.BENCH]
    cells = [f"{cpu.ms_per(role, count):.3f}" for role in roles]
    other = (cpu.machine_busy - sum(cpu.per_process.values())) * 1000 / count
    cells += [f"{_clients_cpu(cpu) * 1000 / count:.3f}", f"{other:.3f}"]
    cells.append(f"{cpu.machine_busy_fraction * 100:.0f}%")
    headers = [NOTIFIER, "redis", "bench (publisher)", CLIENTS, "other (not ours)", "machine busy"]
    harness.print_table(headers, [cells])
    print(
        f"notifier idle with {holding.opened} sockets: {latency.idle_cpu_per_s * 100:.1f}% of a "
        f"core; CPU per message less idle: {latency.notifier_ms_less_idle:.3f} ms"
    )


def _spread_row(label: str, values_ms: list[float]) -> list[str]:
    values = values_ms or [float("nan")]
    cells = [f"{harness.percentile(values, q):.2f}" for q in (0.5, 0.9, 0.99)]
    return [label, *cells, f"{max(values):.2f}"]


def p99_by_second(latency: Latency) -> list[float]:
    """p99 of the latency from the publish call, for each second's worth of messages."""
    per_second = max(1, round(latency.published.rate)) if latency.published.rate else 1
    buckets: dict[int, list[float]] = {}
    for arrival in latency.arrivals:
        buckets.setdefault(arrival.seq // per_second, []).append(arrival.from_call_ms)
    return [harness.percentile(buckets[second], 0.99) for second in sorted(buckets)]


def print_side_by_side(notifiers: Sequence[Measured]) -> None:
    headers = [
        "collector", "sockets/s", "KiB/socket", "p50 ms", "p99 ms", "max ms", "lost",
        "RSS after MiB", "notifier CPU ms/message", "GCs connecting", "GCs publishing",
    ]  # fmt: skip
    rows = []
    for measured in notifiers:
        holding, latency = measured.holding, measured.latency
        spread = _spread_row("", latency.from_call_ms)
        rows.append(
            [
                measured.setting,
                f"{holding.per_s:.0f}",
                f"{holding.kib_per_socket:.1f}",
                spread[1],
                spread[3],
                spread[4],
                str(latency.lost),
                mib(latency.rss_after),
                f"{latency.notifier_ms:.3f}",
                _collections(measured.while_connecting),
                _collections(measured.while_publishing),
            ]
        )
    harness.print_table(headers, rows)


def _collections(collections: Collections) -> str:
    return f"{collections.full} ({collections.on_growth})"


def print_verdicts(notifier: Holding, latency: Latency, bare: Holding | None) -> None:
    kib = notifier.kib_per_socket
    ok = kib <= TARGET_KIB_PER_SOCKET
    print(
        f"notifier RSS per registered socket {kib:.1f} KiB "
        f"(target <= {TARGET_KIB_PER_SOCKET:.0f} KiB): {harness.verdict(ok)}"
    )
    if bare:
        ratio = kib / bare.kib_per_socket if bare.kib_per_socket > 0 else float("nan")
        floor = bare.kib_per_socket
        print(f"  bare aiohttp: {floor:.1f} KiB per socket; notifier/bare {ratio:.2f}")
    for label, values in [
        ("publish call", latency.from_call_ms),
        ("Redis PUBLISH", latency.from_redis_ms),
    ]:
        p99 = harness.percentile(values or [float("inf")], 0.99)
        ok = p99 < TARGET_P99_MS and latency.lost == 0
        print(
            f"{label} to socket: p99 {p99:.2f} ms at {latency.published.rate:.0f} messages/s, "
            f"{latency.lost} lost (target p99 < {TARGET_P99_MS:.0f} ms, 0 lost): "
            f"{harness.verdict(ok)}"
        )
    print(
        f"connect and register: {notifier.opened} sockets in {notifier.connect_s:.1f} s "
        f"({notifier.per_s:.0f}/s); notifier CPU {latency.notifier_ms:.3f} ms per message"
    )


async def main() -> None:
    args = parse_args()
    limit = raise_open_files(args.sockets + FD_MARGIN)  # the servers we start inherit it
    logs = harness.logs_dir("notifier")
    await wait_for_quiet_machine(args)
    harness.print_preamble("notifier sockets")
    print(
        f"{args.sockets} sockets from {args.clients} load-generator processes; "
        f"open-file limit {limit}; logs in {logs}"
    )
    outcome = await run(args, logs)
    print()
    holdings = [measured.holding for measured in outcome.notifiers]
    print_holdings(holdings + ([outcome.bare] if outcome.bare else []))
    for measured in outcome.notifiers:
        print()
        print(f"--- notifier, collector {measured.setting}")
        print_latency(measured.latency, measured.holding)
        print()
        print_verdicts(measured.holding, measured.latency, outcome.bare)
    print()
    print("side by side (GCs: the notifier's full collections, and in brackets how many of them")
    print("shared/runtime.py ran because resident memory grew):")
    print_side_by_side(outcome.notifiers)


if __name__ == "__main__":
    asyncio.run(main())
