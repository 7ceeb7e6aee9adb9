"""`make run`: the embedded parts and the three services on this machine, until Ctrl-C.

Data lives under one local folder (`.devstack/` by default) so payments survive a restart;
logs of every process go to `<folder>/logs/`. Ports are flags; a busy port is reported before
anything starts.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devstack import servers

DEV_STRIPE_KEY = "sk_test_devstack"
DEV_WEBHOOK_SECRET = "whsec_devstack_local"


@dataclass(frozen=True, slots=True)
class Ports:
    kafka: int = 19092
    mongodb: int = 27027
    redis: int = 16379
    stripe: int = 12111
    consumer: int = 6066
    webhook: int = 9090
    webhook_internal: int = 9092
    notifier: int = 9091
    rider_page: int = 8080


@dataclass(frozen=True, slots=True)
class StackOptions:
    folder: Path
    ports: Ports
    real_stripe_key: str | None = None
    real_webhook_secret: str | None = None

    @property
    def uses_simulator(self) -> bool:
        return self.real_stripe_key is None


class Stack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.logs = options.folder / "logs"
        self.parts: list[servers.ChildProcess] = []
        self.services: list[servers.ChildProcess] = []

    def service_environment(self) -> dict[str, str]:
        ports = self.options.ports
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports.kafka}",
            "MONGODB_URI": servers.mongodb_uri(ports.mongodb),
            "REDIS_URL": f"redis://127.0.0.1:{ports.redis}/0",
            "KAFKA_SESSION_TIMEOUT_S": "6",
            "STRIPE_SECRET_KEY": self.options.real_stripe_key or DEV_STRIPE_KEY,
            "STRIPE_WEBHOOK_SECRET": self.options.real_webhook_secret or DEV_WEBHOOK_SECRET,
        }
        if self.options.uses_simulator:
            env["STRIPE_API_BASE"] = f"http://127.0.0.1:{ports.stripe}"
        return env

    def check_ports(self) -> None:
        ports = self.options.ports
        wanted = {
            "kafka": ports.kafka,
            "mongodb": ports.mongodb,
            "redis": ports.redis,
            "consumer": ports.consumer,
            "webhook": ports.webhook,
            "webhook internal": ports.webhook_internal,
            "notifier": ports.notifier,
            "rider page": ports.rider_page,
        }
        if self.options.uses_simulator:
            wanted["stripe simulator"] = ports.stripe
        busy = [
            f"{name} port {port}" for name, port in wanted.items() if servers.port_is_open(port)
        ]
        if busy:
            raise SystemExit(
                "devstack: already in use: "
                + ", ".join(busy)
                + ". Stop what holds them or choose other ports (python -m devstack run --help)."
            )

    async def start(self) -> None:
        self.check_ports()
        ports, folder = self.options.ports, self.options.folder
        self.parts = [
            servers.tansu(ports.kafka, self.logs),
            servers.secantus(ports.mongodb, folder / "mongodb", self.logs),
            servers.redis(ports.redis, folder / "redis", self.logs),
        ]
        if self.options.uses_simulator:
            webhook = f"http://127.0.0.1:{ports.webhook}/payment-service/webhook"
            self.parts.append(
                servers.python_module(
                    "stripe-simulator",
                    "devstack.stripe_simulator",
                    ports.stripe,
                    self.logs,
                    env={},
                    args=[
                        "--port",
                        str(ports.stripe),
                        "--webhook-url",
                        webhook,
                        "--webhook-secret",
                        DEV_WEBHOOK_SECRET,
                        "--api-key",
                        DEV_STRIPE_KEY,
                    ],
                )
            )
        for part in self.parts:
            await asyncio.to_thread(part.start)
        await servers.ensure_topics(f"127.0.0.1:{ports.kafka}")
        env = self.service_environment()
        self.services = [
            servers.python_module(
                "consumer",
                "services.consumer",
                ports.consumer,
                self.logs,
                {**env, "PORT": str(ports.consumer)},
            ),
            servers.python_module(
                "webhook",
                "services.webhook",
                ports.webhook,
                self.logs,
                {
                    **env,
                    "PORT": str(ports.webhook),
                    "INTERNAL_PORT": str(ports.webhook_internal),
                },
            ),
            servers.python_module(
                "notifier",
                "services.notifier",
                ports.notifier,
                self.logs,
                {**env, "PORT": str(ports.notifier)},
            ),
            servers.python_module(
                "rider-page",
                "devstack.rider_page",
                ports.rider_page,
                self.logs,
                env={},
                args=[
                    "--port",
                    str(ports.rider_page),
                    "--notifier",
                    f"ws://127.0.0.1:{ports.notifier}/payment-ws",
                    "--payments-api",
                    f"http://127.0.0.1:{ports.webhook_internal}/payment-service",
                ],
            ),
        ]
        for service in self.services:
            await asyncio.to_thread(service.start, 60.0)

    def stop(self) -> None:
        for process in reversed(self.parts + self.services):  # services first, then the parts
            process.stop()

    def endpoints(self) -> list[tuple[str, str, str | None]]:
        """(name, where it listens, readiness URL or None)."""
        ports = self.options.ports
        rows: list[tuple[str, str, str | None]] = [
            (
                "consumer",
                f"http://127.0.0.1:{ports.consumer}/metrics",
                f"http://127.0.0.1:{ports.consumer}/readyz",
            ),
            (
                "webhook",
                f"http://127.0.0.1:{ports.webhook}/payment-service/webhook",
                f"http://127.0.0.1:{ports.webhook_internal}/readyz",
            ),
            (
                "webhook (internal)",
                f"http://127.0.0.1:{ports.webhook_internal}/payment-service/payments/<rideId>",
                None,
            ),
            (
                "notifier",
                f"ws://127.0.0.1:{ports.notifier}/payment-ws",
                f"http://127.0.0.1:{ports.notifier}/readyz",
            ),
            ("rider-page", f"http://127.0.0.1:{ports.rider_page}/", None),
            ("kafka (tansu)", f"127.0.0.1:{ports.kafka}", None),
            ("mongodb (secantus)", servers.mongodb_uri(ports.mongodb), None),
            ("redis", f"redis://127.0.0.1:{ports.redis}/0", None),
        ]
        if self.options.uses_simulator:
            rows.append(
                (
                    "stripe simulator",
                    f"http://127.0.0.1:{ports.stripe}",
                    f"http://127.0.0.1:{ports.stripe}/_sim/health",
                )
            )
        return rows


def readiness(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return "ready" if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        try:
            failed = json.loads(error.read()).get("failed", {})
            return "not ready: " + ", ".join(f"{k}: {v}" for k, v in failed.items())[:80]
        except ValueError:
            return f"HTTP {error.code}"
    except OSError as error:
        return f"down ({error})"[:60]


def status_table(stack: Stack) -> str:
    lines = [f"{'process':<20} {'state':<40} where"]
    all_processes = {p.name: p for p in stack.parts + stack.services}
    for name, where, ready_url in stack.endpoints():
        process = all_processes.get(name)
        if process is not None and not process.running:
            state = "EXITED (see logs)"
        elif ready_url is None:
            state = "running"
        else:
            state = readiness(ready_url)
        lines.append(f"{name:<20} {state:<40} {where}")
    lines.append(f"logs: {stack.logs}/    stop: Ctrl-C")
    return "\n".join(lines)


async def run(options: StackOptions, *, live: bool = True) -> None:
    stack = Stack(options)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        print(f"devstack: starting in {options.folder} ...", flush=True)
        await stack.start()
        redraw = live and sys.stdout.isatty()
        shown = ""
        while not stopping.is_set():
            table = await asyncio.to_thread(status_table, stack)
            if redraw:
                print("\033[2J\033[H" + table, flush=True)
            elif table != shown:  # a log, not a screen: print only what changed
                print(table + "\n", flush=True)
            shown = table
            try:
                await asyncio.wait_for(stopping.wait(), 2)
            except TimeoutError:
                pass
    finally:
        print("devstack: stopping ...", flush=True)
        started = time.monotonic()
        await asyncio.to_thread(stack.stop)
        print(f"devstack: stopped in {time.monotonic() - started:.1f} s", flush=True)
